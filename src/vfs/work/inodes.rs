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
use std::sync::Arc;

use super::Ws;
use crate::catalog::entries::join_path;
use crate::vfs::{WORK_INO, WORK_NODE_BASE};

/// One node.
struct Rec {
    parent: u64,
    name: Vec<u8>,
    ws: Arc<Ws>,
    /// References the kernel holds (lookups not yet forgotten).
    nlookup: u64,
    /// Records whose parent is this one.
    children: u64,
    /// False once deleted (or replaced by a rename).
    attached: bool,
}

/// The table.
pub(crate) struct NodeTable {
    next: u64,
    by_ino: HashMap<u64, Rec>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable {
            next: WORK_NODE_BASE,
            by_ino: HashMap::new(),
            by_name: HashMap::new(),
        }
    }
}

impl NodeTable {
    /// The inode of `name` in `parent`, numbered now if new; `counted` adds one kernel
    /// reference.
    pub fn ino_for(&mut self, parent: u64, name: &[u8], ws: &Arc<Ws>, counted: bool) -> u64 {
        let key = (parent, name.to_vec());
        let ino = match self.by_name.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.next;
                self.next += 1;
                self.by_ino.insert(
                    ino,
                    Rec {
                        parent,
                        name: name.to_vec(),
                        ws: ws.clone(),
                        nlookup: 0,
                        children: 0,
                        attached: true,
                    },
                );
                if let Some(p) = self.by_ino.get_mut(&parent) {
                    p.children += 1;
                }
                self.by_name.insert(key, ino);
                ino
            }
        };
        if counted {
            if let Some(r) = self.by_ino.get_mut(&ino) {
                r.nlookup += 1;
            }
        }
        ino
    }

    /// The workspace and the path (relative to the workspace root, empty for the root) of
    /// an attached node.
    pub fn path(&self, ino: u64) -> Option<(Arc<Ws>, Vec<u8>)> {
        let mut names: Vec<&[u8]> = Vec::new();
        let mut at = self.by_ino.get(&ino)?;
        let ws = at.ws.clone();
        while at.parent != WORK_INO {
            if !at.attached {
                return None;
            }
            names.push(&at.name);
            at = self.by_ino.get(&at.parent)?;
        }
        if !at.attached {
            return None;
        }
        let mut path = Vec::new();
        for n in names.iter().rev() {
            path = join_path(&path, n);
        }
        Some((ws, path))
    }

    /// The parent inode of a node (for `..`).
    pub fn parent(&self, ino: u64) -> Option<u64> {
        self.by_ino.get(&ino).map(|r| r.parent)
    }

    /// `name` in `parent` was deleted: its node (if any) keeps its number for open handles
    /// but no longer has a path.
    pub fn detach(&mut self, parent: u64, name: &[u8]) {
        if let Some(ino) = self.by_name.remove(&(parent, name.to_vec())) {
            if let Some(r) = self.by_ino.get_mut(&ino) {
                r.attached = false;
            }
            self.drop_if_unused(ino);
        }
    }

    /// `name` in `parent` moved to `new_name` in `new_parent` (replacing what was there).
    pub fn rename(&mut self, parent: u64, name: &[u8], new_parent: u64, new_name: &[u8]) {
        self.detach(new_parent, new_name);
        let Some(ino) = self.by_name.remove(&(parent, name.to_vec())) else {
            return;
        };
        if let Some(r) = self.by_ino.get_mut(&ino) {
            r.parent = new_parent;
            r.name = new_name.to_vec();
        }
        if parent != new_parent {
            if let Some(p) = self.by_ino.get_mut(&new_parent) {
                p.children += 1;
            }
            self.release_child(parent);
        }
        self.by_name.insert((new_parent, new_name.to_vec()), ino);
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

    /// Remove a node nobody refers to any more, then its parent if that became unused.
    fn drop_if_unused(&mut self, ino: u64) {
        let unused = self.by_ino.get(&ino).is_some_and(|r| r.nlookup == 0 && r.children == 0);
        if !unused {
            return;
        }
        let r = self.by_ino.remove(&ino).expect("checked above");
        if r.attached && self.by_name.get(&(r.parent, r.name.clone())) == Some(&ino) {
            self.by_name.remove(&(r.parent, r.name));
        }
        self.release_child(r.parent);
    }

    fn release_child(&mut self, parent: u64) {
        if let Some(p) = self.by_ino.get_mut(&parent) {
            p.children = p.children.saturating_sub(1);
            self.drop_if_unused(parent);
        }
    }
}
