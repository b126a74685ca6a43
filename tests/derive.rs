//! Workspaces, derive, lineage, rm and gc through the real binary.
//!
//! Until the FUSE overlay exists, a test fills a workspace's upper layer by writing plain
//! files into `<vault>/workspaces/<name>/upper/`, and deletes through the library's
//! `Workspace::whiteout` (what the overlay will call).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// `count` incompressible files of `size` bytes under `files/`, plus a small text file.
fn base_tree(root: &Path, count: u64, size: usize) {
    for i in 0..count {
        write_file(root, format!("files/{i:04}.bin"), &random_bytes(i, size));
    }
    write_file(root, "README", b"a base dataset\n");
}

/// Path → ("file", bytes) / ("dir", empty) / ("symlink", target) of a folder.
fn tree(root: &Path) -> BTreeMap<String, (&'static str, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in walk(root) {
        let rel = e.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(&e).unwrap();
        let v = if meta.is_dir() {
            ("dir", Vec::new())
        } else if meta.file_type().is_symlink() {
            ("symlink", fs::read_link(&e).unwrap().as_os_str().as_bytes().to_vec())
        } else {
            ("file", fs::read(&e).unwrap())
        };
        out.insert(rel, v);
    }
    out
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// A vault holding gold/base@v1 made from `src`.
/// A temporary folder with a base tree of `files` files of `size` bytes in `src/`, and a
/// vault holding it as gold/base@v1.
fn fresh_base(files: u64, size: usize) -> (tempfile::TempDir, PathBuf, TestVault) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    base_tree(&src, files, size);
    let v = vault_with_base(&src);
    (tmp, src, v)
}

fn vault_with_base(src: &Path) -> TestVault {
    let v = TestVault::new();
    v.ingest_ok(src, "base", "v1", &[]);
    v
}

fn upper(v: &TestVault, workspace: &str) -> PathBuf {
    v.dir.join("workspaces").join(workspace).join("upper")
}

fn derive(v: &TestVault, workspace: &str, name: &str, version: &str, extra: &[&str]) -> Out {
    let mut args = vec!["--json", "derive", workspace, "--name", name, "--version", version];
    args.extend_from_slice(extra);
    v.run(args)
}

#[track_caller]
fn derive_ok(v: &TestVault, workspace: &str, name: &str, version: &str) -> Value {
    let r = derive(v, workspace, name, version, &[]).ok().json();
    assert_eq!(string(&r, "dataset"), format!("derived/{name}@{version}"));
    r
}

/// Export a dataset and return its tree.
fn exported(v: &TestVault, dataset: &str) -> BTreeMap<String, (&'static str, Vec<u8>)> {
    let out = tempdir();
    let dest = out.path().join("x");
    v.export_ok(dataset, &dest);
    tree(&dest)
}

fn whiteout(v: &TestVault, workspace: &str, path: &str) {
    let vault = dsvault::Vault::open(&v.dir).unwrap();
    let ws = dsvault::workspace::Workspace::open(&vault, workspace).unwrap();
    ws.whiteout(&vault, Path::new(path)).unwrap();
}

#[test]
fn rewriting_one_percent_of_the_files_stores_about_one_percent() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let size = 96 * KIB as usize;
    base_tree(&src, 400, size);
    let v = vault_with_base(&src);
    let base_stored = v.pack_bytes();
    v.run(["workspace", "new", "clean", "--base", "gold/base@v1"]).ok();
    let up = upper(&v, "clean");
    let mut expected = tree(&src);
    for i in [7u64, 150, 151, 399] {
        let data = random_bytes(10_000 + i, size);
        let rel = format!("files/{i:04}.bin");
        write_file(&up, &rel, &data);
        expected.insert(rel, ("file", data));
    }
    let r = derive(&v, "clean", "clean", "v1", &["--command", "python clean.py"])
        .ok()
        .json();
    let stored = num(&r, "stored_bytes");
    let changed = 4 * size as u64;
    assert!(
        stored >= changed && stored <= changed + changed / 10 + 4 * KIB,
        "rewrote {changed} bytes (1% of the files), derive stored {stored}"
    );
    assert!(stored * 50 < base_stored, "stored {stored} of a base of {base_stored}");
    assert_eq!(num(&r, "files"), 401);
    assert_eq!(num(&r, "files_referenced"), 397);
    assert_eq!(num(&r, "files_from_upper"), 4);
    assert_eq!(num(&r, "new_chunks"), 4);
    assert_eq!(num(&r, "bytes"), 400 * size as u64 + 15);
    assert_eq!(v.pack_bytes(), base_stored + stored);
    assert_eq!(exported(&v, "derived/clean@v1"), expected);
    // The base is untouched.
    assert_eq!(exported(&v, "gold/base@v1"), tree(&src));
    v.verify_read_data();
}

#[test]
fn an_untouched_workspace_costs_nothing_and_has_the_base_root() {
    let (_tmp, src, v) = fresh_base(20, 200 * KIB as usize);
    let gold_root = string(&v.show("gold/base@v1"), "root");
    let packs = v.pack_files();
    v.run(["workspace", "new", "same", "--base", "base@v1"]).ok();
    let r = derive_ok(&v, "same", "same", "v1");
    assert_eq!(num(&r, "stored_bytes"), 0);
    assert_eq!(num(&r, "new_chunks"), 0);
    assert_eq!(num(&r, "files_referenced"), 21);
    assert_eq!(string(&r, "root"), gold_root, "same tree, same root");
    assert_eq!(v.pack_files(), packs);
    assert_eq!(exported(&v, "derived/same@v1"), tree(&src));
    // A second derive of the same content under the same name is "already present".
    let again = derive_ok(&v, "same", "same", "v1");
    assert_eq!(again["already_present"], true);
    v.verify();
}

#[test]
fn whiteouts_remove_files_and_folders_and_later_layers_win() {
    let tmp = tempdir();
    let a = tmp.path().join("a");
    write_file(&a, "keep.txt", b"from a\n");
    write_file(&a, "over.txt", b"from a\n");
    write_file(&a, "gone.txt", b"deleted\n");
    write_file(&a, "dir/x", b"x\n");
    write_file(&a, "dir/y", b"y\n");
    write_file(&a, "file-then-dir", b"a file in a\n");
    let b = tmp.path().join("b");
    write_file(&b, "over.txt", b"from b\n");
    write_file(&b, "only-b.txt", b"b\n");
    write_file(&b, "file-then-dir/inner", b"b replaced a file with a folder\n");
    let v = TestVault::new();
    v.ingest_ok(&a, "a", "v1", &[]);
    v.ingest_ok(&b, "b", "v1", &[]);
    v.run(["workspace", "new", "w", "--base", "a@v1", "--base", "b@v1"])
        .ok();
    whiteout(&v, "w", "gone.txt");
    whiteout(&v, "w", "dir");
    whiteout(&v, "w", "only-b.txt");
    // Recreated after the delete: the upper layer is never hidden by a whiteout.
    let up = upper(&v, "w");
    write_file(&up, "dir/new", b"new\n");
    write_file(&up, "only-b.txt", b"rewritten\n");
    derive_ok(&v, "w", "merged", "v1");
    let got: Vec<(String, &str, Vec<u8>)> = exported(&v, "derived/merged@v1")
        .into_iter()
        .map(|(p, (k, b))| (p, k, b))
        .collect();
    let want: Vec<(String, &str, Vec<u8>)> = vec![
        ("dir".into(), "dir", vec![]),
        ("dir/new".into(), "file", b"new\n".to_vec()),
        ("file-then-dir".into(), "dir", vec![]),
        (
            "file-then-dir/inner".into(),
            "file",
            b"b replaced a file with a folder\n".to_vec(),
        ),
        ("keep.txt".into(), "file", b"from a\n".to_vec()),
        ("only-b.txt".into(), "file", b"rewritten\n".to_vec()),
        ("over.txt".into(), "file", b"from b\n".to_vec()),
    ];
    assert_eq!(got, want);
    v.verify_read_data();
}

#[test]
fn lineage_of_a_two_step_chain() {
    let (_tmp, _, v) = fresh_base(5, 10_000);
    let gold_root = string(&v.show("gold/base@v1"), "root");
    v.run(["workspace", "new", "w1", "--base", "gold/base@v1"]).ok();
    write_file(&upper(&v, "w1"), "step1.txt", b"one\n");
    let a = derive(&v, "w1", "a", "v1", &["--command", "step one"]).ok().json();
    v.run(["workspace", "new", "w2", "--base", "derived/a@v1"]).ok();
    write_file(&upper(&v, "w2"), "step2.txt", b"two\n");
    let b = derive(&v, "w2", "b", "v1", &["--command", "step two"]).ok().json();

    let l = v.run(["--json", "lineage", "derived/b@v1"]).ok().json();
    assert_eq!(string(&l, "dataset"), "derived/b@v1");
    assert_eq!(string(&l, "root"), string(&b, "root"));
    assert_eq!(string(&l, "workspace"), "w2");
    assert_eq!(string(&l, "command"), "step two");
    let a_node = &l["inputs"][0];
    assert_eq!(string(a_node, "dataset"), "derived/a@v1");
    assert_eq!(string(a_node, "root"), string(&a, "root"));
    assert_eq!(string(a_node, "command"), "step one");
    let gold = &a_node["inputs"][0];
    assert_eq!(string(gold, "dataset"), "gold/base@v1");
    assert_eq!(string(gold, "root"), gold_root);
    assert_eq!(gold["inputs"], Value::Array(vec![]));
    assert_eq!(l["inputs"].as_array().unwrap().len(), 1);

    let text = v.run(["lineage", "b@v1"]).ok().stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("derived/b@v1") && lines[0].contains("\"step two\""),
        "{text}"
    );
    assert!(lines[1].starts_with("└── derived/a@v1"), "{text}");
    assert!(
        lines[2].starts_with("    └── gold/base@v1") && lines[2].contains("(gold)"),
        "{text}"
    );
    // Gold has no inputs.
    let g = v.run(["--json", "lineage", "gold/base@v1"]).ok().json();
    assert_eq!(g["inputs"], Value::Array(vec![]));
}

#[test]
fn derived_datasets_are_immutable() {
    let (_tmp, _, v) = fresh_base(3, 1000);
    v.run(["workspace", "new", "w", "--base", "gold/base@v1"]).ok();
    write_file(&upper(&v, "w"), "out.txt", b"result\n");
    let r = derive_ok(&v, "w", "d", "v1");
    let root = string(&r, "root");

    let db = v.catalog();
    let id: i64 = db
        .query_row(
            "SELECT id FROM datasets WHERE kind = 'derived' AND name = 'd'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for sql in [
        format!("UPDATE datasets SET version = 'v2' WHERE id = {id}"),
        format!("DELETE FROM datasets WHERE id = {id}"),
        format!("UPDATE entries SET size = 1 WHERE dataset_id = {id}"),
        format!("DELETE FROM entries WHERE dataset_id = {id}"),
        format!("INSERT INTO entries (dataset_id, parent, name, kind, mode, size, mtime_ns) VALUES ({id}, x'', x'41', 1, 493, 0, 0)"),
        format!("UPDATE lineage SET command = 'other' WHERE dataset_id = {id}"),
        format!("DELETE FROM lineage_inputs WHERE dataset_id = {id}"),
        // An open removals row for gold without force is refused too.
        "INSERT INTO removals (dataset_id, kind, name, version, removed_at) VALUES (1, 'gold', 'base', 'v1', 0)".to_string(),
    ] {
        let err = db.execute(&sql, []).expect_err(&sql);
        assert!(err.to_string().contains("dsvault:"), "{sql}: {err}");
    }
    // The ref is read-only and create-only: other content under the name is refused.
    let reff = v.store_dir().join("refs/derived/d/v1");
    assert_eq!(fs::read_to_string(&reff).unwrap().trim(), root);
    assert_eq!(fs::metadata(&reff).unwrap().permissions().mode() & 0o777, 0o444);
    write_file(&upper(&v, "w"), "out.txt", b"another result\n");
    derive(&v, "w", "d", "v1", &[])
        .code_is(1)
        .mentions(&["derived/d@v1 already exists", &root]);
    assert_eq!(fs::read_to_string(&reff).unwrap().trim(), root);
    assert_eq!(v.cat("derived/d@v1", "out.txt"), b"result\n");
    v.verify();
}

#[test]
fn rm_derived_then_gc_frees_its_bytes() {
    let (_tmp, src, v) = fresh_base(10, 100 * KIB as usize);
    let base_bytes = v.pack_bytes();
    v.run(["workspace", "new", "w", "--base", "gold/base@v1"]).ok();
    for i in 0..4u64 {
        write_file(
            &upper(&v, "w"),
            format!("out/{i}.bin"),
            &random_bytes(500 + i, MIB as usize),
        );
    }
    let r = derive_ok(&v, "w", "big", "v1");
    let added = num(&r, "stored_bytes");
    assert!(added >= 4 * MIB, "{r}");
    // A base of a live workspace cannot be removed; the derived set can once its
    // workspace no longer needs... it is not a base: remove it.
    v.run(["rm", "derived/big@v1"]).ok();
    assert_eq!(v.datasets(), ["gold/base@v1"]);
    assert!(!v.store_dir().join("refs/derived/big/v1").exists());
    // The workspace still holds its files on local disk; the store keeps the packs until gc.
    assert_eq!(v.pack_bytes(), base_bytes + added);
    let dry = v.run(["--json", "gc", "--dry-run", "--grace-minutes", "0"]).ok().json();
    assert_eq!(num(&dry, "bytes_freed"), added);
    assert_eq!(v.pack_bytes(), base_bytes + added, "--dry-run changed the store");
    // Within the grace period the new packs are left alone.
    let early = v.run(["--json", "gc"]).ok().json();
    assert_eq!(num(&early, "bytes_freed"), 0);
    let gc = v.run(["--json", "gc", "--grace-minutes", "0"]).ok().json();
    assert_eq!(num(&gc, "bytes_freed"), added, "{gc}");
    assert_eq!(v.pack_bytes(), base_bytes);
    v.verify_read_data();
    assert_eq!(exported(&v, "gold/base@v1"), tree(&src));
    v.run(["workspace", "rm", "w"]).ok();
    assert!(!v.dir.join("workspaces/w").exists());
    let again = v.run(["--json", "gc", "--grace-minutes", "0"]).ok().json();
    assert_eq!(num(&again, "bytes_freed"), 0, "gold data must survive: {again}");
    v.verify_read_data();
}

#[test]
fn gc_repacks_a_partly_used_pack_and_keeps_what_a_derived_set_needs() {
    let (_tmp, _, v) = fresh_base(10, 200 * KIB as usize);
    assert_eq!(v.pack_files().len(), 1);
    v.run(["workspace", "new", "half", "--base", "gold/base@v1"]).ok();
    for i in 0..5 {
        whiteout(&v, "half", &format!("files/{i:04}.bin"));
    }
    let d = derive_ok(&v, "half", "half", "v1");
    assert_eq!(num(&d, "stored_bytes"), 0);
    let want = exported(&v, "derived/half@v1");
    assert_eq!(want.len(), 7, "{:?}", want.keys());
    // The base of a live workspace cannot go; after the workspace, only with the force path.
    v.run(["rm", "gold/base@v1", "--force-gold", "--yes-i-mean-it=gold/base@v1"])
        .code_is(1)
        .mentions(&["is a base of workspace half"]);
    v.run(["workspace", "rm", "half"]).ok();
    v.run(["rm", "gold/base@v1", "--force-gold", "--yes-i-mean-it=gold/base@v1"])
        .ok();
    let before = v.pack_bytes();
    let gc = v.run(["--json", "gc", "--grace-minutes", "0"]).ok().json();
    assert_eq!(num(&gc, "packs_repacked"), 1, "{gc}");
    let after = v.pack_bytes();
    assert!(
        after < before * 6 / 10 && after > before * 4 / 10,
        "{before} -> {after}"
    );
    assert_eq!(exported(&v, "derived/half@v1"), want);
    v.verify_read_data();
}

#[test]
fn gold_cannot_be_removed_without_the_force_path() {
    let (_tmp, _, v) = fresh_base(2, 1000);
    v.run(["rm", "gold/base@v1"]).code_is(1).mentions(&["--force-gold"]);
    v.run(["rm", "base@v1"]).code_is(1).mentions(&["--force-gold"]);
    // No confirmation on stdin (it is /dev/null): refused.
    v.run(["rm", "gold/base@v1", "--force-gold"])
        .code_is(1)
        .mentions(&["does not match"]);
    v.run(["rm", "gold/base@v1", "--force-gold", "--yes-i-mean-it=gold/other@v1"])
        .code_is(1)
        .mentions(&["does not match"]);
    v.run(["rm", "gold/base@v1", "--yes-i-mean-it=gold/base@v1"]).code_is(2);
    assert_eq!(v.datasets(), ["gold/base@v1"]);
    // Typed at the prompt.
    let mut cmd = v.cmd();
    cmd.args(["rm", "gold/base@v1", "--force-gold"])
        .stdin(std::process::Stdio::piped());
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"gold/base@v1\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(v.datasets().is_empty());
    let removals: i64 = v
        .catalog()
        .query_row("SELECT count(*) FROM removals WHERE forced = 1 AND done = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(removals, 1);
    v.verify();
}

/// A derive stopped at `point` leaves no dataset, a vault that verifies, and a re-run works.
fn derive_crash(point: &str) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    base_tree(&src, 4, 100 * KIB as usize);
    let v = TestVault::new();
    v.init_with_pack_target(MIB);
    v.ingest_ok(&src, "base", "v1", &[]);
    v.run(["workspace", "new", "w", "--base", "gold/base@v1"]).ok();
    for i in 0..6u64 {
        write_file(
            &upper(&v, "w"),
            format!("new/{i}.bin"),
            &random_bytes(900 + i, 700 * KIB as usize),
        );
    }
    let mut cmd = v.cmd();
    cmd.args([
        "--json",
        "derive",
        "w",
        "--name",
        "d",
        "--version",
        "v1",
        "--threads",
        "1",
    ]);
    cmd.env("DSVAULT_CRASH_AT", point);
    let crashed = run_cmd(cmd).failed();
    assert_eq!(
        crashed.status.signal(),
        Some(libc::SIGABRT),
        "{point}: {}",
        crashed.stderr
    );
    assert_eq!(
        v.datasets(),
        ["gold/base@v1"],
        "crash at {point}: a derived dataset is visible"
    );
    v.verify_read_data();
    let r = derive_ok(&v, "w", "d", "v1");
    assert_eq!(num(&r, "files"), 11);
    assert_eq!(v.datasets(), ["gold/base@v1", "derived/d@v1"]);
    let pending: i64 = v
        .catalog()
        .query_row("SELECT count(*) FROM datasets WHERE state = 'pending'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(pending, 0);
    v.verify_read_data();
}

#[test]
fn crash_during_derive_before_the_first_pack_is_published() {
    derive_crash("pack-before-fsync");
}

#[test]
fn crash_during_derive_after_a_pack_is_published() {
    derive_crash("pack-after-rename:2");
}

#[test]
fn crash_during_derive_before_a_batch_commit() {
    derive_crash("before-batch-commit:2");
}

#[test]
fn crash_during_derive_before_its_seal() {
    derive_crash("derive-before-seal");
}

#[test]
fn crash_during_derive_before_its_ref() {
    derive_crash("before-ref");
}

#[test]
fn crash_during_derive_after_its_ref() {
    derive_crash("before-seal");
}

#[test]
fn bad_input_is_refused_clearly() {
    let (_tmp, _, v) = fresh_base(2, 1000);
    derive(&v, "nope", "d", "v1", &[])
        .code_is(1)
        .mentions(&["no workspace nope"]);
    v.run(["workspace", "new", "w", "--base", "gold/missing@v1"])
        .code_is(1)
        .mentions(&["no dataset gold/missing@v1"]);
    assert!(
        !v.dir.join("workspaces/w").exists(),
        "a failed workspace new left its folder"
    );
    v.run(["workspace", "new", "../evil"]).code_is(2);
    v.run(["workspace", "new", "w", "--base", "not a dataset"]).code_is(2);
    derive(&v, "w", "bad/name", "v1", &[]).code_is(2);
    v.run(["workspace", "new", "w"]).ok();
    v.run(["workspace", "new", "w"])
        .code_is(1)
        .mentions(&["workspace w already exists"]);
    v.run(["workspace", "rm", "other"])
        .code_is(1)
        .mentions(&["no workspace other"]);
    // An external symlink in the upper layer is refused, and nothing is sealed.
    common::symlink(&upper(&v, "w"), "out", "/etc/passwd");
    derive(&v, "w", "d", "v1", &[]).code_is(1).mentions(&["points outside"]);
    fs::remove_file(upper(&v, "w").join("out")).unwrap();
    write_file(&upper(&v, "w"), "a", b"1\n");
    derive_ok(&v, "w", "d", "v1");
    write_file(&upper(&v, "w"), "a", b"2\n");
    derive(&v, "w", "d", "v1", &[]).code_is(1).mentions(&["already exists"]);
    v.run(["rm", "derived/nope@v1"]).code_is(1).mentions(&["no dataset"]);
    let listed = v.run(["--json", "workspace", "ls"]).ok().json_lines();
    assert_eq!(listed.len(), 1);
    assert_eq!(string(&listed[0], "workspace"), "w");
    v.verify();
}

/// The refusal names an option derive really has, and that option stores the link as it is.
#[test]
fn external_symlinks_are_refused_with_a_hint_derive_accepts() {
    let (_tmp, _, v) = fresh_base(2, 1000);
    v.run(["workspace", "new", "w", "--base", "gold/base@v1"]).ok();
    common::symlink(&upper(&v, "w"), "out", "/etc/passwd");
    derive(&v, "w", "d", "v1", &[]).code_is(1).mentions(&[
        "out",
        "points outside",
        "/etc/passwd",
        "pass --allow-external-symlinks",
    ]);
    let listed = v.run(["ls"]).ok();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !listed.contains("derived/d"),
        "a refused derive sealed something: {listed}"
    );
    let r = derive(&v, "w", "d", "v1", &["--allow-external-symlinks"]).ok().json();
    assert_eq!(r["symlinks"], 1);
    let t = exported(&v, "derived/d@v1");
    assert_eq!(t["out"], ("symlink", b"/etc/passwd".to_vec()));
    assert_eq!(
        t.len(),
        5,
        "the base's folder, 2 files and README, plus the link: {t:?}"
    );
    v.verify();
}

#[test]
fn gc_waits_for_no_writer_and_never_runs_beside_one() {
    let (_tmp, _, v) = fresh_base(2, 1000);
    let vault = dsvault::Vault::open(&v.dir).unwrap();
    let lock = vault.lock_writer().unwrap();
    v.run(["gc"]).code_is(1).mentions(&["an ingest or derive is running"]);
    drop(lock);
    v.run(["gc"]).ok();
}

/// gc stopped at `point` while repacking leaves every dataset readable and the vault
/// verifying; the next gc finishes the job.
fn gc_crash(point: &str) {
    let (_tmp, _, v) = fresh_base(10, 200 * KIB as usize);
    v.run(["workspace", "new", "half", "--base", "gold/base@v1"]).ok();
    for i in 0..5 {
        whiteout(&v, "half", &format!("files/{i:04}.bin"));
    }
    derive_ok(&v, "half", "half", "v1");
    let want = exported(&v, "derived/half@v1");
    v.run(["workspace", "rm", "half"]).ok();
    v.run(["rm", "gold/base@v1", "--force-gold", "--yes-i-mean-it=gold/base@v1"])
        .ok();
    let before = v.pack_bytes();
    let mut cmd = v.cmd();
    cmd.args(["gc", "--grace-minutes", "0"]).env("DSVAULT_CRASH_AT", point);
    let crashed = run_cmd(cmd).failed();
    assert_eq!(
        crashed.status.signal(),
        Some(libc::SIGABRT),
        "{point}: {}",
        crashed.stderr
    );
    v.verify_read_data();
    assert_eq!(exported(&v, "derived/half@v1"), want);
    v.run(["gc", "--grace-minutes", "0"]).ok();
    // A second pass collects what the interrupted one left (a duplicate pack at worst).
    v.run(["gc", "--grace-minutes", "0"]).ok();
    let after = v.pack_bytes();
    assert!(after < before * 6 / 10, "{point}: {before} -> {after}");
    assert_eq!(exported(&v, "derived/half@v1"), want);
    v.verify_read_data();
}

#[test]
fn crash_during_gc_before_the_repack_commit() {
    gc_crash("gc-before-commit");
}

#[test]
fn crash_during_gc_before_a_pack_file_is_deleted() {
    gc_crash("gc-before-delete");
}

/// A FIFO, a socket and (when this machine allows mknod) a character device in the upper
/// layer of workspace `ws`; returns (path in the workspace, kind) of each, sorted.
fn special_files(v: &TestVault, ws: &str) -> Vec<(String, String)> {
    let up = upper(v, ws);
    fs::create_dir_all(up.join("run")).unwrap();
    mkfifo(&up.join("run/queue.fifo"));
    let sock = std::os::unix::net::UnixListener::bind(up.join("run/tb.sock")).unwrap();
    drop(sock); // the socket file stays
    let mut want = vec![
        ("run/queue.fifo".to_string(), "fifo".to_string()),
        ("run/tb.sock".to_string(), "socket".to_string()),
    ];
    let dev = std::ffi::CString::new(up.join("null").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) } == 0 {
        want.push(("null".to_string(), "character device".to_string()));
    } else {
        assert!(
            !common::require::everything_required(),
            "CI runs as root: mknod must work"
        );
    }
    want.sort();
    want
}

#[test]
fn derive_refuses_special_files_and_names_each() {
    let (_tmp, _src, v) = fresh_base(3, 1000);
    v.run(["workspace", "new", "job", "--base", "gold/base@v1"]).ok();
    write_file(&upper(&v, "job"), "out/model.bin", b"weights");
    let special = special_files(&v, "job");
    let mut needles = vec!["job", "--skip-special"];
    for (path, kind) in &special {
        needles.push(path);
        needles.push(kind);
    }
    derive(&v, "job", "job", "v1", &[]).failed().mentions(&needles);
    assert!(!v.datasets().contains(&"derived/job@v1".to_string()), "nothing sealed");
    v.verify();
}

#[test]
fn derive_with_skip_special_leaves_them_out_and_lists_them() {
    let (_tmp, src, v) = fresh_base(3, 1000);
    v.run(["workspace", "new", "job", "--base", "gold/base@v1"]).ok();
    write_file(&upper(&v, "job"), "out/model.bin", b"weights");
    let special = special_files(&v, "job");

    let r = derive(&v, "job", "job", "v1", &["--skip-special"]).ok().json();
    let mut skipped: Vec<(String, String)> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (string(s, "path"), string(s, "reason")))
        .collect();
    skipped.sort();
    assert_eq!(skipped, special);
    let mut expected = tree(&src);
    expected.insert("out".into(), ("dir", Vec::new()));
    expected.insert("out/model.bin".into(), ("file", b"weights".to_vec()));
    expected.insert("run".into(), ("dir", Vec::new()));
    assert_eq!(exported(&v, "derived/job@v1"), expected);

    // Without --json each skipped file is a warning naming it.
    let mut needles = vec!["skipped"];
    needles.extend(special.iter().map(|(p, _)| p.as_str()));
    v.run(["derive", "job", "--name", "job", "--version", "v2", "--skip-special"])
        .ok()
        .mentions(&needles);
    v.verify();
}
