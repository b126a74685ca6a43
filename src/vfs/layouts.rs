//! File layouts loaded ahead of readers: which chunks hold each file's bytes, fetched from
//! the catalog for a run of files at once.
//!
//! Owns: when to load the layouts of the files after the one being opened, and keeping them
//! (bounded) until they are opened. Entry ids follow the order files are listed in (ingest
//! walks each folder by name), so `find | xargs cat`, `tar`, `cp -r` and a loader walking a
//! folder open files in id order; one catalog query then serves the next 64 opens instead of
//! one query (and one lock of the catalog) per file. A reader that jumps around is noticed
//! and gets single-file queries, so random access does not pay for rows it never uses.
//! Layouts of sealed datasets never change, so nothing here goes stale.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::{DatasetInfo, Shared, VfsResult, DATASET_BASE, ENTRY_BASE};
use crate::catalog::FileLayout;

/// Files loaded per query for a reader going through files in order.
const RUN: i64 = 64;
/// Chunks loaded per query at most (the file asked for always comes whole).
const RUN_CHUNKS: usize = 1024;
/// Chunks kept at most (about 100 bytes each); when full, it starts over.
const KEPT_CHUNKS: usize = 16384;
/// Recent loads remembered to tell a reader going on in order from one jumping around.
const RECENT: usize = 16;

/// A loaded layout with its dataset.
#[derive(Clone)]
pub(crate) struct Layout {
    pub dataset: Arc<DatasetInfo>,
    pub file: Arc<FileLayout>,
}

#[derive(Default)]
pub(crate) struct Layouts {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_ino: HashMap<u64, Layout>,
    chunks: usize,
    /// Where recent loads ended (entry id after the last one loaded).
    recent_ends: VecDeque<i64>,
}

impl Layouts {
    /// The layout of file `ino`: kept from an earlier load, or loaded now with the files after
    /// it when reading goes on in order. `None` when `ino` is not a file of a sealed dataset
    /// in this view (a folder, a symlink, or gone); the caller finds out which.
    pub fn get(&self, shared: &Shared, ino: u64) -> VfsResult<Option<Layout>> {
        if !(ENTRY_BASE..DATASET_BASE).contains(&ino) {
            return Ok(None);
        }
        let id = (ino - ENTRY_BASE) as i64;
        let count = {
            let inner = self.inner.lock().expect("layouts lock");
            if let Some(l) = inner.by_ino.get(&ino) {
                return Ok(Some(l.clone()));
            }
            // Going on in order: this file is at (or just past) where a recent load ended.
            let in_order = inner.recent_ends.iter().any(|&end| (end - RUN..=end + 1).contains(&id));
            if in_order {
                RUN
            } else {
                1
            }
        };
        let files = shared.pool.with(|c| c.file_layouts(id, count, RUN_CHUNKS))?;
        let mut wanted = None;
        let mut loaded = Vec::with_capacity(files.len());
        for file in files {
            let Some(dataset) = shared.dataset_in_view(file.dataset_id)? else {
                continue;
            };
            let layout = Layout {
                dataset,
                file: Arc::new(file),
            };
            if layout.file.entry_id == id {
                wanted = Some(layout.clone());
            }
            loaded.push(layout);
        }
        let mut inner = self.inner.lock().expect("layouts lock");
        // Reading on from the end of this run (or of the single file) continues in order.
        if inner.recent_ends.len() >= RECENT {
            inner.recent_ends.pop_front();
        }
        let end = loaded.last().map_or(id, |l| l.file.entry_id) + 1;
        inner.recent_ends.push_back(end);
        for layout in loaded {
            inner.insert(layout);
        }
        Ok(wanted)
    }
}

impl Inner {
    fn insert(&mut self, layout: Layout) {
        let chunks = layout.file.chunks.len().max(1);
        if self.chunks + chunks > KEPT_CHUNKS {
            self.by_ino.clear();
            self.chunks = 0;
        }
        let ino = ENTRY_BASE + layout.file.entry_id as u64;
        if self.by_ino.insert(ino, layout).is_none() {
            self.chunks += chunks;
        }
    }
}
