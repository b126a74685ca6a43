//! The contract between a file tree and a filesystem adapter (the `dsvault-fuse` crate).
//!
//! Owns: the view traits [`ReadOnlyView`] and [`WritableView`] (what a filesystem needs from
//! whoever knows the tree; [`super::Vfs`] implements both, and a test can implement them
//! with a small fake), the types they speak in ([`Attr`], [`DirEntry`], [`SetAttr`], ...),
//! the error they fail with ([`VfsError`]) and the one mapping of that error to an errno
//! ([`VfsError::errno`]): every errno a mount answers for a failed operation is chosen there.
//! Never: knows about FUSE or `fuser` (the library does not depend on them), vaults or
//! catalogs.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

pub use crate::catalog::ListingSize;
use crate::error::Error;

/// What a view operation failed with. [`VfsError::errno`] turns it into the errno a mount
/// answers; each variant tells the truth: absence is ENOENT, damage is EIO, a write to a
/// dataset is EROFS, a full disk is ENOSPC.
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    #[error("no such file or folder")]
    NotFound,
    #[error("not a folder")]
    NotADirectory,
    #[error("is a folder")]
    IsADirectory,
    /// readlink on something that is not a symlink.
    #[error("not a symlink")]
    NotASymlink,
    #[error("no such attribute")]
    NoAttribute,
    #[error("unknown or closed handle")]
    BadHandle,
    #[error("read-only")]
    ReadOnly,
    #[error("already exists")]
    Exists,
    #[error("folder not empty")]
    NotEmpty,
    /// A rename that would have to copy (a folder with content from a base dataset); `mv`
    /// then copies and deletes.
    #[error("cross-device rename")]
    CrossDevice,
    #[error("not supported")]
    Unsupported,
    #[error("invalid argument")]
    InvalidArgument,
    /// An operation POSIX forbids outright (a hard link to a folder).
    #[error("operation not permitted")]
    NotPermitted,
    /// An I/O error from the file system that holds written data (ENOSPC, EDQUOT, EACCES,
    /// ...), answered with its own errno.
    #[error("{0}")]
    Io(std::io::Error),
    /// Stored bytes do not match their hash, or a pack or chunk is missing.
    #[error("{0}")]
    Damaged(Arc<Error>),
    /// A library error (catalog, I/O, a busy workspace, a full disk, ...).
    #[error("{0}")]
    Failed(Arc<Error>),
}

impl VfsError {
    /// The errno this error answers with: the one place a library error becomes an errno.
    pub fn errno(&self) -> i32 {
        match self {
            VfsError::NotFound => libc::ENOENT,
            VfsError::NotADirectory => libc::ENOTDIR,
            VfsError::IsADirectory => libc::EISDIR,
            VfsError::NotASymlink | VfsError::InvalidArgument => libc::EINVAL,
            VfsError::NoAttribute => libc::ENODATA,
            VfsError::BadHandle => libc::EBADF,
            VfsError::ReadOnly => libc::EROFS,
            VfsError::Exists => libc::EEXIST,
            VfsError::NotEmpty => libc::ENOTEMPTY,
            VfsError::CrossDevice => libc::EXDEV,
            VfsError::Unsupported => libc::EOPNOTSUPP,
            VfsError::NotPermitted => libc::EPERM,
            VfsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            VfsError::Damaged(_) => libc::EIO,
            VfsError::Failed(e) => match &**e {
                Error::NoSpace { .. } => libc::ENOSPC,
                Error::WorkspaceBusy { .. } | Error::Busy(_) => libc::EBUSY,
                Error::Io { source, .. } | Error::Unreadable { source, .. } => {
                    source.raw_os_error().unwrap_or(libc::EIO)
                }
                _ => libc::EIO,
            },
        }
    }
}

impl From<Error> for VfsError {
    fn from(e: Error) -> Self {
        VfsError::from(Arc::new(e))
    }
}

impl From<Arc<Error>> for VfsError {
    fn from(e: Arc<Error>) -> Self {
        match *e {
            Error::CorruptChunk { .. }
            | Error::CorruptPack { .. }
            | Error::DamagedListing { .. }
            | Error::MissingPack(_)
            | Error::MissingChunk(_)
            | Error::Damaged(_) => VfsError::Damaged(e),
            _ => VfsError::Failed(e),
        }
    }
}

impl From<std::io::Error> for VfsError {
    fn from(e: std::io::Error) -> Self {
        VfsError::Io(e)
    }
}

/// Result of view operations.
pub type VfsResult<T> = std::result::Result<T, VfsError>;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
    /// FIFOs, sockets and device nodes exist only in workspaces (mknod).
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
}

/// A node's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    /// Permission bits. Inside a dataset: the recorded mode without write bits (0755 is
    /// 0555, 0644 is 0444), 0o777 for symlinks, 0o555 for the folders above datasets. Under
    /// `work/`: what the upper layer says, or a base entry's recorded mode until changed.
    pub perm: u16,
    pub mtime: SystemTime,
    /// Immutable nodes get long kernel cache timeouts and keep their page cache across
    /// opens. False for the folders that change when a dataset is sealed (root, kind and
    /// name folders) and for everything under `work/`; true for everything inside a dataset.
    pub immutable: bool,
    /// Owner (uid, gid) reported to the kernel, which checks permissions against it
    /// (`default_permissions`): an upper-layer file's own, the workspace owner's for
    /// untouched base entries under `work/NAME/`; `None`: the user who mounted.
    pub owner: Option<(u32, u32)>,
    /// What a local file system says of an upper-layer entry (link count, access and change
    /// times, device number); `None` for dataset nodes: one link, every time = `mtime`.
    pub local: Option<LocalStat>,
    /// A dataset folder's listing size, when the catalog has listings (a mount sizes the
    /// folder's block size by it, which readers size their `getdents` buffer by); `None`
    /// for everything else.
    pub listing: Option<ListingSize>,
}

/// An open folder: its handle, and whether its listing never changes (a mount may let the
/// kernel keep it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedDir {
    pub fh: u64,
    pub immutable: bool,
}

/// The `stat` fields of an upper-layer entry that dataset nodes do not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalStat {
    pub nlink: u32,
    pub atime: SystemTime,
    pub ctime: SystemTime,
    /// Device number of a block or character device.
    pub rdev: u32,
}

/// Who asks for a change (the FUSE request's user and group): a view run by root creates
/// files for them, owned by them, as a local file system or an NFS server would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Which entries of a listing page carry attributes (see [`ReadOnlyView::readdir_plus`]).
pub trait Describe {
    /// Is this entry (never `.` or `..`) to carry its attributes?
    fn describe(&mut self, entry: &DirEntry) -> bool;
    /// Will most files be described? A view may then read every entry's attributes along
    /// with the listing instead of fetching the described ones afterwards.
    fn expects_files(&self) -> bool;
}

/// Describes no entry: a plain listing.
pub struct DescribeNone;

impl Describe for DescribeNone {
    fn describe(&mut self, _: &DirEntry) -> bool {
        false
    }
    fn expects_files(&self) -> bool {
        false
    }
}

/// Is this name `.` or `..`?
pub(crate) fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// One folder entry of a listing. `offset` is the cookie the next listing resumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub offset: u64,
    pub kind: NodeKind,
    pub name: Vec<u8>,
}

/// Figures for `statfs`: logical bytes and files in view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub bytes: u64,
    pub files: u64,
    /// Bytes that can still be written (0 for a read-only tree).
    pub free_bytes: u64,
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

/// A read-only file tree. Inode 1 is the root. Methods are called from several threads at
/// once.
pub trait ReadOnlyView: Send + Sync + 'static {
    /// Bytes returned by [`ReadOnlyView::read`].
    type Data: AsRef<[u8]>;

    fn lookup(&self, parent: u64, name: &[u8]) -> VfsResult<Attr>;
    fn getattr(&self, ino: u64) -> VfsResult<Attr>;
    /// A symlink's target bytes.
    fn readlink(&self, ino: u64) -> VfsResult<Vec<u8>>;
    /// Open a folder ([`VfsError::NotADirectory`] for anything else); the returned handle is
    /// passed to `readdir` and `releasedir`.
    fn opendir(&self, ino: u64) -> VfsResult<OpenedDir>;
    /// Up to `max` entries after `offset` (0 = from the start); an empty list ends the
    /// listing.
    fn readdir(&self, ino: u64, fh: u64, offset: u64, max: usize) -> VfsResult<Vec<DirEntry>>;
    fn releasedir(&self, fh: u64);
    /// Like `readdir`, with attributes for the entries `describe` picks (READDIRPLUS: the
    /// kernel builds an inode for each described entry, which saves a LOOKUP when the entry
    /// is then used and costs time when it is not). `describe` is asked once per entry but
    /// `.` and `..`, which never carry attributes; an entry it declines comes as from
    /// `readdir`, with `None`. The default lists with [`ReadOnlyView::readdir`] and asks
    /// [`ReadOnlyView::getattr`] for each described entry. `max` is about how many entries
    /// fit in the kernel's buffer.
    fn readdir_plus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        max: usize,
        describe: &mut dyn Describe,
    ) -> VfsResult<Vec<(DirEntry, Option<Attr>)>> {
        self.readdir(ino, fh, offset, max)?
            .into_iter()
            .map(|e| {
                let a = if is_dot(&e.name) || !describe.describe(&e) {
                    None
                } else {
                    Some(self.getattr(e.ino)?)
                };
                Ok((e, a))
            })
            .collect()
    }
    /// Open a file for reading; the returned handle is passed to `read` and `release`. On a
    /// read-only mount the filesystem answers the first open with ENOSYS instead, and the
    /// kernel stops sending opens and releases at all (zero-message opens).
    fn open(&self, ino: u64) -> VfsResult<u64>;
    /// Up to `size` bytes at `offset`; fewer only at the end of the file. `fh` is 0 when the
    /// kernel did not open the file (zero-message opens): the view then reads by `ino`.
    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> VfsResult<Self::Data>;
    fn release(&self, fh: u64);
    fn getxattr(&self, ino: u64, name: &[u8]) -> VfsResult<Vec<u8>>;
    fn listxattr(&self, ino: u64) -> VfsResult<Vec<Vec<u8>>>;
    fn statfs(&self) -> VfsResult<StatFs>;
}

/// Write-type operations. Every method has a default that refuses with
/// [`VfsError::ReadOnly`] (or does nothing, for `forget` and `fsync`), so a read-only view
/// implements this with an empty `impl` block and a view with writable parts overrides what
/// it supports. `open_with` replaces [`ReadOnlyView::open`] on mounts that are not
/// read-only.
///
/// Lookup counting: a view that gives nodes a limited lifetime counts one reference for
/// every successful `lookup`, `create`, `mkdir` and `symlink`, and for every described entry
/// `readdir_plus` returns; the kernel gives them back through
/// [`WritableView::forget`]. Described entries of a `readdir_plus` page that do not fit in
/// the kernel's buffer are given back by the filesystem with `forget(ino, 1)`.
pub trait WritableView: ReadOnlyView {
    /// Open a file with the `open(2)` flags the kernel passes (`O_ACCMODE`, `O_APPEND`, ...;
    /// `O_TRUNC` arrives separately as a size change). The default opens read-only files
    /// with [`ReadOnlyView::open`] and refuses anything else.
    fn open_with(&self, ino: u64, flags: i32) -> VfsResult<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(VfsError::ReadOnly);
        }
        self.open(ino)
    }
    /// The local file that open handle `fh` reads and writes, if it is one (a workspace's
    /// upper-layer file). On a mount where the kernel supports FUSE passthrough (Linux 6.9+,
    /// the server running with CAP_SYS_ADMIN) the filesystem registers it as the handle's
    /// backing file: the kernel then reads, writes and maps the file itself, and `read` and
    /// `write` are no longer called for that handle. The default: no backing file.
    fn backing_file(&self, fh: u64) -> Option<Arc<std::fs::File>> {
        let _ = fh;
        None
    }
    /// Attributes of `ino` asked through open file `fh` (`fstat`): a view can answer for a
    /// file that was deleted while open. The default ignores the handle.
    fn getattr_open(&self, ino: u64, fh: u64) -> VfsResult<Attr> {
        let _ = fh;
        self.getattr(ino)
    }
    /// Write `data` at `offset` of open file `fh`; returns the bytes written.
    fn write(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let _ = (ino, fh, offset, data);
        Err(VfsError::ReadOnly)
    }
    /// Make an open file's written data durable.
    fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> VfsResult<()> {
        let _ = (ino, fh, datasync);
        Ok(())
    }
    /// Make the entries of folder `ino` (creates, deletes, renames in it) durable.
    fn fsyncdir(&self, ino: u64) -> VfsResult<()> {
        let _ = ino;
        Ok(())
    }
    /// Change attributes; `fh` is the open file the change came through, if any.
    fn setattr(&self, ino: u64, fh: Option<u64>, changes: &SetAttr) -> VfsResult<Attr> {
        let _ = (ino, fh, changes);
        Err(VfsError::ReadOnly)
    }
    /// Create and open file `name` in `parent` with permission bits `mode` and open flags
    /// `flags`, for `caller` (who owns it, when the view can give it away); returns its
    /// attributes and a handle.
    fn create(&self, parent: u64, name: &[u8], mode: u32, flags: i32, caller: Caller) -> VfsResult<(Attr, u64)> {
        let _ = (parent, name, mode, flags, caller);
        Err(VfsError::ReadOnly)
    }
    fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> VfsResult<Attr> {
        let _ = (parent, name, mode, caller);
        Err(VfsError::ReadOnly)
    }
    fn symlink(&self, parent: u64, name: &[u8], target: &Path, caller: Caller) -> VfsResult<Attr> {
        let _ = (parent, name, target, caller);
        Err(VfsError::ReadOnly)
    }
    /// A FIFO, socket or device node; `mode` has the file type bits, `rdev` the device.
    /// (`caller`: who owns it, when the view can give it away.)
    fn mknod(&self, parent: u64, name: &[u8], mode: u32, rdev: u64, caller: Caller) -> VfsResult<Attr> {
        let _ = (parent, name, mode, rdev, caller);
        Err(VfsError::ReadOnly)
    }
    fn unlink(&self, parent: u64, name: &[u8]) -> VfsResult<()> {
        let _ = (parent, name);
        Err(VfsError::ReadOnly)
    }
    fn rmdir(&self, parent: u64, name: &[u8]) -> VfsResult<()> {
        let _ = (parent, name);
        Err(VfsError::ReadOnly)
    }
    /// `flags` are `renameat2` flags (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
    fn rename(&self, parent: u64, name: &[u8], new_parent: u64, new_name: &[u8], flags: u32) -> VfsResult<()> {
        let _ = (parent, name, new_parent, new_name, flags);
        Err(VfsError::ReadOnly)
    }
    /// A hard link `new_name` in `new_parent` to `ino`.
    fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> VfsResult<Attr> {
        let _ = (ino, new_parent, new_name);
        Err(VfsError::ReadOnly)
    }
    fn fallocate(&self, ino: u64, fh: u64, offset: u64, length: u64, mode: i32) -> VfsResult<()> {
        let _ = (ino, fh, offset, length, mode);
        Err(VfsError::ReadOnly)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn failed(e: Error) -> VfsError {
        VfsError::from(e)
    }

    #[test]
    fn errno_tells_the_truth() {
        assert_eq!(VfsError::NotFound.errno(), libc::ENOENT);
        assert_eq!(VfsError::ReadOnly.errno(), libc::EROFS);
        assert_eq!(VfsError::CrossDevice.errno(), libc::EXDEV);
        assert_eq!(VfsError::NotPermitted.errno(), libc::EPERM);
        assert_eq!(failed(Error::Damaged("x".into())).errno(), libc::EIO);
        assert_eq!(failed(Error::Config("x".into())).errno(), libc::EIO);
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(VfsError::from(io).errno(), libc::EACCES);
        let io = std::io::Error::other("no errno");
        assert_eq!(VfsError::from(io).errno(), libc::EIO);
    }

    /// A full disk anywhere (the upper layer, the catalog recording a whiteout: `catalog`
    /// turns SQLITE_FULL into `Error::NoSpace`) is ENOSPC,
    /// never EIO: `rm` in a workspace on a full disk must say "No space left on device".
    #[test]
    fn a_full_disk_is_enospc_wherever_it_happens() {
        let enospc = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(VfsError::from(enospc()).errno(), libc::ENOSPC);
        let wrapped = Error::io("writing", Path::new("/x"), enospc());
        assert_eq!(failed(wrapped).errno(), libc::ENOSPC);
        let no_space = Error::NoSpace {
            path: PathBuf::from("/x"),
        };
        assert_eq!(failed(no_space).errno(), libc::ENOSPC);
    }

    #[test]
    fn a_busy_workspace_is_ebusy() {
        let busy = Error::WorkspaceBusy {
            name: "w".into(),
            holder: "pid 1".into(),
        };
        assert_eq!(failed(busy).errno(), libc::EBUSY);
    }
}
