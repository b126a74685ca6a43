//! Open upper-layer files and folder listings of the overlay, by handle.
//!
//! A file handle holds the upper file's descriptor: reads and writes are positional reads
//! and writes on it, so they need no path lookup and keep working after a rename or a
//! delete of the file. A folder handle holds the listing taken when it was read from the
//! start. Handles carry the overlay bit ([`crate::vfs::OVERLAY_FH`]).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::at::Root;
use super::layers::{Found, Ws};
use crate::vfs::{VfsResult, OVERLAY_FH};

/// One entry of a folder listing: name, workspace, what it is.
pub(crate) type Listed = (Vec<u8>, Arc<Ws>, Found);

/// A folder listing, sorted by name.
pub(crate) struct DirSnapshot {
    pub entries: Vec<Listed>,
}

/// The overlay's open handles.
#[derive(Default)]
pub(crate) struct Handles {
    next: AtomicU64,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Option<Arc<DirSnapshot>>>>,
}

/// Flags of the kernel's open that are passed on to the upper file. `O_APPEND` is not: the
/// kernel computes append offsets itself, and `pwrite` on an `O_APPEND` descriptor would
/// ignore the offset. `O_TRUNC` arrives as a size change, `O_CREAT`/`O_EXCL` as a create.
const PASSED_FLAGS: i32 = libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;

impl Handles {
    fn new_fh(&self) -> u64 {
        OVERLAY_FH | (self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Open upper-layer file `path` with the access mode of `flags`.
    pub fn open_file(&self, root: &Root, path: &[u8], flags: i32) -> VfsResult<u64> {
        let file = root.open_file(path, flags & (libc::O_ACCMODE | PASSED_FLAGS), 0)?;
        Ok(self.add_file(file))
    }

    /// Keep an open upper file; returns its handle.
    pub fn add_file(&self, file: File) -> u64 {
        let fh = self.new_fh();
        self.files.lock().expect("handles lock").insert(fh, Arc::new(file));
        fh
    }

    pub fn file(&self, fh: u64) -> Option<Arc<File>> {
        self.files.lock().expect("handles lock").get(&fh).cloned()
    }

    pub fn open_dir(&self) -> u64 {
        let fh = self.new_fh();
        self.dirs.lock().expect("handles lock").insert(fh, None);
        fh
    }

    pub fn dir(&self, fh: u64) -> Option<Arc<DirSnapshot>> {
        self.dirs.lock().expect("handles lock").get(&fh).cloned().flatten()
    }

    /// Store the listing of folder handle `fh` (taken again when read from the start).
    pub fn set_dir(&self, fh: u64, entries: Vec<Listed>) -> Arc<DirSnapshot> {
        let snapshot = Arc::new(DirSnapshot { entries });
        if let Some(slot) = self.dirs.lock().expect("handles lock").get_mut(&fh) {
            *slot = Some(snapshot.clone());
        }
        snapshot
    }

    /// Forget a file or folder handle.
    pub fn close(&self, fh: u64) {
        self.files.lock().expect("handles lock").remove(&fh);
        self.dirs.lock().expect("handles lock").remove(&fh);
    }
}

/// Up to `size` bytes at `offset` (fewer only at the end of the file).
pub(crate) fn read_at(f: &File, offset: u64, size: u32) -> VfsResult<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match f.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// `fallocate(2)` on an upper file.
pub(crate) fn fallocate(f: &File, offset: u64, length: u64, mode: i32) -> VfsResult<()> {
    // SAFETY: a valid open descriptor; the kernel checks the arguments.
    super::upper::check(unsafe { libc::fallocate(f.as_raw_fd(), mode, offset as libc::off_t, length as libc::off_t) })
}
