//! Read-only queries for the mount ([`crate::vfs`]): entries by id, folder pages by position,
//! a file's chunk layout in one query, and the names under `gold/` and `derived/`.
//!
//! Every query here sees sealed datasets only: a pending ingest is invisible to the mount.

use rusqlite::{params, OptionalExtension};

use super::{datasets, entries, Catalog, ChunkLocation, DatasetRow, Entry, EntryKind};
use crate::dataset::Kind;
use crate::error::{Error, Result};
use crate::id::PackId;

/// A file of a sealed dataset with its chunk layout: what the mount needs to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    pub entry_id: i64,
    pub dataset_id: i64,
    /// The file's path in its dataset.
    pub path: Vec<u8>,
    pub size: u64,
    /// The chunks in file order.
    pub chunks: Vec<LaidOutChunk>,
}

/// A folder entry as a listing without attributes sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildName {
    pub id: i64,
    pub name: Vec<u8>,
    pub kind: EntryKind,
}

/// One chunk of a file with where it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaidOutChunk {
    /// Offset of the chunk's first byte in the file.
    pub file_offset: u64,
    pub location: ChunkLocation,
}

impl Catalog {
    /// An entry of a sealed dataset by its row id, with the dataset's id.
    pub fn entry_by_id(&self, id: i64) -> Result<Option<(i64, Entry)>> {
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "SELECT x.*, e2.dataset_id FROM ({} WHERE e.id = ?1) x
                 JOIN entries e2 ON e2.id = x.id JOIN datasets d ON d.id = e2.dataset_id
                 WHERE d.state = 'sealed'",
                entries::SELECT
            ))?
            .query_row([id], |r| Ok((r.get::<_, i64>(10)?, entries::from_row(r)?)))
            .optional()?)
    }

    /// Name, kind and id of a folder's children by name, after `after` (`None`: from the
    /// first) or skipping the first `skip` when `after` is `None` and `skip` is not 0: what a
    /// listing without attributes needs when the dataset has no packed listings
    /// ([`Catalog::listed_children`]). Reads the `(dataset_id, parent, name)` index and the
    /// entry's row, where a full [`Entry`] also joins its content.
    pub fn child_names(
        &self,
        dataset_id: i64,
        parent: &[u8],
        after: Option<&[u8]>,
        skip: u64,
        limit: usize,
    ) -> Result<Vec<ChildName>> {
        self.children_page(
            "SELECT e.id, e.name, e.kind FROM entries e",
            (dataset_id, parent, after, skip, limit),
            |r| {
                Ok(ChildName {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    kind: EntryKind::from_i64(r.get(2)?).unwrap_or(EntryKind::File),
                })
            },
        )
    }

    /// [`Catalog::child_names`] with every column: children of a folder by name, after
    /// `after`, or skipping the first `skip` (a reader that seeks back in a listing).
    pub fn children_from(
        &self,
        dataset_id: i64,
        parent: &[u8],
        after: Option<&[u8]>,
        skip: u64,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        self.children_page(
            entries::SELECT,
            (dataset_id, parent, after, skip, limit),
            entries::from_row,
        )
    }

    /// One page of a folder's children, `select` (over `entries e`) mapped by `map`: the page
    /// query both [`Catalog::child_names`] and [`Catalog::children_from`] run.
    fn children_page<T>(
        &self,
        select: &str,
        (dataset_id, parent, after, skip, limit): (i64, &[u8], Option<&[u8]>, u64, usize),
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "{select} WHERE e.dataset_id = ?1 AND e.parent = ?2 AND e.name > ?3 ORDER BY e.name LIMIT ?4 OFFSET ?5"
        ))?;
        // Names are never empty: after "" is from the first (see `Catalog::children`).
        let after = after.unwrap_or_default();
        let rows = stmt.query_map(params![dataset_id, parent, after, limit as i64, skip as i64], map)?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    /// A file content's chunks in file order, each with its pack and place in the pack.
    pub fn content_layout(&self, content_id: i64) -> Result<Vec<LaidOutChunk>> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT cc.file_offset, p.hash, cc.chunk_hash, c.offset, c.stored_len, c.raw_len, c.codec
             FROM content_chunks cc JOIN chunks c ON c.hash = cc.chunk_hash JOIN packs p ON p.id = c.pack_id
             WHERE cc.content_id = ?1 ORDER BY cc.file_offset",
        )?;
        let rows = stmt.query_map([content_id], |r| laid_out_chunk_at(r, 0))?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    /// The files (of sealed datasets) among entries `first_id..first_id + count`, in id order,
    /// each with its chunk layout: one query for a run of files that are listed, and usually
    /// read, one after another. Stops early, after a complete file, once `max_chunks` chunks
    /// have been read; the first file (if it is one) always comes whole.
    pub fn file_layouts(&self, first_id: i64, count: i64, max_chunks: usize) -> Result<Vec<FileLayout>> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT e.id, e.dataset_id, e.parent, e.name, e.size,
                    cc.file_offset, p.hash, cc.chunk_hash, c.offset, c.stored_len, c.raw_len, c.codec
             FROM entries e JOIN datasets d ON d.id = e.dataset_id
             LEFT JOIN content_chunks cc ON cc.content_id = e.content_id
             LEFT JOIN chunks c ON c.hash = cc.chunk_hash
             LEFT JOIN packs p ON p.id = c.pack_id
             WHERE e.id >= ?1 AND e.id < ?2 AND e.kind = 0 AND d.state = 'sealed'
             ORDER BY e.id, cc.file_offset",
        )?;
        let mut rows = stmt.query(params![first_id, first_id.saturating_add(count)])?;
        let mut files: Vec<FileLayout> = Vec::new();
        let mut chunks = 0;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let new_file = files.last().is_none_or(|f| f.entry_id != id);
            if chunks >= max_chunks && (new_file || files.len() > 1) && !files.is_empty() {
                if !new_file {
                    // Cut short by the limit: it would read as damaged, so leave it out.
                    files.pop();
                }
                break;
            }
            if new_file {
                files.push(FileLayout {
                    entry_id: id,
                    dataset_id: r.get(1)?,
                    path: entries::join_path(&r.get::<_, Vec<u8>>(2)?, &r.get::<_, Vec<u8>>(3)?),
                    size: r.get::<_, i64>(4)? as u64,
                    chunks: Vec::new(),
                });
            }
            // No chunk columns: an empty file, or (damage) a chunk row missing, which the
            // reader reports as a chunk list that does not cover the file.
            if r.get_ref(6)? == rusqlite::types::ValueRef::Null {
                continue;
            }
            let file = files.last_mut().expect("a file was pushed for this row");
            file.chunks.push(laid_out_chunk_at(r, 5)?);
            chunks += 1;
        }
        Ok(files)
    }

    /// A sealed dataset by row id.
    pub fn sealed_dataset_by_id(&self, id: i64) -> Result<Option<DatasetRow>> {
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "SELECT {} FROM datasets WHERE id = ?1 AND state = 'sealed'",
                datasets::COLUMNS
            ))?
            .query_row([id], datasets::from_row)
            .optional()?)
    }

    /// Names of sealed datasets of one kind, each with the smallest dataset id under it
    /// (a stable number for the name: sealed rows are never deleted).
    pub fn dataset_names(&self, kind: Kind) -> Result<Vec<(String, i64)>> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT name, MIN(id) FROM datasets WHERE state = 'sealed' AND kind = ?1 GROUP BY name ORDER BY name",
        )?;
        let rows = stmt.query_map([kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }
}

/// A chunk of a file from columns `first..`: file offset, pack hash, then an index entry
/// (see [`super::index_entry_at`]).
fn laid_out_chunk_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<LaidOutChunk> {
    Ok(LaidOutChunk {
        file_offset: r.get::<_, i64>(first)? as u64,
        location: ChunkLocation {
            pack: PackId::from_slice(&r.get::<_, Vec<u8>>(first + 1)?).unwrap_or(PackId([0; 32])),
            entry: super::index_entry_at(r, first + 2)?,
        },
    })
}
