//! Dataset rows: pending while an ingest runs, sealed (and immutable) once it commits.

use rusqlite::{params, OptionalExtension, Row};

use super::{now_secs, Catalog};
use crate::dataset::{DatasetName, DatasetRef, Kind};
use crate::error::{Error, Result};
use crate::id::RootHash;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetState {
    Pending,
    Sealed,
}

/// One dataset as the catalog records it.
#[derive(Debug, Clone)]
pub struct DatasetRow {
    pub id: i64,
    pub name: DatasetName,
    pub state: DatasetState,
    pub root: Option<RootHash>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub stored_bytes: u64,
    pub source: Option<String>,
    pub created_at: i64,
    pub sealed_at: Option<i64>,
}

/// Totals recorded when a dataset is sealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatasetTotals {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub stored_bytes: u64,
}

pub(super) const COLUMNS: &str =
    "id, kind, name, version, state, root, files, dirs, symlinks, bytes, stored_bytes, source, created_at, sealed_at";

pub(super) fn from_row(r: &Row<'_>) -> rusqlite::Result<DatasetRow> {
    let kind: String = r.get(1)?;
    let state: String = r.get(4)?;
    let root: Option<Vec<u8>> = r.get(5)?;
    Ok(DatasetRow {
        id: r.get(0)?,
        name: DatasetName {
            kind: if kind == "gold" { Kind::Gold } else { Kind::Derived },
            name: r.get(2)?,
            version: r.get(3)?,
        },
        state: if state == "sealed" {
            DatasetState::Sealed
        } else {
            DatasetState::Pending
        },
        root: root.and_then(|b| RootHash::from_slice(&b)),
        files: r.get::<_, i64>(6)? as u64,
        dirs: r.get::<_, i64>(7)? as u64,
        symlinks: r.get::<_, i64>(8)? as u64,
        bytes: r.get::<_, i64>(9)? as u64,
        stored_bytes: r.get::<_, i64>(10)? as u64,
        source: r.get(11)?,
        created_at: r.get(12)?,
        sealed_at: r.get(13)?,
    })
}

impl Catalog {
    /// The sealed dataset with this exact name.
    pub fn sealed_dataset(&self, name: &DatasetName) -> Result<Option<DatasetRow>> {
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM datasets WHERE kind = ?1 AND name = ?2 AND version = ?3 AND state = 'sealed'"
            ))?
            .query_row(params![name.kind.as_str(), name.name, name.version], from_row)
            .optional()?)
    }

    /// Resolve what the user typed to one sealed dataset.
    pub fn resolve(&self, r: &DatasetRef) -> Result<DatasetRow> {
        let kinds: Vec<Kind> = match r.kind {
            Some(k) => vec![k],
            None => vec![Kind::Gold, Kind::Derived],
        };
        let mut found = Vec::new();
        for kind in kinds {
            let name = DatasetName {
                kind,
                name: r.name.clone(),
                version: r.version.clone(),
            };
            if let Some(row) = self.sealed_dataset(&name)? {
                found.push(row);
            }
        }
        match found.len() {
            0 => Err(Error::DatasetNotFound(r.to_string())),
            1 => Ok(found.remove(0)),
            _ => Err(Error::AmbiguousDataset {
                name: r.to_string(),
                candidates: found
                    .iter()
                    .map(|d| d.name.to_string())
                    .collect::<Vec<_>>()
                    .join(" and "),
            }),
        }
    }

    /// Sealed datasets, optionally of one kind or one name, ordered by kind, name, version.
    pub fn list_datasets(&self, kind: Option<Kind>, name: Option<&str>) -> Result<Vec<DatasetRow>> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT {COLUMNS} FROM datasets WHERE state = 'sealed' AND (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR name = ?2) ORDER BY kind DESC, name, version"
        ))?;
        let rows = stmt.query_map(params![kind.map(|k| k.as_str()), name], from_row)?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    /// Start a pending dataset for an ingest, first clearing attempts whose process died.
    pub fn begin_dataset(&self, name: &DatasetName, source: &str) -> Result<i64> {
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        self.conn()
            .prepare_cached("INSERT INTO datasets (kind, name, version, state, source, pid, host, created_at) VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7)")?
            .execute(params![name.kind.as_str(), name.name, name.version, source, std::process::id(), host, now_secs()])?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Delete pending datasets whose ingest process no longer exists (killed or crashed),
    /// as `alive` (given a pid) tells; the catalog only records pids.
    pub fn clear_dead_pending(&self, alive: impl Fn(i64) -> bool) -> Result<usize> {
        let pending: Vec<(i64, i64)> = {
            let mut stmt = self
                .conn()
                .prepare("SELECT id, COALESCE(pid, 0) FROM datasets WHERE state = 'pending'")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let dead: Vec<i64> = pending
            .into_iter()
            .filter(|(_, pid)| !alive(*pid))
            .map(|(id, _)| id)
            .collect();
        for id in &dead {
            self.abandon_dataset(*id)?;
        }
        Ok(dead.len())
    }

    /// Remove a pending dataset and its entries.
    pub fn abandon_dataset(&self, id: i64) -> Result<()> {
        self.transaction(|c| {
            for table in ["lineage_inputs", "lineage", "listings", "entries"] {
                c.conn().execute(
                    &format!("DELETE FROM {table} WHERE dataset_id = ?1 AND (SELECT state FROM datasets WHERE id = ?1) = 'pending'"),
                    [id],
                )?;
            }
            c.conn()
                .execute("DELETE FROM datasets WHERE id = ?1 AND state = 'pending'", [id])?;
            Ok(())
        })
    }

    /// Seal a pending dataset: from now on its rows are immutable.
    pub fn seal_dataset(&self, id: i64, root: RootHash, totals: &DatasetTotals) -> Result<()> {
        self.write_listings(id)?;
        let changed = self.conn().execute(
            "UPDATE datasets SET state = 'sealed', root = ?2, files = ?3, dirs = ?4, symlinks = ?5, bytes = ?6, stored_bytes = ?7, sealed_at = ?8, pid = NULL
             WHERE id = ?1 AND state = 'pending'",
            params![id, root.as_bytes(), totals.files as i64, totals.dirs as i64, totals.symlinks as i64, totals.bytes as i64, totals.stored_bytes as i64, now_secs()],
        )?;
        if changed != 1 {
            return Err(Error::NotPending(id));
        }
        Ok(())
    }
}
