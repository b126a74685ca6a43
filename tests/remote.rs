//! Remote (object store) vaults against a real S3-compatible server on loopback: moto's
//! server (tests/common/s3.rs), started per test and killed afterwards.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fault_proxy::{Fault, FaultProxy};
use common::mounted::{can_mount, spawn_mount};
use common::s3::{Moto, SECRET_KEY};
use common::*;
use serde_json::Value;

const BUCKET: &str = "dsv";
const URL: &str = "s3://dsv/team/vault";

/// A vault whose store is the moto bucket.
struct RemoteVault<'a> {
    vault: TestVault,
    moto: &'a Moto,
}

impl<'a> RemoteVault<'a> {
    /// `init --store s3://…` in a fresh folder, then settings from `tune` (key, value) in
    /// vault.toml.
    fn new(moto: &'a Moto, tune: &[(&str, &str)]) -> RemoteVault<'a> {
        let v = RemoteVault {
            vault: TestVault::new(),
            moto,
        };
        v.run(&["init", "--store", URL]).ok();
        for (key, value) in tune {
            set_setting(&v.vault.dir, key, value);
        }
        v
    }

    fn cmd(&self) -> Command {
        let mut cmd = self.vault.cmd();
        self.moto.apply(&mut cmd);
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
        let mut cmd = self.cmd();
        cmd.args(args);
        run_cmd(cmd)
    }

    fn ingest_cmd(&self, src: &Path, name: &str, version: &str) -> Command {
        let mut cmd = self.cmd();
        cmd.arg("--json")
            .arg("ingest")
            .arg(src)
            .args(["--name", name, "--version", version]);
        cmd
    }

    fn ingest(&self, src: &Path, name: &str, version: &str) -> Out {
        run_cmd(self.ingest_cmd(src, name, version))
    }

    fn verify(&self, read_data: bool) -> Value {
        let mut args = vec!["--json", "verify"];
        if read_data {
            args.push("--read-data");
        }
        self.run(&args).json()
    }
}

/// Small packs and every upload read back, so a few MB make several checked packs.
const SMALL_PACKS: &[(&str, &str)] = &[("target_size", "1048576"), ("verify_read_back_percent", "100")];

/// A source tree with a large file (multipart upload), small files, a folder and a symlink.
fn make_source(dir: &Path, seed: u64, big: usize) -> PathBuf {
    let src = dir.join(format!("src-{seed}"));
    write_file(&src, "big.bin", &random_bytes(seed, big));
    write_file(&src, "rows.csv", &text_rows(seed, 20_000));
    for i in 0..5 {
        write_file(&src, format!("sub/f{i}.bin"), &random_bytes(seed * 100 + i, 300_000));
    }
    write_file(&src, "empty", b"");
    symlink(&src, "link", "rows.csv");
    src
}

fn pack_keys(moto: &Moto) -> Vec<(String, u64)> {
    moto.list(BUCKET, "team/vault/packs/")
}

#[test]
fn ingest_then_sync_into_an_empty_vault_exports_the_same_bytes() {
    let moto = Moto::start(BUCKET);
    let tmp = tempdir();
    // 20 MiB in one file, in a vault with the default 32 MiB packs: a multipart upload.
    let src = make_source(tmp.path(), 1, 20 << 20);
    let a = RemoteVault::new(&moto, &[("verify_read_back_percent", "100")]);
    let report = a.ingest(&src, "imgs", "v1").ok().json();
    assert!(num(&report["remote"], "bytes_uploaded") >= num(&report, "stored_bytes"));
    assert!(
        moto.requests().iter().any(|r| r.contains("uploadId=")),
        "no multipart upload was used"
    );
    let config = fs::read_to_string(a.vault.dir.join("vault.toml")).unwrap();
    assert!(config.contains("store = \"s3://dsv/team/vault\""), "{config}");
    assert!(
        !config.contains(SECRET_KEY) && !config.contains("127.0.0.1"),
        "{config}"
    );

    let b = RemoteVault::new(&moto, &[]);
    assert!(b.run(&["--json", "ls"]).ok().json_lines().is_empty());
    let synced = b.run(&["--json", "sync"]).ok().json();
    assert_eq!(synced["datasets_imported"], serde_json::json!(["gold/imgs@v1"]));
    assert!(num(&synced, "packs_indexed") >= 1);
    // Idempotent: a second sync finds nothing new.
    let again = b.run(&["--json", "sync"]).ok().json();
    assert_eq!(again["datasets_imported"], serde_json::json!([]));
    assert_eq!(num(&again, "packs_indexed"), 0);
    assert_eq!(
        b.run(&["--json", "show", "imgs@v1"]).ok().json()["root"],
        report["root"]
    );

    let out = tmp.path().join("out");
    let mut export = b.cmd();
    export.args(["--json", "export", "imgs@v1"]).arg(&out);
    let exported = run_cmd(export).ok().json();
    assert_same_tree(&src, &out);
    // Every chunk fetched once, exactly its stored bytes (the packs hold besides only their
    // index, 56 bytes a chunk, and a footer), neighbours in a pack together.
    let (fetched, stored) = (num(&exported["remote"], "bytes_fetched"), num(&report, "stored_bytes"));
    assert!(
        fetched <= stored && stored - fetched <= 56 * num(&report, "new_chunks") + 4096,
        "fetched {fetched} of {stored} stored bytes: {exported}"
    );
    assert!(
        num(&exported["remote"], "get_requests") < num(&report, "new_chunks"),
        "{exported} {report}"
    );
    assert_eq!(b.verify(false)["ok"], Value::Bool(true));
    let full = b.verify(true);
    assert_eq!(full["ok"], Value::Bool(true), "{full}");
    assert!(num(&full["report"], "bytes_read") > 20 << 20);
    assert!(
        fs::read_dir(b.vault.dir.join("cache/extents")).unwrap().count() > 0,
        "export read nothing through the cache"
    );
}

/// Exporting many small files from a remote vault fetches the next files while it writes
/// this one: neighbours in a pack come in one GET, so the GETs are far fewer than the files
/// (one GET per file, a round trip each, made such an export 20x slower).
#[test]
fn export_of_many_small_files_shares_gets_across_files() {
    let moto = Moto::start(BUCKET);
    let tmp = tempdir();
    let src = tmp.path().join("small");
    const FILES: u64 = 400;
    for i in 0..FILES {
        write_file(
            &src,
            format!("d{}/f{i}.bin", i % 7),
            &random_bytes(9_000 + i, 3_000 + i as usize * 11),
        );
    }
    let a = RemoteVault::new(&moto, &[]);
    a.ingest(&src, "small", "v1").ok();
    let b = RemoteVault::new(&moto, &[]);
    b.run(&["sync"]).ok();
    let out = tmp.path().join("out");
    let mut export = b.cmd();
    export.args(["--json", "export", "small@v1"]).arg(&out);
    let exported = run_cmd(export).ok().json();
    assert_same_tree(&src, &out);
    assert_eq!(num(&exported, "files"), FILES);
    let gets = num(&exported["remote"], "get_requests");
    assert!(gets <= FILES / 20, "{gets} GETs for {FILES} files: {exported}");
}

/// A dataset removed on one machine (its ref deleted) is listed by the other machine's
/// `sync` as gone and dropped with `sync --prune`. A dataset that a workspace on the other
/// machine is based on is pinned in the store: its removal is refused, naming the workspace
/// and its host, until that workspace is removed. Another name for the same content is not
/// pinned (gc keeps the pinned root whatever names it).
#[test]
fn sync_reports_datasets_removed_elsewhere_and_prune_drops_them() {
    let moto = Moto::start(BUCKET);
    let tmp = tempdir();
    let src = make_source(tmp.path(), 4, 1 << 20);
    let a = RemoteVault::new(&moto, &[]);
    for name in ["kept", "gone", "base"] {
        a.ingest(&src, name, "v1").ok();
    }
    let b = RemoteVault::new(&moto, &[]);
    b.run(&["sync"]).ok();
    b.run(&["workspace", "new", "w", "--base", "gold/base@v1"]).ok();
    let rm = |full: &str| -> Out { a.run(&["rm", full, "--force-gold", &format!("--yes-i-mean-it={full}")]) };
    rm("gold/gone@v1").ok();
    rm("gold/base@v1")
        .code_is(1)
        .mentions(&["gold/base@v1", "workspace w on", "dsvault workspace rm w"]);

    let listed = b.run(&["--json", "sync"]).ok().json();
    assert_eq!(listed["datasets_gone"], serde_json::json!(["gold/gone@v1"]), "{listed}");
    assert_eq!(listed["datasets_pruned"], serde_json::json!([]));
    assert_eq!(b.run(&["--json", "ls"]).ok().json_lines().len(), 3);

    let pruned = b.run(&["--json", "sync", "--prune"]).ok().json();
    assert_eq!(
        pruned["datasets_pruned"],
        serde_json::json!(["gold/gone@v1"]),
        "{pruned}"
    );
    let names: Vec<String> = b
        .run(&["--json", "ls"])
        .ok()
        .json_lines()
        .iter()
        .map(|d| string(d, "dataset"))
        .collect();
    assert_eq!(names, ["gold/base@v1", "gold/kept@v1"]);
    assert_eq!(b.verify(false)["ok"], Value::Bool(true));

    // Once the workspace is gone its pin is too: the removal goes through, and the next
    // prune on the other machine drops the dataset.
    b.run(&["workspace", "rm", "w"]).ok();
    rm("gold/base@v1").ok();
    let again = b.run(&["--json", "sync", "--prune"]).ok().json();
    assert_eq!(again["datasets_pruned"], serde_json::json!(["gold/base@v1"]), "{again}");
    assert_eq!(b.verify(false)["ok"], Value::Bool(true));
    let out = tmp.path().join("out");
    let mut export = b.cmd();
    export.args(["export", "kept@v1"]).arg(&out);
    run_cmd(export).ok();
    assert_same_tree(&src, &out);
}

#[test]
fn sync_brings_derived_datasets_with_their_lineage() {
    let moto = Moto::start(BUCKET);
    let tmp = tempdir();
    let src = make_source(tmp.path(), 11, 1 << 20);
    let a = RemoteVault::new(&moto, &[]);
    let gold = a.ingest(&src, "base", "1").ok().json();
    a.run(&["workspace", "new", "w", "--base", "gold/base@1"]).ok();
    write_file(&a.vault.dir.join("workspaces/w/upper"), "labels.txt", b"cat\ndog\n");
    let derived = a
        .run(&[
            "--json",
            "derive",
            "w",
            "--name",
            "clean",
            "--version",
            "1",
            "--command",
            "clean.py --strict",
        ])
        .ok()
        .json();

    let b = RemoteVault::new(&moto, &[]);
    b.run(&["sync"]).ok();
    let l = b.run(&["--json", "lineage", "derived/clean@1"]).ok().json();
    assert_eq!(l["root"], derived["root"], "{l}");
    assert_eq!(l["command"], "clean.py --strict", "{l}");
    assert_eq!(l["workspace"], "w", "{l}");
    assert_eq!(l["inputs"][0]["dataset"], "gold/base@1", "{l}");
    assert_eq!(l["inputs"][0]["root"], gold["root"], "{l}");
    assert_eq!(l["inputs"][0]["present"], true, "{l}");
    // Same record on both machines.
    let la = a.run(&["--json", "lineage", "derived/clean@1"]).ok().json();
    assert_eq!(la, l);
}

#[test]
fn two_vaults_ingest_into_one_bucket_at_once() {
    let moto = Moto::start(BUCKET);
    let tmp = tempdir();
    let (src1, src2) = (make_source(tmp.path(), 2, 3 << 20), make_source(tmp.path(), 3, 3 << 20));
    // Shared content: both sources hold the same file, so both upload its pack at once.
    let shared = random_bytes(99, 2 << 20);
    write_file(&src1, "shared.bin", &shared);
    write_file(&src2, "shared.bin", &shared);
    let a = RemoteVault::new(&moto, SMALL_PACKS);
    let b = RemoteVault::new(&moto, SMALL_PACKS);
    let ta = a.ingest_cmd(&src1, "one", "1").stdout(Stdio::piped()).spawn().unwrap();
    let tb = b.ingest_cmd(&src2, "two", "1").stdout(Stdio::piped()).spawn().unwrap();
    for t in [ta, tb] {
        let out = t.wait_with_output().unwrap();
        assert!(out.status.success(), "concurrent ingest failed");
    }
    let c = RemoteVault::new(&moto, &[]);
    let synced = c.run(&["--json", "sync"]).ok().json();
    let mut imported: Vec<String> = synced["datasets_imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    imported.sort();
    assert_eq!(imported, ["gold/one@1", "gold/two@1"]);
    let full = c.verify(true);
    assert_eq!(full["ok"], Value::Bool(true), "{full}");
    for (name, src) in [("one@1", &src1), ("two@1", &src2)] {
        let out = tmp.path().join(format!("out-{name}"));
        let mut export = c.cmd();
        export.args(["export", name]).arg(&out);
        run_cmd(export).ok();
        assert_same_tree(src, &out);
    }
}

#[test]
fn create_only_refs_let_exactly_one_of_two_racing_ingests_win() {
    let moto = Moto::start(BUCKET);
    let tmp = tempdir();
    let (src1, src2) = (make_source(tmp.path(), 4, 1 << 20), make_source(tmp.path(), 5, 1 << 20));
    for round in 0..3 {
        let version = format!("r{round}");
        let a = RemoteVault::new(&moto, &[]);
        let b = RemoteVault::new(&moto, &[]);
        let ta = a
            .ingest_cmd(&src1, "race", &version)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let tb = b
            .ingest_cmd(&src2, "race", &version)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let outs = [ta.wait_with_output().unwrap(), tb.wait_with_output().unwrap()];
        let winners: Vec<&std::process::Output> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one ingest must win");
        let root = serde_json::from_slice::<Value>(&winners[0].stdout).unwrap()["root"]
            .as_str()
            .unwrap()
            .to_string();
        let loser = outs.iter().find(|o| !o.status.success()).unwrap();
        assert_eq!(loser.status.code(), Some(1));
        let message = String::from_utf8_lossy(&loser.stderr);
        assert!(
            message.contains(&root) && message.contains("already exists"),
            "round {round}: the loser must name the winner's root {root}: {message}"
        );
        // The store's ref names the winner.
        let c = RemoteVault::new(&moto, &[]);
        c.run(&["sync"]).ok();
        let dataset = format!("race@{version}");
        assert_eq!(
            c.run(&["--json", "show", &dataset]).ok().json()["root"],
            Value::String(root)
        );
    }
}

#[test]
fn a_killed_upload_resumes_without_uploading_finished_packs_again() {
    let moto = Moto::start(BUCKET);
    let tmp = tempdir();
    let src = make_source(tmp.path(), 6, 8 << 20);
    let a = RemoteVault::new(&moto, SMALL_PACKS);
    let mut crash = a.ingest_cmd(&src, "big", "1");
    crash.env("DSVAULT_CRASH_AT", "before-batch-commit:4");
    let crashed = run_cmd(crash).failed();
    assert!(crashed.stderr.contains("crash point"), "{}", crashed.stderr);
    let uploaded = pack_keys(&moto);
    assert!(
        uploaded.len() >= 3,
        "expected finished uploads before the crash: {uploaded:?}"
    );
    let before = moto.requests().len();

    let report = a.ingest(&src, "big", "1").ok().json();
    let resumed: Vec<String> = moto.requests()[before..].to_vec();
    for (key, _) in &uploaded {
        assert!(
            !resumed
                .iter()
                .any(|r| (r.starts_with("PUT ") || r.starts_with("POST ")) && r.contains(key.as_str())),
            "{key} was uploaded again after the restart"
        );
    }
    assert!(pack_keys(&moto).len() > uploaded.len(), "the rest was uploaded");
    assert!(num(&report, "stored_bytes") > 0);
    assert_eq!(a.verify(true)["ok"], Value::Bool(true));
    let out = tmp.path().join("out");
    let mut export = a.cmd();
    export.args(["export", "big@1"]).arg(&out);
    run_cmd(export).ok();
    assert_same_tree(&src, &out);
}

#[test]
fn short_or_corrupted_objects_fail_verify_and_a_dead_store_fails_ingest() {
    let moto = Moto::start(BUCKET);
    let tmp = tempdir();
    let src = make_source(tmp.path(), 7, 2 << 20);
    let a = RemoteVault::new(&moto, SMALL_PACKS);
    a.ingest(&src, "d", "1").ok();
    let packs = pack_keys(&moto);
    let (short, _) = &packs[0];
    let (flipped, _) = &packs[1];
    moto.damage(BUCKET, short, Some(100), false);
    moto.damage(BUCKET, flipped, None, true);

    let v = a.run(&["--json", "verify"]).code_is(1).json();
    let kinds: Vec<&str> = v["report"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"pack-size"), "{v}");
    let full = a.run(&["--json", "verify", "--read-data"]).code_is(1).json();
    let text = full.to_string();
    assert!(
        text.contains("damaged-chunk") || text.contains("damaged-pack"),
        "{full}"
    );

    // A store that does not answer: ingest fails (bounded wait), nothing is sealed.
    let dead = RemoteVault::new(
        &moto,
        &[
            ("request_timeout_secs", "2"),
            ("retry_timeout_secs", "2"),
            ("max_retries", "1"),
        ],
    );
    moto.kill();
    let started = Instant::now();
    let other = make_source(tmp.path(), 8, 1 << 20);
    dead.ingest(&other, "never", "1")
        .failed()
        .mentions(&["ingesting", "s3://dsv/team/vault"]);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a dead store must not hang ingest"
    );
    assert!(dead.run(&["--json", "ls"]).ok().json_lines().is_empty());
}

#[test]
fn a_store_that_fails_or_shortens_pack_uploads_fails_the_ingest_and_seals_nothing() {
    let tmp = tempdir();
    let src = make_source(tmp.path(), 9, 1 << 20);
    let tune = [
        ("target_size", "1048576"),
        ("request_timeout_secs", "5"),
        ("retry_timeout_secs", "3"),
        ("max_retries", "1"),
    ];
    let cases = [
        (Fault::ShortenPackPuts(100), "bytes instead of"),
        (Fault::FailPackPuts, "run the command again"),
    ];
    for (fault, says) in cases {
        let moto = Moto::start(BUCKET); // a fresh bucket: no packs from the previous case
        let v = RemoteVault::new(&moto, &tune);
        let proxy = FaultProxy::start(moto.port, fault);
        let mut through_proxy = v.ingest_cmd(&src, "d", "1");
        through_proxy.env("AWS_ENDPOINT_URL", proxy.endpoint());
        let started = Instant::now();
        run_cmd(through_proxy)
            .code_is(1)
            .mentions(&["ingesting", "s3://dsv/team/vault/packs/", says]);
        assert!(proxy.injected() > 0, "{fault:?}: the proxy saw no pack upload");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{fault:?}: ingest took too long"
        );
        assert!(v.run(&["--json", "ls"]).ok().json_lines().is_empty(), "{fault:?}");
        assert_eq!(v.verify(false)["ok"], true, "{fault:?}");

        // The store behaves again: the same ingest succeeds, and every byte checks out.
        v.ingest(&src, "d", "1").ok();
        assert_eq!(v.verify(true)["ok"], true, "{fault:?}");
    }
}

/// Read a file on another thread, giving up after `limit`: `None` means the read hung.
fn read_with_timeout(path: &Path, limit: Duration) -> Option<std::io::Result<Vec<u8>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(fs::read(path));
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn a_mount_reads_through_the_cache_and_gives_eio_when_the_store_is_gone() {
    if !can_mount() {
        return;
    }
    let moto = Moto::start(BUCKET);
    let tmp = tempdir();
    let src = make_source(tmp.path(), 9, 4 << 20);
    let a = RemoteVault::new(&moto, SMALL_PACKS);
    a.ingest(&src, "m", "1").ok();
    let b = RemoteVault::new(
        &moto,
        &[
            ("request_timeout_secs", "2"),
            ("retry_timeout_secs", "3"),
            ("max_retries", "2"),
        ],
    );
    b.run(&["sync"]).ok();
    let mp = tmp.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let mut cmd = b.cmd();
    cmd.args(["mount", "--cache-size", "64M", "m@1"]).arg(&mp);
    let mut mounted = spawn_mount(cmd, &mp, true);

    // Read two files through the mount: right bytes, and they land in the cache.
    for f in ["rows.csv", "sub/f1.bin"] {
        let got = read_with_timeout(&mp.join(f), Duration::from_secs(60))
            .expect("a read through the mount hung")
            .unwrap();
        assert_eq!(got, fs::read(src.join(f)).unwrap(), "{f}");
    }
    // The cache holds exactly the chunks read: extents named `<pack>-<offset>-<len>`, each
    // file its bytes plus a 32-byte hash; no rounding up to blocks, nothing around them.
    let mut cached = 0u64;
    for e in fs::read_dir(b.vault.dir.join("cache/extents")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let len: u64 = name.rsplit('-').next().unwrap().parse().unwrap();
        assert_eq!(e.metadata().unwrap().len(), len + 32, "{name}");
        cached += len;
    }
    let read = fs::metadata(src.join("rows.csv")).unwrap().len() + 300_000;
    assert!(cached > 0, "nothing was cached");
    assert!(
        cached <= read,
        "reading {read} bytes of two files cached {cached} bytes"
    );
    moto.kill();
    let err = read_with_timeout(&mp.join("big.bin"), Duration::from_secs(60))
        .expect("a read with the store gone hung instead of failing")
        .expect_err("a read with the store gone must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let stderr = mounted.stop(Duration::from_secs(20));
    assert!(
        stderr.contains("store request failed") && stderr.contains("s3://dsv/team/vault/packs/"),
        "no log line names the unreachable store: {stderr}"
    );
    assert!(
        stderr.contains("the store is unreachable or failing") && !stderr.contains("damaged data"),
        "a dead store is not damaged data: {stderr}"
    );
}
