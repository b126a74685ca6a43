//! Recovery of what an interrupted process left behind.
//!
//! Owns: indexing packs that reached the store but not the catalog (the process was killed
//! between publishing a pack and recording it), so the next ingest reuses them instead of
//! writing them again. Each such pack is re-hashed in full first; one that does not verify
//! was never referenced by anything and is removed. Packs that gc retired (dropped from the
//! catalog, file kept for a grace period) are not orphans and are left alone.

use crate::catalog::Catalog;
use crate::error::Result;
use crate::pack::verify_pack_bytes;
use crate::vault::Vault;

/// Index every pack in the store that the catalog does not know. Returns how many.
pub fn index_orphan_packs(vault: &Vault, catalog: &Catalog) -> Result<usize> {
    let store = vault.store();
    let mut indexed = 0;
    let retired: std::collections::HashSet<_> = catalog.retired_packs()?.into_iter().map(|r| r.pack).collect();
    for (id, size) in store.list_packs()? {
        if retired.contains(&id) || catalog.has_pack(id)? {
            continue;
        }
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
