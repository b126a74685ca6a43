//! The chunk store: packs, manifests and refs, as immutable named objects.
//!
//! Owns: the one `Store` type the rest of the library talks to, the [`Backend`] contract
//! every backend keeps, and which backend serves a store URL. `file://` is
//! [`local::LocalStore`], a folder read with positional reads;
//! `s3://`, `gs://` and `az://` are [`remote::RemoteStore`], an `object_store` client with
//! its own tokio runtime and an on-disk cache of the pack byte ranges (chunks) it read. Both keep the same layout
//! (`packs/<2 hex>/<hash>.pack`, `manifests/<root>.json`, `refs/<kind>/<name>/<version>`)
//! and the same guarantees: objects are immutable, a pack is visible only whole, a ref is
//! created once and never rewritten.
//! Never: interprets chunk bytes or touches the catalog.

mod backend;
mod extents;
mod local;
mod remote;
pub mod shared;
mod url;

use std::path::Path;

pub use backend::{prove_create_only, Backend, ObjectInfo, PutKind};
pub use local::LocalStore;
pub use remote::{RemoteStats, RemoteStore};
pub use url::StoreUrl;

use crate::config::RemoteConfig;
use crate::dataset::DatasetName;
use crate::error::{Error, Result};
use crate::id::{PackId, RootHash};
use crate::pack::{self, IndexEntry, SealedPack};
use crate::sharing::Modes;

pub(crate) use local::write_durably;

/// What creating a ref found.
#[derive(Debug, PartialEq, Eq)]
pub enum RefOutcome {
    Created,
    /// The ref already named the same root.
    AlreadyPresent,
    /// The ref names another root: the dataset exists with other content.
    Conflict(RootHash),
}

impl RefOutcome {
    /// What finding `existing` in place of a ref about to name `ours` means.
    pub(crate) fn found(existing: RootHash, ours: RootHash) -> RefOutcome {
        if existing == ours {
            RefOutcome::AlreadyPresent
        } else {
            RefOutcome::Conflict(existing)
        }
    }
}

/// A ref found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRef {
    pub dataset: DatasetName,
    pub root: RootHash,
}

/// A store: one [`Backend`] (a local folder or an object store bucket) behind the methods
/// the rest of the library calls.
pub struct Store {
    backend: Box<dyn Backend>,
    /// The lease this process writes under, on a shared store (src/store/shared.rs).
    lease: std::sync::Mutex<Option<shared::ActiveLease>>,
}

/// A pack on its way into the store; [`PendingPut::wait`] returns once it is durable there
/// (for a remote store: uploaded and checked).
#[must_use = "a pack is in the store only once wait() returned Ok"]
pub struct PendingPut(Pending);

enum Pending {
    Done(Result<()>),
    Remote(remote::Upload),
}

impl PendingPut {
    /// A put that has already finished.
    pub(crate) fn done(result: Result<()>) -> Self {
        PendingPut(Pending::Done(result))
    }

    /// Block until the pack is durable in the store (or failed to get there).
    pub fn wait(self) -> Result<()> {
        match self.0 {
            Pending::Done(r) => r,
            Pending::Remote(u) => u.wait(),
        }
    }
}

impl Store {
    /// Open the store named by `url` for the vault at `vault_dir`: a relative `file://` path
    /// is relative to the vault, and a remote store caches under `<vault>/cache`.
    pub fn open(vault_dir: &Path, url: &StoreUrl, settings: &RemoteConfig) -> Result<Self> {
        Store::open_with(vault_dir, url, settings, Modes::PRIVATE, None)
    }

    /// [`Store::open`] for a vault whose writers create folders with `modes` (a shared
    /// vault's: setgid, group-writable), with a remote store's block cache in `cache_dir`
    /// instead of `<vault>/cache` when given (created if missing; an error when it cannot
    /// be: a cache asked for by name that silently caches nothing would only be slow).
    pub fn open_with(
        vault_dir: &Path,
        url: &StoreUrl,
        settings: &RemoteConfig,
        modes: Modes,
        cache_dir: Option<&Path>,
    ) -> Result<Self> {
        let backend: Box<dyn Backend> = match url {
            StoreUrl::Local(path) => {
                let root = if path.is_absolute() {
                    path.clone()
                } else {
                    vault_dir.join(path)
                };
                Box::new(LocalStore::open_local(&root, modes)?)
            }
            remote => {
                let cache = match cache_dir {
                    Some(dir) => {
                        std::fs::create_dir_all(dir).map_err(Error::io_at("creating the cache folder", dir))?;
                        if !crate::sharing::may(dir, libc::W_OK | libc::X_OK) {
                            let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
                            return Err(Error::io("writing to the cache folder", dir, denied));
                        }
                        dir.to_path_buf()
                    }
                    None => vault_dir.join("cache"),
                };
                Box::new(RemoteStore::open(remote, &cache, settings)?)
            }
        };
        Ok(Store::from_backend(backend))
    }

    /// A store served by `backend` (tests use this to wrap one).
    pub fn from_backend(backend: Box<dyn Backend>) -> Self {
        Store {
            backend,
            lease: std::sync::Mutex::new(None),
        }
    }

    /// The backend itself: the object-level contract (generic objects, listings with store
    /// times) that gc and its leases use.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The store's URL, for messages.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Reads are network requests: ask for chunks ahead, avoid whole-pack reads.
    pub fn reads_are_requests(&self) -> bool {
        self.backend.reads_are_requests()
    }

    /// Check the store answers and refuses a second create-only write (for `init`).
    pub fn probe(&self) -> Result<()> {
        self.backend.probe()?;
        backend::prove_create_only(self.backend.as_ref())
    }

    /// Requests and bytes moved by this process (remote stores only).
    pub fn remote_stats(&self) -> Option<RemoteStats> {
        self.backend.stats()
    }

    /// Bytes the on-disk cache of a remote store may hold (no effect on a local store).
    pub fn set_cache_capacity(&self, bytes: u64) {
        self.backend.set_cache_capacity(bytes)
    }

    /// How many packs may be on their way into the store at once (1 for a local store,
    /// where publishing is a rename).
    pub fn puts_in_flight(&self) -> usize {
        self.backend.puts_in_flight()
    }

    /// Start publishing a sealed pack; its temporary file is consumed either way.
    pub fn begin_put_pack(&self, sealed: &SealedPack) -> PendingPut {
        if let Err(e) = self.check_not_condemned(&pack_key(sealed.id)) {
            let _ = std::fs::remove_file(&sealed.tmp_path);
            return PendingPut::done(Err(e));
        }
        self.backend.begin_put_pack(sealed)
    }

    /// Publish a sealed pack and wait until it is durable.
    pub fn put_pack(&self, sealed: &SealedPack) -> Result<()> {
        self.begin_put_pack(sealed).wait()
    }

    /// Every pack in the store with its size.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        self.backend.list_packs()
    }

    /// Size of a pack, or `None` when it is missing.
    pub fn pack_size(&self, id: PackId) -> Result<Option<u64>> {
        self.backend.pack_size(id)
    }

    /// `len` bytes at `offset` of a pack.
    pub fn read_pack_range(&self, id: PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.backend.read_pack_range(id, offset, len)
    }

    /// Start fetching the stored bytes of chunks, `(pack, offset, stored length)` in the
    /// order they will be read, ahead of a reader, and return at once (errors are ignored:
    /// the read itself reports them). A local store asks the kernel to read them into its
    /// page cache, neighbours within 1 MiB of each other in one range; a remote store fetches
    /// them into its cache, chunks that follow each other in a pack in one GET, so the later
    /// [`Store::read_chunk`]s of exactly these ranges find them there.
    pub fn advise_chunks(&self, chunks: &[(PackId, u64, u64)]) {
        self.backend.advise_chunks(chunks)
    }

    /// Read one chunk and check it against its hash.
    pub fn read_chunk(&self, id: PackId, entry: &IndexEntry) -> Result<Vec<u8>> {
        let stored = self.read_pack_range(id, entry.offset, entry.stored_len as usize)?;
        pack::decode_chunk(id, entry, &stored)
    }

    /// A whole pack's bytes (for verification).
    pub fn read_pack(&self, id: PackId) -> Result<Vec<u8>> {
        self.backend.read_pack(id)
    }

    /// Just the index of a pack.
    pub fn read_pack_index(&self, id: PackId) -> Result<Vec<IndexEntry>> {
        self.backend.read_pack_index(id)
    }

    /// The indexes of many packs of known sizes, in the order given (a remote store reads
    /// several at once).
    pub fn read_pack_indexes(&self, packs: &[(PackId, u64)]) -> Vec<Result<Vec<IndexEntry>>> {
        self.backend.read_pack_indexes(packs)
    }

    /// Remove a pack (only `gc` and recovery of damaged temporary state call this).
    pub fn remove_pack(&self, id: PackId) -> Result<()> {
        self.backend.remove_pack(id)
    }

    /// Store a manifest durably (content-addressed: an existing one is left as is).
    pub fn put_manifest(&self, root: RootHash, bytes: &[u8]) -> Result<()> {
        self.check_not_condemned(&manifest_key(root))?;
        self.backend.put_manifest(root, bytes)
    }

    /// Publish a fully written, fsynced manifest file (or drop it if present); the file is
    /// consumed.
    pub fn put_manifest_file(&self, root: RootHash, tmp: &Path) -> Result<()> {
        if let Err(e) = self.check_not_condemned(&manifest_key(root)) {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
        self.backend.put_manifest_file(root, tmp)
    }

    /// A manifest's bytes, or `None` when missing.
    pub fn get_manifest(&self, root: RootHash) -> Result<Option<Vec<u8>>> {
        self.backend.get_manifest(root)
    }

    /// Publish the lineage record of `kind/name@version` with root `root` (an existing one is
    /// left as is). Written before the ref, so a dataset that other machines can see always
    /// has its lineage in the store.
    pub fn put_lineage(&self, kind: &str, name: &str, version: &str, root: RootHash, bytes: &[u8]) -> Result<()> {
        let key = lineage_key(kind, name, version, root);
        self.check_not_condemned(&key)?;
        self.backend.put_object(&key, bytes, PutKind::Create).map(|_| ())
    }

    /// The lineage record of `kind/name@version` with root `root`, if the store has one.
    pub fn get_lineage(&self, kind: &str, name: &str, version: &str, root: RootHash) -> Result<Option<Vec<u8>>> {
        self.backend.get_object(&lineage_key(kind, name, version, root))
    }

    /// Create `refs/<kind>/<name>/<version>` naming `root`, never overwriting; under a lease,
    /// only while the lease lasts (a ref created too late is deleted again and refused).
    pub fn create_ref(&self, kind: &str, name: &str, version: &str, root: RootHash) -> Result<RefOutcome> {
        self.create_ref_leased(kind, name, version, root)
    }

    /// Delete a ref (only `rm` of a dataset calls this). A missing ref is not an error.
    pub fn remove_ref(&self, kind: &str, name: &str, version: &str) -> Result<()> {
        self.backend.remove_ref(kind, name, version)
    }

    /// The user id owning a ref's file (who sealed the dataset), for a local store.
    pub fn ref_owner(&self, kind: &str, name: &str, version: &str) -> Option<u32> {
        self.backend.ref_owner(kind, name, version)
    }

    /// The root a ref names, or `None`.
    pub fn read_ref(&self, kind: &str, name: &str, version: &str) -> Result<Option<RootHash>> {
        self.backend.read_ref(kind, name, version)
    }

    /// Every ref in the store.
    pub fn list_refs(&self) -> Result<Vec<StoredRef>> {
        self.backend.list_refs()
    }

    /// The store's clock now, in seconds since the epoch: the time the store stamps on an
    /// object written now (written, read back, deleted). Machines compare times only
    /// through this, so their own clocks never matter.
    pub fn server_time(&self) -> Result<i64> {
        let key = format!("clock/{}", backend::nonce());
        self.backend.put_object(&key, b"", PutKind::Overwrite)?;
        let info = self.backend.head_object(&key);
        let _ = self.backend.delete_object(&key);
        info?.map(|i| i.modified).ok_or_else(|| Error::UploadCheck {
            location: format!("{}/{key}", self.describe()),
            detail: "has no object there right after writing it".into(),
        })
    }
}

/// Key (relative path) of a pack in the store layout.
pub(crate) fn pack_key(id: PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{hex}.pack", &hex[..2])
}

/// Key of a manifest.
pub(crate) fn manifest_key(root: RootHash) -> String {
    format!("manifests/{}.json", root.to_hex())
}

/// Key of a derived dataset's lineage record: beside its ref, and named by its root too, so
/// a writer that loses the race for the ref leaves only an unused record behind.
pub(crate) fn lineage_key(kind: &str, name: &str, version: &str, root: RootHash) -> String {
    format!("lineage/{kind}/{name}/{version}/{}.json", root.to_hex())
}

/// Key of a ref.
pub(crate) fn ref_key(kind: &str, name: &str, version: &str) -> String {
    format!("refs/{kind}/{name}/{version}")
}

/// Parse the body of a ref object/file.
pub(crate) fn parse_ref(key: &str, bytes: &[u8]) -> Result<RootHash> {
    let text = String::from_utf8_lossy(bytes);
    text.trim()
        .parse()
        .map_err(|_| crate::error::Error::Manifest(format!("ref {key} is damaged: {text:?}")))
}
