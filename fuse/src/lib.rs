//! dsvault-fuse: serves a file tree through FUSE (the `fuser` crate).
//!
//! Owns: the [`ReadOnlyView`] trait (what the filesystem needs from whoever knows the tree)
//! and the [`WritableView`] trait (write-type operations, each answering EROFS unless a view
//! implements it), the `fuser::Filesystem` over them, the mapping of [`ViewError`] to errno
//! (in one place, [`ViewError::errno`]), mount options and kernel tuning (1 MiB requests,
//! readahead, keep-cache, long timeouts for immutable nodes, READDIRPLUS, zero-message opens
//! on read-only mounts), and mounting and unmounting.
//! Never: knows about vaults, catalogs or packs. It does not depend on `dsvault`; the CLI
//! implements both traits over `dsvault::vfs::Vfs`, so there is no package cycle and the
//! filesystem can be tested against a small fake view.

mod fs;
mod mount;
mod passthrough;

pub use mount::{bdi_read_ahead, is_stale_mount, Mount, MountOptions, Unmounter};

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::time::SystemTime;

/// What a view operation failed with. Each variant is one errno, chosen to tell the truth:
/// absence is ENOENT, damage is EIO, a write is EROFS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewError {
    /// ENOENT
    NotFound,
    /// ENOTDIR
    NotADirectory,
    /// EISDIR
    IsADirectory,
    /// EINVAL (readlink on something that is not a symlink)
    NotASymlink,
    /// ENODATA
    NoAttribute,
    /// EBADF
    BadHandle,
    /// EROFS
    ReadOnly,
    /// EIO: stored bytes do not match their hash, or are missing.
    Damaged,
    /// EIO: anything else that went wrong.
    Failed,
    /// EEXIST
    Exists,
    /// ENOTEMPTY
    NotEmpty,
    /// EXDEV: the operation would have to copy (a rename of a folder that has content from
    /// a base dataset); `mv` then copies and deletes.
    CrossDevice,
    /// EOPNOTSUPP
    Unsupported,
    /// EINVAL
    InvalidArgument,
    /// An errno from the file system that holds written data (ENOSPC, EDQUOT, EACCES, ...),
    /// passed through as it is.
    Os(i32),
}

impl ViewError {
    /// The errno this error answers with.
    pub fn errno(&self) -> i32 {
        match self {
            ViewError::NotFound => libc::ENOENT,
            ViewError::NotADirectory => libc::ENOTDIR,
            ViewError::IsADirectory => libc::EISDIR,
            ViewError::NotASymlink => libc::EINVAL,
            ViewError::NoAttribute => libc::ENODATA,
            ViewError::BadHandle => libc::EBADF,
            ViewError::ReadOnly => libc::EROFS,
            ViewError::Damaged | ViewError::Failed => libc::EIO,
            ViewError::Exists => libc::EEXIST,
            ViewError::NotEmpty => libc::ENOTEMPTY,
            ViewError::CrossDevice => libc::EXDEV,
            ViewError::Unsupported => libc::EOPNOTSUPP,
            ViewError::InvalidArgument => libc::EINVAL,
            ViewError::Os(errno) => *errno,
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
}

/// A node's attributes as the view reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    pub perm: u16,
    pub mtime: SystemTime,
    /// Immutable nodes get long kernel cache timeouts and keep their page cache across
    /// opens; mutable ones (folders that gain entries, anything writable) get short timeouts.
    pub immutable: bool,
    /// Owner (uid, gid); `None` reports the user who mounted.
    pub owner: Option<(u32, u32)>,
}

/// One entry of a folder listing; `offset` is the cookie the next listing resumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub offset: u64,
    pub kind: NodeKind,
    pub name: OsString,
}

/// Figures for `statfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub bytes: u64,
    pub files: u64,
    /// Bytes that can still be written (0 for a read-only tree).
    pub free_bytes: u64,
}

/// Result of a view operation.
pub type ViewResult<T> = Result<T, ViewError>;

/// A read-only file tree. Inode 1 is the root. Methods are called from several threads at
/// once.
pub trait ReadOnlyView: Send + Sync + 'static {
    /// Bytes returned by [`ReadOnlyView::read`].
    type Data: AsRef<[u8]>;

    fn lookup(&self, parent: u64, name: &OsStr) -> ViewResult<Attr>;
    fn getattr(&self, ino: u64) -> ViewResult<Attr>;
    fn readlink(&self, ino: u64) -> ViewResult<Vec<u8>>;
    /// Open a folder; the returned handle is passed to `readdir` and `releasedir`.
    fn opendir(&self, ino: u64) -> ViewResult<u64>;
    /// Is every folder of this tree immutable (a single dataset)? Then a read-only mount
    /// answers OPENDIR with ENOSYS: the kernel opens folders itself from then on, caches
    /// each listing for good and never sends OPENDIR or RELEASEDIR again, and `readdir`
    /// gets `fh` 0.
    fn every_folder_immutable(&self) -> bool {
        false
    }
    /// Entries after `offset` (0 = from the start); an empty list ends the listing.
    fn readdir(&self, ino: u64, fh: u64, offset: u64) -> ViewResult<Vec<DirEntry>>;
    fn releasedir(&self, fh: u64);
    /// Entries after `offset` with their attributes (for READDIRPLUS, which saves the kernel
    /// a lookup per entry). The kernel ignores the attributes of `.` and `..`. The default
    /// lists with [`ReadOnlyView::readdir`] and asks [`ReadOnlyView::getattr`] for each entry.
    /// `max` is about how many entries fit in the kernel's buffer.
    fn readdir_plus(&self, ino: u64, fh: u64, offset: u64, max: usize) -> ViewResult<Vec<(DirEntry, Attr)>> {
        let _ = max;
        self.readdir(ino, fh, offset)?
            .into_iter()
            .map(|e| {
                let a = self.getattr(e.ino)?;
                Ok((e, a))
            })
            .collect()
    }
    /// Open a file for reading; the returned handle is passed to `read` and `release`. On a
    /// read-only mount the filesystem answers the first open with ENOSYS instead, and the
    /// kernel stops sending opens and releases at all (zero-message opens).
    fn open(&self, ino: u64) -> ViewResult<u64>;
    /// Up to `size` bytes at `offset`; fewer only at the end of the file. `fh` is 0 when the
    /// kernel did not open the file (zero-message opens): the view then reads by `ino`.
    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> ViewResult<Self::Data>;
    fn release(&self, fh: u64);
    fn getxattr(&self, ino: u64, name: &OsStr) -> ViewResult<Vec<u8>>;
    fn listxattr(&self, ino: u64) -> ViewResult<Vec<OsString>>;
    fn statfs(&self) -> ViewResult<StatFs>;
}

/// Attribute changes asked by `chmod`, `chown`, `truncate` and `utimes` (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits (with the file type bits masked off).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

/// A time to set: a given instant, or the current time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    At(SystemTime),
    Now,
}

/// Write-type operations. Every method has a default that refuses with EROFS (or does
/// nothing, for `forget` and `fsync`), so a read-only view implements this with an empty
/// `impl` block and a view with writable parts overrides what it supports. `open_with`
/// replaces [`ReadOnlyView::open`] on mounts that are not read-only.
///
/// Lookup counting: a view that gives nodes a limited lifetime counts one reference for
/// every successful `lookup`, `create`, `mkdir` and `symlink`, and for every entry but `.`
/// and `..` returned by `readdir_plus`; the kernel gives them back through
/// [`WritableView::forget`]. Entries of a `readdir_plus` page that do not fit in the
/// kernel's buffer are given back by the filesystem with `forget(ino, 1)`.
pub trait WritableView: ReadOnlyView {
    /// Open a file with the `open(2)` flags the kernel passes (`O_ACCMODE`, `O_APPEND`, ...;
    /// `O_TRUNC` arrives separately as a size change). The default opens read-only files
    /// with [`ReadOnlyView::open`] and refuses anything else.
    fn open_with(&self, ino: u64, flags: i32) -> ViewResult<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(ViewError::ReadOnly);
        }
        self.open(ino)
    }
    /// The local file that open handle `fh` reads and writes, if it is one (a workspace's
    /// upper-layer file). On a mount where the kernel supports FUSE passthrough (Linux 6.9+,
    /// the server running with CAP_SYS_ADMIN) the filesystem registers it as the handle's
    /// backing file: the kernel then reads, writes and maps the file itself, and `read` and
    /// `write` are no longer called for that handle. The default: no backing file.
    fn backing_file(&self, fh: u64) -> Option<std::sync::Arc<std::fs::File>> {
        let _ = fh;
        None
    }
    /// Attributes of `ino` asked through open file `fh` (`fstat`): a view can answer for a
    /// file that was deleted while open. The default ignores the handle.
    fn getattr_open(&self, ino: u64, fh: u64) -> ViewResult<Attr> {
        let _ = fh;
        self.getattr(ino)
    }
    /// Write `data` at `offset` of open file `fh`; returns the bytes written.
    fn write(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> ViewResult<u32> {
        let _ = (ino, fh, offset, data);
        Err(ViewError::ReadOnly)
    }
    /// Make an open file's written data durable.
    fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> ViewResult<()> {
        let _ = (ino, fh, datasync);
        Ok(())
    }
    /// Make the entries of folder `ino` (creates, deletes, renames in it) durable.
    fn fsyncdir(&self, ino: u64) -> ViewResult<()> {
        let _ = ino;
        Ok(())
    }
    /// Change attributes; `fh` is the open file the change came through, if any.
    fn setattr(&self, ino: u64, fh: Option<u64>, changes: &SetAttr) -> ViewResult<Attr> {
        let _ = (ino, fh, changes);
        Err(ViewError::ReadOnly)
    }
    /// Create and open file `name` in `parent` with permission bits `mode` and open flags
    /// `flags`; returns its attributes and a handle.
    fn create(&self, parent: u64, name: &OsStr, mode: u32, flags: i32) -> ViewResult<(Attr, u64)> {
        let _ = (parent, name, mode, flags);
        Err(ViewError::ReadOnly)
    }
    fn mkdir(&self, parent: u64, name: &OsStr, mode: u32) -> ViewResult<Attr> {
        let _ = (parent, name, mode);
        Err(ViewError::ReadOnly)
    }
    fn symlink(&self, parent: u64, name: &OsStr, target: &Path) -> ViewResult<Attr> {
        let _ = (parent, name, target);
        Err(ViewError::ReadOnly)
    }
    fn unlink(&self, parent: u64, name: &OsStr) -> ViewResult<()> {
        let _ = (parent, name);
        Err(ViewError::ReadOnly)
    }
    fn rmdir(&self, parent: u64, name: &OsStr) -> ViewResult<()> {
        let _ = (parent, name);
        Err(ViewError::ReadOnly)
    }
    /// `flags` are `renameat2` flags (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
    fn rename(&self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr, flags: u32) -> ViewResult<()> {
        let _ = (parent, name, new_parent, new_name, flags);
        Err(ViewError::ReadOnly)
    }
    /// Hard links.
    fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> ViewResult<Attr> {
        let _ = (ino, new_parent, new_name);
        Err(ViewError::ReadOnly)
    }
    fn fallocate(&self, ino: u64, fh: u64, offset: u64, length: u64, mode: i32) -> ViewResult<()> {
        let _ = (ino, fh, offset, length, mode);
        Err(ViewError::ReadOnly)
    }
    /// Whether writes are possible below `ino` at all (for `access(W_OK)`).
    fn writable(&self, ino: u64) -> bool {
        let _ = ino;
        false
    }
    /// The kernel dropped `nlookup` references to `ino`.
    fn forget(&self, ino: u64, nlookup: u64) {
        let _ = (ino, nlookup);
    }
}
