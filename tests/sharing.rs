//! A team on one server, as real separate users (created here with groupadd/useradd and run
//! with `runuser -u NAME --`): read-only use of a vault by users who cannot write it, a
//! vault shared by a group, workspaces that belong to their creators. Needs root; under
//! `CI=true` nothing is skipped.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::mounted::{is_mounted, spawn_mount};
use common::{run_cmd, string, write_file, Out, TestVault, BIN};
use serde_json::Value;

/// Members of [`GROUP`].
const ALICE: &str = "dsv_alice";
const BOB: &str = "dsv_bob";
/// Not a member: a reader only.
const CAROL: &str = "dsv_carol";
const GROUP: &str = "dsv_team";

/// Root (to create users), or the test is skipped (fails under CI: see common::require).
fn need_root() -> bool {
    // SAFETY: geteuid cannot fail.
    common::require::needs(unsafe { libc::geteuid() } == 0, "root (to create users)")
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The test users and group, created once (idempotently: they may exist from a run before).
fn users() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if !quiet(Command::new("getent").args(["group", GROUP])) {
            let made = quiet(Command::new("groupadd").arg(GROUP));
            assert!(
                made || quiet(Command::new("getent").args(["group", GROUP])),
                "groupadd {GROUP}"
            );
        }
        for (user, member) in [(ALICE, true), (BOB, true), (CAROL, false)] {
            if !quiet(Command::new("id").arg(user)) {
                let made = quiet(Command::new("useradd").args(["-M", "-s", "/bin/sh", user]));
                assert!(made || quiet(Command::new("id").arg(user)), "useradd {user}");
            }
            if member {
                assert!(
                    quiet(Command::new("usermod").args(["-aG", GROUP, user])),
                    "usermod {user}"
                );
            }
        }
    });
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn gid_of_group(group: &str) -> u32 {
    let out = Command::new("getent").args(["group", group]).output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2).unwrap().trim().parse().unwrap()
}

/// The binary, somewhere every user can run it: itself when every folder above it is
/// searchable by others, else a copy in a world-readable temporary folder.
fn bin() -> &'static Path {
    static BIN_FOR_ALL: OnceLock<PathBuf> = OnceLock::new();
    BIN_FOR_ALL.get_or_init(|| {
        let bin = Path::new(BIN);
        let reachable = bin
            .ancestors()
            .skip(1)
            .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
            && fs::metadata(bin).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
        if reachable {
            return bin.to_path_buf();
        }
        let dir = shared_tempdir().keep();
        let copy = dir.join("dsvault");
        fs::copy(bin, &copy).unwrap();
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
        copy
    })
}

/// A temporary folder every user may enter and read (tempfile makes them 0700).
fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `dsvault ARGS...` as `user`, with umask 077 (the strictest a member may have).
fn as_user_cmd<S: AsRef<OsStr>>(user: &str, args: &[S]) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--", "sh", "-c", "umask 077; exec \"$0\" \"$@\""])
        .arg(bin())
        .args(args)
        .env_remove("DSVAULT_DIR")
        .env_remove("DSVAULT_CRASH_AT")
        .env_remove("DSVAULT_LOG")
        .stdin(Stdio::null());
    cmd
}

fn as_user<S: AsRef<OsStr>>(user: &str, args: &[S]) -> Out {
    run_cmd(as_user_cmd(user, args))
}

/// `dsvault --vault VAULT ARGS...` as `user`.
fn in_vault(user: &str, vault: &Path, args: &[&str]) -> Out {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--vault"), vault.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    as_user(user, &all)
}

/// Every path below `dir` (and `dir`) with its type and mode bits, owner, group, size and
/// content hash: what must not change when a reader uses a vault.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            let content = if m.is_file() {
                blake3::hash(&fs::read(e.path()).unwrap()).to_hex().to_string()
            } else {
                String::new()
            };
            let state = format!("{:o} {}:{} {} {content}", m.mode(), m.uid(), m.gid(), m.len());
            (e.path().strip_prefix(dir).unwrap().to_path_buf(), state)
        })
        .collect()
}

fn assert_unchanged(before: &BTreeMap<PathBuf, String>, dir: &Path, after_what: &str) {
    let after = snapshot(dir);
    for (path, state) in before {
        assert_eq!(
            Some(state),
            after.get(path),
            "{} changed after {after_what}",
            path.display()
        );
    }
    let added: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    assert!(added.is_empty(), "{after_what} created {added:?} in the vault");
}

/// A folder `root/USER` that belongs to `user` (where they make vaults and mount points).
fn home_of(user: &str, root: &Path) -> PathBuf {
    let home = root.join(user);
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid_of(user)), None).unwrap();
    home
}

/// A vault shared with [`GROUP`], made by alice (umask 077) in a folder of hers; the
/// temporary folder holding it goes with the returned guard.
fn alices_shared_vault() -> (tempfile::TempDir, PathBuf) {
    users();
    let tmp = shared_tempdir();
    let vault = home_of(ALICE, tmp.path()).join("vault");
    in_vault(ALICE, &vault, &["init", "--shared", GROUP])
        .ok()
        .mentions(&[GROUP]);
    (tmp, vault)
}

/// A source tree every user may read.
fn source(root: &Path, seed: u8) -> PathBuf {
    let src = root.join(format!("src{seed}"));
    write_file(&src, "a.txt", format!("alpha {seed}\n").as_bytes());
    write_file(&src, "sub/b.bin", &vec![seed; 300_000]);
    write_file(&src, "sub/deeper/c.txt", b"shared by every source\n");
    for d in ["", "sub", "sub/deeper"] {
        fs::set_permissions(src.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    src
}

#[test]
fn a_reader_who_may_not_write_the_vault_changes_nothing_in_it() {
    if !need_root() {
        return;
    }
    users();
    let tmp = shared_tempdir();
    let v = TestVault::at(&tmp.path().join("vault"));
    v.ingest_ok(&source(tmp.path(), 1), "ds", "v1", &[]);
    v.ingest_ok(&source(tmp.path(), 2), "ds", "v2", &[]);
    v.run(["workspace", "new", "rootws", "--base", "ds@v1"]).ok();
    fs::write(v.dir.join("workspaces/rootws/upper/new.txt"), b"made by root\n").unwrap();
    v.run([
        "derive",
        "rootws",
        "--name",
        "clean",
        "--version",
        "1",
        "--command",
        "clean.py",
    ])
    .ok();
    let before = snapshot(&v.dir);
    let vault = v.dir.as_path();

    let ls = in_vault(CAROL, vault, &["--json", "ls"]).ok().json_lines();
    assert_eq!(ls.len(), 3, "{ls:?}");
    in_vault(CAROL, vault, &["show", "ds@v2"])
        .ok()
        .mentions(&["gold/ds@v2"]);
    in_vault(CAROL, vault, &["stats"]).ok();
    in_vault(CAROL, vault, &["lineage", "derived/clean@1"])
        .ok()
        .mentions(&["gold/ds@v1"]);
    in_vault(CAROL, vault, &["workspace", "ls"])
        .ok()
        .mentions(&["rootws", "root"]);
    let cat = in_vault(CAROL, vault, &["cat", "derived/clean@1", "new.txt"]).ok();
    assert_eq!(cat.stdout, b"made by root\n");
    let v_read = in_vault(CAROL, vault, &["--json", "verify", "--read-data"]).ok().json();
    assert_eq!(v_read["ok"], Value::Bool(true), "{v_read}");
    let out = home_of(CAROL, tmp.path());
    let export_dest = out.join("ds");
    in_vault(CAROL, vault, &["export", "ds@v1", export_dest.to_str().unwrap()]).ok();
    assert_eq!(fs::read(export_dest.join("a.txt")).unwrap(), b"alpha 1\n");
    read_through_own_mount(vault, &out);
    assert_unchanged(&before, vault, "carol's read-only commands");

    // Commands that write say why they cannot, and leave nothing behind either.
    let refusal = format!(
        "the vault {} is not writable by {CAROL} (uid {}): ask its owner, or use a vault made with `init --shared GROUP`",
        vault.display(),
        uid_of(CAROL)
    );
    let src3 = source(tmp.path(), 3);
    let writes: Vec<Vec<&str>> = vec![
        vec!["ingest", src3.to_str().unwrap(), "--name", "x", "--version", "1"],
        vec!["workspace", "new", "mine"],
        vec!["workspace", "rm", "rootws"],
        vec!["derive", "rootws", "--name", "y", "--version", "1"],
        vec!["rm", "derived/clean@1"],
        vec!["gc"],
        vec!["sync"],
        vec!["run", "--workspace", "rootws", "--", "true"],
    ];
    for args in writes {
        in_vault(CAROL, vault, &args).code_is(1).mentions(&[&refusal]);
    }
    assert_unchanged(&before, vault, "carol's refused writes");
    v.verify_read_data();
}

/// Carol mounts one dataset of the vault herself (an unprivileged FUSE mount) and reads it.
fn read_through_own_mount(vault: &Path, home: &Path) {
    let mp = home_of(CAROL, home);
    let args = [
        OsStr::new("--vault"),
        vault.as_os_str(),
        OsStr::new("mount"),
        OsStr::new("gold/ds@v2"),
        mp.as_os_str(),
    ];
    let mounted = spawn_mount(as_user_cmd(CAROL, &args), &mp, false);
    let read = Command::new("runuser")
        .args(["-u", CAROL, "--", "cat"])
        .arg(mp.join("a.txt"))
        .output()
        .unwrap();
    assert_eq!(read.stdout, b"alpha 2\n", "{}", String::from_utf8_lossy(&read.stderr));
    assert!(Command::new("umount").arg(&mp).status().unwrap().success());
    drop(mounted);
    assert!(!is_mounted(&mp));

    // The whole vault: read-only for her (its workspaces are not hers), work/ empty.
    let mounted = spawn_mount(as_user_cmd(CAROL, &[&args[..3], &args[4..]].concat()), &mp, false);
    let script = format!(
        "grep -q 'alpha 1' {m}/gold/ds/v1/a.txt && test -z \"$(ls -A {m}/work)\"",
        m = mp.display()
    );
    let (code, err) = sh_as(CAROL, &script);
    assert_eq!(code, 0, "carol's whole-vault mount: {err}");
    assert!(Command::new("umount").arg(&mp).status().unwrap().success());
    drop(mounted);
    assert!(!is_mounted(&mp));
}

#[test]
fn readers_see_a_concurrent_ingest_safely_and_an_old_catalog_gets_a_clear_message() {
    if !need_root() {
        return;
    }
    users();
    let tmp = shared_tempdir();
    let v = TestVault::at(&tmp.path().join("vault"));
    v.ingest_ok(&source(tmp.path(), 1), "ds", "v1", &[]);
    // A catalog last closed by an older dsvault has no -wal/-shm files, and a reader may
    // not create them.
    for f in ["catalog.db-wal", "catalog.db-shm"] {
        fs::remove_file(v.dir.join(f)).unwrap();
    }
    in_vault(CAROL, &v.dir, &["ls"])
        .code_is(1)
        .mentions(&["cannot be read without write access", "ask the vault's owner"]);
    v.run(["stats"]).ok();
    in_vault(CAROL, &v.dir, &["ls"]).ok().mentions(&["gold/ds@v1"]);

    // Many small files: the ingest commits many times while carol reads.
    let big = tmp.path().join("big");
    for i in 0..3000 {
        write_file(&big, format!("d{}/f{i}.txt", i % 30), format!("file {i}\n").as_bytes());
    }
    Command::new("chmod").args(["-R", "a+rX"]).arg(&big).status().unwrap();
    let mut ingest = v.ingest_cmd(&big, "big", "v1", &["-q"]).spawn().unwrap();
    let mut reads = 0;
    while ingest.try_wait().unwrap().is_none() || reads == 0 {
        let ls = in_vault(CAROL, &v.dir, &["--json", "ls"]).ok().json_lines();
        assert!(!ls.is_empty());
        in_vault(CAROL, &v.dir, &["cat", "ds@v1", "a.txt"]).ok();
        reads += 1;
    }
    assert!(ingest.wait().unwrap().success());
    let ls = in_vault(CAROL, &v.dir, &["--json", "ls"]).ok().json_lines();
    assert_eq!(ls.len(), 2, "{ls:?}");
    let f = in_vault(CAROL, &v.dir, &["cat", "big@v1", "d7/f2977.txt"]).ok();
    assert_eq!(f.stdout, b"file 2977\n");
    v.verify_read_data();
}

/// What every path of a shared vault must look like: the vault's group; folders setgid and
/// group-writable (a workspace's folders group-readable only); files group-readable, the
/// catalog and the lock group-writable.
fn assert_shared_modes(vault: &Path, gid: u32) {
    for e in walkdir::WalkDir::new(vault) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(vault).unwrap().to_string_lossy().into_owned();
        let in_workspace = rel.starts_with("workspaces/") && rel.len() > "workspaces/".len();
        if in_workspace && (rel.contains("/upper/") || rel.ends_with("/scratch")) {
            continue; // what the experiment wrote (its umask decides), the mount's own scratch
        }
        assert_eq!(m.gid(), gid, "{rel} is not in the vault's group");
        let mode = m.mode() & 0o7777;
        if m.is_dir() {
            let want = if in_workspace { 0o2750 } else { 0o2775 };
            assert_eq!(mode, want, "{rel}: folder mode {mode:o}");
        } else if rel.starts_with("catalog.db") || rel == "lock" {
            assert_eq!(mode & 0o060, 0o060, "{rel}: mode {mode:o} is not group-writable");
        } else if !rel.ends_with("writer.lock") {
            assert_eq!(mode & 0o040, 0o040, "{rel}: mode {mode:o} is not group-readable");
        }
    }
}

#[test]
fn members_of_a_shared_vault_ingest_derive_and_read_each_others_datasets() {
    if !need_root() {
        return;
    }
    let (tmp, vault) = alices_shared_vault();
    let vp = vault.as_path();
    let toml = fs::read_to_string(vault.join("vault.toml")).unwrap();
    assert!(toml.contains(&format!("group = \"{GROUP}\"")), "{toml}");
    assert!(toml.contains(&format!("gid = {}", gid_of_group(GROUP))), "{toml}");

    // Two members ingest at once, each with umask 077.
    let (src_a, src_b) = (source(tmp.path(), 1), source(tmp.path(), 2));
    let spawn = |user: &str, src: &Path, name: &str| {
        let args = [
            "--vault",
            vp.to_str().unwrap(),
            "--json",
            "ingest",
            src.to_str().unwrap(),
        ];
        let mut cmd = as_user_cmd(user, &args);
        cmd.args(["--name", name, "--version", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (a, b) = (spawn(ALICE, &src_a, "a"), spawn(BOB, &src_b, "b"));
    for child in [a, b] {
        let out = Out::from_output("ingest".into(), child.wait_with_output().unwrap()).ok();
        assert!(string(&out.json(), "dataset").starts_with("gold/"));
    }

    // Bob works on alice's gold and derives; alice reads what bob derived.
    in_vault(BOB, vp, &["workspace", "new", "bobws", "--base", "gold/a@1"]).ok();
    let upper = vault.join("workspaces/bobws/upper");
    let write = Command::new("runuser")
        .args([
            "-u",
            BOB,
            "--",
            "sh",
            "-c",
            "umask 077; echo cleaned > \"$0\"/clean.txt",
        ])
        .arg(&upper)
        .status()
        .unwrap();
    assert!(write.success());
    in_vault(BOB, vp, &["derive", "bobws", "--name", "a-clean", "--version", "1"]).ok();
    let cat = in_vault(ALICE, vp, &["cat", "derived/a-clean@1", "clean.txt"]).ok();
    assert_eq!(cat.stdout, b"cleaned\n");
    assert_eq!(
        in_vault(ALICE, vp, &["cat", "gold/b@1", "a.txt"]).ok().stdout,
        b"alpha 2\n"
    );
    let lineage = in_vault(ALICE, vp, &["--json", "lineage", "derived/a-clean@1"])
        .ok()
        .json();
    assert_eq!(lineage["user"], Value::String(BOB.into()), "{lineage}");

    // The workspace is bob's: listed with its owner; alice may look, not touch.
    let listed = in_vault(ALICE, vp, &["--json", "workspace", "ls"]).ok().json_lines();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["owner"], Value::String(BOB.into()));
    assert_eq!(listed[0]["owner_uid"], Value::from(uid_of(BOB)));
    in_vault(ALICE, vp, &["workspace", "ls"]).ok().mentions(&["bobws", BOB]);
    let not_yours = format!("workspace bobws belongs to {BOB}");
    in_vault(ALICE, vp, &["workspace", "rm", "bobws"])
        .code_is(1)
        .mentions(&[&not_yours]);
    in_vault(ALICE, vp, &["derive", "bobws", "--name", "z", "--version", "1"])
        .code_is(1)
        .mentions(&[&not_yours]);
    let peek = Command::new("runuser")
        .args(["-u", ALICE, "--", "ls"])
        .arg(&upper)
        .output()
        .unwrap();
    assert!(peek.status.success(), "alice cannot list bob's workspace");

    // Gold stays immutable for every member: another's dataset is not changed or removed
    // without --force-gold.
    in_vault(
        ALICE,
        vp,
        &["ingest", src_a.to_str().unwrap(), "--name", "b", "--version", "1"],
    )
    .code_is(1)
    .mentions(&["gold/b@1 already exists"]);
    in_vault(ALICE, vp, &["rm", "derived/a-clean@1"])
        .code_is(1)
        .mentions(&[&format!("sealed by {BOB}")]);
    in_vault(ALICE, vp, &["rm", "gold/b@1"]).code_is(1);
    for pack in common::TestVault::at(vp).pack_files() {
        let m = fs::metadata(&pack).unwrap();
        assert_eq!(m.mode() & 0o222, 0, "{} is writable", pack.display());
    }
    in_vault(BOB, vp, &["workspace", "rm", "bobws"]).ok();
    let forced = [
        "rm",
        "derived/a-clean@1",
        "--force-gold",
        "--yes-i-mean-it",
        "derived/a-clean@1",
    ];
    in_vault(ALICE, vp, &forced).ok();

    // Whoever is not in the group reads, and may not write.
    in_vault(CAROL, vp, &["ls"]).ok().mentions(&["gold/a@1", "gold/b@1"]);
    in_vault(CAROL, vp, &["workspace", "new", "c"])
        .code_is(1)
        .mentions(&["is not writable by dsv_carol"]);

    assert_shared_modes(vp, gid_of_group(GROUP));
    let verified = in_vault(BOB, vp, &["--json", "verify", "--read-data"]).ok().json();
    assert_eq!(verified["ok"], Value::Bool(true), "{verified}");
    TestVault::at(vp).verify_read_data();
}

#[test]
fn init_shared_refuses_a_group_the_caller_is_not_in_and_an_unknown_group() {
    if !need_root() {
        return;
    }
    users();
    let tmp = shared_tempdir();
    let vault = home_of(CAROL, tmp.path()).join("vault");
    in_vault(CAROL, &vault, &["init", "--shared", GROUP])
        .code_is(1)
        .mentions(&["not a member of group dsv_team"]);
    in_vault(CAROL, &vault, &["init", "--shared", "dsv_no_such_group"])
        .code_is(1)
        .mentions(&["no group \"dsv_no_such_group\""]);
    assert!(!vault.exists(), "a refused init left {}", vault.display());
}

/// Run `script` with `sh -c` as `user` (umask 077); its exit code and stderr.
fn sh_as(user: &str, script: &str) -> (i32, String) {
    let out = Command::new("runuser")
        .args(["-u", user, "--", "sh", "-c", &format!("umask 077; {script}")])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn one_root_mount_serves_each_user_their_own_workspace() {
    if !need_root() {
        return;
    }
    users();
    let tmp = shared_tempdir();
    let v = TestVault::at(&tmp.path().join("vault"));
    v.ingest_ok(&source(tmp.path(), 1), "ds", "v1", &[]);
    v.run(["workspace", "new", "alicews", "--base", "ds@v1", "--owner", ALICE])
        .ok();
    let listed = v.run(["--json", "workspace", "ls"]).ok().json_lines();
    assert_eq!(listed[0]["owner"], Value::String(ALICE.into()));
    let mp = tmp.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let mut cmd = v.cmd();
    cmd.arg("mount").arg("--allow-other").arg(&mp);
    let mounted = spawn_mount(cmd, &mp, false);
    let ws = mp.join("work/alicews");
    let q = |p: &Path| p.display().to_string();

    // The owner writes: new files, folders and symlinks, and a change to a base file, all
    // hers in the mount and in the upper layer.
    let script = format!(
        "echo mine > {w}/mine.txt && mkdir {w}/out && echo r > {w}/out/r.txt && ln -s mine.txt {w}/link \
         && echo changed >> {w}/sub/deeper/c.txt",
        w = q(&ws)
    );
    let (code, err) = sh_as(ALICE, &script);
    assert_eq!(code, 0, "alice could not write her workspace: {err}");
    let alice = uid_of(ALICE);
    let upper = v.dir.join("workspaces/alicews/upper");
    for rel in [
        "mine.txt",
        "out",
        "out/r.txt",
        "link",
        "sub",
        "sub/deeper",
        "sub/deeper/c.txt",
    ] {
        let in_mount = ws.join(rel).symlink_metadata().unwrap();
        assert_eq!(in_mount.uid(), alice, "{rel} in the mount is not alice's");
        let in_upper = upper.join(rel).symlink_metadata().unwrap();
        assert_eq!(in_upper.uid(), alice, "{rel} in the upper layer is not alice's");
    }
    // An untouched base file is hers too in the mount (the kernel checks against that).
    assert_eq!(ws.join("a.txt").metadata().unwrap().uid(), alice);

    // Another member may not write there: EACCES from the kernel's permission checks.
    for script in [
        format!("echo x > {}/bob.txt", q(&ws)),
        format!("echo x >> {}/a.txt", q(&ws)),
        format!("mkdir {}/sub/bobdir", q(&ws)),
        format!("rm {}/mine.txt", q(&ws)),
    ] {
        let (code, err) = sh_as(BOB, &script);
        assert_ne!(code, 0, "bob could: {script}");
        assert!(err.contains("Permission denied"), "{script}: {err}");
    }
    // ... and reads gold through the same mount.
    let (code, err) = sh_as(BOB, &format!("grep -q 'alpha 1' {}/gold/ds/v1/a.txt", q(&mp)));
    assert_eq!(code, 0, "bob cannot read gold: {err}");
    assert!(!upper.join("bob.txt").exists());

    assert!(Command::new("umount").arg(&mp).status().unwrap().success());
    drop(mounted);
    assert!(!is_mounted(&mp));
    v.run(["derive", "alicews", "--name", "alice-out", "--version", "1"])
        .ok();
    assert_eq!(
        v.cat("derived/alice-out@1", "sub/deeper/c.txt"),
        b"shared by every source\nchanged\n"
    );
    v.verify_read_data();
}

#[test]
fn a_members_own_unprivileged_mount_writes_her_workspace() {
    if !need_root() {
        return;
    }
    let (tmp, vault) = alices_shared_vault();
    let vp = vault.as_path();
    let home = vault.parent().unwrap();
    let src = source(tmp.path(), 1);
    in_vault(
        BOB,
        vp,
        &["ingest", src.to_str().unwrap(), "--name", "ds", "--version", "v1"],
    )
    .ok();
    in_vault(ALICE, vp, &["workspace", "new", "mine", "--base", "ds@v1"]).ok();
    let mp = home.join("mnt");
    let (code, err) = sh_as(ALICE, &format!("mkdir {}", mp.display()));
    assert_eq!(code, 0, "{err}");
    let args = [
        OsStr::new("--vault"),
        vp.as_os_str(),
        OsStr::new("mount"),
        mp.as_os_str(),
    ];
    let mounted = spawn_mount(as_user_cmd(ALICE, &args), &mp, false);
    let ws = mp.join("work/mine");
    let (code, err) = sh_as(
        ALICE,
        &format!("echo new > {w}/new.txt && echo more >> {w}/a.txt", w = ws.display()),
    );
    assert_eq!(code, 0, "alice cannot write through her own mount: {err}");
    assert!(Command::new("umount").arg(&mp).status().unwrap().success());
    drop(mounted);
    assert!(!is_mounted(&mp));
    in_vault(ALICE, vp, &["derive", "mine", "--name", "mine", "--version", "1"]).ok();
    let cat = in_vault(BOB, vp, &["cat", "derived/mine@1", "a.txt"]).ok();
    assert_eq!(cat.stdout, b"alpha 1\nmore\n");
    assert_shared_modes(vp, gid_of_group(GROUP));
    TestVault::at(vp).verify_read_data();
}
