//! gc on a shared bucket while other machines write (docs/ARCHITECTURE.md, "gc on a shared
//! bucket"), against moto on loopback. Each "machine" is a vault folder of its own on the same
//! bucket. Interleavings are forced with the pause points of src/crashpoint.rs
//! (`DSVAULT_PAUSE_AT`): a writer or a gc waits at a step while the other runs. After every
//! interleaving the invariant is checked from a fresh vault: every chunk of every dataset a ref
//! names is readable (`sync` + `verify --read-data`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fault_proxy::{Fault, FaultProxy};
use common::s3::Moto;
use common::*;
use serde_json::Value;

const BUCKET: &str = "shared";
const URL: &str = "s3://shared/team";

/// One machine: a vault folder on the shared bucket.
struct Machine<'a> {
    vault: TestVault,
    moto: &'a Moto,
    endpoint: Option<String>,
}

impl<'a> Machine<'a> {
    fn new(moto: &'a Moto, tune: &[(&str, &str)]) -> Machine<'a> {
        let m = Machine {
            vault: TestVault::new(),
            moto,
            endpoint: None,
        };
        m.run(&["init", "--store", URL]).ok();
        set_setting(&m.vault.dir, "target_size", "1048576");
        for (k, v) in tune {
            set_setting(&m.vault.dir, k, v);
        }
        m
    }

    fn cmd(&self) -> Command {
        let mut cmd = self.vault.cmd();
        self.moto.apply(&mut cmd);
        if let Some(e) = &self.endpoint {
            cmd.env("AWS_ENDPOINT_URL", e);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
        let mut cmd = self.cmd();
        cmd.args(args);
        run_cmd(cmd)
    }

    fn ingest_cmd(&self, src: &Path, name: &str) -> Command {
        let mut cmd = self.cmd();
        cmd.arg("--json")
            .arg("ingest")
            .arg(src)
            .args(["--name", name, "--version", "1"]);
        cmd
    }

    fn ingest(&self, src: &Path, name: &str) -> Out {
        run_cmd(self.ingest_cmd(src, name))
    }

    fn gc(&self, extra: &[&str]) -> Value {
        let mut args = vec!["--json", "gc", "--grace-minutes", "0"];
        args.extend_from_slice(extra);
        self.run(&args).ok().json()
    }

    /// `verify --read-data` of this machine's catalog passes.
    #[track_caller]
    fn verify(&self) {
        let v = self.run(&["--json", "verify", "--read-data"]).ok().json();
        assert_eq!(v["ok"], Value::Bool(true), "verify is not clean: {v}");
    }

    fn rm(&self, dataset: &str) {
        self.run(&["rm", dataset, "--force-gold", "--yes-i-mean-it", dataset])
            .ok();
    }
}

/// Store times have one-second resolution and gc treats events less than 2 s apart as
/// unordered: runs meant to be "later" wait this long.
fn tick() {
    std::thread::sleep(Duration::from_millis(2200));
}

/// Two gc runs, the second able to delete what the first condemned.
fn gc_twice(m: &Machine) -> (Value, Value) {
    let first = m.gc(&[]);
    tick();
    let second = m.gc(&[]);
    (first, second)
}

/// Every dataset a ref names is readable, every chunk checked, from a vault that knows
/// nothing but the bucket. Returns the datasets.
#[track_caller]
fn assert_invariant(moto: &Moto, ctx: &str) -> Vec<String> {
    let fresh = Machine::new(moto, &[]);
    let synced = fresh.run(&["--json", "sync"]).ok().json();
    assert!(
        synced["problems"].as_array().unwrap().is_empty(),
        "{ctx}: sync found problems: {synced}"
    );
    let v = fresh.run(&["--json", "verify", "--read-data"]).json();
    assert_eq!(
        v["ok"],
        Value::Bool(true),
        "{ctx}: a referenced dataset is not readable: {v}"
    );
    fresh.vault.datasets()
}

/// Packs in the bucket.
fn packs(moto: &Moto) -> Vec<(String, u64)> {
    moto.list(BUCKET, "team/packs/")
}

/// After a quiet gc pair, the bucket holds exactly the live packs and no leases.
#[track_caller]
fn assert_no_leak(m: &Machine, ctx: &str) {
    let (_, _) = gc_twice(m);
    tick();
    let last = m.gc(&[]);
    assert_eq!(
        num(&last, "packs"),
        num(&last, "live_packs"),
        "{ctx}: dead packs left: {last}"
    );
    assert_eq!(num(&last, "leases"), 0, "{ctx}: leases left: {last}");
}

/// A source of `mib` MiB of random data in files of 700 KiB, seeded.
fn source(dir: &Path, name: &str, seed: u64, mib: usize) -> PathBuf {
    let src = dir.join(name);
    for i in 0..(mib * 1024 / 700).max(1) {
        write_file(
            &src,
            format!("f{i:03}.bin"),
            &random_bytes(seed * 1000 + i as u64, 700 << 10),
        );
    }
    src
}

/// A copy of `src` with one more file, in `dest`.
fn copy_with_extra(src: &Path, dest: &Path, seed: u64) -> PathBuf {
    fs::create_dir_all(dest).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
    write_file(dest, "extra.bin", &random_bytes(seed, 300 << 10));
    dest.to_path_buf()
}

/// A command paused at a pause point until released.
struct Paused {
    child: Child,
    dir: tempfile::TempDir,
    point: String,
}

impl Paused {
    /// Start `cmd` with a pause at `point` and wait until it is there. `None` when the
    /// process ended without reaching it (its output is returned in the panic otherwise).
    fn start(mut cmd: Command, point: &str) -> Paused {
        let dir = tempdir();
        cmd.env("DSVAULT_PAUSE_AT", point)
            .env("DSVAULT_PAUSE_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let reached = dir.path().join(format!("{point}.reached"));
        let start = Instant::now();
        while !reached.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the process ended ({status}) before pause point {point}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "pause point {point} not reached"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Paused {
            child,
            dir,
            point: point.to_string(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Let it go on and wait for it to end.
    fn finish(self) -> Out {
        fs::write(self.dir.path().join(format!("{}.go", self.point)), b"").unwrap();
        let out = self.child.wait_with_output().unwrap();
        Out::from_output(format!("paused at {}", self.point), out)
    }
}

/// The writer steps a lease brackets, in order.
const WRITER_POINTS: &[&str] = &[
    "lease-after-write",
    "lease-after-check",
    "pack-after-upload",
    "before-ref",
    "lease-before-ref",
    "before-seal",
    "lease-before-remove",
];

/// The gc steps, in order.
const GC_POINTS: &[&str] = &[
    "gc-after-clock",
    "gc-after-leases",
    "gc-after-refs",
    "gc-before-delete",
    "gc-before-condemn",
];

/// A writer that failed only because the protocol stopped it (never a broken dataset).
fn stopped_by_protocol(out: &Out) -> bool {
    let text = out.text();
    out.code() != Some(0) && (text.contains("condemned by a gc") || text.contains("lease"))
}

/// A writer ingests data it shares with a removed dataset (so it would reuse that dataset's
/// packs) while gc condemns and deletes them, paused at each of its steps in turn.
#[test]
fn an_ingest_paused_at_each_step_while_gc_runs_twice_never_loses_data() {
    let moto = Moto::start(BUCKET);
    let a = Machine::new(&moto, &[]);
    let g = Machine::new(&moto, &[]);
    let dir = tempdir();
    let old = source(dir.path(), "old", 1, 3);
    a.ingest(&old, "keep").ok();
    for (i, point) in WRITER_POINTS.iter().enumerate() {
        let ctx = format!("writer paused at {point}");
        let name = format!("old{i}");
        let src = source(dir.path(), &name, 10 + i as u64, 2);
        a.ingest(&src, &name).ok();
        a.rm(&format!("gold/{name}@1"));
        // The same bytes again under a new name, plus a new file: the writer's catalog would
        // reuse the removed dataset's packs, and it uploads one of its own.
        let again = copy_with_extra(&src, &dir.path().join(format!("again{i}")), 40 + i as u64);
        let writer = Paused::start(a.ingest_cmd(&again, &format!("new{i}")), point);
        let (first, second) = gc_twice(&g);
        let out = writer.finish();
        if out.code() != Some(0) {
            assert!(stopped_by_protocol(&out), "{ctx}: {}\n{first}\n{second}", out.text());
        }
        assert_invariant(&moto, &ctx);
        tick();
        let (_, after) = gc_twice(&g);
        assert_eq!(num(&after, "waiting_for_leases"), 0, "{ctx}: {after}");
        let datasets = assert_invariant(&moto, &format!("{ctx}, gc after"));
        assert!(datasets.contains(&"gold/keep@1".to_string()), "{ctx}: {datasets:?}");
        if out.code() != Some(0) {
            // Stopped by the protocol: after the next gc the same ingest goes through.
            a.run(&["sync", "--prune"]).ok();
            a.ingest(&again, &format!("new{i}")).ok();
            assert_invariant(&moto, &format!("{ctx}, run again"));
        }
    }
    assert_no_leak(&g, "after every writer interleaving");
}

/// gc paused at each of its steps while a writer ingests (reusing a dead dataset's chunks),
/// publishes, and a dataset is removed.
#[test]
fn a_gc_paused_at_each_step_while_others_ingest_and_remove_never_loses_data() {
    let moto = Moto::start(BUCKET);
    let a = Machine::new(&moto, &[]);
    let b = Machine::new(&moto, &[]);
    let g = Machine::new(&moto, &[]);
    let dir = tempdir();
    for (i, point) in GC_POINTS.iter().enumerate() {
        let ctx = format!("gc paused at {point}");
        let dead = source(dir.path(), &format!("dead{i}"), 100 + i as u64, 2);
        a.ingest(&dead, &format!("dead{i}")).ok();
        a.rm(&format!("gold/dead{i}@1"));
        g.gc(&[]); // condemns dead{i}
        tick();
        // Something dead and not condemned yet, for the condemn step.
        a.ingest(
            &source(dir.path(), &format!("fresh{i}"), 400 + i as u64, 1),
            &format!("fresh{i}"),
        )
        .ok();
        a.rm(&format!("gold/fresh{i}@1"));
        let mut cmd = g.cmd();
        cmd.args(["--json", "gc", "--grace-minutes", "0"]);
        let paused = Paused::start(cmd, point);
        // Meanwhile: one machine ingests the condemned bytes plus new ones, another syncs
        // and removes a dataset it did not write.
        let mixed = copy_with_extra(&dead, &dir.path().join(format!("mixed{i}")), 200 + i as u64);
        let wrote = a.ingest(&mixed, &format!("mixed{i}"));
        if wrote.code() != Some(0) {
            assert!(stopped_by_protocol(&wrote), "{ctx}: {}", wrote.text());
        }
        b.run(&["sync"]).ok();
        let gone = format!("gold/other{i}@1");
        let other = source(dir.path(), &format!("other{i}"), 300 + i as u64, 1);
        b.ingest(&other, &format!("other{i}")).ok();
        b.rm(&gone);
        let out = paused.finish();
        assert_eq!(out.code(), Some(0), "{ctx}: {}", out.text());
        let datasets = assert_invariant(&moto, &ctx);
        assert!(!datasets.contains(&gone), "{ctx}: {datasets:?}");
        if wrote.code() == Some(0) {
            assert!(datasets.contains(&format!("gold/mixed{i}@1")), "{ctx}: {datasets:?}");
        }
        // A dataset published after the paused gc listed refs has its new packs condemned:
        // the next runs spare them (and a writer here refuses to rely on them until then).
        tick();
        let (first, _) = gc_twice(&g);
        assert_invariant(&moto, &format!("{ctx}, gc after"));
        let _ = first;
        tick();
    }
    assert_no_leak(&g, "after every gc interleaving");
    assert_invariant(&moto, "at the end");
}

/// kill -9 at every writer step and every gc step: the vault stays readable, and later gc
/// runs reclaim what the dead processes left (their leases expire after the TTL).
#[test]
fn killed_writers_and_gcs_leave_orphans_that_later_gc_runs_reclaim() {
    let moto = Moto::start(BUCKET);
    let g = Machine::new(&moto, &[("lease_ttl_secs", "3")]);
    g.gc(&[]); // the first gc marks the store: every machine's leases last 3 s
    let a = Machine::new(&moto, &[]);
    let dir = tempdir();
    for (i, point) in WRITER_POINTS.iter().chain(GC_POINTS).enumerate() {
        let ctx = format!("killed at {point}");
        let src = source(dir.path(), &format!("s{i}"), 500 + i as u64, 2);
        a.ingest(&src, &format!("base{i}")).ok();
        a.rm(&format!("gold/base{i}@1"));
        g.gc(&[]); // condemns base{i}: something for the delete step
        let extra = source(dir.path(), &format!("x{i}"), 600 + i as u64, 1);
        a.ingest(&extra, &format!("extra{i}")).ok();
        a.rm(&format!("gold/extra{i}@1")); // dead, not condemned: for the condemn step
        tick();
        let mut cmd = if point.starts_with("gc-") {
            let mut c = g.cmd();
            c.args(["gc", "--grace-minutes", "0"]);
            c
        } else {
            let fresh = source(dir.path(), &format!("w{i}"), 700 + i as u64, 2);
            a.ingest_cmd(&fresh, &format!("written{i}"))
        };
        cmd.env("DSVAULT_CRASH_AT", point);
        let out = run_cmd(cmd);
        assert_ne!(
            out.code(),
            Some(0),
            "{ctx}: the crash point was not reached: {}",
            out.text()
        );
        assert_invariant(&moto, &ctx);
        std::thread::sleep(Duration::from_secs(4)); // past the lease TTL
    }
    assert_no_leak(&g, "after every kill");
    assert_invariant(&moto, "at the end");
}

/// A writer stopped with SIGSTOP past its lease TTL, while gc deletes the packs it was
/// about to reuse, must find out and publish nothing.
#[test]
fn a_writer_paused_past_its_lease_publishes_nothing() {
    let moto = Moto::start(BUCKET);
    let g = Machine::new(&moto, &[("lease_ttl_secs", "3")]);
    g.gc(&[]);
    let a = Machine::new(&moto, &[]);
    let dir = tempdir();
    let src = source(dir.path(), "src", 7, 2);
    a.ingest(&src, "old").ok();
    a.rm("gold/old@1");
    for point in ["lease-after-check", "lease-before-ref"] {
        let writer = Paused::start(a.ingest_cmd(&src, "new"), point);
        // SAFETY: kill(2) with our own child's pid.
        unsafe { libc::kill(writer.pid(), libc::SIGSTOP) };
        fs::write(writer.dir.path().join(format!("{point}.go")), b"").unwrap();
        std::thread::sleep(Duration::from_secs(4)); // the lease expires
        let (_, second) = gc_twice(&g);
        unsafe { libc::kill(writer.pid(), libc::SIGCONT) };
        let out = writer.finish();
        if point == "lease-after-check" {
            assert!(num(&second, "bytes_freed") > 0, "gc deleted nothing: {second}");
        }
        out.failed().mentions(&["lease", "ran out", "paused"]);
        assert!(
            moto.list(BUCKET, "team/refs/gold/new").is_empty(),
            "paused at {point}: the writer published its ref"
        );
        assert_invariant(&moto, point);
        tick();
    }
}

/// A writer whose clock is a day off (libfaketime) changes no gc decision: gc compares only
/// the store's timestamps.
#[test]
fn a_writer_a_day_off_changes_no_gc_decision() {
    let faketime = ["/usr/bin/faketime", "/usr/local/bin/faketime"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("faketime is missing: scripts/test.sh installs it (apt-get install faketime)");
    let moto = Moto::start(BUCKET);
    let g = Machine::new(&moto, &[]);
    let a = Machine::new(&moto, &[]);
    let dir = tempdir();
    for (k, offset) in ["+1d", "-1d"].into_iter().enumerate() {
        let src = source(dir.path(), &format!("src{k}"), 9 + k as u64, 2);
        a.ingest(&src, &format!("old{k}")).ok();
        a.rm(&format!("gold/old{k}@1"));
        let mut cmd = Command::new(faketime);
        let inner = a.ingest_cmd(&src, &format!("new{k}"));
        cmd.args(["-f", offset]).arg(inner.get_program()).args(inner.get_args());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let skewed = Paused::start(cmd, "lease-after-check");
        // With the default grace of an hour, nothing the writer just wrote is old enough,
        // whatever its clock says; and its lease (6 h TTL) keeps what it may reuse.
        let mut gc = g.cmd();
        gc.args(["--json", "gc"]);
        let first = run_cmd(gc).ok().json();
        assert_eq!(num(&first, "bytes_freed"), 0, "{offset}: {first}");
        assert_eq!(num(&first, "expired_leases_removed"), 0, "{offset}: {first}");
        tick();
        let (_, second) = gc_twice(&g);
        assert_eq!(num(&second, "bytes_freed"), 0, "{offset}: {second}");
        assert!(num(&second, "waiting_for_leases") > 0, "{offset}: {second}");
        skewed.finish().ok();
        assert_invariant(&moto, offset);
        // The writer reused what the first run condemned: the next runs spare it.
        tick();
        let (spared, _) = gc_twice(&g);
        assert!(num(&spared, "spared") > 0, "{offset}: {spared}");
        tick();
    }
}

/// A listing that omits a pack, or fails part way, makes gc abort and delete nothing.
#[test]
fn a_listing_that_omits_keys_or_fails_makes_gc_delete_nothing() {
    let moto = Moto::start(BUCKET);
    let a = Machine::new(&moto, &[("max_retries", "1"), ("retry_timeout_secs", "2")]);
    let dir = tempdir();
    a.ingest(&source(dir.path(), "keep", 1, 3), "keep").ok();
    let keep_packs = packs(&moto);
    a.ingest(&source(dir.path(), "gone", 2, 1), "gone").ok();
    a.rm("gold/gone@1");
    a.gc(&[]);
    tick();
    let before = moto.list(BUCKET, "team/");
    // A pack of the live dataset (the first it stored).
    let live_pack: &'static str = Box::leak(keep_packs[0].0.rsplit('/').next().unwrap().to_string().into_boxed_str());
    for (fault, why) in [
        (Fault::OmitFromListings(live_pack), "listing is incomplete"),
        (Fault::FailListings, "listing"),
    ] {
        let proxy = FaultProxy::start(moto.port, fault);
        let mut faulty = Machine::new(&moto, &[("max_retries", "1"), ("retry_timeout_secs", "2")]);
        faulty.endpoint = Some(proxy.endpoint());
        faulty.run(&["gc", "--grace-minutes", "0"]).failed().mentions(&[why]);
        assert!(proxy.injected() > 0, "{fault:?} injected nothing");
        assert_eq!(moto.list(BUCKET, "team/"), before, "{fault:?}: gc changed the bucket");
    }
    // A listing that omits a ref condemns that dataset's packs, but the next run finds them
    // live again and deletes nothing.
    let proxy = FaultProxy::start(moto.port, Fault::OmitFromListings("refs/gold/keep"));
    let mut faulty = Machine::new(&moto, &[]);
    faulty.endpoint = Some(proxy.endpoint());
    let condemned = faulty.gc(&[]);
    assert!(num(&condemned, "bytes_condemned") > 0, "{condemned}");
    tick();
    let next = a.gc(&[]);
    assert!(num(&next, "spared") > 0, "{next}");
    assert_invariant(&moto, "after a ref was omitted once");
    assert!(assert_invariant(&moto, "").contains(&"gold/keep@1".to_string()));
}

/// A workspace pins its bases in the store: `rm` on another machine is refused while it
/// exists, and allowed once it is removed; gc keeps a pinned dataset's data.
#[test]
fn rm_on_another_machine_cannot_pull_a_workspace_base_from_under_it() {
    let moto = Moto::start(BUCKET);
    let (a, b) = (Machine::new(&moto, &[]), Machine::new(&moto, &[]));
    let dir = tempdir();
    a.ingest(&source(dir.path(), "d", 3, 1), "d").ok();
    a.run(&["workspace", "new", "w", "--base", "gold/d@1"]).ok();
    assert_eq!(moto.list(BUCKET, "team/pins/").len(), 1);
    b.run(&["sync"]).ok();
    b.run(&["rm", "gold/d@1", "--force-gold", "--yes-i-mean-it", "gold/d@1"])
        .failed()
        .mentions(&["gold/d@1", "workspace w"]);
    let (_, second) = gc_twice(&b);
    assert_eq!(num(&second, "bytes_freed"), 0, "{second}");
    a.run(&["workspace", "rm", "w"]).ok();
    assert!(moto.list(BUCKET, "team/pins/").is_empty());
    b.rm("gold/d@1");
    let (_, second) = gc_twice(&b);
    assert!(num(&second, "bytes_freed") > 0, "{second}");
    // a's catalog learns it from sync: the dataset is gone, its packs forgotten.
    let synced = a.run(&["--json", "sync", "--prune"]).ok().json();
    assert_eq!(synced["datasets_pruned"][0], "gold/d@1", "{synced}");
    assert!(num(&synced, "packs_deleted_by_gc") > 0, "{synced}");
    a.verify();
}

/// The end-to-end story on one bucket: two machines, a removal, `--dry-run`, two runs, the
/// exact bytes freed, and `sync` on the other machine.
#[test]
fn gc_frees_exactly_what_only_removed_datasets_used() {
    let moto = Moto::start(BUCKET);
    let (a, b) = (Machine::new(&moto, &[]), Machine::new(&moto, &[]));
    let dir = tempdir();
    a.ingest(&source(dir.path(), "one", 1, 2), "one").ok();
    let before = packs(&moto);
    a.ingest(&source(dir.path(), "two", 2, 2), "two").ok();
    let only_two: u64 = packs(&moto).iter().filter(|p| !before.contains(p)).map(|p| p.1).sum();
    b.run(&["sync"]).ok();
    b.rm("gold/two@1");
    let listed = moto.list(BUCKET, "team/");
    let dry = b.gc(&["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(num(&dry, "bytes_condemned"), only_two + manifest_size(&moto, &dry));
    assert_eq!(moto.list(BUCKET, "team/"), listed, "a dry run changed the bucket");
    let (first, second) = gc_twice(&b);
    assert_eq!(num(&first, "bytes_freed"), 0, "the first run only condemns: {first}");
    assert_eq!(
        num(&second, "bytes_freed"),
        only_two + manifest_size(&moto, &first),
        "{second}"
    );
    let text = b.run(&["gc", "--grace-minutes", "0", "--dry-run"]).ok().text();
    assert!(text.contains("0 objects, 0 B freed"), "{text}");
    // The machine that wrote it still lists it until sync tells it otherwise.
    let synced = a.run(&["--json", "sync", "--prune"]).ok().json();
    assert_eq!(synced["datasets_pruned"][0], "gold/two@1", "{synced}");
    a.verify();
    let out = tempdir();
    a.run(&["export", "gold/one@1", out.path().join("one").to_str().unwrap()])
        .ok();
    assert_invariant(&moto, "after gc");
}

/// Bytes of the manifests a report condemned or deleted.
fn manifest_size(_moto: &Moto, report: &Value) -> u64 {
    ["condemned", "deleted"]
        .iter()
        .flat_map(|k| report[k].as_array().cloned().unwrap_or_default())
        .filter(|o| o["key"].as_str().unwrap_or_default().starts_with("manifests/"))
        .map(|o| o["bytes"].as_u64().unwrap())
        .sum()
}

/// A store marked with a newer protocol is refused for writing.
#[test]
fn a_store_of_a_newer_protocol_is_refused() {
    let moto = Moto::start(BUCKET);
    let a = Machine::new(&moto, &[]);
    moto.python(&format!(
        "s3.put_object(Bucket={BUCKET:?}, Key='team/dsvault-store.json', Body=b'{{\"protocol\": 2, \"lease_ttl_secs\": 60}}')"
    ));
    let dir = tempdir();
    a.ingest(&source(dir.path(), "d", 1, 1), "d")
        .failed()
        .mentions(&["protocol 2", "upgrade dsvault"]);
    a.run(&["gc"]).failed().mentions(&["protocol 2"]);
}
