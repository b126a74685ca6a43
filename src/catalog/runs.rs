//! Rows of commands run in workspaces by `dsvault run` (schema/0003).

use rusqlite::params;

use super::Catalog;
use crate::error::{Error, Result};

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub id: i64,
    pub workspace: String,
    /// The arguments as a JSON array.
    pub command: String,
    pub started_at: i64,
    pub ended_at: i64,
    pub duration_ms: i64,
    /// Exit code, or 128 + the signal that ended the command.
    pub exit_status: i32,
    pub derived: Option<String>,
}

impl Catalog {
    /// Record a finished run (its `id` and `derived` are ignored); returns its id.
    pub fn insert_run(&self, r: &RunRow) -> Result<i64> {
        self.conn().execute(
            "INSERT INTO runs (workspace, command, started_at, ended_at, duration_ms, exit_status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                r.workspace,
                r.command,
                r.started_at,
                r.ended_at,
                r.duration_ms,
                r.exit_status
            ],
        )?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Note the dataset a run's `--derive` sealed.
    pub fn set_run_derived(&self, id: i64, dataset: &str) -> Result<()> {
        self.conn()
            .execute("UPDATE runs SET derived = ?2 WHERE id = ?1", params![id, dataset])?;
        Ok(())
    }

    /// The runs of a workspace, oldest first.
    pub fn runs(&self, workspace: &str) -> Result<Vec<RunRow>> {
        let mut stmt = self.conn().prepare(
            "SELECT id, workspace, command, started_at, ended_at, duration_ms, exit_status, derived
             FROM runs WHERE workspace = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([workspace], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                workspace: r.get(1)?,
                command: r.get(2)?,
                started_at: r.get(3)?,
                ended_at: r.get(4)?,
                duration_ms: r.get(5)?,
                exit_status: r.get(6)?,
                derived: r.get(7)?,
            })
        })?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }
}
