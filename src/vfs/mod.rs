//! A FUSE-agnostic view of a vault (or of one dataset) as a file tree.
//!
//! Owns: the inode scheme, resolving inodes to catalog rows, folder listings with stable
//! offsets, file reads that serve only verified bytes (with a bounded chunk cache and
//! readahead), extended attributes and `statfs` figures. [`Vfs`] implements the view traits
//! of [`view`] ([`ReadOnlyView`], [`WritableView`]); the `dsvault-fuse` crate turns their
//! answers into FUSE replies. Datasets are read-only: every write-type request for them answers
//! [`VfsError::ReadOnly`]. Workspaces under `work/` are writable; [`work`] owns that overlay.
//!
//! Tree of a whole-vault view: `/gold/<name>/<version>/…`, `/derived/<name>/<version>/…`
//! and `/work/<workspace>/…` (listed only when [`VfsOptions::workspaces`] is set; otherwise
//! `work/` is empty). A single-dataset view shows that dataset's tree at the root.
//!
//! Inodes (stable for the life of the vault: sealed rows are never renumbered):
//!
//! | inode | node |
//! |---|---|
//! | 1 | the root (the vault, or the dataset of a single-dataset view) |
//! | 2, 3, 4 | `gold/`, `derived/`, `work/` |
//! | 16 + entry id | an entry of a sealed dataset (`entries.id`) |
//! | 2^48 + dataset id | a dataset's root folder (`<kind>/<name>/<version>/`) |
//! | 2^49 + smallest dataset id of the name | a name folder (`<kind>/<name>/`) |
//! | 2^50 + n | a node under `work/`, numbered in order of first lookup (see [`work`]) |
//!
//! Freshness: the root, kind and name folders change when a dataset is sealed, so they are
//! marked mutable (the FUSE layer gives them a short timeout); everything inside a dataset
//! is immutable and can be cached by the kernel for as long as it likes.
//!
//! Memory does not grow with dataset size: nothing is kept per entry; open files keep their
//! chunk list (about 100 bytes per chunk) until closed; chunk bytes live in a bounded LRU.

mod cache;
mod dirs;
mod files;
mod layouts;
mod nodes;
mod pool;
mod reader;
mod view;
pub mod work;

pub use cache::ChunkCache;
pub use reader::{DatasetPath, DatasetReader, InvalidPath, PathInfo};
pub use view::{
    Attr, Caller, Describe, DescribeNone, DirEntry, ListingSize, LocalStat, NodeKind, OpenedDir, ReadOnlyView, SetAttr,
    SetTime, StatFs, VfsError, VfsResult, WritableView,
};

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::catalog::{DatasetRow, EntryKind};
use crate::dataset::{DatasetName, DatasetRef};
use crate::id::{ContentId, RootHash};
use crate::vault::Vault;

use files::Prefetcher;
use nodes::Node;
use pool::CatalogPool;

/// The root inode.
pub const ROOT_INO: u64 = 1;
const GOLD_INO: u64 = 2;
const DERIVED_INO: u64 = 3;
const WORK_INO: u64 = 4;
const ENTRY_BASE: u64 = 16;
const DATASET_BASE: u64 = 1 << 48;
const NAME_BASE: u64 = 1 << 49;
/// First inode of nodes under `work/`.
const WORK_NODE_BASE: u64 = 1 << 50;
/// Handles of the workspace overlay (open upper-layer files and folder listings) have this
/// bit set; dataset handles are small counters.
const OVERLAY_FH: u64 = 1 << 62;

/// Extended attribute with a file's whole-content blake3 hash (hex).
pub const XATTR_BLAKE3: &str = "user.dsvault.blake3";
/// Extended attribute with the root hash of the dataset a node belongs to (hex).
pub const XATTR_ROOT: &str = "user.dsvault.root";
/// Extended attribute with the dataset's name, `kind/name@version`.
pub const XATTR_DATASET: &str = "user.dsvault.dataset";

/// What a view shows.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every sealed dataset: `gold/`, `derived/`, `work/`.
    Vault,
    /// One dataset's tree at the root.
    Dataset(DatasetRef),
}

/// Tuning of the read path.
#[derive(Debug, Clone, Copy)]
pub struct VfsOptions {
    /// Bytes of verified chunks kept in memory.
    pub cache_bytes: u64,
    /// Background threads that fetch and verify chunks ahead of a sequential reader.
    pub prefetch_threads: usize,
    /// How far ahead of a sequential reader chunks are fetched.
    pub readahead_bytes: u64,
    /// Show the vault's workspaces, writable, under `work/` (whole-vault views only).
    pub workspaces: bool,
}

impl Default for VfsOptions {
    fn default() -> Self {
        VfsOptions {
            cache_bytes: 8 << 20,
            prefetch_threads: 2,
            readahead_bytes: 4 << 20,
            workspaces: false,
        }
    }
}

/// A dataset as the view needs it (kept for the life of the view: datasets are few).
#[derive(Debug)]
pub(crate) struct DatasetInfo {
    pub id: i64,
    pub name: DatasetName,
    pub root: RootHash,
    pub mtime: SystemTime,
    /// Has the catalog folder listings for it (every dataset does, unless rows were removed
    /// behind the catalog's triggers)? Asked once.
    listed: std::sync::OnceLock<bool>,
}

impl DatasetInfo {
    fn from_row(row: &DatasetRow) -> Arc<DatasetInfo> {
        Arc::new(DatasetInfo {
            id: row.id,
            name: row.name.clone(),
            root: row.root.unwrap_or(RootHash([0; 32])),
            mtime: secs_to_time(row.sealed_at.unwrap_or(row.created_at)),
            listed: std::sync::OnceLock::new(),
        })
    }

    /// Whether its folders can be listed from the catalog's listings.
    pub fn listed(&self, shared: &Shared) -> VfsResult<bool> {
        if let Some(&listed) = self.listed.get() {
            return Ok(listed);
        }
        let listed = shared.pool.with(|c| c.has_listings(self.id))?;
        Ok(*self.listed.get_or_init(|| listed))
    }
}

/// State shared by the view and its prefetch threads.
pub(crate) struct Shared {
    vault: Vault,
    pool: CatalogPool,
    cache: ChunkCache,
    /// The dataset of a single-dataset view.
    single: Option<Arc<DatasetInfo>>,
    datasets: Mutex<std::collections::HashMap<i64, Arc<DatasetInfo>>>,
    files: files::FileTable,
    layouts: layouts::Layouts,
    dirs: dirs::DirTable,
    nodes: nodes::NodeCache,
    started: SystemTime,
    options: VfsOptions,
    /// The writable workspace overlay under `work/`.
    work: work::Overlay,
}

/// A read-only view of a vault or of one dataset.
pub struct Vfs {
    shared: Arc<Shared>,
    prefetcher: Prefetcher,
}

impl Drop for Vfs {
    /// A view that showed workspaces makes its unsynced whiteouts durable when it ends
    /// (an unmount), so a clean unmount never leaves deletes that a power cut could undo.
    fn drop(&mut self) {
        if self.shows_workspaces() {
            if let Err(e) = self.shared.pool.with(|c| c.sync_wal()) {
                tracing::warn!("syncing the catalog at unmount: {e}");
            }
        }
    }
}

impl Vfs {
    /// A view of `scope` in `vault`. Fails when a single dataset does not exist.
    pub fn new(vault: Vault, scope: &Scope, options: VfsOptions) -> crate::Result<Vfs> {
        let pool = CatalogPool::new(vault.catalog_path(), !vault.writable());
        let single = match scope {
            Scope::Vault => None,
            Scope::Dataset(r) => Some(DatasetInfo::from_row(&pool.with(|c| c.resolve(r))?)),
        };
        let shared = Arc::new(Shared {
            vault,
            pool,
            cache: ChunkCache::new(options.cache_bytes),
            single,
            datasets: Mutex::default(),
            files: files::FileTable::default(),
            layouts: layouts::Layouts::default(),
            dirs: dirs::DirTable::default(),
            nodes: nodes::NodeCache::default(),
            started: SystemTime::now(),
            options,
            work: work::Overlay::default(),
        });
        let prefetcher = Prefetcher::start(&shared, options.prefetch_threads);
        Ok(Vfs { shared, prefetcher })
    }

    /// `gold/NAME@VERSION` for a single-dataset view, `None` for a whole vault.
    pub fn dataset(&self) -> Option<String> {
        self.shared.single.as_ref().map(|d| d.name.to_string())
    }

    /// The vault this view reads.
    pub fn vault(&self) -> &Vault {
        &self.shared.vault
    }

    /// Does this view show `work/` (a whole-vault view with workspaces)?
    fn shows_workspaces(&self) -> bool {
        self.shared.options.workspaces && self.shared.single.is_none()
    }

    /// Is `ino` `work/` or below it, in a view that shows workspaces?
    fn work(&self, ino: u64) -> bool {
        self.shows_workspaces() && work::is_work(ino)
    }

    /// Is `ino` a node below `work/` (not `work/` itself)?
    fn work_node(&self, ino: u64) -> bool {
        ino != WORK_INO && self.work(ino)
    }

    fn xattrs(&self, ino: u64) -> VfsResult<Vec<(&'static str, String)>> {
        if self.work_node(ino) {
            // Workspace files change: no stored hash describes them.
            self.getattr(ino)?;
            return Ok(Vec::new());
        }
        let node = self.shared.node(ino)?;
        let mut out = Vec::new();
        if let Node::Entry { entry, .. } = &node {
            if let Some(hash) = entry.content.filter(|_| entry.kind == EntryKind::File) {
                out.push((XATTR_BLAKE3, hash.to_hex()));
            } else if entry.kind == EntryKind::File {
                out.push((XATTR_BLAKE3, ContentId::of(b"").to_hex()));
            }
        }
        if let Some(d) = node.dataset() {
            out.push((XATTR_ROOT, d.root.to_hex()));
            out.push((XATTR_DATASET, d.name.to_string()));
        }
        Ok(out)
    }

    /// Nodes under `work/` that currently have a number (memory use of the overlay).
    pub fn work_nodes(&self) -> usize {
        self.shared.work.node_count()
    }

    /// Bytes of verified chunks held in memory now.
    pub fn cached_bytes(&self) -> u64 {
        self.shared.cache.cached_bytes()
    }
}

impl ReadOnlyView for Vfs {
    type Data = ReadBytes;

    /// Attributes of `name` in folder `parent`.
    fn lookup(&self, parent: u64, name: &[u8]) -> VfsResult<Attr> {
        if self.work(parent) {
            return self.shared.work.lookup(&self.shared, parent, name);
        }
        let node = self.shared.node(parent)?;
        let child = self.shared.child(&node, name)?;
        self.shared.attr(&child)
    }

    /// Attributes of an inode.
    fn getattr(&self, ino: u64) -> VfsResult<Attr> {
        if self.work_node(ino) {
            return self.shared.work.getattr(&self.shared, ino);
        }
        let node = self.shared.node(ino)?;
        self.shared.attr(&node)
    }

    /// A symlink's target bytes.
    fn readlink(&self, ino: u64) -> VfsResult<Vec<u8>> {
        if self.work_node(ino) {
            return self.shared.work.readlink(&self.shared, ino);
        }
        match self.shared.node(ino)? {
            Node::Entry { entry, .. } if entry.kind == EntryKind::Symlink => Ok(entry.target.unwrap_or_default()),
            _ => Err(VfsError::NotASymlink),
        }
    }

    /// Open a folder for listing; returns a handle for [`Vfs::readdir`].
    /// Dataset folders are immutable; the folders above datasets gain entries, and
    /// workspaces change.
    fn opendir(&self, ino: u64) -> VfsResult<OpenedDir> {
        if self.work(ino) {
            let fh = self.shared.work.opendir(&self.shared, ino)?;
            return Ok(OpenedDir { fh, immutable: false });
        }
        let node = self.shared.node(ino)?;
        if matches!(&node, Node::Entry { entry, .. } if entry.kind != EntryKind::Dir) {
            return Err(VfsError::NotADirectory);
        }
        Ok(OpenedDir {
            fh: self.shared.dirs.open(ino),
            immutable: node.dataset().is_some(),
        })
    }

    /// Up to `max` entries of folder `ino` after `offset` (0 = from the start). Offsets are
    /// positions in the name-sorted listing, so they stay valid however the listing is paged.
    fn readdir(&self, ino: u64, fh: u64, offset: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        if work::is_overlay_fh(fh) {
            let page = self
                .shared
                .work
                .readdir(&self.shared, ino, fh, offset, max.max(1), false)?;
            return Ok(page.into_iter().map(|(e, _)| e).collect());
        }
        dirs::readdir(&self.shared, ino, fh, offset, max.max(1))
    }

    /// Like [`Vfs::readdir`], with attributes for the entries `describe` picks. Under
    /// `work/` every entry is described and counts a kernel reference (see [`Vfs::forget`]):
    /// an entry listed there without one would leave an inode record the kernel never
    /// forgets (it never looked it up), and workspaces are not the large trees that d_type
    /// walks over datasets are.
    fn readdir_plus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        max: usize,
        describe: &mut dyn Describe,
    ) -> VfsResult<Vec<(DirEntry, Option<Attr>)>> {
        if work::is_overlay_fh(fh) {
            return self
                .shared
                .work
                .readdir(&self.shared, ino, fh, offset, max.max(1), true);
        }
        dirs::readdir_plus(&self.shared, ino, fh, offset, max.max(1), describe)
    }

    /// Forget a folder handle.
    fn releasedir(&self, fh: u64) {
        if work::is_overlay_fh(fh) {
            return self.shared.work.releasedir(fh);
        }
        self.shared.dirs.close(fh);
    }

    /// Open a file for reading; returns a handle for [`Vfs::read`].
    fn open(&self, ino: u64) -> VfsResult<u64> {
        self.open_with(ino, libc::O_RDONLY)
    }

    /// Up to `size` verified bytes of a file at `offset` (fewer only at the end), through
    /// open handle `fh`, or by inode when `fh` is 0 (zero-message opens).
    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> VfsResult<ReadBytes> {
        if work::is_overlay_fh(fh) {
            return self.shared.work.read(fh, offset, size);
        }
        if fh == 0 {
            if self.work_node(ino) {
                return Err(VfsError::BadHandle);
            }
            return files::read_ino(&self.shared, &self.prefetcher, ino, offset, size);
        }
        files::read(&self.shared, &self.prefetcher, fh, offset, size)
    }

    /// Close a file handle.
    fn release(&self, fh: u64) {
        if work::is_overlay_fh(fh) {
            return self.shared.work.release(fh);
        }
        self.shared.files.close(fh);
    }

    /// The value of extended attribute `name`.
    fn getxattr(&self, ino: u64, name: &[u8]) -> VfsResult<Vec<u8>> {
        self.xattrs(ino)?
            .into_iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, v)| v.into_bytes())
            .ok_or(VfsError::NoAttribute)
    }

    /// Names of the extended attributes of `ino`.
    fn listxattr(&self, ino: u64) -> VfsResult<Vec<Vec<u8>>> {
        Ok(self
            .xattrs(ino)?
            .into_iter()
            .map(|(n, _)| n.as_bytes().to_vec())
            .collect())
    }

    /// Logical size and file count of what is in view, and free space for workspaces.
    fn statfs(&self) -> VfsResult<StatFs> {
        let rows = match &self.shared.single {
            Some(d) => self
                .shared
                .pool
                .with(|c| c.sealed_dataset_by_id(d.id))?
                .into_iter()
                .collect(),
            None => self.shared.pool.with(|c| c.list_datasets(None, None))?,
        };
        let free_bytes = match self.shows_workspaces() {
            true => free_bytes(&self.shared.vault.workspaces_dir()),
            false => 0,
        };
        Ok(StatFs {
            bytes: rows.iter().map(|r| r.bytes).sum(),
            files: rows.iter().map(|r| r.files + r.dirs + r.symlinks).sum(),
            free_bytes,
        })
    }
}

/// Writing: workspaces only; everything else answers [`VfsError::ReadOnly`].
impl WritableView for Vfs {
    /// Attributes of an inode asked through an open handle (`fstat`).
    fn getattr_open(&self, ino: u64, fh: u64) -> VfsResult<Attr> {
        if self.work_node(ino) {
            return self.shared.work.getattr_open(&self.shared, ino, fh);
        }
        self.getattr(ino)
    }

    /// Open a file with `open(2)` flags. Dataset files open read-only only; workspace files
    /// opened for writing are copied up first.
    fn open_with(&self, ino: u64, flags: i32) -> VfsResult<u64> {
        if self.work_node(ino) {
            return self.shared.work.open(&self.shared, ino, flags);
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(VfsError::ReadOnly);
        }
        files::open(&self.shared, ino)
    }

    /// The upper-layer file behind open handle `fh` (workspace files only; dataset files
    /// are assembled from chunks and have none).
    fn backing_file(&self, fh: u64) -> Option<Arc<std::fs::File>> {
        if !work::is_overlay_fh(fh) {
            return None;
        }
        self.shared.work.backing_file(fh)
    }

    /// Can anything below `ino` be written?
    fn writable(&self, ino: u64) -> bool {
        self.work_node(ino)
    }

    /// Write to a file opened for writing.
    fn write(&self, _ino: u64, fh: u64, offset: u64, data: &[u8]) -> VfsResult<u32> {
        if !work::is_overlay_fh(fh) {
            return Err(VfsError::ReadOnly);
        }
        self.shared.work.write(fh, offset, data)
    }

    /// Flush an open file's written data to disk.
    fn fsync(&self, _ino: u64, fh: u64, datasync: bool) -> VfsResult<()> {
        if !work::is_overlay_fh(fh) {
            return Ok(());
        }
        self.shared.work.fsync(fh, datasync)
    }

    /// Make a workspace folder's entries durable: its upper folder, and the whiteouts
    /// (committed to the catalog without a sync, see `Ws::add_whiteout`).
    fn fsyncdir(&self, ino: u64) -> VfsResult<()> {
        if !self.work_node(ino) {
            return Ok(());
        }
        self.shared.work.fsyncdir(ino)?;
        Ok(self.shared.pool.with(|c| c.sync_wal())?)
    }

    /// `fallocate(2)` on a file opened for writing.
    fn fallocate(&self, _ino: u64, fh: u64, offset: u64, length: u64, mode: i32) -> VfsResult<()> {
        if !work::is_overlay_fh(fh) {
            return Err(VfsError::ReadOnly);
        }
        self.shared.work.fallocate(fh, offset, length, mode)
    }

    /// Change attributes (size, mode, owner, times).
    fn setattr(&self, ino: u64, fh: Option<u64>, changes: &SetAttr) -> VfsResult<Attr> {
        if !self.work_node(ino) {
            return Err(VfsError::ReadOnly);
        }
        let fh = fh.filter(|fh| work::is_overlay_fh(*fh));
        self.shared.work.setattr(&self.shared, ino, fh, changes)
    }

    /// Create and open file `name` in `parent`.
    fn create(&self, parent: u64, name: &[u8], mode: u32, flags: i32, caller: Caller) -> VfsResult<(Attr, u64)> {
        if !self.work(parent) {
            return Err(VfsError::ReadOnly);
        }
        self.shared.work.create(&self.shared, parent, name, mode, flags, caller)
    }

    fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> VfsResult<Attr> {
        if !self.work(parent) {
            return Err(VfsError::ReadOnly);
        }
        self.shared.work.mkdir(&self.shared, parent, name, mode, caller)
    }

    fn mknod(&self, parent: u64, name: &[u8], mode: u32, rdev: u64, caller: Caller) -> VfsResult<Attr> {
        if !self.work(parent) {
            return Err(VfsError::ReadOnly);
        }
        self.shared.work.mknod(&self.shared, parent, name, mode, rdev, caller)
    }

    fn symlink(&self, parent: u64, name: &[u8], target: &Path, caller: Caller) -> VfsResult<Attr> {
        if !self.work(parent) {
            return Err(VfsError::ReadOnly);
        }
        self.shared.work.symlink(&self.shared, parent, name, target, caller)
    }

    fn unlink(&self, parent: u64, name: &[u8]) -> VfsResult<()> {
        if !self.work(parent) {
            return Err(VfsError::ReadOnly);
        }
        self.shared.work.unlink(&self.shared, parent, name)
    }

    fn rmdir(&self, parent: u64, name: &[u8]) -> VfsResult<()> {
        if !self.work(parent) {
            return Err(VfsError::ReadOnly);
        }
        self.shared.work.rmdir(&self.shared, parent, name)
    }

    fn rename(&self, parent: u64, name: &[u8], new_parent: u64, new_name: &[u8], flags: u32) -> VfsResult<()> {
        match (self.work(parent), self.work(new_parent)) {
            (true, true) => self
                .shared
                .work
                .rename(&self.shared, parent, name, new_parent, new_name, flags),
            (true, false) | (false, true) => Err(VfsError::CrossDevice),
            (false, false) => Err(VfsError::ReadOnly),
        }
    }

    /// A hard link `name` in folder `new_parent` to `ino`, within one workspace; a dataset
    /// file cannot be linked into a workspace (EXDEV: `cp -al` and the like then copy).
    fn link(&self, ino: u64, new_parent: u64, name: &[u8]) -> VfsResult<Attr> {
        match (self.work_node(new_parent), self.work_node(ino)) {
            (true, true) => self.shared.work.link(&self.shared, ino, new_parent, name),
            (true, false) => Err(VfsError::CrossDevice),
            (false, _) => Err(VfsError::ReadOnly),
        }
    }

    /// The kernel gave back `n` references to `ino`.
    fn forget(&self, ino: u64, n: u64) {
        if self.work_node(ino) {
            self.shared.work.forget(ino, n);
        }
    }
}

/// Bytes returned by [`ReadOnlyView::read`]: a slice of a cached chunk when the read falls inside one
/// chunk (no copy), else a buffer assembled from several chunks.
pub enum ReadBytes {
    Slice {
        chunk: cache::ChunkBytes,
        start: usize,
        end: usize,
    },
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for ReadBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            ReadBytes::Slice { chunk, start, end } => &chunk[*start..*end],
            ReadBytes::Owned(v) => v,
        }
    }
}

/// Bytes available to unprivileged writers on the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: a valid path and a zeroed statvfs the call fills in.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

fn secs_to_time(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64)
}

fn ns_to_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64)
    } else {
        SystemTime::UNIX_EPOCH - std::time::Duration::from_nanos(ns.unsigned_abs())
    }
}
