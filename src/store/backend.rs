//! The one contract every store backend keeps: what [`super::Store`] needs from a place that
//! holds objects, whether a folder on this machine or a bucket.
//!
//! Owns: the [`Backend`] trait (packs, ranged reads, manifests, create-only refs and objects,
//! listings with the store's own timestamps, deletes) and [`ObjectInfo`]. Every backend passes
//! the same conformance suite (tests/store_contract.rs) and the same create-only proof at
//! `init` ([`prove_create_only`]), so the rest of the library never asks which one it has.
//! Never: decides what is live or dead (that is `ops::gc`), or interprets chunk bytes.

use std::path::Path;

use super::{PendingPut, RefOutcome, RemoteStats, StoredRef};
use crate::error::{Error, Result};
use crate::id::{PackId, RootHash};
use crate::pack::{IndexEntry, SealedPack};

/// An object in the store as a listing or a HEAD shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, relative to the store's root (`refs/gold/a/1`).
    pub key: String,
    pub size: u64,
    /// When the store last wrote it, in seconds since the epoch, by the store's own clock
    /// (an object store's `Last-Modified`, a file's mtime). Only ever compared with other
    /// times of the same store, never with this machine's clock.
    pub modified: i64,
}

/// How a generic object is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutKind {
    /// Replace whatever is there.
    Overwrite,
    /// Write only if nothing is there; `Ok(false)` when something was.
    Create,
}

/// What a store backend offers. Implemented by the local folder and by `object_store`
/// (S3, GCS, Azure).
pub trait Backend: Send + Sync {
    /// The store's URL as the user wrote it, for messages.
    fn describe(&self) -> String;

    /// Reads are network requests: readers should ask for chunks ahead
    /// ([`Backend::advise_chunks`]) and avoid reading whole packs when an index will do.
    fn reads_are_requests(&self) -> bool;

    /// Check the store answers (for `init`: a wrong bucket, endpoint or credentials fails
    /// there, not at the first ingest).
    fn probe(&self) -> Result<()>;

    /// Requests and bytes moved so far (remote backends only).
    fn stats(&self) -> Option<RemoteStats> {
        None
    }

    /// Bytes an on-disk read cache may hold (no effect where there is none).
    fn set_cache_capacity(&self, _bytes: u64) {}

    /// How many packs may be on their way into the store at once.
    fn puts_in_flight(&self) -> usize;

    fn begin_put_pack(&self, sealed: &SealedPack) -> PendingPut;
    fn list_packs(&self) -> Result<Vec<(PackId, u64)>>;
    fn pack_size(&self, id: PackId) -> Result<Option<u64>>;
    fn read_pack_range(&self, id: PackId, offset: u64, len: usize) -> Result<Vec<u8>>;
    fn advise_chunks(&self, chunks: &[(PackId, u64, u64)]);
    fn read_pack(&self, id: PackId) -> Result<Vec<u8>>;
    fn read_pack_index(&self, id: PackId) -> Result<Vec<IndexEntry>>;
    fn read_pack_indexes(&self, packs: &[(PackId, u64)]) -> Vec<Result<Vec<IndexEntry>>> {
        packs.iter().map(|(id, _)| self.read_pack_index(*id)).collect()
    }
    fn remove_pack(&self, id: PackId) -> Result<()>;

    fn put_manifest(&self, root: RootHash, bytes: &[u8]) -> Result<()>;
    fn put_manifest_file(&self, root: RootHash, tmp: &Path) -> Result<()>;
    fn get_manifest(&self, root: RootHash) -> Result<Option<Vec<u8>>>;

    fn create_ref(&self, kind: &str, name: &str, version: &str, root: RootHash) -> Result<RefOutcome>;
    fn remove_ref(&self, kind: &str, name: &str, version: &str) -> Result<()>;
    /// The user id owning a ref (who sealed the dataset), where the store knows users (a
    /// local folder); `None` elsewhere.
    fn ref_owner(&self, _kind: &str, _name: &str, _version: &str) -> Option<u32> {
        None
    }
    fn read_ref(&self, kind: &str, name: &str, version: &str) -> Result<Option<RootHash>>;
    fn list_refs(&self) -> Result<Vec<StoredRef>>;

    /// Write an object at `key`. With [`PutKind::Create`] a second writer of the same key is
    /// refused (`Ok(false)`): the store must guarantee this, which [`prove_create_only`]
    /// checks at `init`.
    fn put_object(&self, key: &str, bytes: &[u8], kind: PutKind) -> Result<bool>;
    /// The object at `key`, or `None` when missing.
    fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Size and store time of the object at `key`, or `None` when missing.
    fn head_object(&self, key: &str) -> Result<Option<ObjectInfo>>;
    /// Every object whose key starts with `prefix/`. A listing that fails part way is an
    /// error, never a shorter list.
    fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Delete the object at `key`; a missing one is not an error.
    fn delete_object(&self, key: &str) -> Result<()>;
}

/// Where the create-only proof writes (and then deletes) its object.
const PROOF_PREFIX: &str = "proof/create-only";

/// Prove that `backend` refuses a second create-only write of one key: refs and leases rely
/// on it, and a store that silently overwrites would let two machines both "win" a ref.
pub fn prove_create_only(backend: &dyn Backend) -> Result<()> {
    let key = format!("{PROOF_PREFIX}/{}", nonce());
    let refused = |why: &str| {
        Error::Unsupported(format!(
            "store {} {why}; dsvault needs create-only writes (If-None-Match: *) for refs and will not use this store. Use a server that supports conditional PUTs (AWS S3, MinIO, Azure Blob, GCS)",
            backend.describe()
        ))
    };
    if !backend.put_object(&key, b"first\n", PutKind::Create)? {
        return Err(refused("reported a fresh key as already present"));
    }
    let second = backend.put_object(&key, b"second\n", PutKind::Create);
    let held = backend.get_object(&key);
    let _ = backend.delete_object(&key);
    if second? {
        return Err(refused("accepted a second create-only write of the same key"));
    }
    match held? {
        Some(b) if b == b"first\n" => Ok(()),
        _ => Err(refused("replaced an object on a refused create-only write")),
    }
}

/// A random name part, unique across machines and processes.
pub(crate) fn nonce() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut h = blake3::Hasher::new();
    h.update(&t.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&rand_bytes());
    h.finalize().to_hex()[..24].to_string()
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b
}
