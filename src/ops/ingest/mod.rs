//! `ingest` and `estimate`: a source folder into a sealed gold dataset, or what that would cost.
//!
//! Pipeline (docs/ARCHITECTURE.md, "Ingest"): one walker thread → N workers (read, chunk,
//! hash, compress) → the writer (dedup, append to the open pack) → the publisher (fsync,
//! publish, record in the catalog). Channels between them are bounded, so memory does not
//! grow with the dataset. The dataset becomes visible only in the last step, after its
//! manifest and ref are durable: an interrupted ingest leaves a pending row that the next
//! ingest clears, and packs that the next ingest reuses.

mod walk;
mod worker;
mod writer;

pub use walk::symlink_leaves_tree;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::catalog::FileStamp;
use crate::catalog::{Catalog, Entry};
use crate::chunker::Chunker;
use crate::dataset::DatasetName;
use crate::error::{Error, Result};
use crate::id::{ChunkId, RootHash};
use crate::manifest::write_manifest;
use crate::pack::{CompressPolicy, EncodedChunk};
use crate::progress::Progress;
use crate::store::RefOutcome;
use crate::vault::Vault;
use writer::{Publisher, Writer};

/// What to ingest and how.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub source: PathBuf,
    pub name: DatasetName,
    pub allow_external_symlinks: bool,
    /// Ignore the files cache and read every file.
    pub rehash: bool,
    /// Worker threads (default: available cores).
    pub threads: usize,
}

impl IngestOptions {
    pub fn new(source: PathBuf, name: DatasetName) -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        IngestOptions {
            source,
            name,
            allow_external_symlinks: false,
            rehash: false,
            threads,
        }
    }
}

/// A file that was not ingested, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedFile {
    pub path: PathBuf,
    pub reason: String,
}

/// What an ingest did.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub dataset: String,
    pub root: RootHash,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Logical bytes: the sum of file sizes.
    pub bytes: u64,
    /// Bytes this call added to the store (pack files written).
    pub stored_bytes: u64,
    pub new_chunks: u64,
    /// Files whose hash came from the files cache without reading them.
    pub files_from_cache: u64,
    pub skipped: Vec<SkippedFile>,
    /// The dataset already existed with this exact content; nothing was sealed.
    pub already_present: bool,
    pub seconds: f64,
}

/// What `estimate` found.
#[derive(Debug, Clone, Serialize)]
pub struct EstimateReport {
    pub source: PathBuf,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Logical bytes: the sum of file sizes.
    pub bytes: u64,
    /// Bytes left after deduplication within the source (before compression).
    pub unique_bytes: u64,
    /// Of those, bytes not already in the vault: about what ingest would add (before compression).
    pub new_bytes: u64,
    pub skipped: Vec<SkippedFile>,
    pub seconds: f64,
}

/// A chunk on its way from a worker to the writer.
pub struct NewChunk {
    pub token: u64,
    pub file_offset: u64,
    pub id: ChunkId,
    pub raw_len: u32,
    /// Already stored when the worker looked.
    pub in_vault: bool,
    /// The bytes to store; `None` when already stored (or estimating).
    pub encoded: Option<EncodedChunk>,
}

/// Messages to the writer.
pub enum Msg {
    Entry(Entry),
    Skipped(SkippedFile),
    Chunk(NewChunk),
    FileEnd {
        token: u64,
        entry: Entry,
        cache: Option<(Vec<u8>, FileStamp)>,
        from_cache: bool,
    },
    Failed(Error),
}

/// Check the source is a readable folder and return its canonical path: the files cache is
/// keyed by absolute source paths, which must not depend on the working directory.
pub fn check_source(source: &Path) -> Result<PathBuf> {
    match std::fs::metadata(source) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::SourceMissing(source.to_path_buf())),
        Err(e) => Err(Error::Unreadable {
            path: source.to_path_buf(),
            source: e,
        }),
        Ok(m) if !m.is_dir() => Err(Error::SourceNotDir(source.to_path_buf())),
        Ok(_) => source.canonicalize().map_err(|e| Error::Unreadable {
            path: source.to_path_buf(),
            source: e,
        }),
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Run walker and workers feeding `writer`; returns once all input is consumed or failed.
fn run_pipeline(
    vault: &Vault,
    opts: &IngestOptions,
    estimate: bool,
    progress: &dyn Progress,
    writer: &mut Writer<'_>,
) -> Result<()> {
    let config = vault.config();
    let ctx = worker::WorkerContext {
        chunker: Chunker::new(&config.chunking),
        policy: CompressPolicy {
            level: config.compression.zstd_level,
            min_saving_percent: config.compression.min_saving_percent,
        },
        rehash: opts.rehash,
        estimate,
        racy_after_ns: now_ns() - 2_000_000_000,
        progress,
    };
    let (to_writer, from_pipeline) = crossbeam_channel::bounded::<Msg>(16);
    let (to_workers, jobs) = crossbeam_channel::bounded(64);
    let catalogs: Vec<Catalog> = (0..opts.threads.max(1))
        .map(|_| vault.catalog())
        .collect::<Result<_>>()?;
    std::thread::scope(|s| {
        // The total is only for the progress bar: count it beside the work, not before it.
        s.spawn(|| {
            if let Some(total) = quick_total(&opts.source) {
                progress.set_total(total);
            }
        });
        let tx = to_writer.clone();
        let source = &opts.source;
        s.spawn(move || walk::walk(source, opts.allow_external_symlinks, &tx, &to_workers));
        for catalog in catalogs {
            let (w, rx, ctx) = (to_writer.clone(), jobs.clone(), &ctx);
            s.spawn(move || match worker::Worker::new(ctx, catalog, w.clone()) {
                Ok(worker) => worker.run(rx),
                Err(e) => {
                    let _ = w.send(Msg::Failed(e));
                }
            });
        }
        drop(to_writer);
        drop(jobs);
        // On failure `run` drops the receiver, which unblocks every thread still sending.
        writer.run(from_pipeline)
    })
}

/// Sum of regular file sizes under `source` (a metadata-only walk, for the progress bar).
fn quick_total(source: &Path) -> Option<u64> {
    let mut total = 0;
    for e in walkdir::WalkDir::new(source).follow_links(false) {
        let e = e.ok()?;
        if e.file_type().is_file() {
            total += e.metadata().ok()?.len();
        }
    }
    Some(total)
}

/// Ingest `opts.source` as a sealed gold (or derived) dataset.
pub fn ingest(vault: &Vault, opts: &IngestOptions, progress: &dyn Progress) -> Result<IngestReport> {
    let started = Instant::now();
    let opts = &IngestOptions {
        source: check_source(&opts.source)?,
        ..opts.clone()
    };
    let catalog = vault.catalog()?;
    vault.clear_dead_tmp()?;
    super::recover::index_orphan_packs(vault, &catalog)?;
    let dataset = opts.name.to_string();
    let dataset_id = catalog.begin_dataset(&opts.name, &opts.source.to_string_lossy())?;
    let result = ingest_into(vault, &catalog, dataset_id, opts, progress);
    progress.finish();
    match result {
        Ok((root, totals, stored_bytes, already_present)) => Ok(IngestReport {
            dataset,
            root,
            files: totals.files,
            dirs: totals.dirs,
            symlinks: totals.symlinks,
            bytes: totals.bytes,
            stored_bytes,
            new_chunks: totals.new_chunks,
            files_from_cache: totals.from_cache,
            skipped: totals.skipped,
            already_present,
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            let _ = catalog.abandon_dataset(dataset_id);
            Err(e)
        }
    }
}

fn ingest_into(
    vault: &Vault,
    catalog: &Catalog,
    dataset_id: i64,
    opts: &IngestOptions,
    progress: &dyn Progress,
) -> Result<(RootHash, writer::WriterTotals, u64, bool)> {
    let inflight = Arc::new(Mutex::new(Default::default()));
    let (to_publisher, batches) = crossbeam_channel::bounded(2);
    let mut publisher = Publisher {
        store: vault.store(),
        catalog: vault.catalog()?,
        dataset_id,
        inflight: inflight.clone(),
        stored_bytes: 0,
    };
    let mut writer = Writer::new(
        catalog,
        vault.tmp_dir(),
        vault.config().packs.target_size,
        inflight,
        Some(to_publisher),
    );
    let (written, published) = std::thread::scope(|s| {
        let publishing = s.spawn(|| publisher.run(batches));
        let mut written = run_pipeline(vault, opts, false, progress, &mut writer);
        if written.is_ok() {
            written = writer.flush();
        } else {
            writer.abandon();
        }
        writer.close();
        (written, publishing.join().expect("publisher thread panicked"))
    });
    written?;
    let stored_bytes = published?;
    let totals = writer.totals.clone();
    let (root, already_present) = seal(vault, catalog, dataset_id, &opts.name, &totals, stored_bytes)?;
    Ok((root, totals, stored_bytes, already_present))
}

/// Write the manifest, create the ref, and seal the catalog row, in that order.
fn seal(
    vault: &Vault,
    catalog: &Catalog,
    dataset_id: i64,
    name: &DatasetName,
    totals: &writer::WriterTotals,
    stored_bytes: u64,
) -> Result<(RootHash, bool)> {
    let tmp = vault
        .tmp_dir()
        .join(format!("{}-manifest-{dataset_id}.json.tmp", std::process::id()));
    let root = {
        let file = std::fs::File::create(&tmp).map_err(Error::io_at("creating", &tmp))?;
        let mut out = std::io::BufWriter::new(file);
        let root = write_manifest(catalog, dataset_id, &mut out)?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io("writing", &tmp, e.into_error()))?;
        file.sync_all().map_err(Error::io_at("syncing", &tmp))?;
        root
    };
    if let Some(existing) = catalog.sealed_dataset(name)? {
        let _ = std::fs::remove_file(&tmp);
        catalog.abandon_dataset(dataset_id)?;
        return match existing.root {
            Some(r) if r == root => Ok((root, true)),
            other => Err(Error::DatasetExists {
                dataset: name.to_string(),
                existing: other.map(|r| r.to_hex()).unwrap_or_default(),
                new: root.to_hex(),
            }),
        };
    }
    vault.store().put_manifest_file(root, &tmp)?;
    crate::crashpoint::hit("before-ref");
    match vault
        .store()
        .create_ref(name.kind.as_str(), &name.name, &name.version, root)?
    {
        RefOutcome::Created | RefOutcome::AlreadyPresent => {}
        RefOutcome::Conflict(existing) => {
            catalog.abandon_dataset(dataset_id)?;
            return Err(Error::SealedInStore {
                dataset: name.to_string(),
                existing: existing.to_hex(),
                new: root.to_hex(),
            });
        }
    }
    crate::crashpoint::hit("before-seal");
    let t = crate::catalog::DatasetTotals {
        files: totals.files,
        dirs: totals.dirs,
        symlinks: totals.symlinks,
        bytes: totals.bytes,
        stored_bytes,
    };
    match catalog.transaction(|c| c.seal_dataset(dataset_id, root, &t)) {
        Ok(()) => Ok((root, false)),
        // Another ingest of the same name sealed first (the partial unique index refused us).
        Err(e) if e.is_constraint_violation() => {
            catalog.abandon_dataset(dataset_id)?;
            match catalog.sealed_dataset(name)? {
                Some(existing) if existing.root == Some(root) => Ok((root, true)),
                Some(existing) => Err(Error::DatasetExists {
                    dataset: name.to_string(),
                    existing: existing.root.map(|r| r.to_hex()).unwrap_or_default(),
                    new: root.to_hex(),
                }),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// What ingesting `source` would store, storing nothing.
pub fn estimate(vault: &Vault, source: &Path, progress: &dyn Progress) -> Result<EstimateReport> {
    let started = Instant::now();
    let source = &check_source(source)?;
    let catalog = vault.catalog()?;
    let mut opts = IngestOptions::new(
        source.to_path_buf(),
        DatasetName::new(crate::Kind::Gold, "estimate", "0")?,
    );
    opts.allow_external_symlinks = true;
    let mut writer = Writer::new(&catalog, vault.tmp_dir(), u64::MAX, Default::default(), None);
    let result = run_pipeline(vault, &opts, true, progress, &mut writer);
    progress.finish();
    result?;
    let t = writer.totals;
    Ok(EstimateReport {
        source: source.to_path_buf(),
        files: t.files,
        dirs: t.dirs,
        symlinks: t.symlinks,
        bytes: t.bytes,
        unique_bytes: t.unique_bytes,
        new_bytes: t.new_bytes,
        skipped: t.skipped,
        seconds: started.elapsed().as_secs_f64(),
    })
}
