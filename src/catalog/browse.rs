//! Queries for browsing a dataset folder by folder (the web catalog): what a folder holds in
//! total.
//!
//! Owns: subtree totals. Never: lists or reads file contents.

use rusqlite::params;

use super::Catalog;
use crate::error::Result;

impl Catalog {
    /// Regular files under a folder (at any depth) and their total size. A range scan of the
    /// `(dataset_id, parent, name)` index: `folder` itself and every parent starting with
    /// `folder/` (`'0'` is the byte after `'/'`).
    pub fn subtree_totals(&self, dataset_id: i64, folder: &[u8]) -> Result<(u64, u64)> {
        let mut below = folder.to_vec();
        below.push(b'/');
        let mut end = folder.to_vec();
        end.push(b'/' + 1);
        let (files, bytes): (i64, i64) = self
            .conn()
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries
                 WHERE dataset_id = ?1 AND kind = 0 AND (parent = ?2 OR (parent >= ?3 AND parent < ?4))",
            )?
            .query_row(params![dataset_id, folder, below, end], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((files as u64, bytes as u64))
    }
}
