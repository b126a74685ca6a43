//! The writable workspace overlay: `work/<workspace>/…` in a whole-vault view.
//!
//! Owns: the inodes of nodes under `work/` ([`inodes`]), the merged view of each workspace
//! ([`layers`], the same rules `derive` seals), copy-up and the other changes to the upper
//! layer ([`upper`]), open upper-layer files and folder listings ([`handles`]), and the
//! namespace operations (create, mkdir, symlink, unlink, rmdir, rename, setattr) in
//! [`change`].
//!
//! - An untouched base file is read from the base's chunks, through the same read path and
//!   chunk cache as `gold/` (its handle is a dataset file handle): nothing is copied.
//! - Opening a base file for writing, truncating it or changing its mode, owner or times
//!   copies it up into the upper layer first ([`upper::copy_up`]); from then on reads and
//!   writes go to the upper file through its open descriptor.
//! - Deleting a base entry records a whiteout in the catalog (`whiteouts` table); removing
//!   a base folder and creating a folder of the same name gives an opaque folder.
//! - Renaming a file (from a base or not) or a folder created in the workspace works;
//!   renaming a folder that has content from a base answers EXDEV (`mv` then copies and
//!   deletes), like overlayfs without `redirect_dir`.
//!
//! Never: writes to datasets, packs or the store. Changes of one workspace's tree are
//! serialised by its lock; reads and writes of open files are not.

mod at;
mod change;
mod handles;
pub(crate) mod inodes;
mod layers;
mod upper;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{
    files, Attr, DirEntry, NodeKind, ReadBytes, Shared, VfsError, VfsResult, OVERLAY_FH, WORK_INO, WORK_NODE_BASE,
};
use crate::catalog::EntryKind;
use crate::workspace::Workspace;

pub(crate) use handles::Handles;
use inodes::NodeTable;
use layers::{Found, Ws};

/// State of the overlay for the life of a view.
#[derive(Default)]
pub(crate) struct Overlay {
    nodes: Mutex<NodeTable>,
    workspaces: Mutex<HashMap<String, Arc<Ws>>>,
    handles: Handles,
}

/// Is `ino` `work/` or a node below it?
pub(crate) fn is_work(ino: u64) -> bool {
    ino == WORK_INO || (WORK_NODE_BASE..OVERLAY_FH).contains(&ino)
}

/// Is `fh` a handle of the overlay (rather than a dataset file or folder handle)?
pub(crate) fn is_overlay_fh(fh: u64) -> bool {
    fh & OVERLAY_FH != 0
}

/// Attributes of a merged-view node of `ws`: an untouched base entry belongs to the
/// workspace's owner, so the kernel lets only them change it.
fn attr_of(ino: u64, found: &Found, ws: &Ws) -> Attr {
    match found {
        Found::Upper(m) => meta_attr(ino, m),
        Found::Base { entry, .. } => {
            let mut a = super::nodes::entry_attr(entry);
            a.ino = ino;
            a.perm = (entry.mode & 0o7777) as u16;
            a.immutable = false;
            a.owner = Some(ws.owner());
            a
        }
    }
}

/// Attributes of an upper-layer file.
pub(crate) fn meta_attr(ino: u64, m: &at::Meta) -> Attr {
    let kind = m.kind;
    Attr {
        ino,
        kind,
        size: if kind == NodeKind::Dir { 0 } else { m.size },
        perm: m.perm as u16,
        mtime: m.mtime,
        immutable: false,
        owner: Some((m.uid, m.gid)),
        local: Some(super::LocalStat {
            nlink: m.nlink.min(u32::MAX as u64) as u32,
            atime: m.atime,
            ctime: m.ctime,
            rdev: m.rdev as u32,
        }),
        listing: None,
    }
}

impl Overlay {
    /// The live workspace `name` (loaded on first use; `None` if there is none).
    fn workspace(&self, shared: &Shared, name: &[u8]) -> VfsResult<Option<Arc<Ws>>> {
        let Ok(name) = std::str::from_utf8(name) else {
            return Ok(None);
        };
        let row = match shared.pool.with(|c| c.workspace(name)) {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut cache = self.workspaces.lock().expect("workspaces lock");
        if let Some(ws) = cache.get(name).filter(|w| w.id == row.id) {
            return Ok(Some(ws.clone()));
        }
        let ws = Arc::new(load_workspace(shared, name)?);
        cache.insert(name.to_string(), ws.clone());
        Ok(Some(ws))
    }

    /// The workspace and path of an attached node.
    fn path(&self, ino: u64) -> VfsResult<(Arc<Ws>, Vec<u8>)> {
        self.nodes
            .lock()
            .expect("nodes lock")
            .path(ino)
            .ok_or(VfsError::NotFound)
    }

    /// The node of `name` in `parent`, which is `found`, counting a kernel reference.
    fn counted_ino(&self, parent: u64, name: &[u8], ws: &Arc<Ws>, found: &Found) -> u64 {
        self.nodes
            .lock()
            .expect("nodes lock")
            .ino_for(parent, name, ws, true, found.ident())
    }

    pub fn lookup(&self, shared: &Shared, parent: u64, name: &[u8]) -> VfsResult<Attr> {
        if parent == WORK_INO {
            let ws = self.workspace(shared, name)?.ok_or(VfsError::NotFound)?;
            let found = ws.resolve(shared, b"")?.ok_or(VfsError::NotFound)?;
            return Ok(attr_of(self.counted_ino(WORK_INO, name, &ws, &found), &found, &ws));
        }
        let (ws, dir) = self.path(parent)?;
        let path = crate::catalog::entries::join_path(&dir, name);
        let found = ws.resolve(shared, &path)?.ok_or(VfsError::NotFound)?;
        Ok(attr_of(self.counted_ino(parent, name, &ws, &found), &found, &ws))
    }

    pub fn getattr(&self, shared: &Shared, ino: u64) -> VfsResult<Attr> {
        let (ws, path) = match self.path(ino) {
            Ok(p) => p,
            Err(e) => {
                let orphan = self.nodes.lock().expect("nodes lock").orphan(ino);
                return match orphan {
                    Some(f) => Ok(meta_attr(ino, &at::fstat(&*f)?)),
                    None => Err(e),
                };
            }
        };
        let found = ws.resolve(shared, &path)?.ok_or(VfsError::NotFound)?;
        Ok(attr_of(ino, &found, &ws))
    }

    /// Attributes through an open handle: works for a file deleted while open.
    pub fn getattr_open(&self, shared: &Shared, ino: u64, fh: u64) -> VfsResult<Attr> {
        match self.handles.file(fh) {
            Some(f) => Ok(meta_attr(ino, &at::fstat(&*f)?)),
            None => self.getattr(shared, ino),
        }
    }

    pub fn readlink(&self, shared: &Shared, ino: u64) -> VfsResult<Vec<u8>> {
        let (ws, path) = self.path(ino)?;
        match ws.resolve(shared, &path)?.ok_or(VfsError::NotFound)? {
            Found::Upper(m) if m.is_symlink() => Ok(ws.root.readlink(&path)?),
            Found::Base { entry, .. } if entry.kind == EntryKind::Symlink => Ok(entry.target.unwrap_or_default()),
            _ => Err(VfsError::NotASymlink),
        }
    }

    // ---- folders ------------------------------------------------------------------------

    pub fn opendir(&self, shared: &Shared, ino: u64) -> VfsResult<u64> {
        if ino != WORK_INO && self.getattr(shared, ino)?.kind != NodeKind::Dir {
            return Err(VfsError::NotADirectory);
        }
        Ok(self.handles.open_dir())
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.close(fh);
    }

    /// Up to `max` entries after `offset`; with `plus`, each with attributes and a counted
    /// reference. The listing is taken when read from offset 0 and paged from that snapshot.
    pub fn readdir(
        &self,
        shared: &Shared,
        ino: u64,
        fh: u64,
        offset: u64,
        max: usize,
        plus: bool,
    ) -> VfsResult<Vec<(DirEntry, Option<Attr>)>> {
        let snapshot = match (offset, self.handles.dir(fh)) {
            (0, _) | (_, None) => {
                let listing = self.list(shared, ino)?;
                self.handles.set_dir(fh, listing)
            }
            (_, Some(s)) => s,
        };
        let parent = match ino {
            WORK_INO => super::ROOT_INO,
            _ => self.nodes.lock().expect("nodes lock").parent(ino).unwrap_or(WORK_INO),
        };
        let mut out = Vec::new();
        if offset < 1 {
            out.push((super::dirs::dot(ino, 1, b"."), None));
        }
        if offset < 2 {
            out.push((super::dirs::dot(parent, 2, b".."), None));
        }
        let skip = offset.saturating_sub(2) as usize;
        let mut nodes = self.nodes.lock().expect("nodes lock");
        for (i, (name, ws, found)) in snapshot.entries.iter().enumerate().skip(skip).take(max) {
            let child = nodes.ino_for(ino, name, ws, plus, found.ident());
            let a = attr_of(child, found, ws);
            let e = DirEntry {
                ino: child,
                offset: i as u64 + 3,
                kind: a.kind,
                name: name.clone(),
            };
            out.push((e, plus.then_some(a)));
        }
        Ok(out)
    }

    /// The full listing of `work/` or of a workspace folder.
    fn list(&self, shared: &Shared, ino: u64) -> VfsResult<Vec<handles::Listed>> {
        if ino == WORK_INO {
            let rows = shared.pool.with(|c| c.list_workspaces())?;
            let mut out = Vec::new();
            for row in rows {
                if let Some(ws) = self.workspace(shared, row.name.as_bytes())? {
                    if let Some(found) = ws.resolve(shared, b"")? {
                        out.push((row.name.into_bytes(), ws, found));
                    }
                }
            }
            return Ok(out);
        }
        let (ws, path) = self.path(ino)?;
        Ok(ws
            .children(shared, &path)?
            .into_iter()
            .map(|(name, found)| (name, ws.clone(), found))
            .collect())
    }

    // ---- files --------------------------------------------------------------------------

    /// Open a file. Read-only opens of an untouched base file get a dataset file handle
    /// (the `gold/` read path); anything else opens the upper-layer file, copying it up
    /// first when opened for writing.
    pub fn open(&self, shared: &Shared, ino: u64, flags: i32) -> VfsResult<u64> {
        let (ws, path) = self.path(ino)?;
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writing {
            let _guard = ws.change()?;
            match ws.resolve(shared, &path)?.ok_or(VfsError::NotFound)? {
                f if f.is_dir() => return Err(VfsError::IsADirectory),
                found => upper::copy_up_found(shared, &ws, &path, found, true)?,
            }
            return self.handles.open_file(&ws.root, &path, flags);
        }
        match ws.resolve(shared, &path)?.ok_or(VfsError::NotFound)? {
            f if f.is_dir() => Err(VfsError::IsADirectory),
            Found::Base { layer, entry } => files::open_entry(shared, ws.bases[layer].clone(), entry),
            Found::Upper(_) => self.handles.open_file(&ws.root, &path, flags),
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> VfsResult<ReadBytes> {
        let f = self.handles.file(fh).ok_or(VfsError::BadHandle)?;
        Ok(ReadBytes::Owned(handles::read_at(&f, offset, size)?))
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let f = self.handles.file(fh).ok_or(VfsError::BadHandle)?;
        std::os::unix::fs::FileExt::write_all_at(&*f, data, offset)?;
        Ok(data.len() as u32)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> VfsResult<()> {
        match self.handles.file(fh) {
            Some(f) if datasync => Ok(f.sync_data()?),
            Some(f) => Ok(f.sync_all()?),
            // A dataset file handle: nothing was written.
            None => Ok(()),
        }
    }

    /// fsync the upper folder of `ino`, if it has one (a folder only in the bases has no
    /// entries of its own to sync).
    pub fn fsyncdir(&self, ino: u64) -> VfsResult<()> {
        let (ws, path) = self.path(ino)?;
        match ws.root.open_dir(&path) {
            Ok(dir) => Ok(dir.sync_all()?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> VfsResult<()> {
        let f = self.handles.file(fh).ok_or(VfsError::BadHandle)?;
        handles::fallocate(&f, offset, length, mode)
    }

    /// The upper file of open handle `fh`.
    pub fn backing_file(&self, fh: u64) -> Option<Arc<std::fs::File>> {
        self.handles.file(fh)
    }

    pub fn release(&self, fh: u64) {
        self.handles.close(fh);
    }

    /// The kernel gave back `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino >= WORK_NODE_BASE {
            self.nodes.lock().expect("nodes lock").forget(ino, n);
        }
    }

    /// Nodes currently numbered (for tests of the lookup counting).
    pub fn node_count(&self) -> usize {
        self.nodes.lock().expect("nodes lock").len()
    }
}

/// Open workspace `name` for the overlay: its bases as the view knows them, its whiteouts,
/// and its scratch folder (cleared of files dead processes left).
fn load_workspace(shared: &Shared, name: &str) -> VfsResult<Ws> {
    let w = Workspace::open(&shared.vault, name)?;
    let bases = w
        .bases
        .iter()
        .map(|b| shared.dataset_info(b.id))
        .collect::<VfsResult<Vec<_>>>()?;
    let whiteouts = shared.pool.with(|c| w.whiteouts(c))?;
    let scratch = w
        .upper
        .parent()
        .map_or_else(|| w.upper.join(".."), |p| p.join("scratch"));
    upper::clear_dead_scratch(&scratch);
    Ok(Ws::new(w, scratch, bases, whiteouts)?)
}
