//! Inodes to nodes and back: what each inode number is (see the table in `vfs`), the child
//! of a folder by name, and a node's attributes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{
    ns_to_time, Attr, DatasetInfo, ListingSize, NodeKind, Shared, VfsError, VfsResult, DATASET_BASE, DERIVED_INO,
    ENTRY_BASE, GOLD_INO, NAME_BASE, ROOT_INO, WORK_INO,
};
use crate::catalog::entries::join_path;
use crate::catalog::{Entry, EntryKind};
use crate::dataset::Kind;

/// What an inode stands for.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// The root of a whole-vault view.
    VaultRoot,
    /// `gold/` or `derived/`.
    KindDir(Kind),
    /// `work/`.
    Work,
    /// `<kind>/<name>/`; `first_id` is the smallest dataset id under the name.
    NameDir { kind: Kind, name: String, first_id: i64 },
    /// A dataset's root folder.
    DatasetRoot(Arc<DatasetInfo>),
    /// A file, folder or symlink inside a dataset.
    Entry { dataset: Arc<DatasetInfo>, entry: Entry },
}

impl Node {
    /// The dataset this node is in, if any.
    pub fn dataset(&self) -> Option<&Arc<DatasetInfo>> {
        match self {
            Node::DatasetRoot(d) | Node::Entry { dataset: d, .. } => Some(d),
            _ => None,
        }
    }

    /// For a folder inside a dataset (or its root): the dataset and the folder's path.
    pub fn dataset_dir(&self) -> Option<(&Arc<DatasetInfo>, Vec<u8>)> {
        match self {
            Node::DatasetRoot(d) => Some((d, Vec::new())),
            Node::Entry { dataset, entry } if entry.kind == EntryKind::Dir => Some((dataset, entry.path())),
            _ => None,
        }
    }
}

/// Recently resolved entries by inode: folders are resolved again for every lookup in
/// them, and a file looked up (or listed) is usually read next. Entries of sealed datasets
/// never change, so nothing here goes stale. Bounded: when full, it starts over.
#[derive(Default)]
pub(crate) struct NodeCache {
    map: Mutex<HashMap<u64, Node>>,
}

const NODE_CACHE_MAX: usize = 8192;

impl NodeCache {
    pub fn get(&self, ino: u64) -> Option<Node> {
        self.map.lock().expect("node cache lock").get(&ino).cloned()
    }

    pub fn insert(&self, ino: u64, node: Node) {
        let mut map = self.map.lock().expect("node cache lock");
        if map.len() >= NODE_CACHE_MAX {
            map.clear();
        }
        map.insert(ino, node);
    }
}

/// The inode of an entry.
pub(crate) fn entry_ino(entry_id: i64) -> u64 {
    ENTRY_BASE + entry_id as u64
}

impl Shared {
    /// The inode of a dataset's root folder in this view.
    pub fn dataset_ino(&self, d: &DatasetInfo) -> u64 {
        match &self.single {
            Some(_) => ROOT_INO,
            None => DATASET_BASE + d.id as u64,
        }
    }

    /// The inode of a node.
    pub fn ino_of(&self, node: &Node) -> u64 {
        match node {
            Node::VaultRoot => ROOT_INO,
            Node::KindDir(Kind::Gold) => GOLD_INO,
            Node::KindDir(Kind::Derived) => DERIVED_INO,
            Node::Work => WORK_INO,
            Node::NameDir { first_id, .. } => NAME_BASE + *first_id as u64,
            Node::DatasetRoot(d) => self.dataset_ino(d),
            Node::Entry { entry, .. } => entry_ino(entry.id),
        }
    }

    /// A sealed dataset by id (cached: datasets never change once sealed).
    pub fn dataset_info(&self, id: i64) -> VfsResult<Arc<DatasetInfo>> {
        if let Some(d) = self.datasets.lock().expect("datasets lock").get(&id) {
            return Ok(d.clone());
        }
        let row = self
            .pool
            .with(|c| c.sealed_dataset_by_id(id))?
            .ok_or(VfsError::NotFound)?;
        let info = DatasetInfo::from_row(&row);
        self.datasets.lock().expect("datasets lock").insert(id, info.clone());
        Ok(info)
    }

    /// Sealed dataset `id` if this view shows it (a single-dataset view shows only its own).
    pub fn dataset_in_view(&self, id: i64) -> VfsResult<Option<Arc<DatasetInfo>>> {
        match &self.single {
            Some(d) => Ok((d.id == id).then(|| d.clone())),
            None => match self.dataset_info(id) {
                Ok(d) => Ok(Some(d)),
                Err(VfsError::NotFound) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// What inode `ino` is.
    pub fn node(&self, ino: u64) -> VfsResult<Node> {
        if let Some(d) = &self.single {
            return match ino {
                ROOT_INO => Ok(Node::DatasetRoot(d.clone())),
                ENTRY_BASE..DATASET_BASE => self.entry_node(ino, Some(d.id)),
                _ => Err(VfsError::NotFound),
            };
        }
        match ino {
            ROOT_INO => Ok(Node::VaultRoot),
            GOLD_INO => Ok(Node::KindDir(Kind::Gold)),
            DERIVED_INO => Ok(Node::KindDir(Kind::Derived)),
            WORK_INO => Ok(Node::Work),
            ENTRY_BASE..DATASET_BASE => self.entry_node(ino, None),
            DATASET_BASE..NAME_BASE => Ok(Node::DatasetRoot(self.dataset_info((ino - DATASET_BASE) as i64)?)),
            _ if (NAME_BASE..NAME_BASE + DATASET_BASE).contains(&ino) => {
                let first = self.dataset_info((ino - NAME_BASE) as i64)?;
                Ok(Node::NameDir {
                    kind: first.name.kind,
                    name: first.name.name.clone(),
                    first_id: first.id,
                })
            }
            _ => Err(VfsError::NotFound),
        }
    }

    fn entry_node(&self, ino: u64, only_dataset: Option<i64>) -> VfsResult<Node> {
        if let Some(node) = self.nodes.get(ino) {
            return Ok(node);
        }
        let (dataset_id, entry) = self
            .pool
            .with(|c| c.entry_by_id((ino - ENTRY_BASE) as i64))?
            .ok_or(VfsError::NotFound)?;
        if only_dataset.is_some_and(|d| d != dataset_id) {
            return Err(VfsError::NotFound);
        }
        let node = Node::Entry {
            dataset: self.dataset_info(dataset_id)?,
            entry,
        };
        self.nodes.insert(ino, node.clone());
        Ok(node)
    }

    /// The child `name` of folder `parent`.
    pub fn child(&self, parent: &Node, name: &[u8]) -> VfsResult<Node> {
        let text = std::str::from_utf8(name).ok();
        match parent {
            Node::VaultRoot => match text {
                Some("gold") => Ok(Node::KindDir(Kind::Gold)),
                Some("derived") => Ok(Node::KindDir(Kind::Derived)),
                Some("work") => Ok(Node::Work),
                _ => Err(VfsError::NotFound),
            },
            Node::KindDir(kind) => {
                let name = text.ok_or(VfsError::NotFound)?;
                let versions = self.pool.with(|c| c.list_datasets(Some(*kind), Some(name)))?;
                let first_id = versions.iter().map(|d| d.id).min().ok_or(VfsError::NotFound)?;
                Ok(Node::NameDir {
                    kind: *kind,
                    name: name.to_string(),
                    first_id,
                })
            }
            Node::Work => Err(VfsError::NotFound),
            Node::NameDir { kind, name, .. } => {
                let version = text.ok_or(VfsError::NotFound)?;
                let versions = self.pool.with(|c| c.list_datasets(Some(*kind), Some(name)))?;
                let row = versions
                    .iter()
                    .find(|d| d.name.version == version)
                    .ok_or(VfsError::NotFound)?;
                Ok(Node::DatasetRoot(self.dataset_info(row.id)?))
            }
            Node::DatasetRoot(_) | Node::Entry { .. } => {
                let (dataset, dir) = parent.dataset_dir().ok_or(VfsError::NotADirectory)?;
                let path = join_path(&dir, name);
                let entry = self
                    .pool
                    .with(|c| c.entry_at(dataset.id, &path))?
                    .ok_or(VfsError::NotFound)?;
                let node = Node::Entry {
                    dataset: dataset.clone(),
                    entry,
                };
                self.nodes.insert(self.ino_of(&node), node.clone());
                Ok(node)
            }
        }
    }

    /// The parent folder's inode (for `..`).
    pub fn parent_ino(&self, node: &Node) -> VfsResult<u64> {
        Ok(match node {
            Node::VaultRoot | Node::KindDir(_) | Node::Work => ROOT_INO,
            Node::NameDir { kind, .. } => self.ino_of(&Node::KindDir(*kind)),
            Node::DatasetRoot(d) => match &self.single {
                Some(_) => ROOT_INO,
                None => NAME_BASE + self.name_first_id(d)? as u64,
            },
            Node::Entry { dataset, entry } if entry.parent.is_empty() => self.dataset_ino(dataset),
            Node::Entry { dataset, entry } => self
                .pool
                .with(|c| c.entry_at(dataset.id, &entry.parent))?
                .map(|e| entry_ino(e.id))
                .ok_or(VfsError::NotFound)?,
        })
    }

    fn name_first_id(&self, d: &DatasetInfo) -> VfsResult<i64> {
        let versions = self
            .pool
            .with(|c| c.list_datasets(Some(d.name.kind), Some(&d.name.name)))?;
        Ok(versions.iter().map(|r| r.id).min().unwrap_or(d.id))
    }

    /// A node's attributes.
    pub fn attr(&self, node: &Node) -> VfsResult<Attr> {
        let dir = |mtime, immutable| Attr {
            ino: self.ino_of(node),
            kind: NodeKind::Dir,
            size: 0,
            perm: 0o555,
            mtime,
            immutable,
            owner: None,
            local: None,
            listing: None,
        };
        Ok(match node {
            Node::VaultRoot | Node::KindDir(_) | Node::Work | Node::NameDir { .. } => dir(self.started, false),
            Node::DatasetRoot(d) => Attr {
                listing: self.listing_sizes(d, vec![Vec::new()])?.remove(&b""[..]),
                ..dir(d.mtime, true)
            },
            Node::Entry { dataset, entry } => {
                let mut attr = entry_attr(entry);
                if entry.kind == EntryKind::Dir {
                    let path = entry.path();
                    attr.listing = self.listing_sizes(dataset, vec![path.clone()])?.remove(&path);
                }
                attr
            }
        })
    }

    /// The listing sizes of dataset folders, by path; none when the catalog has no listings
    /// for the dataset.
    pub fn listing_sizes(
        &self,
        dataset: &DatasetInfo,
        folders: Vec<Vec<u8>>,
    ) -> VfsResult<HashMap<Vec<u8>, ListingSize>> {
        if folders.is_empty() || !dataset.listed(self)? {
            return Ok(HashMap::new());
        }
        Ok(self.pool.with(|c| c.listing_sizes(dataset.id, &folders))?)
    }
}

/// Attributes of an entry inside a dataset. Files and folders keep their recorded
/// permission bits without the write bits (a dataset never changes): 0755 is served as
/// 0555, so a script in a dataset runs from the mount, and 0644 as 0444. Setuid, setgid and
/// sticky bits are dropped. Symlinks are 0777, as everywhere.
pub(crate) fn entry_attr(entry: &Entry) -> Attr {
    let (kind, perm) = match entry.kind {
        EntryKind::File => (NodeKind::File, served_mode(entry.mode)),
        EntryKind::Dir => (NodeKind::Dir, served_mode(entry.mode)),
        EntryKind::Symlink => (NodeKind::Symlink, 0o777),
    };
    let size = match entry.kind {
        EntryKind::Symlink => entry.target.as_ref().map_or(0, |t| t.len() as u64),
        EntryKind::Dir => 0,
        EntryKind::File => entry.size,
    };
    Attr {
        ino: entry_ino(entry.id),
        kind,
        size,
        perm,
        mtime: ns_to_time(entry.mtime_ns),
        immutable: true,
        owner: None,
        local: None,
        listing: None,
    }
}

/// The permission bits a dataset entry is served with: its recorded read and execute bits.
fn served_mode(recorded: u32) -> u16 {
    (recorded & 0o555) as u16
}
