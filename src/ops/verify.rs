//! `verify`: the catalog against the store, and with `read_data` every stored byte.
//!
//! Without `read_data`: each dataset's entries hash to its recorded root, its manifest and ref
//! agree, every chunk it needs is recorded, and every pack those chunks live in exists with
//! its recorded size. With `read_data`: every pack is re-hashed and every chunk decoded and
//! re-hashed; a damaged chunk is reported with each dataset and path that uses it.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::catalog::{Catalog, DatasetRow};
use crate::dataset::DatasetRef;
use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::manifest::{parse_and_check, write_manifest};
use crate::pack::verify_pack_bytes;
use crate::progress::Progress;
use crate::vault::Vault;

/// One thing `verify` found wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// missing-chunk, missing-pack, pack-size, damaged-chunk, damaged-pack, root, manifest, ref,
    /// listing
    pub kind: &'static str,
    pub dataset: Option<String>,
    pub path: Option<String>,
    pub detail: String,
}

/// What `verify` checked and found.
#[derive(Debug, Clone, Serialize, Default)]
pub struct VerifyReport {
    pub datasets: u64,
    pub packs: u64,
    pub chunks_read: u64,
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check one dataset (or all) against the store.
pub fn verify(
    vault: &Vault,
    dataset: Option<&DatasetRef>,
    read_data: bool,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let catalog = vault.catalog()?;
    let datasets = match dataset {
        Some(r) => vec![catalog.resolve(r)?],
        None => catalog.list_datasets(None, None)?,
    };
    let mut report = VerifyReport {
        datasets: datasets.len() as u64,
        ..Default::default()
    };
    let mut packs: BTreeSet<(PackId, u64)> = BTreeSet::new();
    for d in &datasets {
        check_dataset(vault, &catalog, d, &mut report)?;
        packs.extend(catalog.dataset_packs(d.id)?);
    }
    if dataset.is_none() {
        packs.extend(catalog.packs()?);
    }
    report.packs = packs.len() as u64;
    if read_data {
        progress.set_total(packs.iter().map(|p| p.1).sum());
    }
    for (pack, size) in packs {
        check_pack(vault, &catalog, pack, size, read_data, &mut report)?;
        if read_data {
            progress.advance(size);
        }
    }
    progress.finish();
    Ok(report)
}

fn problem(kind: &'static str, dataset: Option<&DatasetRow>, path: Option<String>, detail: String) -> Problem {
    Problem {
        kind,
        dataset: dataset.map(|d| d.name.to_string()),
        path,
        detail,
    }
}

fn check_dataset(vault: &Vault, catalog: &Catalog, d: &DatasetRow, report: &mut VerifyReport) -> Result<()> {
    let Some(root) = d.root else {
        report
            .problems
            .push(problem("root", Some(d), None, "sealed without a root hash".into()));
        return Ok(());
    };
    let recomputed = write_manifest(catalog, d.id, &mut std::io::sink())?;
    if recomputed != root {
        report.problems.push(problem(
            "root",
            Some(d),
            None,
            format!("entries hash to {recomputed}, catalog records {root}"),
        ));
    }
    match vault.store().get_manifest(root)? {
        None => report.problems.push(problem(
            "manifest",
            Some(d),
            None,
            format!("manifest {root} is missing from the store"),
        )),
        Some(bytes) => {
            if let Err(e) = parse_and_check(&bytes, root) {
                report.problems.push(problem("manifest", Some(d), None, e.to_string()));
            }
        }
    }
    let n = &d.name;
    match vault.store().read_ref(n.kind.as_str(), &n.name, &n.version) {
        Ok(Some(r)) if r == root => {}
        Ok(Some(r)) => report.problems.push(problem(
            "ref",
            Some(d),
            None,
            format!("ref names {r}, catalog records {root}"),
        )),
        Ok(None) => report
            .problems
            .push(problem("ref", Some(d), None, "ref is missing from the store".into())),
        Err(e) => report.problems.push(problem("ref", Some(d), None, e.to_string())),
    }
    for (path, chunk) in catalog.dataset_unplaced_chunks(d.id)? {
        report.problems.push(problem(
            "missing-chunk",
            Some(d),
            Some(String::from_utf8_lossy(&path).into_owned()),
            format!("chunk {chunk} is not recorded in any pack"),
        ));
    }
    for m in catalog.dataset_size_mismatches(d.id)? {
        report.problems.push(problem(
            "missing-chunk",
            Some(d),
            Some(String::from_utf8_lossy(&m.path).into_owned()),
            format!("file is {} bytes but its chunks hold {}", m.size, m.chunk_sum),
        ));
    }
    for folder in catalog.dataset_listing_mismatches(d.id)? {
        report.problems.push(problem(
            "listing",
            Some(d),
            Some(String::from_utf8_lossy(&folder).into_owned()),
            "the catalog's listing of this folder does not match its entries (the mount fails to list it; the data is intact): restore catalog.db from a backup, or with an object store sync a fresh vault on it (docs/data.md)".into(),
        ));
    }
    Ok(())
}

/// How a chunk is unusable.
#[derive(Clone, Copy)]
enum ChunkFault {
    Damaged,
    InMissingPack,
}

/// Report an unusable chunk once per dataset and path that uses it.
fn report_chunk_users(
    catalog: &Catalog,
    chunk: ChunkId,
    pack: PackId,
    fault: ChunkFault,
    report: &mut VerifyReport,
) -> Result<()> {
    let users = catalog.chunk_users(chunk)?;
    let (kind, detail) = match fault {
        ChunkFault::Damaged => (
            "damaged-chunk",
            format!("chunk {chunk} in pack {pack} does not match its hash"),
        ),
        ChunkFault::InMissingPack => (
            "missing-chunk",
            format!("chunk {chunk} was in pack {pack}, which is missing"),
        ),
    };
    if users.is_empty() {
        report.problems.push(Problem {
            kind,
            dataset: None,
            path: None,
            detail: format!("{detail} (no dataset uses it)"),
        });
    }
    for (dataset, path) in users {
        report.problems.push(Problem {
            kind,
            dataset: Some(dataset),
            path: Some(String::from_utf8_lossy(&path).into_owned()),
            detail: detail.clone(),
        });
    }
    Ok(())
}

fn check_pack(
    vault: &Vault,
    catalog: &Catalog,
    pack: PackId,
    size: u64,
    read_data: bool,
    report: &mut VerifyReport,
) -> Result<()> {
    let store = vault.store();
    let missing = |detail: String| Problem {
        kind: "missing-pack",
        dataset: None,
        path: None,
        detail,
    };
    match store.pack_size(pack)? {
        None => {
            report
                .problems
                .push(missing(format!("pack {pack} is missing from the store")));
            for e in catalog.chunks_in_pack(pack)? {
                report_chunk_users(catalog, e.chunk, pack, ChunkFault::InMissingPack, report)?;
            }
            return Ok(());
        }
        Some(actual) if actual != size => {
            report.problems.push(Problem {
                kind: "pack-size",
                dataset: None,
                path: None,
                detail: format!("pack {pack} is {actual} bytes, catalog records {size}"),
            });
        }
        Some(_) => {}
    }
    if !read_data {
        return Ok(());
    }
    let bytes = store.read_pack(pack)?;
    report.bytes_read += bytes.len() as u64;
    let damage = verify_pack_bytes(pack, &bytes);
    let recorded = catalog.chunks_in_pack(pack)?;
    report.chunks_read += recorded.len() as u64;
    if let Some(why) = &damage.unreadable_index {
        report.problems.push(Problem {
            kind: "damaged-pack",
            dataset: None,
            path: None,
            detail: why.clone(),
        });
    }
    let mut bad: BTreeSet<ChunkId> = damage.bad_chunks.iter().copied().collect();
    // Check what the catalog records too: its offsets must hold the right bytes.
    for e in &recorded {
        let end = e.offset as usize + e.stored_len as usize;
        let ok = end <= bytes.len() && crate::pack::decode_chunk(pack, e, &bytes[e.offset as usize..end]).is_ok();
        if !ok {
            bad.insert(e.chunk);
        }
    }
    for chunk in &bad {
        report_chunk_users(catalog, *chunk, pack, ChunkFault::Damaged, report)?;
    }
    if damage.hash_mismatch && bad.is_empty() && damage.unreadable_index.is_none() {
        report.problems.push(Problem {
            kind: "damaged-pack",
            dataset: None,
            path: None,
            detail: format!("pack {pack} does not match its hash, though every chunk in it still verifies"),
        });
    }
    Ok(())
}
