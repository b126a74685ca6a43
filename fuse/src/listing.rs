//! Which entries of a READDIRPLUS answer carry attributes.
//!
//! A described entry saves the kernel a LOOKUP when the caller then uses it (`stat`, `open`),
//! and costs the kernel an inode (and the server its attributes) when the caller does not (a
//! d_type walk: `find -type f`, `os.scandir`, `os.walk`). The kernel cannot tell which walk is
//! coming; this module guesses from what callers did with earlier listings, per mount:
//!
//! - Folders are always described: walks descend into them, and there are few.
//! - **Bare** (the start): files come without attributes. [`MISSES_TO_DESCRIBE`] LOOKUPs of
//!   files (each one a round trip a described entry would have saved) switch to describing,
//!   and double the batch needed to go bare again (up to [`PATIENCE_MAX`]).
//! - **Describing**: files are described, except every [`PROBE_EVERY`]th, a
//!   probe. A probe that is looked up was used; one still not looked up after
//!   [`PROBE_AGE`] more probes were handed out is judged unused. When fewer than a quarter of
//!   a batch of [`PROBE_BATCH`] judged probes were used, callers walk without using entries:
//!   switch to bare.
//!
//! Starting bare costs a walk that uses its entries 16 LOOKUPs plus what the kernel listed
//! before them (at most a folder: a 1,000-file `ls -l` takes 20 ms instead of 5), and saves a
//! walk that does not the inodes of the thousands of files listed before its probes were
//! judged, a sixth of a 300,000-file `find -type f` (docs/mount.md).
//!
//! The two mistakes do not cost the same: a described entry nobody uses costs a few
//! microseconds, a used entry listed bare costs a LOOKUP round trip (five times more), and a
//! reader may use a listing long after the walk (`find | xargs cat`, a training job reading
//! what a dataset scan listed), after its probes were judged. So going bare needs evidence
//! that grows each time it proved wrong, and going back needs little.
//!
//! A wrong guess costs time, never correctness: an entry without attributes is an ordinary
//! directory entry, and the kernel sends a LOOKUP when it needs it. A page decides from a
//! copy of the mode and hands its probes over when it ends, so no lock is held while the
//! view reads the catalog.
//! Owns: that decision and its counters. Never: calls the view or answers requests.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use dsvault::vfs::{Describe, DirEntry, NodeKind};

/// One file entry in this many is a probe while describing.
const PROBE_EVERY: u32 = 64;
/// A probe not looked up after this many later probes were handed out is judged unused
/// (64 × 64 = 4,096 file entries: room for a reader that uses what a walk lists a few
/// folders behind it, like `find | xargs cat`).
const PROBE_AGE: usize = 64;
/// Judged probes the first decision to go bare needs.
const PROBE_BATCH: u32 = 64;
/// LOOKUPs of files, while listing bare, that switch to describing.
const MISSES_TO_DESCRIBE: u32 = 16;
/// The most judged probes a decision to go bare may need (after wrong guesses).
const PATIENCE_MAX: u32 = PROBE_BATCH << 6;

/// The per-mount listing policy (see the module doc).
#[derive(Default)]
pub(crate) struct Listing {
    state: Mutex<State>,
    /// File entries listed bare and described so far (for the unmount's debug log).
    files_bare: AtomicU64,
    files_described: AtomicU64,
}

#[derive(Debug)]
struct State {
    bare: bool,
    /// Judged probes a decision needs: [`PROBE_BATCH`], doubled by each switch back.
    patience: u32,
    /// Bare: LOOKUPs of files since the switch.
    misses: u32,
    /// Describing: file entries since the last probe.
    since_probe: u32,
    /// Describing: probes handed out, oldest first; those also in `waiting` are not yet
    /// judged.
    probes: VecDeque<u64>,
    waiting: HashSet<u64>,
    /// Describing: probes judged in this batch, and how many of them were used.
    judged: u32,
    used: u32,
}

impl Default for State {
    /// Bare, with half a batch of patience: the first switch to describing is not a wrong
    /// guess, and doubles it to [`PROBE_BATCH`].
    fn default() -> Self {
        State {
            bare: true,
            ..State::describing(PROBE_BATCH / 2)
        }
    }
}

impl Listing {
    /// The policy for one READDIRPLUS answer: ask [`Page::describe`] per entry. The page
    /// decides from a copy of the mode taken now and hands its probes over when dropped, so
    /// no lock is held while the view reads the catalog (other threads' LOOKUPs and pages go
    /// on meanwhile).
    pub(crate) fn page(&self) -> Page<'_> {
        let s = self.lock();
        Page {
            listing: self,
            bare: s.bare,
            since_probe: s.since_probe,
            probes: Vec::new(),
        }
    }

    /// A READDIRPLUS answer sent `bare` file entries without attributes and `described`
    /// with.
    pub(crate) fn sent(&self, bare: u64, described: u64) {
        self.files_bare.fetch_add(bare, Ordering::Relaxed);
        self.files_described.fetch_add(described, Ordering::Relaxed);
    }

    /// (file entries listed bare, file entries described) since the mount began.
    pub(crate) fn files_listed(&self) -> (u64, u64) {
        (
            self.files_bare.load(Ordering::Relaxed),
            self.files_described.load(Ordering::Relaxed),
        )
    }

    /// A LOOKUP found `ino`, of kind `kind`.
    pub(crate) fn looked_up(&self, ino: u64, kind: NodeKind) {
        if kind == NodeKind::Dir {
            return;
        }
        let mut s = self.lock();
        if s.bare {
            s.misses += 1;
            if s.misses >= MISSES_TO_DESCRIBE {
                let patience = (s.patience * 2).min(PATIENCE_MAX);
                tracing::debug!(
                    "listings: {} lookups of files listed bare, describing again (bare after {patience} unused probes)",
                    s.misses
                );
                *s = State::describing(patience);
            }
        } else if s.waiting.remove(&ino) {
            s.used += 1;
            s.judged += 1;
            s.decide();
        }
    }

    /// Is the mount listing files without attributes now?
    #[cfg(test)]
    fn is_bare(&self) -> bool {
        self.lock().bare
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is counters only: one half updated by a panic is still a valid guess.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The policy for one READDIRPLUS answer (see [`Listing::page`]).
pub(crate) struct Page<'a> {
    listing: &'a Listing,
    bare: bool,
    since_probe: u32,
    /// Probes handed out in this page, in order.
    probes: Vec<u64>,
}

impl Describe for Page<'_> {
    fn describe(&mut self, entry: &DirEntry) -> bool {
        Page::describe(self, entry.ino, entry.kind)
    }
    fn expects_files(&self) -> bool {
        !self.bare
    }
}

impl Page<'_> {
    /// Should this entry (not `.` or `..`) carry its attributes?
    pub(crate) fn describe(&mut self, ino: u64, kind: NodeKind) -> bool {
        if kind == NodeKind::Dir {
            return true;
        }
        if self.bare {
            return false;
        }
        self.since_probe += 1;
        if self.since_probe < PROBE_EVERY {
            return true;
        }
        self.since_probe = 0;
        self.probes.push(ino);
        false
    }
}

impl Drop for Page<'_> {
    /// Hand the page's probes to the mount's state (unless it went bare meanwhile, when they
    /// no longer matter) and judge the oldest ones.
    fn drop(&mut self) {
        let mut s = self.listing.lock();
        if s.bare || self.bare {
            return;
        }
        // Pages of other threads may have counted meanwhile: either count is as good a
        // place to continue the spacing from.
        s.since_probe = self.since_probe;
        for &ino in &self.probes {
            s.probes.push_back(ino);
            s.waiting.insert(ino);
        }
        while s.probes.len() > PROBE_AGE {
            let oldest = s.probes.pop_front().expect("probes is not empty");
            if s.waiting.remove(&oldest) {
                s.judged += 1;
                if s.decide() {
                    break;
                }
            }
        }
    }
}

impl State {
    fn describing(patience: u32) -> Self {
        State {
            bare: false,
            patience,
            misses: 0,
            since_probe: 0,
            probes: VecDeque::new(),
            waiting: HashSet::new(),
            judged: 0,
            used: 0,
        }
    }

    /// After a judged probe: switch to bare when `patience` judged probes say entries go
    /// unused. Returns whether the state was reset.
    fn decide(&mut self) -> bool {
        if self.judged < self.patience {
            return false;
        }
        if self.used * 4 < self.judged {
            tracing::debug!(
                "listings: {} of {} probes looked up, listing files bare",
                self.used,
                self.judged
            );
            *self = State {
                bare: true,
                ..State::describing(self.patience)
            };
            return true;
        }
        self.judged = 0;
        self.used = 0;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists `files` file entries (inodes from `first`) as one walk would, in pages of 800
    /// (what fits the kernel's 128 KiB), returning the inodes listed bare.
    fn list_bare(l: &Listing, first: u64, files: u64) -> Vec<u64> {
        let mut bare = Vec::new();
        for start in (first..first + files).step_by(800) {
            let mut page = l.page();
            bare.extend((start..(start + 800).min(first + files)).filter(|&ino| !page.describe(ino, NodeKind::File)));
        }
        bare
    }

    /// Like [`list_bare`], returning how many were described.
    fn list(l: &Listing, first: u64, files: u64) -> u64 {
        files - list_bare(l, first, files).len() as u64
    }

    /// A caller uses (stats or opens) each entry: the kernel sends a LOOKUP for those listed
    /// without attributes.
    fn use_entries(l: &Listing, bare: &[u64]) {
        for &ino in bare {
            l.looked_up(ino, NodeKind::File);
        }
    }

    #[test]
    fn a_walk_that_uses_nothing_lists_files_bare_and_folders_described() {
        let l = Listing::default();
        for folder in 0..20 {
            assert_eq!(list(&l, folder * 1000, 1000), 0);
        }
        assert!(l.is_bare());
        assert!(l.page().describe(1, NodeKind::Dir));
    }

    #[test]
    fn a_walk_that_stops_using_entries_turns_bare_again() {
        let l = Listing::default();
        use_entries(&l, &list_bare(&l, 0, 1000));
        assert!(!l.is_bare());
        let mut described = 0;
        for folder in 1..30 {
            described += list(&l, folder * 1000, 1000);
        }
        assert!(l.is_bare());
        // Described until PROBE_AGE + PROBE_BATCH probes were handed out (and to the end of
        // that page), bare after.
        let until = (PROBE_AGE as u64 + PROBE_BATCH as u64) * PROBE_EVERY as u64 + 800;
        assert!(described < until, "{described} described");
        assert_eq!(list(&l, 50_000, 1000), 0);
    }

    #[test]
    fn a_walk_that_stats_what_it_lists_keeps_describing() {
        let l = Listing::default();
        for folder in 0..50u64 {
            let bare = list_bare(&l, folder * 1000, 1000);
            // The first folder is listed bare (the start), the others described but for
            // their probes.
            if folder > 0 {
                assert!(
                    bare.len() as u64 <= 1000 / PROBE_EVERY as u64 + 1,
                    "{} bare",
                    bare.len()
                );
            }
            // The stat walk: every entry is used.
            use_entries(&l, &bare);
        }
        assert!(!l.is_bare());
    }

    #[test]
    fn a_reader_a_few_folders_behind_the_walk_keeps_describing() {
        let l = Listing::default();
        let folders = 40u64;
        let mut listed = Vec::new();
        for folder in 0..folders + 3 {
            if folder < folders {
                listed.push(list_bare(&l, folder * 1000, 1000));
            }
            // `find | xargs cat`: the reader opens folder N-3 while folder N is listed.
            if let Some(behind) = folder.checked_sub(3) {
                use_entries(&l, &listed[behind as usize]);
            }
        }
        assert!(!l.is_bare());
        assert!(listed[10].len() < 1000 / 10, "{} of folder 10 bare", listed[10].len());
    }

    #[test]
    fn a_reader_far_behind_the_walk_keeps_most_of_the_listing_described() {
        // `find | xargs cat` on a slow reader: the walk lists everything first, the reader
        // then uses a few entries of bare listings between each of the walk's folders.
        let l = Listing::default();
        let (folders, mut described, mut next_miss) = (300u64, 0, 1_000_000u64);
        for folder in 0..folders {
            described += list(&l, folder * 1000, 1000);
            if l.is_bare() {
                for _ in 0..MISSES_TO_DESCRIBE {
                    l.looked_up(next_miss, NodeKind::File);
                    next_miss += 1;
                }
            }
        }
        assert!(described > folders * 1000 * 9 / 10, "{described} described");
    }

    #[test]
    fn lookups_while_a_page_is_being_listed_do_not_wait_for_it() {
        let l = Listing {
            state: Mutex::new(State::describing(PROBE_BATCH)),
            ..Listing::default()
        };
        let mut page = l.page();
        assert!(page.describe(1, NodeKind::File));
        // What another thread's LOOKUP or page takes meanwhile is free.
        assert!(l.state.try_lock().is_ok(), "a page holds the policy's lock");
        l.looked_up(2, NodeKind::File);
        drop(page);
    }

    #[test]
    fn lookups_of_bare_files_switch_to_describing() {
        let l = Listing::default();
        for folder in 0..20 {
            list(&l, folder * 1000, 1000);
        }
        assert!(l.is_bare());
        for ino in 0..MISSES_TO_DESCRIBE as u64 - 1 {
            l.looked_up(ino, NodeKind::File);
            l.looked_up(ino, NodeKind::Dir);
        }
        assert!(l.is_bare());
        l.looked_up(99, NodeKind::Symlink);
        assert!(!l.is_bare());
        assert_eq!(list(&l, 90_000, 10), 10);
    }
}
