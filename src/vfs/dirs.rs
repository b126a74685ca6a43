//! Folder listings with stable offsets.
//!
//! A listing is `.` (offset 1), `..` (offset 2), then the children sorted by name bytes, the
//! i-th (from 0) at offset i + 3. Offsets are positions, so they stay valid however the
//! kernel pages through a folder. Each open folder handle remembers the names of the last
//! page it returned: a listing that continues from there resumes after that name with an
//! indexed query (constant cost per page, so a 100k-entry folder lists in linear time); any
//! other offset (a seek back), or a listing without a handle, skips by position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::nodes::{entry_attr, entry_ino, Node};
use super::{Attr, DatasetInfo, Describe, DescribeNone, DirEntry, NodeKind, Shared, VfsError, VfsResult};
use crate::catalog::{Entry, EntryKind};
use crate::dataset::Kind;

/// Offsets before the first child: `.` and `..`.
const DOTS: u64 = 2;

/// Open folder handles.
#[derive(Default)]
pub(crate) struct DirTable {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<DirHandle>>>,
}

/// An open folder: the folder's inode, the last page listed (offset, name), and how many
/// children it has once a page reached its end (0 until then).
pub(crate) struct DirHandle {
    ino: u64,
    last_page: Mutex<Vec<(u64, Vec<u8>)>>,
    children: AtomicU64,
}

impl DirTable {
    pub fn open(&self, ino: u64) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = Arc::new(DirHandle {
            ino,
            last_page: Mutex::new(Vec::new()),
            children: AtomicU64::new(0),
        });
        self.open.lock().expect("dir table lock").insert(fh, handle);
        fh
    }

    pub fn close(&self, fh: u64) {
        self.open.lock().expect("dir table lock").remove(&fh);
    }

    /// The open handle `fh` of folder `ino`.
    fn get(&self, ino: u64, fh: u64) -> Option<Arc<DirHandle>> {
        let handle = self.open.lock().expect("dir table lock").get(&fh).cloned();
        handle.filter(|h| h.ino == ino)
    }
}

pub(crate) fn readdir(shared: &Shared, ino: u64, fh: u64, offset: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
    Ok(readdir_plus(shared, ino, fh, offset, max, &mut DescribeNone)?
        .into_iter()
        .map(|(e, _)| e)
        .collect())
}

/// A listing page, with attributes for the entries `describe` picks (never `.` and `..`).
pub(crate) fn readdir_plus(
    shared: &Shared,
    ino: u64,
    fh: u64,
    offset: u64,
    max: usize,
    describe: &mut dyn Describe,
) -> VfsResult<Vec<(DirEntry, Option<Attr>)>> {
    let node = shared.node(ino)?;
    let mut out = Vec::new();
    if offset < 1 {
        out.push((dot(ino, 1, b"."), None));
    }
    if offset < 2 {
        let parent = shared.parent_ino(&node)?;
        out.push((dot(parent, 2, b".."), None));
    }
    let skip = offset.saturating_sub(DOTS);
    match node.dataset_dir() {
        Some((dataset, path)) => {
            let handle = shared.dirs.get(ino, fh);
            let children = handle.as_ref().map_or(0, |h| h.children.load(Ordering::Relaxed));
            if children > 0 && skip >= children {
                // The end, known from the page before: the kernel asks once more.
                return Ok(out);
            }
            let start = PageStart::resuming(handle.as_deref(), skip);
            let (page, positional) = dataset_page(shared, dataset, &path, &start, skip, max, describe)?;
            if let Some(h) = handle {
                // A page read by name: the next one resumes after the name it ends with
                // (the kernel asks from the last entry it could use, not always the last).
                let names = if positional {
                    Vec::new()
                } else {
                    page.iter().map(|(e, _)| (e.offset, e.name.clone())).collect()
                };
                *h.last_page.lock().expect("dir handle lock") = names;
                if page.len() < max {
                    h.children.store(skip + page.len() as u64, Ordering::Relaxed);
                }
            }
            out.extend(page);
        }
        None => {
            let children = virtual_children(shared, &node)?;
            for (i, (ino, name)) in children.into_iter().enumerate().skip(skip as usize).take(max) {
                let e = DirEntry {
                    ino,
                    offset: i as u64 + DOTS + 1,
                    kind: NodeKind::Dir,
                    name,
                };
                let attr = if describe.describe(&e) {
                    Some(shared.attr(&shared.node(e.ino)?)?)
                } else {
                    None
                };
                out.push((e, attr));
            }
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
        kind: node_kind(e.kind),
        name: e.name.clone(),
    }
}

fn node_kind(kind: EntryKind) -> NodeKind {
    match kind {
        EntryKind::File => NodeKind::File,
        EntryKind::Dir => NodeKind::Dir,
        EntryKind::Symlink => NodeKind::Symlink,
    }
}

/// A listing page: each entry with its attributes when described.
type PageEntries = Vec<(DirEntry, Option<Attr>)>;

/// Where a page of a dataset folder starts.
struct PageStart {
    /// After this name (the last of the handle's previous page, when the page continues it).
    after: Option<Vec<u8>>,
    /// Else after this many entries (not counting the dots).
    skip: u64,
}

impl PageStart {
    fn resuming(handle: Option<&DirHandle>, skip: u64) -> Self {
        let after = (skip > 0)
            .then(|| {
                let page = handle?.last_page.lock().expect("dir handle lock");
                page.iter()
                    .find(|(off, _)| *off == skip + DOTS)
                    .map(|(_, name)| name.clone())
            })
            .flatten();
        let skip = if after.is_some() { 0 } else { skip };
        PageStart { after, skip }
    }

    /// The page's entries with every column.
    fn entries(&self, shared: &Shared, dataset_id: i64, path: &[u8], max: usize) -> VfsResult<Vec<Entry>> {
        let after = self.after.as_deref();
        Ok(shared
            .pool
            .with(|c| c.children_from(dataset_id, path, after, self.skip, max))?)
    }
}

/// A page of a dataset folder from position `skip` (`start` says where the entries are
/// read from). When `describe` expects files, the page is read with every column; else
/// names and kinds only, from the folder's listing when the catalog has one (then the page
/// is positional: true), and the few described entries (folders) are fetched by id (or the
/// page again with every column, when more are).
fn dataset_page(
    shared: &Shared,
    dataset: &Arc<DatasetInfo>,
    path: &[u8],
    start: &PageStart,
    skip: u64,
    max: usize,
    describe: &mut dyn Describe,
) -> VfsResult<(PageEntries, bool)> {
    let first_offset = skip + DOTS + 1;
    let mut positional = false;
    let mut out = Vec::new();
    let mut described = Vec::new();
    if describe.expects_files() {
        for (i, e) in start.entries(shared, dataset.id, path, max)?.into_iter().enumerate() {
            let dirent = entry_dirent(&e, first_offset + i as u64);
            if describe.describe(&dirent) {
                described.push((out.len(), e));
            }
            out.push((dirent, None));
        }
    } else {
        positional = dataset.listed(shared)?;
        let names = shared.pool.with(|c| {
            if positional {
                c.listed_children(dataset.id, path, skip, max)
            } else {
                c.child_names(dataset.id, path, start.after.as_deref(), start.skip, max)
            }
        })?;
        let mut wanted = Vec::new();
        for (i, n) in names.into_iter().enumerate() {
            let dirent = DirEntry {
                ino: entry_ino(n.id),
                offset: first_offset + i as u64,
                kind: node_kind(n.kind),
                name: n.name,
            };
            if describe.describe(&dirent) {
                wanted.push(out.len());
            }
            out.push((dirent, None));
        }
        described = fetch_entries(shared, dataset.id, path, start, max, &out, &wanted)?;
    }
    let folders = described
        .iter()
        .filter(|(_, e)| e.kind == EntryKind::Dir)
        .map(|(_, e)| e.path())
        .collect();
    let mut listing_sizes = shared.listing_sizes(dataset, folders)?;
    for (i, entry) in described {
        let mut attr = entry_attr(&entry);
        if entry.kind == EntryKind::Dir {
            attr.listing = listing_sizes.remove(&entry.path());
        }
        out[i].1 = Some(attr);
        // The kernel now knows this inode without a lookup; its first read (or a listing
        // inside it) resolves it from here.
        let node = Node::Entry {
            dataset: dataset.clone(),
            entry,
        };
        shared.nodes.insert(out[i].0.ino, node);
    }
    Ok((out, positional))
}

/// The full entries of the described entries of a page read without them: one query by id
/// each for a few, the page again with every column for more.
fn fetch_entries(
    shared: &Shared,
    dataset_id: i64,
    path: &[u8],
    start: &PageStart,
    max: usize,
    page: &[(DirEntry, Option<Attr>)],
    wanted: &[usize],
) -> VfsResult<Vec<(usize, Entry)>> {
    const BY_ID_MAX: usize = 8;
    if wanted.len() <= BY_ID_MAX {
        let mut out = Vec::with_capacity(wanted.len());
        for &i in wanted {
            if let Node::Entry { entry, .. } = shared.node(page[i].0.ino)? {
                out.push((i, entry));
            }
        }
        return Ok(out);
    }
    let mut by_ino: HashMap<u64, Entry> = start
        .entries(shared, dataset_id, path, max)?
        .into_iter()
        .map(|e| (entry_ino(e.id), e))
        .collect();
    Ok(wanted
        .iter()
        .filter_map(|&i| by_ino.remove(&page[i].0.ino).map(|e| (i, e)))
        .collect())
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
