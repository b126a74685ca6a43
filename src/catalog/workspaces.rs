//! Workspace rows: name, state, ordered base datasets and whiteouts (schema/0002).
//!
//! Never: touches the upper-layer folder; [`crate::workspace`] owns that.

use rusqlite::{params, OptionalExtension};

use super::{now_secs, Catalog};
use crate::error::{Error, Result};
use crate::id::RootHash;

/// One workspace as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRow {
    pub id: i64,
    pub name: String,
    pub state: String,
    pub created_at: i64,
}

/// A base dataset of a workspace, by dataset row id and the root it had when added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseRow {
    pub dataset_id: i64,
    pub root: RootHash,
}

impl Catalog {
    /// Record a new live workspace with its bases, in order. Fails with
    /// [`Error::WorkspaceExists`] when the name is taken.
    pub fn insert_workspace(&self, name: &str, bases: &[BaseRow]) -> Result<i64> {
        self.transaction(|c| {
            if c.workspace(name)?.is_some() {
                return Err(Error::WorkspaceExists(name.to_string()));
            }
            c.conn().execute(
                "INSERT INTO workspaces (name, state, created_at) VALUES (?1, 'live', ?2)",
                params![name, now_secs()],
            )?;
            let id = c.conn().last_insert_rowid();
            for (i, b) in bases.iter().enumerate() {
                c.conn().execute(
                    "INSERT INTO workspace_bases (workspace_id, position, dataset_id, root) VALUES (?1, ?2, ?3, ?4)",
                    params![id, i as i64, b.dataset_id, b.root.as_bytes()],
                )?;
            }
            Ok(id)
        })
    }

    /// A workspace by name.
    pub fn workspace(&self, name: &str) -> Result<Option<WorkspaceRow>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT id, name, state, created_at FROM workspaces WHERE name = ?1")?
            .query_row([name], |r| {
                Ok(WorkspaceRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    state: r.get(2)?,
                    created_at: r.get(3)?,
                })
            })
            .optional()?)
    }

    /// Every workspace, by name.
    pub fn list_workspaces(&self) -> Result<Vec<WorkspaceRow>> {
        let mut stmt = self
            .conn()
            .prepare("SELECT id, name, state, created_at FROM workspaces ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(WorkspaceRow {
                id: r.get(0)?,
                name: r.get(1)?,
                state: r.get(2)?,
                created_at: r.get(3)?,
            })
        })?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    /// A workspace's bases in order (lowest first).
    pub fn workspace_bases(&self, workspace_id: i64) -> Result<Vec<BaseRow>> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT dataset_id, root FROM workspace_bases WHERE workspace_id = ?1 ORDER BY position")?;
        let rows = stmt.query_map([workspace_id], |r| {
            let root: Vec<u8> = r.get(1)?;
            Ok(BaseRow {
                dataset_id: r.get(0)?,
                root: RootHash::from_slice(&root).unwrap_or(RootHash([0; 32])),
            })
        })?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    /// Names of the workspaces that use a dataset as a base.
    pub fn workspaces_using(&self, dataset_id: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT DISTINCT w.name FROM workspace_bases b JOIN workspaces w ON w.id = b.workspace_id
             WHERE b.dataset_id = ?1 ORDER BY w.name",
        )?;
        let rows = stmt.query_map([dataset_id], |r| r.get(0))?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    /// Forget a workspace: its whiteouts, bases and row.
    pub fn delete_workspace(&self, workspace_id: i64) -> Result<()> {
        self.transaction(|c| {
            c.conn()
                .execute("DELETE FROM whiteouts WHERE workspace_id = ?1", [workspace_id])?;
            c.conn()
                .execute("DELETE FROM workspace_bases WHERE workspace_id = ?1", [workspace_id])?;
            c.conn()
                .execute("DELETE FROM workspaces WHERE id = ?1", [workspace_id])?;
            Ok(())
        })
    }

    /// Record that `path` was deleted in a workspace (idempotent).
    pub fn add_whiteout(&self, workspace_id: i64, path: &[u8]) -> Result<()> {
        self.conn()
            .prepare_cached("INSERT OR IGNORE INTO whiteouts (workspace_id, path) VALUES (?1, ?2)")?
            .execute(params![workspace_id, path])?;
        Ok(())
    }

    /// Like [`Catalog::add_whiteout`], but committed without waiting for the disk (WAL with
    /// `synchronous=NORMAL`): deleting a tree from a base costs one commit per entry, and a
    /// synced commit each made `rm -rf` several times slower. A crash of the machine (not of
    /// the process) may lose such a whiteout, like an unsynced `unlink` on any file system,
    /// until [`Catalog::sync_wal`] or any later synced commit of this catalog.
    pub fn add_whiteout_unsynced(&self, workspace_id: i64, path: &[u8]) -> Result<()> {
        self.conn().pragma_update(None, "synchronous", "NORMAL")?;
        let added = self.add_whiteout(workspace_id, path);
        let restored = self.conn().pragma_update(None, "synchronous", "FULL");
        added?;
        Ok(restored?)
    }

    /// Make every commit so far durable: fsync the write-ahead log (a commit is in the
    /// catalog once its frames are in the log on disk).
    pub fn sync_wal(&self) -> Result<()> {
        let Some(db) = self.conn().path() else {
            return Ok(());
        };
        let wal = std::path::PathBuf::from(format!("{db}-wal"));
        match std::fs::File::open(&wal) {
            Ok(f) => f.sync_all().map_err(Error::io_at("syncing", &wal)),
            // No log: everything is in the database file, synced by the checkpoint.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io_at("opening", &wal)(e)),
        }
    }

    /// Forget a whiteout (a path created again in the upper layer needs none, but the overlay
    /// may drop it to keep the table small).
    pub fn remove_whiteout(&self, workspace_id: i64, path: &[u8]) -> Result<()> {
        self.conn()
            .prepare_cached("DELETE FROM whiteouts WHERE workspace_id = ?1 AND path = ?2")?
            .execute(params![workspace_id, path])?;
        Ok(())
    }

    /// A workspace's whiteouts, sorted by path bytes.
    pub fn whiteouts(&self, workspace_id: i64) -> Result<Vec<Vec<u8>>> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT path FROM whiteouts WHERE workspace_id = ?1 ORDER BY path")?;
        let rows = stmt.query_map([workspace_id], |r| r.get(0))?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }
}
