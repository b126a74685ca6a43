//! Recovery of what an interrupted process left behind.
//!
//! Owns: indexing packs that reached the store but not the catalog (the process was killed
//! between publishing a pack and recording it), so the next ingest reuses them instead of
//! writing them again. Each such pack is re-hashed in full first; one that does not verify
//! was never referenced by anything and is removed. Packs that gc retired (dropped from the
//! catalog, file kept for a grace period) are not orphans and are left alone.
//!
//! In a remote store, packs the catalog does not know are mostly other machines' work, not
//! damage: they are indexed from their index alone (ranged reads, several at once) so that
//! this ingest deduplicates against them, and never removed (their uploads were checked by
//! their writers before anything named them).

use crate::catalog::Catalog;
use crate::error::Result;
use crate::pack::verify_pack_bytes;
use crate::vault::Vault;

/// Index every pack in the store that the catalog does not know. Returns how many.
pub fn index_orphan_packs(vault: &Vault, catalog: &Catalog) -> Result<usize> {
    let store = vault.store();
    if store.reads_are_requests() {
        return Ok(index_unknown_packs(vault, catalog)?.indexed);
    }
    let mut indexed = 0;
    for (id, size) in unknown_packs(vault, catalog)? {
        let bytes = store.read_pack(id)?;
        let damage = verify_pack_bytes(id, &bytes);
        if !damage.is_clean() {
            tracing::warn!(pack = %id, "removing an unreferenced pack that does not verify");
            store.remove_pack(id)?;
            continue;
        }
        let entries = crate::pack::parse_index(id, &bytes)?;
        catalog.transaction(|c| c.insert_pack(id, size, &entries))?;
        indexed += 1;
    }
    Ok(indexed)
}

/// What indexing unknown packs did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IndexedPacks {
    pub indexed: usize,
    /// Packs whose index could not be read, with why (they are skipped: nothing names them
    /// in this catalog, and an ingest stores their chunks again if it needs them).
    pub unreadable: Vec<String>,
}

/// Record in the catalog every pack in the store it does not know yet, from the packs'
/// indexes alone (`sync`, and ingest into a remote store).
pub fn index_unknown_packs(vault: &Vault, catalog: &Catalog) -> Result<IndexedPacks> {
    let unknown = unknown_packs(vault, catalog)?;
    let indexes = vault.store().read_pack_indexes(&unknown);
    let mut report = IndexedPacks::default();
    catalog.transaction(|c| {
        for ((id, size), entries) in unknown.iter().zip(indexes) {
            match entries {
                Ok(entries) => {
                    c.insert_pack(*id, *size, &entries)?;
                    report.indexed += 1;
                }
                // A store that does not answer fails the whole operation; a damaged pack
                // is only skipped.
                Err(e @ crate::Error::Remote { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(pack = %id, "skipping a pack whose index cannot be read: {e}");
                    report.unreadable.push(e.to_string());
                }
            }
        }
        Ok(())
    })?;
    Ok(report)
}

/// Packs in the store that the catalog neither has nor has retired, with their sizes.
fn unknown_packs(vault: &Vault, catalog: &Catalog) -> Result<Vec<(crate::id::PackId, u64)>> {
    let retired: std::collections::HashSet<_> = catalog.retired_packs()?.into_iter().map(|r| r.pack).collect();
    let mut unknown = Vec::new();
    for (id, size) in vault.store().list_packs()? {
        if !retired.contains(&id) && !catalog.has_pack(id)? {
            unknown.push((id, size));
        }
    }
    Ok(unknown)
}
