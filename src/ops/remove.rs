//! `rm`: remove a sealed dataset from the vault.
//!
//! Derived datasets can be removed; gold needs `force_gold` (the CLI adds a typed
//! confirmation). A dataset that is a workspace's base is refused. The catalog rows go first,
//! in one transaction logged in `removals` (the only way the triggers let a sealed dataset's
//! rows be deleted), then the ref. The packs stay until `gc` finds their chunks unused.
//! Never: deletes pack bytes.

use serde::Serialize;

use crate::dataset::DatasetRef;
use crate::error::Result;
use crate::id::RootHash;
use crate::vault::Vault;

/// What `rm` removed.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveReport {
    pub dataset: String,
    pub root: Option<RootHash>,
    pub files: u64,
    pub bytes: u64,
}

/// Remove one sealed dataset (gold only with `force_gold`).
pub fn remove(vault: &Vault, dataset: &DatasetRef, force_gold: bool) -> Result<RemoveReport> {
    let catalog = vault.catalog()?;
    let d = catalog.resolve(dataset)?;
    catalog.remove_dataset(&d, force_gold)?;
    crate::crashpoint::hit("rm-before-ref");
    vault
        .store()
        .remove_ref(d.name.kind.as_str(), &d.name.name, &d.name.version)?;
    Ok(RemoveReport {
        dataset: d.name.to_string(),
        root: d.root,
        files: d.files,
        bytes: d.bytes,
    })
}
