//! FUSE passthrough for handles backed by a local file (Linux 6.9+).
//!
//! When a view says an open handle is a local file ([`dsvault::vfs::WritableView::backing_file`]),
//! the open is answered with `FOPEN_PASSTHROUGH` and a backing id: the kernel then reads,
//! writes and maps that file itself, without a request per `read(2)`/`write(2)`.
//!
//! The kernel's rules, which this module keeps (`fs/fuse/iomode.c`): an inode is either in
//! cached mode (opens answered without passthrough, which use the FUSE page cache) or in
//! passthrough mode, never both at once; every passthrough open of one inode must name the
//! same backing id while any of them is open. An open that breaks a rule fails with EIO in
//! the caller. So this module counts, per inode, the handles it answered in each mode: a
//! handle with a backing file is opened in passthrough mode unless cached handles of the
//! same inode are open (a base file opened for reading before it was copied up), and then it
//! falls back to cached mode, with the view's `write` doing the writes. The kernel forgets a
//! handle before it sends its RELEASE, so these counts are never below the kernel's.
//!
//! A cached open that falls back drops the inode's page cache (no `FOPEN_KEEP_CACHE`): pages
//! kept from before may predate writes that went to the backing file.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use fuser::{BackingId, FileAttr, FileHandle, FopenFlags, Generation, ReplyCreate, ReplyOpen};

/// Per-inode open counts and the backing id shared by its passthrough handles.
#[derive(Default)]
struct InodeIo {
    cached: u32,
    passthrough: u32,
    backing: Option<BackingId>,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, InodeIo>,
    /// Open handle -> (inode, opened in passthrough mode).
    handles: HashMap<u64, (u64, bool)>,
}

/// Passthrough bookkeeping of a mount.
#[derive(Default)]
pub(crate) struct Passthrough {
    /// Negotiated at init: opens are counted from then on.
    negotiated: AtomicBool,
    /// Not refused since (registering a backing file needs CAP_SYS_ADMIN; without it,
    /// every open is cached).
    enabled: AtomicBool,
    /// Some handle was opened in passthrough mode: pages the FUSE page cache kept may be
    /// stale.
    used: AtomicBool,
    state: Mutex<State>,
}

/// A reply to OPEN or CREATE: both can carry a backing id.
pub(crate) trait OpenReply {
    fn open_backing(&self, file: &File) -> io::Result<BackingId>;
    fn passthrough(self, fh: u64, id: &BackingId);
    fn cached(self, fh: u64, flags: FopenFlags);
}

impl OpenReply for ReplyOpen {
    fn open_backing(&self, file: &File) -> io::Result<BackingId> {
        ReplyOpen::open_backing(self, file)
    }
    fn passthrough(self, fh: u64, id: &BackingId) {
        self.opened_passthrough(FileHandle(fh), FopenFlags::empty(), id)
    }
    fn cached(self, fh: u64, flags: FopenFlags) {
        self.opened(FileHandle(fh), flags)
    }
}

/// A CREATE reply with the new entry's attributes.
pub(crate) struct Created {
    pub reply: ReplyCreate,
    pub ttl: Duration,
    pub attr: FileAttr,
}

impl OpenReply for Created {
    fn open_backing(&self, file: &File) -> io::Result<BackingId> {
        self.reply.open_backing(file)
    }
    fn passthrough(self, fh: u64, id: &BackingId) {
        self.reply.created_passthrough(
            &self.ttl,
            &self.attr,
            Generation(0),
            FileHandle(fh),
            FopenFlags::empty(),
            id,
        )
    }
    fn cached(self, fh: u64, flags: FopenFlags) {
        self.reply
            .created(&self.ttl, &self.attr, Generation(0), FileHandle(fh), flags)
    }
}

impl Passthrough {
    /// The kernel agreed to passthrough (at init).
    pub fn enable(&self) {
        self.negotiated.store(true, Ordering::Relaxed);
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Whether the kernel agreed to passthrough (opens are counted).
    pub fn negotiated(&self) -> bool {
        self.negotiated.load(Ordering::Relaxed)
    }

    /// Whether new backing files may still be registered.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Answer the open of handle `fh` of `ino`, whose local file is `backing` (if any):
    /// passthrough when the kernel's rules allow it, else cached, keeping the inode's page
    /// cache from earlier opens only if `keep_cache`.
    pub fn reply<R: OpenReply>(&self, ino: u64, fh: u64, backing: Option<&File>, keep_cache: bool, reply: R) {
        let keep = if keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        if !self.negotiated() {
            // Every write goes through the FUSE page cache and the view: it stays right.
            return reply.cached(fh, keep);
        }
        let mut state = self.state.lock().expect("passthrough lock");
        let State { inodes, handles } = &mut *state;
        let io = inodes.entry(ino).or_default();
        let Some(file) = backing else {
            io.cached += 1;
            handles.insert(fh, (ino, false));
            return reply.cached(fh, keep);
        };
        if io.cached == 0 && io.backing.is_none() && self.enabled() {
            match reply.open_backing(file) {
                Ok(id) => io.backing = Some(id),
                Err(e) => self.refused(&e),
            }
        }
        match &io.backing {
            Some(id) if io.cached == 0 => {
                io.passthrough += 1;
                handles.insert(fh, (ino, true));
                self.used.store(true, Ordering::Relaxed);
                reply.passthrough(fh, id)
            }
            _ => {
                io.cached += 1;
                handles.insert(fh, (ino, false));
                let flags = if self.used.load(Ordering::Relaxed) {
                    FopenFlags::empty()
                } else {
                    keep
                };
                reply.cached(fh, flags)
            }
        }
    }

    /// Registering a backing file failed: give up on passthrough for the mount unless the
    /// failure is a passing shortage.
    fn refused(&self, e: &io::Error) {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => {
                tracing::debug!("FUSE passthrough: could not register a backing file: {e}")
            }
            _ => {
                tracing::info!("FUSE passthrough refused ({e}): workspace files are served through the mount");
                self.enabled.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Handle `fh` was released.
    pub fn release(&self, fh: u64) {
        let mut state = self.state.lock().expect("passthrough lock");
        let State { inodes, handles } = &mut *state;
        let Some((ino, passthrough)) = handles.remove(&fh) else {
            return;
        };
        let Some(io) = inodes.get_mut(&ino) else {
            return;
        };
        if passthrough {
            io.passthrough -= 1;
            if io.passthrough == 0 {
                // Closes the backing id; the kernel has let go of the inode's backing file.
                io.backing = None;
            }
        } else {
            io.cached -= 1;
        }
        if io.cached == 0 && io.passthrough == 0 {
            inodes.remove(&ino);
        }
    }
}
