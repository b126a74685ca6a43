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
pub(crate) mod writer;

pub use walk::{special_kind, symlink_leaves_tree};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;
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
pub(crate) use walk::FileJob;
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
    /// A folder, a symlink, or a file whose content is already stored (`content` set): it
    /// is recorded as it is, with no reading or chunking.
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

/// How the pipeline runs, whatever feeds it.
pub(crate) struct PipelineSettings<'a> {
    pub threads: usize,
    pub rehash: bool,
    /// Folder whose regular-file bytes make the progress bar's total, if any.
    pub total_of: Option<&'a Path>,
}

impl<'a> PipelineSettings<'a> {
    fn of(opts: &'a IngestOptions) -> Self {
        PipelineSettings {
            threads: opts.threads,
            rehash: opts.rehash,
            total_of: Some(&opts.source),
        }
    }
}

/// Where the pipeline's work comes from: a function run on its own thread that sends
/// ready-made entries (folders, symlinks, and files that are references to stored content)
/// to the writer and regular files to read to the workers. Ingest's is the folder walk.
pub(crate) trait Produce: FnOnce(&Sender<Msg>, &Sender<FileJob>) + Send {}
impl<F: FnOnce(&Sender<Msg>, &Sender<FileJob>) + Send> Produce for F {}

/// The folder walk of an ingest, as a producer.
fn walk_source(opts: &IngestOptions) -> impl Produce + '_ {
    move |to_writer: &Sender<Msg>, to_workers: &Sender<FileJob>| {
        walk::walk(&opts.source, opts.allow_external_symlinks, to_writer, to_workers)
    }
}

/// Walk a folder (refusing symlinks that leave it) as part of another producer.
pub(crate) fn walk_folder(
    root: &Path,
    allow_external_symlinks: bool,
    to_writer: &Sender<Msg>,
    to_workers: &Sender<FileJob>,
) {
    walk::walk(root, allow_external_symlinks, to_writer, to_workers)
}

/// Run the producer and workers feeding `writer`; returns once all input is consumed or failed.
fn run_pipeline(
    vault: &Vault,
    settings: &PipelineSettings<'_>,
    estimate: bool,
    progress: &dyn Progress,
    writer: &mut Writer<'_>,
    produce: impl Produce,
) -> Result<()> {
    let config = vault.config();
    let ctx = worker::WorkerContext {
        chunker: Chunker::new(&config.chunking),
        policy: CompressPolicy {
            level: config.compression.zstd_level,
            min_saving_percent: config.compression.min_saving_percent,
        },
        rehash: settings.rehash,
        estimate,
        racy_after_ns: now_ns() - 2_000_000_000,
        progress,
    };
    let (to_writer, from_pipeline) = crossbeam_channel::bounded::<Msg>(16);
    let (to_workers, jobs) = crossbeam_channel::bounded(64);
    let catalogs: Vec<Catalog> = (0..settings.threads.max(1))
        .map(|_| vault.catalog())
        .collect::<Result<_>>()?;
    std::thread::scope(|s| {
        // The total is only for the progress bar: count it beside the work, not before it.
        if let Some(root) = settings.total_of {
            s.spawn(move || {
                if let Some(total) = quick_total(root) {
                    progress.set_total(total);
                }
            });
        }
        let tx = to_writer.clone();
        s.spawn(move || produce(&tx, &to_workers));
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
    let _lock = vault.lock_writer()?;
    let catalog = vault.catalog()?;
    let _lease = super::shared_gc::begin_write(vault, &catalog, &format!("ingest {}", opts.name))?;
    let dataset_id = begin(vault, &catalog, &opts.name, &opts.source.to_string_lossy())?;
    let result = store_pending(
        vault,
        &catalog,
        dataset_id,
        &PipelineSettings::of(opts),
        progress,
        walk_source(opts),
    )
    .and_then(|(totals, stored)| {
        let sealed = seal(
            vault,
            &catalog,
            dataset_id,
            &opts.name,
            &totals.sealed(stored),
            |_| Ok(()),
            |_| Ok(()),
        )?;
        Ok((sealed, totals, stored))
    });
    progress.finish();
    match result {
        Ok(((root, already_present), totals, stored_bytes)) => Ok(IngestReport {
            dataset: opts.name.to_string(),
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

/// Recover what dead processes left, then start a pending dataset row.
pub(crate) fn begin(vault: &Vault, catalog: &Catalog, name: &DatasetName, source: &str) -> Result<i64> {
    vault.clear_dead_tmp()?;
    super::recover::index_orphan_packs(vault, catalog)?;
    catalog.clear_dead_pending(crate::process::alive)?;
    catalog.begin_dataset(name, source)
}

/// Run the pipeline over what `produce` sends, recording every entry under the pending
/// dataset `dataset_id`. Returns the writer's totals and the pack bytes published.
pub(crate) fn store_pending(
    vault: &Vault,
    catalog: &Catalog,
    dataset_id: i64,
    settings: &PipelineSettings<'_>,
    progress: &dyn Progress,
    produce: impl Produce,
) -> Result<(writer::WriterTotals, u64)> {
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
        let mut written = run_pipeline(vault, settings, false, progress, &mut writer, produce);
        if written.is_ok() {
            written = writer.flush();
        } else {
            writer.abandon();
        }
        writer.close();
        (written, publishing.join().expect("publisher thread panicked"))
    });
    match (written, published) {
        // The publisher's own failure (a full disk while sealing, say) says more than the
        // writer's "the publisher stopped".
        (Err(Error::Stopped(_)), Err(e)) | (Ok(()), Err(e)) | (Err(e), _) => Err(e),
        (Ok(()), Ok(stored_bytes)) => Ok((writer.totals.clone(), stored_bytes)),
    }
}

/// Write the manifest, create the ref, and seal the catalog row, in that order. `in_seal`
/// runs inside the seal transaction, before the row turns sealed (derive records lineage
/// there). Returns the root and whether the dataset was already present.
pub(crate) fn seal(
    vault: &Vault,
    catalog: &Catalog,
    dataset_id: i64,
    name: &DatasetName,
    totals: &crate::catalog::DatasetTotals,
    before_ref: impl FnOnce(RootHash) -> Result<()>,
    in_seal: impl FnOnce(&Catalog) -> Result<()>,
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
    if let Err(e) = before_ref(root) {
        catalog.abandon_dataset(dataset_id)?;
        return Err(e);
    }
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
    match catalog.transaction(|c| {
        in_seal(c)?;
        c.seal_dataset(dataset_id, root, totals)
    }) {
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
    let result = run_pipeline(
        vault,
        &PipelineSettings::of(&opts),
        true,
        progress,
        &mut writer,
        walk_source(&opts),
    );
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
