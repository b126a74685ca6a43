//! Bad input: each case gets a clear message and exit code, nothing is sealed that should not
//! be, and the vault still verifies afterwards.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

#[test]
fn missing_source_or_a_file_as_source_is_refused() {
    let vault = TestVault::new();
    let tmp = tempdir();
    let missing = tmp.path().join("no-such-folder");
    vault
        .ingest(&missing, "ds", "v1", &[])
        .code_is(1)
        .mentions(&["no-such-folder", "does not exist"]);

    let file = write_file(tmp.path(), "just-a-file.bin", b"data");
    vault
        .ingest(&file, "ds", "v1", &[])
        .code_is(1)
        .mentions(&["just-a-file.bin", "not a folder"]);

    // A bad source leaves no new, empty vault behind; with a vault, nothing is added to it.
    assert!(
        !vault.dir.join("vault.toml").exists(),
        "a failed ingest created a vault"
    );
    vault.run(["init"]).code_is(0);
    vault.ingest(&missing, "ds", "v1", &[]).code_is(1);
    assert!(vault.datasets().is_empty());
    vault.verify();
}

/// `cmd` run as the unprivileged user `nobody` (uid/gid 65534) through `setpriv`: the tests
/// run as root, and root reads a mode-000 file regardless (CAP_DAC_OVERRIDE), so the only
/// reliable way to get a real EACCES is to drop root for the ingest.
fn as_nobody(cmd: &Command) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

fn setpriv_works() -> bool {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn unreadable_file_or_folder_is_a_clear_error_and_seals_nothing() {
    if !common::require::needs(setpriv_works(), "`setpriv` able to drop to uid 65534 (root)") {
        return;
    }
    let tmp = tempdir();
    chmod(tmp.path(), 0o755);
    let nobody = |p: &Path| std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    let src = tmp.path().join("src");
    write_file(&src, "a/readable.bin", &random_bytes(1, 200 * 1024));
    write_file(&src, "b/also.txt", b"readable\n");
    let secret = write_file_mode(&src, "a/secret.bin", b"you cannot read me\n", 0o000);
    let vault_dir = tmp.path().join("vault");
    fs::create_dir(&vault_dir).unwrap();
    nobody(&vault_dir);
    let vault = TestVault::at(&vault_dir);
    let run = |cmd: Command| run_cmd(as_nobody(&cmd));

    // An unreadable file.
    run(vault.ingest_cmd(&src, "perm", "v1", &["--json"]))
        .code_is(1)
        .mentions(&["cannot read", "a/secret.bin", "Permission denied", "nothing was sealed"]);
    let mut ls = vault.cmd();
    ls.args(["--json", "ls"]);
    assert!(run(ls).ok().stdout.is_empty(), "a dataset became visible");
    let mut verify = vault.cmd();
    verify.args(["verify", "--read-data"]);
    run(verify).ok();

    // An unreadable folder.
    chmod(&secret, 0o644);
    let closed = src.join("b");
    chmod(&closed, 0o000);
    run(vault.ingest_cmd(&src, "perm", "v1", &["--json"]))
        .code_is(1)
        .mentions(&["cannot read", "src/b", "nothing was sealed"]);
    chmod(&closed, 0o755);

    // Fixed: the same ingest now succeeds, and every byte comes back.
    let r = run(vault.ingest_cmd(&src, "perm", "v1", &["--json"])).ok().json();
    assert_eq!(num(&r, "files"), 3);
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    nobody(&out);
    let mut export = vault.cmd();
    export.args(["export", "perm@v1"]).arg(&out);
    run(export).ok();
    assert_same_tree(&src, &out);
    let mut verify = vault.cmd();
    verify.args(["verify", "--read-data"]);
    run(verify).ok();
}

#[test]
fn special_files_are_skipped_with_a_warning() {
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file(&src, "data/a.bin", &random_bytes(5, 50_000));
    write_file(&src, "data/b.txt", b"b\n");
    mkfifo(&src.join("data/pipe"));
    let _listener = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    // A character device (like /dev/null) when this container allows mknod.
    let dev = src.join("null-device");
    let c = std::ffi::CString::new(dev.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let have_device = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) } == 0;
    if !have_device {
        eprintln!("NOTICE: mknod is not allowed here; testing FIFO and socket only");
    }

    let r = vault.ingest_ok(&src, "special", "v1", &[]);
    assert_eq!(num(&r, "files"), 2);
    let mut skipped: Vec<(String, String)> = r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (string(s, "path"), string(s, "reason")))
        .collect();
    skipped.sort();
    let mut want = vec![
        (src.join("data/pipe").display().to_string(), "fifo".to_string()),
        (src.join("sock").display().to_string(), "socket".to_string()),
    ];
    if have_device {
        want.push((dev.display().to_string(), "character device".to_string()));
    }
    want.sort();
    assert_eq!(skipped, want);

    // Without --json the skips are warnings on stderr, and the ingest still succeeds.
    let text = run_cmd(vault.ingest_cmd(&src, "special", "v2", &[])).ok();
    text.mentions(&["warning", "data/pipe", "fifo", "sock", "socket"]);

    let out = tmp.path().join("out");
    vault.export_ok("special@v1", &out);
    assert_same_tree(&src, &out);
    vault.verify_read_data();
}

#[test]
fn symlinks_leaving_the_tree_are_refused_unless_allowed() {
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file(tmp.path(), "outside.txt", b"not part of the dataset\n");
    write_file(&src, "data/inside.txt", b"inside\n");
    symlink(&src, "data/fine", "inside.txt");
    symlink(&src, "data/escape", "../../outside.txt");

    vault.ingest(&src, "links", "v1", &[]).code_is(1).mentions(&[
        "data/escape",
        "../../outside.txt",
        "--allow-external-symlinks",
    ]);
    assert!(vault.datasets().is_empty());
    vault.verify();

    // An absolute target leaves the tree too.
    fs::remove_file(src.join("data/escape")).unwrap();
    symlink(&src, "abs", "/etc/passwd");
    vault
        .ingest(&src, "links", "v1", &[])
        .code_is(1)
        .mentions(&["abs", "/etc/passwd", "--allow-external-symlinks"]);
    assert!(vault.datasets().is_empty());

    // Allowed: stored as symlinks (never followed), exported with the same targets.
    symlink(&src, "data/escape", "../../outside.txt");
    let r = vault.ingest_ok(&src, "links", "v1", &["--allow-external-symlinks"]);
    assert_eq!(num(&r, "symlinks"), 3);
    assert_eq!(num(&r, "files"), 1);
    let out = tmp.path().join("out");
    vault.export_ok("links@v1", &out);
    assert_same_tree(&src, &out);
    assert_eq!(fs::read_link(out.join("abs")).unwrap(), Path::new("/etc/passwd"));
    vault.verify();
}

#[test]
fn bad_dataset_names_and_versions_are_refused() {
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file(&src, "f.txt", b"f\n");
    vault.ingest_ok(&src, "good", "v1", &[]);

    let long = "x".repeat(129);
    let bad = [
        "a/b",
        "/abs",
        "a@b",
        "@",
        "..",
        "a..b",
        "../up",
        ".hidden",
        "-dash",
        "",
        " ",
        "sp ace",
        "tab\t",
        "new\nline",
        "ümlaut",
        "semi;colon",
        "back\\slash",
        "star*",
        "ctrl\x07",
        &long,
    ];
    // `--name=VALUE` so that clap takes "-dash" as a value, not a flag.
    let ingest = |name: &str, version: &str| {
        let mut cmd = vault.cmd();
        cmd.arg("ingest")
            .arg(&src)
            .arg(format!("--name={name}"))
            .arg(format!("--version={version}"));
        run_cmd(cmd)
    };
    for b in bad {
        ingest(b, "v1").code_is(2).mentions(&["invalid"]);
        ingest("ok", b).code_is(2).mentions(&["invalid"]);
    }
    // NUL cannot even be passed on a command line (execve takes C strings); the library
    // refuses it for callers that could.
    assert!(Command::new(BIN).arg("a\0b").output().is_err());
    assert!(dsvault::DatasetName::new(dsvault::Kind::Gold, "a\0b", "v1").is_err());
    assert!(dsvault::DatasetName::new(dsvault::Kind::Gold, "a", "v1\0").is_err());

    // Malformed dataset references are usage errors (exit 2).
    for r in [
        "../x@v1",
        "a/b@c",
        "noversion",
        "gold/a/b@v1",
        "x@",
        "@v1",
        "gold/..@v1",
    ] {
        vault.run(["show", r]).code_is(2);
        vault.run(["cat", r, "f.txt"]).code_is(2);
    }
    vault.run(["ls", "../x"]).code_is(2).mentions(&["invalid dataset name"]);

    // Nothing but the good dataset exists, in the catalog or as a ref.
    assert_eq!(vault.datasets(), ["gold/good@v1"]);
    let refs: Vec<_> = fs::read_dir(vault.store_dir().join("refs/gold"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(refs, ["good"]);
    vault.verify();
}

#[test]
fn missing_dataset_or_path_is_a_clear_error() {
    let vault = TestVault::new();
    let tmp = tempdir();
    // No vault yet: say so.
    vault
        .run(["show", "ds@v1"])
        .code_is(1)
        .mentions(&["no vault at", "dsvault init"]);
    let src = tmp.path().join("src");
    write_file(&src, "dir/file.txt", b"content\n");
    vault.ingest_ok(&src, "ds", "v1", &[]);

    vault
        .run(["show", "nope@v1"])
        .code_is(1)
        .mentions(&["no dataset nope@v1", "dsvault ls"]);
    vault.run(["show", "ds@v2"]).code_is(1).mentions(&["no dataset ds@v2"]);
    vault
        .run(["show", "derived/ds@v1"])
        .code_is(1)
        .mentions(&["no dataset"]);
    vault
        .run(["cat", "nope@v1", "dir/file.txt"])
        .code_is(1)
        .mentions(&["no dataset nope@v1"]);
    let out = vault.run(["cat", "ds@v1", "dir/missing.txt"]).code_is(1);
    let out = out.mentions(&["gold/ds@v1 has no dir/missing.txt"]);
    assert!(out.stdout.is_empty());
    vault
        .run(["cat", "ds@v1", "dir"])
        .code_is(1)
        .mentions(&["dir is not a regular file"]);
    let dest = tmp.path().join("dest");
    let mut cmd = vault.cmd();
    cmd.args(["export", "nope@v1"]).arg(&dest);
    run_cmd(cmd).code_is(1).mentions(&["no dataset nope@v1"]);
    assert!(!dest.exists(), "a failed export created its destination");
    assert_eq!(vault.cat("ds@v1", "dir/file.txt"), b"content\n");
    assert_eq!(vault.cat("ds@v1", "/dir/file.txt"), b"content\n");
    vault.verify();
}

#[test]
fn export_refuses_unsafe_destinations() {
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file(&src, "a/file.txt", b"content\n");
    write_file(&src, "file.txt", b"top\n");
    vault.ingest_ok(&src, "ds", "v1", &[]);
    let export = |dest: &Path| {
        let mut cmd = vault.cmd();
        cmd.args(["export", "ds@v1"]).arg(dest);
        run_cmd(cmd)
    };

    // A folder that is not empty: refused, its content untouched.
    let full = tmp.path().join("full");
    write_file(&full, "file.txt", b"mine, keep me\n");
    export(&full).code_is(1).mentions(&["full", "not empty"]);
    assert_eq!(fs::read(full.join("file.txt")).unwrap(), b"mine, keep me\n");
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1);

    // A symlink to an empty folder: refused, nothing written through it.
    let target = tmp.path().join("elsewhere");
    fs::create_dir(&target).unwrap();
    let link = symlink(tmp.path(), "link", &target);
    export(&link).code_is(1).mentions(&["link", "symlink"]);
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);

    // A dangling symlink: refused, its target not created.
    let dangling = symlink(tmp.path(), "dangling", tmp.path().join("would-be-created"));
    export(&dangling).code_is(1).mentions(&["symlink"]);
    assert!(!tmp.path().join("would-be-created").exists());

    // A regular file.
    let file = write_file(tmp.path(), "plain", b"plain\n");
    export(&file).code_is(1).mentions(&["not a folder"]);
    assert_eq!(fs::read(&file).unwrap(), b"plain\n");

    // An existing empty folder is fine.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    export(&empty).ok();
    assert_same_tree(&src, &empty);
    vault.verify();
}

#[test]
fn a_file_changing_during_ingest_is_detected() {
    // A 64 MiB file that another thread appends to (a few bytes every ~100 µs) while the
    // ingest reads it on one worker thread. Reading takes tens of milliseconds, so the size
    // and mtime change under it. If an attempt nonetheless saw no change (the writer was
    // not scheduled), the ingest is right to succeed: check it stored a consistent
    // snapshot and try again.
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file(&src, "steady.txt", b"steady\n");
    let growing = write_file(&src, "grow.bin", &random_bytes(7, 64 * MIB as usize));

    let mut detected = false;
    for attempt in 0..3 {
        let vault = TestVault::new();
        let stop = Arc::new(AtomicBool::new(false));
        let appended = Arc::new(AtomicU64::new(0));
        let writer = {
            let (stop, appended, path) = (stop.clone(), appended.clone(), growing.clone());
            std::thread::spawn(move || {
                let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    f.write_all(b"more").unwrap();
                    appended.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(100));
                }
            })
        };
        while appended.load(Ordering::Relaxed) < 10 {
            std::thread::yield_now();
        }
        let out = vault.ingest(&src, "moving", "v1", &["--threads", "1"]);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        if out.status.success() {
            eprintln!("attempt {attempt}: the ingest saw no change; checking it stored a consistent snapshot");
            let r = out.json();
            let stored = vault.cat("moving@v1", "grow.bin");
            let now = fs::read(&growing).unwrap();
            assert_eq!(stored.len() as u64, num(&r, "bytes") - 7);
            assert_eq!(&now[..stored.len()], &stored[..]);
            continue;
        }
        out.code_is(1)
            .mentions(&["grow.bin", "changed while it was being read", "nothing was sealed"]);
        assert!(vault.datasets().is_empty(), "a dataset became visible");
        vault.verify();

        // Once the file is left alone, the same ingest succeeds and round-trips.
        let r = vault.ingest_ok(&src, "moving", "v1", &[]);
        assert_eq!(num(&r, "files"), 2);
        let out = tmp.path().join(format!("out{attempt}"));
        vault.export_ok("moving@v1", &out);
        assert_same_tree(&src, &out);
        vault.verify_read_data();
        detected = true;
        break;
    }
    assert!(
        detected,
        "three ingests of a file being appended to never noticed the change"
    );
}

#[test]
fn mode_000_file_is_ingested_by_root_with_its_mode_kept() {
    // A source folder that is itself unreadable (mode 000) only matters without root; as
    // root, check that a source with a mode-000 file is read (root may) and its mode kept.
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file_mode(&src, "locked.bin", b"locked\n", 0o000);
    let r = vault.ingest_ok(&src, "locked", "v1", &[]);
    assert_eq!(num(&r, "files"), 1);
    let out = tmp.path().join("out");
    vault.export_ok("locked@v1", &out);
    assert_eq!(
        fs::metadata(out.join("locked.bin")).unwrap().permissions().mode() & 0o777,
        0
    );
    assert_same_tree(&src, &out);
}

/// `init --store` with a store nobody answers at: a clear error naming the store and what
/// to check, and the folder left as it was (no half vault that a later `init` trips over).
#[test]
fn init_with_an_unreachable_store_leaves_no_half_vault() {
    let tmp = tempdir();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // the listener is dropped here: nothing answers on this port
    let init = |dir: &Path| {
        let mut cmd = TestVault::at(dir).cmd();
        cmd.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{closed_port}"))
            .env("AWS_ACCESS_KEY_ID", "key")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_REGION", "us-east-1")
            .args(["init", "--store", "s3://nobody/vault"]);
        run_cmd(cmd)
            .code_is(1)
            .mentions(&["s3://nobody/vault", "reachable", "credentials"])
    };

    let fresh = tmp.path().join("fresh");
    init(&fresh);
    assert!(!fresh.exists(), "a failed init left {}", fresh.display());

    let existing = tmp.path().join("existing");
    write_file(&existing, "notes.txt", b"mine");
    init(&existing);
    let left: Vec<_> = fs::read_dir(&existing)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"], "a failed init changed a folder that existed");
    assert_eq!(fs::read(existing.join("notes.txt")).unwrap(), b"mine");

    // The same folder then takes a local vault.
    TestVault::at(&existing).run(["init"]).ok();
    TestVault::at(&existing).verify();
}

/// A reader that went away (`dsvault stats | head -0`) ends the command normally: exit 0, no
/// panic message. The pipe's read end is closed before the command starts, so every write it
/// makes fails with EPIPE.
#[test]
fn a_closed_stdout_is_a_normal_exit_for_every_text_command() {
    let vault = TestVault::new();
    let src = tempdir();
    write_file(src.path(), "a.txt", b"alpha\n");
    write_file(src.path(), "b/c.txt", b"gamma\n");
    vault.ingest_ok(src.path(), "ds", "v1", &[]);
    for args in [
        &["ls"][..],
        &["show", "ds@v1"],
        &["stats"],
        &["lineage", "ds@v1"],
        &["diff", "ds@v1", "ds@v1"],
        &["cat", "ds@v1", "a.txt"],
        &["verify"],
        &["workspace", "ls"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = vault.cmd();
        cmd.args(args).stdout(writer);
        let out = run_cmd(cmd);
        assert_eq!(out.code(), Some(0), "{args:?} with a closed stdout: {}", out.text());
        assert!(!out.text().contains("panicked"), "{args:?} panicked: {}", out.text());
    }
    vault.verify();
}
