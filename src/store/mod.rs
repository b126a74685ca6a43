//! The chunk store: packs, manifests and refs, as immutable named objects.
//!
//! Owns: the one `Store` type the rest of the library talks to, and which backend serves a
//! store URL. `file://` is [`local::LocalStore`], a folder read with positional reads;
//! `s3://`, `gs://` and `az://` are [`remote::RemoteStore`], an `object_store` client with
//! its own tokio runtime and an on-disk cache of the pack byte ranges (chunks) it read. Both keep the same layout
//! (`packs/<2 hex>/<hash>.pack`, `manifests/<root>.json`, `refs/<kind>/<name>/<version>`)
//! and the same guarantees: objects are immutable, a pack is visible only whole, a ref is
//! created once and never rewritten.
//! Never: interprets chunk bytes or touches the catalog.

mod extents;
mod local;
mod remote;
mod url;

use std::path::Path;

pub use local::LocalStore;
pub use remote::{RemoteStats, RemoteStore};
pub use url::StoreUrl;

use crate::config::RemoteConfig;
use crate::dataset::DatasetName;
use crate::error::Result;
use crate::id::{PackId, RootHash};
use crate::pack::{self, IndexEntry, SealedPack};

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

/// A store of either kind.
pub struct Store {
    backend: Backend,
}

enum Backend {
    Local(LocalStore),
    Remote(RemoteStore),
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
        let backend = match url {
            StoreUrl::Local(path) => {
                let root = if path.is_absolute() {
                    path.clone()
                } else {
                    vault_dir.join(path)
                };
                Backend::Local(LocalStore::open_local(&root)?)
            }
            remote => Backend::Remote(RemoteStore::open(remote, &vault_dir.join("cache"), settings)?),
        };
        Ok(Store { backend })
    }

    /// The remote backend, when this store is one.
    pub fn remote(&self) -> Option<&RemoteStore> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Remote(r) => Some(r),
        }
    }

    pub fn is_remote(&self) -> bool {
        self.remote().is_some()
    }

    /// Bytes the on-disk cache of a remote store may hold (no effect on a local store).
    pub fn set_cache_capacity(&self, bytes: u64) {
        if let Some(r) = self.remote() {
            r.set_cache_capacity(bytes);
        }
    }

    /// How many packs may be on their way into the store at once (1 for a local store,
    /// where publishing is a rename).
    pub fn puts_in_flight(&self) -> usize {
        match &self.backend {
            Backend::Local(_) => 1,
            Backend::Remote(r) => r.uploads_in_flight(),
        }
    }

    /// Start publishing a sealed pack; its temporary file is consumed either way.
    pub fn begin_put_pack(&self, sealed: &SealedPack) -> PendingPut {
        PendingPut(match &self.backend {
            Backend::Local(l) => Pending::Done(l.put_pack(sealed).inspect_err(|_| {
                let _ = std::fs::remove_file(&sealed.tmp_path);
            })),
            Backend::Remote(r) => Pending::Remote(r.begin_upload(sealed)),
        })
    }

    /// Publish a sealed pack and wait until it is durable.
    pub fn put_pack(&self, sealed: &SealedPack) -> Result<()> {
        self.begin_put_pack(sealed).wait()
    }

    /// Every pack in the store with its size.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        match &self.backend {
            Backend::Local(l) => l.list_packs(),
            Backend::Remote(r) => r.list_packs(),
        }
    }

    /// Size of a pack, or `None` when it is missing.
    pub fn pack_size(&self, id: PackId) -> Result<Option<u64>> {
        match &self.backend {
            Backend::Local(l) => l.pack_size(id),
            Backend::Remote(r) => r.pack_size(id),
        }
    }

    /// `len` bytes at `offset` of a pack.
    pub fn read_pack_range(&self, id: PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        match &self.backend {
            Backend::Local(l) => l.read_pack_range(id, offset, len),
            Backend::Remote(r) => r.read_pack_range(id, offset, len),
        }
    }

    /// Start fetching the stored bytes of chunks, `(pack, offset, stored length)` in the
    /// order they will be read, ahead of a reader, and return at once (errors are ignored:
    /// the read itself reports them). A local store asks the kernel to read them into its
    /// page cache, neighbours within 1 MiB of each other in one range; a remote store fetches
    /// them into its cache, chunks that follow each other in a pack in one GET, so the later
    /// [`Store::read_chunk`]s of exactly these ranges find them there.
    pub fn advise_chunks(&self, chunks: &[(PackId, u64, u64)]) {
        match &self.backend {
            Backend::Local(l) => {
                let mut run: Option<(PackId, u64, u64)> = None;
                for &(pack, off, len) in chunks {
                    match &mut run {
                        Some((p, start, end)) if *p == pack && off >= *start && off <= *end + (1 << 20) => {
                            *end = (*end).max(off + len)
                        }
                        _ => {
                            if let Some((p, start, end)) = run.take() {
                                l.advise_pack_range(p, start, end - start);
                            }
                            run = Some((pack, off, off + len));
                        }
                    }
                }
                if let Some((p, start, end)) = run {
                    l.advise_pack_range(p, start, end - start);
                }
            }
            Backend::Remote(r) => r.prefetch(chunks),
        }
    }

    /// Read one chunk and check it against its hash.
    pub fn read_chunk(&self, id: PackId, entry: &IndexEntry) -> Result<Vec<u8>> {
        let stored = self.read_pack_range(id, entry.offset, entry.stored_len as usize)?;
        pack::decode_chunk(id, entry, &stored)
    }

    /// A whole pack's bytes (for verification).
    pub fn read_pack(&self, id: PackId) -> Result<Vec<u8>> {
        match &self.backend {
            Backend::Local(l) => l.read_pack(id),
            Backend::Remote(r) => r.read_pack(id),
        }
    }

    /// Just the index of a pack.
    pub fn read_pack_index(&self, id: PackId) -> Result<Vec<IndexEntry>> {
        match &self.backend {
            Backend::Local(l) => l.read_pack_index(id),
            Backend::Remote(r) => r.read_pack_index(id),
        }
    }

    /// The indexes of many packs of known sizes, in the order given (a remote store reads
    /// several at once).
    pub fn read_pack_indexes(&self, packs: &[(PackId, u64)]) -> Vec<Result<Vec<IndexEntry>>> {
        match &self.backend {
            Backend::Local(l) => packs.iter().map(|(id, _)| l.read_pack_index(*id)).collect(),
            Backend::Remote(r) => r.read_pack_indexes(packs),
        }
    }

    /// Remove a pack (only `gc` and recovery of damaged temporary state call this).
    pub fn remove_pack(&self, id: PackId) -> Result<()> {
        match &self.backend {
            Backend::Local(l) => l.remove_pack(id),
            Backend::Remote(r) => r.remove_pack(id),
        }
    }

    /// Store a manifest durably (content-addressed: an existing one is left as is).
    pub fn put_manifest(&self, root: RootHash, bytes: &[u8]) -> Result<()> {
        match &self.backend {
            Backend::Local(l) => l.put_manifest(root, bytes),
            Backend::Remote(r) => r.put_manifest(root, bytes),
        }
    }

    /// Publish a fully written, fsynced manifest file (or drop it if present); the file is
    /// consumed.
    pub fn put_manifest_file(&self, root: RootHash, tmp: &Path) -> Result<()> {
        match &self.backend {
            Backend::Local(l) => l.put_manifest_file(root, tmp),
            Backend::Remote(r) => r.put_manifest_file(root, tmp),
        }
    }

    /// A manifest's bytes, or `None` when missing.
    pub fn get_manifest(&self, root: RootHash) -> Result<Option<Vec<u8>>> {
        match &self.backend {
            Backend::Local(l) => l.get_manifest(root),
            Backend::Remote(r) => r.get_manifest(root),
        }
    }

    /// Publish the lineage record of `kind/name@version` with root `root` (an existing one is
    /// left as is). Written before the ref, so a dataset that other machines can see always
    /// has its lineage in the store.
    pub fn put_lineage(&self, kind: &str, name: &str, version: &str, root: RootHash, bytes: &[u8]) -> Result<()> {
        let key = lineage_key(kind, name, version, root);
        match &self.backend {
            Backend::Local(l) => l.put_object_once(&key, bytes),
            Backend::Remote(r) => r.put_object_once(&key, bytes),
        }
    }

    /// The lineage record of `kind/name@version` with root `root`, if the store has one.
    pub fn get_lineage(&self, kind: &str, name: &str, version: &str, root: RootHash) -> Result<Option<Vec<u8>>> {
        let key = lineage_key(kind, name, version, root);
        match &self.backend {
            Backend::Local(l) => l.get_object(&key),
            Backend::Remote(r) => r.get_object(&key),
        }
    }

    /// Create `refs/<kind>/<name>/<version>` naming `root`, never overwriting.
    pub fn create_ref(&self, kind: &str, name: &str, version: &str, root: RootHash) -> Result<RefOutcome> {
        match &self.backend {
            Backend::Local(l) => l.create_ref(kind, name, version, root),
            Backend::Remote(r) => r.create_ref(kind, name, version, root),
        }
    }

    /// Delete a ref (only `rm` of a dataset calls this). A missing ref is not an error.
    pub fn remove_ref(&self, kind: &str, name: &str, version: &str) -> Result<()> {
        match &self.backend {
            Backend::Local(l) => l.remove_ref(kind, name, version),
            Backend::Remote(r) => r.remove_ref(kind, name, version),
        }
    }

    /// The root a ref names, or `None`.
    pub fn read_ref(&self, kind: &str, name: &str, version: &str) -> Result<Option<RootHash>> {
        match &self.backend {
            Backend::Local(l) => l.read_ref(kind, name, version),
            Backend::Remote(r) => r.read_ref(kind, name, version),
        }
    }

    /// Every ref in the store.
    pub fn list_refs(&self) -> Result<Vec<StoredRef>> {
        match &self.backend {
            Backend::Local(l) => l.list_refs(),
            Backend::Remote(r) => r.list_refs(),
        }
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
