//! `dsvault run` end to end (real mounts; needs root and /dev/fuse, skipped otherwise):
//! the environment the command sees, a failing command recorded without a derive, a
//! successful one derived with its lineage, and a signal reaching the command with the
//! mount gone afterwards. A guard detaches any mount a run left, even when a test fails.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::mounted::can_mount;
use common::*;
use serde_json::Value;

/// Mount points of `dsvault run` processes (`/tmp/dsvault-run-<pid>-<n>`).
fn run_mounts() -> Vec<String> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|mp| mp.contains("/dsvault-run-"))
        .map(str::to_string)
        .collect()
}

/// Detaches every run mount of this test's children when dropped.
struct NoLeftovers(Vec<u32>);

impl Drop for NoLeftovers {
    fn drop(&mut self) {
        for mp in run_mounts() {
            if self.0.iter().any(|pid| mp.contains(&format!("/dsvault-run-{pid}-"))) {
                let _ = std::process::Command::new("umount").arg("-l").arg(&mp).status();
            }
        }
    }
}

fn vault_with_base() -> (TestVault, tempfile::TempDir) {
    let v = TestVault::new();
    let src = tempdir();
    write_file(src.path(), "README", b"base\n");
    write_file(src.path(), "data/x.bin", &random_bytes(3, 100_000));
    v.ingest_ok(src.path(), "inputs", "v1", &[]);
    (v, src)
}

fn runs(v: &TestVault, workspace: &str) -> Vec<(String, i64, Option<String>)> {
    let c = v.catalog();
    let mut stmt = c
        .prepare("SELECT command, exit_status, derived FROM runs WHERE workspace = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([workspace], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// `dsvault --json run --workspace w --base gold/inputs@v1 --derive result@v1 -- sh -c SCRIPT`.
fn run_and_derive(v: &TestVault, script: &str) -> Out {
    v.run([
        "--json",
        "run",
        "--workspace",
        "w",
        "--base",
        "gold/inputs@v1",
        "--derive",
        "result@v1",
        "--",
        "sh",
        "-c",
        script,
    ])
}

#[test]
fn a_failing_command_is_recorded_and_nothing_is_derived() {
    if !can_mount() {
        return;
    }
    let (v, _src) = vault_with_base();
    let _guard = NoLeftovers(Vec::new());
    let script = r#"test -f "$DSVAULT_INPUTS/README" && echo partial > "$DSVAULT_WORKSPACE/out.txt" && exit 3"#;
    let out = run_and_derive(&v, script);
    assert_eq!(out.code(), Some(3), "{}", out.text());
    let report: Value = out.json();
    assert_eq!(report["exit_status"], 3);
    assert!(report["derived"].is_null());
    assert!(!v.datasets().iter().any(|d| d.contains("result")), "derived anyway");
    assert_eq!(
        runs(&v, "w"),
        vec![(format!(r#"["sh","-c",{}]"#, Value::from(script)), 3, None)]
    );
    // What it wrote stays in the workspace; the mount and its folder are gone.
    assert_eq!(
        fs::read(v.dir.join("workspaces/w/upper/out.txt")).unwrap(),
        b"partial\n"
    );
    let mp = report["workspace_path"].as_str().unwrap();
    assert!(!Path::new(mp).exists(), "{mp} left behind");
    assert!(run_mounts().iter().all(|m| !mp.starts_with(m.as_str())));
}

#[test]
fn a_successful_command_is_derived_with_its_lineage() {
    if !can_mount() {
        return;
    }
    let (v, _src) = vault_with_base();
    let _guard = NoLeftovers(Vec::new());
    let script =
        r#"cp "$DSVAULT_INPUTS/data/x.bin" "$DSVAULT_WORKSPACE/copy.bin" && echo more >> "$DSVAULT_WORKSPACE/README""#;
    let out = run_and_derive(&v, script);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let report: Value = out.json();
    assert_eq!(report["derived"]["dataset"], "derived/result@v1");
    assert_eq!(v.cat("derived/result@v1", "README"), b"base\nmore\n");
    assert_eq!(v.cat("derived/result@v1", "copy.bin"), random_bytes(3, 100_000));
    let lineage = v.run(["--json", "lineage", "result@v1"]).ok().json();
    assert!(lineage["command"].as_str().unwrap().contains("copy.bin"), "{lineage}");
    assert_eq!(lineage["exit_status"], 0);
    assert!(lineage["started_at"].as_i64().is_some() && lineage["ended_at"].as_i64().is_some());
    assert_eq!(lineage["inputs"][0]["dataset"], "gold/inputs@v1");
    assert_eq!(runs(&v, "w")[0].2.as_deref(), Some("derived/result@v1"));
    // The workspace exists now: a second run uses it without --base.
    let again = v.run_in_workspace("w", r#"test -f "$DSVAULT_WORKSPACE/copy.bin""#);
    assert_eq!(again.code(), Some(0), "{}", again.text());
    // Other bases for an existing workspace are refused.
    v.ingest_ok(_src.path(), "other", "v1", &[]);
    v.run(["run", "--workspace", "w", "--base", "gold/other@v1", "--", "true"])
        .failed()
        .mentions(&["already exists with bases"]);
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_reaches_the_command_and_the_mount_is_gone() {
    if !can_mount() {
        return;
    }
    let (v, _src) = vault_with_base();
    let mut child: Child = v
        .cmd()
        .args([
            "run",
            "--workspace",
            "w",
            "--base",
            "gold/inputs@v1",
            "--derive",
            "never@v1",
            "--",
            "sleep",
            "60",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = NoLeftovers(vec![child.id()]);
    let mine = format!("/dsvault-run-{}-", child.id());
    wait_for("the run's mount", Duration::from_secs(20), || {
        run_mounts().iter().any(|m| m.contains(&mine))
    });
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(!run_mounts().iter().any(|m| m.contains(&mine)), "mount left behind");
    assert_eq!(runs(&v, "w")[0].1, 128 + libc::SIGTERM as i64);
    assert!(!v.datasets().iter().any(|d| d.contains("never")));
}
