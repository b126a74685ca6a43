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

use super::{RefOutcome, StoredRef};
use crate::error::{Error, Result};
use crate::id::{PackId, RootHash};
use crate::pack::{self, IndexEntry, SealedPack};

/// Open pack files kept for positional reads.
const OPEN_PACKS_MAX: usize = 256;

/// A local folder store.
pub struct LocalStore {
    root: PathBuf,
    open_packs: Mutex<HashMap<PackId, Arc<File>>>,
}

impl LocalStore {
    /// Open (and create the folders of) a local store at `root`.
    pub fn open_local(root: &Path) -> Result<Self> {
        for sub in ["packs", "manifests", "refs"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(Error::io_at("creating", &dir))?;
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
            open_packs: Mutex::new(HashMap::new()),
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
        fs::create_dir_all(dir).map_err(Error::io_at("creating", dir))?;
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

    /// Write `key` (a `/`-separated path below the store folder) durably, unless it exists.
    pub fn put_object_once(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.root.join(key);
        if path.exists() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(Error::io_at("creating", dir))?;
        }
        write_durably(&path, bytes, 0o444)
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
        fs::create_dir_all(dir).map_err(Error::io_at("creating", dir))?;
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
