//! System calls on a workspace's upper layer: copy-up of base entries, the upper folders
//! above a path, attribute changes, owners. Callers hold the workspace's lock.
//!
//! Owners: a view run by root (one mount serving every user) gives what it creates the
//! owner a local file system would: a new entry belongs to the caller (with the group of
//! its folder when that folder is setgid), and a copy-up or a folder made above one belongs
//! to the workspace's owner, who owned the base entry in the merged view. A view run by
//! anyone else leaves everything the mounting user's (it could not give it away).
//!
//! Copy-up of a file assembles it in the workspace's scratch folder (same file system as the
//! upper layer), with the base's permission bits and mtime, and renames it into place: a
//! reader of the upper layer sees the base file or the whole copy, never a part. Folders
//! created above it get the base folders' modes and keep their mtimes.

use std::ffi::CString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::layers::{Found, Ws};
use crate::catalog::entries::split_path;
use crate::catalog::{Entry, EntryKind};
use crate::vfs::{files, ns_to_time, Shared, VfsError, VfsResult};
use crate::vfs::{Caller, SetAttr, SetTime};

/// Numbers the scratch files of this process.
static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// Upper folders created by [`ensure_dir`], with the mtimes to give them back.
pub(crate) type Created = Vec<(PathBuf, i64)>;

/// Make `dir` a folder of the upper layer, copying up the base folders on the way (mode
/// and mtime from the base). Returns the folders it created, top first.
pub(crate) fn ensure_dir(shared: &Shared, ws: &Ws, dir: &[u8]) -> VfsResult<Created> {
    let mut created = Vec::new();
    let mut prefixes: Vec<&[u8]> = Vec::new();
    let mut at = dir;
    while !at.is_empty() {
        prefixes.push(at);
        at = split_path(at).0;
    }
    for p in prefixes.into_iter().rev() {
        let upper = ws.upper_path(p);
        match fs::symlink_metadata(&upper) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => return Err(VfsError::NotADirectory),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let (_, entry) = ws.base_visible(shared, p)?.ok_or(VfsError::NotFound)?;
        if entry.kind != EntryKind::Dir {
            return Err(VfsError::NotADirectory);
        }
        fs::create_dir(&upper)?;
        give(&upper, ws.owner())?;
        fs::set_permissions(&upper, fs::Permissions::from_mode(entry.mode & 0o7777))?;
        created.push((upper, entry.mtime_ns));
    }
    Ok(created)
}

/// Give folders made by [`ensure_dir`] their base mtimes back (deepest first, since setting
/// a folder's time does not touch its parent).
pub(crate) fn restore_times(created: &[(PathBuf, i64)]) -> VfsResult<()> {
    for (path, mtime_ns) in created.iter().rev() {
        set_times(path, None, Some(SetTime::At(ns_to_time(*mtime_ns))))?;
    }
    Ok(())
}

/// Copy the base entry at `path` into the upper layer (a no-op when it is there already).
/// With `content` false a file is copied up empty (it is about to be truncated to zero).
pub(crate) fn copy_up(shared: &Shared, ws: &Ws, path: &[u8], content: bool) -> VfsResult<()> {
    let found = ws.resolve(shared, path)?.ok_or(VfsError::NotFound)?;
    copy_up_found(shared, ws, path, found, content)
}

/// [`copy_up`] of `path`, which the caller has just resolved to `found` (under the
/// workspace's lock).
pub(crate) fn copy_up_found(shared: &Shared, ws: &Ws, path: &[u8], found: Found, content: bool) -> VfsResult<()> {
    let (layer, entry) = match found {
        Found::Upper(_) => return Ok(()),
        Found::Base { layer, entry } => (layer, entry),
    };
    let created = ensure_dir(shared, ws, split_path(path).0)?;
    let target = ws.upper_path(path);
    let mode = entry.mode & 0o7777;
    let mtime = SetTime::At(ns_to_time(entry.mtime_ns));
    match entry.kind {
        EntryKind::Dir => {
            fs::create_dir(&target)?;
            give(&target, ws.owner())?;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
            set_times(&target, None, Some(mtime))?;
        }
        EntryKind::Symlink => {
            let link = entry.target.clone().unwrap_or_default();
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&link), &target)?;
            give(&target, ws.owner())?;
            set_times(&target, None, Some(mtime))?;
        }
        EntryKind::File => {
            let scratch = scratch_file(ws)?;
            let result = assemble(shared, ws, layer, &entry, &scratch, content)
                .and_then(|()| fs::rename(&scratch, &target).map_err(VfsError::from));
            if result.is_err() {
                let _ = fs::remove_file(&scratch);
            }
            result?;
        }
    }
    restore_times(&created)
}

/// Write a base file's copy at `scratch`, with its mode and mtime.
fn assemble(shared: &Shared, ws: &Ws, layer: usize, entry: &Entry, scratch: &Path, content: bool) -> VfsResult<()> {
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(scratch)?;
    if content {
        files::copy_entry(shared, ws.bases[layer].clone(), entry.clone(), &mut out)?;
    }
    give(scratch, ws.owner())?;
    out.set_permissions(fs::Permissions::from_mode(entry.mode & 0o7777))?;
    out.set_modified(ns_to_time(entry.mtime_ns))?;
    Ok(())
}

/// Does this process give what it creates away (is it root)?
fn gives_owners() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Make `path` (just created by this process, not followed if a symlink) belong to
/// `owner`, when this process is root.
fn give(path: &Path, owner: (u32, u32)) -> VfsResult<()> {
    if gives_owners() {
        std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1))?;
    }
    Ok(())
}

/// Give the new entry at `path` to `caller` (through `chown`, which changes it by path or
/// descriptor), when this process is root: the caller's uid, and the caller's gid unless
/// the folder holding it is setgid (then its group, as the kernel does).
pub(crate) fn give_new(
    path: &Path,
    caller: Caller,
    chown: impl FnOnce((Option<u32>, Option<u32>)) -> std::io::Result<()>,
) -> VfsResult<()> {
    use std::os::unix::fs::MetadataExt;
    if !gives_owners() {
        return Ok(());
    }
    let setgid_parent = path
        .parent()
        .and_then(|p| fs::metadata(p).ok())
        .filter(|m| m.mode() & libc::S_ISGID != 0);
    let gid = setgid_parent.map_or(caller.gid, |m| m.gid());
    chown((Some(caller.uid), Some(gid)))?;
    Ok(())
}

/// A fresh path in the workspace's scratch folder.
fn scratch_file(ws: &Ws) -> VfsResult<PathBuf> {
    fs::create_dir_all(&ws.scratch)?;
    let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
    Ok(ws.scratch.join(format!("{}-{n}", std::process::id())))
}

/// Remove scratch files left by processes that are gone (a copy-up interrupted by a crash).
pub(crate) fn clear_dead_scratch(scratch: &Path) {
    let Ok(items) = fs::read_dir(scratch) else { return };
    for item in items.flatten() {
        crate::vault::remove_if_writer_gone(&item);
    }
}

/// Apply `changes` to an upper-layer entry (`file`: the open file they came through).
pub(crate) fn apply(path: &Path, file: Option<&fs::File>, changes: &SetAttr) -> VfsResult<()> {
    if let Some(size) = changes.size {
        match file {
            Some(f) => f.set_len(size)?,
            // SAFETY: a valid NUL-terminated path.
            None => check(unsafe { libc::truncate(c_path(path)?.as_ptr(), size as libc::off_t) })?,
        }
    }
    if let Some(mode) = changes.mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if changes.uid.is_some() || changes.gid.is_some() {
        let (uid, gid) = (changes.uid.unwrap_or(u32::MAX), changes.gid.unwrap_or(u32::MAX));
        // SAFETY: a valid NUL-terminated path; -1 (u32::MAX) leaves an id unchanged.
        check(unsafe { libc::lchown(c_path(path)?.as_ptr(), uid, gid) })?;
    }
    if changes.atime.is_some() || changes.mtime.is_some() {
        set_times(path, changes.atime, changes.mtime)?;
    }
    Ok(())
}

/// Apply `changes` to an open upper file that no longer has a path (deleted while open).
pub(crate) fn apply_open(file: &fs::File, changes: &SetAttr) -> VfsResult<()> {
    if let Some(size) = changes.size {
        file.set_len(size)?;
    }
    if let Some(mode) = changes.mode {
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if changes.uid.is_some() || changes.gid.is_some() {
        std::os::unix::fs::fchown(file, changes.uid, changes.gid)?;
    }
    let at = |t: SetTime| match t {
        SetTime::At(t) => t,
        SetTime::Now => SystemTime::now(),
    };
    let mut times = fs::FileTimes::new();
    if let Some(t) = changes.atime {
        times = times.set_accessed(at(t));
    }
    if let Some(t) = changes.mtime {
        times = times.set_modified(at(t));
    }
    if changes.atime.is_some() || changes.mtime.is_some() {
        file.set_times(times)?;
    }
    Ok(())
}

/// `utimensat` without following a symlink; `None` leaves a time unchanged.
fn set_times(path: &Path, atime: Option<SetTime>, mtime: Option<SetTime>) -> VfsResult<()> {
    let spec = |t: Option<SetTime>| match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(SetTime::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(SetTime::At(t)) => {
            let (sec, nsec) = match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos() as i64);
                    if n == 0 {
                        (s, 0)
                    } else {
                        (s - 1, 1_000_000_000 - n)
                    }
                }
            };
            libc::timespec {
                tv_sec: sec as libc::time_t,
                tv_nsec: nsec as _,
            }
        }
    };
    let times = [spec(atime), spec(mtime)];
    let c = c_path(path)?;
    // SAFETY: a valid NUL-terminated path and two initialised timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

fn c_path(path: &Path) -> VfsResult<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| VfsError::InvalidArgument)
}

/// A libc return code as a result (the errno when it is not 0).
pub(crate) fn check(rc: libc::c_int) -> VfsResult<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().into())
    }
}
