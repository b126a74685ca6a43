//! `derive`: seal a workspace's merged view as the derived dataset `derived/NAME@VERSION`.
//!
//! The merged view is the workspace's bases in order (a later base overrides an earlier one
//! on the same path), then its upper layer (which overrides every base), minus whiteouts (see
//! [`crate::workspace`]). It goes through the ingest pipeline
//! ([`super::ingest`]): the upper layer is walked, read, chunked and deduplicated exactly like
//! an ingest source, and every entry that comes untouched from a base is sent to the writer
//! as a reference to its stored content: it is never read and costs no new chunk. The seal
//! is ingest's (manifest, create-only ref, seal transaction), with the lineage (bases by
//! name and root, command, workspace, user, host, times) written in the same transaction.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crossbeam_channel::Sender;
use serde::Serialize;

use super::ingest::writer::WriterTotals;
use super::ingest::{self, FileJob, Msg, PipelineSettings, SkippedFile};
use crate::catalog::{entries::split_path, Catalog, DatasetRow, Entry, LineageInput, LineageRecord};
use crate::dataset::{DatasetName, Kind};
use crate::error::{Error, Result};
use crate::id::RootHash;
use crate::progress::Progress;
use crate::vault::Vault;
use crate::workspace::{replaced_by_later_base, Workspace};

/// The producing command's run, when known (`dsvault run` records it; `derive` alone does not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunRecord {
    /// The run's row in the catalog, linked to the dataset in the seal transaction.
    pub id: Option<i64>,
    pub started_at: i64,
    pub ended_at: i64,
    pub exit_status: i32,
}

/// What to derive and how.
#[derive(Debug, Clone)]
pub struct DeriveOptions {
    pub workspace: String,
    /// Must be of kind derived.
    pub name: DatasetName,
    pub command: Option<String>,
    pub run: Option<RunRecord>,
    /// Store symlinks of the upper layer that point outside it (absolute, or `..` beyond
    /// the top) as they are, like `ingest --allow-external-symlinks`; refused otherwise.
    pub allow_external_symlinks: bool,
    /// Leave FIFOs, sockets and device nodes of the upper layer out of the dataset (listed
    /// in [`DeriveReport::skipped`]); refused with [`Error::SpecialFiles`] otherwise.
    pub skip_special: bool,
    /// Worker threads for the upper layer (default: available cores).
    pub threads: usize,
}

impl DeriveOptions {
    pub fn new(workspace: &str, name: &str, version: &str) -> Result<Self> {
        Ok(DeriveOptions {
            workspace: workspace.to_string(),
            name: DatasetName::new(Kind::Derived, name, version)?,
            command: None,
            run: None,
            allow_external_symlinks: false,
            skip_special: false,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        })
    }
}

/// What a derive did.
#[derive(Debug, Clone, Serialize)]
pub struct DeriveReport {
    pub dataset: String,
    pub root: RootHash,
    pub workspace: String,
    /// Base datasets, lowest first.
    pub inputs: Vec<String>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Logical bytes: the sum of file sizes.
    pub bytes: u64,
    /// Bytes this call added to the store (pack files written).
    pub stored_bytes: u64,
    pub new_chunks: u64,
    /// Files taken from the bases as references (never read).
    pub files_referenced: u64,
    /// Files read from the upper layer.
    pub files_from_upper: u64,
    /// What was left out (special files, with `skip_special`), by path in the workspace.
    pub skipped: Vec<SkippedFile>,
    /// The dataset already existed with this exact content; nothing was sealed.
    pub already_present: bool,
    /// The workspace has one base and the dataset's root is that base's root: nothing in
    /// the workspace changed (the CLI warns).
    pub unchanged: bool,
    pub seconds: f64,
}

/// Seal the merged view of `opts.workspace` as `opts.name`.
pub fn derive(vault: &Vault, opts: &DeriveOptions, progress: &dyn Progress) -> Result<DeriveReport> {
    let started = Instant::now();
    if opts.name.kind != Kind::Derived {
        return Err(Error::InvalidName {
            what: "dataset",
            value: opts.name.to_string(),
            reason: "derive makes derived datasets only",
        });
    }
    vault.require_writable()?;
    let ws = Workspace::open(vault, &opts.workspace)?;
    ws.require_owner()?;
    let upper = ingest::check_source(&ws.upper)?;
    let _lock = vault.lock_writer()?;
    let catalog = vault.catalog()?;
    let _lease = super::shared_gc::begin_write(vault, &catalog, &format!("derive {}", opts.name))?;
    let layers = Layers::load(&catalog, &ws, &upper)?;
    if !layers.special.is_empty() && !opts.skip_special {
        return Err(Error::SpecialFiles {
            workspace: ws.name.clone(),
            paths: layers.special.clone(),
        });
    }
    let lineage = lineage_record(&ws, opts, crate::catalog::now_secs());
    let dataset_id = ingest::begin(vault, &catalog, &opts.name, &format!("workspace:{}", ws.name))?;
    let result = seal_merged_view(vault, &catalog, dataset_id, opts, &layers, &lineage, progress);
    progress.finish();
    match result {
        Ok(((root, already_present), t, stored_bytes)) => Ok(DeriveReport {
            unchanged: matches!(ws.bases.as_slice(), [only] if only.root == Some(root)),
            dataset: opts.name.to_string(),
            root,
            workspace: ws.name.clone(),
            inputs: ws.bases.iter().map(|b| b.name.to_string()).collect(),
            files: t.files,
            dirs: t.dirs,
            symlinks: t.symlinks,
            bytes: t.bytes,
            stored_bytes,
            new_chunks: t.new_chunks,
            files_referenced: t.referenced,
            files_from_upper: t.files - t.referenced,
            skipped: t
                .skipped
                .into_iter()
                .map(|s| SkippedFile {
                    path: s.path.strip_prefix(&upper).map(Path::to_path_buf).unwrap_or(s.path),
                    reason: s.reason,
                })
                .collect(),
            already_present,
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            let _ = catalog.abandon_dataset(dataset_id);
            Err(e)
        }
    }
}

/// The pipeline over the upper layer then the base references, then the seal with lineage.
fn seal_merged_view(
    vault: &Vault,
    catalog: &Catalog,
    dataset_id: i64,
    opts: &DeriveOptions,
    layers: &Layers,
    lineage: &LineageRecord,
    progress: &dyn Progress,
) -> Result<((RootHash, bool), WriterTotals, u64)> {
    let upper = layers.upper_dir.as_path();
    let settings = PipelineSettings {
        threads: opts.threads,
        rehash: false,
        total_of: Some(upper),
    };
    let bases_catalog = vault.catalog()?;
    let allow_external_symlinks = opts.allow_external_symlinks;
    let produce = move |to_writer: &Sender<Msg>, to_workers: &Sender<FileJob>| {
        ingest::walk_folder(upper, allow_external_symlinks, to_writer, to_workers);
        if let Err(e) = layers.send_references(&bases_catalog, to_writer) {
            let _ = to_writer.send(Msg::Failed(e));
        }
    };
    let (totals, stored) = ingest::store_pending(vault, catalog, dataset_id, &settings, progress, produce)?;
    crate::crashpoint::hit("derive-before-seal");
    let name = &opts.name;
    // The lineage goes to the store before the ref, so `sync` on another machine finds it.
    let publish_lineage = |root| {
        let bytes = lineage.to_json();
        vault
            .store()
            .put_lineage(name.kind.as_str(), &name.name, &name.version, root, &bytes)
    };
    let sealed = ingest::seal(
        vault,
        catalog,
        dataset_id,
        name,
        &totals.sealed(stored),
        publish_lineage,
        |c| {
            c.insert_lineage(dataset_id, lineage)?;
            match opts.run.and_then(|r| r.id) {
                Some(run) => c.set_run_derived(run, &name.to_string()),
                None => Ok(()),
            }
        },
    )?;
    Ok((sealed, totals, stored))
}

fn lineage_record(ws: &Workspace, opts: &DeriveOptions, derived_at: i64) -> LineageRecord {
    LineageRecord {
        workspace: ws.name.clone(),
        command: opts.command.clone(),
        user: user_name(),
        host: hostname(),
        started_at: opts.run.map(|r| r.started_at),
        ended_at: opts.run.map(|r| r.ended_at),
        exit_status: opts.run.map(|r| r.exit_status),
        derived_at,
        inputs: ws
            .bases
            .iter()
            .map(|b| LineageInput {
                name: b.name.clone(),
                root: b.root.unwrap_or(RootHash([0; 32])),
            })
            .collect(),
    }
}

/// The user running derive, by its user id (not `$USER`, which anyone can set): in a
/// shared vault, lineage says which member made the dataset.
fn user_name() -> Option<String> {
    Some(crate::sharing::caller().name)
}

/// This machine's host name, if the system gives one.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    (rc == 0 && len > 0).then(|| String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// What decides which base entries are visible in the merged view.
struct Layers {
    /// The upper layer's folder (canonical path).
    upper_dir: PathBuf,
    bases: Vec<DatasetRow>,
    /// Every path in the upper layer, with whether it is a folder.
    upper: HashMap<Vec<u8>, bool>,
    /// FIFOs, sockets and device nodes of the upper layer (path, what it is).
    special: Vec<(PathBuf, &'static str)>,
    whiteouts: BTreeSet<Vec<u8>>,
}

impl Layers {
    fn load(catalog: &Catalog, ws: &Workspace, upper: &Path) -> Result<Layers> {
        let (paths, special) = upper_paths(upper)?;
        Ok(Layers {
            upper_dir: upper.to_path_buf(),
            bases: ws.bases.clone(),
            upper: paths,
            special,
            whiteouts: ws.whiteouts(catalog)?.into_iter().collect(),
        })
    }

    /// Send every visible base entry to the writer as it is (files as references).
    fn send_references(&self, catalog: &Catalog, to_writer: &Sender<Msg>) -> Result<()> {
        for (i, base) in self.bases.iter().enumerate() {
            let mut parent_memo: Option<(Vec<u8>, bool)> = None;
            catalog.for_each_entry(base.id, |e| {
                let hidden = match &parent_memo {
                    Some((p, hidden)) if *p == e.parent => *hidden,
                    _ => {
                        let hidden = self.parent_hidden(catalog, i, &e.parent)?;
                        parent_memo = Some((e.parent.clone(), hidden));
                        hidden
                    }
                };
                if hidden || self.entry_hidden(catalog, i, &e)? {
                    return Ok(());
                }
                to_writer
                    .send(Msg::Entry(reference(e)))
                    .map_err(|_| Error::Stopped("the writer stopped"))
            })?;
        }
        Ok(())
    }

    /// Is the entry itself replaced (upper layer or a later base) or deleted (whiteout)?
    fn entry_hidden(&self, catalog: &Catalog, base: usize, e: &Entry) -> Result<bool> {
        let path = e.path();
        if self.upper.contains_key(&path) || self.whiteouts.contains(&path) {
            return Ok(true);
        }
        for later in &self.bases[base + 1..] {
            if catalog.entry_at(later.id, &path)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Is everything under `parent` hidden: the folder or one of its ancestors is deleted,
    /// or replaced by a non-folder in the upper layer or a later base?
    fn parent_hidden(&self, catalog: &Catalog, base: usize, parent: &[u8]) -> Result<bool> {
        let mut at = parent;
        while !at.is_empty() {
            if self.whiteouts.contains(at) || self.upper.get(at) == Some(&false) {
                return Ok(true);
            }
            at = split_path(at).0;
        }
        let later = self.bases[base + 1..].iter().map(|b| b.id);
        replaced_by_later_base(later, parent, |id, path| catalog.entry_at(id, path))
    }
}

/// A base entry as a new entry of the derived dataset (same content, never read).
fn reference(mut e: Entry) -> Entry {
    e.id = 0;
    e
}

/// Every path under the upper layer (metadata only), with whether it is a folder, and the
/// special files among them.
type UpperPaths = (HashMap<Vec<u8>, bool>, Vec<(PathBuf, &'static str)>);

fn upper_paths(upper: &Path) -> Result<UpperPaths> {
    let mut paths = HashMap::new();
    let mut special = Vec::new();
    for item in walkdir::WalkDir::new(upper).follow_links(false).min_depth(1) {
        let item = item.map_err(|e| Error::Unreadable {
            path: e.path().unwrap_or(upper).to_path_buf(),
            source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("walk")),
        })?;
        let rel = item
            .path()
            .strip_prefix(upper)
            .expect("walk stays under the upper layer");
        let ft = item.file_type();
        if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
            let meta = item.metadata().map_err(|e| Error::Unreadable {
                path: item.path().to_path_buf(),
                source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("stat")),
            })?;
            special.push((rel.to_path_buf(), ingest::special_kind(&meta)));
        }
        paths.insert(rel.as_os_str().as_bytes().to_vec(), ft.is_dir());
    }
    special.sort();
    Ok((paths, special))
}
