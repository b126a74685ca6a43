//! `Catalog::file_layouts`, the query the mount uses to load the chunk lists of a run of
//! files at once: it must agree with the per-file query, skip what is not a file, and cut
//! runs at the chunk limit without ever handing out a partial chunk list.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::{tempdir, TestVault};
use dsvault::catalog::{Catalog, EntryKind, FileLayout};
use dsvault::DatasetRef;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Ingest a folder with an empty file, small files, a file of several chunks, a symlink and
/// a subfolder; returns the vault and the dataset's entries in id order.
fn ingested() -> (TestVault, Catalog, Vec<dsvault::catalog::Entry>) {
    let src = tempdir();
    let a = src.path().join("a");
    fs::create_dir_all(a.join("sub")).unwrap();
    fs::write(a.join("empty"), b"").unwrap();
    fs::write(a.join("f1"), random_bytes(1000, 1)).unwrap();
    symlink("f1", a.join("link")).unwrap();
    fs::write(a.join("sub/inner"), random_bytes(3000, 2)).unwrap();
    fs::write(a.join("z_big"), random_bytes(9 << 20, 3)).unwrap();
    fs::write(a.join("zz_small"), random_bytes(500, 4)).unwrap();
    let vault = TestVault::new();
    vault.ingest_ok(src.path(), "t", "v1", &[]);
    let catalog = Catalog::open(&vault.dir.join("catalog.db")).unwrap();
    let dataset = catalog.resolve(&"gold/t@v1".parse::<DatasetRef>().unwrap()).unwrap();
    let mut entries = Vec::new();
    catalog
        .for_each_entry(dataset.id, |e| {
            entries.push(e);
            Ok(())
        })
        .unwrap();
    entries.sort_by_key(|e| e.id);
    (vault, catalog, entries)
}

fn paths(layouts: &[FileLayout]) -> Vec<String> {
    layouts
        .iter()
        .map(|l| String::from_utf8_lossy(&l.path).into_owned())
        .collect()
}

#[test]
fn a_run_of_layouts_matches_the_per_file_query_and_skips_folders_and_symlinks() {
    let (_vault, catalog, entries) = ingested();
    let first = entries[0].id;
    let layouts = catalog.file_layouts(first, 1000, usize::MAX).unwrap();
    let files: Vec<_> = entries.iter().filter(|e| e.kind == EntryKind::File).collect();
    assert_eq!(layouts.len(), files.len(), "{:?}", paths(&layouts));
    for (layout, entry) in layouts.iter().zip(&files) {
        assert_eq!(layout.entry_id, entry.id);
        assert_eq!(layout.path, entry.path());
        assert_eq!(layout.size, entry.size);
        let expected = match entry.content_id {
            Some(id) => catalog.content_layout(id).unwrap(),
            None => Vec::new(),
        };
        assert_eq!(layout.chunks, expected, "{}", String::from_utf8_lossy(&layout.path));
        let covered: u64 = layout.chunks.iter().map(|c| c.location.entry.raw_len as u64).sum();
        assert_eq!(covered, entry.size);
    }
    let big = layouts.iter().find(|l| l.path == b"a/z_big").unwrap();
    assert!(big.chunks.len() >= 3, "a 9 MiB file has several chunks");
    // A run starting anywhere (a folder, a symlink, a file) holds the files in its id range.
    for e in &entries {
        let run = catalog.file_layouts(e.id, 2, usize::MAX).unwrap();
        let expected: Vec<_> = layouts
            .iter()
            .filter(|l| (e.id..e.id + 2).contains(&l.entry_id))
            .cloned()
            .collect();
        assert_eq!(run, expected, "run from {}", String::from_utf8_lossy(&e.path()));
    }
}

#[test]
fn the_chunk_limit_cuts_runs_between_files_and_never_splits_one() {
    let (_vault, catalog, entries) = ingested();
    let all = catalog.file_layouts(entries[0].id, 1000, usize::MAX).unwrap();
    let big_at = all.iter().position(|l| l.path == b"a/z_big").unwrap();
    assert!(big_at > 0, "some file comes before the big one: {:?}", paths(&all));
    let (before, big) = (&all[big_at - 1], &all[big_at]);
    // The file asked for comes whole even past the limit.
    let only_big = catalog.file_layouts(big.entry_id, 100, 1).unwrap();
    assert_eq!(only_big, std::slice::from_ref(big));
    // The next file would go past the limit part way: it is left out, not cut short.
    let limit = before.chunks.len() + 1;
    let cut = catalog.file_layouts(before.entry_id, 100, limit).unwrap();
    assert_eq!(cut, std::slice::from_ref(before));
    // With room, the run goes on past the big file.
    let room = catalog.file_layouts(before.entry_id, 100, 1000).unwrap();
    assert_eq!(room, all[big_at - 1..]);
    // Ids past the end: nothing.
    assert!(catalog
        .file_layouts(entries.last().unwrap().id + 1, 100, 1000)
        .unwrap()
        .is_empty());
}
