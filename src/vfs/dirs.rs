//! Folder listings with stable offsets.
//!
//! A listing is `.` (offset 1), `..` (offset 2), then the children sorted by name bytes, the
//! i-th (from 0) at offset i + 3. Offsets are positions, so they stay valid however the
//! kernel pages through a folder. Each open folder handle remembers the names of the last
//! page it returned: a listing that continues from there resumes after that name with an
//! indexed query (constant cost per page, so a 100k-entry folder lists in linear time); any
//! other offset (a seek back) skips by position. Folders the kernel opened itself (handle 0,
//! see `every_folder_immutable` in the fuse crate) keep one such page per folder instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::nodes::{entry_attr, entry_ino, Node};
use super::{Attr, DirEntry, NodeKind, Shared, VfsError, VfsResult};
use crate::catalog::{Entry, EntryKind};
use crate::dataset::Kind;

/// Offsets before the first child: `.` and `..`.
const DOTS: u64 = 2;

/// Folders listed without a handle whose last page is remembered; past this many the
/// memory starts over (a forgotten page only costs the next page a skip by position).
const UNOPENED_PAGES: usize = 4096;

/// Open folder handles, and the last page of folders listed without one (handle 0).
#[derive(Default)]
pub(crate) struct DirTable {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<DirHandle>>>,
    unopened: Mutex<HashMap<u64, Arc<DirHandle>>>,
}

/// An open folder: the folder's inode and the last page listed (offset, name).
pub(crate) struct DirHandle {
    ino: u64,
    last_page: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl DirTable {
    pub fn open(&self, ino: u64) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = Arc::new(DirHandle {
            ino,
            last_page: Mutex::new(Vec::new()),
        });
        self.open.lock().expect("dir table lock").insert(fh, handle);
        fh
    }

    pub fn close(&self, fh: u64) {
        self.open.lock().expect("dir table lock").remove(&fh);
    }

    /// The handle `fh` of folder `ino`; for handle 0, the folder's own page memory.
    fn get(&self, ino: u64, fh: u64) -> Option<Arc<DirHandle>> {
        if fh == 0 {
            let mut unopened = self.unopened.lock().expect("dir table lock");
            if unopened.len() >= UNOPENED_PAGES && !unopened.contains_key(&ino) {
                unopened.clear();
            }
            let handle = unopened.entry(ino).or_insert_with(|| {
                Arc::new(DirHandle {
                    ino,
                    last_page: Mutex::new(Vec::new()),
                })
            });
            return Some(handle.clone());
        }
        let handle = self.open.lock().expect("dir table lock").get(&fh).cloned();
        handle.filter(|h| h.ino == ino)
    }
}

pub(crate) fn readdir(shared: &Shared, ino: u64, fh: u64, offset: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
    Ok(list(shared, ino, fh, offset, max, false)?
        .into_iter()
        .map(|(e, _)| e)
        .collect())
}

/// A listing page with each entry's attributes.
pub(crate) fn readdir_plus(
    shared: &Shared,
    ino: u64,
    fh: u64,
    offset: u64,
    max: usize,
) -> VfsResult<Vec<(DirEntry, Attr)>> {
    list(shared, ino, fh, offset, max, true)?
        .into_iter()
        .map(|(e, a)| match a {
            Some(a) => Ok((e, a)),
            None => Ok((e.clone(), shared.attr(&shared.node(e.ino)?)?)),
        })
        .collect()
}

/// Placeholder attributes of `.` and `..` in a listing with attributes.
pub(super) fn dot_attr(ino: u64, shared: &Shared) -> Attr {
    Attr {
        ino,
        kind: NodeKind::Dir,
        size: 0,
        perm: 0o555,
        mtime: shared.started,
        immutable: false,
        owner: None,
        local: None,
    }
}

type Listed = (DirEntry, Option<Attr>);

/// A listing page; with `plus`, entries of dataset folders come with their attributes (the
/// others get them from [`readdir_plus`]).
fn list(shared: &Shared, ino: u64, fh: u64, offset: u64, max: usize, plus: bool) -> VfsResult<Vec<Listed>> {
    let node = shared.node(ino)?;
    let mut out = Vec::new();
    if offset < 1 {
        out.push((dot(ino, 1, b"."), Some(dot_attr(ino, shared))));
    }
    if offset < 2 {
        let parent = shared.parent_ino(&node)?;
        out.push((dot(parent, 2, b".."), Some(dot_attr(parent, shared))));
    }
    let skip = offset.saturating_sub(DOTS);
    match node.dataset_dir() {
        Some((dataset, path)) => {
            let handle = shared.dirs.get(ino, fh);
            let page = dataset_page(shared, dataset.id, &path, handle.as_deref(), skip, max)?;
            let first = skip + DOTS + 1;
            let entries: Vec<Listed> = page
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    let attr = plus.then(|| entry_attr(&e));
                    let dirent = entry_dirent(&e, first + i as u64);
                    if plus {
                        // The kernel now knows this inode without a lookup; its first read
                        // (or a listing inside it) resolves it from here.
                        let node = Node::Entry {
                            dataset: dataset.clone(),
                            entry: e,
                        };
                        shared.nodes.insert(dirent.ino, &node);
                    }
                    (dirent, attr)
                })
                .collect();
            if let Some(h) = handle {
                *h.last_page.lock().expect("dir handle lock") =
                    entries.iter().map(|(e, _)| (e.offset, e.name.clone())).collect();
            }
            out.extend(entries);
        }
        None => {
            let children = virtual_children(shared, &node)?;
            out.extend(
                children
                    .into_iter()
                    .enumerate()
                    .skip(skip as usize)
                    .take(max)
                    .map(|(i, (ino, name))| {
                        let e = DirEntry {
                            ino,
                            offset: i as u64 + DOTS + 1,
                            kind: NodeKind::Dir,
                            name,
                        };
                        (e, None)
                    }),
            );
        }
    }
    Ok(out)
}

pub(super) fn dot(ino: u64, offset: u64, name: &[u8]) -> DirEntry {
    DirEntry {
        ino,
        offset,
        kind: NodeKind::Dir,
        name: name.to_vec(),
    }
}

fn entry_dirent(e: &Entry, offset: u64) -> DirEntry {
    DirEntry {
        ino: entry_ino(e.id),
        offset,
        kind: match e.kind {
            EntryKind::File => NodeKind::File,
            EntryKind::Dir => NodeKind::Dir,
            EntryKind::Symlink => NodeKind::Symlink,
        },
        name: e.name.clone(),
    }
}

/// Children of a dataset folder after the first `skip`, resuming by name when the handle's
/// last page ends where this listing continues.
fn dataset_page(
    shared: &Shared,
    dataset_id: i64,
    path: &[u8],
    handle: Option<&DirHandle>,
    skip: u64,
    max: usize,
) -> VfsResult<Vec<Entry>> {
    if skip == 0 {
        return Ok(shared.pool.with(|c| c.children(dataset_id, path, None, max))?);
    }
    let resume = handle.and_then(|h| {
        let page = h.last_page.lock().expect("dir handle lock");
        page.iter()
            .find(|(off, _)| *off == skip + DOTS)
            .map(|(_, name)| name.clone())
    });
    Ok(match resume {
        Some(after) => shared.pool.with(|c| c.children(dataset_id, path, Some(&after), max))?,
        None => shared.pool.with(|c| c.children_from(dataset_id, path, skip, max))?,
    })
}

/// Children of the folders above datasets: (inode, name), sorted by name.
fn virtual_children(shared: &Shared, node: &Node) -> VfsResult<Vec<(u64, Vec<u8>)>> {
    Ok(match node {
        Node::VaultRoot => vec![
            (shared.ino_of(&Node::KindDir(Kind::Derived)), b"derived".to_vec()),
            (shared.ino_of(&Node::KindDir(Kind::Gold)), b"gold".to_vec()),
            (shared.ino_of(&Node::Work), b"work".to_vec()),
        ],
        Node::KindDir(kind) => shared
            .pool
            .with(|c| c.dataset_names(*kind))?
            .into_iter()
            .map(|(name, first_id)| {
                let ino = shared.ino_of(&Node::NameDir {
                    kind: *kind,
                    name: name.clone(),
                    first_id,
                });
                (ino, name.into_bytes())
            })
            .collect(),
        Node::NameDir { kind, name, .. } => shared
            .pool
            .with(|c| c.list_datasets(Some(*kind), Some(name)))?
            .into_iter()
            .map(|row| (super::DATASET_BASE + row.id as u64, row.name.version.into_bytes()))
            .collect(),
        Node::Work => Vec::new(),
        Node::DatasetRoot(_) | Node::Entry { .. } => return Err(VfsError::NotADirectory),
    })
}
