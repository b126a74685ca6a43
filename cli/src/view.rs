//! The adapter from `dsvault::vfs::Vfs` to the `dsvault_fuse` traits (`ReadOnlyView`,
//! `WritableView`): type conversions and the mapping of `VfsError` to `ViewError`. Shared
//! by `mount` and `run`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use dsvault::vfs::{self, Vfs, VfsError};
use dsvault_fuse::{ReadOnlyView, ViewError, ViewResult, WritableView};

/// `dsvault_fuse::ReadOnlyView` over the library's view.
pub struct VfsView(pub Vfs);

/// Folder entries returned per `readdir` call.
const READDIR_PAGE: usize = 512;

fn view_error(e: VfsError) -> ViewError {
    match e {
        VfsError::NotFound => ViewError::NotFound,
        VfsError::NotADirectory => ViewError::NotADirectory,
        VfsError::IsADirectory => ViewError::IsADirectory,
        VfsError::NotASymlink => ViewError::NotASymlink,
        VfsError::NoAttribute => ViewError::NoAttribute,
        VfsError::BadHandle => ViewError::BadHandle,
        VfsError::ReadOnly => ViewError::ReadOnly,
        VfsError::Exists => ViewError::Exists,
        VfsError::NotEmpty => ViewError::NotEmpty,
        VfsError::CrossDevice => ViewError::CrossDevice,
        VfsError::Unsupported => ViewError::Unsupported,
        VfsError::InvalidArgument => ViewError::InvalidArgument,
        VfsError::Os(errno) => ViewError::Os(errno),
        VfsError::Damaged(_) => ViewError::Damaged,
        VfsError::Failed(e) => {
            tracing::warn!("mount: {e}");
            ViewError::Failed
        }
    }
}

fn attr(a: vfs::Attr) -> dsvault_fuse::Attr {
    dsvault_fuse::Attr {
        ino: a.ino,
        kind: node_kind(a.kind),
        size: a.size,
        perm: a.perm,
        mtime: a.mtime,
        immutable: a.immutable,
        owner: a.owner,
    }
}

fn node_kind(k: vfs::NodeKind) -> dsvault_fuse::NodeKind {
    match k {
        vfs::NodeKind::Dir => dsvault_fuse::NodeKind::Dir,
        vfs::NodeKind::File => dsvault_fuse::NodeKind::File,
        vfs::NodeKind::Symlink => dsvault_fuse::NodeKind::Symlink,
    }
}

impl ReadOnlyView for VfsView {
    type Data = vfs::ReadBytes;

    fn lookup(&self, parent: u64, name: &OsStr) -> ViewResult<dsvault_fuse::Attr> {
        self.0.lookup(parent, name.as_bytes()).map(attr).map_err(view_error)
    }

    fn getattr(&self, ino: u64) -> ViewResult<dsvault_fuse::Attr> {
        self.0.getattr(ino).map(attr).map_err(view_error)
    }

    fn readlink(&self, ino: u64) -> ViewResult<Vec<u8>> {
        self.0.readlink(ino).map_err(view_error)
    }

    fn opendir(&self, ino: u64) -> ViewResult<u64> {
        self.0.opendir(ino).map_err(view_error)
    }

    fn every_folder_immutable(&self) -> bool {
        self.0.dataset().is_some()
    }

    fn readdir(&self, ino: u64, fh: u64, offset: u64) -> ViewResult<Vec<dsvault_fuse::DirEntry>> {
        let entries = self.0.readdir(ino, fh, offset, READDIR_PAGE).map_err(view_error)?;
        Ok(entries
            .into_iter()
            .map(|e| dsvault_fuse::DirEntry {
                ino: e.ino,
                offset: e.offset,
                kind: node_kind(e.kind),
                name: OsString::from_vec(e.name),
            })
            .collect())
    }

    fn readdir_plus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        max: usize,
    ) -> ViewResult<Vec<(dsvault_fuse::DirEntry, dsvault_fuse::Attr)>> {
        let entries = self
            .0
            .readdir_plus(ino, fh, offset, max.min(READDIR_PAGE))
            .map_err(view_error)?;
        Ok(entries
            .into_iter()
            .map(|(e, a)| {
                let e = dsvault_fuse::DirEntry {
                    ino: e.ino,
                    offset: e.offset,
                    kind: node_kind(e.kind),
                    name: OsString::from_vec(e.name),
                };
                (e, attr(a))
            })
            .collect())
    }

    fn releasedir(&self, fh: u64) {
        self.0.releasedir(fh)
    }

    fn open(&self, ino: u64) -> ViewResult<u64> {
        self.0.open(ino).map_err(view_error)
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> ViewResult<vfs::ReadBytes> {
        match fh {
            0 => self.0.read_ino(ino, offset, size),
            fh => self.0.read(fh, offset, size),
        }
        .map_err(view_error)
    }

    fn release(&self, fh: u64) {
        self.0.release(fh)
    }

    fn getxattr(&self, ino: u64, name: &OsStr) -> ViewResult<Vec<u8>> {
        self.0.getxattr(ino, name.as_bytes()).map_err(view_error)
    }

    fn listxattr(&self, ino: u64) -> ViewResult<Vec<OsString>> {
        let names = self.0.listxattr(ino).map_err(view_error)?;
        Ok(names.into_iter().map(OsString::from).collect())
    }

    fn statfs(&self) -> ViewResult<dsvault_fuse::StatFs> {
        let s = self.0.statfs().map_err(view_error)?;
        Ok(dsvault_fuse::StatFs {
            bytes: s.bytes,
            files: s.files,
            free_bytes: s.free_bytes,
        })
    }
}

fn set_time(t: dsvault_fuse::SetTime) -> vfs::SetTime {
    match t {
        dsvault_fuse::SetTime::At(at) => vfs::SetTime::At(at),
        dsvault_fuse::SetTime::Now => vfs::SetTime::Now,
    }
}

impl WritableView for VfsView {
    fn open_with(&self, ino: u64, flags: i32) -> ViewResult<u64> {
        self.0.open_with(ino, flags).map_err(view_error)
    }

    fn backing_file(&self, fh: u64) -> Option<std::sync::Arc<std::fs::File>> {
        self.0.backing_file(fh)
    }

    fn getattr_open(&self, ino: u64, fh: u64) -> ViewResult<dsvault_fuse::Attr> {
        self.0.getattr_open(ino, fh).map(attr).map_err(view_error)
    }

    fn write(&self, _ino: u64, fh: u64, offset: u64, data: &[u8]) -> ViewResult<u32> {
        self.0.write(fh, offset, data).map_err(view_error)
    }

    fn fsync(&self, _ino: u64, fh: u64, datasync: bool) -> ViewResult<()> {
        self.0.fsync(fh, datasync).map_err(view_error)
    }

    fn fsyncdir(&self, ino: u64) -> ViewResult<()> {
        self.0.fsyncdir(ino).map_err(view_error)
    }

    fn setattr(&self, ino: u64, fh: Option<u64>, c: &dsvault_fuse::SetAttr) -> ViewResult<dsvault_fuse::Attr> {
        let changes = vfs::SetAttr {
            mode: c.mode,
            uid: c.uid,
            gid: c.gid,
            size: c.size,
            atime: c.atime.map(set_time),
            mtime: c.mtime.map(set_time),
        };
        self.0.setattr(ino, fh, &changes).map(attr).map_err(view_error)
    }

    fn create(&self, parent: u64, name: &OsStr, mode: u32, flags: i32) -> ViewResult<(dsvault_fuse::Attr, u64)> {
        self.0
            .create(parent, name.as_bytes(), mode, flags)
            .map(|(a, fh)| (attr(a), fh))
            .map_err(view_error)
    }

    fn mkdir(&self, parent: u64, name: &OsStr, mode: u32) -> ViewResult<dsvault_fuse::Attr> {
        self.0
            .mkdir(parent, name.as_bytes(), mode)
            .map(attr)
            .map_err(view_error)
    }

    fn symlink(&self, parent: u64, name: &OsStr, target: &Path) -> ViewResult<dsvault_fuse::Attr> {
        self.0
            .symlink(parent, name.as_bytes(), target)
            .map(attr)
            .map_err(view_error)
    }

    fn unlink(&self, parent: u64, name: &OsStr) -> ViewResult<()> {
        self.0.unlink(parent, name.as_bytes()).map_err(view_error)
    }

    fn rmdir(&self, parent: u64, name: &OsStr) -> ViewResult<()> {
        self.0.rmdir(parent, name.as_bytes()).map_err(view_error)
    }

    fn rename(&self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr, flags: u32) -> ViewResult<()> {
        self.0
            .rename(parent, name.as_bytes(), new_parent, new_name.as_bytes(), flags)
            .map_err(view_error)
    }

    fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> ViewResult<dsvault_fuse::Attr> {
        self.0
            .link(ino, new_parent, new_name.as_bytes())
            .map(attr)
            .map_err(view_error)
    }

    fn fallocate(&self, _ino: u64, fh: u64, offset: u64, length: u64, mode: i32) -> ViewResult<()> {
        self.0.fallocate(fh, offset, length, mode).map_err(view_error)
    }

    fn writable(&self, ino: u64) -> bool {
        self.0.writable(ino)
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        self.0.forget(ino, nlookup)
    }
}
