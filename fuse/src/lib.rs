//! dsvault-fuse: serves a read-only file tree through FUSE (the `fuser` crate).
//!
//! Owns: the [`ReadOnlyView`] trait (what the filesystem needs from whoever knows the tree),
//! the `fuser::Filesystem` over it, the mapping of [`ViewError`] to errno (in one place,
//! [`ViewError::errno`]), EROFS for every write-type operation, mount options and kernel
//! tuning (1 MiB requests, readahead, keep-cache, long timeouts for immutable nodes,
//! READDIRPLUS, zero-message opens on read-only mounts), and mounting and unmounting.
//! Never: knows about vaults, catalogs or packs. It does not depend on `dsvault`; the CLI
//! implements [`ReadOnlyView`] over `dsvault::vfs::Vfs`, so there is no package cycle and the
//! filesystem can be tested against a small fake view.

mod fs;
mod mount;

pub use mount::{bdi_read_ahead, is_stale_mount, Mount, MountOptions, Unmounter};

use std::ffi::{OsStr, OsString};
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
    /// opens; mutable ones (folders that gain entries) get short timeouts.
    pub immutable: bool,
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
