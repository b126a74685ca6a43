//! `export` and `cat`: dataset bytes back out, every chunk checked against its hash first.
//!
//! Owns: materialising a dataset as plain files, and streaming one file. A damaged chunk
//! stops the operation with an error naming the dataset, the file and the chunk; a partial
//! file is removed, never left with wrong bytes. `export` writes only into a destination it
//! creates (or an empty folder), creates every file and folder exclusively and never opens
//! through a symlink (`O_NOFOLLOW`), so a symlink planted in the destination is refused.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::catalog::{Catalog, ChunkLocation, DatasetRow, Entry, EntryKind};
use crate::dataset::DatasetRef;
use crate::error::{Error, Result};
use crate::id::PackId;
use crate::progress::Progress;
use crate::store::Store;
use crate::vault::Vault;

/// What `export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub dataset: String,
    pub destination: PathBuf,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Stored bytes the store is asked to fetch ahead of `export` and `cat`: within a file, and
/// for `export` across the files that come next.
const FETCH_AHEAD: u64 = 16 << 20;
/// Files `export` looks ahead at most (many tiny files must not pile up in memory).
const FILES_AHEAD: usize = 1024;
/// Newly queued bytes (or files) that make `export` advise the store: files advised together
/// share GETs where they are neighbours in a pack.
const ADVISE_BATCH: u64 = 4 << 20;
const ADVISE_BATCH_FILES: usize = 64;

/// Where each chunk of a file is stored, in file order (none for an empty file).
fn file_locations(catalog: &Catalog, dataset: &DatasetRow, entry: &Entry) -> Result<Vec<ChunkLocation>> {
    let Some(content_id) = entry.content_id else {
        return Ok(Vec::new());
    };
    catalog
        .content_chunks(content_id)?
        .iter()
        .map(|c| catalog.chunk_location(c.chunk))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| damaged(dataset, entry, e))
}

fn damaged(dataset: &DatasetRow, entry: &Entry, e: Error) -> Error {
    let path = String::from_utf8_lossy(&entry.path()).into_owned();
    Error::Damaged(format!(
        "{}:{path}: {e}; the file cannot be read until the pack is repaired (`dsvault verify --read-data` lists all damage)",
        dataset.name
    ))
}

/// How many leading chunks of `locations` the store is asked for ahead of a reader: those
/// within `FETCH_AHEAD` stored bytes (at least one), and their stored bytes.
fn window(locations: &[ChunkLocation]) -> (usize, u64) {
    let mut bytes = 0u64;
    for (i, l) in locations.iter().enumerate() {
        if i > 0 && bytes + l.entry.stored_len as u64 > FETCH_AHEAD {
            return (i, bytes);
        }
        bytes += l.entry.stored_len as u64;
    }
    (locations.len(), bytes)
}

/// Stream a file's verified bytes to `out`; returns bytes written.
pub fn write_content(
    store: &Store,
    catalog: &Catalog,
    dataset: &DatasetRow,
    entry: &Entry,
    out: &mut dyn Write,
) -> Result<u64> {
    let locations = file_locations(catalog, dataset, entry)?;
    write_located(store, dataset, entry, &locations, (0, 0), out)
}

/// [`write_content`] with the chunk locations already looked up, the first `advised.0` of
/// them (`advised.1` stored bytes) already advised to the store.
fn write_located(
    store: &Store,
    dataset: &DatasetRow,
    entry: &Entry,
    locations: &[ChunkLocation],
    advised: (usize, u64),
    out: &mut dyn Write,
) -> Result<u64> {
    let path = String::from_utf8_lossy(&entry.path()).into_owned();
    let mut written = 0u64;
    // A remote store fetches the next chunks while this one is written: neighbours in a pack
    // in one GET, several GETs at once.
    let remote = store.reads_are_requests();
    let (mut advised, mut ahead) = advised;
    for loc in locations {
        if remote && ahead < FETCH_AHEAD / 2 && advised < locations.len() {
            let mut ranges = Vec::new();
            while advised < locations.len() && ahead < FETCH_AHEAD {
                ranges.push(locations[advised].extent());
                ahead += locations[advised].entry.stored_len as u64;
                advised += 1;
            }
            store.advise_chunks(&ranges);
        }
        ahead = ahead.saturating_sub(loc.entry.stored_len as u64);
        let bytes = store
            .read_chunk(loc.pack, &loc.entry)
            .map_err(|e| damaged(dataset, entry, e))?;
        out.write_all(&bytes)
            .map_err(|e| Error::io("writing", Path::new(&path), e))?;
        written += bytes.len() as u64;
    }
    if written != entry.size {
        return Err(Error::Damaged(format!(
            "{}:{path}: chunks hold {written} bytes, the file is {} bytes",
            dataset.name, entry.size
        )));
    }
    Ok(written)
}

/// A file `export` has listed but not written yet: where to, its chunks, and its leading
/// chunks advised to the store ([`window`]: the rest is advised as it is written).
struct Queued {
    entry: Entry,
    target: PathBuf,
    locations: Vec<ChunkLocation>,
    window: (usize, u64),
}

/// Files `export` has listed but not written yet, so the store can fetch the next files
/// while this one is written: a remote store in coalesced GETs (a dataset of small files
/// otherwise costs a round trip per file), a local one into the page cache.
#[derive(Default)]
struct LookAhead {
    queue: std::collections::VecDeque<Queued>,
    /// Stored bytes of the queued files' windows.
    queued_bytes: u64,
    /// Window chunks of queued files not yet advised to the store (those of the last
    /// `unadvised_files` files), and their bytes.
    unadvised: Vec<(PackId, u64, u64)>,
    unadvised_files: usize,
    unadvised_bytes: u64,
}

impl LookAhead {
    fn push(&mut self, store: &Store, entry: Entry, target: PathBuf, locations: Vec<ChunkLocation>) {
        let window = window(&locations);
        self.unadvised
            .extend(locations[..window.0].iter().map(ChunkLocation::extent));
        self.unadvised_files += 1;
        self.unadvised_bytes += window.1;
        self.queued_bytes += window.1;
        self.queue.push_back(Queued {
            entry,
            target,
            locations,
            window,
        });
        if self.unadvised_bytes >= ADVISE_BATCH || self.unadvised_files >= ADVISE_BATCH_FILES {
            self.advise(store);
        }
    }

    fn advise(&mut self, store: &Store) {
        if !self.unadvised.is_empty() {
            store.advise_chunks(&self.unadvised);
        }
        self.unadvised.clear();
        self.unadvised_files = 0;
        self.unadvised_bytes = 0;
    }

    fn full(&self) -> bool {
        self.queued_bytes > FETCH_AHEAD || self.queue.len() > FILES_AHEAD
    }

    /// The oldest queued file, its window advised (the unadvised files are the newest, so
    /// the oldest is among them only when all are).
    fn pop(&mut self, store: &Store) -> Option<Queued> {
        if self.unadvised_files == self.queue.len() {
            self.advise(store);
        }
        let next = self.queue.pop_front()?;
        self.queued_bytes -= next.window.1;
        Some(next)
    }
}

/// `cat`: one file of a dataset to `out`.
pub fn cat(vault: &Vault, dataset: &DatasetRef, path: &str, out: &mut dyn Write) -> Result<u64> {
    let catalog = vault.catalog()?;
    let d = catalog.resolve(dataset)?;
    let rel = path.trim_matches('/');
    let entry = catalog
        .entry_at(d.id, rel.as_bytes())?
        .ok_or_else(|| Error::PathNotFound {
            dataset: d.name.to_string(),
            path: path.to_string(),
        })?;
    if entry.kind != EntryKind::File {
        return Err(Error::NotAFile {
            dataset: d.name.to_string(),
            path: path.to_string(),
        });
    }
    write_content(vault.store(), &catalog, &d, &entry, out)
}

/// A name component from the catalog must be a plain name: a manifest from elsewhere could
/// carry `..` or a `/` and must not steer writes outside the destination.
fn safe_component(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

fn safe_relative(entry: &Entry) -> bool {
    safe_component(&entry.name) && (entry.parent.is_empty() || entry.parent.split(|&b| b == b'/').all(safe_component))
}

fn prepare_destination(dest: &Path) -> Result<()> {
    let refuse = |reason: &str| {
        Err(Error::Destination {
            path: dest.to_path_buf(),
            reason: reason.to_string(),
        })
    };
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir(dest).map_err(Error::io_at("creating", dest))
        }
        Err(e) => Err(Error::io("checking", dest, e)),
        Ok(m) if m.file_type().is_symlink() => refuse("is a symlink; export into a real, empty folder"),
        Ok(m) if !m.is_dir() => refuse("exists and is not a folder"),
        Ok(_) => {
            if fs::read_dir(dest)
                .map_err(Error::io_at("listing", dest))?
                .next()
                .is_some()
            {
                return refuse("is not empty; export into a new or empty folder");
            }
            Ok(())
        }
    }
}

fn mtime(ns: i64) -> std::time::SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
    }
}

/// `export`: materialise a dataset under `dest`.
pub fn export(vault: &Vault, dataset: &DatasetRef, dest: &Path, progress: &dyn Progress) -> Result<ExportReport> {
    let catalog = vault.catalog()?;
    let d = catalog.resolve(dataset)?;
    prepare_destination(dest)?;
    progress.set_total(d.bytes);
    let mut report = ExportReport {
        dataset: d.name.to_string(),
        destination: dest.to_path_buf(),
        files: 0,
        dirs: 0,
        symlinks: 0,
        bytes: 0,
    };
    let mut dirs: Vec<(PathBuf, u32, i64)> = Vec::new();
    // Folders and symlinks are made as they are listed, files a little later (a folder is
    // always listed before what it holds, so it exists by the time its files are written).
    let store = vault.store();
    let mut ahead = LookAhead::default();
    let mut write_next = |ahead: &mut LookAhead| -> Result<()> {
        let Some(next) = ahead.pop(store) else {
            return Ok(());
        };
        let bytes = export_file(store, &d, &next)?;
        report.files += 1;
        report.bytes += bytes;
        progress.advance(bytes);
        Ok(())
    };
    catalog.for_each_entry(d.id, |e| {
        if !safe_relative(&e) {
            return Err(Error::Damaged(format!(
                "{}: entry {:?} is not a safe relative path; refusing to export it",
                d.name,
                String::from_utf8_lossy(&e.path())
            )));
        }
        let target = dest.join(std::ffi::OsStr::from_bytes(&e.path()));
        match e.kind {
            EntryKind::Dir => {
                fs::create_dir(&target).map_err(Error::io_at("creating folder", &target))?;
                dirs.push((target, e.mode, e.mtime_ns));
                report.dirs += 1;
            }
            EntryKind::Symlink => {
                let link = e.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(link), &target)
                    .map_err(Error::io_at("creating symlink", &target))?;
                report.symlinks += 1;
            }
            EntryKind::File => {
                let locations = file_locations(&catalog, &d, &e)?;
                ahead.push(store, e, target, locations);
                while ahead.full() {
                    write_next(&mut ahead)?;
                }
            }
        }
        Ok(())
    })?;
    while !ahead.queue.is_empty() {
        write_next(&mut ahead)?;
    }
    // Folder modes last (a read-only folder must be filled first), deepest first.
    for (path, mode, mtime_ns) in dirs.iter().rev() {
        fs::set_permissions(path, fs::Permissions::from_mode(*mode))
            .map_err(Error::io_at("setting permissions of", path))?;
        if let Ok(f) = File::open(path) {
            let _ = f.set_modified(mtime(*mtime_ns));
        }
    }
    progress.finish();
    Ok(report)
}

fn export_file(store: &Store, d: &DatasetRow, queued: &Queued) -> Result<u64> {
    let (e, target) = (&queued.entry, queued.target.as_path());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(target)
        .map_err(Error::io_at("creating file", target))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut file);
    let written = write_located(store, d, e, &queued.locations, queued.window, &mut out)
        .and_then(|n| out.flush().map(|_| n).map_err(Error::io_at("writing", target)));
    drop(out);
    let written = match written {
        Ok(n) => n,
        Err(err) => {
            drop(file);
            let _ = fs::remove_file(target);
            return Err(err);
        }
    };
    file.set_permissions(fs::Permissions::from_mode(e.mode))
        .map_err(Error::io_at("setting permissions of", target))?;
    file.set_modified(mtime(e.mtime_ns))
        .map_err(Error::io_at("setting the time of", target))?;
    Ok(written)
}
