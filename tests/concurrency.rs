//! Several processes at once on one vault, and immutability enforced by the catalog itself.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};

use common::*;

fn spawn(vault: &TestVault, src: &Path, name: &str, version: &str) -> Child {
    let mut cmd = vault.ingest_cmd(src, name, version, &["--json"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn finish(child: Child, what: &str) -> Out {
    Out::from_output(what.to_string(), child.wait_with_output().unwrap())
}

fn tree(root: &Path, seed: u64, files: u64) {
    for i in 0..files {
        write_file(
            root,
            format!("d{}/f{i:03}.bin", i % 4),
            &random_bytes(seed * 1000 + i, 150_000),
        );
    }
    write_file(root, "shared.bin", &random_bytes(77, 500_000));
}

#[test]
fn two_ingests_of_different_names_at_once_both_succeed() {
    let vault = TestVault::new();
    vault.init_with_pack_target(MIB);
    let tmp = tempdir();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    tree(&a, 1, 40);
    tree(&b, 2, 40);
    let (ca, cb) = (spawn(&vault, &a, "alpha", "v1"), spawn(&vault, &b, "beta", "v1"));
    let (ra, rb) = (
        finish(ca, "ingest alpha").ok().json(),
        finish(cb, "ingest beta").ok().json(),
    );
    assert_eq!(num(&ra, "files"), 41);
    assert_eq!(num(&rb, "files"), 41);
    // Together they store the unique bytes, except that the file both trees hold may be
    // written by both: neither ingest sees the other's chunks before they are committed, so
    // dedup between concurrent ingests is best effort (the catalog keeps one copy; the other
    // is dead weight in its pack).
    let unique = 80 * 150_000 + 500_000;
    let stored = num(&ra, "stored_bytes") + num(&rb, "stored_bytes");
    assert!(stored >= unique, "stored {stored} for {unique} unique random bytes");
    assert!(
        stored <= unique + 500_000 + 64 * KIB,
        "stored {stored} for {unique} unique bytes"
    );
    assert_eq!(vault.pack_bytes(), stored);
    assert_eq!(vault.datasets(), ["gold/alpha@v1", "gold/beta@v1"]);
    vault.verify_read_data();
    for (name, src) in [("alpha@v1", &a), ("beta@v1", &b)] {
        let out = tmp.path().join(format!("out-{name}"));
        vault.export_ok(name, &out);
        assert_same_tree(src, &out);
    }
}

#[test]
fn first_use_of_a_new_vault_by_two_processes_at_once() {
    // Both processes find no vault and create it: neither may fail because the other is
    // creating the catalog at the same moment.
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file(&src, "f.txt", b"f\n");
    for round in 0..8 {
        let vault = TestVault::new();
        let children: Vec<Child> = (0..3).map(|i| spawn(&vault, &src, &format!("n{i}"), "v1")).collect();
        for (i, c) in children.into_iter().enumerate() {
            finish(c, &format!("round {round}: ingest n{i}")).ok();
        }
        assert_eq!(vault.datasets().len(), 3);
        vault.verify();
    }
}

#[test]
fn same_name_and_version_with_different_content_at_once_one_wins() {
    let tmp = tempdir();
    for round in 0..3 {
        let vault = TestVault::new();
        let (a, b) = (
            tmp.path().join(format!("a{round}")),
            tmp.path().join(format!("b{round}")),
        );
        tree(&a, 10 + round, 20);
        tree(&b, 20 + round, 20);
        let (ca, cb) = (spawn(&vault, &a, "race", "v1"), spawn(&vault, &b, "race", "v1"));
        let (oa, ob) = (finish(ca, "ingest a"), finish(cb, "ingest b"));
        let (winner, loser, src) = match (oa.status.success(), ob.status.success()) {
            (true, false) => (oa, ob, &a),
            (false, true) => (ob, oa, &b),
            _ => panic!("round {round}: exactly one must succeed:\n{oa:?}\n{ob:?}"),
        };
        let root = string(&winner.json(), "root");
        let loser = loser.code_is(1);
        let loser = loser.mentions(&["gold/race@v1"]);
        assert!(
            loser.stderr.contains(&format!("already exists with root {root}"))
                || loser.stderr.contains("another ingest"),
            "round {round}: unclear failure: {}",
            loser.stderr
        );
        assert_eq!(vault.datasets(), ["gold/race@v1"]);
        assert_eq!(string(&vault.show("race@v1"), "root"), root);
        let out = tmp.path().join(format!("out{round}"));
        vault.export_ok("race@v1", &out);
        assert_same_tree(src, &out);
        vault.verify_read_data();
    }
}

#[test]
fn same_name_and_version_with_same_content_at_once_both_succeed() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file(&src, "f.txt", b"same\n");
    write_file(&src, "g.bin", &random_bytes(3, 100_000));
    for round in 0..20 {
        let vault = TestVault::new();
        vault.ingest_ok(&src, "warmup", "v1", &[]);
        let (ca, cb) = (spawn(&vault, &src, "twin", "v1"), spawn(&vault, &src, "twin", "v1"));
        let (oa, ob) = (finish(ca, "ingest a"), finish(cb, "ingest b"));
        for o in [&oa, &ob] {
            assert!(
                o.status.success() || o.stderr.contains("another ingest"),
                "round {round}: an identical concurrent ingest failed unclearly: {}",
                o.stderr
            );
        }
        assert!(oa.status.success() || ob.status.success());
        assert_eq!(vault.datasets(), ["gold/twin@v1", "gold/warmup@v1"]);
        vault.verify();
    }
}

#[test]
fn sealed_datasets_are_immutable_in_the_catalog() {
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file(&src, "a/one.bin", &random_bytes(1, 300_000));
    write_file(&src, "b.txt", b"b\n");
    let root = string(&vault.ingest_ok(&src, "frozen", "v1", &[]), "root");

    let db = vault.catalog();
    let id: i64 = db
        .query_row("SELECT id FROM datasets WHERE name = 'frozen'", [], |r| r.get(0))
        .unwrap();
    let refused = |sql: &str| {
        let err = db
            .execute(sql, [id])
            .expect_err(&format!("the catalog accepted: {sql}"));
        assert!(
            err.to_string().contains("dsvault:"),
            "{sql}: not refused by a trigger: {err}"
        );
    };
    refused("UPDATE datasets SET name = 'renamed' WHERE id = ?1");
    refused("UPDATE datasets SET root = zeroblob(32) WHERE id = ?1");
    refused("UPDATE datasets SET state = 'pending' WHERE id = ?1");
    refused("DELETE FROM datasets WHERE id = ?1");
    refused("UPDATE entries SET mode = 511 WHERE dataset_id = ?1");
    refused("UPDATE entries SET name = CAST('evil' AS BLOB) WHERE dataset_id = ?1");
    refused("DELETE FROM entries WHERE dataset_id = ?1");
    refused(
        "INSERT INTO entries (dataset_id, parent, name, kind, mode, size, mtime_ns)
         VALUES (?1, x'', CAST('planted' AS BLOB), 0, 420, 0, 0)",
    );
    refused("UPDATE contents SET size = size + 1 WHERE id IN (SELECT content_id FROM entries WHERE dataset_id = ?1)");
    refused("DELETE FROM content_chunks WHERE content_id IN (SELECT content_id FROM entries WHERE dataset_id = ?1)");
    refused(
        "DELETE FROM chunks WHERE hash IN (SELECT cc.chunk_hash FROM content_chunks cc
         JOIN entries e ON e.content_id = cc.content_id WHERE e.dataset_id = ?1)",
    );
    drop(db);

    // Refs and manifests are read-only files; the dataset is exactly as sealed.
    let r = vault.store_dir().join("refs/gold/frozen/v1");
    assert_eq!(fs::read_to_string(&r).unwrap().trim(), root);
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&r).unwrap().permissions());
    assert_eq!(mode & 0o222, 0, "ref is writable");
    let manifest = vault.store_dir().join(format!("manifests/{root}.json"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&manifest).unwrap().permissions());
    assert_eq!(mode & 0o222, 0, "manifest is writable");
    assert_eq!(string(&vault.show("frozen@v1"), "root"), root);
    let out = tmp.path().join("out");
    vault.export_ok("frozen@v1", &out);
    assert_same_tree(&src, &out);
    vault.verify_read_data();
}
