//! Golden tests: the on-disk formats pinned byte for byte, so that a dependency bump (blake3,
//! serde_json, zstd, fastcdc) or a refactor that changes a format fails here instead of
//! silently splitting the dedup space or orphaning stored manifests.
//!
//! Owns: the root hash and the manifest of a fixed tree ingested for real (compared with the
//! example in docs/FORMAT.md), the example pack in docs/FORMAT.md (compared byte for byte
//! with what `PackWriter` writes), and the schema version docs/FORMAT.md names. The FastCDC
//! cut points of a fixed seeded input are pinned in `chunker.rs`
//! (`golden_boundaries_default_params`).

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::dataset::{DatasetName, Kind};
use crate::id::PackId;
use crate::ops::ingest::{ingest, IngestOptions};
use crate::pack::{parse_index, test_pack};
use crate::progress::NoProgress;
use crate::vault::Vault;

fn format_md() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/FORMAT.md")).unwrap()
}

/// The text of the fenced block (```` ```LANG ````) that follows `marker` in docs/FORMAT.md.
fn block_after(doc: &str, marker: &str, lang: &str) -> String {
    let at = doc
        .find(marker)
        .unwrap_or_else(|| panic!("docs/FORMAT.md lost {marker:?}"));
    let fence = format!("```{lang}\n");
    let start = doc[at..].find(&fence).expect("a fenced block after the marker") + at + fence.len();
    let len = doc[start..].find("```").expect("a closing fence");
    doc[start..start + len].to_string()
}

/// Set a path's mtime (not following symlinks) to `secs` since the epoch.
fn set_mtime(path: &Path, secs: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: a valid NUL-terminated path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// 3 MiB of bytes anyone can regenerate: blake3's output stream for a fixed key string.
fn fixed_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"dsvault golden tree")
        .finalize_xof()
        .fill(&mut out);
    out
}

/// The tree of docs/FORMAT.md's example manifest: every entry kind, modes 0755 and 0644, an
/// empty file, an empty folder, a file of several chunks and a non-UTF-8 name, all with
/// mtime 2026-11-24 00:00:00 UTC.
fn fixed_tree(root: &Path) {
    const MTIME: i64 = 1_795_478_400;
    let file = |rel: &str, bytes: &[u8], mode: u32| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    file("README", b"dsvault golden tree\n", 0o644);
    file("scripts/prepare.sh", b"#!/bin/sh\necho ready\n", 0o755);
    file("data/blob.bin", &fixed_bytes(3 << 20), 0o644);
    file("data/EMPTY", b"", 0o644);
    fs::create_dir(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("data/blob.bin", root.join("latest")).unwrap();
    let latin1 = PathBuf::from(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    fs::write(root.join(&latin1), b"x\n").unwrap();
    fs::set_permissions(root.join(&latin1), fs::Permissions::from_mode(0o644)).unwrap();
    for dir in ["scripts", "data", "empty"] {
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for e in walkdir::WalkDir::new(root).min_depth(1).contents_first(true) {
        set_mtime(e.unwrap().path(), MTIME);
    }
}

#[test]
fn the_root_and_manifest_of_a_fixed_tree_are_those_in_format_md() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fixed_tree(&src);
    let vault = Vault::init(&tmp.path().join("vault"), None).unwrap();
    let name = DatasetName::new(Kind::Gold, "golden", "v1").unwrap();
    let report = ingest(&vault, &IngestOptions::new(src, name), &NoProgress).unwrap();
    let doc = format_md();
    let manifest = String::from_utf8(vault.store().get_manifest(report.root).unwrap().unwrap()).unwrap();
    let documented = block_after(&doc, "The manifest of that tree", "json");
    assert_eq!(
        manifest, documented,
        "the manifest format changed; if on purpose, bump the manifest format and update docs/FORMAT.md"
    );
    let documented_root = block_after(&doc, "The root hash of that tree", "text");
    assert_eq!(
        format!("{}\n", report.root),
        documented_root,
        "the root hash definition changed: every stored dataset would get a new identity"
    );
}

#[test]
fn the_example_pack_is_byte_for_byte_what_the_writer_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let (sealed, bytes) = test_pack(tmp.path(), &[b"hi\n"], 1);
    let doc = format_md();
    let dump = block_after(&doc, "A real 131-byte pack", "text");
    let documented: Vec<u8> = dump
        .lines()
        .flat_map(|l| {
            let hex = l.split_once(':').map_or("", |(_, rest)| rest);
            hex.split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        bytes, documented,
        "the pack layout changed; docs/FORMAT.md shows pack version 1"
    );
    let name = block_after(&doc, "The name of that pack", "text");
    assert_eq!(format!("{}\n", PackId::of(&bytes)), name);
    assert_eq!(parse_index(sealed.id, &bytes).unwrap(), sealed.entries);
}

#[test]
fn format_md_names_the_schema_version_the_code_migrates_to() {
    let doc = format_md();
    let want = format!("catalog schema {}", crate::catalog::SCHEMA_VERSION);
    let pragma = format!("`PRAGMA user_version = {}`", crate::catalog::SCHEMA_VERSION);
    let head: String = doc.lines().take(6).collect::<Vec<_>>().join(" ");
    assert!(
        head.contains(&want) && head.contains(&pragma),
        "docs/FORMAT.md's first lines must say {want} ({pragma}): the code loads {} migrations",
        crate::catalog::SCHEMA_VERSION
    );
}
