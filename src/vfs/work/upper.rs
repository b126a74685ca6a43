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
pub(crate) type Created = Vec<(Vec<u8>, i64)>;

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
        match ws.root.lstat(p) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => return Err(VfsError::NotADirectory),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let (_, entry) = ws.base_visible(shared, p)?.ok_or(VfsError::NotFound)?;
        if entry.kind != EntryKind::Dir {
            return Err(VfsError::NotADirectory);
        }
        ws.root.mkdir(p, entry.mode)?;
        give(ws, p, ws.owner())?;
        // A change of owner may clear the setgid bit.
        ws.root.chmod(p, entry.mode)?;
        created.push((p.to_vec(), entry.mtime_ns));
    }
    Ok(created)
}

/// Give folders made by [`ensure_dir`] their base mtimes back (deepest first, since setting
/// a folder's time does not touch its parent).
pub(crate) fn restore_times(ws: &Ws, created: &[(Vec<u8>, i64)]) -> VfsResult<()> {
    for (path, mtime_ns) in created.iter().rev() {
        ws.root.utimes(path, None, Some(Some(ns_to_time(*mtime_ns))))?;
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
    let mtime = Some(Some(ns_to_time(entry.mtime_ns)));
    match entry.kind {
        EntryKind::Dir => {
            ws.root.mkdir(path, entry.mode)?;
            give(ws, path, ws.owner())?;
            ws.root.chmod(path, entry.mode)?;
            ws.root.utimes(path, None, mtime)?;
        }
        EntryKind::Symlink => {
            let link = entry.target.clone().unwrap_or_default();
            ws.root.symlink(Path::new(std::ffi::OsStr::from_bytes(&link)), path)?;
            give(ws, path, ws.owner())?;
            ws.root.utimes(path, None, mtime)?;
        }
        EntryKind::File => {
            let scratch = scratch_file(ws)?;
            let result = assemble(shared, ws, layer, &entry, &scratch, content)
                .and_then(|()| ws.root.rename_in(&scratch, path).map_err(VfsError::from));
            if result.is_err() {
                let _ = fs::remove_file(&scratch);
            }
            result?;
        }
    }
    restore_times(ws, &created)
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
    if gives_owners() {
        let owner = ws.owner();
        std::os::unix::fs::fchown(&out, Some(owner.0), Some(owner.1))?;
    }
    out.set_permissions(fs::Permissions::from_mode(entry.mode & 0o7777))?;
    out.set_modified(ns_to_time(entry.mtime_ns))?;
    Ok(())
}

/// Does this process give what it creates away (is it root)?
fn gives_owners() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Make upper entry `path` (just created by this process, not followed if a symlink)
/// belong to `owner`, when this process is root.
fn give(ws: &Ws, path: &[u8], owner: (u32, u32)) -> VfsResult<()> {
    if gives_owners() {
        ws.root.chown(path, Some(owner.0), Some(owner.1))?;
    }
    Ok(())
}

/// Give the new upper entry `path` to `caller`, when this process is root: the caller's
/// uid, and the caller's gid unless the folder holding it is setgid (then its group, as the
/// kernel does). Callers set the mode afterwards (a change of owner clears setuid/setgid).
pub(crate) fn give_new(ws: &Ws, path: &[u8], caller: Caller) -> VfsResult<()> {
    if !gives_owners() {
        return Ok(());
    }
    let parent = ws.root.lstat(split_path(path).0)?;
    let gid = match parent.perm & libc::S_ISGID {
        0 => caller.gid,
        _ => parent.gid,
    };
    ws.root.chown(path, Some(caller.uid), Some(gid))?;
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
pub(crate) fn apply(ws: &Ws, path: &[u8], file: Option<&fs::File>, changes: &SetAttr) -> VfsResult<()> {
    if let Some(size) = changes.size {
        match file {
            Some(f) => f.set_len(size)?,
            None => ws.root.open_file(path, libc::O_WRONLY, 0)?.set_len(size)?,
        }
    }
    if let Some(mode) = changes.mode {
        ws.root.chmod(path, mode)?;
    }
    if changes.uid.is_some() || changes.gid.is_some() {
        ws.root.chown(path, changes.uid, changes.gid)?;
    }
    if changes.atime.is_some() || changes.mtime.is_some() {
        ws.root.utimes(path, changes.atime.map(when), changes.mtime.map(when))?;
    }
    Ok(())
}

/// A time to set as [`super::at::Root::utimes`] takes it (`None`: now).
fn when(t: SetTime) -> Option<SystemTime> {
    match t {
        SetTime::At(t) => Some(t),
        SetTime::Now => None,
    }
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

/// A libc return code as a result (the errno when it is not 0).
pub(crate) fn check(rc: libc::c_int) -> VfsResult<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().into())
    }
}
