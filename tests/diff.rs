//! `dsvault diff`: hand-made pairs of datasets, one for each kind of change, compared with
//! the exact JSON they must produce; a derived set against its base; PATH; bad input.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// Every folder under `root` (and the files named) get fixed modes, so the JSON does not
/// depend on the umask of whoever runs the tests.
fn fix_dir_modes(root: &Path) {
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            chmod(e.path(), 0o755);
        }
    }
}

fn diff_json(v: &TestVault, args: &[&str]) -> Value {
    let mut all = vec!["--json", "diff"];
    all.extend_from_slice(args);
    v.run(all).ok().json()
}

/// A: keep, old, edit, perm, link -> one, swap (file), sub/inner.
/// B: keep, new, copy (A's keep, under a new name), edit (other bytes), perm (0755),
///    link -> two, swap/ (a folder now), sub/inner, sub/deeper/leaf.
fn pair(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let a = tmp.join("a");
    let b = tmp.join("b");
    for root in [&a, &b] {
        write_file_mode(root, "keep", b"kept bytes\n", 0o644);
        write_file_mode(root, "perm", b"same bytes\n", 0o644);
        write_file_mode(root, "sub/inner", b"inner\n", 0o644);
    }
    write_file_mode(&a, "old", b"only in A\n", 0o644);
    write_file_mode(&a, "edit", b"first version\n", 0o644);
    symlink(&a, "link", "one");
    write_file_mode(&a, "swap", b"a file in A\n", 0o644);

    write_file_mode(&b, "new", b"only in B!\n", 0o600);
    write_file_mode(&b, "copy", b"kept bytes\n", 0o644);
    write_file_mode(&b, "edit", b"second version, longer\n", 0o644);
    chmod(&b.join("perm"), 0o755);
    symlink(&b, "link", "two");
    write_file_mode(&b, "swap/in", b"xy\n", 0o644);
    write_file_mode(&b, "sub/deeper/leaf", b"leaf\n", 0o644);
    fix_dir_modes(&a);
    fix_dir_modes(&b);
    (a, b)
}

fn file(mode: &str, size: u64) -> Value {
    json!({"kind": "file", "mode": mode, "size": size})
}

fn dir() -> Value {
    json!({"kind": "dir", "mode": "0755", "size": 0})
}

#[test]
fn each_kind_of_change_gives_the_exact_json() {
    let tmp = tempdir();
    let (a, b) = pair(tmp.path());
    let v = TestVault::new();
    v.ingest_ok(&a, "pair", "a", &[]);
    v.ingest_ok(&b, "pair", "b", &[]);
    let got = diff_json(&v, &["pair@a", "gold/pair@b"]);
    let expected = json!({
        "a": "gold/pair@a",
        "b": "gold/pair@b",
        "path": null,
        "changes": [
            {"path": "copy", "change": "added", "b": file("0644", 11), "new_bytes": 0},
            {"path": "edit", "change": "modified", "a": file("0644", 14), "b": file("0644", 23), "new_bytes": 23},
            {"path": "link", "change": "target",
             "a": {"kind": "symlink", "mode": "0777", "size": 0, "target": "one"},
             "b": {"kind": "symlink", "mode": "0777", "size": 0, "target": "two"}},
            {"path": "new", "change": "added", "b": file("0600", 11), "new_bytes": 11},
            {"path": "old", "change": "removed", "a": file("0644", 10)},
            {"path": "perm", "change": "mode", "a": file("0644", 11), "b": file("0755", 11)},
            {"path": "swap", "change": "type", "a": file("0644", 12), "b": dir()},
            {"path": "sub/deeper", "change": "added", "b": dir()},
            {"path": "sub/deeper/leaf", "change": "added", "b": file("0644", 5), "new_bytes": 5},
            {"path": "swap/in", "change": "added", "b": file("0644", 3), "new_bytes": 3},
        ],
        "totals": {
            "added": 5, "removed": 1, "modified": 1, "mode": 1, "target": 1, "type": 1,
            "unchanged": 3,
            "added_bytes": 30, "removed_bytes": 10, "modified_bytes": 23,
            "new_bytes": 42,
            "a_bytes": 11 + 10 + 14 + 11 + 12 + 6,
            "b_bytes": 11 + 11 + 11 + 23 + 11 + 3 + 6 + 5,
            "b_bytes_in_a": 11 + 11 + 11 + 6,
            "share_in_a": 39.0 / 81.0,
        }
    });
    assert_eq!(got, expected, "{}", serde_json::to_string_pretty(&got).unwrap());

    // The other way round every addition is a removal and no byte of A is new to B except
    // those B lacks.
    let back = diff_json(&v, &["pair@b", "pair@a"]);
    assert_eq!(back["totals"]["added"], 1);
    assert_eq!(back["totals"]["removed"], 5);
    assert_eq!(back["totals"]["new_bytes"], 10 + 14 + 12);

    // The same dataset twice: nothing changed, every byte already stored.
    let same = diff_json(&v, &["pair@a", "pair@a"]);
    assert_eq!(same["changes"], json!([]));
    assert_eq!(same["totals"]["unchanged"], 8);
    assert_eq!(same["totals"]["share_in_a"], 1.0);
    v.verify();
}

#[test]
fn text_output_has_one_line_per_change_and_the_totals() {
    let tmp = tempdir();
    let (a, b) = pair(tmp.path());
    let v = TestVault::new();
    v.ingest_ok(&a, "pair", "a", &[]);
    v.ingest_ok(&b, "pair", "b", &[]);
    let out = v.run(["diff", "pair@a", "pair@b"]).ok().stdout_str();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "gold/pair@a -> gold/pair@b");
    assert_eq!(lines[1], "+ copy  file 11 B 0644, 0 B new");
    assert_eq!(lines[2], "M edit  file 14 B -> file 23 B, 23 B new");
    assert_eq!(lines[3], "T link  symlink -> one -> symlink -> two");
    assert_eq!(lines[5], "- old  file 10 B 0644");
    assert_eq!(lines[6], "m perm  0644 -> 0755");
    assert_eq!(lines[7], "K swap  file 12 B -> dir, mode 0644 -> 0755");
    assert_eq!(lines.len(), 1 + 10 + 2, "{out}");
    assert!(lines[11].starts_with("5 added (30 B), 1 removed (10 B), 1 modified (23 B), 1 mode"));
    assert_eq!(
        lines[12],
        "39 B of gold/pair@b's 81 B (48.1%) already stored by gold/pair@a; 42 B new"
    );
}

#[test]
fn path_narrows_the_comparison_to_a_folder_or_a_file() {
    let tmp = tempdir();
    let (a, b) = pair(tmp.path());
    let v = TestVault::new();
    v.ingest_ok(&a, "pair", "a", &[]);
    v.ingest_ok(&b, "pair", "b", &[]);
    let sub = diff_json(&v, &["pair@a", "pair@b", "/sub/"]);
    assert_eq!(sub["path"], "sub");
    let paths: Vec<&str> = sub["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["sub/deeper", "sub/deeper/leaf"]);
    // `sub` itself and `sub/inner` are unchanged.
    assert_eq!(sub["totals"]["unchanged"], 2);
    // A sibling whose name starts like the folder is not under it.
    let one = diff_json(&v, &["pair@a", "pair@b", "edit"]);
    assert_eq!(one["changes"].as_array().unwrap().len(), 1);
    assert_eq!(one["changes"][0]["change"], "modified");
    // `swap` is a file in A and a folder in B: both the entry and what B has under it.
    let swap = diff_json(&v, &["pair@a", "pair@b", "swap"]);
    let kinds: Vec<&str> = swap["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["type", "added"]);
}

#[test]
fn a_derived_set_against_its_base() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file_mode(&src, "data/one.csv", b"1,2,3\n", 0o644);
    write_file_mode(&src, "data/two.csv", b"4,5,6\n", 0o644);
    write_file_mode(&src, "README", b"base\n", 0o644);
    fix_dir_modes(&src);
    let v = TestVault::new();
    v.ingest_ok(&src, "base", "v1", &[]);
    v.run(["workspace", "new", "clean", "--base", "gold/base@v1"]).ok();
    let upper = v.dir.join("workspaces/clean/upper");
    write_file_mode(&upper, "data/two.csv", b"4,5,6,7\n", 0o644);
    write_file_mode(&upper, "data/three.csv", b"1,2,3\n", 0o644);
    chmod(&upper.join("data"), 0o755);
    let vault = dsvault::Vault::open(&v.dir).unwrap();
    let ws = dsvault::workspace::Workspace::open(&vault, "clean").unwrap();
    ws.whiteout(&vault, Path::new("README")).unwrap();
    v.run(["derive", "clean", "--name", "cleaned", "--version", "v1"]).ok();

    let got = diff_json(&v, &["base@v1", "cleaned@v1"]);
    let expected = json!({
        "a": "gold/base@v1",
        "b": "derived/cleaned@v1",
        "path": null,
        "changes": [
            {"path": "README", "change": "removed", "a": file("0644", 5)},
            {"path": "data/three.csv", "change": "added", "b": file("0644", 6), "new_bytes": 0},
            {"path": "data/two.csv", "change": "modified", "a": file("0644", 6), "b": file("0644", 8), "new_bytes": 8},
        ],
        "totals": {
            "added": 1, "removed": 1, "modified": 1, "mode": 0, "target": 0, "type": 0,
            "unchanged": 2,
            "added_bytes": 6, "removed_bytes": 5, "modified_bytes": 8, "new_bytes": 8,
            "a_bytes": 17, "b_bytes": 20, "b_bytes_in_a": 12, "share_in_a": 0.6,
        }
    });
    assert_eq!(got, expected, "{}", serde_json::to_string_pretty(&got).unwrap());
}

#[test]
fn a_large_modified_file_counts_only_its_new_chunks() {
    let tmp = tempdir();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let mut data = random_bytes(7, 6 * MIB as usize);
    write_file(&a, "big.bin", &data);
    // Overwrite 100 bytes near the end: the chunks before it are shared.
    let at = data.len() - 50_000;
    data[at..at + 100].fill(0xAB);
    write_file(&b, "big.bin", &data);
    let v = TestVault::new();
    v.ingest_ok(&a, "big", "a", &[]);
    v.ingest_ok(&b, "big", "b", &[]);
    let got = diff_json(&v, &["big@a", "big@b"]);
    let t = &got["totals"];
    let new = num(t, "new_bytes");
    assert_eq!(got["changes"][0]["new_bytes"].as_u64(), Some(new));
    assert!(new > 0 && new <= 2 * MIB + 128 * KIB, "new bytes {new}");
    assert_eq!(num(t, "b_bytes_in_a") + new, 6 * MIB);
    assert!(t["share_in_a"].as_f64().unwrap() > 0.6, "{t}");
}

#[test]
fn bad_input_is_refused_with_the_thing_named() {
    let tmp = tempdir();
    let (a, b) = pair(tmp.path());
    let v = TestVault::new();
    v.ingest_ok(&a, "pair", "a", &[]);
    v.ingest_ok(&b, "pair", "b", &[]);
    v.run(["diff", "pair@a", "nope@v9"])
        .code_is(1)
        .mentions(&["nope@v9", "dsvault ls"]);
    v.run(["diff", "pair@a", "pair@b", "missing/folder"])
        .code_is(1)
        .mentions(&["missing/folder"]);
    v.run(["diff", "pair@a", "pair@b", "../.."])
        .code_is(1)
        .mentions(&[".."]);
    v.run(["diff", "pair@a", "../../etc@v1"]).code_is(2);
    v.verify();
}

#[test]
fn non_utf8_names_are_reported_as_text() {
    let tmp = tempdir();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    fs::create_dir_all(&a).unwrap();
    write_file(&b, os(b"caf\xe9.txt"), b"x");
    let v = TestVault::new();
    v.ingest_ok(&a, "n", "a", &[]);
    v.ingest_ok(&b, "n", "b", &[]);
    let got = diff_json(&v, &["n@a", "n@b"]);
    assert_eq!(got["changes"][0]["path"], "caf\u{fffd}.txt");
    let text = v.run(["diff", "n@a", "n@b"]).ok().stdout_str();
    assert!(text.contains("+ caf\u{fffd}.txt"), "{text}");
}
