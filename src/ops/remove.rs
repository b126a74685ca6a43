//! `rm`: remove a sealed dataset from the vault.
//!
//! Derived datasets can be removed; gold needs `force_gold` (the CLI adds a typed
//! confirmation), and so, in a shared vault, does a dataset another member sealed (the
//! owner of its ref file). A dataset that is a workspace's base is refused. The catalog rows go first,
//! in one transaction logged in `removals` (the only way the triggers let a sealed dataset's
//! rows be deleted), then the ref. The packs stay until `gc` finds their chunks unused. On a
//! shared store a dataset that any machine's workspace pins is refused.
//! Never: deletes pack bytes.

use serde::Serialize;

use crate::dataset::DatasetRef;
use crate::error::{Error, Result};
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
    vault.require_writable()?;
    let catalog = vault.catalog()?;
    let d = catalog.resolve(dataset)?;
    if !force_gold && vault.modes().is_shared() {
        let me = crate::sharing::caller();
        let (kind, name, version) = (d.name.kind.as_str(), &d.name.name, &d.name.version);
        match vault.store().ref_owner(kind, name, version) {
            Some(owner) if owner != me.uid && me.uid != 0 => {
                return Err(Error::SealedByAnother {
                    dataset: d.name.to_string(),
                    owner: crate::sharing::user_name(owner).unwrap_or_else(|| format!("uid {owner}")),
                })
            }
            _ => {}
        }
    }
    if let Some(root) = d.root.filter(|_| vault.store().is_shared()) {
        // By name and root: another ref to the same content can go, since gc keeps every
        // pinned root whatever names it.
        let name = d.name.to_string();
        if let Some((workspace, host)) = super::shared_gc::pinned_by(vault.store(), &name, root)?
            .into_iter()
            .next()
        {
            return Err(Error::PinnedByWorkspace {
                dataset: name,
                workspace,
                host,
            });
        }
    }
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
