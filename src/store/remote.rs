//! The remote store: packs, manifests and refs as objects in S3, GCS or Azure, through
//! `object_store`.
//!
//! Owns: the tokio runtime that drives the `object_store` client (the rest of the library
//! stays synchronous and blocks on it); uploads of sealed packs (whole or multipart, several
//! at once) and their checks (HEAD size always, full read-back and blake3 on a sample or all
//! of them); create-only refs; ranged reads of exactly the pack bytes asked for (a chunk)
//! through the on-disk [`ExtentCache`], and prefetch on request of many chunks, neighbours
//! in a pack coalesced into one GET, several GETs at once; bounded waits: every request has a timeout and a
//! bounded number of retries with backoff (`object_store`'s), and every operation an
//! overall deadline, so an unreachable store fails with an error and a log line instead of
//! hanging.
//! Never: writes credentials anywhere, or deletes objects other than by explicit request.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use serde::Serialize;

use super::backend::{Backend, ObjectInfo, PutKind};
use super::extents::{ExtentCache, ExtentKey};
use super::{manifest_key, pack_key, parse_ref, ref_key, Pending, PendingPut, RefOutcome, StoreUrl, StoredRef};
use crate::config::RemoteConfig;
use crate::error::{Error, Result};
use crate::id::{PackId, RootHash};
use crate::pack::{self, IndexEntry, SealedPack};

/// Default bound of the on-disk cache until the command sets one (`--cache-size`).
pub const DEFAULT_CACHE_BYTES: u64 = 4 << 30;
/// Prefetch GETs in flight at once (each up to `max_get_size`).
const PREFETCH_REQUESTS: usize = 8;
/// Requests run at once for listings, index reads and the like.
const PARALLEL_REQUESTS: usize = 16;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// An index read fetches this much of a pack's tail at first, which usually holds the whole
/// index (56 bytes per chunk) and the footer.
const INDEX_TAIL: u64 = 64 << 10;

/// Requests and bytes moved by this process (for `--json` reports and the benchmark).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemoteStats {
    pub get_requests: u64,
    pub bytes_fetched: u64,
    pub put_requests: u64,
    pub bytes_uploaded: u64,
    /// Packs found already in the store (same size) and not uploaded again.
    pub packs_already_present: u64,
    pub cache_hits: u64,
    /// Bytes of the on-disk block cache this process accounts for.
    pub cache_bytes: u64,
}

#[derive(Default)]
struct Counters {
    get_requests: AtomicU64,
    bytes_fetched: AtomicU64,
    put_requests: AtomicU64,
    bytes_uploaded: AtomicU64,
    packs_already_present: AtomicU64,
    cache_hits: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A store in an object store bucket.
pub struct RemoteStore {
    rt: tokio::runtime::Runtime,
    inner: Arc<Inner>,
}

struct Inner {
    client: Arc<dyn ObjectStore>,
    url: StoreUrl,
    settings: RemoteConfig,
    cache: ExtentCache,
    /// Sizes of packs seen (a pack never changes size).
    sizes: Mutex<HashMap<PackId, u64>>,
    fetching: FetchGate,
    /// Bounds the prefetch GETs in flight.
    prefetch_slots: tokio::sync::Semaphore,
    counters: Counters,
}

/// A pack upload running on the store's runtime.
pub struct Upload {
    task: tokio::task::JoinHandle<Result<()>>,
    rt: tokio::runtime::Handle,
}

impl Upload {
    pub fn wait(self) -> Result<()> {
        self.rt.block_on(self.task).unwrap_or_else(|e| {
            Err(Error::Remote {
                action: "uploading",
                location: "a pack".into(),
                detail: format!("the upload task failed: {e}"),
            })
        })
    }
}

impl RemoteStore {
    /// Connect to the store named by `url` (nothing is requested yet) with its block cache
    /// under `cache_dir`.
    pub fn open(url: &StoreUrl, cache_dir: &Path, settings: &RemoteConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("dsvault-store")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the store runtime for", cache_dir, e))?;
        let client = {
            let _in_runtime = rt.enter();
            url.client(settings)?
        };
        Ok(RemoteStore {
            rt,
            inner: Arc::new(Inner {
                client,
                url: url.clone(),
                settings: *settings,
                cache: ExtentCache::open(cache_dir, DEFAULT_CACHE_BYTES),
                sizes: Mutex::new(HashMap::new()),
                fetching: FetchGate::default(),
                prefetch_slots: tokio::sync::Semaphore::new(PREFETCH_REQUESTS),
                counters: Counters::default(),
            }),
        })
    }

    pub fn url(&self) -> &StoreUrl {
        &self.inner.url
    }

    pub fn set_cache_capacity(&self, bytes: u64) {
        self.inner.cache.set_capacity(bytes);
    }

    pub fn uploads_in_flight(&self) -> usize {
        self.inner.settings.uploads_in_flight
    }

    /// What this process has requested so far.
    pub fn stats(&self) -> RemoteStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteStats {
            get_requests: get(&c.get_requests),
            bytes_fetched: get(&c.bytes_fetched),
            put_requests: get(&c.put_requests),
            bytes_uploaded: get(&c.bytes_uploaded),
            packs_already_present: get(&c.packs_already_present),
            cache_hits: get(&c.cache_hits),
            cache_bytes: self.inner.cache.bytes(),
        }
    }

    /// Check that the bucket answers (a listing of `refs/`): `init` fails early on a wrong
    /// bucket, endpoint or credentials instead of at the first ingest.
    pub fn probe(&self) -> Result<()> {
        let inner = &self.inner;
        self.rt.block_on(inner.call("listing", "refs/", async {
            inner
                .client
                .list(Some(&Key::from("refs")))
                .take(1)
                .try_collect::<Vec<_>>()
                .await
        }))?;
        Ok(())
    }

    // ---- packs ------------------------------------------------------------------------

    /// Start uploading a sealed pack on the runtime; the temporary file is removed when done.
    pub fn begin_upload(&self, sealed: &SealedPack) -> Upload {
        let inner = self.inner.clone();
        let (id, size, path) = (sealed.id, sealed.size, sealed.tmp_path.clone());
        let task = self.rt.spawn(async move {
            let r = inner.upload_pack(id, size, &path).await;
            let _ = std::fs::remove_file(&path);
            r
        });
        Upload {
            task,
            rt: self.rt.handle().clone(),
        }
    }

    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        let metas = self.rt.block_on(self.inner.list("packs"))?;
        let mut out = Vec::new();
        for (key, size) in metas {
            let Some(id) = key
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".pack"))
                .and_then(|h| h.parse::<PackId>().ok())
            else {
                continue;
            };
            self.inner.sizes.lock().expect("sizes lock").insert(id, size);
            out.push((id, size));
        }
        Ok(out)
    }

    pub fn pack_size(&self, id: PackId) -> Result<Option<u64>> {
        self.rt.block_on(self.inner.pack_size(id))
    }

    pub fn read_pack(&self, id: PackId) -> Result<Vec<u8>> {
        let key = pack_key(id);
        let inner = &self.inner;
        let bytes = self
            .rt
            .block_on(inner.call("reading", &key, async {
                inner.client.get(&Key::from(key.as_str())).await?.bytes().await
            }))?
            .ok_or(Error::MissingPack(id))?;
        bump(&inner.counters.get_requests, 1);
        bump(&inner.counters.bytes_fetched, bytes.len() as u64);
        Ok(bytes.to_vec())
    }

    pub fn read_pack_index(&self, id: PackId) -> Result<Vec<IndexEntry>> {
        let size = self.pack_size(id)?.ok_or(Error::MissingPack(id))?;
        self.rt.block_on(self.inner.read_index(id, size))
    }

    /// Indexes of many packs of known sizes, several requests at once.
    pub fn read_pack_indexes(&self, packs: &[(PackId, u64)]) -> Vec<Result<Vec<IndexEntry>>> {
        let inner = &self.inner;
        let reads: Vec<_> = packs.iter().map(|(id, size)| inner.read_index(*id, *size)).collect();
        self.rt
            .block_on(futures::stream::iter(reads).buffered(PARALLEL_REQUESTS).collect())
    }

    pub fn remove_pack(&self, id: PackId) -> Result<()> {
        self.rt.block_on(self.inner.delete(&pack_key(id)))
    }

    /// `len` bytes at `offset` of a pack: from the cache when exactly this extent is there
    /// (or being prefetched: then it is waited for), else with one ranged GET of exactly
    /// these bytes, which are then cached.
    pub fn read_pack_range(&self, id: PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let key = (id, offset, len as u64);
        // A cached extent was in the pack when it was fetched (packs never change) and is
        // checked against its hash as it is read: no HEAD for the pack's size first, so a
        // new process reading through a warm cache asks the store nothing.
        if inner.cache.contains(&key) {
            if let Some(bytes) = inner.cache.get(&key) {
                bump(&inner.counters.cache_hits, 1);
                return Ok(bytes);
            }
        }
        let size = self.pack_size(id)?.ok_or(Error::MissingPack(id))?;
        let end = offset + len as u64;
        if end > size {
            return Err(Error::CorruptPack {
                pack: id,
                detail: format!("truncated: no bytes at {offset}+{len} (the pack holds {size})"),
            });
        }
        // Looked at again right before claiming it: a prefetch may have brought it in while
        // the HEAD was out (fetching it a second time would double the bytes fetched).
        if let Some(bytes) = inner.cache.get(&key) {
            bump(&inner.counters.cache_hits, 1);
            return Ok(bytes);
        }
        if inner.fetching.claim(&[key]).is_empty() {
            // A prefetch is fetching it: wait for that, then fetch here only if it failed
            // (or the extent was evicted at once).
            inner.fetching.wait(key, inner.deadline());
            if let Some(bytes) = inner.cache.get(&key) {
                bump(&inner.counters.cache_hits, 1);
                return Ok(bytes);
            }
            return self
                .rt
                .block_on(inner.fetch_run(&[key]))?
                .pop()
                .ok_or_else(|| inner.fail("reading", &pack_key(id), "a fetch returned no bytes".into()));
        }
        let fetched = self.rt.block_on(inner.fetch_run(&[key]));
        inner.fetching.release(&[key]);
        fetched?
            .pop()
            .ok_or_else(|| inner.fail("reading", &pack_key(id), "a fetch returned no bytes".into()))
    }

    /// Fetch into the cache, in the background, the extents `(pack, offset, len)` that are
    /// neither cached nor being fetched: extents that follow each other in a pack in one GET
    /// (up to `max_get_size`), several GETs at once. Extents are claimed before this returns,
    /// so a reader that asks for one of them next waits for its GET instead of making another.
    pub fn prefetch(&self, extents: &[ExtentKey]) {
        let inner = &self.inner;
        let mut wanted: Vec<ExtentKey> = extents
            .iter()
            .filter(|k| k.2 > 0 && !inner.cache.contains(k))
            .copied()
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mine = inner.fetching.claim(&wanted);
        for run in coalesce(&mine, inner.settings.max_get_size) {
            let inner = inner.clone();
            self.rt.spawn(async move {
                let permit = inner.prefetch_slots.acquire().await;
                // Errors are not reported here: the read that needs the extent reports them.
                let _ = inner.fetch_run(&run).await;
                drop(permit);
                inner.fetching.release(&run);
            });
        }
    }

    // ---- manifests and refs -----------------------------------------------------------

    pub fn put_manifest(&self, root: RootHash, bytes: &[u8]) -> Result<()> {
        let key = manifest_key(root);
        let inner = &self.inner;
        self.rt.block_on(async {
            if inner.head(&key).await?.is_some() {
                return Ok(());
            }
            inner
                .put(&key, Bytes::copy_from_slice(bytes), PutMode::Overwrite)
                .await?;
            inner.check_read_back(&key, bytes).await
        })
    }

    pub fn put_manifest_file(&self, root: RootHash, tmp: &Path) -> Result<()> {
        let bytes = std::fs::read(tmp).map_err(Error::io_at("reading", tmp))?;
        let r = self.put_manifest(root, &bytes);
        let _ = std::fs::remove_file(tmp);
        r
    }

    pub fn get_manifest(&self, root: RootHash) -> Result<Option<Vec<u8>>> {
        self.rt.block_on(self.inner.get(&manifest_key(root)))
    }

    pub fn read_ref(&self, kind: &str, name: &str, version: &str) -> Result<Option<RootHash>> {
        self.rt.block_on(self.inner.read_ref(&ref_key(kind, name, version)))
    }

    /// Create a ref with a create-only PUT (`If-None-Match: *`), then read it back: the store
    /// must hold our root, or another writer won and its root is reported as a conflict.
    pub fn create_ref(&self, kind: &str, name: &str, version: &str, root: RootHash) -> Result<RefOutcome> {
        let key = ref_key(kind, name, version);
        let inner = &self.inner;
        self.rt.block_on(async {
            let outcome = |existing: RootHash| RefOutcome::found(existing, root);
            if let Some(existing) = inner.read_ref(&key).await? {
                return Ok(outcome(existing));
            }
            let body = Bytes::from(format!("{}\n", root.to_hex()));
            let created = inner.put(&key, body, PutMode::Create).await?;
            let now = inner.read_ref(&key).await?.ok_or_else(|| Error::UploadCheck {
                location: inner.location(&key),
                detail: "has no object there right after creating it".into(),
            })?;
            Ok(match created {
                true if now == root => RefOutcome::Created,
                _ => outcome(now),
            })
        })
    }

    /// Write `key` (create-only: `Ok(false)` when an object is there), then read it back.
    pub fn put_key(&self, key: &str, bytes: &[u8], kind: PutKind) -> Result<bool> {
        let inner = &self.inner;
        let mode = match kind {
            PutKind::Create => PutMode::Create,
            PutKind::Overwrite => PutMode::Overwrite,
        };
        self.rt.block_on(async {
            let written = inner.put(key, Bytes::copy_from_slice(bytes), mode).await?;
            if written {
                inner.check_read_back(key, bytes).await?;
            }
            Ok(written)
        })
    }

    /// The object at `key`, or `None` when missing.
    pub fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.rt.block_on(self.inner.get(key))
    }

    pub fn remove_ref(&self, kind: &str, name: &str, version: &str) -> Result<()> {
        self.rt.block_on(self.inner.delete(&ref_key(kind, name, version)))
    }

    pub fn list_refs(&self) -> Result<Vec<StoredRef>> {
        let inner = &self.inner;
        self.rt.block_on(async {
            let keys = inner.list("refs").await?;
            let named: Vec<(String, crate::DatasetName)> = keys
                .into_iter()
                .filter_map(|(key, _)| {
                    let mut parts = key.split('/').skip(1);
                    let (kind, name, version) = (parts.next()?, parts.next()?, parts.next()?);
                    let dataset = crate::DatasetName::new(kind.parse().ok()?, name, version).ok()?;
                    parts.next().is_none().then_some((key, dataset))
                })
                .collect();
            let roots: Vec<Result<Option<RootHash>>> =
                futures::stream::iter(named.iter().map(|(k, _)| inner.read_ref(k)))
                    .buffered(PARALLEL_REQUESTS)
                    .collect()
                    .await;
            let mut out = Vec::new();
            for ((_, dataset), root) in named.into_iter().zip(roots) {
                if let Some(root) = root? {
                    out.push(StoredRef { dataset, root });
                }
            }
            Ok(out)
        })
    }
}

impl Backend for RemoteStore {
    fn describe(&self) -> String {
        self.inner.url.to_string()
    }

    fn reads_are_requests(&self) -> bool {
        true
    }

    fn probe(&self) -> Result<()> {
        RemoteStore::probe(self)
    }

    fn stats(&self) -> Option<RemoteStats> {
        Some(RemoteStore::stats(self))
    }

    fn set_cache_capacity(&self, bytes: u64) {
        RemoteStore::set_cache_capacity(self, bytes)
    }

    fn puts_in_flight(&self) -> usize {
        self.uploads_in_flight()
    }

    fn begin_put_pack(&self, sealed: &SealedPack) -> PendingPut {
        PendingPut(Pending::Remote(self.begin_upload(sealed)))
    }

    fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        RemoteStore::list_packs(self)
    }

    fn pack_size(&self, id: PackId) -> Result<Option<u64>> {
        RemoteStore::pack_size(self, id)
    }

    fn read_pack_range(&self, id: PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        RemoteStore::read_pack_range(self, id, offset, len)
    }

    fn advise_chunks(&self, chunks: &[(PackId, u64, u64)]) {
        self.prefetch(chunks)
    }

    fn read_pack(&self, id: PackId) -> Result<Vec<u8>> {
        RemoteStore::read_pack(self, id)
    }

    fn read_pack_index(&self, id: PackId) -> Result<Vec<IndexEntry>> {
        RemoteStore::read_pack_index(self, id)
    }

    fn read_pack_indexes(&self, packs: &[(PackId, u64)]) -> Vec<Result<Vec<IndexEntry>>> {
        RemoteStore::read_pack_indexes(self, packs)
    }

    fn remove_pack(&self, id: PackId) -> Result<()> {
        self.inner.sizes.lock().expect("sizes lock").remove(&id);
        RemoteStore::remove_pack(self, id)
    }

    fn put_manifest(&self, root: RootHash, bytes: &[u8]) -> Result<()> {
        RemoteStore::put_manifest(self, root, bytes)
    }

    fn put_manifest_file(&self, root: RootHash, tmp: &Path) -> Result<()> {
        RemoteStore::put_manifest_file(self, root, tmp)
    }

    fn get_manifest(&self, root: RootHash) -> Result<Option<Vec<u8>>> {
        RemoteStore::get_manifest(self, root)
    }

    fn create_ref(&self, kind: &str, name: &str, version: &str, root: RootHash) -> Result<RefOutcome> {
        RemoteStore::create_ref(self, kind, name, version, root)
    }

    fn remove_ref(&self, kind: &str, name: &str, version: &str) -> Result<()> {
        RemoteStore::remove_ref(self, kind, name, version)
    }

    fn read_ref(&self, kind: &str, name: &str, version: &str) -> Result<Option<RootHash>> {
        RemoteStore::read_ref(self, kind, name, version)
    }

    fn list_refs(&self) -> Result<Vec<StoredRef>> {
        RemoteStore::list_refs(self)
    }

    fn put_object(&self, key: &str, bytes: &[u8], kind: PutKind) -> Result<bool> {
        self.put_key(key, bytes, kind)
    }

    fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>> {
        RemoteStore::get_object(self, key)
    }

    fn head_object(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let inner = &self.inner;
        let meta = self
            .rt
            .block_on(inner.call("checking", key, inner.client.head(&Key::from(key))))?;
        Ok(meta.map(|m| object_info(&m)))
    }

    fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let inner = &self.inner;
        let listed = self.rt.block_on(inner.call("listing", prefix, async {
            inner
                .client
                .list(Some(&Key::from(prefix)))
                .map_ok(|m| object_info(&m))
                .try_collect::<Vec<_>>()
                .await
        }))?;
        Ok(listed.unwrap_or_default())
    }

    fn delete_object(&self, key: &str) -> Result<()> {
        self.rt.block_on(self.inner.delete(key))
    }
}

/// Listing entry of an object: its `Last-Modified` is the store's clock, never ours.
fn object_info(m: &object_store::ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        key: m.location.to_string(),
        size: m.size,
        modified: m.last_modified.timestamp(),
    }
}

impl Drop for RemoteStore {
    /// One line of what this process moved (shown with `DSVAULT_LOG=info`; the benchmark
    /// reads it).
    fn drop(&mut self) {
        let s = self.stats();
        tracing::info!(
            get_requests = s.get_requests,
            bytes_fetched = s.bytes_fetched,
            put_requests = s.put_requests,
            bytes_uploaded = s.bytes_uploaded,
            cache_hits = s.cache_hits,
            "remote store {} done",
            self.inner.url
        );
    }
}

impl Inner {
    /// How long one operation (with all its retries) may take before it is abandoned.
    fn deadline(&self) -> Duration {
        Duration::from_secs(self.settings.retry_timeout_secs + 2 * self.settings.request_timeout_secs)
    }

    fn location(&self, key: &str) -> String {
        format!("{}/{key}", self.url)
    }

    /// A failed request: logged (a mount has no other way to say why a read got EIO) and
    /// returned as [`Error::Remote`].
    fn fail(&self, action: &'static str, key: &str, detail: String) -> Error {
        let location = self.location(key);
        tracing::error!("store request failed: {action} {location}: {detail}");
        Error::Remote {
            action,
            location,
            detail,
        }
    }

    /// Run one request under the operation deadline. `Ok(None)`: the object does not exist.
    async fn call<T>(
        &self,
        action: &'static str,
        key: &str,
        request: impl Future<Output = object_store::Result<T>>,
    ) -> Result<Option<T>> {
        match tokio::time::timeout(self.deadline(), request).await {
            Err(_) => Err(self.fail(
                action,
                key,
                format!(
                    "no answer within {}s; is the store reachable?",
                    self.deadline().as_secs()
                ),
            )),
            Ok(Ok(v)) => Ok(Some(v)),
            Ok(Err(object_store::Error::NotFound { .. })) => Ok(None),
            Ok(Err(e)) => Err(self.fail(action, key, e.to_string())),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        Ok(self
            .call("checking", key, self.client.head(&Key::from(key)))
            .await?
            .map(|m| m.size))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let got = self
            .call("reading", key, async {
                self.client.get(&Key::from(key)).await?.bytes().await
            })
            .await?;
        bump(&self.counters.get_requests, 1);
        Ok(got.map(|b| {
            bump(&self.counters.bytes_fetched, b.len() as u64);
            b.to_vec()
        }))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let bytes = self
            .call("reading", key, self.client.get_range(&Key::from(key), range.clone()))
            .await?
            .ok_or_else(|| self.fail("reading", key, "the object is gone".into()))?;
        bump(&self.counters.get_requests, 1);
        bump(&self.counters.bytes_fetched, bytes.len() as u64);
        if bytes.len() as u64 != want {
            return Err(self.fail(
                "reading",
                key,
                format!("asked for bytes {range:?}, got {} bytes", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// PUT an object; with [`PutMode::Create`], `Ok(false)` when it already existed.
    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<bool> {
        let len = body.len() as u64;
        let path = Key::from(key);
        let request = self
            .client
            .put_opts(&path, PutPayload::from(body), PutOptions::from(mode));
        bump(&self.counters.put_requests, 1);
        match tokio::time::timeout(self.deadline(), request).await {
            Ok(Ok(_)) => {
                bump(&self.counters.bytes_uploaded, len);
                Ok(true)
            }
            Ok(Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })) => Ok(false),
            Ok(Err(e)) => Err(self.fail("uploading", key, e.to_string())),
            Err(_) => Err(self.fail("uploading", key, "no answer in time; is the store reachable?".into())),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.call("deleting", key, self.client.delete(&Key::from(key)))
            .await
            .map(|_| ())
    }

    /// Every object under `prefix/` with its size.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let listed = self
            .call("listing", prefix, async {
                self.client
                    .list(Some(&Key::from(prefix)))
                    .map_ok(|m| (m.location.to_string(), m.size))
                    .try_collect::<Vec<_>>()
                    .await
            })
            .await?;
        Ok(listed.unwrap_or_default())
    }

    async fn read_ref(&self, key: &str) -> Result<Option<RootHash>> {
        match self.get(key).await? {
            None => Ok(None),
            Some(bytes) => parse_ref(key, &bytes).map(Some),
        }
    }

    async fn pack_size(&self, id: PackId) -> Result<Option<u64>> {
        if let Some(&size) = self.sizes.lock().expect("sizes lock").get(&id) {
            return Ok(Some(size));
        }
        let size = self.head(&pack_key(id)).await?;
        if let Some(size) = size {
            self.sizes.lock().expect("sizes lock").insert(id, size);
        }
        Ok(size)
    }

    /// Fetch extents of one pack that follow each other without gaps, in one request; keep
    /// each in the cache and return them.
    async fn fetch_run(&self, run: &[ExtentKey]) -> Result<Vec<Vec<u8>>> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(Vec::new());
        };
        let bytes = self.get_range(&pack_key(first.0), first.1..last.1 + last.2).await?;
        let mut out = Vec::with_capacity(run.len());
        for key in run {
            let from = (key.1 - first.1) as usize;
            let piece = &bytes[from..from + key.2 as usize];
            self.cache.put(*key, piece);
            out.push(piece.to_vec());
        }
        Ok(out)
    }

    /// A pack's index: the tail of the pack in one request (usually index and footer), or
    /// from the index's start in a second one when the index is larger.
    async fn read_index(&self, id: PackId, size: u64) -> Result<Vec<IndexEntry>> {
        let key = pack_key(id);
        let mut start = size.saturating_sub(INDEX_TAIL);
        let mut tail = self.get_range(&key, start..size).await?;
        let footer = tail
            .get(tail.len().saturating_sub(pack::FOOTER_LEN)..)
            .unwrap_or_default();
        let index_offset = pack::parse_footer(id, footer).ok().map(|f| f.0);
        if let Some(index_offset) = index_offset.filter(|&o| o < start) {
            start = index_offset;
            tail = self.get_range(&key, start..size).await?;
        }
        pack::read_index_with(id, size, |offset, len| {
            offset
                .checked_sub(start)
                .map(|from| from as usize)
                .filter(|&from| from + len <= tail.len())
                .map(|from| tail[from..from + len].to_vec())
                .ok_or_else(|| Error::CorruptPack {
                    pack: id,
                    detail: "index lies outside the pack".into(),
                })
        })
    }

    /// Upload a sealed pack unless the store already holds it whole, then check it.
    async fn upload_pack(&self, id: PackId, size: u64, path: &Path) -> Result<()> {
        let key = pack_key(id);
        match self.head(&key).await? {
            Some(n) if n == size => bump(&self.counters.packs_already_present, 1),
            found => {
                if let Some(n) = found {
                    tracing::warn!(
                        "{} holds {n} bytes instead of {size}; uploading it again",
                        self.location(&key)
                    );
                }
                self.upload_file(&key, path, size).await?;
                crate::crashpoint::hit("pack-after-upload");
            }
        }
        self.check_pack(&key, id, size).await
    }

    /// PUT a file: in one request, or in parts when it is large.
    async fn upload_file(&self, key: &str, path: &Path, size: u64) -> Result<()> {
        if size <= self.settings.multipart_threshold {
            let bytes = std::fs::read(path).map_err(Error::io_at("reading", path))?;
            self.put(key, Bytes::from(bytes), PutMode::Overwrite).await?;
            return Ok(());
        }
        let upload = self
            .call("starting upload of", key, self.client.put_multipart(&Key::from(key)))
            .await?
            .ok_or_else(|| self.fail("starting upload of", key, "not found".into()))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.settings.part_size as usize);
        match self.write_parts(&mut writer, key, path).await {
            Ok(()) => {
                let done = self.call("finishing upload of", key, writer.finish()).await?;
                bump(&self.counters.put_requests, size.div_ceil(self.settings.part_size) + 2);
                bump(&self.counters.bytes_uploaded, size);
                done.map(|_| ())
                    .ok_or_else(|| self.fail("finishing upload of", key, "not found".into()))
            }
            Err(e) => {
                let _ = tokio::time::timeout(self.deadline(), writer.abort()).await;
                Err(e)
            }
        }
    }

    async fn write_parts(&self, writer: &mut WriteMultipart, key: &str, path: &Path) -> Result<()> {
        let mut file = std::fs::File::open(path).map_err(Error::io_at("opening", path))?;
        let mut buf = vec![0u8; self.settings.part_size as usize];
        loop {
            let n = read_full(&mut file, &mut buf).map_err(Error::io_at("reading", path))?;
            if n == 0 {
                return Ok(());
            }
            self.call("uploading", key, writer.wait_for_capacity(PARTS_IN_FLIGHT))
                .await?;
            writer.write(&buf[..n]);
            if n < buf.len() {
                return Ok(());
            }
        }
    }

    /// The store must hold `size` bytes under `key`; on the configured sample of packs
    /// (chosen by hash, so the same packs on every run) the bytes are read back and hashed.
    async fn check_pack(&self, key: &str, id: PackId, size: u64) -> Result<()> {
        let bad = |detail: String| Error::UploadCheck {
            location: self.location(key),
            detail,
        };
        match self.head(key).await? {
            None => return Err(bad("has no object there".into())),
            Some(n) if n != size => return Err(bad(format!("holds {n} bytes instead of {size}"))),
            Some(_) => {}
        }
        if !in_sample(id, self.settings.verify_read_back_percent) {
            return Ok(());
        }
        let bytes = self.get(key).await?.ok_or_else(|| bad("has no object there".into()))?;
        if bytes.len() as u64 != size || PackId::of(&bytes) != id {
            return Err(bad(format!(
                "returns {} bytes that do not hash to the pack's name",
                bytes.len()
            )));
        }
        Ok(())
    }

    /// Read an object back and compare it with what was written.
    async fn check_read_back(&self, key: &str, expected: &[u8]) -> Result<()> {
        match self.get(key).await? {
            Some(b) if b == expected => Ok(()),
            Some(b) => Err(Error::UploadCheck {
                location: self.location(key),
                detail: format!(
                    "returns {} bytes that differ from the {} written",
                    b.len(),
                    expected.len()
                ),
            }),
            None => Err(Error::UploadCheck {
                location: self.location(key),
                detail: "has no object there".into(),
            }),
        }
    }
}

/// Fill `buf` from `r` as far as it goes; returns the bytes read (less than `buf` at the end).
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Is this pack among the `percent` read back after upload?
fn in_sample(id: PackId, percent: u32) -> bool {
    let x = u16::from_le_bytes([id.0[0], id.0[1]]) as u32;
    x * 100 < percent * 65536
}

/// Sorted extents grouped into runs that follow each other in one pack without a gap, each
/// run at most `max_bytes` long (or one extent, when that alone is longer).
fn coalesce(extents: &[ExtentKey], max_bytes: u64) -> Vec<Vec<ExtentKey>> {
    let mut runs: Vec<Vec<ExtentKey>> = Vec::new();
    let mut run_bytes = 0;
    for &e in extents {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|p| p.0 == e.0 && p.1 + p.2 == e.1) && run_bytes + e.2 <= max_bytes => {
                run.push(e);
                run_bytes += e.2;
            }
            _ => {
                runs.push(vec![e]);
                run_bytes = e.2;
            }
        }
    }
    runs
}

/// Extents being fetched right now, so that a reader waits for a prefetch of its extent
/// instead of making a second request.
#[derive(Default)]
struct FetchGate {
    busy: Mutex<HashSet<ExtentKey>>,
    done: Condvar,
}

impl FetchGate {
    /// Claim the extents nobody is fetching; returns those claimed.
    fn claim(&self, extents: &[ExtentKey]) -> Vec<ExtentKey> {
        let mut busy = self.busy.lock().expect("fetch gate lock");
        extents.iter().copied().filter(|&e| busy.insert(e)).collect()
    }

    fn release(&self, extents: &[ExtentKey]) {
        if extents.is_empty() {
            return;
        }
        let mut busy = self.busy.lock().expect("fetch gate lock");
        for e in extents {
            busy.remove(e);
        }
        self.done.notify_all();
    }

    /// Wait (at most `limit`) until nobody fetches the extent.
    fn wait(&self, extent: ExtentKey, limit: Duration) {
        let busy = self.busy.lock().expect("fetch gate lock");
        let _ = self
            .done
            .wait_timeout_while(busy, limit, |b| b.contains(&extent))
            .expect("fetch gate lock");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_samples() {
        let (a, b) = (PackId([1; 32]), PackId([2; 32]));
        let runs = coalesce(
            &[
                (a, 0, 10),
                (a, 10, 5),
                (a, 15, 10),
                (a, 30, 5),
                (b, 35, 5),
                (b, 40, 20),
                (b, 60, 1),
            ],
            25,
        );
        assert_eq!(
            runs,
            vec![
                vec![(a, 0, 10), (a, 10, 5), (a, 15, 10)], // adjacent, 25 bytes
                vec![(a, 30, 5)],                          // a gap before it
                vec![(b, 35, 5), (b, 40, 20)],             // another pack
                vec![(b, 60, 1)],                          // would make the run 26 bytes
            ]
        );
        assert_eq!(coalesce(&[(a, 0, 100)], 25), vec![vec![(a, 0, 100)]]);
        let ids: Vec<PackId> = (0..=255u8).map(|i| PackId([i; 32])).collect();
        assert!(ids.iter().all(|&id| in_sample(id, 100)));
        assert!(ids.iter().all(|&id| !in_sample(id, 0)));
        let some = ids.iter().filter(|&&id| in_sample(id, 10)).count();
        assert!((15..=40).contains(&some), "{some} of 256 sampled at 10%");
    }
}
