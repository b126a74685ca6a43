//! Reading one dataset by path instead of by inode: what the Python module (and any other
//! adapter without a kernel in between) needs on top of [`Vfs`].
//!
//! Owns: parsing a caller's path into a [`DatasetPath`] (relative, no `..`, no NUL; `.` and
//! empty components dropped), resolving it to a node with one catalog query (following
//! symlinks that stay inside the dataset), folder listings by path, and positional reads
//! into a caller's buffer through an open handle of the view. It serves the same verified,
//! cached bytes as the mount (it is a single-dataset [`Vfs`] underneath) and never writes:
//! there is no call here that could.
//!
//! Also owns an optional, byte-bounded cache of whole files (off unless
//! [`DatasetReader::with_file_cache`] sizes it): a file read whole once (its bytes verified
//! on the way, as every read's) is kept by content hash and served from memory afterwards,
//! without a pack read or a hash. It is what a mount gets from the kernel's page cache,
//! which an adapter without a kernel in between does not have: a training loop's second
//! epoch over small files reads memory instead of copying from the page cache and hashing
//! again. Only verified bytes enter it; contents never change, so nothing in it goes stale.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::nodes::entry_attr;
use super::{DatasetInfo, NodeKind, ReadOnlyView, Scope, Vfs, VfsError, VfsOptions, VfsResult};
use crate::catalog::entries::{join_path, split_path};
use crate::catalog::{Entry, EntryKind};
use crate::dataset::DatasetRef;
use crate::id::{ContentId, RootHash};
use crate::vault::Vault;

/// Symlinks followed while resolving one path (like the kernel's `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;
/// Entries fetched per catalog query when listing a folder.
const LIST_PAGE: usize = 4096;
/// Bytes asked of the view per read call (it assembles at most this much at once).
const READ_STEP: usize = 8 << 20;

/// A path inside a dataset: components joined by `/`, none of them empty, `.` or `..`;
/// empty for the dataset's root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DatasetPath(Vec<u8>);

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} is not a path inside a dataset: {reason}")]
pub struct InvalidPath {
    pub path: String,
    pub reason: &'static str,
}

impl DatasetPath {
    /// The dataset's root folder.
    pub fn root() -> DatasetPath {
        DatasetPath(Vec::new())
    }

    /// Check a caller's path. Absolute paths and `..` are refused rather than resolved, so a
    /// path can never name anything outside the dataset.
    pub fn parse(path: &[u8]) -> Result<DatasetPath, InvalidPath> {
        let refuse = |reason| InvalidPath {
            path: String::from_utf8_lossy(path).into_owned(),
            reason,
        };
        if path.starts_with(b"/") {
            return Err(refuse(
                "absolute paths are refused; give it relative to the dataset's root",
            ));
        }
        if path.contains(&0) {
            return Err(refuse("it contains a NUL byte"));
        }
        let mut out = Vec::with_capacity(path.len());
        for part in path.split(|&b| b == b'/') {
            match part {
                b"" | b"." => continue,
                b".." => return Err(refuse("`..` is refused: a path cannot leave its dataset")),
                _ => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(part);
                }
            }
        }
        Ok(DatasetPath(out))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// `self/name`.
    fn join(&self, name: &[u8]) -> DatasetPath {
        DatasetPath(join_path(&self.0, name))
    }

    /// Where a symlink at `self` with `target` points, if that is inside the dataset.
    fn link_target(&self, target: &[u8]) -> Option<DatasetPath> {
        if target.starts_with(b"/") {
            return None;
        }
        let (parent, _) = split_path(&self.0);
        let mut parts: Vec<&[u8]> = parent.split(|&b| b == b'/').filter(|p| !p.is_empty()).collect();
        for part in target.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    parts.pop()?;
                }
                p => parts.push(p),
            }
        }
        Some(DatasetPath(parts.join(&b'/')))
    }
}

impl std::fmt::Display for DatasetPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// What a path is, as a listing or `stat` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The path as resolved (after symlinks), relative to the dataset's root.
    pub path: DatasetPath,
    /// The last component of the path asked for (empty for the root).
    pub name: Vec<u8>,
    pub kind: NodeKind,
    pub size: u64,
    /// Permission bits as ingested (`0o7777` mask).
    pub mode: u32,
    pub mtime: SystemTime,
    /// Whole-content blake3 hash of a file (the empty content's for an empty file).
    pub content: Option<ContentId>,
    /// A symlink's target (listings do not follow symlinks).
    pub target: Option<Vec<u8>>,
}

impl PathInfo {
    fn of_entry(entry: &Entry) -> PathInfo {
        let attr = entry_attr(entry);
        let content = match entry.kind {
            EntryKind::File => Some(entry.content.unwrap_or_else(|| ContentId::of(b""))),
            _ => None,
        };
        PathInfo {
            path: DatasetPath(entry.path()),
            name: entry.name.clone(),
            kind: attr.kind,
            size: attr.size,
            mode: entry.mode,
            mtime: attr.mtime,
            content,
            target: entry.target.clone(),
        }
    }

    fn of_root(dataset: &DatasetInfo) -> PathInfo {
        PathInfo {
            path: DatasetPath::root(),
            name: Vec::new(),
            kind: NodeKind::Dir,
            size: 0,
            mode: 0o555,
            mtime: dataset.mtime,
            content: None,
            target: None,
        }
    }
}

/// One dataset, read by path. Cheap to share between threads (`&self` everywhere).
pub struct DatasetReader {
    vfs: Vfs,
    dataset: Arc<DatasetInfo>,
    files: FileCache,
    /// Content and size of each open handle's file, while the file cache is on.
    handles: Mutex<HashMap<u64, (ContentId, u64)>>,
}

/// Whole files' verified bytes by content hash, least recently used out first, at most
/// `capacity` bytes in all (0: off).
#[derive(Default)]
struct FileCache {
    capacity: u64,
    lru: Mutex<FileLru>,
}

#[derive(Default)]
struct FileLru {
    bytes: u64,
    tick: u64,
    map: HashMap<ContentId, (Arc<Vec<u8>>, u64)>,
    order: BTreeMap<u64, ContentId>,
}

impl FileCache {
    fn get(&self, id: &ContentId) -> Option<Arc<Vec<u8>>> {
        let mut lru = self.lru.lock().expect("file cache lock");
        lru.tick += 1;
        let tick = lru.tick;
        let (bytes, used) = lru.map.get_mut(id)?;
        let (bytes, before) = (bytes.clone(), std::mem::replace(used, tick));
        lru.order.remove(&before);
        lru.order.insert(tick, *id);
        Some(bytes)
    }

    /// Keep `bytes` (the verified content `id`), pushing out the least recently used.
    fn put(&self, id: ContentId, bytes: Vec<u8>) {
        let len = bytes.len() as u64;
        if len > self.capacity {
            return;
        }
        let mut lru = self.lru.lock().expect("file cache lock");
        if lru.map.contains_key(&id) {
            return;
        }
        while lru.bytes + len > self.capacity {
            let Some((_, old)) = lru.order.pop_first() else { break };
            if let Some((gone, _)) = lru.map.remove(&old) {
                lru.bytes -= gone.len() as u64;
            }
        }
        lru.tick += 1;
        let tick = lru.tick;
        lru.bytes += len;
        lru.map.insert(id, (Arc::new(bytes), tick));
        lru.order.insert(tick, id);
    }
}

impl DatasetReader {
    /// Open `dataset` of `vault` (a sealed dataset; fails when it does not exist).
    pub fn open(vault: Vault, dataset: &DatasetRef, options: VfsOptions) -> crate::Result<DatasetReader> {
        let options = VfsOptions {
            workspaces: false,
            ..options
        };
        let vfs = Vfs::new(vault, &Scope::Dataset(dataset.clone()), options)?;
        let dataset = vfs
            .shared
            .single
            .clone()
            .expect("a single-dataset view has its dataset");
        Ok(DatasetReader {
            vfs,
            dataset,
            files: FileCache::default(),
            handles: Mutex::default(),
        })
    }

    /// Keep up to `bytes` of whole files in memory once read whole (see the module's doc).
    pub fn with_file_cache(mut self, bytes: u64) -> DatasetReader {
        self.files.capacity = bytes;
        self
    }

    /// Bytes of whole files held in memory now.
    pub fn file_cache_bytes(&self) -> u64 {
        self.files.lru.lock().expect("file cache lock").bytes
    }

    /// `KIND/NAME@VERSION`.
    pub fn name(&self) -> String {
        self.dataset.name.to_string()
    }

    pub fn root(&self) -> RootHash {
        self.dataset.root
    }

    pub fn vault(&self) -> &Vault {
        self.vfs.vault()
    }

    /// What `path` is, following symlinks (a symlink leaving the dataset is not found).
    pub fn stat(&self, path: &DatasetPath) -> VfsResult<PathInfo> {
        let mut info = self.resolve(path, true)?;
        if !path.is_root() {
            info.name = split_path(path.as_bytes()).1.to_vec();
        }
        Ok(info)
    }

    /// What `path` itself is (a symlink is reported as one).
    pub fn lstat(&self, path: &DatasetPath) -> VfsResult<PathInfo> {
        self.resolve(path, false)
    }

    /// The entries of folder `path`, by name (symlinks are reported, not followed).
    pub fn list(&self, path: &DatasetPath) -> VfsResult<Vec<PathInfo>> {
        let dir = self.resolve(path, true)?;
        if dir.kind != NodeKind::Dir {
            return Err(VfsError::NotADirectory);
        }
        let mut out = Vec::new();
        loop {
            let after = out.last().map(|e: &PathInfo| e.name.clone());
            let page = self
                .vfs
                .shared
                .pool
                .with(|c| c.children(self.dataset.id, dir.path.as_bytes(), after.as_deref(), LIST_PAGE))?;
            let done = page.len() < LIST_PAGE;
            out.extend(page.iter().map(PathInfo::of_entry));
            if done {
                return Ok(out);
            }
        }
    }

    /// Open file `path` (following symlinks) for [`DatasetReader::read_at`]; the handle
    /// stays valid until [`DatasetReader::close`].
    pub fn open_file(&self, path: &DatasetPath) -> VfsResult<(u64, PathInfo)> {
        let entry = match self.resolve_entry(path, true)? {
            Some(e) if e.kind == EntryKind::File => e,
            Some(e) if e.kind == EntryKind::Symlink => return Err(VfsError::NotFound),
            _ => return Err(VfsError::IsADirectory),
        };
        let mut info = PathInfo::of_entry(&entry);
        info.name = split_path(path.as_bytes()).1.to_vec();
        let fh = self.vfs.open(super::nodes::entry_ino(entry.id))?;
        if let (true, Some(content)) = (self.files.capacity > 0, info.content) {
            let mut handles = self.handles.lock().expect("handles lock");
            handles.insert(fh, (content, info.size));
        }
        Ok((fh, info))
    }

    /// Fill `buf` with the verified bytes of open file `fh` from `offset`; fewer only at the
    /// end of the file. Returns how many were written. With the file cache on, a file kept
    /// there is served from memory, and one read whole is kept.
    pub fn read_at(&self, fh: u64, offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        if self.files.capacity == 0 {
            return self.read_through(fh, offset, buf);
        }
        let Some((content, size)) = self.handles.lock().expect("handles lock").get(&fh).copied() else {
            return self.read_through(fh, offset, buf);
        };
        if let Some(bytes) = self.files.get(&content) {
            let from = (offset.min(size) as usize).min(bytes.len());
            let n = buf.len().min(bytes.len() - from);
            buf[..n].copy_from_slice(&bytes[from..from + n]);
            return Ok(n);
        }
        let n = self.read_through(fh, offset, buf)?;
        if offset == 0 && n as u64 == size {
            self.files.put(content, buf[..n].to_vec());
        }
        Ok(n)
    }

    /// [`DatasetReader::read_at`] through the view (verified chunks).
    fn read_through(&self, fh: u64, offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        let mut done = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(READ_STEP);
            // Inode 0: the handle alone says which file (handles start at 1).
            let bytes = self.vfs.read(0, fh, offset + done as u64, want as u32)?;
            let got = bytes.as_ref();
            buf[done..done + got.len()].copy_from_slice(got);
            done += got.len();
            if got.len() < want {
                break;
            }
        }
        Ok(done)
    }

    /// Forget an open handle.
    pub fn close(&self, fh: u64) {
        if self.files.capacity > 0 {
            self.handles.lock().expect("handles lock").remove(&fh);
        }
        self.vfs.release(fh);
    }

    /// Bytes of verified chunks held in memory now.
    pub fn cached_bytes(&self) -> u64 {
        self.vfs.cached_bytes()
    }

    /// The entry at exactly `path` (no symlinks followed), `None` for the root or nothing.
    fn entry(&self, path: &DatasetPath) -> VfsResult<Option<Entry>> {
        if path.is_root() {
            return Ok(None);
        }
        Ok(self
            .vfs
            .shared
            .pool
            .with(|c| c.entry_at(self.dataset.id, path.as_bytes()))?)
    }

    /// Resolve `path`: one query when no folder on the way is a symlink, else a walk
    /// component by component that follows them (and the last one when `follow`).
    fn resolve(&self, path: &DatasetPath, follow: bool) -> VfsResult<PathInfo> {
        Ok(match self.resolve_entry(path, follow)? {
            Some(e) => PathInfo::of_entry(&e),
            None => PathInfo::of_root(&self.dataset),
        })
    }

    /// The entry `path` resolves to (as [`DatasetReader::resolve`]); `None` for the root.
    fn resolve_entry(&self, path: &DatasetPath, follow: bool) -> VfsResult<Option<Entry>> {
        if path.is_root() {
            return Ok(None);
        }
        match self.entry(path)? {
            Some(e) if e.kind != EntryKind::Symlink || !follow => Ok(Some(e)),
            _ => self.walk(path, follow),
        }
    }

    fn walk(&self, path: &DatasetPath, follow: bool) -> VfsResult<Option<Entry>> {
        let mut links = 0;
        let mut todo: Vec<Vec<u8>> = path
            .as_bytes()
            .split(|&b| b == b'/')
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut at = DatasetPath::root();
        let mut found: Option<Entry> = None;
        while let Some(part) = todo.pop() {
            if found.as_ref().is_some_and(|e| e.kind != EntryKind::Dir) {
                return Err(VfsError::NotADirectory);
            }
            let here = at.join(&part);
            let entry = self.entry(&here)?.ok_or(VfsError::NotFound)?;
            let last = todo.is_empty();
            if entry.kind != EntryKind::Symlink || (last && !follow) {
                found = Some(entry);
                at = here;
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(VfsError::NotFound);
            }
            let target = entry.target.as_deref().unwrap_or_default();
            let dest = here.link_target(target).ok_or(VfsError::NotFound)?;
            // Continue from the root with the target's components, then what was left.
            todo.extend(
                dest.as_bytes()
                    .split(|&b| b == b'/')
                    .rev()
                    .filter(|p| !p.is_empty())
                    .map(<[u8]>::to_vec),
            );
            at = DatasetPath::root();
            found = None;
        }
        Ok(found)
    }
}

/// Reads through a real vault are tested in tests/dataset_reader.rs (they ingest with `ops`,
/// which this layer may not name).
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &str) -> Result<Vec<u8>, InvalidPath> {
        DatasetPath::parse(p.as_bytes()).map(|p| p.0)
    }

    #[test]
    fn paths_are_normalised_and_never_leave_the_dataset() {
        assert_eq!(parse("a/b.txt").unwrap(), b"a/b.txt");
        assert_eq!(parse("./a//b/").unwrap(), b"a/b");
        assert_eq!(parse("").unwrap(), b"");
        assert_eq!(parse(".").unwrap(), b"");
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "a\0b"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse("/x").unwrap_err().reason.contains("absolute"));
        assert!(parse("a/../b").unwrap_err().to_string().contains(".."));
    }

    #[test]
    fn the_file_cache_keeps_the_most_recently_used_within_its_bound() {
        let cache = FileCache {
            capacity: 10,
            ..FileCache::default()
        };
        let id = |b: u8| ContentId::of(&[b]);
        cache.put(id(1), vec![1; 4]);
        cache.put(id(2), vec![2; 4]);
        assert!(cache.get(&id(1)).is_some()); // now 2 is the least recently used
        cache.put(id(3), vec![3; 4]); // 12 > 10: 2 goes
        assert!(cache.get(&id(2)).is_none());
        assert_eq!(cache.get(&id(1)).as_deref(), Some(&vec![1; 4]));
        assert_eq!(cache.get(&id(3)).as_deref(), Some(&vec![3; 4]));
        cache.put(id(4), vec![4; 11]); // larger than the bound: never kept, nothing pushed out
        assert!(cache.get(&id(4)).is_none());
        assert_eq!(cache.lru.lock().unwrap().bytes, 8);
        let off = FileCache::default(); // capacity 0: keeps nothing
        off.put(id(5), vec![5]);
        assert!(off.get(&id(5)).is_none());
    }

    #[test]
    fn link_targets_resolve_inside_the_dataset_only() {
        let at = |p: &str, t: &str| {
            DatasetPath::parse(p.as_bytes())
                .unwrap()
                .link_target(t.as_bytes())
                .map(|d| d.to_string())
        };
        assert_eq!(at("a/link", "b.txt").as_deref(), Some("a/b.txt"));
        assert_eq!(at("a/link", "../c/d").as_deref(), Some("c/d"));
        assert_eq!(at("link", "./x/./y").as_deref(), Some("x/y"));
        assert_eq!(at("a/link", "../../out"), None);
        assert_eq!(at("link", "/abs"), None);
    }
}
