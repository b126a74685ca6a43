//! `fuser::Filesystem` over a [`WritableView`]: each callback calls the view, turns its
//! answer into a reply, and answers any [`VfsError`] with [`VfsError::errno`] (the only
//! place errors become errno values; what the protocol itself asks for, ENOSYS and ERANGE,
//! is chosen here). On a read-only mount every write-type operation answers
//! [`VfsError::ReadOnly`] without calling the view; otherwise the view decides (its defaults
//! answer [`VfsError::ReadOnly`]).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::listing::Listing;
use crate::mount::Unmounter;
use crate::passthrough::{Created, Passthrough};
use dsvault::vfs::{Attr, Caller, ListingSize, NodeKind, SetAttr, SetTime, VfsError, WritableView};

/// Who sent a request: what a view creating files gives them to.
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// Largest read (and write) request: 1 MiB.
pub(crate) const MAX_IO: u32 = 1 << 20;
/// Timeouts for immutable nodes: effectively "until evicted".
const LONG_TTL: Duration = Duration::from_secs(24 * 3600);
/// Timeouts for folders that gain entries while mounted (a new dataset appears within this).
const SHORT_TTL: Duration = Duration::from_secs(1);
/// The smallest READDIRPLUS entry: a 152-byte header and a name padded to 8 bytes. A page
/// asks the view for as many entries as the kernel's buffer could hold (the reader's
/// getdents size, up to max_pages: 128 KiB for glibc's readdir, see BLKSIZE), so a folder of
/// 1,000 files lists in two requests.
const DIRENTPLUS_MIN: usize = 160;
/// Entries asked of the view per plain READDIR (an entry takes 24 bytes plus its name).
const READDIR_PAGE: usize = 512;
/// Block size reported by `stat` (what tools size their reads by). 128 KiB, the kernel's own
/// readahead unit: `cat` allocates a fresh buffer of this size per file, and with 1 MiB the
/// page faults on that buffer cost more than the extra read calls save (small files read
/// 15% slower from the page cache, large files no faster).
const BLKSIZE: u32 = 128 << 10;

/// The filesystem: a view plus the owner reported for every node.
pub(crate) struct ViewFs<V> {
    pub view: V,
    pub uid: u32,
    pub gid: u32,
    /// A read-only mount: opens are answered with ENOSYS (the kernel then refuses writable
    /// opens itself, and stops sending OPEN and RELEASE, one round trip each per file), and
    /// every write-type request with EROFS without asking the view.
    pub read_only: bool,
    /// Handles backed by a local file, opened in FUSE passthrough mode when possible.
    pub passthrough: Passthrough,
    /// Ends the mount when a panic left shared state broken.
    pub breaker: Arc<Breaker>,
    /// Which listed entries carry attributes.
    pub listing: Listing,
    /// Which immutable folders the kernel may keep listings of.
    pub folders: FolderOpens,
}

/// Immutable folders opened so far. The kernel keeps a listing (FOPEN_CACHE_DIR) only from a
/// folder's second open on: filling that cache costs the first listing about a fifth of its
/// time, paid for nothing by walks that list each folder once (`find`, `os.walk`, a dataset
/// scan), while a folder listed twice is likely listed again. At most [`FOLDERS_REMEMBERED`]
/// are remembered (then the memory starts over: a forgotten folder is cached from its next
/// open but one), so a dataset of millions of folders costs a mount at most about 1 MiB.
#[derive(Default)]
pub(crate) struct FolderOpens {
    opened: Mutex<HashSet<u64>>,
}

const FOLDERS_REMEMBERED: usize = 1 << 16;

impl FolderOpens {
    /// Was folder `ino` opened before? (Records this open.)
    fn listed_before(&self, ino: u64) -> bool {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        if opened.contains(&ino) {
            return true;
        }
        if opened.len() >= FOLDERS_REMEMBERED {
            opened.clear();
        }
        opened.insert(ino);
        false
    }
}

/// Ends a mount from inside a request handler, when a request finds shared state an earlier
/// panic left broken; [`crate::Mount::run`] then reports the mount as failed.
#[derive(Default)]
pub(crate) struct Breaker {
    broken: AtomicBool,
    unmounter: Mutex<Option<Unmounter>>,
}

impl Breaker {
    pub fn arm(&self, unmounter: Unmounter) {
        *self.unmounter.lock().unwrap_or_else(PoisonError::into_inner) = Some(unmounter);
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Unmount (from another thread: this one is answering a request), once.
    fn trip(&self) {
        if self.broken.swap(true, Ordering::SeqCst) {
            return;
        }
        let unmounter = self.unmounter.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mut unmounter) = unmounter {
            std::thread::spawn(move || {
                if let Err(e) = unmounter.unmount() {
                    tracing::error!("could not unmount after an internal error: {e}");
                }
            });
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    (panic.downcast_ref::<&str>().copied())
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The reply to a failed view operation. Failures that are not the caller's (catalog
/// trouble, damage) are logged: the caller sees only EIO.
fn errno(e: &VfsError) -> Errno {
    if let VfsError::Failed(_) | VfsError::Damaged(_) = e {
        tracing::warn!("mount: {e}");
    }
    Errno::from_i32(e.errno())
}

/// EROFS: what every write-type request gets on a read-only mount.
fn read_only() -> Errno {
    errno(&VfsError::ReadOnly)
}

fn ttl(attr: &Attr) -> Duration {
    if attr.immutable {
        LONG_TTL
    } else {
        SHORT_TTL
    }
}

impl<V: WritableView> ViewFs<V> {
    /// Run one request's handler; a panic in it (a bug) is logged and the request answered
    /// EIO (fuser sends EIO for a reply dropped unsent), instead of ending the whole mount.
    /// A panic over a lock an earlier panic poisoned ends the mount instead: the state behind
    /// that lock may be half updated, and a mount that fails every read while `ls` works is
    /// worse than one that stops (`dsvault mount` exits non-zero; a supervisor restarts it).
    fn guarded(&self, op: &str, handle: impl FnOnce()) {
        let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(handle)) else {
            return;
        };
        let what = panic_message(panic.as_ref());
        if what.contains("PoisonError") {
            tracing::error!("internal error in {op} over state an earlier error left broken; ending the mount: {what}");
            self.breaker.trip();
        } else {
            tracing::error!("internal error in {op}, answered EIO (please report this): {what}");
        }
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.local.map_or(a.mtime, |l| l.atime),
            mtime: a.mtime,
            ctime: a.local.map_or(a.mtime, |l| l.ctime),
            crtime: a.mtime,
            kind: file_type(a.kind),
            perm: a.perm,
            // Dataset folders say 1: tells `find` not to count subfolders by link count.
            nlink: a.local.map_or(1, |l| l.nlink),
            uid: a.owner.map_or(self.uid, |o| o.0),
            gid: a.owner.map_or(self.gid, |o| o.1),
            rdev: a.local.map_or(0, |l| l.rdev),
            blksize: a.listing.map_or(BLKSIZE, folder_blksize),
            flags: 0,
        }
    }

    fn reply_entry(&self, result: Result<Attr, VfsError>, reply: ReplyEntry) {
        match result {
            Ok(a) => reply.entry_with_ttls(&ttl(&a), &ttl(&a), &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn reply_empty(result: Result<(), VfsError>, reply: ReplyEmpty) {
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The local file behind handle `fh`, when it may be opened in passthrough mode.
    fn passthrough_file(&self, fh: u64) -> Option<std::sync::Arc<std::fs::File>> {
        if self.passthrough.negotiated() {
            self.view.backing_file(fh)
        } else {
            None
        }
    }

    /// The errno for an operation no view supports: EROFS where nothing can be written,
    /// EOPNOTSUPP in writable parts.
    fn unsupported(&self, ino: u64) -> Errno {
        if !self.read_only && self.view.writable(ino) {
            errno(&VfsError::Unsupported)
        } else {
            read_only()
        }
    }
}

/// The block size of a dataset folder: a power of two from 32 KiB (glibc's smallest
/// `getdents` buffer) to [`MAX_IO`] (the kernel's largest READDIRPLUS, max_pages) that holds
/// its whole READDIRPLUS listing. glibc's `opendir` sizes its buffer by it, and the kernel
/// its request: a folder of 1,000 files lists in one request instead of two, and a small one
/// costs the kernel no 128 KiB buffer per request (a fixed 256 KiB made a walk of 6,000
/// ten-file folders 30% slower; this makes it faster than a fixed 128 KiB).
fn folder_blksize(listing: ListingSize) -> u32 {
    // Per entry at most a 152-byte header and 8 bytes of name padding, plus the name
    // (`packed_bytes` is the names and about 3 bytes each); `.` and `..` too.
    let bytes = (listing.children + 2) * DIRENTPLUS_MIN as u64 + listing.packed_bytes;
    bytes.clamp(32 << 10, u64::from(MAX_IO)).next_power_of_two() as u32
}

/// What READDIRPLUS sends for an entry listed without attributes: nodeid (`ino`) 0 and the
/// entry's type; the kernel reads nothing else of it.
fn bare_attr(kind: NodeKind) -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: file_type(kind),
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::Dir => FileType::Directory,
        NodeKind::File => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::CharDevice => FileType::CharDevice,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(at) => SetTime::At(at),
        TimeOrNow::Now => SetTime::Now,
    })
}

impl<V: WritableView> Filesystem for ViewFs<V> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        if let Err(nearest) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(nearest);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        for cap in [
            fuser::InitFlags::FUSE_PARALLEL_DIROPS,
            fuser::InitFlags::FUSE_CACHE_SYMLINKS,
            // Listings carry attributes: walking a tree and opening what it lists needs
            // no LOOKUP per entry.
            fuser::InitFlags::FUSE_DO_READDIRPLUS,
        ] {
            let _ = config.add_capabilities(cap);
        }
        // Writable mounts: the kernel reads and writes workspace files itself (see
        // passthrough.rs). Stack depth 2 lets those files sit on an overlayfs (a container's
        // disk); this mount then cannot be a layer of another overlayfs.
        // DSVAULT_NO_PASSTHROUGH=1 serves them through the mount instead (what kernels
        // before 6.9 and non-root mounts get), for tests and for working around a kernel.
        if !self.read_only
            && std::env::var_os("DSVAULT_NO_PASSTHROUGH").is_none_or(|v| v != "1")
            && config.add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            self.passthrough.enable();
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let (bare, described) = self.listing.files_listed();
        tracing::debug!("listings: {bare} files listed bare, {described} described");
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.guarded("lookup", || {
            let found = self.view.lookup(parent.0, name.as_bytes());
            if let Ok(a) = &found {
                self.listing.looked_up(a.ino, a.kind);
            }
            self.reply_entry(found, reply)
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.guarded("forget", || {
            self.view.forget(ino.0, nlookup);
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.guarded("getattr", || {
            let result = match fh {
                Some(fh) if !self.read_only => self.view.getattr_open(ino.0, fh.0),
                _ => self.view.getattr(ino.0),
            };
            match result {
                Ok(a) => reply.attr(&ttl(&a), &self.file_attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.guarded("readlink", || match self.view.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.guarded("open", || {
            if self.read_only {
                if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                    return reply.error(read_only());
                }
                // The kernel remembers this and opens files itself from now on, with its
                // default of keeping the page cache across opens (FOPEN_KEEP_CACHE).
                return reply.error(Errno::ENOSYS);
            }
            match self.view.open_with(ino.0, flags.0) {
                // Content changes only through this mount, which the kernel sees (writes go
                // through its page cache, or straight to the backing file): cached handles may
                // keep pages across opens. All names of a file (hard links) are one inode, so
                // they share one page cache.
                Ok(fh) => {
                    let backing = self.passthrough_file(fh);
                    self.passthrough.reply(ino.0, fh, backing.as_deref(), true, reply)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.guarded("read", || match self.view.read(ino.0, fh.0, offset, size.min(MAX_IO)) {
            Ok(data) => reply.data(data.as_ref()),
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.guarded("release", || {
            self.passthrough.release(fh.0);
            self.view.release(fh.0);
            reply.ok();
        });
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        self.guarded("flush", || {
            // Nothing to flush, ever: ENOSYS makes the kernel stop sending FLUSH on every close.
            reply.error(Errno::ENOSYS);
        });
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.guarded("fsync", || {
            Self::reply_empty(self.view.fsync(ino.0, fh.0, datasync), reply)
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.guarded("opendir", || match self.view.opendir(ino.0) {
            Ok(dir) => {
                let flags = if dir.immutable && self.folders.listed_before(ino.0) {
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(dir.fh), flags)
            }
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.guarded("readdir", || {
            let entries = match self.view.readdir(ino.0, fh.0, offset, READDIR_PAGE) {
                Ok(entries) => entries,
                Err(e) => return reply.error(errno(&e)),
            };
            for e in entries {
                if reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), OsStr::from_bytes(&e.name)) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        self.guarded("readdirplus", || {
            let mut page = self.listing.page();
            let max = (reply.capacity() / DIRENTPLUS_MIN).max(1);
            let entries = match self.view.readdir_plus(ino.0, fh.0, offset, max, &mut page) {
                Ok(entries) => entries,
                Err(e) => return reply.error(errno(&e)),
            };
            drop(page);
            let (mut full, mut bare, mut described) = (false, 0, 0);
            for (e, a) in entries {
                if !full {
                    if e.kind != NodeKind::Dir {
                        *(if a.is_some() { &mut described } else { &mut bare }) += 1;
                    }
                    // An entry without attributes goes out with nodeid 0 (and its inode as
                    // d_ino): the kernel lists it and builds nothing for it.
                    let (attr, ttl) = match &a {
                        Some(a) => (self.file_attr(a), ttl(a)),
                        None => (bare_attr(e.kind), Duration::ZERO),
                    };
                    full = reply.add(
                        INodeNo(e.ino),
                        e.offset,
                        OsStr::from_bytes(&e.name),
                        &ttl,
                        &attr,
                        Generation(0),
                    );
                }
                if full && a.is_some() {
                    // Not sent: give back the reference the view counted for it.
                    self.view.forget(e.ino, 1);
                }
            }
            self.listing.sent(bare, described);
            reply.ok();
        });
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.guarded("releasedir", || {
            self.view.releasedir(fh.0);
            reply.ok();
        });
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.guarded("fsyncdir", || {
            if self.read_only {
                return reply.ok();
            }
            Self::reply_empty(self.view.fsyncdir(ino.0), reply)
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.guarded("statfs", || {
            const BSIZE: u64 = 4096;
            match self.view.statfs() {
                Ok(s) => reply.statfs(
                    (s.bytes + s.free_bytes).div_ceil(BSIZE),
                    s.free_bytes / BSIZE,
                    s.free_bytes / BSIZE,
                    s.files,
                    0,
                    BSIZE as u32,
                    255,
                    BSIZE as u32,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.guarded("getxattr", || match self.view.getxattr(ino.0, name.as_bytes()) {
            Ok(value) => reply_xattr(&value, size, reply),
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.guarded("listxattr", || match self.view.listxattr(ino.0) {
            Ok(names) => {
                let mut list = Vec::new();
                for n in names {
                    list.extend_from_slice(&n);
                    list.push(0);
                }
                reply_xattr(&list, size, reply)
            }
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.guarded("access", || {
            if mask.contains(AccessFlags::W_OK) && (self.read_only || !self.view.writable(ino.0)) {
                return reply.error(read_only());
            }
            match self.view.getattr(ino.0) {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    // ---- write-type operations: EROFS on a read-only mount, else the view's answer ------

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.guarded("setattr", || {
            if self.read_only {
                return reply.error(read_only());
            }
            let changes = SetAttr {
                mode: mode.map(|m| m & 0o7777),
                uid,
                gid,
                size,
                atime: set_time(atime),
                mtime: set_time(mtime),
            };
            match self.view.setattr(ino.0, fh.map(|f| f.0), &changes) {
                Ok(a) => reply.attr(&ttl(&a), &self.file_attr(&a)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.guarded("mknod", || {
            if self.read_only {
                return reply.error(read_only());
            }
            let made = self
                .view
                .mknod(parent.0, name.as_bytes(), mode, rdev.into(), caller(req));
            self.reply_entry(made, reply)
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        self.guarded("mkdir", || {
            if self.read_only {
                return reply.error(read_only());
            }
            // The kernel has applied the umask already (no FUSE_DONT_MASK).
            let made = self.view.mkdir(parent.0, name.as_bytes(), mode & 0o7777, caller(req));
            self.reply_entry(made, reply)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.guarded("unlink", || {
            if self.read_only {
                return reply.error(read_only());
            }
            Self::reply_empty(self.view.unlink(parent.0, name.as_bytes()), reply)
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.guarded("rmdir", || {
            if self.read_only {
                return reply.error(read_only());
            }
            Self::reply_empty(self.view.rmdir(parent.0, name.as_bytes()), reply)
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, name: &OsStr, target: &Path, reply: ReplyEntry) {
        self.guarded("symlink", || {
            if self.read_only {
                return reply.error(read_only());
            }
            let made = self.view.symlink(parent.0, name.as_bytes(), target, caller(req));
            self.reply_entry(made, reply)
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.guarded("rename", || {
            if self.read_only {
                return reply.error(read_only());
            }
            Self::reply_empty(
                self.view.rename(
                    parent.0,
                    name.as_bytes(),
                    new_parent.0,
                    new_name.as_bytes(),
                    flags.bits(),
                ),
                reply,
            )
        });
    }

    fn link(&self, _req: &Request, ino: INodeNo, new_parent: INodeNo, new_name: &OsStr, reply: ReplyEntry) {
        self.guarded("link", || {
            if self.read_only {
                return reply.error(read_only());
            }
            self.reply_entry(self.view.link(ino.0, new_parent.0, new_name.as_bytes()), reply)
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.guarded("write", || {
            if self.read_only {
                return reply.error(read_only());
            }
            match self.view.write(ino.0, fh.0, offset, data) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.guarded("create", || {
            if self.read_only {
                return reply.error(read_only());
            }
            match self
                .view
                .create(parent.0, name.as_bytes(), mode & 0o7777, flags, caller(req))
            {
                Ok((a, fh)) => {
                    let backing = self.passthrough_file(fh);
                    let created = Created {
                        reply,
                        ttl: ttl(&a),
                        attr: self.file_attr(&a),
                    };
                    self.passthrough.reply(a.ino, fh, backing.as_deref(), true, created)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setxattr(&self, _req: &Request, ino: INodeNo, _n: &OsStr, _v: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        self.guarded("setxattr", || {
            reply.error(self.unsupported(ino.0));
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        self.guarded("removexattr", || {
            reply.error(self.unsupported(ino.0));
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.guarded("fallocate", || {
            if self.read_only {
                return reply.error(read_only());
            }
            Self::reply_empty(self.view.fallocate(ino.0, fh.0, offset, length, mode), reply)
        });
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.guarded("copy_file_range", || {
            // ENOSYS on a writable mount: the kernel then copies through read and write.
            reply.error(if self.read_only { read_only() } else { Errno::ENOSYS });
        });
    }
}

/// Answer a getxattr/listxattr: the size when asked for it (`size` 0), ERANGE when the
/// caller's buffer is too small, else the bytes.
fn reply_xattr(value: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_cached_from_their_second_open_and_memory_stays_bounded() {
        let folders = FolderOpens::default();
        assert!(!folders.listed_before(7));
        assert!(folders.listed_before(7));
        for ino in 100..100 + FOLDERS_REMEMBERED as u64 {
            folders.listed_before(ino);
        }
        assert!(folders.opened.lock().unwrap().len() <= FOLDERS_REMEMBERED);
        // 7 was forgotten when the memory started over: it counts as new once more.
        assert!(!folders.listed_before(7));
        assert!(folders.listed_before(7));
    }

    #[test]
    fn folder_block_sizes_hold_the_folder_listing_within_bounds() {
        let size = |children, packed_bytes| folder_blksize(ListingSize { children, packed_bytes });
        assert_eq!(size(0, 0), 32 << 10);
        assert_eq!(size(10, 100), 32 << 10);
        // 1,000 files named like "f000.txt": 162 KB of READDIRPLUS.
        assert_eq!(size(1000, 11_000), 256 << 10);
        assert_eq!(size(100_000, 1_100_000), MAX_IO);
        for children in [1, 100, 500, 3000] {
            let b = size(children, children * 20);
            assert!(b.is_power_of_two() && u64::from(b) >= (children + 2) * 160 + children * 20);
        }
    }
}
