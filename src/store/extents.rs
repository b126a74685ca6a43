//! The on-disk cache of remote pack byte ranges, under `<vault>/cache/extents/`.
//!
//! Owns: storing extents of remote packs, each exactly the bytes a reader asked for (in
//! practice one chunk's stored bytes: `(pack, offset, len)` from the pack index), finding
//! them again by that key, and keeping their total size under a bound by evicting the least
//! recently used. Exact extents mean a cold read fetches and keeps what it needs and nothing
//! around it (fixed-size blocks cost each small file one or two whole blocks). Packs never
//! change, so a cached extent never goes stale. Each file ends with the blake3 hash of its
//! bytes: a torn or damaged file (a crash, a full disk) reads as a miss and is fetched again,
//! never served. Several processes may share the folder; each keeps its own account of what
//! it saw, and an extent removed by another process is simply a miss.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::id::PackId;

/// An extent of a pack: (pack, offset, length).
pub type ExtentKey = (PackId, u64, u64);

const HASH_LEN: usize = 32;

/// The cache folder and what this process knows is in it.
pub struct ExtentCache {
    dir: PathBuf,
    capacity: AtomicU64,
    state: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    /// Key → (bytes on disk, last use).
    entries: HashMap<ExtentKey, (u64, u64)>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, ExtentKey>,
    total: u64,
    clock: u64,
}

impl Lru {
    fn touch(&mut self, key: ExtentKey, size: u64) {
        self.clock += 1;
        if let Some((old_size, used)) = self.entries.insert(key, (size, self.clock)) {
            self.order.remove(&used);
            self.total -= old_size;
        }
        self.order.insert(self.clock, key);
        self.total += size;
    }

    fn forget(&mut self, key: &ExtentKey) {
        if let Some((size, used)) = self.entries.remove(key) {
            self.order.remove(&used);
            self.total -= size;
        }
    }
}

impl ExtentCache {
    /// Open the cache folder, creating it, and account for the blocks already there (oldest
    /// modification first). Problems only make the cache smaller: it is never an error.
    pub fn open(dir: &Path, capacity: u64) -> ExtentCache {
        // The fixed-block layout of earlier versions: nobody reads it any more.
        let _ = fs::remove_dir_all(dir.join("blocks"));
        let dir = dir.join("extents");
        let _ = fs::create_dir_all(&dir);
        let cache = ExtentCache {
            dir,
            capacity: AtomicU64::new(capacity),
            state: Mutex::new(Lru::default()),
        };
        cache.scan();
        cache
    }

    fn scan(&self) {
        let Ok(list) = fs::read_dir(&self.dir) else { return };
        let mut found = Vec::new();
        for e in list.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(meta) = e.metadata() else { continue };
            match parse_name(name) {
                Some(key) => found.push((meta.modified().ok(), key, meta.len())),
                // A temporary file of a writer that died before renaming it.
                None if name.ends_with(".tmp") => {
                    let _ = fs::remove_file(e.path());
                }
                None => {}
            }
        }
        found.sort_by_key(|f| f.0);
        let mut lru = self.state.lock().expect("cache lock");
        for (_, key, size) in found {
            lru.touch(key, size);
        }
        drop(lru);
        self.evict();
    }

    /// Change the bound (takes effect at once).
    pub fn set_capacity(&self, bytes: u64) {
        self.capacity.store(bytes, Ordering::Relaxed);
        self.evict();
    }

    fn path(&self, key: &ExtentKey) -> PathBuf {
        self.dir.join(format!("{}-{}-{}", key.0.to_hex(), key.1, key.2))
    }

    /// The bytes of a cached extent, or `None` (absent, or failed its hash or length).
    pub fn get(&self, key: &ExtentKey) -> Option<Vec<u8>> {
        let path = self.path(key);
        let Ok(mut bytes) = fs::read(&path) else {
            self.state.lock().expect("cache lock").forget(key);
            return None;
        };
        let stored_len = bytes.len() as u64;
        if bytes.len() as u64 != key.2 + HASH_LEN as u64 || !trailer_matches(&bytes) {
            let _ = fs::remove_file(&path);
            self.state.lock().expect("cache lock").forget(key);
            return None;
        }
        bytes.truncate(bytes.len() - HASH_LEN);
        self.state.lock().expect("cache lock").touch(*key, stored_len);
        Some(bytes)
    }

    /// Is the extent cached (as far as this process knows)?
    pub fn contains(&self, key: &ExtentKey) -> bool {
        self.state.lock().expect("cache lock").entries.contains_key(key)
    }

    /// Keep an extent (`bytes` must be `key.2` long). Failing to write it (a full disk) is
    /// not an error: it is just not cached.
    pub fn put(&self, key: ExtentKey, bytes: &[u8]) {
        debug_assert_eq!(bytes.len() as u64, key.2);
        let path = self.path(&key);
        let tmp = self.dir.join(format!(
            "{}-{}-{}-{}.tmp",
            std::process::id(),
            key.0.to_hex(),
            key.1,
            key.2
        ));
        let mut body = Vec::with_capacity(bytes.len() + HASH_LEN);
        body.extend_from_slice(bytes);
        body.extend_from_slice(blake3::hash(bytes).as_bytes());
        if fs::write(&tmp, &body).and_then(|_| fs::rename(&tmp, &path)).is_err() {
            let _ = fs::remove_file(&tmp);
            return;
        }
        self.state.lock().expect("cache lock").touch(key, body.len() as u64);
        self.evict();
    }

    /// Remove least recently used extents until the total fits the bound.
    fn evict(&self) {
        let capacity = self.capacity.load(Ordering::Relaxed);
        let mut lru = self.state.lock().expect("cache lock");
        while lru.total > capacity {
            let Some((_, key)) = lru.order.pop_first() else { break };
            if let Some((size, _)) = lru.entries.remove(&key) {
                lru.total -= size;
            }
            let _ = fs::remove_file(self.path(&key));
        }
    }

    /// Bytes this process accounts for in the cache.
    pub fn bytes(&self) -> u64 {
        self.state.lock().expect("cache lock").total
    }
}

fn trailer_matches(body: &[u8]) -> bool {
    let (data, hash) = body.split_at(body.len() - HASH_LEN);
    blake3::hash(data).as_bytes() == hash
}

fn parse_name(name: &str) -> Option<ExtentKey> {
    let mut parts = name.split('-');
    let key = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8, offset: u64) -> ExtentKey {
        (PackId([n; 32]), offset, 1000)
    }

    #[test]
    fn evicts_least_recently_used_and_rejects_damaged_extents() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blocks")).unwrap();
        fs::write(dir.path().join("blocks/old-0"), b"a block of the old layout").unwrap();
        let block = vec![7u8; 1000];
        let cache = ExtentCache::open(dir.path(), 2 * (1000 + HASH_LEN as u64));
        cache.put(key(1, 0), &block);
        cache.put(key(2, 0), &block);
        assert_eq!(cache.get(&key(1, 0)).as_deref(), Some(&block[..])); // 1 is now newest
        cache.put(key(3, 0), &block); // evicts 2
        assert!(cache.get(&key(2, 0)).is_none());
        assert!(cache.get(&key(1, 0)).is_some() && cache.get(&key(3, 0)).is_some());
        assert_eq!(cache.bytes(), 2 * (1000 + HASH_LEN as u64));

        // A damaged file is a miss, and is removed.
        let path = cache.path(&key(3, 0));
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(cache.get(&key(3, 0)).is_none());
        assert!(!path.exists());

        // So is an extent whose file is shorter or longer than its key says (a stray file
        // under another extent's name), even with a matching hash trailer.
        let mut other = vec![1u8; 999];
        other.extend_from_slice(blake3::hash(&[1u8; 999]).as_bytes());
        fs::write(cache.path(&key(4, 5)), other).unwrap();
        assert!(cache.get(&key(4, 5)).is_none());

        // Same pack and offset, other length: another extent.
        assert!(cache.get(&(PackId([1; 32]), 0, 999)).is_none());
        assert!(!dir.path().join("blocks").exists(), "the old block layout is removed");

        // A new process finds what is there.
        let again = ExtentCache::open(dir.path(), 1 << 20);
        assert!(again.contains(&key(1, 0)));
        assert_eq!(again.get(&key(1, 0)).as_deref(), Some(&block[..]));
    }
}
