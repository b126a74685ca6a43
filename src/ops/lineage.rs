//! `lineage`: the tree of a dataset's inputs back to gold.
//!
//! Inputs are recorded by name and root (schema/0002 `lineage_inputs`). An input that has
//! been removed since, or whose name now holds another root (impossible while refs are
//! create-only, but cheap to check), is shown with `present = false` and no inputs of its own.

use serde::Serialize;

use crate::catalog::{Catalog, DatasetRow};
use crate::dataset::DatasetRef;
use crate::error::Result;
use crate::id::RootHash;
use crate::vault::Vault;

/// Lineage is never deeper than this (each step needs its input sealed before it).
const MAX_DEPTH: usize = 256;

/// One dataset in a lineage tree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LineageNode {
    pub dataset: String,
    pub root: Option<RootHash>,
    /// Still in the vault with this root.
    pub present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived_at: Option<i64>,
    pub inputs: Vec<LineageNode>,
}

/// The lineage tree of one dataset.
pub fn lineage(vault: &Vault, dataset: &DatasetRef) -> Result<LineageNode> {
    let catalog = vault.catalog()?;
    let d = catalog.resolve(dataset)?;
    node(&catalog, &d, 0)
}

fn node(catalog: &Catalog, d: &DatasetRow, depth: usize) -> Result<LineageNode> {
    let mut n = LineageNode {
        dataset: d.name.to_string(),
        root: d.root,
        present: true,
        ..Default::default()
    };
    let Some(l) = catalog.lineage(d.id)? else { return Ok(n) };
    n.workspace = Some(l.workspace);
    n.command = l.command;
    n.user = l.user;
    n.host = l.host;
    n.started_at = l.started_at;
    n.ended_at = l.ended_at;
    n.exit_status = l.exit_status;
    n.derived_at = Some(l.derived_at);
    for input in l.inputs {
        let found = catalog
            .sealed_dataset(&input.name)?
            .filter(|r| r.root == Some(input.root));
        n.inputs.push(match found {
            Some(row) if depth < MAX_DEPTH => node(catalog, &row, depth + 1)?,
            _ => LineageNode {
                dataset: input.name.to_string(),
                root: Some(input.root),
                present: false,
                ..Default::default()
            },
        });
    }
    Ok(n)
}
