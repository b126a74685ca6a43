//! A workspace as the overlay sees it: its upper folder, its bases and whiteouts, and the
//! merged-view rules, which are exactly those `derive` seals (see [`crate::workspace`] and
//! [`crate::ops::derive`]):
//!
//! 1. bases in order; on the same path a later base wins, and a non-folder in a later base
//!    hides everything an earlier base has below that path;
//! 2. the upper layer wins over every base on the same path (a folder merges with base
//!    folders, a file or symlink replaces them);
//! 3. a whiteout of P hides the bases' entry at P and everything below it, never the upper
//!    layer (a folder re-created after a delete is opaque).

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::at::{Meta, Root};
use crate::catalog::entries::{join_path, split_path};
use crate::catalog::{Entry, EntryKind};
use crate::error::Error;
use crate::vfs::{DatasetInfo, Shared, VfsResult};
use crate::workspace::{replaced_by_later_base, Workspace, WriterLock};

/// Base entries listed per catalog query.
const PAGE: usize = 4096;

/// Link count of a folder whose entries come from the upper layer and a base: the upper
/// folder's own count would leave out the base's subfolders. 1 is what file systems that do
/// not count subfolders report (btrfs, many FUSE file systems); `find` then does not use it.
const MERGED_NLINK: u64 = 1;

/// One live workspace.
pub(crate) struct Ws {
    pub id: i64,
    /// The upper layer, open: every change to it is a system call relative to this.
    pub root: Root,
    /// Where copy-ups are assembled before they are renamed into place (same file system).
    pub scratch: PathBuf,
    /// Base datasets, lowest first.
    pub bases: Vec<Arc<DatasetInfo>>,
    whiteouts: RwLock<BTreeSet<Vec<u8>>>,
    /// Held by every change of the workspace's tree (create, copy-up, rename, delete):
    /// see [`Ws::change`]. Holds the workspace's writer lock once a change has taken it.
    lock: Mutex<Option<WriterLock>>,
    /// The workspace, for taking its writer lock.
    workspace: Workspace,
    /// A refused change was logged (once per view, not once per call).
    busy_logged: AtomicBool,
}

/// What a path of the merged view is.
pub(crate) enum Found {
    /// In the upper layer (a folder here may merge with base folders).
    Upper(Meta),
    /// Untouched, from base number `layer`.
    Base { layer: usize, entry: Entry },
}

impl Found {
    /// Device and inode number of an upper-layer non-folder (see `NodeTable::ino_for`).
    pub fn ident(&self) -> Option<(u64, u64)> {
        match self {
            Found::Upper(m) if !m.is_dir() => Some((m.dev, m.ino)),
            _ => None,
        }
    }

    pub fn is_dir(&self) -> bool {
        match self {
            Found::Upper(m) => m.is_dir(),
            Found::Base { entry, .. } => entry.kind == EntryKind::Dir,
        }
    }
}

impl Ws {
    pub fn new(
        workspace: Workspace,
        scratch: PathBuf,
        bases: Vec<Arc<DatasetInfo>>,
        whiteouts: Vec<Vec<u8>>,
    ) -> std::io::Result<Ws> {
        Ok(Ws {
            id: workspace.id,
            root: Root::open(&workspace.upper)?,
            scratch,
            bases,
            whiteouts: RwLock::new(whiteouts.into_iter().collect()),
            lock: Mutex::new(None),
            workspace,
            busy_logged: AtomicBool::new(false),
        })
    }

    /// The workspace's owner (uid, gid): who owns its untouched base entries in the merged
    /// view, and what copy-ups are given to.
    pub fn owner(&self) -> (u32, u32) {
        (self.workspace.owner, self.workspace.group)
    }

    /// Permission to change the tree: serialises changes within this process and, on the
    /// first one, takes the workspace's writer lock (kept for the life of the view), so two
    /// mounts never change one workspace at once. While another process holds it, changes
    /// answer EBUSY and the first refusal is logged with the holder.
    pub fn change(&self) -> VfsResult<MutexGuard<'_, Option<WriterLock>>> {
        let mut guard = self.lock.lock().expect("workspace lock");
        if guard.is_none() {
            match self.workspace.lock_writer() {
                Ok(writer) => *guard = Some(writer),
                Err(e @ Error::WorkspaceBusy { .. }) => {
                    if !self.busy_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!("mount: {e}");
                    }
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(guard)
    }

    /// What `path` is in the merged view, if anything.
    pub fn resolve(&self, shared: &Shared, path: &[u8]) -> VfsResult<Option<Found>> {
        match self.root.lstat(path) {
            Ok(mut m) => {
                if m.is_dir()
                    && !self.bases.is_empty()
                    && (path.is_empty() || self.base_visible(shared, path)?.is_some())
                {
                    m.nlink = MERGED_NLINK;
                }
                Ok(Some(Found::Upper(m)))
            }
            // A non-folder in the upper layer above `path` hides the bases below it.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(self
                .base_visible(shared, path)?
                .map(|(layer, entry)| Found::Base { layer, entry })),
            Err(e) => Err(e.into()),
        }
    }

    /// The base entry at `path` that the merged view would show without the upper layer.
    pub fn base_visible(&self, shared: &Shared, path: &[u8]) -> VfsResult<Option<(usize, Entry)>> {
        if path.is_empty() || self.whited_out(path) {
            return Ok(None);
        }
        for (layer, base) in self.bases.iter().enumerate().rev() {
            if let Some(entry) = shared.pool.with(|c| c.entry_at(base.id, path))? {
                if self.hidden_by_later_base(shared, layer, split_path(path).0)? {
                    return Ok(None);
                }
                return Ok(Some((layer, entry)));
            }
        }
        Ok(None)
    }

    /// Does a base above `layer` have a non-folder at `dir` or one of its ancestors?
    fn hidden_by_later_base(&self, shared: &Shared, layer: usize, dir: &[u8]) -> VfsResult<bool> {
        let later = self.bases[layer + 1..].iter().map(|b| b.id);
        Ok(replaced_by_later_base(later, dir, |id, path| {
            shared.pool.with(|c| c.entry_at(id, path))
        })?)
    }

    /// Is `path` or one of its ancestors whited out?
    pub fn whited_out(&self, path: &[u8]) -> bool {
        let set = self.whiteouts.read().expect("whiteouts lock");
        if set.is_empty() {
            return false;
        }
        let mut at = path;
        while !at.is_empty() {
            if set.contains(at) {
                return true;
            }
            at = split_path(at).0;
        }
        false
    }

    /// Hide the bases' entry at `path` (and below): in the catalog first, then here. The
    /// catalog commit is not synced: `fsyncdir` of a workspace folder and the end of the
    /// view (`Vfs::fsyncdir`, `Drop for Vfs`) make it durable.
    pub fn add_whiteout(&self, shared: &Shared, path: &[u8]) -> VfsResult<()> {
        shared.pool.with(|c| c.add_whiteout_unsynced(self.id, path))?;
        self.whiteouts.write().expect("whiteouts lock").insert(path.to_vec());
        Ok(())
    }

    /// The children of folder `dir` in the merged view, by name.
    pub fn children(&self, shared: &Shared, dir: &[u8]) -> VfsResult<BTreeMap<Vec<u8>, Found>> {
        let mut out = BTreeMap::new();
        if !self.whited_out(dir) {
            for layer in 0..self.bases.len() {
                self.base_children(shared, layer, dir, &mut out)?;
            }
        }
        match self.root.list(dir) {
            Ok(items) => {
                for (name, mut meta) in items {
                    if meta.is_dir() && matches!(out.get(&name), Some(f) if f.is_dir()) {
                        meta.nlink = MERGED_NLINK;
                    }
                    out.insert(name, Found::Upper(meta));
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(out)
    }

    /// Add the visible children of `dir` in base `layer` to `out` (replacing earlier bases').
    fn base_children(
        &self,
        shared: &Shared,
        layer: usize,
        dir: &[u8],
        out: &mut BTreeMap<Vec<u8>, Found>,
    ) -> VfsResult<()> {
        let base = &self.bases[layer];
        if !dir.is_empty() {
            let is_dir = matches!(shared.pool.with(|c| c.entry_at(base.id, dir))?, Some(e) if e.kind == EntryKind::Dir);
            if !is_dir || self.hidden_by_later_base(shared, layer, dir)? {
                return Ok(());
            }
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = shared.pool.with(|c| c.children(base.id, dir, after.as_deref(), PAGE))?;
            let done = page.len() < PAGE;
            after = page.last().map(|e| e.name.clone());
            for entry in page {
                let hidden = self
                    .whiteouts
                    .read()
                    .expect("whiteouts lock")
                    .contains(&join_path(dir, &entry.name));
                if !hidden {
                    out.insert(entry.name.clone(), Found::Base { layer, entry });
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Is `dir` an empty folder in the merged view?
    pub fn is_empty_dir(&self, shared: &Shared, dir: &[u8]) -> VfsResult<bool> {
        Ok(self.children(shared, dir)?.is_empty())
    }
}
