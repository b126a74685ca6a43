//! The local store: a folder on this machine (`file://` URLs, the default).
//!
//! Owns: the folder layout `packs/<2 hex>/<hash>.pack`, `manifests/<root>.json`,
//! `refs/<kind>/<name>/<version>` and the durability steps for publishing into it (write to
//! tmp, fsync, rename or create-only link, fsync the directory); positional reads of pack
//! byte ranges (a bounded cache of open pack files).
//! Never: interprets chunk bytes or touches the catalog.
//!
//! It uses the file system directly rather than through `object_store`'s `LocalFileSystem`
//! so that reads are plain `pread`s on cached file descriptors (what the mount needs to be as
//! fast as the local disk).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::backend::{Backend, ObjectInfo, PutKind};
use super::{PendingPut, RefOutcome, StoredRef};
use crate::error::{Error, Result};
use crate::id::{PackId, RootHash};
use crate::pack::{self, IndexEntry, SealedPack};
use crate::sharing::Modes;

/// Open pack files kept for positional reads.
const OPEN_PACKS_MAX: usize = 256;

/// A local folder store.
pub struct LocalStore {
    root: PathBuf,
    open_packs: Mutex<HashMap<PackId, Arc<File>>>,
    /// How new folders are made (a shared vault's are setgid and group-writable). Files
    /// published here are 0444 in every vault.
    modes: Modes,
}

impl LocalStore {
    /// Open (and create the folders of) a local store at `root`. Folders that exist are
    /// left as they are, so a user who may only read the store opens it without writing.
    pub fn open_local(root: &Path, modes: Modes) -> Result<Self> {
        for sub in ["packs", "manifests", "refs"] {
            modes.create_dir_all(&root.join(sub))?;
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
            open_packs: Mutex::new(HashMap::new()),
            modes,
        })
    }

    /// Path of a pack in the store.
    pub fn pack_path(&self, id: PackId) -> PathBuf {
        self.root.join(super::pack_key(id))
    }

    /// Publish a sealed pack: make it read-only, rename it into place, fsync the directory.
    /// Publishing a pack that is already present just removes the temporary copy.
    pub fn put_pack(&self, sealed: &SealedPack) -> Result<()> {
        let dest = self.pack_path(sealed.id);
        let dir = dest.parent().expect("pack path has a parent");
        self.modes.create_dir_all(dir)?;
        fs::set_permissions(&sealed.tmp_path, fs::Permissions::from_mode(0o444))
            .map_err(Error::io_at("setting permissions of", &sealed.tmp_path))?;
        if dest.exists() {
            let _ = fs::remove_file(&sealed.tmp_path);
            return Ok(());
        }
        move_into_place(&sealed.tmp_path, &dest).map_err(Error::io_at("publishing pack", &dest))?;
        crate::crashpoint::hit("pack-after-rename");
        sync_dir(dir)?;
        Ok(())
    }

    /// Every pack in the store with its size.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        let mut out = Vec::new();
        let packs = self.root.join("packs");
        for sub in fs::read_dir(&packs).map_err(Error::io_at("listing", &packs))? {
            let sub = sub.map_err(Error::io_at("listing", &packs))?.path();
            if !sub.is_dir() {
                continue;
            }
            for f in fs::read_dir(&sub).map_err(Error::io_at("listing", &sub))? {
                let f = f.map_err(Error::io_at("listing", &sub))?;
                let name = f.file_name();
                let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".pack")) else {
                    continue;
                };
                let Ok(id) = hex.parse::<PackId>() else {
                    continue;
                };
                let size = f.metadata().map_err(Error::io_at("reading", &f.path()))?.len();
                out.push((id, size));
            }
        }
        Ok(out)
    }

    /// Size of a pack, or `None` when it is missing.
    pub fn pack_size(&self, id: PackId) -> Result<Option<u64>> {
        let path = self.pack_path(id);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading", &path, e)),
        }
    }

    fn open_pack(&self, id: PackId) -> Result<Arc<File>> {
        let mut cache = self.open_packs.lock().expect("pack cache lock");
        if let Some(f) = cache.get(&id) {
            return Ok(f.clone());
        }
        let path = self.pack_path(id);
        let file = match File::open(&path) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::MissingPack(id)),
            Err(e) => return Err(Error::io("opening pack", &path, e)),
        };
        if cache.len() >= OPEN_PACKS_MAX {
            cache.clear();
        }
        cache.insert(id, file.clone());
        Ok(file)
    }

    /// Read `len` bytes at `offset` of a pack with a positional read.
    pub fn read_pack_range(&self, id: PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let file = self.open_pack(id)?;
        read_exact_at_uninit(&file, len, offset).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::CorruptPack {
                pack: id,
                detail: format!("truncated: no bytes at {offset}+{len}"),
            },
            _ => Error::io("reading pack", &self.pack_path(id), e),
        })
    }

    /// Ask the kernel to start reading `len` bytes at `offset` of a pack into the page cache
    /// and return at once (readahead ahead of a sequential reader; errors are ignored: the
    /// read itself reports them).
    pub fn advise_pack_range(&self, id: PackId, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        if let Ok(file) = self.open_pack(id) {
            // SAFETY: posix_fadvise only reads its integer arguments.
            unsafe {
                libc::posix_fadvise(
                    file.as_raw_fd(),
                    offset as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
        }
    }

    /// Read one chunk and check it against its hash.
    pub fn read_chunk(&self, id: PackId, entry: &IndexEntry) -> Result<Vec<u8>> {
        let stored = self.read_pack_range(id, entry.offset, entry.stored_len as usize)?;
        pack::decode_chunk(id, entry, &stored)
    }

    /// A whole pack's bytes (for verification).
    pub fn read_pack(&self, id: PackId) -> Result<Vec<u8>> {
        let path = self.pack_path(id);
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingPack(id),
            _ => Error::io("reading pack", &path, e),
        })
    }

    /// Just the index of a pack.
    pub fn read_pack_index(&self, id: PackId) -> Result<Vec<IndexEntry>> {
        let path = self.pack_path(id);
        if !path.exists() {
            return Err(Error::MissingPack(id));
        }
        pack::read_index_from_file(id, &path)
    }

    /// Remove a pack (only `gc` and recovery of damaged temporary state call this).
    pub fn remove_pack(&self, id: PackId) -> Result<()> {
        self.open_packs.lock().expect("pack cache lock").remove(&id);
        let path = self.pack_path(id);
        fs::remove_file(&path).map_err(Error::io_at("removing", &path))
    }

    /// Write `key` (a `/`-separated path below the store folder) durably: create-only by a
    /// hard link of a synced temporary (link() fails if the name exists, so two writers never
    /// both succeed), or replacing by a rename.
    fn put_key(&self, key: &str, bytes: &[u8], kind: PutKind) -> Result<bool> {
        let path = self.root.join(key);
        let dir = path.parent().expect("key has a parent");
        self.modes.create_dir_all(dir)?;
        if kind == PutKind::Overwrite {
            write_durably(&path, bytes, 0o444)?;
            return Ok(true);
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            super::backend::nonce()
        ));
        write_file_synced(&tmp, bytes, 0o444)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_dir(dir).map(|()| true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io("creating", &path, e)),
        }
    }

    /// The bytes at `key`, or `None` when missing.
    pub fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>> {
        read_optional(&self.root.join(key))
    }

    fn manifest_path(&self, root: RootHash) -> PathBuf {
        self.root.join(super::manifest_key(root))
    }

    /// Store a manifest durably (content-addressed: an existing one is left as is).
    pub fn put_manifest(&self, root: RootHash, bytes: &[u8]) -> Result<()> {
        let path = self.manifest_path(root);
        if path.exists() {
            return Ok(());
        }
        write_durably(&path, bytes, 0o444)
    }

    /// Move a fully written, fsynced manifest file into place (or drop it if present).
    pub fn put_manifest_file(&self, root: RootHash, tmp: &Path) -> Result<()> {
        let path = self.manifest_path(root);
        if path.exists() {
            let _ = fs::remove_file(tmp);
            return Ok(());
        }
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o444))
            .map_err(Error::io_at("setting permissions of", tmp))?;
        move_into_place(tmp, &path).map_err(Error::io_at("publishing manifest", &path))?;
        sync_dir(path.parent().expect("manifest dir"))
    }

    /// A manifest's bytes, or `None` when missing.
    pub fn get_manifest(&self, root: RootHash) -> Result<Option<Vec<u8>>> {
        read_optional(&self.manifest_path(root))
    }

    fn ref_path(&self, kind: &str, name: &str, version: &str) -> PathBuf {
        self.root.join(super::ref_key(kind, name, version))
    }

    /// Create `refs/<kind>/<name>/<version>` naming `root`, never overwriting.
    pub fn create_ref(&self, kind: &str, name: &str, version: &str, root: RootHash) -> Result<RefOutcome> {
        let path = self.ref_path(kind, name, version);
        if let Some(existing) = self.read_ref(kind, name, version)? {
            return Ok(RefOutcome::found(existing, root));
        }
        let dir = path.parent().expect("ref has a parent");
        self.modes.create_dir_all(dir)?;
        // Write a temporary file, then hard-link it into place: link() fails if the ref
        // exists, so two writers can never both succeed, and readers never see a partial ref.
        let tmp = dir.join(format!(".{version}.{}.tmp", std::process::id()));
        write_file_synced(&tmp, format!("{}\n", root.to_hex()).as_bytes(), 0o444)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(dir)?;
                Ok(RefOutcome::Created)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let existing = self.read_ref(kind, name, version)?.expect("ref exists");
                Ok(RefOutcome::found(existing, root))
            }
            Err(e) => Err(Error::io("creating ref", &path, e)),
        }
    }

    /// Delete a ref (only `rm` of a dataset calls this, after the catalog forgot it) and fsync
    /// its folder. A missing ref is not an error, so an interrupted `rm` can run again.
    pub fn remove_ref(&self, kind: &str, name: &str, version: &str) -> Result<()> {
        let path = self.ref_path(kind, name, version);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().expect("ref has a parent")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing ref", &path, e)),
        }
    }

    /// The root a ref names, or `None`.
    pub fn read_ref(&self, kind: &str, name: &str, version: &str) -> Result<Option<RootHash>> {
        let path = self.ref_path(kind, name, version);
        read_optional(&path)?
            .map(|bytes| super::parse_ref(&path.display().to_string(), &bytes))
            .transpose()
    }
}

impl LocalStore {
    /// Every ref in the store with the root it names. Entries that are not valid refs
    /// (temporaries, foreign files) are skipped.
    pub fn list_refs(&self) -> Result<Vec<StoredRef>> {
        let mut out = Vec::new();
        for kind in [crate::Kind::Gold, crate::Kind::Derived] {
            let kind_dir = self.root.join("refs").join(kind.as_str());
            for name in sub_names(&kind_dir)? {
                for version in sub_names(&kind_dir.join(&name))? {
                    let Ok(dataset) = crate::DatasetName::new(kind, &name, &version) else {
                        continue;
                    };
                    if let Some(root) = self.read_ref(kind.as_str(), &name, &version)? {
                        out.push(StoredRef { dataset, root });
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Backend for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn reads_are_requests(&self) -> bool {
        false
    }

    fn probe(&self) -> Result<()> {
        fs::metadata(&self.root).map_err(Error::io_at("opening store", &self.root))?;
        Ok(())
    }

    fn puts_in_flight(&self) -> usize {
        1
    }

    fn begin_put_pack(&self, sealed: &SealedPack) -> PendingPut {
        PendingPut::done(self.put_pack(sealed).inspect_err(|_| {
            let _ = fs::remove_file(&sealed.tmp_path);
        }))
    }

    fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        LocalStore::list_packs(self)
    }

    fn pack_size(&self, id: PackId) -> Result<Option<u64>> {
        LocalStore::pack_size(self, id)
    }

    fn read_pack_range(&self, id: PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        LocalStore::read_pack_range(self, id, offset, len)
    }

    /// Ask the kernel to read the chunks into its page cache, neighbours within 1 MiB of
    /// each other in one range.
    fn advise_chunks(&self, chunks: &[(PackId, u64, u64)]) {
        let mut run: Option<(PackId, u64, u64)> = None;
        for &(pack, off, len) in chunks {
            match &mut run {
                Some((p, start, end)) if *p == pack && off >= *start && off <= *end + (1 << 20) => {
                    *end = (*end).max(off + len)
                }
                _ => {
                    if let Some((p, start, end)) = run.take() {
                        self.advise_pack_range(p, start, end - start);
                    }
                    run = Some((pack, off, off + len));
                }
            }
        }
        if let Some((p, start, end)) = run {
            self.advise_pack_range(p, start, end - start);
        }
    }

    fn read_pack(&self, id: PackId) -> Result<Vec<u8>> {
        LocalStore::read_pack(self, id)
    }

    fn read_pack_index(&self, id: PackId) -> Result<Vec<IndexEntry>> {
        LocalStore::read_pack_index(self, id)
    }

    fn remove_pack(&self, id: PackId) -> Result<()> {
        LocalStore::remove_pack(self, id)
    }

    fn put_manifest(&self, root: RootHash, bytes: &[u8]) -> Result<()> {
        LocalStore::put_manifest(self, root, bytes)
    }

    fn put_manifest_file(&self, root: RootHash, tmp: &Path) -> Result<()> {
        LocalStore::put_manifest_file(self, root, tmp)
    }

    fn get_manifest(&self, root: RootHash) -> Result<Option<Vec<u8>>> {
        LocalStore::get_manifest(self, root)
    }

    fn create_ref(&self, kind: &str, name: &str, version: &str, root: RootHash) -> Result<RefOutcome> {
        LocalStore::create_ref(self, kind, name, version, root)
    }

    fn ref_owner(&self, kind: &str, name: &str, version: &str) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(self.ref_path(kind, name, version))
            .ok()
            .map(|m| m.uid())
    }

    fn remove_ref(&self, kind: &str, name: &str, version: &str) -> Result<()> {
        LocalStore::remove_ref(self, kind, name, version)
    }

    fn read_ref(&self, kind: &str, name: &str, version: &str) -> Result<Option<RootHash>> {
        LocalStore::read_ref(self, kind, name, version)
    }

    fn list_refs(&self) -> Result<Vec<StoredRef>> {
        LocalStore::list_refs(self)
    }

    fn put_object(&self, key: &str, bytes: &[u8], kind: PutKind) -> Result<bool> {
        self.put_key(key, bytes, kind)
    }

    fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>> {
        LocalStore::get_object(self, key)
    }

    fn head_object(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.root.join(key);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(object_info(key.to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading", &path, e)),
        }
    }

    fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let top = self.root.join(prefix);
        for e in walkdir::WalkDir::new(&top).follow_links(false) {
            let e = match e {
                Ok(e) => e,
                Err(e) if e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) => continue,
                Err(e) => return Err(Error::io("listing", &top, e.into())),
            };
            let hidden = e.file_name().to_str().is_none_or(|n| n.starts_with('.'));
            if !e.file_type().is_file() || hidden {
                continue;
            }
            let Some(key) = e.path().strip_prefix(&self.root).ok().and_then(|k| k.to_str()) else {
                continue;
            };
            let m = e.metadata().map_err(|err| Error::io("reading", e.path(), err.into()))?;
            out.push(object_info(key.to_string(), &m));
        }
        Ok(out)
    }

    fn delete_object(&self, key: &str) -> Result<()> {
        let path = self.root.join(key);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().expect("key has a parent")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }
}

/// An object's listing entry from its file's metadata (mtime in whole seconds, as an object
/// store's `Last-Modified`).
fn object_info(key: String, m: &fs::Metadata) -> ObjectInfo {
    use std::os::unix::fs::MetadataExt;
    ObjectInfo {
        key,
        size: m.len(),
        modified: m.mtime(),
    }
}

/// Names in a folder (none when it does not exist), skipping hidden temporaries.
fn sub_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(Error::io_at("listing", dir))?;
        if let Some(n) = e.file_name().to_str().filter(|n| !n.starts_with('.')) {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// Write a file, fsync it, and set its mode.
fn write_file_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = File::create(path).map_err(Error::io_at("creating", path))?;
    f.write_all(bytes).map_err(Error::io_at("writing", path))?;
    f.sync_all().map_err(Error::io_at("syncing", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Error::io_at("setting permissions of", path))
}

/// Write `bytes` to `path` atomically and durably: temporary file, fsync, rename, fsync dir.
pub(crate) fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().expect("path has a parent");
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    write_file_synced(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).map_err(Error::io_at("renaming into place", path))?;
    sync_dir(dir)
}

/// Rename `from` to `to`; when they are on different file systems (a `file://` store outside
/// the vault folder), copy to a temporary name beside `to`, fsync it, rename it, and remove
/// `from`. Either way `to` appears whole or not at all.
fn move_into_place(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let name = to
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = to.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
            let copied = fs::copy(from, &tmp)
                .and_then(|_| File::open(&tmp)?.sync_all())
                .and_then(|_| fs::rename(&tmp, to));
            if copied.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            copied?;
            fs::remove_file(from)
        }
        other => other,
    }
}

/// fsync a directory so that renames and creations in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io_at("syncing directory", dir))
}

/// `len` bytes at `offset` of `file`, read into a fresh buffer without zeroing it first.
fn read_exact_at_uninit(file: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut done = 0;
    while done < len {
        // SAFETY: the destination is the buffer's unused capacity from `done` to `len`.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(done).cast(),
                len - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as usize,
        }
    }
    // SAFETY: pread initialised all `len` bytes.
    unsafe { buf.set_len(len) };
    Ok(buf)
}
