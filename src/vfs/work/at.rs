//! System calls on a workspace's upper layer, each relative to a descriptor of the upper
//! root folder (`openat`, `mkdirat`, `renameat`, ... via `rustix`).
//!
//! Why not absolute paths: the kernel limits one path argument to PATH_MAX (4096 bytes).
//! A caller's path under the mount (`/mnt/work/NAME/…`) can be up to that long, and the
//! same file's absolute upper path (`<vault>/workspaces/NAME/upper/…`) is usually longer, so
//! a deep tree that a local disk accepts would fail with ENAMETOOLONG. Relative to the root
//! descriptor, the path is the part below the workspace, always shorter than the caller's.
//!
//! Never: follows a symlink of the upper layer as a path component the caller did not
//! (stat, chown and utimens use `AT_SYMLINK_NOFOLLOW`, opens `O_NOFOLLOW`).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, CWD};

use crate::vfs::view::is_dot;
use crate::vfs::NodeKind;

/// The `stat` of an upper-layer entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub kind: NodeKind,
    /// Permission bits (with setuid, setgid and sticky).
    pub perm: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    /// Device and inode number in the upper file system: who the entry is, across names.
    pub dev: u64,
    pub ino: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl Meta {
    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }

    pub fn is_symlink(&self) -> bool {
        self.kind == NodeKind::Symlink
    }

    #[allow(clippy::unnecessary_cast)] // field types differ between architectures
    fn from_stat(st: &rustix::fs::Stat) -> Meta {
        let time = |s: i64, ns: u64| {
            let ns = ns as u32;
            if s >= 0 {
                SystemTime::UNIX_EPOCH + Duration::new(s as u64, ns)
            } else {
                SystemTime::UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + Duration::from_nanos(ns as u64)
            }
        };
        let mode = st.st_mode as u32;
        Meta {
            kind: kind_of(mode),
            perm: mode & 0o7777,
            nlink: st.st_nlink as u64,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u64,
            rdev: st.st_rdev as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            atime: time(st.st_atime as i64, st.st_atime_nsec as u64),
            mtime: time(st.st_mtime as i64, st.st_mtime_nsec as u64),
            ctime: time(st.st_ctime as i64, st.st_ctime_nsec as u64),
        }
    }
}

fn kind_of(mode: u32) -> NodeKind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => NodeKind::Dir,
        libc::S_IFLNK => NodeKind::Symlink,
        libc::S_IFIFO => NodeKind::Fifo,
        libc::S_IFSOCK => NodeKind::Socket,
        libc::S_IFBLK => NodeKind::BlockDevice,
        libc::S_IFCHR => NodeKind::CharDevice,
        _ => NodeKind::File,
    }
}

/// `fstat` of an open upper file.
pub(crate) fn fstat(file: &impl AsFd) -> io::Result<Meta> {
    Ok(Meta::from_stat(&rustix::fs::fstat(file)?))
}

/// The upper root folder, open (`O_PATH`) for the life of the view.
pub(crate) struct Root {
    fd: OwnedFd,
}

/// A workspace path as the relative path of a system call (`.` for the root).
fn rel(path: &[u8]) -> &OsStr {
    OsStr::from_bytes(if path.is_empty() { b"." } else { path })
}

fn mode(perm: u32) -> Mode {
    Mode::from_raw_mode(perm & 0o7777)
}

impl Root {
    pub fn open(upper: &Path) -> io::Result<Root> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(Root {
            fd: rustix::fs::openat(CWD, upper, flags, Mode::empty())?,
        })
    }

    /// `lstat`.
    pub fn lstat(&self, path: &[u8]) -> io::Result<Meta> {
        Ok(Meta::from_stat(&rustix::fs::statat(
            &self.fd,
            rel(path),
            AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    /// `open` with `flags` (`O_NOFOLLOW` and `O_CLOEXEC` added) and, for `O_CREAT`, `perm`.
    pub fn open_file(&self, path: &[u8], flags: i32, perm: u32) -> io::Result<File> {
        let flags = OFlags::from_bits_retain(flags as _) | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(&self.fd, rel(path), flags, mode(perm))?))
    }

    /// Open folder `path` for reading its entries or syncing it.
    pub fn open_dir(&self, path: &[u8]) -> io::Result<File> {
        self.open_file(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)
    }

    pub fn mkdir(&self, path: &[u8], perm: u32) -> io::Result<()> {
        rustix::fs::mkdirat(&self.fd, rel(path), mode(perm))?;
        // mkdir applied this process's umask: set the bits asked for.
        self.chmod(path, perm)
    }

    /// `mknod` of a FIFO, socket or device node (`mode` with its file type bits).
    pub fn mknod(&self, path: &[u8], mode_and_type: u32, rdev: u64) -> io::Result<()> {
        let kind = rustix::fs::FileType::from_raw_mode(mode_and_type);
        rustix::fs::mknodat(&self.fd, rel(path), kind, mode(mode_and_type), rdev)?;
        self.chmod(path, mode_and_type)
    }

    pub fn symlink(&self, target: &Path, path: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::symlinkat(target, &self.fd, rel(path))?)
    }

    pub fn readlink(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.fd, rel(path), Vec::new())?.into_bytes())
    }

    /// A hard link `to` of `from`.
    pub fn link(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &self.fd,
            rel(from),
            &self.fd,
            rel(to),
            AtFlags::empty(),
        )?)
    }

    pub fn unlink(&self, path: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, rel(path), AtFlags::empty())?)
    }

    pub fn rmdir(&self, path: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, rel(path), AtFlags::REMOVEDIR)?)
    }

    pub fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, rel(from), &self.fd, rel(to))?)
    }

    /// Move `from` (an absolute path on the same file system, e.g. a scratch file) to `to`.
    pub fn rename_in(&self, from: &Path, to: &[u8]) -> io::Result<()> {
        Ok(rustix::fs::renameat(CWD, from, &self.fd, rel(to))?)
    }

    /// `chmod` (Linux has no `lchmod`: a symlink's own mode is never changed).
    pub fn chmod(&self, path: &[u8], perm: u32) -> io::Result<()> {
        Ok(rustix::fs::chmodat(&self.fd, rel(path), mode(perm), AtFlags::empty())?)
    }

    /// `lchown`; `None` leaves an id unchanged.
    pub fn chown(&self, path: &[u8], uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let (uid, gid) = (uid.map(rustix::fs::Uid::from_raw), gid.map(rustix::fs::Gid::from_raw));
        Ok(rustix::fs::chownat(
            &self.fd,
            rel(path),
            uid,
            gid,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// `utimensat` without following a symlink; `None` leaves a time unchanged, `Some(None)`
    /// sets the current time.
    pub fn utimes(
        &self,
        path: &[u8],
        atime: Option<Option<SystemTime>>,
        mtime: Option<Option<SystemTime>>,
    ) -> io::Result<()> {
        let times = Timestamps {
            last_access: timespec(atime),
            last_modification: timespec(mtime),
        };
        Ok(rustix::fs::utimensat(
            &self.fd,
            rel(path),
            &times,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// The entries of folder `path` with their `lstat`, in no order.
    pub fn list(&self, path: &[u8]) -> io::Result<Vec<(Vec<u8>, Meta)>> {
        let dir = self.open_dir(path)?;
        let mut out = Vec::new();
        for item in rustix::fs::Dir::read_from(&dir)? {
            let item = item?;
            let name = item.file_name().to_bytes();
            if is_dot(name) {
                continue;
            }
            match rustix::fs::statat(&dir, item.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => out.push((name.to_vec(), Meta::from_stat(&st))),
                // Deleted since it was listed.
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}

fn timespec(t: Option<Option<SystemTime>>) -> Timespec {
    let (tv_sec, tv_nsec) = match t {
        None => (0, rustix::fs::UTIME_OMIT),
        Some(None) => (0, rustix::fs::UTIME_NOW),
        Some(Some(t)) => match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as _),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos() as i64);
                if n == 0 {
                    (s, 0)
                } else {
                    (s - 1, (1_000_000_000 - n) as _)
                }
            }
        },
    };
    Timespec { tv_sec, tv_nsec }
}
