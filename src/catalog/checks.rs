//! Read-only queries that `verify` and `stats` ask of a dataset or of the whole catalog.
//!
//! Owns: the SQL behind those checks and figures. Never: decides what is a problem or
//! reads the store; `ops::verify` and `ops::stats` do.

use rusqlite::params;

use super::entries::join_path;
use super::Catalog;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};

/// A file whose recorded size differs from the sum of its chunks' raw lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeMismatch {
    pub path: Vec<u8>,
    pub size: u64,
    pub chunk_sum: u64,
}

impl Catalog {
    /// Files of a dataset that list a chunk no pack holds: (path, chunk), one per pair.
    pub fn dataset_unplaced_chunks(&self, dataset_id: i64) -> Result<Vec<(Vec<u8>, ChunkId)>> {
        let mut stmt = self.conn().prepare(
            "SELECT e.parent, e.name, cc.chunk_hash FROM entries e JOIN content_chunks cc ON cc.content_id = e.content_id
             LEFT JOIN chunks c ON c.hash = cc.chunk_hash WHERE e.dataset_id = ?1 AND c.hash IS NULL",
        )?;
        let rows = stmt.query_map([dataset_id], |r| {
            let path = join_path(&r.get::<_, Vec<u8>>(0)?, &r.get::<_, Vec<u8>>(1)?);
            let chunk = ChunkId::from_slice(&r.get::<_, Vec<u8>>(2)?).unwrap_or(ChunkId([0; 32]));
            Ok((path, chunk))
        })?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    /// Files of a dataset whose size is not what their chunks hold.
    pub fn dataset_size_mismatches(&self, dataset_id: i64) -> Result<Vec<SizeMismatch>> {
        let mut stmt = self.conn().prepare(
            "SELECT e.parent, e.name, e.size, COALESCE((SELECT SUM(ch.raw_len) FROM content_chunks cc JOIN chunks ch ON ch.hash = cc.chunk_hash WHERE cc.content_id = e.content_id), 0)
             FROM entries e WHERE e.dataset_id = ?1 AND e.kind = 0",
        )?;
        let rows = stmt.query_map(params![dataset_id], |r| {
            Ok(SizeMismatch {
                path: join_path(&r.get::<_, Vec<u8>>(0)?, &r.get::<_, Vec<u8>>(1)?),
                size: r.get::<_, i64>(2)? as u64,
                chunk_sum: r.get::<_, i64>(3)? as u64,
            })
        })?;
        let mut out = Vec::new();
        for r in rows {
            let m = r?;
            if m.size != m.chunk_sum {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The packs a dataset's chunks live in, with their recorded sizes.
    pub fn dataset_packs(&self, dataset_id: i64) -> Result<Vec<(PackId, u64)>> {
        let mut stmt = self.conn().prepare(
            "SELECT DISTINCT p.hash, p.size FROM entries e JOIN content_chunks cc ON cc.content_id = e.content_id
             JOIN chunks c ON c.hash = cc.chunk_hash JOIN packs p ON p.id = c.pack_id WHERE e.dataset_id = ?1",
        )?;
        let rows = stmt.query_map([dataset_id], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (h, size) = r?;
            if let Some(id) = PackId::from_slice(&h) {
                out.push((id, size as u64));
            }
        }
        Ok(out)
    }

    /// Stored bytes of the distinct chunks a dataset references.
    pub fn dataset_referenced_stored_bytes(&self, dataset_id: i64) -> Result<u64> {
        let bytes: i64 = self.conn().query_row(
            "SELECT COALESCE(SUM(c.stored_len), 0) FROM chunks c WHERE c.hash IN
               (SELECT cc.chunk_hash FROM entries e JOIN content_chunks cc ON cc.content_id = e.content_id WHERE e.dataset_id = ?1)",
            [dataset_id],
            |r| r.get(0),
        )?;
        Ok(bytes as u64)
    }

    /// How many packs and chunks the catalog records.
    pub fn pack_and_chunk_counts(&self) -> Result<(u64, u64)> {
        let packs: i64 = self.conn().query_row("SELECT COUNT(*) FROM packs", [], |r| r.get(0))?;
        let chunks: i64 = self.conn().query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))?;
        Ok((packs as u64, chunks as u64))
    }
}
