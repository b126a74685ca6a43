//! POSIX conformance of a workspace: pjdfstest (the Rust rewrite, `cargo install pjdfstest`,
//! installed by scripts/test.sh) runs as root in `work/<workspace>/` of a real mount made
//! with `--allow-other`, and on a temporary folder of the local disk. Every case that passes
//! on the local disk must pass in the workspace, except those listed in [`KNOWN`], each
//! with its reason (docs/workspaces.md has the same list).
//!
//! Needs root, /dev/fuse and the pjdfstest binary; under `CI=true` (or
//! `DSVAULT_REQUIRE_FUSE=1`) a missing one fails the test instead of skipping it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mounted::{can_mount, is_mounted, spawn_mount};
use common::*;

/// Cases that pass on a local disk but cannot pass in a workspace, and why.
const KNOWN: &[(&str, &str)] = &[(
    "link::link_count_max",
    "skipped, not failed: glibc's pathconf(_PC_LINK_MAX) knows no limit for FUSE file \
         systems and answers 127 (\"unknown\"), so pjdfstest does not run the case",
)];

/// pjdfstest's settings: `naptime` above ext4's timestamp granularity (a jiffy, 4 ms), so
/// the time-change cases are not flaky on the local disk; the dummy users it switches to.
const CONFIG: &str = r#"
[features]
posix_fallocate = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [["nobody", "nogroup"], ["tests", "tests"]]
"#;

/// Longest a suite may run (it takes seconds).
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

/// The pjdfstest binary: on PATH, else in the cargo home.
fn pjdfstest_binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(Path::new(&home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join("pjdfstest")).find(|p| p.is_file())
}

/// The accounts pjdfstest switches to (real accounts, made with useradd when missing).
fn ensure_dummy_users() {
    let have = |name: &str| Command::new("id").arg(name).output().is_ok_and(|o| o.status.success());
    if !have("tests") {
        let ok = Command::new("useradd")
            .args([
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                "tests",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok || have("tests"), "cannot create the user `tests` pjdfstest needs");
    }
    assert!(have("nobody"), "pjdfstest needs the user `nobody`");
}

/// Run the suite in `dir` (its output to `log`); each case's result (`ok`, `FAILED`,
/// `skipped`).
fn run_suite(binary: &Path, config: &Path, dir: &Path, log: &Path) -> BTreeMap<String, String> {
    let out = std::fs::File::create(log).unwrap();
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(config)
        .arg("-p")
        .arg(dir)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > SUITE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pjdfstest in {} ran longer than {SUITE_TIMEOUT:?}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(log).unwrap();
    let results = parse(&text);
    assert!(
        results.len() > 300,
        "pjdfstest in {} reported only {} cases:\n{text}",
        dir.display(),
        results.len()
    );
    results
}

/// `name   ok` / `name   FAILED` / `name   skipped` lines of pjdfstest's output.
fn parse(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(result), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        if name.contains("::") && matches!(result, "ok" | "FAILED" | "skipped") {
            out.insert(name.to_string(), result.to_string());
        }
    }
    out
}

#[test]
fn a_workspace_passes_every_pjdfstest_case_the_local_disk_passes() {
    let binary = pjdfstest_binary();
    let what = "the pjdfstest binary (scripts/test.sh installs it: cargo install pjdfstest)";
    if !can_mount() || !common::require::needs(binary.is_some(), what) {
        return;
    }
    let binary = binary.unwrap();
    ensure_dummy_users();
    let tmp = tempdir();
    let config = tmp.path().join("pjdfstest.toml");
    std::fs::write(&config, CONFIG).unwrap();

    let local_dir = tmp.path().join("local");
    std::fs::create_dir(&local_dir).unwrap();
    let local = run_suite(&binary, &config, &local_dir, &tmp.path().join("local.log"));

    let v = TestVault::new();
    v.run(["init"]).ok();
    v.run(["workspace", "new", "posix"]).ok();
    let mp = tmp.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mut cmd = v.cmd();
    cmd.args(["mount", "--allow-other"]).arg(&mp);
    let mounted = spawn_mount(cmd, &mp, false);
    assert!(is_mounted(&mp), "the mount did not appear at {}", mp.display());
    let ws = run_suite(
        &binary,
        &config,
        &mp.join("work/posix"),
        &tmp.path().join("workspace.log"),
    );
    drop(mounted);

    let mut regressions = Vec::new();
    for (case, result) in &local {
        if result != "ok" || ws.get(case).map(String::as_str) == Some("ok") {
            continue;
        }
        if KNOWN.iter().any(|(k, _)| k == case) {
            continue;
        }
        regressions.push(format!("{case}: {}", ws.get(case).map_or("missing", String::as_str)));
    }
    let passed = |r: &BTreeMap<String, String>| r.values().filter(|x| *x == "ok").count();
    eprintln!(
        "pjdfstest: local disk {} of {} passed, workspace {} of {}",
        passed(&local),
        local.len(),
        passed(&ws),
        ws.len()
    );
    for (case, why) in KNOWN {
        if ws.get(*case).map(String::as_str) == Some("ok") {
            eprintln!("NOTICE: {case} passes in a workspace now; remove it from KNOWN ({why})");
        }
    }
    assert!(
        regressions.is_empty(),
        "cases that pass on the local disk but not in a workspace:\n{}",
        regressions.join("\n")
    );
    v.verify();
}
