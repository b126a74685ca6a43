//! Inode numbers of nodes under `work/`: a table of (parent inode, name) per inode, kept as
//! long as the kernel holds a reference (lookup counting, see `WritableView::forget` in the
//! FUSE crate) or a child of the node is still in the table.
//!
//! A node keeps its number through copy-up and rename (the record moves; the number does
//! not), so `cp -r`, `tar`, `rsync` and SQLite see one file under one inode for as long as
//! they hold it. A node deleted while open is *detached*: it keeps its number but has no
//! path any more (its open handles still work). The path of a node is computed by walking
//! up to its workspace's root node, whose parent is `work/`.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use super::Ws;
use crate::catalog::entries::join_path;
use crate::vfs::{WORK_INO, WORK_NODE_BASE};

/// One node.
struct Rec {
    /// Its names: (parent inode, name). A folder has one; a file has one per hard link
    /// the overlay has seen; none once deleted (or replaced by a rename).
    names: Vec<(u64, Vec<u8>)>,
    ws: Arc<Ws>,
    /// Device and inode number of its upper-layer file, once it has one (not for folders):
    /// another name of the same file (a hard link) is the same node.
    ident: Option<(u64, u64)>,
    /// References the kernel holds (lookups not yet forgotten).
    nlookup: u64,
    /// Names whose parent is this node.
    children: u64,
    /// Once deleted while the kernel still holds it: its upper file, open (`O_PATH`), so
    /// `fstat` of a descriptor open on it still answers (with `st_nlink` 0).
    orphan: Option<Arc<File>>,
}

/// The table.
pub(crate) struct NodeTable {
    next: u64,
    by_ino: HashMap<u64, Rec>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
    by_ident: HashMap<(u64, u64), u64>,
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable {
            next: WORK_NODE_BASE,
            by_ino: HashMap::new(),
            by_name: HashMap::new(),
            by_ident: HashMap::new(),
        }
    }
}

impl NodeTable {
    /// The inode of `name` in `parent`, numbered now if new; `counted` adds one kernel
    /// reference. `ident` is the device and inode number of the upper-layer file it names
    /// (none for folders and base entries): a new name of a file that already has a node
    /// (a hard link) joins that node.
    pub fn ino_for(&mut self, parent: u64, name: &[u8], ws: &Arc<Ws>, counted: bool, ident: Option<(u64, u64)>) -> u64 {
        let key = (parent, name.to_vec());
        let ino = match self.by_name.get(&key) {
            Some(&ino) => ino,
            None => {
                let joined = ident.and_then(|id| self.by_ident.get(&id).copied());
                let ino = match joined {
                    Some(ino) => ino,
                    None => {
                        let ino = self.next;
                        self.next += 1;
                        let rec = Rec {
                            names: Vec::new(),
                            ws: ws.clone(),
                            ident: None,
                            nlookup: 0,
                            children: 0,
                            orphan: None,
                        };
                        self.by_ino.insert(ino, rec);
                        ino
                    }
                };
                self.add_name(ino, parent, name);
                ino
            }
        };
        if let Some(id) = ident {
            self.set_ident(ino, id);
        }
        if counted {
            if let Some(r) = self.by_ino.get_mut(&ino) {
                r.nlookup += 1;
            }
        }
        ino
    }

    fn add_name(&mut self, ino: u64, parent: u64, name: &[u8]) {
        if let Some(r) = self.by_ino.get_mut(&ino) {
            r.names.push((parent, name.to_vec()));
        }
        if let Some(p) = self.by_ino.get_mut(&parent) {
            p.children += 1;
        }
        self.by_name.insert((parent, name.to_vec()), ino);
    }

    /// Record that node `ino` is the upper-layer file `ident` (after a copy-up or a create).
    pub fn set_ident(&mut self, ino: u64, ident: (u64, u64)) {
        let Some(r) = self.by_ino.get_mut(&ino) else { return };
        if r.ident == Some(ident) {
            return;
        }
        if let Some(old) = r.ident.replace(ident) {
            if self.by_ident.get(&old) == Some(&ino) {
                self.by_ident.remove(&old);
            }
        }
        self.by_ident.insert(ident, ino);
    }

    /// The workspace and the path (relative to the workspace root, empty for the root) of
    /// an attached node (through its first name).
    pub fn path(&self, ino: u64) -> Option<(Arc<Ws>, Vec<u8>)> {
        let mut names: Vec<&[u8]> = Vec::new();
        let mut at = self.by_ino.get(&ino)?;
        let ws = at.ws.clone();
        loop {
            let (parent, name) = at.names.first()?;
            if *parent == WORK_INO {
                break;
            }
            names.push(name);
            at = self.by_ino.get(parent)?;
        }
        let mut path = Vec::new();
        for n in names.iter().rev() {
            path = join_path(&path, n);
        }
        Some((ws, path))
    }

    /// The node of `name` in `parent`, if it has one.
    pub fn find(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.by_name.get(&(parent, name.to_vec())).copied()
    }

    /// Node `ino`, deleted, is still held by the kernel: `file` answers for it from now on.
    pub fn set_orphan(&mut self, ino: u64, file: File) {
        if let Some(r) = self.by_ino.get_mut(&ino).filter(|r| r.names.is_empty()) {
            r.orphan = Some(Arc::new(file));
        }
    }

    /// The upper file of a node deleted while held (see [`NodeTable::set_orphan`]).
    pub fn orphan(&self, ino: u64) -> Option<Arc<File>> {
        self.by_ino.get(&ino).and_then(|r| r.orphan.clone())
    }

    /// The parent inode of a node (for `..`).
    pub fn parent(&self, ino: u64) -> Option<u64> {
        self.by_ino.get(&ino).and_then(|r| r.names.first()).map(|n| n.0)
    }

    /// `name` in `parent` was deleted: its node (if any) loses that name; a node without
    /// names keeps its number for open handles but no longer has a path.
    pub fn detach(&mut self, parent: u64, name: &[u8]) {
        if let Some(ino) = self.remove_name(parent, name) {
            self.drop_if_unused(ino);
        }
    }

    /// Remove name `name` in `parent` from its node; returns the node.
    fn remove_name(&mut self, parent: u64, name: &[u8]) -> Option<u64> {
        let ino = self.by_name.remove(&(parent, name.to_vec()))?;
        if let Some(r) = self.by_ino.get_mut(&ino) {
            r.names.retain(|(p, n)| !(*p == parent && n == name));
            if r.names.is_empty() {
                // The upper inode number may be reused by a new file from now on.
                if let Some(id) = r.ident.take() {
                    if self.by_ident.get(&id) == Some(&ino) {
                        self.by_ident.remove(&id);
                    }
                }
            }
        }
        self.release_child(parent);
        Some(ino)
    }

    /// `name` in `parent` moved to `new_name` in `new_parent` (replacing what was there).
    pub fn rename(&mut self, parent: u64, name: &[u8], new_parent: u64, new_name: &[u8]) {
        self.detach(new_parent, new_name);
        let Some(&ino) = self.by_name.get(&(parent, name.to_vec())) else {
            return;
        };
        // Keep the node while it has no name.
        if let Some(p) = self.by_ino.get_mut(&new_parent) {
            p.children += 1;
        }
        let ident = self.by_ino.get(&ino).and_then(|r| r.ident);
        self.remove_name(parent, name);
        self.add_name(ino, new_parent, new_name);
        if let Some(id) = ident {
            self.set_ident(ino, id);
        }
        self.release_child(new_parent);
    }

    /// The kernel gave back `n` references.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if let Some(r) = self.by_ino.get_mut(&ino) {
            r.nlookup = r.nlookup.saturating_sub(n);
            self.drop_if_unused(ino);
        }
    }

    /// Number of nodes in the table.
    pub fn len(&self) -> usize {
        self.by_ino.len()
    }

    /// Remove a node nobody refers to any more, then its parents if they became unused.
    fn drop_if_unused(&mut self, ino: u64) {
        let unused = self.by_ino.get(&ino).is_some_and(|r| r.nlookup == 0 && r.children == 0);
        if !unused {
            return;
        }
        let r = self.by_ino.remove(&ino).expect("checked above");
        if let Some(id) = r.ident {
            if self.by_ident.get(&id) == Some(&ino) {
                self.by_ident.remove(&id);
            }
        }
        for (parent, name) in r.names {
            if self.by_name.get(&(parent, name.clone())) == Some(&ino) {
                self.by_name.remove(&(parent, name));
            }
            self.release_child(parent);
        }
    }

    fn release_child(&mut self, parent: u64) {
        if let Some(p) = self.by_ino.get_mut(&parent) {
            p.children = p.children.saturating_sub(1);
            self.drop_if_unused(parent);
        }
    }
}
