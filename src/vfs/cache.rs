//! A size-bounded LRU of verified chunk bytes, shared by every open file of a mount.
//!
//! Owns: which decoded chunks stay in memory, and making sure two threads that want the same
//! chunk at once load it only once (the second waits for the first). Only verified bytes
//! ever enter the cache; a failed load is not remembered, so the next read tries again.
//! Never: reads packs itself; the caller passes the loader.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::id::ChunkId;

/// Verified bytes of one chunk.
pub type ChunkBytes = Arc<Vec<u8>>;

type Loading = Arc<OnceLock<LoadResult>>;

/// A load's outcome, shared by every thread that waited for it.
pub type LoadResult = std::result::Result<ChunkBytes, Arc<Error>>;

/// The chunk cache.
pub struct ChunkCache {
    capacity: u64,
    lru: Mutex<Lru>,
    loading: Mutex<HashMap<ChunkId, Loading>>,
}

#[derive(Default)]
struct Lru {
    bytes: u64,
    tick: u64,
    map: HashMap<ChunkId, (ChunkBytes, u64)>,
    order: BTreeMap<u64, ChunkId>,
}

impl Lru {
    fn get(&mut self, id: &ChunkId) -> Option<ChunkBytes> {
        self.tick += 1;
        let tick = self.tick;
        let (bytes, old) = self.map.get_mut(id)?;
        self.order.remove(old);
        *old = tick;
        self.order.insert(tick, *id);
        Some(bytes.clone())
    }

    fn insert(&mut self, id: ChunkId, bytes: ChunkBytes, capacity: u64) {
        if self.map.contains_key(&id) || bytes.len() as u64 > capacity {
            return;
        }
        self.tick += 1;
        self.bytes += bytes.len() as u64;
        self.map.insert(id, (bytes, self.tick));
        self.order.insert(self.tick, id);
        while self.bytes > capacity {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = self.map.remove(&victim) {
                self.bytes -= b.len() as u64;
            }
        }
    }
}

impl ChunkCache {
    /// A cache holding at most `capacity` bytes of chunk data.
    pub fn new(capacity: u64) -> Self {
        ChunkCache {
            capacity,
            lru: Mutex::new(Lru::default()),
            loading: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes currently cached.
    pub fn cached_bytes(&self) -> u64 {
        self.lru.lock().expect("cache lock").bytes
    }

    /// Is this chunk cached (without touching its recency)?
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.lru.lock().expect("cache lock").map.contains_key(id)
    }

    /// The chunk's bytes from the cache, or from `load` without keeping them: for a chunk
    /// whose every byte is being served at once (a small file read whole), which the kernel's
    /// page cache keeps from now on. Its buffer is then freed at once and reused, still in
    /// the CPU's cache, for the next file, instead of pushing a cached chunk out.
    pub fn get_or_load_once(&self, id: ChunkId, load: impl FnOnce() -> Result<Vec<u8>>) -> LoadResult {
        if let Some(b) = self.lru.lock().expect("cache lock").get(&id) {
            return Ok(b);
        }
        load().map(Arc::new).map_err(Arc::new)
    }

    /// The chunk's bytes from the cache, or from `load` (once, however many threads ask).
    /// `load` must return verified bytes.
    pub fn get_or_load(&self, id: ChunkId, load: impl FnOnce() -> Result<Vec<u8>>) -> LoadResult {
        if let Some(b) = self.lru.lock().expect("cache lock").get(&id) {
            return Ok(b);
        }
        let cell = self
            .loading
            .lock()
            .expect("loading lock")
            .entry(id)
            .or_default()
            .clone();
        let mut loaded_here = false;
        let result = cell
            .get_or_init(|| {
                loaded_here = true;
                load().map(Arc::new).map_err(Arc::new)
            })
            .clone();
        if loaded_here {
            if let Ok(bytes) = &result {
                self.lru
                    .lock()
                    .expect("cache lock")
                    .insert(id, bytes.clone(), self.capacity);
            }
            let mut loading = self.loading.lock().expect("loading lock");
            if loading.get(&id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                loading.remove(&id);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn id(n: u8) -> ChunkId {
        ChunkId::of(&[n])
    }

    #[test]
    fn evicts_least_recently_used_beyond_capacity() {
        let cache = ChunkCache::new(25);
        for n in 0..3 {
            cache.get_or_load(id(n), || Ok(vec![n; 10])).unwrap();
        }
        assert!(cache.cached_bytes() <= 25);
        assert!(!cache.contains(&id(0)));
        assert!(cache.contains(&id(2)));
        // Touch 1, add 3: 2 goes, 1 stays.
        cache.get_or_load(id(1), || panic!("cached")).unwrap();
        cache.get_or_load(id(3), || Ok(vec![3; 10])).unwrap();
        assert!(cache.contains(&id(1)) && !cache.contains(&id(2)));
    }

    #[test]
    fn concurrent_callers_load_once_and_errors_are_not_kept() {
        let cache = Arc::new(ChunkCache::new(1 << 20));
        let loads = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                std::thread::spawn(move || {
                    cache
                        .get_or_load(id(7), || {
                            loads.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(vec![7; 100])
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().len(), 100);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        let err = cache.get_or_load(id(8), || Err(crate::Error::Damaged("bad".into())));
        assert!(err.is_err());
        assert!(cache.get_or_load(id(8), || Ok(vec![1])).is_ok());
    }
}
