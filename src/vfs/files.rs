//! Open files and the read path: which chunks cover a byte range, loading and verifying them
//! (through the shared [`ChunkCache`]), and fetching ahead of sequential readers.
//!
//! A chunk is read with one positional read on its pack and checked against its blake3 hash
//! before any of its bytes is served. A mismatch (or a missing pack) fails the read with
//! [`VfsError::Damaged`] and logs one error naming the dataset, the path and the chunk;
//! wrong bytes are never returned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::cache::{Ahead, ChunkBytes, ChunkCache, LoadResult};
use super::layouts::Layout;
use super::nodes::Node;
use super::{DatasetInfo, ReadBytes, Shared, VfsError, VfsResult};
use crate::catalog::{ChunkLocation, Entry, EntryKind, FileLayout};
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::pack::{self, Codec};
use crate::store::Store;

/// One open file.
pub(crate) struct OpenFile {
    dataset: Arc<DatasetInfo>,
    layout: Arc<FileLayout>,
    /// Where the last read ended and how far ahead chunks were requested (chunk index).
    seq: Mutex<SeqState>,
}

#[derive(Default)]
struct SeqState {
    next_offset: u64,
    fetched_upto: usize,
    /// File offset up to which the packs were asked to be read into the page cache.
    advised_upto: u64,
}

/// How far ahead of a sequential reader the kernel is asked to read packs into its page
/// cache (asynchronously: this keeps the disk busy while chunks are decoded and verified).
const ADVISE_BYTES: u64 = 32 << 20;

/// Open file handles, and files read without a handle (by inode).
#[derive(Default)]
pub(crate) struct FileTable {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<OpenFile>>>,
    by_ino: Mutex<HashMap<u64, Arc<OpenFile>>>,
}

/// Files kept by inode for handle-less reads (there is no release to say when to forget
/// one, so an arbitrary half goes when this many are kept). Readers of one file share its
/// sequential-read state here, as they share its kernel page cache.
const BY_INO_MAX: usize = 1024;

impl FileTable {
    fn insert(&self, file: OpenFile) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.lock().expect("file table lock").insert(fh, Arc::new(file));
        fh
    }

    fn get(&self, fh: u64) -> VfsResult<Arc<OpenFile>> {
        self.open
            .lock()
            .expect("file table lock")
            .get(&fh)
            .cloned()
            .ok_or(VfsError::BadHandle)
    }

    /// The file of inode `ino` for handle-less reads, set up on its first read.
    fn by_ino(&self, shared: &Shared, ino: u64) -> VfsResult<Arc<OpenFile>> {
        if let Some(f) = self.by_ino.lock().expect("file table lock").get(&ino) {
            return Ok(f.clone());
        }
        let file = Arc::new(open_file(shared, ino)?);
        let mut map = self.by_ino.lock().expect("file table lock");
        if map.len() >= BY_INO_MAX {
            // Evict an arbitrary half; a file still being read is set up again on its next
            // read (two indexed queries), which only restarts its readahead.
            let victims: Vec<u64> = map.keys().take(BY_INO_MAX / 2).copied().collect();
            for v in victims {
                map.remove(&v);
            }
        }
        Ok(map.entry(ino).or_insert(file).clone())
    }

    pub fn close(&self, fh: u64) {
        self.open.lock().expect("file table lock").remove(&fh);
    }
}

/// Open inode `ino` for reading.
pub(crate) fn open(shared: &Shared, ino: u64) -> VfsResult<u64> {
    Ok(shared.files.insert(open_file(shared, ino)?))
}

fn open_file(shared: &Shared, ino: u64) -> VfsResult<OpenFile> {
    if let Some(Layout { dataset, file }) = shared.layouts.get(shared, ino)? {
        return Ok(OpenFile {
            dataset,
            layout: file,
            seq: Mutex::default(),
        });
    }
    // Not a file of a dataset in view: the node says what it is.
    let Node::Entry { dataset, entry } = shared.node(ino)? else {
        return Err(VfsError::IsADirectory);
    };
    entry_file(shared, dataset, entry)
}

/// Open a file entry of a dataset for reading (a workspace's untouched base file).
pub(crate) fn open_entry(shared: &Shared, dataset: Arc<DatasetInfo>, entry: Entry) -> VfsResult<u64> {
    Ok(shared.files.insert(entry_file(shared, dataset, entry)?))
}

/// Write the whole verified content of a file entry to `out`, chunk by chunk (copy-up).
pub(crate) fn copy_entry(
    shared: &Shared,
    dataset: Arc<DatasetInfo>,
    entry: Entry,
    out: &mut dyn std::io::Write,
) -> VfsResult<()> {
    let file = entry_file(shared, dataset, entry)?;
    for i in 0..file.layout.chunks.len() {
        let chunk = file.chunk(shared, i, u64::MAX)?;
        out.write_all(&chunk).map_err(VfsError::Io)?;
    }
    Ok(())
}

fn entry_file(shared: &Shared, dataset: Arc<DatasetInfo>, entry: Entry) -> VfsResult<OpenFile> {
    match entry.kind {
        EntryKind::File => {}
        EntryKind::Dir => return Err(VfsError::IsADirectory),
        EntryKind::Symlink => return Err(VfsError::NotFound),
    }
    let chunks = match entry.content_id {
        Some(id) => shared.pool.with(|c| c.content_layout(id))?,
        None => Vec::new(),
    };
    Ok(OpenFile {
        layout: Arc::new(FileLayout {
            entry_id: entry.id,
            dataset_id: dataset.id,
            path: entry.path(),
            size: entry.size,
            chunks,
        }),
        dataset,
        seq: Mutex::default(),
    })
}

/// Up to `size` bytes at `offset` of file `ino`, read without an open handle (the kernel
/// opens files itself when the mount answers opens with ENOSYS).
pub(crate) fn read_ino(
    shared: &Shared,
    prefetch: &Prefetcher,
    ino: u64,
    offset: u64,
    size: u32,
) -> VfsResult<ReadBytes> {
    let file = shared.files.by_ino(shared, ino)?;
    read_file(shared, prefetch, &file, offset, size)
}

/// Up to `size` bytes at `offset` of open file `fh`.
pub(crate) fn read(shared: &Shared, prefetch: &Prefetcher, fh: u64, offset: u64, size: u32) -> VfsResult<ReadBytes> {
    read_file(shared, prefetch, &shared.files.get(fh)?, offset, size)
}

fn read_file(
    shared: &Shared,
    prefetch: &Prefetcher,
    file: &Arc<OpenFile>,
    offset: u64,
    size: u32,
) -> VfsResult<ReadBytes> {
    let end = offset.saturating_add(size as u64).min(file.layout.size);
    if offset >= end {
        return Ok(ReadBytes::Owned(Vec::new()));
    }
    let first = file.chunk_index(offset);
    let last = file.chunk_index(end - 1);
    file.read_ahead(shared, prefetch, offset, end, last);
    if shared.vault.store().reads_are_requests() {
        for i in first..=last {
            prefetch.follow_pack(shared, file, i);
        }
    }
    if first == last {
        // A file of one chunk read whole: nobody needs the chunk again (the kernel keeps
        // the file's pages), so it does not go into the chunk cache.
        let whole_file = file.layout.chunks.len() == 1 && offset == 0 && end == file.layout.size;
        let chunk = match whole_file {
            true => file.chunk_once(shared, first)?,
            false => file.chunk(shared, first, end - offset)?,
        };
        let start = (offset - file.layout.chunks[first].file_offset) as usize;
        return file.slice(chunk, first, start, start + (end - offset) as usize);
    }
    let mut out = Vec::with_capacity((end - offset) as usize);
    for i in first..=last {
        let base = file.layout.chunks[i].file_offset;
        let served = end.min(file.chunk_end(i)).saturating_sub(offset.max(base));
        let chunk = file.chunk(shared, i, served)?;
        let from = offset.max(base) - base;
        let to = end.min(base + chunk.len() as u64) - base;
        if from >= to {
            return Err(file.short_chunk(i));
        }
        out.extend_from_slice(&chunk[from as usize..to as usize]);
    }
    if out.len() as u64 != end - offset {
        return Err(file.short_chunk(last));
    }
    Ok(ReadBytes::Owned(out))
}

impl OpenFile {
    /// Index of the chunk holding byte `offset` (which must be below the size).
    fn chunk_index(&self, offset: u64) -> usize {
        self.layout
            .chunks
            .partition_point(|c| c.file_offset <= offset)
            .saturating_sub(1)
    }

    fn slice(&self, chunk: ChunkBytes, i: usize, start: usize, end: usize) -> VfsResult<ReadBytes> {
        if end > chunk.len() {
            return Err(self.short_chunk(i));
        }
        Ok(ReadBytes::Slice { chunk, start, end })
    }

    /// The catalog's chunk list does not cover the file: damage in the catalog.
    fn short_chunk(&self, i: usize) -> VfsError {
        let chunk = self.layout.chunks.get(i).map(|c| c.location.entry.chunk);
        let e = Error::Damaged(format!(
            "{}:{}: the chunk list does not cover the file's {} bytes",
            self.dataset.name,
            String::from_utf8_lossy(&self.layout.path),
            self.layout.size
        ));
        self.log_damage(chunk, &e);
        VfsError::from(e)
    }

    /// Log why a read fails: damaged data (a hash mismatch, a missing or short pack) is a
    /// case for `verify`; a store that does not answer (remote) or a failing disk is not.
    fn log_damage(&self, chunk: Option<ChunkId>, e: &Error) {
        let (what, hint) = match e {
            Error::CorruptChunk { .. }
            | Error::CorruptPack { .. }
            | Error::MissingPack(_)
            | Error::MissingChunk(_)
            | Error::Damaged(_) => (
                "damaged data, read refused (EIO)",
                "`dsvault verify --read-data` lists all damage",
            ),
            Error::Remote { .. } => (
                "the store is unreachable or failing, read refused (EIO)",
                "the data is not known to be damaged; the next read asks the store again",
            ),
            _ => (
                "reading the store failed, read refused (EIO)",
                "the data is not known to be damaged; the next read tries again",
            ),
        };
        tracing::error!(
            dataset = %self.dataset.name,
            path = %String::from_utf8_lossy(&self.layout.path),
            chunk = %chunk.map(|c| c.to_hex()).unwrap_or_default(),
            "{what}: {e}; {hint}"
        );
    }

    /// Where chunk `i` ends in the file.
    fn chunk_end(&self, i: usize) -> u64 {
        self.layout
            .chunks
            .get(i + 1)
            .map_or(self.layout.size, |c| c.file_offset)
    }

    /// Verified bytes of chunk `i`, from the cache or the store, of which this read serves
    /// `served` bytes (until all are served, the cache keeps the chunk for the reader).
    fn chunk(&self, shared: &Shared, i: usize, served: u64) -> VfsResult<ChunkBytes> {
        self.load(shared, i, |cache, id, load| cache.get_or_load(id, served, load))
    }

    /// Verified bytes of chunk `i`, not kept in the cache: its every byte is being served.
    fn chunk_once(&self, shared: &Shared, i: usize) -> VfsResult<ChunkBytes> {
        self.load(shared, i, |cache, id, load| cache.get_or_load_once(id, load))
    }

    fn load(
        &self,
        shared: &Shared,
        i: usize,
        get: impl FnOnce(&ChunkCache, ChunkId, &dyn Fn() -> Result<Vec<u8>>) -> LoadResult,
    ) -> VfsResult<ChunkBytes> {
        let Some(c) = self.layout.chunks.get(i) else {
            return Err(self.short_chunk(i));
        };
        let loc = c.location;
        let load = || load_chunk(shared.vault.store(), &loc);
        get(&shared.cache, loc.entry.chunk, &load).map_err(|e| {
            self.log_damage(Some(loc.entry.chunk), &e);
            VfsError::from(e)
        })
    }

    /// Note a read of `[offset, end)` ending in chunk `last`; when reads are sequential, ask
    /// the prefetcher for the chunks within the readahead window, as far as the cache's
    /// budget for chunks fetched ahead allows (the rest are asked for on later reads).
    fn read_ahead(self: &Arc<Self>, shared: &Shared, prefetch: &Prefetcher, offset: u64, end: u64, last: usize) {
        let window_end = end.saturating_add(shared.options.readahead_bytes);
        let (wanted, advise) = {
            let mut seq = self.seq.lock().expect("seq lock");
            // Within a readahead window of where reading stands counts as sequential: the
            // kernel's readahead requests arrive on several threads, slightly out of order,
            // and readers of one file without a handle share this state.
            let near = offset.abs_diff(seq.next_offset) <= shared.options.readahead_bytes;
            let sequential = offset == 0 || near;
            if !sequential {
                seq.next_offset = end;
                seq.fetched_upto = last + 1;
                return;
            }
            if offset == 0 {
                // Reading (again) from the start.
                *seq = SeqState::default();
            }
            seq.next_offset = seq.next_offset.max(end);
            let from = seq.fetched_upto.max(last + 1);
            let to = self.layout.chunks.partition_point(|c| c.file_offset < window_end);
            let (wanted, reached) = match prefetch.is_running() {
                true => self.reserve_ahead(shared, from, to),
                false => (Vec::new(), to),
            };
            seq.fetched_upto = seq.fetched_upto.max(reached);
            // Advise in big steps: when less than half the distance is left.
            let advise = if seq.advised_upto < end.saturating_add(ADVISE_BYTES / 2) && self.layout.size > window_end {
                let a = seq.advised_upto.max(window_end);
                let b = end.saturating_add(ADVISE_BYTES).min(self.layout.size);
                seq.advised_upto = b;
                (a < b).then_some((a, b))
            } else {
                None
            };
            (wanted, advise)
        };
        if let (Some(&a), Some(&b)) = (wanted.first(), wanted.last()) {
            if shared.vault.store().reads_are_requests() {
                // Neighbouring chunks in one GET, not one GET per chunk from the prefetch
                // threads (which then find them in the store's cache).
                self.advise_chunks(shared, a, b + 1);
            }
        }
        for i in wanted {
            prefetch.request(shared, self, i);
        }
        if let Some((a, b)) = advise {
            self.advise(shared, a, b);
        }
    }

    /// Reserve room in the chunk cache for chunks `from..to`, in order, until the budget for
    /// chunks fetched ahead is full: the chunks to fetch, and the index where reserving stopped.
    fn reserve_ahead(&self, shared: &Shared, from: usize, to: usize) -> (Vec<usize>, usize) {
        let mut reserved = Vec::new();
        for i in from..to {
            let e = &self.layout.chunks[i].location.entry;
            match shared.cache.reserve_ahead(e.chunk, e.raw_len as u64) {
                Ahead::Reserved => reserved.push(i),
                Ahead::NotNeeded => {}
                Ahead::Full => return (reserved, i),
            }
        }
        (reserved, to)
    }

    /// Ask the store to fetch ahead the stored bytes of the chunks covering `[a, b)`.
    fn advise(&self, shared: &Shared, a: u64, b: u64) {
        let first = self.chunk_index(a);
        let last = self.layout.chunks.partition_point(|c| c.file_offset < b);
        self.advise_chunks(shared, first, last);
    }

    /// Ask the store to fetch chunks `first..last` ahead of the reader.
    fn advise_chunks(&self, shared: &Shared, first: usize, last: usize) {
        let ranges: Vec<_> = self.layout.chunks[first..last]
            .iter()
            .map(|c| c.location.extent())
            .collect();
        shared.vault.store().advise_chunks(&ranges);
    }
}

/// Read one chunk from its pack and check it against its hash. Raw chunks are hashed in
/// place (no copy); compressed ones go through [`pack::decode_chunk`].
fn load_chunk(store: &Store, loc: &ChunkLocation) -> Result<Vec<u8>> {
    let e = &loc.entry;
    let stored = store.read_pack_range(loc.pack, e.offset, e.stored_len as usize)?;
    if e.codec != Codec::Raw {
        return pack::decode_chunk(loc.pack, e, &stored);
    }
    if stored.len() != e.raw_len as usize || ChunkId::of(&stored) != e.chunk {
        return Err(Error::CorruptChunk {
            chunk: e.chunk,
            pack: loc.pack,
            detail: "content does not match its blake3 hash".into(),
        });
    }
    Ok(stored)
}

/// Background threads that load chunks ahead of sequential readers into the cache, and
/// (remote stores) the readers that go through a pack file after file.
pub(crate) struct Prefetcher {
    tx: Option<Sender<(Arc<OpenFile>, usize)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    streams: Mutex<PackStreams>,
}

/// Readers going through a pack in the order of its chunks, across files (`cp -r`, `tar c`,
/// a training loader walking a folder: files are packed in the order they were ingested).
/// Each file's own read-ahead stops at its end, so on a remote store each small file would
/// cost a request of its own; a stream that has read on into a third file in a row gets the
/// pack's next chunks fetched ahead (2 MiB, doubling with every further file up to 16 MiB),
/// in a few coalesced GETs. A random reader almost never reads three files in pack order, so
/// it fetches nothing it does not read.
#[derive(Default)]
struct PackStreams {
    /// (pack, where the last chunk read ended) → the stream reading on from there.
    cursors: HashMap<(PackId, u64), Stream>,
    /// (offset, stored length) of the chunks of packs being streamed, by offset.
    layouts: HashMap<PackId, Arc<Vec<(u64, u64)>>>,
}

#[derive(Clone, Copy)]
struct Stream {
    /// Files read in a row (in pack order).
    files: u32,
    /// The file read last (its address, as an identity).
    file: usize,
    /// Pack offset up to which chunks were asked for.
    advised_upto: u64,
}

const PACK_AHEAD_MIN: u64 = 2 << 20;
const PACK_AHEAD_MAX: u64 = 16 << 20;
/// Streams and pack layouts remembered (beyond: forgotten, which only restarts read-ahead).
const STREAMS_MAX: usize = 4096;
const LAYOUTS_MAX: usize = 64;

/// Queued prefetch requests beyond which new ones are dropped (the reader loads them itself).
const PREFETCH_QUEUE: usize = 64;

impl Prefetcher {
    pub fn start(shared: &Arc<Shared>, threads: usize) -> Prefetcher {
        if threads == 0 {
            return Prefetcher {
                tx: None,
                threads: Vec::new(),
                streams: Mutex::default(),
            };
        }
        let (tx, rx) = crossbeam_channel::bounded(PREFETCH_QUEUE);
        let threads = (0..threads)
            .map(|i| {
                let (rx, weak) = (rx.clone(), Arc::downgrade(shared));
                std::thread::Builder::new()
                    .name(format!("dsvault-prefetch-{i}"))
                    .spawn(move || prefetch_loop(&rx, &weak))
                    .expect("spawning a prefetch thread")
            })
            .collect();
        Prefetcher {
            tx: Some(tx),
            threads,
            streams: Mutex::default(),
        }
    }

    /// Note that a reader of `file` reached its chunk `i`; when that continues a stream
    /// through the chunk's pack into a third file or further, fetch the pack's next chunks.
    fn follow_pack(&self, shared: &Shared, file: &Arc<OpenFile>, i: usize) {
        let loc = file.layout.chunks[i].location;
        let (pack, off) = (loc.pack, loc.entry.offset);
        let end = off + loc.entry.stored_len as u64;
        let me = Arc::as_ptr(file) as usize;
        let (from, to) = {
            let mut s = self.streams.lock().expect("streams lock");
            if s.cursors.contains_key(&(pack, end)) {
                return; // this chunk was reached before
            }
            let mut st = match s.cursors.remove(&(pack, off)) {
                Some(st) if st.file == me => st,
                Some(st) => Stream {
                    files: st.files + 1,
                    file: me,
                    ..st
                },
                None => Stream {
                    files: 1,
                    file: me,
                    advised_upto: 0,
                },
            };
            if s.cursors.len() >= STREAMS_MAX {
                s.cursors.clear();
            }
            let window = match st.files {
                0..=2 => 0,
                n => (PACK_AHEAD_MIN << (n - 3).min(8)).min(PACK_AHEAD_MAX),
            };
            let from = st.advised_upto.max(end);
            let advise = window > 0 && from < end + window / 2;
            if advise {
                st.advised_upto = end + window;
            }
            s.cursors.insert((pack, end), st);
            if !advise {
                return;
            }
            (from, end + window)
        };
        let Some(layout) = self.layout(shared, pack) else {
            return;
        };
        let next = layout.partition_point(|c| c.0 < from);
        let chunks: Vec<_> = layout[next..]
            .iter()
            .take_while(|c| c.0 < to)
            .map(|&(o, l)| (pack, o, l))
            .collect();
        shared.vault.store().advise_chunks(&chunks);
    }

    /// The chunks of a pack, from the catalog (remembered).
    fn layout(&self, shared: &Shared, pack: PackId) -> Option<Arc<Vec<(u64, u64)>>> {
        if let Some(l) = self.streams.lock().expect("streams lock").layouts.get(&pack) {
            return Some(l.clone());
        }
        let entries = shared.pool.with(|c| c.chunks_in_pack(pack)).ok()?;
        let layout: Arc<Vec<(u64, u64)>> = Arc::new(entries.iter().map(|e| (e.offset, e.stored_len as u64)).collect());
        let mut s = self.streams.lock().expect("streams lock");
        if s.layouts.len() >= LAYOUTS_MAX {
            s.layouts.clear();
        }
        s.layouts.insert(pack, layout.clone());
        Some(layout)
    }

    /// Are there prefetch threads?
    fn is_running(&self) -> bool {
        self.tx.is_some()
    }

    /// Queue the load of chunk `i` of `file`, reserved in the cache; when the queue is full
    /// the reservation is given back and the reader loads the chunk itself.
    fn request(&self, shared: &Shared, file: &Arc<OpenFile>, i: usize) {
        let queued = self.tx.as_ref().is_some_and(|tx| match tx.try_send((file.clone(), i)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        });
        if !queued {
            shared.cache.cancel_ahead(&file.layout.chunks[i].location.entry.chunk);
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn prefetch_loop(rx: &Receiver<(Arc<OpenFile>, usize)>, shared: &Weak<Shared>) {
    while let Ok((file, i)) = rx.recv() {
        let Some(shared) = shared.upgrade() else { return };
        let loc = file.layout.chunks[i].location;
        // Errors are not logged here: the reader that needs the chunk reports them.
        shared
            .cache
            .load_ahead(loc.entry.chunk, || load_chunk(shared.vault.store(), &loc));
    }
}
