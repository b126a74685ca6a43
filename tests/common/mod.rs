//! Helpers shared by the end-to-end tests: run the real `dsvault` binary against a fresh
//! vault, parse its `--json` output, build source trees, and compare trees byte for byte
//! (contents, permission bits, mtimes and symlink targets).

#![allow(dead_code)]

pub mod azurite;
pub mod fault_proxy;
pub mod gcs;
pub mod mounted;
pub mod require;
pub mod s3;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use rand::{RngCore, SeedableRng};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dsvault");

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// A `dsvault` command with a clean environment: no vault, crash point or log filter
/// inherited from whoever runs the tests.
pub fn dsvault() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("DSVAULT_DIR")
        .env_remove("DSVAULT_CRASH_AT")
        .env_remove("DSVAULT_LOG")
        .env_remove("DSVAULT_ALLOW_HTTP")
        .stdin(Stdio::null());
    cmd
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Out {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn from_output(what: String, o: Output) -> Out {
        Out {
            what,
            status: o.status,
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stdout and stderr together, for message checks.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout_str(), self.stderr)
    }

    fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.status,
            self.stdout_str(),
            self.stderr
        )
    }

    /// Panic unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert!(self.status.success(), "expected success: {}", self.describe());
        self
    }

    /// Panic unless the command exited with `code`.
    #[track_caller]
    pub fn code_is(self, code: i32) -> Out {
        assert_eq!(self.code(), Some(code), "unexpected exit code: {}", self.describe());
        self
    }

    /// Panic unless the command failed (any non-zero exit or a signal).
    #[track_caller]
    pub fn failed(self) -> Out {
        assert!(!self.status.success(), "expected failure: {}", self.describe());
        self
    }

    /// Panic unless stderr (or stdout) contains every one of `needles`.
    #[track_caller]
    pub fn mentions(self, needles: &[&str]) -> Out {
        let text = self.text();
        for n in needles {
            assert!(
                text.contains(n),
                "expected the output to mention {n:?}: {}",
                self.describe()
            );
        }
        self
    }

    /// Stdout parsed as one JSON object.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {}", self.describe()))
    }

    /// Stdout parsed as JSON lines.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {}", self.describe()))
            })
            .collect()
    }
}

/// Run a prepared command to completion.
pub fn run_cmd(mut cmd: Command) -> Out {
    let what = format!("{cmd:?}");
    let o = cmd.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    Out::from_output(what, o)
}

/// A JSON number field as u64.
#[track_caller]
pub fn num(v: &Value, field: &str) -> u64 {
    v.get(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no numeric {field:?} in {v}"))
}

/// A JSON string field.
#[track_caller]
pub fn string(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {field:?} in {v}"))
        .to_string()
}

/// A fresh, empty temporary folder that is removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary folder")
}

/// A vault in its own temporary folder (`<tmp>/vault`, created by the first command).
pub struct TestVault {
    _tmp: Option<tempfile::TempDir>,
    pub dir: PathBuf,
}

impl TestVault {
    pub fn new() -> TestVault {
        let tmp = tempdir();
        let dir = tmp.path().join("vault");
        TestVault { _tmp: Some(tmp), dir }
    }

    /// A vault at `dir` (whose lifetime the caller manages).
    pub fn at(dir: &Path) -> TestVault {
        TestVault {
            _tmp: None,
            dir: dir.to_path_buf(),
        }
    }

    /// `dsvault --vault DIR`, ready for more arguments.
    pub fn cmd(&self) -> Command {
        let mut cmd = dsvault();
        cmd.arg("--vault").arg(&self.dir);
        cmd
    }

    /// Run `dsvault --vault DIR ARGS...`.
    pub fn run<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.cmd();
        cmd.args(args);
        run_cmd(cmd)
    }

    /// `dsvault run --workspace WORKSPACE -- sh -c SCRIPT`, not checked.
    pub fn run_in_workspace(&self, workspace: &str, script: &str) -> Out {
        self.run(["run", "--workspace", workspace, "--", "sh", "-c", script])
    }

    /// `dsvault init` followed by setting `[packs] target_size`, so that an ingest of a few
    /// MB publishes several packs.
    pub fn init_with_pack_target(&self, target: u64) {
        self.run(["init"]).ok();
        set_setting(&self.dir, "target_size", &target.to_string());
    }

    /// `ingest SRC --name NAME --version VERSION --json EXTRA...`, not checked.
    pub fn ingest(&self, src: &Path, name: &str, version: &str, extra: &[&str]) -> Out {
        let mut cmd = self.ingest_cmd(src, name, version, extra);
        cmd.arg("--json");
        run_cmd(cmd)
    }

    /// The ingest command line, for callers that spawn it themselves.
    pub fn ingest_cmd(&self, src: &Path, name: &str, version: &str, extra: &[&str]) -> Command {
        let mut cmd = self.cmd();
        cmd.arg("ingest")
            .arg(src)
            .args(["--name", name, "--version", version])
            .args(extra);
        cmd
    }

    /// An ingest that must succeed; returns its JSON report.
    #[track_caller]
    pub fn ingest_ok(&self, src: &Path, name: &str, version: &str, extra: &[&str]) -> Value {
        let report = self.ingest(src, name, version, extra).ok().json();
        assert_eq!(string(&report, "dataset"), format!("gold/{name}@{version}"));
        report
    }

    /// `verify` must pass (exit 0, `ok: true`).
    #[track_caller]
    pub fn verify(&self) -> Value {
        let v = self.run(["--json", "verify"]).ok().json();
        assert_eq!(v["ok"], Value::Bool(true), "verify is not clean: {v}");
        v
    }

    /// `verify --read-data` must pass.
    #[track_caller]
    pub fn verify_read_data(&self) -> Value {
        let v = self.run(["--json", "verify", "--read-data"]).ok().json();
        assert_eq!(v["ok"], Value::Bool(true), "verify --read-data is not clean: {v}");
        v
    }

    /// Export `dataset` to `dest` (which must not exist yet) and return the report.
    #[track_caller]
    pub fn export_ok(&self, dataset: &str, dest: &Path) -> Value {
        let mut cmd = self.cmd();
        cmd.args(["--json", "export", dataset]).arg(dest);
        run_cmd(cmd).ok().json()
    }

    /// Names of the visible datasets (`ls --json`).
    #[track_caller]
    pub fn datasets(&self) -> Vec<String> {
        self.run(["--json", "ls"])
            .ok()
            .json_lines()
            .iter()
            .map(|d| string(d, "dataset"))
            .collect()
    }

    /// `show --json DATASET`.
    #[track_caller]
    pub fn show(&self, dataset: &str) -> Value {
        self.run(["--json", "show", dataset]).ok().json()
    }

    /// `cat DATASET PATH` must succeed; returns the bytes.
    #[track_caller]
    pub fn cat(&self, dataset: &str, path: &str) -> Vec<u8> {
        self.run(["cat", dataset, path]).ok().stdout
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Every pack file in the store.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let packs = self.store_dir().join("packs");
        let Ok(subs) = fs::read_dir(&packs) else {
            return out;
        };
        for sub in subs {
            let sub = sub.unwrap().path();
            for f in fs::read_dir(&sub).unwrap() {
                let f = f.unwrap().path();
                if f.extension() == Some(OsStr::new("pack")) {
                    out.push(f);
                }
            }
        }
        out.sort();
        out
    }

    /// Total size of the pack files in the store.
    pub fn pack_bytes(&self) -> u64 {
        self.pack_files().iter().map(|p| fs::metadata(p).unwrap().len()).sum()
    }

    /// A direct connection to the catalog (for tests that look behind the CLI).
    pub fn catalog(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.dir.join("catalog.db")).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
        conn
    }
}

// ---- building source trees ----------------------------------------------------------------

/// `len` deterministic pseudo-random (incompressible) bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    buf
}

/// Compressible text: numbered CSV-like rows.
pub fn text_rows(seed: u64, rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..rows {
        out.extend_from_slice(format!("{seed},{i},label_{},{}\n", i % 10, i * 7 % 1000).as_bytes());
    }
    out
}

/// Write `data` at `root/rel` (bytes of `rel` taken as is), creating parent folders.
pub fn write_file(root: &Path, rel: impl AsRef<OsStr>, data: &[u8]) -> PathBuf {
    let path = root.join(Path::new(rel.as_ref()));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// [`write_file`] and set the permission bits.
pub fn write_file_mode(root: &Path, rel: impl AsRef<OsStr>, data: &[u8], mode: u32) -> PathBuf {
    let path = write_file(root, rel, data);
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Create `root/rel` as a symlink to `target`.
pub fn symlink(root: &Path, rel: impl AsRef<OsStr>, target: impl AsRef<OsStr>) -> PathBuf {
    let path = root.join(Path::new(rel.as_ref()));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    std::os::unix::fs::symlink(Path::new(target.as_ref()), &path).unwrap();
    path
}

/// Create a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

/// A name of raw bytes (may be non-UTF-8).
pub fn os(bytes: &[u8]) -> OsString {
    OsStr::from_bytes(bytes).to_os_string()
}

// ---- comparing trees ------------------------------------------------------------------------

/// Relative paths (as raw bytes) of everything under `root`, in sorted order.
fn list_tree(root: &Path) -> BTreeSet<Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
            out.insert(rel);
            if e.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn is_special(meta: &fs::Metadata) -> bool {
    let ft = meta.file_type();
    !(ft.is_file() || ft.is_dir() || ft.is_symlink())
}

/// Assert that `actual` (an export) holds exactly the tree `expected` (a source): the same
/// paths, types, permission bits, file bytes, file and folder mtimes, and symlink targets.
/// Special files in `expected` (FIFOs, sockets, devices) are never exported and are ignored.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    compare_trees(expected, actual, true, "");
}

/// [`assert_same_tree`] without mtimes: for the same changes made by a tool in two places
/// (a local folder and a mount's workspace). `ctx` starts each failure message.
#[track_caller]
pub fn assert_same_content(expected: &Path, actual: &Path, ctx: &str) {
    compare_trees(expected, actual, false, ctx);
}

#[track_caller]
fn compare_trees(expected: &Path, actual: &Path, mtimes: bool, ctx: &str) {
    let want: BTreeSet<Vec<u8>> = list_tree(expected)
        .into_iter()
        .filter(|rel| !is_special(&fs::symlink_metadata(expected.join(OsStr::from_bytes(rel))).unwrap()))
        .collect();
    let got = list_tree(actual);
    let lossy =
        |s: &BTreeSet<Vec<u8>>| -> Vec<String> { s.iter().map(|p| String::from_utf8_lossy(p).into()).collect() };
    let missing: BTreeSet<_> = want.difference(&got).cloned().collect();
    let extra: BTreeSet<_> = got.difference(&want).cloned().collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{ctx}trees differ: missing from {}: {:?}; unexpected: {:?}",
        actual.display(),
        lossy(&missing),
        lossy(&extra)
    );
    for rel in &want {
        let rel_os = OsStr::from_bytes(rel);
        let (a, b) = (expected.join(rel_os), actual.join(rel_os));
        let (ma, mb) = (fs::symlink_metadata(&a).unwrap(), fs::symlink_metadata(&b).unwrap());
        let name = format!("{ctx}{}", String::from_utf8_lossy(rel));
        assert_eq!(ma.file_type(), mb.file_type(), "{name}: file type differs");
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&a).unwrap(),
                fs::read_link(&b).unwrap(),
                "{name}: symlink target differs"
            );
            continue;
        }
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "{name}: permission bits differ ({:o} vs {:o})",
            ma.mode() & 0o7777,
            mb.mode() & 0o7777
        );
        if mtimes {
            assert_eq!(
                (ma.mtime(), ma.mtime_nsec()),
                (mb.mtime(), mb.mtime_nsec()),
                "{name}: mtime differs"
            );
        }
        if ma.file_type().is_file() {
            assert_eq!(ma.len(), mb.len(), "{name}: size differs");
            assert_same_bytes(&a, &b);
        }
    }
}

/// Assert two files hold the same bytes, naming the first difference.
#[track_caller]
pub fn assert_same_bytes(a: &Path, b: &Path) {
    let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    if x != y {
        let at = x
            .iter()
            .zip(&y)
            .position(|(p, q)| p != q)
            .unwrap_or(x.len().min(y.len()));
        panic!(
            "{} and {} differ at byte {at} (sizes {} and {})",
            a.display(),
            b.display(),
            x.len(),
            y.len()
        );
    }
}

/// Set a file's mode (e.g. to flip a byte in a 0444 pack and put it back).
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tmpfs mounted for the life of the guard; unmounted on drop, even during a panic.
pub struct TmpfsMount {
    pub path: PathBuf,
}

impl TmpfsMount {
    /// Mount a tmpfs of `size` (e.g. "8m") at `path`, or `None` with the reason when this
    /// machine does not allow it (not root, no CAP_SYS_ADMIN, no `mount`).
    pub fn new(path: &Path, size: &str) -> Result<TmpfsMount, String> {
        fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(TmpfsMount {
            path: path.to_path_buf(),
        })
    }

    /// Change the size of the mounted tmpfs.
    pub fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            // Something still holds it open: detach it now, the kernel frees it when released.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Set `key = value` in the vault.toml of the vault at `vault` (the key must be there
/// already).
pub fn set_setting(vault: &Path, key: &str, value: &str) {
    let path = vault.join("vault.toml");
    let text = fs::read_to_string(&path).unwrap();
    let mut found = false;
    let text: String = text
        .lines()
        .map(|l| {
            if l.split('=').next().map(str::trim) == Some(key) {
                found = true;
                format!("{key} = {value}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(found, "vault.toml has no {key}: {text}");
    fs::write(&path, text).unwrap();
}
