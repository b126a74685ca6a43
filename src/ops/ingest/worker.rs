//! Workers: read one file at a time, find chunk boundaries, hash, and compress new chunks.
//!
//! A file whose source stamp is in the files cache, or whose whole-file hash is already
//! stored, is never chunked. Small files are read whole (one read, hash, then chunk the
//! buffer); large files stream through a fixed buffer, hashing as they go.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;

use crossbeam_channel::Sender;

use super::walk::{stamp_of, FileJob};
use super::{Msg, NewChunk};
use crate::catalog::Catalog;
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::id::{ChunkId, ContentId};
use crate::pack::{ChunkEncoder, CompressPolicy};
use crate::progress::Progress;

/// Files up to this size are read into memory whole.
const SMALL_FILE: u64 = 4 * 1024 * 1024;

/// What every worker shares.
pub struct WorkerContext<'a> {
    pub chunker: Chunker,
    pub policy: CompressPolicy,
    pub rehash: bool,
    /// Estimate mode: nothing is compressed or stored.
    pub estimate: bool,
    /// Files modified after this (ns since the epoch) are not put in the files cache: their
    /// mtime could still change within the clock's granularity without the stamp changing.
    pub racy_after_ns: i64,
    pub progress: &'a dyn Progress,
}

pub struct Worker<'a> {
    ctx: &'a WorkerContext<'a>,
    catalog: Catalog,
    encoder: RefCell<ChunkEncoder>,
    to_writer: Sender<Msg>,
}

impl<'a> Worker<'a> {
    pub fn new(ctx: &'a WorkerContext<'a>, catalog: Catalog, to_writer: Sender<Msg>) -> Result<Self> {
        let encoder = RefCell::new(ChunkEncoder::new(ctx.policy)?);
        Ok(Worker {
            ctx,
            catalog,
            encoder,
            to_writer,
        })
    }

    /// Process jobs until the channel closes or something fails (the failure goes to the writer).
    pub fn run(self, jobs: crossbeam_channel::Receiver<FileJob>) {
        for job in jobs {
            if let Err(e) = self.process(job) {
                let _ = self.to_writer.send(Msg::Failed(e));
                return;
            }
        }
    }

    fn send(&self, msg: Msg) -> Result<()> {
        // A closed channel means the writer stopped for a reason it will report.
        self.to_writer
            .send(msg)
            .map_err(|_| Error::Stopped("the writer stopped"))
    }

    fn process(&self, mut job: FileJob) -> Result<()> {
        let cacheable = job.stamp.mtime_ns < self.ctx.racy_after_ns && job.stamp.ctime_ns < self.ctx.racy_after_ns;
        let path_key = job.abs_path.as_os_str().as_bytes();
        if !self.ctx.rehash && !self.ctx.estimate {
            if let Some(hash) = self.catalog.cached_hash(path_key, &job.stamp)? {
                if self.catalog.content(hash)?.is_some() {
                    self.ctx.progress.advance(job.stamp.size);
                    job.entry.content = Some(hash);
                    return self.send(Msg::FileEnd {
                        token: job.token,
                        entry: job.entry,
                        cache: None,
                        from_cache: true,
                    });
                }
            }
        }
        let unreadable = |e| Error::Unreadable {
            path: job.abs_path.clone(),
            source: e,
        };
        let mut file = File::open(&job.abs_path).map_err(unreadable)?;
        let before = stamp_of(&file.metadata().map_err(unreadable)?);
        if before != job.stamp {
            return Err(Error::ChangedDuringRead(job.abs_path.clone()));
        }
        let hash = if job.stamp.size <= SMALL_FILE {
            self.process_small(&job, &mut file)?
        } else {
            self.process_large(&job, &mut file)?
        };
        let after = stamp_of(&file.metadata().map_err(unreadable)?);
        if after != job.stamp {
            return Err(Error::ChangedDuringRead(job.abs_path.clone()));
        }
        job.entry.content = Some(hash);
        let cache = cacheable.then(|| (path_key.to_vec(), job.stamp));
        self.send(Msg::FileEnd {
            token: job.token,
            entry: job.entry,
            cache,
            from_cache: false,
        })
    }

    /// Read a small file whole; skip chunking when its content is already stored.
    fn process_small(&self, job: &FileJob, file: &mut File) -> Result<ContentId> {
        let mut buf = Vec::with_capacity(job.stamp.size as usize + 1);
        file.read_to_end(&mut buf).map_err(|e| Error::Unreadable {
            path: job.abs_path.clone(),
            source: e,
        })?;
        if buf.len() as u64 != job.stamp.size {
            return Err(Error::ChangedDuringRead(job.abs_path.clone()));
        }
        let hash = ContentId::of(&buf);
        if self.catalog.content(hash)?.is_some() && !self.ctx.estimate {
            self.ctx.progress.advance(buf.len() as u64);
            return Ok(hash);
        }
        let ranges: Vec<_> = self.ctx.chunker.chunk_slice(&buf).collect();
        if ranges.len() == 1 {
            // One chunk is the whole file: its chunk id is the content hash just computed.
            self.emit_hashed_chunk(job.token, 0, ChunkId(hash.0), Cow::Owned(buf))?;
            return Ok(hash);
        }
        for range in ranges {
            self.emit_chunk(job.token, range.start as u64, &buf[range])?;
        }
        Ok(hash)
    }

    /// Stream a large file through the chunker, hashing the whole file on the way.
    fn process_large(&self, job: &FileJob, file: &mut File) -> Result<ContentId> {
        let mut hasher = blake3::Hasher::new();
        let mut stream = self.ctx.chunker.stream(file);
        let mut offset = 0u64;
        while let Some(chunk) = stream.next_chunk().map_err(|e| Error::Unreadable {
            path: job.abs_path.clone(),
            source: e,
        })? {
            hasher.update(chunk);
            self.emit_chunk(job.token, offset, chunk)?;
            offset += chunk.len() as u64;
        }
        if offset != job.stamp.size {
            return Err(Error::ChangedDuringRead(job.abs_path.clone()));
        }
        Ok(hasher.finalize().into())
    }

    /// Hash one chunk and, unless it is already stored, encode it for a pack.
    fn emit_chunk(&self, token: u64, file_offset: u64, data: &[u8]) -> Result<()> {
        self.emit_hashed_chunk(token, file_offset, ChunkId::of(data), Cow::Borrowed(data))
    }

    /// [`Self::emit_chunk`] for a chunk whose id is already known.
    fn emit_hashed_chunk(&self, token: u64, file_offset: u64, id: ChunkId, data: Cow<'_, [u8]>) -> Result<()> {
        let raw_len = data.len() as u32;
        let in_vault = self.catalog.has_chunk(id)?;
        let encoded = if in_vault || self.ctx.estimate {
            None
        } else {
            Some(self.encoder.borrow_mut().encode(id, data)?)
        };
        self.ctx.progress.advance(raw_len as u64);
        self.send(Msg::Chunk(NewChunk {
            token,
            file_offset,
            id,
            raw_len,
            in_vault,
            encoded,
        }))
    }
}
