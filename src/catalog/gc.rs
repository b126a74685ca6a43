//! Queries for `gc`: which chunks, contents and packs nothing references, and the changes
//! that drop them or move live chunks to a new pack.
//!
//! A chunk is live when a content that some entry (of any dataset row, sealed or pending)
//! uses lists it. Workspace bases are sealed datasets, so their data is live through their
//! entries; the catalog refuses to delete a dataset that is a base (foreign key).

use rusqlite::params;

use super::{now_secs, Catalog};
use crate::error::{Error, Result};
use crate::id::PackId;
use crate::pack::IndexEntry;

/// How much of a pack is still needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackUsage {
    pub pack: PackId,
    pub size: u64,
    pub added_at: i64,
    pub chunks: u64,
    pub live_chunks: u64,
    /// Stored bytes of the live chunks.
    pub live_bytes: u64,
}

/// A pack dropped from the catalog whose file may still be in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetiredPack {
    pub pack: PackId,
    pub retired_at: i64,
}

const LIVE_CHUNK: &str = "EXISTS (SELECT 1 FROM content_chunks cc JOIN entries e ON e.content_id = cc.content_id
                                  WHERE cc.chunk_hash = c.hash)";

impl Catalog {
    /// Every catalogued pack with its live share.
    pub fn pack_usage(&self) -> Result<Vec<PackUsage>> {
        self.pack_usage_where(None)
    }

    /// One pack's usage as it is now, or `None` if the catalog no longer has the pack. gc
    /// re-reads it just before acting: an earlier step of the same run (a repack that wrote
    /// a pack identical to an orphan it had indexed) can have moved chunks into it.
    pub fn pack_usage_of(&self, pack: PackId) -> Result<Option<PackUsage>> {
        Ok(self.pack_usage_where(Some(pack))?.pop())
    }

    fn pack_usage_where(&self, pack: Option<PackId>) -> Result<Vec<PackUsage>> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT p.hash, p.size, p.added_at, COUNT(c.hash),
                    COALESCE(SUM(CASE WHEN {LIVE_CHUNK} THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN {LIVE_CHUNK} THEN c.stored_len ELSE 0 END), 0)
             FROM packs p LEFT JOIN chunks c ON c.pack_id = p.id
             WHERE ?1 IS NULL OR p.hash = ?1 GROUP BY p.id ORDER BY p.hash"
        ))?;
        let rows = stmt.query_map([pack.map(|p| p.0.to_vec())], |r| {
            Ok(PackUsage {
                pack: PackId::from_slice(&r.get::<_, Vec<u8>>(0)?).unwrap_or(PackId([0; 32])),
                size: r.get::<_, i64>(1)? as u64,
                added_at: r.get(2)?,
                chunks: r.get::<_, i64>(3)? as u64,
                live_chunks: r.get::<_, i64>(4)? as u64,
                live_bytes: r.get::<_, i64>(5)? as u64,
            })
        })?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    /// The live chunks of a pack, by offset.
    pub fn live_chunks_in_pack(&self, pack: PackId) -> Result<Vec<IndexEntry>> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT c.hash, c.offset, c.stored_len, c.raw_len, c.codec FROM chunks c JOIN packs p ON p.id = c.pack_id
             WHERE p.hash = ?1 AND {LIVE_CHUNK} ORDER BY c.offset"
        ))?;
        let rows = stmt.query_map([pack.as_bytes()], |r| super::index_entry_at(r, 0))?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    /// Delete contents no entry uses (with their chunk lists). Returns how many.
    pub fn delete_dead_contents(&self) -> Result<usize> {
        self.transaction(|c| {
            let dead = "SELECT id FROM contents x WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.content_id = x.id)";
            c.conn()
                .execute(&format!("DELETE FROM content_chunks WHERE content_id IN ({dead})"), [])?;
            Ok(c.conn()
                .execute(&format!("DELETE FROM contents WHERE id IN ({dead})"), [])?)
        })
    }

    /// Point live chunks at their copies in `new_pack` (already durable in the store), record
    /// that pack, and drop `old_pack` (whose remaining chunks must all be dead) as retired.
    /// One transaction: readers see either the old locations or the new ones.
    pub fn move_chunks_and_retire(
        &self,
        old_pack: PackId,
        new_pack: Option<(PackId, u64, &[IndexEntry])>,
    ) -> Result<()> {
        self.transaction(|c| {
            if let Some((id, size, entries)) = new_pack {
                c.point_chunks_at(id, size, entries)?;
            }
            c.retire_pack(old_pack)
        })
    }

    /// Record pack `pack` (durable in the store) and point every chunk it holds at it, in one
    /// transaction: a shared store's writer moves chunks off a pack a gc condemned onto another
    /// copy before forgetting that pack.
    pub fn relocate_chunks(&self, pack: PackId, size: u64, entries: &[IndexEntry]) -> Result<()> {
        self.transaction(|c| c.point_chunks_at(pack, size, entries))
    }

    /// Record `pack` and point the chunks of `entries` at it (inside a transaction).
    fn point_chunks_at(&self, pack: PackId, size: u64, entries: &[IndexEntry]) -> Result<()> {
        self.insert_pack(pack, size, entries)?;
        let mut update = self.conn().prepare_cached(
            "UPDATE chunks SET pack_id = (SELECT id FROM packs WHERE hash = ?1), offset = ?2, stored_len = ?3, raw_len = ?4, codec = ?5
             WHERE hash = ?6",
        )?;
        for e in entries {
            update.execute(params![
                pack.as_bytes(),
                e.offset as i64,
                e.stored_len,
                e.raw_len,
                e.codec as u8,
                e.chunk.as_bytes()
            ])?;
        }
        Ok(())
    }

    /// Delete a pack's (dead) chunk rows and the pack row; remember it as retired. The
    /// `chunks_no_delete_live` trigger refuses if a chunk is still used.
    fn retire_pack(&self, pack: PackId) -> Result<()> {
        let id: i64 = self
            .conn()
            .query_row("SELECT id FROM packs WHERE hash = ?1", [pack.as_bytes()], |r| r.get(0))?;
        self.conn().execute("DELETE FROM chunks WHERE pack_id = ?1", [id])?;
        self.conn().execute("DELETE FROM packs WHERE id = ?1", [id])?;
        self.conn().execute(
            "INSERT OR REPLACE INTO retired_packs (hash, retired_at) VALUES (?1, ?2)",
            params![pack.as_bytes(), now_secs()],
        )?;
        Ok(())
    }

    /// Packs dropped from the catalog whose files may still exist.
    pub fn retired_packs(&self) -> Result<Vec<RetiredPack>> {
        let mut stmt = self
            .conn()
            .prepare("SELECT hash, retired_at FROM retired_packs ORDER BY hash")?;
        let rows = stmt.query_map([], |r| {
            Ok(RetiredPack {
                pack: PackId::from_slice(&r.get::<_, Vec<u8>>(0)?).unwrap_or(PackId([0; 32])),
                retired_at: r.get(1)?,
            })
        })?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    /// Forget a retired pack once its file is gone.
    pub fn forget_retired(&self, pack: PackId) -> Result<()> {
        self.conn()
            .execute("DELETE FROM retired_packs WHERE hash = ?1", [pack.as_bytes()])?;
        Ok(())
    }
}
