//! Changes to a workspace's tree through the overlay: create, mkdir, mknod, symlink, link, unlink,
//! rmdir, rename and attribute changes. Each runs under the workspace's lock, checks the
//! merged view the way a local file system would (EEXIST, ENOENT, ENOTDIR, EISDIR,
//! ENOTEMPTY), changes the upper layer, then records whiteouts for base entries that must
//! stay hidden, and finally updates the inode table.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use super::layers::{Found, Ws};
use super::{at, meta_attr, upper, Overlay};
use crate::catalog::entries::{join_path, split_path};
use crate::vfs::SetAttr;
use crate::vfs::{Attr, Caller, Shared, VfsError, VfsResult, WORK_INO};

/// `renameat2` flags.
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

impl Overlay {
    /// The workspace and path of `name` in folder `parent` (not `work/` itself: workspaces
    /// are created with `dsvault workspace new`, never through the mount).
    fn child_path(&self, parent: u64, name: &[u8]) -> VfsResult<(Arc<Ws>, Vec<u8>)> {
        if parent == WORK_INO {
            return Err(VfsError::ReadOnly);
        }
        if name.contains(&b'/') || name.is_empty() {
            return Err(VfsError::InvalidArgument);
        }
        let (ws, dir) = self.path(parent)?;
        Ok((ws.clone(), join_path(&dir, name)))
    }

    /// Create and open a new file.
    pub fn create(
        &self,
        shared: &Shared,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> VfsResult<(Attr, u64)> {
        let (ws, path) = self.child_path(parent, name)?;
        let _guard = ws.change()?;
        if ws.resolve(shared, &path)?.is_some() {
            return Err(VfsError::Exists);
        }
        upper::ensure_dir(shared, &ws, split_path(&path).0)?;
        let acc = match flags & libc::O_ACCMODE {
            libc::O_WRONLY => libc::O_WRONLY,
            _ => libc::O_RDWR,
        };
        let file = ws
            .root
            .open_file(&path, acc | libc::O_CREAT | libc::O_EXCL, mode & 0o7777)?;
        upper::give_new(&ws, &path, caller)?;
        // The mode again: open() applied this process's umask (the kernel applied the
        // caller's already), and a change of owner clears setuid and setgid bits.
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
        let meta = at::fstat(&file)?;
        let ino = self.counted_ino(parent, name, &ws, &Found::Upper(meta));
        let fh = self.handles.add_file(file);
        Ok((meta_attr(ino, &meta), fh))
    }

    pub fn mkdir(&self, shared: &Shared, parent: u64, name: &[u8], mode: u32, caller: Caller) -> VfsResult<Attr> {
        let (ws, path) = self.child_path(parent, name)?;
        let _guard = ws.change()?;
        if ws.resolve(shared, &path)?.is_some() {
            return Err(VfsError::Exists);
        }
        upper::ensure_dir(shared, &ws, split_path(&path).0)?;
        ws.root.mkdir(&path, mode)?;
        upper::give_new(&ws, &path, caller)?;
        ws.root.chmod(&path, mode)?;
        // A base folder deleted before (whited out) stays hidden: the new folder is opaque.
        self.entry_attr(parent, name, &ws, &path)
    }

    /// A FIFO, socket, block or character device (`mode` with its file type bits), made
    /// with mknod(2) in the upper layer. Datasets cannot hold these: `derive` refuses a
    /// workspace that has one, unless told to leave them out.
    pub fn mknod(
        &self,
        shared: &Shared,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> VfsResult<Attr> {
        let kind = mode & libc::S_IFMT;
        if ![
            libc::S_IFIFO,
            libc::S_IFSOCK,
            libc::S_IFBLK,
            libc::S_IFCHR,
            libc::S_IFREG,
        ]
        .contains(&kind)
        {
            return Err(VfsError::InvalidArgument);
        }
        let (ws, path) = self.child_path(parent, name)?;
        let _guard = ws.change()?;
        if ws.resolve(shared, &path)?.is_some() {
            return Err(VfsError::Exists);
        }
        upper::ensure_dir(shared, &ws, split_path(&path).0)?;
        ws.root.mknod(&path, mode, rdev)?;
        upper::give_new(&ws, &path, caller)?;
        ws.root.chmod(&path, mode)?;
        self.entry_attr(parent, name, &ws, &path)
    }

    pub fn symlink(&self, shared: &Shared, parent: u64, name: &[u8], target: &Path, caller: Caller) -> VfsResult<Attr> {
        let (ws, path) = self.child_path(parent, name)?;
        let _guard = ws.change()?;
        if ws.resolve(shared, &path)?.is_some() {
            return Err(VfsError::Exists);
        }
        upper::ensure_dir(shared, &ws, split_path(&path).0)?;
        ws.root.symlink(target, &path)?;
        upper::give_new(&ws, &path, caller)?;
        self.entry_attr(parent, name, &ws, &path)
    }

    /// A hard link `name` in `parent` to the file `ino` of the same workspace (a base entry
    /// is copied up first). The names share the upper file and are one node, so `st_ino`
    /// and `st_nlink` are those of a local disk.
    pub fn link(&self, shared: &Shared, ino: u64, parent: u64, name: &[u8]) -> VfsResult<Attr> {
        let (from_ws, from) = self.path(ino)?;
        let (ws, path) = self.child_path(parent, name)?;
        if !Arc::ptr_eq(&from_ws, &ws) {
            return Err(VfsError::CrossDevice);
        }
        let _guard = ws.change()?;
        let found = ws.resolve(shared, &from)?.ok_or(VfsError::NotFound)?;
        if found.is_dir() {
            // link(2) on a folder: EPERM.
            return Err(VfsError::NotPermitted);
        }
        if ws.resolve(shared, &path)?.is_some() {
            return Err(VfsError::Exists);
        }
        upper::copy_up_found(shared, &ws, &from, found, true)?;
        upper::ensure_dir(shared, &ws, split_path(&path).0)?;
        ws.root.link(&from, &path)?;
        let meta = ws.root.lstat(&path)?;
        self.nodes
            .lock()
            .expect("nodes lock")
            .set_ident(ino, (meta.dev, meta.ino));
        Ok(meta_attr(
            self.counted_ino(parent, name, &ws, &Found::Upper(meta)),
            &meta,
        ))
    }

    fn entry_attr(&self, parent: u64, name: &[u8], ws: &Arc<Ws>, path: &[u8]) -> VfsResult<Attr> {
        let meta = ws.root.lstat(path)?;
        Ok(meta_attr(
            self.counted_ino(parent, name, ws, &Found::Upper(meta)),
            &meta,
        ))
    }

    pub fn unlink(&self, shared: &Shared, parent: u64, name: &[u8]) -> VfsResult<()> {
        let (ws, path) = self.child_path(parent, name)?;
        let _guard = ws.change()?;
        let mut keep = None;
        match ws.resolve(shared, &path)?.ok_or(VfsError::NotFound)? {
            f if f.is_dir() => return Err(VfsError::IsADirectory),
            Found::Upper(_) => {
                keep = self.keep_if_held(&ws, parent, name, &path);
                ws.root.unlink(&path)?
            }
            Found::Base { .. } => {}
        }
        self.hide_base(shared, &ws, &path)?;
        let mut nodes = self.nodes.lock().expect("nodes lock");
        nodes.detach(parent, name);
        if let Some((ino, file)) = keep {
            nodes.set_orphan(ino, file);
        }
        Ok(())
    }

    /// The node of upper file `path` (`name` in `parent`) and its file opened `O_PATH`, when
    /// the kernel holds the node: about to be deleted or replaced, it keeps answering
    /// `getattr` (see `NodeTable::set_orphan`).
    fn keep_if_held(&self, ws: &Ws, parent: u64, name: &[u8], path: &[u8]) -> Option<(u64, fs::File)> {
        let ino = self.nodes.lock().expect("nodes lock").find(parent, name)?;
        Some((ino, ws.root.open_file(path, libc::O_PATH, 0).ok()?))
    }

    pub fn rmdir(&self, shared: &Shared, parent: u64, name: &[u8]) -> VfsResult<()> {
        let (ws, path) = self.child_path(parent, name)?;
        let _guard = ws.change()?;
        let found = ws.resolve(shared, &path)?.ok_or(VfsError::NotFound)?;
        if !found.is_dir() {
            return Err(VfsError::NotADirectory);
        }
        if !ws.is_empty_dir(shared, &path)? {
            return Err(VfsError::NotEmpty);
        }
        if let Found::Upper(_) = found {
            ws.root.rmdir(&path)?;
        }
        self.hide_base(shared, &ws, &path)?;
        self.nodes.lock().expect("nodes lock").detach(parent, name);
        Ok(())
    }

    /// Whiteout `path` if a base would show something there.
    fn hide_base(&self, shared: &Shared, ws: &Ws, path: &[u8]) -> VfsResult<()> {
        if ws.base_visible(shared, path)?.is_some() {
            ws.add_whiteout(shared, path)?;
        }
        Ok(())
    }

    /// Rename `name` in `parent` to `new_name` in `new_parent`, replacing a file there or an
    /// empty folder. A folder with content from a base answers EXDEV.
    pub fn rename(
        &self,
        shared: &Shared,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> VfsResult<()> {
        if flags & RENAME_EXCHANGE != 0 || flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 {
            return Err(VfsError::InvalidArgument);
        }
        let (ws, from) = self.child_path(parent, name)?;
        let (ws2, to) = self.child_path(new_parent, new_name)?;
        if !Arc::ptr_eq(&ws, &ws2) {
            return Err(VfsError::CrossDevice);
        }
        let _guard = ws.change()?;
        let src = ws.resolve(shared, &from)?.ok_or(VfsError::NotFound)?;
        if from == to {
            return Ok(());
        }
        if to.starts_with(&from) && to.get(from.len()) == Some(&b'/') {
            return Err(VfsError::InvalidArgument);
        }
        self.check_rename_target(shared, &ws, &src, &to, flags)?;
        if src.is_dir() && ws.base_visible(shared, &from)?.is_some() {
            return Err(VfsError::CrossDevice);
        }
        upper::copy_up_found(shared, &ws, &from, src, true)?;
        upper::ensure_dir(shared, &ws, split_path(&to).0)?;
        let replaced = match ws.root.lstat(&to) {
            Ok(m) if !m.is_dir() => self.keep_if_held(&ws, new_parent, new_name, &to),
            _ => None,
        };
        ws.root.rename(&from, &to)?;
        // The base's entry at the destination must not show through (nor, for a folder,
        // its children), and the source's base entry must not come back.
        self.hide_base(shared, &ws, &to)?;
        self.hide_base(shared, &ws, &from)?;
        let mut nodes = self.nodes.lock().expect("nodes lock");
        nodes.rename(parent, name, new_parent, new_name);
        if let Some((ino, file)) = replaced {
            nodes.set_orphan(ino, file);
        }
        Ok(())
    }

    /// What `rename(2)` checks about the destination.
    fn check_rename_target(&self, shared: &Shared, ws: &Ws, src: &Found, to: &[u8], flags: u32) -> VfsResult<()> {
        let Some(dst) = ws.resolve(shared, to)? else {
            return Ok(());
        };
        if flags & RENAME_NOREPLACE != 0 {
            return Err(VfsError::Exists);
        }
        match (src.is_dir(), dst.is_dir()) {
            (true, false) => Err(VfsError::NotADirectory),
            (false, true) => Err(VfsError::IsADirectory),
            (true, true) if !ws.is_empty_dir(shared, to)? => Err(VfsError::NotEmpty),
            _ => Ok(()),
        }
    }

    /// chmod, chown, truncate, utimes: copy up, then apply to the upper entry.
    pub fn setattr(&self, shared: &Shared, ino: u64, fh: Option<u64>, changes: &SetAttr) -> VfsResult<Attr> {
        let file = fh.and_then(|fh| self.handles.file(fh));
        if let (Some(f), true) = (&file, self.nodes.lock().expect("nodes lock").path(ino).is_none()) {
            // Deleted while open: change the open file only.
            upper::apply_open(f, changes)?;
            return Ok(meta_attr(ino, &at::fstat(&**f)?));
        }
        let (ws, path) = self.path(ino)?;
        let _guard = ws.change()?;
        if !path.is_empty() {
            // Truncating to zero needs none of the old bytes.
            let content = changes.size != Some(0);
            upper::copy_up(shared, &ws, &path, content)?;
        }
        upper::apply(&ws, &path, file.as_deref(), changes)?;
        Ok(meta_attr(ino, &ws.root.lstat(&path)?))
    }
}
