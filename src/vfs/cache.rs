//! A size-bounded LRU of verified chunk bytes, shared by every open file of a mount.
//!
//! Owns: which decoded chunks stay in memory, and making sure two threads that want the same
//! chunk at once load it only once (the second waits for the first). Only verified bytes
//! ever enter the cache; a failed load is not remembered, so the next read tries again.
//!
//! Also owns which chunks readers still need. A chunk fetched ahead of its reader, or read
//! only in part (a 1 MiB kernel request that ends inside it; the requests for its two parts
//! may come in either order), is *wanted*: it is pushed out only when nothing else can go. Chunks fetched ahead may hold at most [`AHEAD_SHARE`] of
//! the cache, so that many sequential readers at once get a shorter lead each instead of
//! pushing each other's chunks out before they are read (and loading them twice). A mark
//! left by a reader that stopped reading (`head`) lapses once four cache-fulls of chunks have
//! been loaded since (with two, four concurrent readers of the bench's large files already
//! lost 10% more chunks to lapsed marks than with four).
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

/// Share of the capacity (numerator, denominator) that wanted chunks may reach before no
/// more are fetched ahead.
pub const AHEAD_SHARE: (u64, u64) = (3, 4);

/// Chunks looked at, least recently used first, for one that no reader wants. Beyond that
/// the least recently used goes: a large cache (`--cache-mib`) full of chunks read in part,
/// as random readers leave it, would otherwise be scanned whole at every insertion.
const VICTIM_SCAN: usize = 64;

/// The chunk cache.
pub struct ChunkCache {
    capacity: u64,
    lru: Mutex<Lru>,
    loading: Mutex<HashMap<ChunkId, Loading>>,
}

/// Answer to a request for room for a chunk to be fetched ahead of its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ahead {
    /// Room was reserved: load the chunk with [`ChunkCache::load_ahead`], or give the room
    /// back with [`ChunkCache::cancel_ahead`].
    Reserved,
    /// The chunk is cached or already fetched ahead: nothing to do.
    NotNeeded,
    /// Wanted chunks fill the budget: ask again on a later read.
    Full,
}

/// A chunk a reader still needs.
struct Wanted {
    /// Bytes it counts for (its length).
    len: u64,
    /// Bytes of it served to readers so far.
    served: u64,
    /// [`Lru::loaded`] when it was last marked or read.
    since: u64,
}

#[derive(Default)]
struct Lru {
    capacity: u64,
    bytes: u64,
    /// Bytes loaded into the cache so far: the clock wanted marks lapse by.
    loaded: u64,
    /// Advances with every lookup and insertion (recency order).
    tick: u64,
    map: HashMap<ChunkId, (ChunkBytes, u64)>,
    order: BTreeMap<u64, ChunkId>,
    wanted: HashMap<ChunkId, Wanted>,
    wanted_bytes: u64,
}

impl Lru {
    fn want(&mut self, id: ChunkId, len: u64) {
        let since = self.loaded;
        if self.wanted.contains_key(&id) {
            return;
        }
        self.wanted.insert(id, Wanted { len, served: 0, since });
        self.wanted_bytes += len;
    }

    fn unwant(&mut self, id: &ChunkId) {
        if let Some(w) = self.wanted.remove(id) {
            self.wanted_bytes -= w.len;
        }
    }

    /// Four cache-fulls of chunks loaded since the mark: its reader has moved on.
    fn is_stale(&self, w: &Wanted) -> bool {
        self.loaded - w.since > 4 * self.capacity
    }

    /// Still wanted, by a reader that is still reading?
    fn is_protected(&self, id: &ChunkId) -> bool {
        self.wanted.get(id).is_some_and(|w| !self.is_stale(w))
    }

    fn drop_stale(&mut self) {
        let stale: Vec<ChunkId> = self
            .wanted
            .iter()
            .filter(|(_, w)| self.is_stale(w))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.unwant(&id);
        }
    }

    fn reserve_ahead(&mut self, id: ChunkId, len: u64, budget: u64) -> Ahead {
        // A chunk larger than the cache would not be kept: its reader loads it.
        if self.map.contains_key(&id) || self.wanted.contains_key(&id) || len > self.capacity {
            return Ahead::NotNeeded;
        }
        // When nothing is wanted the chunk gets room, however large.
        let over = |lru: &Self| lru.wanted_bytes > 0 && lru.wanted_bytes + len > budget;
        if over(self) {
            self.drop_stale();
            if over(self) {
                return Ahead::Full;
            }
        }
        self.want(id, len);
        Ahead::Reserved
    }

    fn get(&mut self, id: &ChunkId) -> Option<ChunkBytes> {
        self.tick += 1;
        let tick = self.tick;
        let (bytes, old) = self.map.get_mut(id)?;
        self.order.remove(old);
        *old = tick;
        self.order.insert(tick, *id);
        Some(bytes.clone())
    }

    /// `served` bytes of the chunk go to a reader: it stays wanted (if cached) until all
    /// its bytes have been served.
    fn note_read(&mut self, id: ChunkId, len: u64, served: u64) {
        if !self.map.contains_key(&id) {
            self.unwant(&id);
            return;
        }
        self.want(id, len);
        let now = self.loaded;
        let w = self.wanted.get_mut(&id).expect("just marked");
        w.served = w.served.saturating_add(served);
        w.since = now;
        if w.served >= w.len {
            self.unwant(&id);
        }
    }

    fn insert(&mut self, id: ChunkId, bytes: ChunkBytes) {
        if self.map.contains_key(&id) {
            return;
        }
        if bytes.len() as u64 > self.capacity {
            self.unwant(&id);
            return;
        }
        self.tick += 1;
        self.bytes += bytes.len() as u64;
        self.loaded += bytes.len() as u64;
        self.map.insert(id, (bytes, self.tick));
        self.order.insert(self.tick, id);
        while self.bytes > self.capacity {
            let Some((tick, victim)) = self.victim(&id) else {
                break;
            };
            self.order.remove(&tick);
            if let Some((b, _)) = self.map.remove(&victim) {
                self.bytes -= b.len() as u64;
            }
            self.unwant(&victim);
        }
    }

    /// The least recently used chunk no reader still wants, other than `new` (just loaded
    /// for a reader that has not noted its read yet), among the [`VICTIM_SCAN`] least
    /// recently used; else the least recently used.
    fn victim(&self, new: &ChunkId) -> Option<(u64, ChunkId)> {
        let unwanted = (self.order.iter().take(VICTIM_SCAN)).find(|(_, id)| *id != new && !self.is_protected(id));
        unwanted.or_else(|| self.order.iter().next()).map(|(&t, &id)| (t, id))
    }
}

impl ChunkCache {
    /// A cache holding at most `capacity` bytes of chunk data.
    pub fn new(capacity: u64) -> Self {
        ChunkCache {
            capacity,
            lru: Mutex::new(Lru {
                capacity,
                ..Lru::default()
            }),
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

    /// Bytes of chunks fetched ahead of readers or read in part: chunks still needed.
    pub fn wanted_bytes(&self) -> u64 {
        self.lru.lock().expect("cache lock").wanted_bytes
    }

    /// Reserve room for chunk `id` (`len` bytes) to be fetched ahead of its reader. When
    /// nothing is wanted the chunk always gets room, however large.
    pub fn reserve_ahead(&self, id: ChunkId, len: u64) -> Ahead {
        let budget = self.capacity / AHEAD_SHARE.1 * AHEAD_SHARE.0;
        self.lru.lock().expect("cache lock").reserve_ahead(id, len, budget)
    }

    /// Give back the room reserved for `id` (its fetch was not queued).
    pub fn cancel_ahead(&self, id: &ChunkId) {
        self.lru.lock().expect("cache lock").unwant(id);
    }

    /// Load a chunk reserved with [`ChunkCache::reserve_ahead`] into the cache. Nothing is
    /// loaded when it is cached, or no longer reserved: a reader got to it first (a prefetch
    /// queue running behind its readers must not load again what they have read).
    pub fn load_ahead(&self, id: ChunkId, load: impl FnOnce() -> Result<Vec<u8>>) {
        {
            let lru = self.lru.lock().expect("cache lock");
            if lru.map.contains_key(&id) || !lru.wanted.contains_key(&id) {
                return;
            }
        }
        if self.load_shared(id, load).is_err() {
            self.cancel_ahead(&id);
        }
    }

    /// The chunk's bytes from the cache, or from `load` without keeping them: for a chunk
    /// whose every byte is being served at once (a small file read whole), which the kernel's
    /// page cache keeps from now on. Its buffer is then freed at once and reused, still in
    /// the CPU's cache, for the next file, instead of pushing a cached chunk out.
    pub fn get_or_load_once(&self, id: ChunkId, load: impl FnOnce() -> Result<Vec<u8>>) -> LoadResult {
        if let Some(b) = self.get_for_reader(id, u64::MAX) {
            return Ok(b);
        }
        let result = load().map(Arc::new).map_err(Arc::new);
        self.cancel_ahead(&id);
        result
    }

    /// The chunk's bytes from the cache, or from `load` (once, however many threads ask).
    /// `load` must return verified bytes. `served`: how many of its bytes this read serves
    /// (until all have been, the chunk stays wanted).
    pub fn get_or_load(&self, id: ChunkId, served: u64, load: impl FnOnce() -> Result<Vec<u8>>) -> LoadResult {
        if let Some(b) = self.get_for_reader(id, served) {
            return Ok(b);
        }
        let result = self.load_shared(id, load);
        if let Ok(b) = &result {
            self.lru
                .lock()
                .expect("cache lock")
                .note_read(id, b.len() as u64, served);
        }
        result
    }

    /// The cached chunk, for a reader.
    fn get_for_reader(&self, id: ChunkId, served: u64) -> Option<ChunkBytes> {
        let mut lru = self.lru.lock().expect("cache lock");
        let bytes = lru.get(&id)?;
        lru.note_read(id, bytes.len() as u64, served);
        Some(bytes)
    }

    /// Load a chunk once however many threads ask at the same time, and cache it.
    fn load_shared(&self, id: ChunkId, load: impl FnOnce() -> Result<Vec<u8>>) -> LoadResult {
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
                let loaded = load().map(Arc::new).map_err(Arc::new);
                // Cached before the threads waiting for it see it, so that what they note
                // about their reads applies to the cached chunk.
                if let Ok(bytes) = &loaded {
                    self.lru.lock().expect("cache lock").insert(id, bytes.clone());
                }
                loaded
            })
            .clone();
        if loaded_here {
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
            cache.get_or_load(id(n), u64::MAX, || Ok(vec![n; 10])).unwrap();
        }
        assert!(cache.cached_bytes() <= 25);
        assert!(!cache.contains(&id(0)));
        assert!(cache.contains(&id(2)));
        // Touch 1, add 3: 2 goes, 1 stays.
        cache.get_or_load(id(1), u64::MAX, || panic!("cached")).unwrap();
        cache.get_or_load(id(3), u64::MAX, || Ok(vec![3; 10])).unwrap();
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
                        .get_or_load(id(7), u64::MAX, || {
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
        let err = cache.get_or_load(id(8), u64::MAX, || Err(crate::Error::Damaged("bad".into())));
        assert!(err.is_err());
        assert!(cache.get_or_load(id(8), u64::MAX, || Ok(vec![1])).is_ok());
    }

    fn fetch_ahead(cache: &ChunkCache, n: u8, len: usize) {
        assert_eq!(cache.reserve_ahead(id(n), len as u64), Ahead::Reserved);
        cache.load_ahead(id(n), || Ok(vec![n; len]));
    }

    #[test]
    fn chunks_fetched_ahead_stay_until_read() {
        let cache = ChunkCache::new(40);
        fetch_ahead(&cache, 1, 10);
        fetch_ahead(&cache, 2, 10);
        // A reader goes through other chunks; the two fetched ahead are not pushed out.
        for n in 10..15 {
            cache.get_or_load(id(n), 10, || Ok(vec![n; 10])).unwrap();
        }
        assert!(cache.contains(&id(1)) && cache.contains(&id(2)));
        assert_eq!(cache.wanted_bytes(), 20);
        // Once read, they are ordinary cached chunks again.
        cache.get_or_load(id(1), 10, || panic!("cached")).unwrap();
        cache.get_or_load(id(2), 10, || panic!("cached")).unwrap();
        assert_eq!(cache.wanted_bytes(), 0);
    }

    #[test]
    fn fetching_ahead_stops_at_the_budget() {
        let cache = ChunkCache::new(40); // budget 30
        for n in 1..=3 {
            fetch_ahead(&cache, n, 10);
        }
        assert_eq!(cache.reserve_ahead(id(4), 10), Ahead::Full);
        assert_eq!(cache.reserve_ahead(id(2), 10), Ahead::NotNeeded);
        cache.get_or_load(id(1), 10, || panic!("cached")).unwrap();
        assert_eq!(cache.reserve_ahead(id(4), 10), Ahead::Reserved);
        cache.cancel_ahead(&id(4));
        assert_eq!(cache.wanted_bytes(), 20);
        // When nothing is wanted, a chunk larger than the budget still gets room.
        let empty = ChunkCache::new(40);
        assert_eq!(empty.reserve_ahead(id(9), 35), Ahead::Reserved);
    }

    #[test]
    fn a_chunk_read_in_part_stays_until_all_its_bytes_are_served() {
        let cache = ChunkCache::new(30);
        // The second half is asked for first (two kernel requests, two threads).
        cache.get_or_load(id(1), 6, || Ok(vec![1; 10])).unwrap();
        for n in 10..15 {
            cache.get_or_load(id(n), 10, || Ok(vec![n; 10])).unwrap();
        }
        assert!(cache.contains(&id(1)));
        cache.get_or_load(id(1), 4, || panic!("cached")).unwrap();
        assert_eq!(cache.wanted_bytes(), 0);
    }

    #[test]
    fn serving_a_whole_chunk_after_a_part_does_not_overflow() {
        let cache = ChunkCache::new(30);
        cache.get_or_load(id(1), 4, || Ok(vec![1; 10])).unwrap();
        cache.get_or_load(id(1), u64::MAX, || panic!("cached")).unwrap();
        assert_eq!(cache.wanted_bytes(), 0);
    }

    #[test]
    fn marks_of_readers_that_stopped_lapse() {
        let cache = ChunkCache::new(40);
        for n in 1..=3 {
            fetch_ahead(&cache, n, 10);
        }
        assert_eq!(cache.reserve_ahead(id(4), 10), Ahead::Full);
        // Lookups alone do not age marks; chunks loaded do, a cache-full of them.
        for _ in 0..1000 {
            cache.get_or_load(id(1), 0, || panic!("cached")).unwrap();
        }
        assert_eq!(cache.reserve_ahead(id(4), 10), Ahead::Full);
        for n in 30..50 {
            cache.get_or_load(id(n), 10, || Ok(vec![n; 10])).unwrap();
        }
        assert_eq!(cache.reserve_ahead(id(4), 10), Ahead::Reserved);
        // Stale marks no longer protect: the new chunks pushed them out.
        assert!(!cache.contains(&id(2)) && !cache.contains(&id(3)));
    }

    #[test]
    fn a_chunk_just_loaded_is_not_its_own_victim() {
        let cache = ChunkCache::new(30);
        for n in 1..=3 {
            cache.get_or_load(id(n), 5, || Ok(vec![n; 10])).unwrap();
        }
        // Everything cached is wanted (read in part); the next chunk pushes out the oldest.
        cache.get_or_load(id(4), 5, || Ok(vec![4; 10])).unwrap();
        assert!(cache.contains(&id(4)) && !cache.contains(&id(1)));
    }

    #[test]
    fn the_search_for_an_unwanted_victim_is_bounded() {
        let key = |n: u16| ChunkId::of(&n.to_le_bytes());
        let partly_read = |cache: &ChunkCache, n: u16| {
            cache.get_or_load(key(n), 1, || Ok(vec![0; 2])).unwrap();
        };
        // Room for VICTIM_SCAN + 2 chunks of 2 bytes.
        let cache = ChunkCache::new(2 * (VICTIM_SCAN as u64 + 2));
        for n in 0..=VICTIM_SCAN as u16 {
            partly_read(&cache, n);
        }
        // Read whole, so unwanted, but behind more wanted chunks than the search looks at:
        // the least recently used go, wanted or not, until it comes within reach.
        cache.get_or_load(id(1), u64::MAX, || Ok(vec![1; 2])).unwrap();
        partly_read(&cache, 1000);
        partly_read(&cache, 1001);
        assert!(!cache.contains(&key(0)) && !cache.contains(&key(1)) && cache.contains(&id(1)));
        partly_read(&cache, 1002);
        assert!(!cache.contains(&id(1)) && cache.contains(&key(2)));
    }

    #[test]
    fn a_chunk_larger_than_the_cache_is_not_fetched_ahead() {
        let cache = ChunkCache::new(40);
        assert_eq!(cache.reserve_ahead(id(1), 41), Ahead::NotNeeded);
        assert_eq!(cache.wanted_bytes(), 0);
    }

    #[test]
    fn a_fetch_queued_behind_its_reader_loads_nothing() {
        let cache = ChunkCache::new(40);
        assert_eq!(cache.reserve_ahead(id(1), 10), Ahead::Reserved);
        // The reader got there first and served the whole chunk without caching it.
        cache.get_or_load_once(id(1), || Ok(vec![1; 10])).unwrap();
        cache.load_ahead(id(1), || panic!("loaded again after its reader"));
        assert_eq!(cache.wanted_bytes(), 0);
        assert!(!cache.contains(&id(1)));
    }
}
