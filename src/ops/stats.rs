//! `stats`: logical versus stored bytes, per dataset and for the vault.

use serde::Serialize;

use crate::error::Result;
use crate::vault::Vault;

/// Figures for one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetStats {
    pub dataset: String,
    pub root: String,
    pub files: u64,
    /// Sum of file sizes.
    pub bytes: u64,
    /// Bytes the dataset's ingest added to the store.
    pub stored_bytes: u64,
    /// Stored bytes of every distinct chunk the dataset uses (shared chunks included).
    pub referenced_stored_bytes: u64,
}

/// Figures for the vault.
#[derive(Debug, Clone, Serialize)]
pub struct VaultStats {
    pub datasets: Vec<DatasetStats>,
    /// Sum of all datasets' logical bytes.
    pub logical_bytes: u64,
    /// Bytes of all packs in the store.
    pub stored_bytes: u64,
    pub packs: u64,
    pub chunks: u64,
    /// logical_bytes / stored_bytes.
    pub dedup_ratio: f64,
}

/// Gather the figures.
pub fn stats(vault: &Vault) -> Result<VaultStats> {
    let catalog = vault.catalog()?;
    let mut datasets = Vec::new();
    for d in catalog.list_datasets(None, None)? {
        let referenced = catalog.dataset_referenced_stored_bytes(d.id)?;
        datasets.push(DatasetStats {
            dataset: d.name.to_string(),
            root: d.root.map(|r| r.to_hex()).unwrap_or_default(),
            files: d.files,
            bytes: d.bytes,
            stored_bytes: d.stored_bytes,
            referenced_stored_bytes: referenced,
        });
    }
    let logical_bytes = datasets.iter().map(|d| d.bytes).sum();
    let stored_bytes = catalog.stored_bytes_total()?;
    let (packs, chunks) = catalog.pack_and_chunk_counts()?;
    let dedup_ratio = if stored_bytes == 0 {
        0.0
    } else {
        logical_bytes as f64 / stored_bytes as f64
    };
    Ok(VaultStats {
        datasets,
        logical_bytes,
        stored_bytes,
        packs,
        chunks,
        dedup_ratio,
    })
}
