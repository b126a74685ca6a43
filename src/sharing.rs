//! Who may do what in a vault: the calling user, a shared vault's group, and the modes of
//! what a writer creates.
//!
//! Owns: the caller's user id and name; looking users and groups up; whether the caller may
//! write a path; [`Modes`], the modes given to the folders and files a writer creates in a
//! vault. A private vault keeps the caller's umask. A shared vault (`init --shared GROUP`)
//! gets setgid, group-writable folders and group-readable files whatever the umask: modes
//! are set explicitly after creating, and folders appear (by rename) only once their mode
//! is right, so another member never meets a folder it may not write.
//! Never: changes the process umask, or changes the owner of anything.

use std::ffi::{CStr, CString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Folders of a shared vault: setgid (new files and folders take the vault's group),
/// readable, writable and searchable by the owner and the group.
const SHARED_DIR_MODE: u32 = 0o2775;

/// The user this process acts as (its effective user id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// The account name, or the uid as text when it has none.
    pub name: String,
}

/// The effective user of this process.
pub fn caller() -> Caller {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    Caller {
        uid,
        name: user_name(uid).unwrap_or_else(|| uid.to_string()),
    }
}

/// Run `lookup` (a `get*_r` call) with a buffer, growing it while the call says ERANGE.
fn with_buffer<T>(mut lookup: impl FnMut(&mut [libc::c_char]) -> (libc::c_int, Option<T>)) -> Option<T> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        match lookup(&mut buf) {
            (libc::ERANGE, _) if size < 1 << 20 => size *= 4,
            (_, found) => return found,
        }
    }
}

/// The account name and primary group of `uid`.
fn passwd_of(uid: u32) -> Option<(String, u32)> {
    with_buffer(|buf| {
        // SAFETY: an all-zero passwd is a valid out-parameter.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwuid_r writes into `pwd` and `buf` (of the length given) and sets `found`.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
        let name = (rc == 0 && !found.is_null()).then(|| unsafe { CStr::from_ptr(pwd.pw_name) });
        (rc, name.map(|n| (n.to_string_lossy().into_owned(), pwd.pw_gid)))
    })
}

/// The account name of `uid`.
pub fn user_name(uid: u32) -> Option<String> {
    passwd_of(uid).map(|(name, _)| name)
}

/// The primary group of user `uid`.
pub fn primary_gid(uid: u32) -> Option<u32> {
    passwd_of(uid).map(|(_, gid)| gid)
}

/// The user id and primary group of account `name` (or of a numeric uid).
pub fn user_by_name(name: &str) -> Result<(u32, u32)> {
    let unknown = || Error::Config(format!("no user {name:?} on this machine"));
    let c_name = CString::new(name).map_err(|_| unknown())?;
    let found = with_buffer(|buf| {
        // SAFETY: an all-zero passwd is a valid out-parameter.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwnam_r reads the NUL-terminated name and writes into `pwd` and `buf`.
        let rc = unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        (rc, (rc == 0 && !found.is_null()).then_some((pwd.pw_uid, pwd.pw_gid)))
    });
    match (found, name.parse::<u32>()) {
        (Some(ids), _) => Ok(ids),
        (None, Ok(uid)) => Ok((uid, primary_gid(uid).unwrap_or(uid))),
        (None, Err(_)) => Err(unknown()),
    }
}

/// The group id of group `name` (or a numeric gid).
pub fn group_by_name(name: &str) -> Result<u32> {
    let unknown = || {
        Error::Config(format!(
            "no group {name:?} on this machine: create it first (groupadd {name})"
        ))
    };
    let c_name = CString::new(name).map_err(|_| unknown())?;
    let found = with_buffer(|buf| {
        // SAFETY: an all-zero group is a valid out-parameter.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: getgrnam_r reads the NUL-terminated name and writes into `grp` and `buf`.
        let rc = unsafe { libc::getgrnam_r(c_name.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
        (rc, (rc == 0 && !found.is_null()).then_some(grp.gr_gid))
    });
    found.or_else(|| name.parse().ok()).ok_or_else(unknown)
}

/// The name of group `gid`.
pub fn group_name(gid: u32) -> Option<String> {
    with_buffer(|buf| {
        // SAFETY: an all-zero group is a valid out-parameter.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: getgrgid_r writes into `grp` and `buf` (of the length given) and sets `found`.
        let rc = unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
        // SAFETY: on success gr_name points to a NUL-terminated string inside `buf`.
        let name = (rc == 0 && !found.is_null()).then(|| unsafe { CStr::from_ptr(grp.gr_name) });
        (rc, name.map(|n| n.to_string_lossy().into_owned()))
    })
}

/// Is the caller root or a member of group `gid` (primary or supplementary)?
pub fn in_group(gid: u32) -> bool {
    // SAFETY: geteuid/getegid cannot fail; getgroups writes at most `len` ids.
    unsafe {
        if libc::geteuid() == 0 || libc::getegid() == gid {
            return true;
        }
        let n = libc::getgroups(0, std::ptr::null_mut());
        let mut groups = vec![0 as libc::gid_t; n.max(0) as usize];
        let n = libc::getgroups(n, groups.as_mut_ptr());
        groups.truncate(n.max(0) as usize);
        groups.contains(&gid)
    }
}

/// May the caller (with its effective ids) `mode` (`libc::R_OK`, `W_OK`, …) `path`?
pub fn may(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: faccessat only reads the NUL-terminated path.
    unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// The modes a writer gives what it creates in a vault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    shared: bool,
}

impl Modes {
    /// A private vault: modes follow the caller's umask, as for any program.
    pub const PRIVATE: Modes = Modes { shared: false };
    /// A shared vault: setgid group-writable folders, group-readable files.
    pub const SHARED: Modes = Modes { shared: true };

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The mode for a file the vault's owner would create with `mode`: in a shared vault
    /// the group gets what the owner has.
    pub fn file_mode(&self, mode: u32) -> u32 {
        if self.shared {
            mode | ((mode & 0o700) >> 3)
        } else {
            mode
        }
    }

    /// Give the file at `path`, which this process created to be written by every writer
    /// (the catalog, the lock), its mode: 0664 in a shared vault, whatever the umask; left to
    /// the umask in a private one.
    pub fn file_created(&self, path: &Path) -> Result<()> {
        if self.shared {
            set_mode(path, self.file_mode(0o644))?;
        }
        Ok(())
    }

    /// Create `dir` and its missing parents. In a shared vault each new folder is made under
    /// a temporary name, given [`SHARED_DIR_MODE`] and renamed into place, so that it is never
    /// seen with the caller's umask (two members creating it at once both succeed).
    pub fn create_dir_all(&self, dir: &Path) -> Result<()> {
        if !self.shared {
            return fs::create_dir_all(dir).map_err(Error::io_at("creating", dir));
        }
        if dir.is_dir() {
            return Ok(());
        }
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return fs::create_dir_all(dir).map_err(Error::io_at("creating", dir));
        };
        self.create_dir_all(parent)?;
        let tmp = parent.join(format!(".{}.{}.mkdir", name.to_string_lossy(), std::process::id()));
        fs::create_dir(&tmp).map_err(Error::io_at("creating", &tmp))?;
        set_mode(&tmp, SHARED_DIR_MODE).inspect_err(|_| {
            let _ = fs::remove_dir(&tmp);
        })?;
        // rename() replaces an empty folder another member just made the same way, and fails
        // (ENOTEMPTY/EEXIST) on one already in use: either way `dir` exists as wanted.
        if let Err(e) = fs::rename(&tmp, dir) {
            let _ = fs::remove_dir(&tmp);
            if !dir.is_dir() {
                return Err(Error::io("creating", dir, e));
            }
        }
        Ok(())
    }

    /// Turn the existing folder `dir` (made by this process) into a shared one: group `gid`,
    /// [`SHARED_DIR_MODE`]. Used by `init --shared` on the vault folder itself.
    pub fn share_dir(&self, dir: &Path, gid: u32) -> Result<()> {
        std::os::unix::fs::chown(dir, None, Some(gid)).map_err(Error::io_at("changing the group of", dir))?;
        set_mode(dir, SHARED_DIR_MODE)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Error::io_at("setting permissions of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_files_give_the_group_what_the_owner_has() {
        assert_eq!(Modes::SHARED.file_mode(0o644), 0o664);
        assert_eq!(Modes::SHARED.file_mode(0o444), 0o444);
        assert_eq!(Modes::SHARED.file_mode(0o600), 0o660);
        assert_eq!(Modes::PRIVATE.file_mode(0o600), 0o600);
    }

    #[test]
    fn shared_folders_ignore_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        // SAFETY: umask only swaps the process mask; restored below.
        let old = unsafe { libc::umask(0o077) };
        let made = Modes::SHARED.create_dir_all(&deep);
        unsafe { libc::umask(old) };
        made.unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            let mode = fs::metadata(dir.path().join(d)).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, SHARED_DIR_MODE, "{d}");
        }
        Modes::SHARED.create_dir_all(&deep).unwrap();
    }

    #[test]
    fn the_caller_has_a_name() {
        let me = caller();
        assert!(!me.name.is_empty());
        assert_eq!(group_name(0).as_deref(), Some("root"));
        assert_eq!(group_by_name("root").unwrap(), 0);
        assert!(group_by_name("no-such-group-dsv").is_err());
    }
}
