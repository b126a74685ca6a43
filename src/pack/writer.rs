//! Writing one pack: append encoded chunks to a temporary file, then seal it.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::sink::PackSink;
use super::{EncodedChunk, IndexEntry, ENTRY_LEN, FOOTER_MAGIC, HEADER_LEN, HEADER_MAGIC, PACK_VERSION};
use crate::error::{Error, Result};
use crate::id::PackId;

/// A pack being filled in the vault's `tmp/` folder.
pub struct PackWriter {
    sink: PackSink,
    path: PathBuf,
    offset: u64,
    entries: Vec<IndexEntry>,
}

/// A finished pack: fsynced in `tmp/`, named by its hash, ready for the store to publish.
#[derive(Debug)]
pub struct SealedPack {
    pub id: PackId,
    pub tmp_path: PathBuf,
    pub size: u64,
    pub entries: Vec<IndexEntry>,
}

impl PackWriter {
    /// Start a pack in `tmp_dir`, with a file name unique to this process.
    pub fn create(tmp_dir: &Path) -> Result<Self> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = tmp_dir.join(format!("{}-{n}.pack.tmp", std::process::id()));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io_at("creating pack", &path))?;
        let sink = PackSink::start(file).map_err(Error::io_at("starting to write pack", &path))?;
        let mut writer = PackWriter {
            sink,
            path,
            offset: 0,
            entries: Vec::new(),
        };
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(HEADER_MAGIC);
        header.extend_from_slice(&PACK_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        writer.write(&header)?;
        Ok(writer)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// True when no chunk has been added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append one chunk; returns where it was written.
    pub fn add(&mut self, chunk: &EncodedChunk) -> Result<IndexEntry> {
        let entry = IndexEntry {
            chunk: chunk.id,
            offset: self.offset,
            stored_len: chunk.stored.len() as u32,
            raw_len: chunk.raw_len,
            codec: chunk.codec,
        };
        self.write(&chunk.stored)?;
        self.entries.push(entry);
        Ok(entry)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.sink
            .write(bytes)
            .map_err(Error::io_at("writing pack", &self.path))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Write the index and footer, fsync, and name the pack by its hash. On failure the
    /// temporary file is removed.
    pub fn seal(self) -> Result<SealedPack> {
        let path = self.path.clone();
        self.seal_or_keep().inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })
    }

    fn seal_or_keep(mut self) -> Result<SealedPack> {
        let index_offset = self.offset;
        let mut index = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            index.extend_from_slice(e.chunk.as_bytes());
            index.extend_from_slice(&e.offset.to_le_bytes());
            index.extend_from_slice(&e.stored_len.to_le_bytes());
            index.extend_from_slice(&e.raw_len.to_le_bytes());
            index.push(e.codec as u8);
            index.extend_from_slice(&[0u8; 7]);
        }
        let mut footer = Vec::with_capacity(super::FOOTER_LEN);
        footer.extend_from_slice(&index_offset.to_le_bytes());
        footer.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        footer.extend_from_slice(&PACK_VERSION.to_le_bytes());
        footer.extend_from_slice(blake3::hash(&index).as_bytes());
        footer.extend_from_slice(FOOTER_MAGIC);
        self.write(&index)?;
        self.write(&footer)?;
        let done = self.sink.finish().map_err(Error::io_at("writing pack", &self.path))?;
        debug_assert_eq!(done.len, self.offset);
        crate::crashpoint::hit("pack-before-fsync");
        done.file.sync_all().map_err(Error::io_at("syncing pack", &self.path))?;
        // The pack is durable; any pages it has in the page cache (when direct I/O was not
        // available) are clean and rarely read soon. Drop them so ingest does not push the
        // user's data (or the source) out of memory.
        drop_from_page_cache(&done.file);
        Ok(SealedPack {
            id: PackId(*done.hash.as_bytes()),
            tmp_path: self.path,
            size: self.offset,
            entries: self.entries,
        })
    }

    /// Give up on this pack and remove its temporary file.
    pub fn abandon(self) {
        let path = self.path.clone();
        drop(self); // stops the writing thread first
        let _ = std::fs::remove_file(path);
    }
}

/// Ask the kernel to drop a file's clean pages from the page cache (advice only).
fn drop_from_page_cache(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}
