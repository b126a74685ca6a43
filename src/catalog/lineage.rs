//! Lineage rows of derived datasets, and removal of sealed datasets (schema/0002).
//!
//! Lineage is inserted while the dataset is pending, inside its seal transaction; triggers
//! make it immutable once sealed. Removal goes through the `removals` log: the triggers let a
//! sealed dataset's rows be deleted only while an open removals row names it.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{now_secs, Catalog, DatasetRow};
use crate::dataset::{DatasetName, Kind};
use crate::error::{Error, Result};
use crate::id::RootHash;

/// One input of a derived dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageInput {
    pub name: DatasetName,
    pub root: RootHash,
}

/// How a derived dataset was produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineageRecord {
    pub workspace: String,
    pub command: Option<String>,
    pub user: Option<String>,
    pub host: Option<String>,
    /// Unix seconds of the producing command, when known (`run` records them).
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub exit_status: Option<i32>,
    /// Unix seconds when derive started.
    pub derived_at: i64,
    pub inputs: Vec<LineageInput>,
}

/// The lineage record as the store keeps it beside a derived dataset's ref
/// (`lineage/<kind>/<name>/<version>/<root>.json`), so `sync` on another machine rebuilds it.
#[derive(Serialize, Deserialize)]
struct LineageDoc {
    format: u32,
    workspace: String,
    command: Option<String>,
    user: Option<String>,
    host: Option<String>,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    exit_status: Option<i32>,
    derived_at: i64,
    inputs: Vec<InputDoc>,
}

#[derive(Serialize, Deserialize)]
struct InputDoc {
    kind: String,
    name: String,
    version: String,
    root: String,
}

const LINEAGE_FORMAT: u32 = 1;

impl LineageRecord {
    /// The record as JSON, for the store.
    pub fn to_json(&self) -> Vec<u8> {
        let doc = LineageDoc {
            format: LINEAGE_FORMAT,
            workspace: self.workspace.clone(),
            command: self.command.clone(),
            user: self.user.clone(),
            host: self.host.clone(),
            started_at: self.started_at,
            ended_at: self.ended_at,
            exit_status: self.exit_status,
            derived_at: self.derived_at,
            inputs: self
                .inputs
                .iter()
                .map(|i| InputDoc {
                    kind: i.name.kind.as_str().to_string(),
                    name: i.name.name.clone(),
                    version: i.name.version.clone(),
                    root: i.root.to_hex(),
                })
                .collect(),
        };
        serde_json::to_vec_pretty(&doc).expect("lineage serializes")
    }

    /// Parse a record written by [`LineageRecord::to_json`].
    pub fn from_json(bytes: &[u8]) -> Result<LineageRecord> {
        let bad = |why: String| Error::Manifest(format!("lineage record: {why}"));
        let doc: LineageDoc = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if doc.format != LINEAGE_FORMAT {
            return Err(bad(format!("format {} is not {LINEAGE_FORMAT}", doc.format)));
        }
        let inputs = doc
            .inputs
            .into_iter()
            .map(|i| {
                let kind = i.kind.parse().map_err(|_| bad(format!("kind {:?}", i.kind)))?;
                Ok(LineageInput {
                    name: DatasetName::new(kind, &i.name, &i.version)?,
                    root: i.root.parse().map_err(|_| bad(format!("root {:?}", i.root)))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(LineageRecord {
            workspace: doc.workspace,
            command: doc.command,
            user: doc.user,
            host: doc.host,
            started_at: doc.started_at,
            ended_at: doc.ended_at,
            exit_status: doc.exit_status,
            derived_at: doc.derived_at,
            inputs,
        })
    }
}

impl Catalog {
    /// Record the lineage of a pending dataset (call inside its seal transaction).
    pub fn insert_lineage(&self, dataset_id: i64, l: &LineageRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO lineage (dataset_id, workspace, command, user, host, started_at, ended_at, exit_status, derived_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![dataset_id, l.workspace, l.command, l.user, l.host, l.started_at, l.ended_at, l.exit_status, l.derived_at],
        )?;
        for (i, input) in l.inputs.iter().enumerate() {
            self.conn().execute(
                "INSERT INTO lineage_inputs (dataset_id, position, kind, name, version, root) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![dataset_id, i as i64, input.name.kind.as_str(), input.name.name, input.name.version, input.root.as_bytes()],
            )?;
        }
        Ok(())
    }

    /// The lineage of a dataset, if it has one (gold datasets have none).
    pub fn lineage(&self, dataset_id: i64) -> Result<Option<LineageRecord>> {
        let record = self
            .conn()
            .prepare_cached(
                "SELECT workspace, command, user, host, started_at, ended_at, exit_status, derived_at FROM lineage WHERE dataset_id = ?1",
            )?
            .query_row([dataset_id], |r| {
                Ok(LineageRecord {
                    workspace: r.get(0)?,
                    command: r.get(1)?,
                    user: r.get(2)?,
                    host: r.get(3)?,
                    started_at: r.get(4)?,
                    ended_at: r.get(5)?,
                    exit_status: r.get(6)?,
                    derived_at: r.get(7)?,
                    inputs: Vec::new(),
                })
            })
            .optional()?;
        let Some(mut record) = record else { return Ok(None) };
        let mut stmt = self.conn().prepare_cached(
            "SELECT kind, name, version, root FROM lineage_inputs WHERE dataset_id = ?1 ORDER BY position",
        )?;
        let rows = stmt.query_map([dataset_id], |r| {
            let kind: String = r.get(0)?;
            let root: Vec<u8> = r.get(3)?;
            Ok(LineageInput {
                name: DatasetName {
                    kind: if kind == "gold" { Kind::Gold } else { Kind::Derived },
                    name: r.get(1)?,
                    version: r.get(2)?,
                },
                root: RootHash::from_slice(&root).unwrap_or(RootHash([0; 32])),
            })
        })?;
        record.inputs = rows.collect::<rusqlite::Result<_>>()?;
        Ok(Some(record))
    }

    /// Delete a sealed dataset with its entries and lineage, logging it in `removals`.
    /// Gold needs `force`; a dataset that is a workspace base is refused.
    pub fn remove_dataset(&self, d: &DatasetRow, force: bool) -> Result<()> {
        if d.name.kind == Kind::Gold && !force {
            return Err(Error::GoldProtected(d.name.to_string()));
        }
        self.transaction(|c| {
            if let Some(workspace) = c.workspaces_using(d.id)?.into_iter().next() {
                return Err(Error::InUseByWorkspace {
                    dataset: d.name.to_string(),
                    workspace,
                });
            }
            c.conn().execute(
                "INSERT INTO removals (dataset_id, kind, name, version, root, forced, removed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![d.id, d.name.kind.as_str(), d.name.name, d.name.version, d.root.map(|r| r.0.to_vec()), force, now_secs()],
            )?;
            let marker = c.conn().last_insert_rowid();
            c.conn().execute("DELETE FROM lineage_inputs WHERE dataset_id = ?1", [d.id])?;
            c.conn().execute("DELETE FROM lineage WHERE dataset_id = ?1", [d.id])?;
            c.conn().execute("DELETE FROM listings WHERE dataset_id = ?1", [d.id])?;
            c.conn().execute("DELETE FROM entries WHERE dataset_id = ?1", [d.id])?;
            c.conn().execute("DELETE FROM datasets WHERE id = ?1", [d.id])?;
            c.conn().execute("UPDATE removals SET done = 1 WHERE id = ?1", [marker])?;
            Ok(())
        })
    }
}
