//! The writer and the publisher: the two threads that turn chunks into durable packs and
//! catalog rows.
//!
//! The writer (the calling thread) receives chunks and finished files from the workers,
//! drops chunks that are already stored or already on their way, appends the rest to the
//! open pack, and hands each full pack, with the files that were finished by then, to the
//! publisher as a [`Batch`]. The publisher seals the pack (index, fsync), publishes it to the
//! store (rename, fsync the folder) and only then records the pack, its chunks and the
//! batch's files in one catalog transaction (for a remote store, several packs upload at
//! once and each batch is recorded once its upload is checked). Batches are published in order, so a file is
//! recorded no earlier than every pack its chunks went into: the catalog never names a chunk
//! that is not durable. fsync and SQLite commits thus overlap with chunking and hashing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

use super::{Msg, NewChunk, SkippedFile};
use crate::catalog::{Catalog, Entry, EntryKind, FileChunk, FileStamp};
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::pack::{IndexEntry, PackWriter};
use crate::store::{PendingPut, Store};

/// Finished files waiting for a batch are flushed once this many accumulate.
const MAX_WAITING_FILES: usize = 8192;

/// A finished file ready to be recorded.
pub struct FinishedFile {
    pub entry: Entry,
    pub chunks: Vec<FileChunk>,
    pub cache: Option<(Vec<u8>, FileStamp)>,
}

/// A pack (possibly none) and the files that may be recorded once it is durable.
pub struct Batch {
    pub pack: Option<PackWriter>,
    pub files: Vec<FinishedFile>,
}

/// What the writer counted.
#[derive(Debug, Default, Clone)]
pub struct WriterTotals {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub new_chunks: u64,
    pub from_cache: u64,
    /// Files recorded as references to content already stored (derive), never read.
    pub referenced: u64,
    pub skipped: Vec<SkippedFile>,
    /// Estimate mode: bytes left after dedup within the source, and of those, not in the vault.
    pub unique_bytes: u64,
    pub new_bytes: u64,
}

impl WriterTotals {
    /// The totals a sealed dataset row records, with the pack bytes this run published.
    pub fn sealed(&self, stored_bytes: u64) -> crate::catalog::DatasetTotals {
        crate::catalog::DatasetTotals {
            files: self.files,
            dirs: self.dirs,
            symlinks: self.symlinks,
            bytes: self.bytes,
            stored_bytes,
        }
    }
}

/// Chunks written to a pack whose batch is not yet recorded in the catalog.
pub type Inflight = Arc<Mutex<HashSet<ChunkId>>>;

pub struct Writer<'a> {
    store_tmp: std::path::PathBuf,
    pack_target: u64,
    catalog: &'a Catalog,
    inflight: Inflight,
    to_publisher: Option<Sender<Batch>>,
    open_pack: Option<PackWriter>,
    open_files: HashMap<u64, Vec<FileChunk>>,
    waiting: Vec<FinishedFile>,
    /// Estimate mode: every chunk seen (nothing is written).
    seen: Option<HashSet<ChunkId>>,
    pub totals: WriterTotals,
}

impl<'a> Writer<'a> {
    pub fn new(
        catalog: &'a Catalog,
        tmp: std::path::PathBuf,
        pack_target: u64,
        inflight: Inflight,
        to_publisher: Option<Sender<Batch>>,
    ) -> Self {
        let seen = to_publisher.is_none().then(HashSet::new);
        Writer {
            store_tmp: tmp,
            pack_target,
            catalog,
            inflight,
            to_publisher,
            open_pack: None,
            open_files: HashMap::new(),
            waiting: Vec::new(),
            seen,
            totals: WriterTotals::default(),
        }
    }

    /// Consume messages until every sender is gone or one reports a failure.
    pub fn run(&mut self, from: Receiver<Msg>) -> Result<()> {
        for msg in from {
            match msg {
                Msg::Failed(e) => return Err(e),
                Msg::Skipped(s) => self.totals.skipped.push(s),
                Msg::Entry(e) => {
                    match e.kind {
                        EntryKind::Dir => self.totals.dirs += 1,
                        EntryKind::Symlink => self.totals.symlinks += 1,
                        // A reference to stored content (derive): nothing to read or write.
                        EntryKind::File => {
                            self.totals.files += 1;
                            self.totals.bytes += e.size;
                            self.totals.referenced += 1;
                        }
                    }
                    self.finish(FinishedFile {
                        entry: e,
                        chunks: Vec::new(),
                        cache: None,
                    })?;
                }
                Msg::Chunk(c) => self.add_chunk(c)?,
                Msg::FileEnd {
                    token,
                    entry,
                    cache,
                    from_cache,
                } => {
                    self.totals.files += 1;
                    self.totals.bytes += entry.size;
                    self.totals.from_cache += from_cache as u64;
                    let chunks = self.open_files.remove(&token).unwrap_or_default();
                    self.finish(FinishedFile { entry, chunks, cache })?;
                }
            }
        }
        Ok(())
    }

    fn add_chunk(&mut self, c: NewChunk) -> Result<()> {
        self.open_files.entry(c.token).or_default().push(FileChunk {
            file_offset: c.file_offset,
            chunk: c.id,
        });
        if let Some(seen) = &mut self.seen {
            if seen.insert(c.id) {
                self.totals.unique_bytes += c.raw_len as u64;
                if !c.in_vault {
                    self.totals.new_bytes += c.raw_len as u64;
                }
            }
            return Ok(());
        }
        let Some(encoded) = c.encoded else {
            return Ok(());
        };
        if !self.inflight.lock().expect("inflight lock").insert(c.id) || self.catalog.has_chunk(c.id)? {
            return Ok(()); // already written by this ingest, or stored meanwhile
        }
        if self.open_pack.is_none() {
            self.open_pack = Some(PackWriter::create(&self.store_tmp)?);
        }
        let pack = self.open_pack.as_mut().expect("open pack");
        pack.add(&encoded)?;
        self.totals.new_chunks += 1;
        if pack.len() >= self.pack_target {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self, file: FinishedFile) -> Result<()> {
        if self.seen.is_some() {
            return Ok(());
        }
        self.waiting.push(file);
        if self.waiting.len() >= MAX_WAITING_FILES {
            self.flush()?;
        }
        Ok(())
    }

    /// Hand the open pack and the finished files to the publisher.
    pub fn flush(&mut self) -> Result<()> {
        let batch = Batch {
            pack: self.open_pack.take(),
            files: std::mem::take(&mut self.waiting),
        };
        if batch.pack.is_none() && batch.files.is_empty() {
            return Ok(());
        }
        let Some(tx) = &self.to_publisher else {
            return Ok(());
        };
        tx.send(batch).map_err(|e| {
            if let Some(p) = e.into_inner().pack {
                p.abandon();
            }
            Error::Stopped("the pack publisher stopped")
        })
    }

    /// No more batches: lets the publisher finish.
    pub fn close(&mut self) {
        self.to_publisher = None;
    }

    /// Discard the open pack after a failure.
    pub fn abandon(&mut self) {
        if let Some(p) = self.open_pack.take() {
            p.abandon();
        }
    }
}

/// Seals and publishes packs and records batches, in order, on its own catalog connection.
/// Up to [`Store::puts_in_flight`] packs are on their way into the store at once (uploads to
/// a remote store overlap with each other and with chunking); a batch is recorded only once
/// its pack is durable in the store, and batches are recorded in the order they came.
pub struct Publisher<'a> {
    pub store: &'a Store,
    pub catalog: Catalog,
    pub dataset_id: i64,
    pub inflight: Inflight,
    pub stored_bytes: u64,
}

/// A batch whose pack is on its way into the store.
struct Publishing {
    pack: Option<(PackId, u64, Vec<IndexEntry>)>,
    put: Option<PendingPut>,
    files: Vec<FinishedFile>,
}

impl Publisher<'_> {
    /// Publish every batch; on failure, discard the rest and return the error.
    pub fn run(&mut self, batches: Receiver<Batch>) -> Result<u64> {
        let window = self.store.puts_in_flight().max(1);
        let mut pending: VecDeque<Publishing> = VecDeque::new();
        let mut result = Ok(());
        'batches: while let Ok(batch) = batches.recv() {
            match self.start(batch) {
                Ok(p) => pending.push_back(p),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            while pending.len() >= window {
                if let Err(e) = self.record(pending.pop_front().expect("a pending batch")) {
                    result = Err(e);
                    break 'batches;
                }
            }
        }
        while result.is_ok() {
            let Some(p) = pending.pop_front() else { break };
            result = self.record(p);
        }
        if let Err(e) = result {
            // Let started uploads end (a finished one is an orphan the next ingest reuses).
            for p in pending {
                if let Some(put) = p.put {
                    let _ = put.wait();
                }
            }
            for rest in batches.try_iter() {
                if let Some(p) = rest.pack {
                    p.abandon();
                }
            }
            return Err(e);
        }
        Ok(self.stored_bytes)
    }

    /// Seal the batch's pack and start putting it into the store.
    fn start(&mut self, batch: Batch) -> Result<Publishing> {
        let (pack, put) = match batch.pack {
            Some(p) if !p.is_empty() => {
                let s = p.seal()?;
                let put = self.store.begin_put_pack(&s);
                (Some((s.id, s.size, s.entries)), Some(put))
            }
            Some(p) => {
                p.abandon();
                (None, None)
            }
            None => (None, None),
        };
        Ok(Publishing {
            pack,
            put,
            files: batch.files,
        })
    }

    /// Wait until the batch's pack is durable, then record the pack and the files.
    fn record(&mut self, p: Publishing) -> Result<()> {
        if let Some(put) = p.put {
            put.wait()?;
        }
        crate::crashpoint::hit("before-batch-commit");
        self.catalog.transaction(|c| {
            if let Some((id, size, entries)) = &p.pack {
                c.insert_pack(*id, *size, entries)?;
            }
            for mut f in p.files {
                if let Some(hash) = f.entry.content {
                    f.entry.content_id = Some(c.insert_content(hash, f.entry.size, &f.chunks)?);
                    if let Some((path, stamp)) = &f.cache {
                        c.remember_hash(path, stamp, hash)?;
                    }
                }
                c.insert_entry(self.dataset_id, &f.entry)?;
            }
            Ok(())
        })?;
        if let Some((_, size, entries)) = p.pack {
            let mut inflight = self.inflight.lock().expect("inflight lock");
            for e in &entries {
                inflight.remove(&e.chunk);
            }
            self.stored_bytes += size;
        }
        Ok(())
    }
}
