//! Round trips through the real binary: what goes in comes out identical, the root hash is
//! a function of content only, and a second version stores about what changed.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use common::*;

/// A tree with every awkward thing a dataset can hold. Returns (files, dirs, symlinks, bytes).
fn build_awkward_tree(root: &Path) -> (u64, u64, u64, u64) {
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut add = |rel: &[u8], data: &[u8], mode: u32| {
        write_file_mode(root, os(rel), data, mode);
        files += 1;
        bytes += data.len() as u64;
    };
    add(b"top.txt", b"hello, dataset\n", 0o644);
    add(b"empty.bin", b"", 0o644);
    add(b"data/train/shard-000.bin", &random_bytes(1, 700 * 1024), 0o644);
    // Above the 4 MiB small-file limit: takes the streaming path.
    add(
        b"data/train/shard-001.bin",
        &random_bytes(2, 5 * 1024 * 1024 + 123),
        0o644,
    );
    add(b"data/dup-of-shard-000.bin", &random_bytes(1, 700 * 1024), 0o644);
    add(b"data/labels.csv", &text_rows(3, 20_000), 0o644);
    add(b"scripts/run.sh", b"#!/bin/sh\necho run\n", 0o755);
    add(b"scripts/private.key", b"secret\n", 0o600);
    add(b"scripts/readonly.txt", b"do not touch\n", 0o444);
    add(b"scripts/setgid-tool", b"#!/bin/sh\n", 0o2755);
    add(b"ro_dir/inside.txt", b"in a read-only folder\n", 0o644);
    // 40 nested folders.
    let deep: Vec<u8> = (0..40).flat_map(|i| format!("d{i:02}/").into_bytes()).collect();
    add(&[deep.as_slice(), b"leaf.txt"].concat(), b"deep leaf\n", 0o644);
    // A 255-byte file name (the usual NAME_MAX).
    let long = [vec![b'n'; 251], b".txt".to_vec()].concat();
    assert_eq!(long.len(), 255);
    add(&long, b"long name\n", 0o644);
    // Non-UTF-8 names, for a file and a folder, and names with spaces, tabs and newlines.
    add(b"caf\xe9.txt", b"latin-1 name\n", 0o644);
    add(b"\xff\xfe dir/inner.bin", &random_bytes(4, 10_000), 0o644);
    add(b"spaces and\ttab.txt", b"spaces\n", 0o644);
    add(b"new\nline.txt", b"newline\n", 0o644);

    // Empty folders, one of them nested.
    fs::create_dir_all(root.join("empty_dir")).unwrap();
    fs::create_dir_all(root.join("data/empty_nested/inner")).unwrap();

    // Symlinks that stay inside the tree (one dangling, one to a non-UTF-8 name).
    symlink(root, "link_to_top", "top.txt");
    symlink(root, "data/link_up", "../top.txt");
    symlink(root, "data/train/link_to_dir", "..");
    symlink(root, "dangling", "does/not/exist");
    symlink(root, "link_to_latin1", os(b"caf\xe9.txt"));
    let symlinks = 5;

    // A read-only folder, made read-only after it was filled.
    chmod(&root.join("ro_dir"), 0o555);
    chmod(&root.join("data/empty_nested"), 0o700);

    // Folders: data, data/train, scripts, ro_dir, d00..d39, "\xff\xfe dir", empty_dir,
    // data/empty_nested, data/empty_nested/inner.
    let dirs = 4 + 40 + 1 + 1 + 2;
    (files, dirs, symlinks, bytes)
}

#[test]
fn awkward_tree_round_trips_exactly() {
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let (files, dirs, symlinks, bytes) = build_awkward_tree(&src);

    let r = vault.ingest_ok(&src, "awkward", "v1", &[]);
    assert_eq!(num(&r, "files"), files);
    assert_eq!(num(&r, "dirs"), dirs);
    assert_eq!(num(&r, "symlinks"), symlinks);
    assert_eq!(num(&r, "bytes"), bytes);
    assert_eq!(r["already_present"], false);
    assert_eq!(r["skipped"].as_array().unwrap().len(), 0);
    let root = string(&r, "root");
    assert_eq!(root.len(), 64);
    // Random data does not compress: at least the unique bytes are stored (the duplicate
    // 700 KiB file once), and not much more.
    let unique = bytes - 700 * 1024;
    let stored = num(&r, "stored_bytes");
    assert!(stored <= unique + 64 * KIB, "stored {stored} for {unique} unique bytes");
    assert!(stored >= 5 * MIB, "stored {stored}: the random shards cannot shrink");

    // Every file, mode, mtime and symlink target comes back.
    let out = tmp.path().join("export");
    let e = vault.export_ok("awkward@v1", &out);
    assert_eq!(num(&e, "files"), files);
    assert_eq!(num(&e, "bytes"), bytes);
    assert_same_tree(&src, &out);

    // `cat` gives the same bytes (by UTF-8 path; the CLI takes paths as text).
    for rel in [
        "top.txt",
        "empty.bin",
        "data/train/shard-001.bin",
        "data/labels.csv",
        "scripts/run.sh",
        &format!("{}.txt", "n".repeat(251)),
        &format!("{}leaf.txt", (0..40).map(|i| format!("d{i:02}/")).collect::<String>()),
    ] {
        let got = vault.cat("gold/awkward@v1", rel);
        assert_eq!(got, fs::read(src.join(rel)).unwrap(), "cat {rel}");
    }

    let shown = vault.show("awkward@v1");
    assert_eq!(string(&shown, "root"), root);
    assert_eq!(num(&shown, "files"), files);
    assert_eq!(num(&shown, "bytes"), bytes);
    vault.verify_read_data();

    // The root is a function of content: the exported copy (another folder, other inodes,
    // other ctimes) has the same root, and costs nothing new to store.
    let again = vault.ingest_ok(&out, "awkward-copy", "v1", &[]);
    assert_eq!(string(&again, "root"), root);
    assert_eq!(num(&again, "stored_bytes"), 0);
    assert_eq!(num(&again, "new_chunks"), 0);
    assert_eq!(again["already_present"], false);

    // `estimate` agrees: nothing new.
    let mut cmd = vault.cmd();
    cmd.args(["--json", "estimate"]).arg(&src);
    let est = run_cmd(cmd).ok().json();
    assert_eq!(num(&est, "bytes"), bytes);
    assert_eq!(num(&est, "new_bytes"), 0);
    assert_eq!(num(&est, "unique_bytes"), unique);

    assert_eq!(vault.datasets(), ["gold/awkward@v1", "gold/awkward-copy@v1"]);
    vault.verify_read_data();
}

#[test]
fn same_name_and_version_is_already_present_or_refused() {
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file(&src, "a/one.bin", &random_bytes(10, 300 * 1024));
    write_file(&src, "b.txt", b"b\n");
    let first = vault.ingest_ok(&src, "mnist", "v1", &[]);
    let root = string(&first, "root");
    let packs_before = vault.pack_bytes();

    // The identical tree again under the same NAME@VERSION: already present, nothing stored.
    let again = vault.ingest_ok(&src, "mnist", "v1", &[]);
    assert_eq!(again["already_present"], true);
    assert_eq!(num(&again, "stored_bytes"), 0);
    assert_eq!(string(&again, "root"), root);
    // In text mode it says so.
    let text = run_cmd(vault.ingest_cmd(&src, "mnist", "v1", &[])).ok();
    assert!(text.stdout_str().contains("already present"), "{}", text.stdout_str());
    assert_eq!(vault.pack_bytes(), packs_before);

    // Other content under the same NAME@VERSION is refused, naming the existing root.
    write_file(&src, "b.txt", b"changed\n");
    let refused = vault.ingest(&src, "mnist", "v1", &[]).code_is(1);
    let refused = refused.mentions(&["gold/mnist@v1", &root, "--version"]);
    assert!(
        refused.stdout.is_empty(),
        "no report on failure: {}",
        refused.stdout_str()
    );
    assert_eq!(vault.datasets(), ["gold/mnist@v1"]);
    assert_eq!(string(&vault.show("mnist@v1"), "root"), root);
    vault.verify();

    // The original content is still what the dataset holds.
    write_file(&src, "b.txt", b"b\n");
    let out = tmp.path().join("out");
    vault.export_ok("mnist@v1", &out);
    assert_eq!(fs::read(out.join("b.txt")).unwrap(), b"b\n");
    assert_same_bytes(&src.join("a/one.bin"), &out.join("a/one.bin"));
}

#[test]
fn second_version_stores_about_what_changed() {
    const SIZE: usize = 24 * 1024 * 1024;
    let vault = TestVault::new();
    let tmp = tempdir();
    let (v1, v2) = (tmp.path().join("v1"), tmp.path().join("v2"));
    let big = random_bytes(20, SIZE);
    write_file(&v1, "big.bin", &big);
    write_file(&v1, "readme.txt", b"version 1\n");
    // v2: 1 MiB of new random bytes inserted in the middle.
    let inserted = random_bytes(21, MIB as usize);
    let mut big2 = big[..SIZE / 2].to_vec();
    big2.extend_from_slice(&inserted);
    big2.extend_from_slice(&big[SIZE / 2..]);
    write_file(&v2, "big.bin", &big2);
    write_file(&v2, "readme.txt", b"version 1\n");
    drop((big, big2));

    let r1 = vault.ingest_ok(&v1, "big", "v1", &[]);
    let stored1 = num(&r1, "stored_bytes");
    assert!(stored1 >= SIZE as u64, "random bytes do not compress: stored {stored1}");
    assert!(stored1 < SIZE as u64 + 256 * KIB, "v1 stored {stored1}");

    // `estimate` predicts the cost before ingest.
    let mut cmd = vault.cmd();
    cmd.args(["--json", "estimate"]).arg(&v2);
    let est = run_cmd(cmd).ok().json();
    let predicted = num(&est, "new_bytes");
    assert!(
        (MIB..=MIB + 3 * 2 * MIB).contains(&predicted),
        "estimate says {predicted} new bytes"
    );

    let r2 = vault.ingest_ok(&v2, "big", "v2", &[]);
    let stored2 = num(&r2, "stored_bytes");
    // The insertion plus at most the chunks around it (max chunk 2 MiB each side, and one
    // more for the resynchronisation), never the rest of the file.
    assert!(
        (MIB..MIB + 3 * 2 * MIB).contains(&stored2),
        "v2 stored {stored2} bytes for a 1 MiB insertion"
    );
    assert_ne!(string(&r1, "root"), string(&r2, "root"));

    let (o1, o2) = (tmp.path().join("o1"), tmp.path().join("o2"));
    vault.export_ok("big@v1", &o1);
    vault.export_ok("big@v2", &o2);
    assert_same_tree(&v1, &o1);
    assert_same_tree(&v2, &o2);
    vault.verify_read_data();
}

#[test]
fn files_cache_rereads_only_changed_files() {
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    for i in 0..30 {
        write_file(
            &src,
            format!("small/{i:03}.bin"),
            &random_bytes(100 + i, 4096 + i as usize),
        );
    }
    write_file(&src, "medium.bin", &random_bytes(99, 2 * MIB as usize));
    let files = 31;
    // Files modified in the last 2 s are never cached (their mtime could still change
    // unseen within the clock's granularity): let the tree age first.
    std::thread::sleep(Duration::from_millis(2200));

    let r1 = vault.ingest_ok(&src, "cached", "v1", &[]);
    assert_eq!(num(&r1, "files"), files);
    assert_eq!(num(&r1, "files_from_cache"), 0);

    // Change one small file: same size, and its mtime put back as it was. Only the ctime
    // tells; the cache must still catch it.
    let changed = src.join("small/007.bin");
    let mtime = fs::metadata(&changed).unwrap().modified().unwrap();
    let mut bytes = fs::read(&changed).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&changed, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&changed)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    let r2 = vault.ingest_ok(&src, "cached", "v2", &[]);
    assert_eq!(num(&r2, "files"), files);
    assert_eq!(num(&r2, "files_from_cache"), files - 1);
    assert!(
        num(&r2, "stored_bytes") < 64 * KIB,
        "v2 stored {}",
        num(&r2, "stored_bytes")
    );
    assert_ne!(string(&r1, "root"), string(&r2, "root"));
    let out = tmp.path().join("out2");
    vault.export_ok("cached@v2", &out);
    assert_same_tree(&src, &out);

    // --rehash reads everything again and finds the same content.
    let r3 = vault.ingest_ok(&src, "cached", "v3", &["--rehash"]);
    assert_eq!(num(&r3, "files_from_cache"), 0);
    assert_eq!(num(&r3, "stored_bytes"), 0);
    assert_eq!(string(&r3, "root"), string(&r2, "root"));

    // v1 still holds the old bytes.
    let old = vault.cat("cached@v1", "small/007.bin");
    assert_ne!(old, bytes);
    assert_eq!(old.len(), bytes.len());
    vault.verify_read_data();
}

#[test]
fn non_utf8_names_survive_in_json_output() {
    // A special file with a non-UTF-8 name is listed in `skipped`: the JSON report must
    // still be one valid object, and the command must not fail after sealing.
    // The same goes for a non-UTF-8 source folder (`estimate`) and destination (`export`).
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join(OsStr::from_bytes(b"src-\xfe"));
    write_file(&src, os(b"caf\xe9.txt"), b"x\n");
    mkfifo(&src.join(OsStr::from_bytes(b"fifo-\xff")));
    let r = vault.ingest_ok(&src, "latin", "v1", &[]);
    assert_eq!(num(&r, "files"), 1);
    let skipped = r["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{r}");
    assert!(string(&skipped[0], "path").contains("fifo-"), "{r}");
    assert_eq!(vault.datasets(), ["gold/latin@v1"]);

    let mut cmd = vault.cmd();
    cmd.args(["--json", "estimate"]).arg(&src);
    let est = run_cmd(cmd).ok().json();
    assert_eq!(num(&est, "new_bytes"), 0);
    assert!(string(&est, "source").contains("src-"), "{est}");

    let out = tmp.path().join(OsStr::from_bytes(b"out-\xfd"));
    let e = vault.export_ok("latin@v1", &out);
    assert!(string(&e, "destination").contains("out-"), "{e}");
    assert_same_tree(&src, &out);
    vault.verify();
}
