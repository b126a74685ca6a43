//! Where a pack's bytes go while it is written: staging buffers handed to a background thread
//! that hashes them and writes them to the pack file, with `O_DIRECT` where the filesystem
//! allows it.
//!
//! Why: ingest is CPU-bound on small machines, and a buffered `write` of every pack byte costs
//! a kernel copy into the page cache plus the page cache's own bookkeeping and writeback: about
//! a fifth of ingest's CPU in `bench/ingest.sh`. Direct I/O from a few reused, aligned buffers
//! skips both, and the thread that fills the pack never waits on the disk or on hashing.
//! Filesystems without direct I/O (tmpfs on older kernels, some FUSE filesystems) fall back to
//! ordinary writes on the same background thread.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// Direct I/O alignment for buffer addresses, file offsets and lengths.
const BLOCK: usize = 4096;
/// Bytes staged before a buffer is handed to the writing thread.
const STAGE_LEN: usize = 1 << 20;
/// Buffers queued for the writing thread beyond the one it is writing.
const QUEUED: usize = 2;
/// Idle staging buffers kept for the next pack (reusing them avoids first-touch page faults).
const POOL_MAX: usize = 4;

static POOL: Mutex<Vec<StageBuf>> = Mutex::new(Vec::new());

/// A `STAGE_LEN`-byte buffer mapped straight from the kernel: page-aligned, as direct I/O
/// requires, and outside malloc's arenas (aligned megabyte allocations fragment them, which
/// showed up as +25 MB of peak RSS).
struct StageBuf(NonNull<u8>);

// SAFETY: a StageBuf owns its mapping exclusively; moving it between threads is fine.
unsafe impl Send for StageBuf {}

impl StageBuf {
    /// A buffer from the pool, or a new one.
    fn take() -> StageBuf {
        if let Some(buf) = POOL.lock().expect("stage pool").pop() {
            return buf;
        }
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STAGE_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            std::alloc::handle_alloc_error(std::alloc::Layout::from_size_align(STAGE_LEN, BLOCK).expect("layout"));
        }
        StageBuf(NonNull::new(ptr.cast()).expect("mmap returned null"))
    }

    /// Return a buffer to the pool (or unmap it when the pool is full).
    fn give_back(self) {
        let mut pool = POOL.lock().expect("stage pool");
        if pool.len() < POOL_MAX {
            pool.push(self);
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is STAGE_LEN bytes, owned by self, zero-filled by the kernel.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), STAGE_LEN) }
    }
}

impl Drop for StageBuf {
    fn drop(&mut self) {
        // SAFETY: mapped in `take` with this length and never unmapped elsewhere.
        unsafe { libc::munmap(self.0.as_ptr().cast(), STAGE_LEN) };
    }
}

/// What the writing thread reports when the pack is complete.
pub(super) struct SinkDone {
    pub file: File,
    pub hash: blake3::Hash,
    pub len: u64,
}

/// A pack file being written by a background thread.
pub(super) struct PackSink {
    stage: Option<StageBuf>,
    filled: usize,
    to_thread: Option<SyncSender<(StageBuf, usize)>>,
    thread: Option<JoinHandle<io::Result<SinkDone>>>,
}

impl PackSink {
    /// Start writing `file` (new and empty) from a background thread.
    pub fn start(file: File) -> io::Result<Self> {
        let direct = enable_direct_io(&file);
        let (tx, rx) = sync_channel::<(StageBuf, usize)>(QUEUED);
        let thread = std::thread::Builder::new()
            .name("dsvault-pack-io".into())
            .spawn(move || {
                let mut out = SinkThread {
                    file,
                    direct,
                    offset: 0,
                    hasher: blake3::Hasher::new(),
                };
                for (mut buf, len) in rx {
                    let written = out.write(&mut buf, len);
                    buf.give_back();
                    written?; // dropping `rx` makes the producer's next send fail fast
                }
                out.finish()
            })?;
        Ok(PackSink {
            stage: None,
            filled: 0,
            to_thread: Some(tx),
            thread: Some(thread),
        })
    }

    /// Append bytes (staged; written in the background).
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let stage = self.stage.get_or_insert_with(StageBuf::take);
            let n = bytes.len().min(STAGE_LEN - self.filled);
            stage.bytes()[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == STAGE_LEN {
                self.submit()?;
            }
        }
        Ok(())
    }

    /// Hand the staged buffer to the writing thread.
    fn submit(&mut self) -> io::Result<()> {
        let Some(stage) = self.stage.take() else {
            return Ok(());
        };
        let len = std::mem::take(&mut self.filled);
        let sent = self.to_thread.as_ref().map(|tx| tx.send((stage, len)));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread stopped on an error: report it.
            _ => self.join().map(|_| ()),
        }
    }

    /// Write what is staged, wait for the thread, and return the file, hash and length.
    pub fn finish(mut self) -> io::Result<SinkDone> {
        self.submit()?;
        self.join()
    }

    fn join(&mut self) -> io::Result<SinkDone> {
        self.to_thread = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the pack writing thread panicked")),
            None => Err(io::Error::other("the pack writing thread already stopped")),
        }
    }
}

impl Drop for PackSink {
    fn drop(&mut self) {
        if let Some(stage) = self.stage.take() {
            stage.give_back();
        }
        self.to_thread = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The background half: hashes and writes buffers in order.
struct SinkThread {
    file: File,
    direct: bool,
    offset: u64,
    hasher: blake3::Hasher,
}

impl SinkThread {
    fn write(&mut self, buf: &mut StageBuf, len: usize) -> io::Result<()> {
        self.hasher.update(&buf.bytes()[..len]);
        if self.direct {
            // Only the last buffer of a pack is partial; pad it to a whole block (the padding
            // is cut off again in `finish`).
            let padded = len.div_ceil(BLOCK) * BLOCK;
            buf.bytes()[len..padded].fill(0);
            match self.file.write_all_at(&buf.bytes()[..padded], self.offset) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The filesystem accepted O_DIRECT at open but not this write.
                    self.direct = false;
                    disable_direct_io(&self.file)?;
                    self.file.write_all_at(&buf.bytes()[..len], self.offset)?;
                }
                other => other?,
            }
        } else {
            self.file.write_all_at(&buf.bytes()[..len], self.offset)?;
        }
        self.offset += len as u64;
        Ok(())
    }

    fn finish(self) -> io::Result<SinkDone> {
        if self.direct {
            self.file.set_len(self.offset)?;
        }
        Ok(SinkDone {
            file: self.file,
            hash: self.hasher.finalize(),
            len: self.offset,
        })
    }
}

/// Turn on `O_DIRECT` for `file`; false when the filesystem does not support it.
fn enable_direct_io(file: &File) -> bool {
    if std::env::var_os("DSVAULT_NO_DIRECT_IO").is_some() {
        return false;
    }
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) == 0
    }
}

/// Turn `O_DIRECT` off again.
fn disable_direct_io(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: as in `enable_direct_io`.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_through_sink(pieces: &[usize]) -> (Vec<u8>, SinkDone) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let file = File::options().write(true).create_new(true).open(&path).unwrap();
        let mut sink = PackSink::start(file).unwrap();
        let mut expected = Vec::new();
        for (i, &n) in pieces.iter().enumerate() {
            let piece: Vec<u8> = (0..n).map(|j| (i * 31 + j * 7) as u8).collect();
            sink.write(&piece).unwrap();
            expected.extend_from_slice(&piece);
        }
        let done = sink.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        (expected, done)
    }

    #[test]
    fn bytes_hash_and_length_survive_staging_boundaries() {
        for pieces in [
            vec![],
            vec![16],
            vec![STAGE_LEN],
            vec![STAGE_LEN - 1, 2, 5000],
            vec![3 * STAGE_LEN + 17, 1],
        ] {
            let (expected, done) = write_through_sink(&pieces);
            assert_eq!(done.len, expected.len() as u64);
            assert_eq!(done.hash, blake3::hash(&expected));
        }
    }
}
