//! `diff`: what changed between two datasets, from the catalog alone.
//!
//! Owns: pairing two trees by path and classifying each difference (added, removed, content
//! modified, mode changed, symlink target changed, kind changed), the bytes of B that are
//! new to A, and the totals. Never: reads packs (contents are compared by hash, bytes by the
//! catalog's chunk lists), prints.
//!
//! Each path gets at most one change, the first that applies of: `type` (file, folder or
//! symlink became another kind), `modified` (other content), `target` (other symlink target),
//! `mode` (only the permission bits differ). Modes are reported with every change where they
//! differ. Modification times are not compared: they are not part of a dataset's content.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Serialize;

use crate::catalog::entries::join_path;
use crate::catalog::{Catalog, DatasetRow, DiffEntry, EntryKind};
use crate::dataset::DatasetRef;
use crate::error::{Error, Result};
use crate::vault::Vault;

/// What happened to one path between A and B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Modified,
    Mode,
    Target,
    Type,
}

impl Change {
    pub fn as_str(&self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Modified => "modified",
            Change::Mode => "mode",
            Change::Target => "target",
            Change::Type => "type",
        }
    }
}

/// One side of a changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    pub kind: &'static str,
    /// Permission bits in octal, e.g. "0644".
    pub mode: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffItem {
    /// The path in the datasets, as text (bytes that are not UTF-8 become U+FFFD).
    pub path: String,
    /// The raw path bytes, for callers that must address the entry (not serialised).
    #[serde(skip)]
    pub path_bytes: Vec<u8>,
    pub change: Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<Side>,
    /// For a file of B with content A does not have at this path (added, modified, or a new
    /// file in place of a folder or symlink): bytes of it in chunks no file of A uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_bytes: Option<u64>,
}

/// Counts and byte sums over the compared trees.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiffTotals {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub mode: u64,
    pub target: u64,
    #[serde(rename = "type")]
    pub type_changed: u64,
    /// Entries identical in A and B.
    pub unchanged: u64,
    /// Sizes of the files added, removed (A's size) and modified (B's size).
    pub added_bytes: u64,
    pub removed_bytes: u64,
    pub modified_bytes: u64,
    /// Sum of the changes' `new_bytes`: what storing B adds to what A stores.
    pub new_bytes: u64,
    /// File bytes compared on each side.
    pub a_bytes: u64,
    pub b_bytes: u64,
    /// Bytes of B's files that are in chunks A already uses.
    pub b_bytes_in_a: u64,
    /// b_bytes_in_a / b_bytes (1 when B has no bytes there).
    pub share_in_a: f64,
}

/// What `diff` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    /// The folder the comparison was narrowed to, if any.
    pub path: Option<String>,
    pub changes: Vec<DiffItem>,
    pub totals: DiffTotals,
}

/// Compare datasets `a` and `b` (everything, or what is under `path`).
pub fn diff(vault: &Vault, a: &DatasetRef, b: &DatasetRef, path: Option<&[u8]>) -> Result<DiffReport> {
    let catalog = vault.catalog()?;
    let a = catalog.resolve(a)?;
    let b = catalog.resolve(b)?;
    diff_rows(&catalog, &a, &b, path)
}

/// [`diff`] for datasets already resolved.
pub fn diff_rows(catalog: &Catalog, a: &DatasetRow, b: &DatasetRow, path: Option<&[u8]>) -> Result<DiffReport> {
    let under = normalise(path.unwrap_or_default());
    let left = catalog.diff_entries(a.id, &under)?;
    let right = catalog.diff_entries(b.id, &under)?;
    if !under.is_empty() && left.is_empty() && right.is_empty() {
        return Err(Error::PathNotFound {
            dataset: b.name.to_string(),
            path: String::from_utf8_lossy(&under).into_owned(),
        });
    }
    let mut work = Compare {
        catalog,
        a_id: a.id,
        shared: HashMap::new(),
        changes: Vec::new(),
        totals: DiffTotals::default(),
    };
    work.merge(&left, &right)?;
    let mut totals = work.totals;
    totals.share_in_a = if totals.b_bytes == 0 {
        1.0
    } else {
        totals.b_bytes_in_a as f64 / totals.b_bytes as f64
    };
    Ok(DiffReport {
        a: a.name.to_string(),
        b: b.name.to_string(),
        path: (!under.is_empty()).then(|| String::from_utf8_lossy(&under).into_owned()),
        changes: work.changes,
        totals,
    })
}

/// A user's folder path without leading, trailing or doubled slashes.
fn normalise(path: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|p| !p.is_empty()).collect();
    parts.join(&b'/')
}

struct Compare<'c> {
    catalog: &'c Catalog,
    a_id: i64,
    /// (chunk bytes, bytes also in A) per content of B already looked at.
    shared: HashMap<i64, (u64, u64)>,
    changes: Vec<DiffItem>,
    totals: DiffTotals,
}

fn key(e: &DiffEntry) -> (&[u8], &[u8]) {
    (&e.parent, &e.name)
}

fn side(e: &DiffEntry) -> Side {
    Side {
        kind: e.kind.as_str(),
        mode: format!("{:04o}", e.mode),
        size: e.size,
        target: e.target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
    }
}

impl Compare<'_> {
    /// Walk both sorted lists side by side.
    fn merge(&mut self, left: &[DiffEntry], right: &[DiffEntry]) -> Result<()> {
        let (mut i, mut j) = (0, 0);
        while i < left.len() || j < right.len() {
            let order = match (left.get(i), right.get(j)) {
                (Some(l), Some(r)) => key(l).cmp(&key(r)),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match order {
                Ordering::Less => {
                    self.one_side(&left[i], Change::Removed)?;
                    i += 1;
                }
                Ordering::Greater => {
                    self.one_side(&right[j], Change::Added)?;
                    j += 1;
                }
                Ordering::Equal => {
                    self.both(&left[i], &right[j])?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn one_side(&mut self, e: &DiffEntry, change: Change) -> Result<()> {
        let is_file = e.kind == EntryKind::File;
        let mut item = self.item(e, change);
        if change == Change::Added {
            self.totals.added += 1;
            item.b = Some(side(e));
            if is_file {
                self.totals.added_bytes += e.size;
                item.new_bytes = Some(self.new_in_b(e)?);
            }
        } else {
            self.totals.removed += 1;
            item.a = Some(side(e));
            if is_file {
                self.totals.removed_bytes += e.size;
                self.totals.a_bytes += e.size;
            }
        }
        self.changes.push(item);
        Ok(())
    }

    fn both(&mut self, a: &DiffEntry, b: &DiffEntry) -> Result<()> {
        if a.kind == EntryKind::File {
            self.totals.a_bytes += a.size;
        }
        let change = if a.kind != b.kind {
            Some(Change::Type)
        } else if a.kind == EntryKind::File && (a.content_id != b.content_id || a.size != b.size) {
            Some(Change::Modified)
        } else if a.target != b.target {
            Some(Change::Target)
        } else if a.mode != b.mode {
            Some(Change::Mode)
        } else {
            None
        };
        let Some(change) = change else {
            self.totals.unchanged += 1;
            if b.kind == EntryKind::File {
                self.totals.b_bytes += b.size;
                self.totals.b_bytes_in_a += b.size;
            }
            return Ok(());
        };
        let mut item = self.item(b, change);
        item.a = Some(side(a));
        item.b = Some(side(b));
        match change {
            Change::Type => self.totals.type_changed += 1,
            Change::Modified => {
                self.totals.modified += 1;
                self.totals.modified_bytes += b.size;
            }
            Change::Target => self.totals.target += 1,
            _ => self.totals.mode += 1,
        }
        if b.kind == EntryKind::File {
            if matches!(change, Change::Type | Change::Modified) {
                item.new_bytes = Some(self.new_in_b(b)?);
            } else {
                self.totals.b_bytes += b.size;
                self.totals.b_bytes_in_a += b.size;
            }
        }
        self.changes.push(item);
        Ok(())
    }

    fn item(&self, e: &DiffEntry, change: Change) -> DiffItem {
        let path_bytes = join_path(&e.parent, &e.name);
        DiffItem {
            path: String::from_utf8_lossy(&path_bytes).into_owned(),
            path_bytes,
            change,
            a: None,
            b: None,
            new_bytes: None,
        }
    }

    /// Bytes of a B file in chunks A does not use; also adds the file to B's byte totals.
    fn new_in_b(&mut self, e: &DiffEntry) -> Result<u64> {
        let (total, in_a) = match e.content_id {
            None => (0, 0),
            Some(id) => match self.shared.get(&id) {
                Some(v) => *v,
                None => {
                    let v = self.catalog.content_bytes_in(id, self.a_id)?;
                    self.shared.insert(id, v);
                    v
                }
            },
        };
        let new = total.saturating_sub(in_a);
        self.totals.b_bytes += e.size;
        self.totals.b_bytes_in_a += in_a;
        self.totals.new_bytes += new;
        Ok(new)
    }
}
