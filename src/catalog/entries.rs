//! Entry rows: the tree of a dataset, one row per file, folder or symlink.

use rusqlite::{params, OptionalExtension, Row};

use super::Catalog;
use crate::error::{Error, Result};
use crate::id::ContentId;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File = 0,
    Dir = 1,
    Symlink = 2,
}

impl EntryKind {
    pub fn from_i64(v: i64) -> Option<EntryKind> {
        match v {
            0 => Some(EntryKind::File),
            1 => Some(EntryKind::Dir),
            2 => Some(EntryKind::Symlink),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
        }
    }
}

/// One entry of a dataset's tree. Paths are raw bytes (names may be non-UTF-8), relative to
/// the dataset root, with `/` between components; `parent` is empty at the top level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Catalog row id (0 before insertion); the mount derives inode numbers from it.
    pub id: i64,
    pub parent: Vec<u8>,
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits (`0o7777` mask) as ingested.
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub content: Option<ContentId>,
    pub content_id: Option<i64>,
    pub target: Option<Vec<u8>>,
}

impl Entry {
    /// The entry's full path in the dataset.
    pub fn path(&self) -> Vec<u8> {
        join_path(&self.parent, &self.name)
    }
}

/// `parent/name`, or `name` at the top level.
pub fn join_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Split a dataset path into (parent, name).
pub fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

pub(super) const SELECT: &str =
    "SELECT e.id, e.parent, e.name, e.kind, e.mode, e.size, e.mtime_ns, c.hash, e.content_id, e.target
                      FROM entries e LEFT JOIN contents c ON c.id = e.content_id";

pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<Entry> {
    let hash: Option<Vec<u8>> = r.get(7)?;
    Ok(Entry {
        id: r.get(0)?,
        parent: r.get(1)?,
        name: r.get(2)?,
        kind: EntryKind::from_i64(r.get(3)?).unwrap_or(EntryKind::File),
        mode: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        mtime_ns: r.get(6)?,
        content: hash.and_then(|h| ContentId::from_slice(&h)),
        content_id: r.get(8)?,
        target: r.get(9)?,
    })
}

impl Catalog {
    /// Add an entry to a pending dataset.
    pub fn insert_entry(&self, dataset_id: i64, e: &Entry) -> Result<i64> {
        self.conn()
            .prepare_cached(
                "INSERT INTO entries (dataset_id, parent, name, kind, mode, size, mtime_ns, content_id, target) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![dataset_id, e.parent, e.name, e.kind as i64, e.mode, e.size as i64, e.mtime_ns, e.content_id, e.target])?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Visit every entry of a dataset in canonical order: by parent path bytes, then name
    /// bytes. This order defines the root hash and the manifest.
    pub fn for_each_entry(&self, dataset_id: i64, mut f: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        let mut stmt = self
            .conn()
            .prepare(&format!("{SELECT} WHERE e.dataset_id = ?1 ORDER BY e.parent, e.name"))?;
        let mut rows = stmt.query([dataset_id])?;
        while let Some(row) = rows.next()? {
            f(from_row(row)?)?;
        }
        Ok(())
    }

    /// One entry by its path in a dataset.
    pub fn entry_at(&self, dataset_id: i64, path: &[u8]) -> Result<Option<Entry>> {
        let (parent, name) = split_path(path);
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "{SELECT} WHERE e.dataset_id = ?1 AND e.parent = ?2 AND e.name = ?3"
            ))?
            .query_row(params![dataset_id, parent, name], from_row)
            .optional()?)
    }

    /// Children of a folder (`parent` = the folder's path, empty for the root), by name,
    /// starting after `after` (for paging through huge folders), at most `limit`. (Names
    /// are never empty, so "after the empty name" is the first page: one index range either
    /// way, where `?3 IS NULL OR name > ?3` made SQLite scan each page from the folder's
    /// first entry.)
    pub fn children(&self, dataset_id: i64, parent: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "{SELECT} WHERE e.dataset_id = ?1 AND e.parent = ?2 AND e.name > ?3 ORDER BY e.name LIMIT ?4"
        ))?;
        let after = after.unwrap_or_default();
        let rows = stmt.query_map(params![dataset_id, parent, after, limit as i64], from_row)?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }
}

/// `parent/name` as text, with invalid UTF-8 replaced (for messages).
pub fn join_path_lossy(parent: &[u8], name: &[u8]) -> String {
    String::from_utf8_lossy(&join_path(parent, name)).into_owned()
}
