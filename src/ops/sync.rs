//! `sync`: rebuild or refresh the catalog from the store alone.
//!
//! Owns: making a catalog know everything its store holds. Packs come first, from their own
//! indexes (packs are self-describing, docs/FORMAT.md), so every chunk a manifest names is
//! located before the dataset appears; then every ref whose dataset the catalog lacks is
//! imported from its manifest (checked against its root hash) as a sealed dataset. Running
//! it again changes nothing; a ref naming another root than the catalog's dataset of that
//! name is reported, never "fixed". A new machine with an empty vault folder and the same
//! `--store` sees every dataset after one `sync`. Lineage is not in manifests, so derived
//! datasets imported this way show none.

use std::collections::HashSet;
use std::time::Instant;

use serde::Serialize;

use crate::catalog::entries::split_path;
use crate::catalog::{Catalog, DatasetRow, DatasetTotals, Entry, FileChunk, LineageRecord};
use crate::dataset::Kind;
use crate::error::{Error, Result};
use crate::id::{ChunkId, ContentId};
use crate::manifest::{parse_and_check, Manifest};
use crate::progress::Progress;
use crate::store::StoredRef;
use crate::vault::Vault;

/// What `sync` did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SyncReport {
    pub store: String,
    /// Packs in the store, and of those the ones this run recorded.
    pub packs: u64,
    pub packs_indexed: u64,
    /// Packs this catalog knew that a gc deleted from the (shared) store, now forgotten here.
    pub packs_deleted_by_gc: u64,
    /// Refs in the store, and the datasets this run imported.
    pub datasets: u64,
    pub datasets_imported: Vec<String>,
    /// Datasets this catalog has whose ref is no longer in the store (removed with `rm` on
    /// another machine), and of those the ones this run dropped from the catalog (`--prune`).
    pub datasets_gone: Vec<String>,
    pub datasets_pruned: Vec<String>,
    /// Things that could not be synced (a damaged pack index or manifest, a ref that names
    /// another root than this catalog's dataset of that name, a gone dataset that is still a
    /// workspace's base).
    pub problems: Vec<String>,
    pub seconds: f64,
}

/// Bring the catalog up to date with the store; with `prune`, also drop the datasets whose
/// ref the store no longer has.
pub fn sync(vault: &Vault, prune: bool, progress: &dyn Progress) -> Result<SyncReport> {
    let started = Instant::now();
    let _lock = vault.lock_writer()?;
    let catalog = vault.catalog()?;
    catalog.clear_dead_pending(crate::process::alive)?;
    let mut report = SyncReport {
        store: vault.config().store.clone(),
        ..Default::default()
    };
    if vault.store().is_shared() {
        super::shared_gc::unretire_spared(vault, &catalog)?;
    }
    let packs = super::recover::index_unknown_packs(vault, &catalog)?;
    report.packs = catalog.packs()?.len() as u64;
    report.packs_indexed = packs.indexed as u64;
    report.problems.extend(packs.unreadable);
    let refs = vault.store().list_refs()?;
    report.datasets = refs.len() as u64;
    progress.set_total(refs.len() as u64);
    let in_store: HashSet<String> = refs.iter().map(|r| r.dataset.to_string()).collect();
    for r in refs {
        match import_ref(vault, &catalog, &r) {
            Ok(true) => report.datasets_imported.push(r.dataset.to_string()),
            Ok(false) => {}
            Err(e @ Error::Remote { .. }) => return Err(e),
            Err(e) => report.problems.push(format!("{}: {e}", r.dataset)),
        }
        progress.advance(1);
    }
    progress.finish();
    for d in gone_from_store(vault, &catalog, &in_store)? {
        let name = d.name.to_string();
        report.datasets_gone.push(name.clone());
        if !prune {
            continue;
        }
        // The ref is gone, so whoever removed it confirmed (gold needs that of `rm`).
        match catalog.remove_dataset(&d, true) {
            Ok(()) => report.datasets_pruned.push(name),
            Err(e @ Error::InUseByWorkspace { .. }) => report
                .problems
                .push(format!("{name} is gone from the store but kept here: {e}")),
            Err(e) => return Err(e),
        }
    }
    if vault.store().is_shared() {
        let (forgotten, unreadable) = super::shared_gc::forget_deleted_packs(vault, &catalog)?;
        report.packs_deleted_by_gc = forgotten;
        report.packs -= forgotten.min(report.packs);
        report.problems.extend(unreadable);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Drop from the catalog every dataset whose ref the store no longer has (a writer's prelude
/// on a shared store does this before forgetting packs a gc condemned). Workspace bases stay.
pub(crate) fn prune_gone(vault: &Vault, catalog: &Catalog) -> Result<()> {
    let in_store: HashSet<String> = vault
        .store()
        .list_refs()?
        .iter()
        .map(|r| r.dataset.to_string())
        .collect();
    for d in gone_from_store(vault, catalog, &in_store)? {
        match catalog.remove_dataset(&d, true) {
            Ok(()) | Err(Error::InUseByWorkspace { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sealed datasets of this catalog whose ref the store does not have. Each is checked again
/// with its own request: a dataset sealed here after the listing (an ingest running beside
/// this sync) has its ref by then, since the ref is written before the catalog seals.
fn gone_from_store(vault: &Vault, catalog: &Catalog, in_store: &HashSet<String>) -> Result<Vec<DatasetRow>> {
    let mut gone = Vec::new();
    for d in catalog.list_datasets(None, None)? {
        if in_store.contains(&d.name.to_string()) {
            continue;
        }
        let n = &d.name;
        if vault.store().read_ref(n.kind.as_str(), &n.name, &n.version)?.is_none() {
            gone.push(d);
        }
    }
    Ok(gone)
}

/// Import one ref's dataset unless the catalog has it. Returns whether it was imported.
fn import_ref(vault: &Vault, catalog: &Catalog, r: &StoredRef) -> Result<bool> {
    if let Some(existing) = catalog.sealed_dataset(&r.dataset)? {
        return match existing.root {
            Some(root) if root == r.root => Ok(false),
            other => Err(Error::Manifest(format!(
                "the store's ref names root {} but this catalog's dataset has root {}; the catalog keeps its own",
                r.root,
                other.map(|o| o.to_hex()).unwrap_or_default()
            ))),
        };
    }
    let bytes = vault
        .store()
        .get_manifest(r.root)?
        .ok_or(Error::MissingManifest(r.root))?;
    let manifest = parse_and_check(&bytes, r.root)?;
    let lineage = stored_lineage(vault, r)?;
    let id = catalog.begin_dataset(&r.dataset, &format!("sync from {}", vault.config().store))?;
    let imported = catalog.transaction(|c| {
        let totals = insert_entries(c, id, &manifest)?;
        if let Some(l) = &lineage {
            c.insert_lineage(id, l)?;
        }
        c.seal_dataset(id, r.root, &totals)
    });
    match imported {
        Ok(()) => Ok(true),
        // An ingest or another sync of the same name sealed first.
        Err(e) if e.is_constraint_violation() => {
            catalog.abandon_dataset(id)?;
            Ok(false)
        }
        Err(e) => {
            catalog.abandon_dataset(id)?;
            Err(e)
        }
    }
}

/// A derived dataset's lineage record from the store (written by `derive` before its ref).
/// Datasets derived before the store kept lineage have none; they import without it.
fn stored_lineage(vault: &Vault, r: &StoredRef) -> Result<Option<LineageRecord>> {
    if r.dataset.kind != Kind::Derived {
        return Ok(None);
    }
    let d = &r.dataset;
    let Some(bytes) = vault
        .store()
        .get_lineage(d.kind.as_str(), &d.name, &d.version, r.root)?
    else {
        tracing::warn!(dataset = %d, "the store has no lineage record for this dataset; importing it without lineage");
        return Ok(None);
    };
    LineageRecord::from_json(&bytes).map(Some)
}

/// Record a manifest's entries (and the contents they name) under dataset row `id`.
fn insert_entries(c: &Catalog, id: i64, manifest: &Manifest) -> Result<DatasetTotals> {
    let mut t = DatasetTotals {
        files: 0,
        dirs: 0,
        symlinks: 0,
        bytes: 0,
        stored_bytes: 0,
    };
    for m in &manifest.entries {
        let path = m.path_bytes()?;
        let (parent, name) = split_path(&path);
        let kind = m.kind()?;
        let content = m.content.as_deref().map(str::parse::<ContentId>).transpose()?;
        let content_id = match content {
            Some(hash) => Some(c.insert_content(hash, m.size, &file_chunks(m.chunks.as_deref())?)?),
            None => None,
        };
        match kind {
            crate::catalog::EntryKind::File => {
                t.files += 1;
                t.bytes += m.size;
            }
            crate::catalog::EntryKind::Dir => t.dirs += 1,
            crate::catalog::EntryKind::Symlink => t.symlinks += 1,
        }
        c.insert_entry(
            id,
            &Entry {
                id: 0,
                parent: parent.to_vec(),
                name: name.to_vec(),
                kind,
                mode: m.mode,
                size: m.size,
                mtime_ns: m.mtime_ns,
                content,
                content_id,
                target: m.target_bytes(),
            },
        )?;
    }
    Ok(t)
}

fn file_chunks(chunks: Option<&[(u64, String)]>) -> Result<Vec<FileChunk>> {
    chunks
        .unwrap_or_default()
        .iter()
        .map(|(offset, hex)| {
            Ok(FileChunk {
                file_offset: *offset,
                chunk: hex.parse::<ChunkId>()?,
            })
        })
        .collect()
}
