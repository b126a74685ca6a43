//! `dsvault run` end to end (real mounts; needs root and /dev/fuse, skipped otherwise,
//! failed under CI): the environment the command sees, a failing command recorded without a derive, a
//! successful one derived with its lineage, a signal reaching the command with the mount
//! gone afterwards, `--cd` and the placeholders, the warning for an unchanged workspace, and
//! a crash between the recorded run and its derive. A guard detaches any mount a run left,
//! even when a test fails.

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
    assert_eq!(report["derived"]["unchanged"], false);
    assert!(!out.stderr.contains("unchanged"), "{}", out.stderr);
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

/// `--cd` runs in the workspace and the placeholders name its folders; the caller's folder
/// is never written.
#[test]
fn cd_and_placeholders_run_in_the_workspace() {
    if !can_mount() {
        return;
    }
    let (v, _src) = vault_with_base();
    let _guard = NoLeftovers(Vec::new());
    let caller = tempdir();
    let mut cmd = v.cmd();
    cmd.current_dir(caller.path()).args([
        "--json",
        "run",
        "--workspace",
        "clean",
        "--base",
        "gold/inputs@v1",
        "--cd",
        "--derive",
        "clean@v1",
        "--",
        "sh",
        "-c",
        r#"rm data/x.bin && cp "$1/README" copied && printf '%s' "$2" > where && echo '{{}}' > braces"#,
        "sh",
        "{input}",
        "{workspace}",
    ]);
    let out = run_cmd(cmd).ok();
    let report = out.json();
    assert_eq!(
        fs::read_dir(caller.path()).unwrap().count(),
        0,
        "wrote into the caller's folder"
    );
    let ws_path = report["workspace_path"].as_str().unwrap();
    assert_eq!(v.cat("derived/clean@v1", "where"), ws_path.as_bytes());
    assert_eq!(v.cat("derived/clean@v1", "copied"), b"base\n");
    assert_eq!(v.cat("derived/clean@v1", "braces"), b"{}\n");
    let dest = tempdir();
    v.run(["export", "derived/clean@v1", &dest.path().join("e").to_string_lossy()])
        .ok();
    assert!(
        !dest.path().join("e/data/x.bin").exists(),
        "the delete did not reach the workspace"
    );
    // The run records the command as typed, placeholders and all.
    assert!(runs(&v, "clean")[0].0.contains(r#""{input}","{workspace}""#));
    // {inputs}: each base its own argument.
    let out = v
        .run(["run", "--workspace", "clean", "--cd", "--", "ls", "-d", "{inputs}"])
        .ok();
    assert!(out.stdout_str().contains("/gold/inputs/v1"), "{}", out.text());
}

/// A mistyped placeholder or `{input}` over several bases stops before anything runs.
#[test]
fn bad_placeholders_stop_the_run_before_it_starts() {
    if !can_mount() {
        return;
    }
    let (v, src) = vault_with_base();
    let _guard = NoLeftovers(Vec::new());
    // Each run gets its own TMPDIR, so "no mount point left behind" is exact.
    let tmp = tempdir();
    let run = |args: &[&str]| {
        let mut cmd = v.cmd();
        cmd.env("TMPDIR", tmp.path()).args(args);
        run_cmd(cmd)
    };
    run(&[
        "run",
        "--workspace",
        "w",
        "--base",
        "gold/inputs@v1",
        "--",
        "touch",
        "{workspce}/x",
    ])
    .code_is(1)
    .mentions(&["unknown placeholder {workspce}", "{workspace}"]);
    v.ingest_ok(src.path(), "more", "v1", &[]);
    v.run([
        "workspace",
        "new",
        "two",
        "--base",
        "gold/inputs@v1",
        "--base",
        "gold/more@v1",
    ])
    .ok();
    run(&["run", "--workspace", "two", "--", "cat", "{input}/README"])
        .code_is(1)
        .mentions(&["{input} needs a workspace with one base", "use {inputs}"]);
    assert!(
        runs(&v, "w").is_empty() && runs(&v, "two").is_empty(),
        "recorded a run that never ran"
    );
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "a mount point was left behind"
    );
    v.verify();
}

/// A derive equal to its only base warns and says so in JSON, for `run` and `derive`.
#[test]
fn an_unchanged_workspace_is_pointed_out() {
    if !can_mount() {
        return;
    }
    let (v, _src) = vault_with_base();
    let _guard = NoLeftovers(Vec::new());
    let out = v
        .run([
            "--json",
            "run",
            "--workspace",
            "u",
            "--base",
            "gold/inputs@v1",
            "--derive",
            "same@v1",
            "--",
            "true",
        ])
        .ok();
    assert_eq!(out.json()["derived"]["unchanged"], true);
    assert!(
        out.stderr
            .contains("the workspace is unchanged: derived/same@v1 has the same root as gold/inputs@v1"),
        "{}",
        out.stderr
    );
    let out = v.run(["derive", "u", "--name", "same", "--version", "v2"]).ok();
    assert!(out.stderr.contains("the workspace is unchanged"), "{}", out.stderr);
    let quiet = v
        .run(["--quiet", "derive", "u", "--name", "same", "--version", "v3"])
        .ok();
    assert!(quiet.stderr.is_empty(), "{}", quiet.stderr);
}

/// Killed between the committed run row and the derive: the run is recorded without a
/// dataset, the vault verifies, the output stays in the workspace and `derive` seals it.
/// Killed inside the derive before its seal: the same, and the run is never linked to a
/// dataset that does not exist.
#[test]
fn a_crash_between_the_run_record_and_the_derive_leaves_the_run_recorded() {
    if !can_mount() {
        return;
    }
    for (i, point) in ["run-before-derive", "before-seal"].into_iter().enumerate() {
        let (v, _src) = vault_with_base();
        let ws = format!("w{i}");
        let tmp = tempdir();
        let mut cmd = v.cmd();
        cmd.env("DSVAULT_CRASH_AT", point).env("TMPDIR", tmp.path()).args([
            "run",
            "--workspace",
            &ws,
            "--base",
            "gold/inputs@v1",
            "--cd",
            "--derive",
            "result@v1",
            "--",
            "sh",
            "-c",
            "echo model > model.bin",
        ]);
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let _guard = NoLeftovers(vec![child.id()]);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("crash point {point} reached")),
            "{point}: {stderr}"
        );
        assert!(!out.status.success());
        // The mount was stopped and its folder removed before the run was recorded.
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "{point}: mount point left behind"
        );
        assert_eq!(
            runs(&v, &ws),
            vec![(r#"["sh","-c","echo model > model.bin"]"#.to_string(), 0, None)],
            "{point}"
        );
        assert!(
            !v.datasets().iter().any(|d| d.contains("result")),
            "{point}: a dataset appeared"
        );
        v.verify();
        let out = v
            .run(["--json", "derive", &ws, "--name", "result", "--version", "v1"])
            .ok();
        assert_eq!(out.json()["unchanged"], false);
        assert_eq!(v.cat("derived/result@v1", "model.bin"), b"model\n");
        v.verify();
    }
}

#[test]
fn a_fifo_the_command_leaves_stops_the_derive_unless_skip_special() {
    if !can_mount() {
        return;
    }
    let (v, _src) = vault_with_base();
    let _guard = NoLeftovers(Vec::new());
    let script = r#"mkfifo "$DSVAULT_WORKSPACE/queue" && echo done > "$DSVAULT_WORKSPACE/out.txt""#;
    let out = run_and_derive(&v, script);
    assert_eq!(out.code(), Some(1), "{}", out.text());
    out.mentions(&["the command succeeded", "queue (fifo)", "--skip-special"]);
    assert!(!v.datasets().iter().any(|d| d.contains("result")), "derived anyway");

    let out = v.run([
        "--json",
        "run",
        "--workspace",
        "w",
        "--derive",
        "result@v1",
        "--skip-special",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), Some(0), "{}", out.text());
    let skipped = &out.json()["derived"]["skipped"];
    assert_eq!(skipped[0]["path"], "queue", "{skipped}");
    assert_eq!(skipped[0]["reason"], "fifo", "{skipped}");
    assert_eq!(v.cat("derived/result@v1", "out.txt"), b"done\n");
}
