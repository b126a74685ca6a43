//! Real tools through `work/<workspace>/` of a real mount: `cp -r`, `tar x`, `rsync` (also
//! over base files, with `--delete`), SQLite in WAL and rollback-journal mode and a Python
//! script writing, appending, seeking and mmap-reading files. Each result is compared with
//! the same tool run on a local folder; the upper layer holds only what changed; the base
//! stays byte-identical (`verify --read-data`, export). A derive of the workspace exports to
//! exactly what the mount shows, over one base or several (a later base replacing a folder
//! with a file hides what earlier bases have under it). gc while a workspace is mounted does
//! not break reads.
//!
//! Needs root and /dev/fuse (skipped otherwise, failed under CI). Mounts are owned by a
//! guard that unmounts them even when a test fails.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mounted::{self, can_mount, mount_vault, mount_vault_with, with_and_without_passthrough};
use common::*;

/// A base: folders, a multi-chunk file, small files, a symlink.
fn make_base(dir: &Path) {
    write_file(dir, "images/a.bin", &random_bytes(1, 3 << 20));
    for i in 0..30 {
        write_file(
            dir,
            format!("images/small_{i:02}.bin"),
            &random_bytes(100 + i, 2000 + i as usize * 97),
        );
    }
    write_file(dir, "labels/train.csv", &text_rows(7, 2000));
    write_file_mode(dir, "labels/readonly.txt", b"do not touch\n", 0o444);
    write_file(dir, "README", b"a base dataset\n");
    symlink(dir, "labels/latest", "train.csv");
}

/// A vault with `make_base` ingested as gold/photos@v1 and a workspace `w` over it; returns
/// the vault and the base folder.
fn workspace_over_base() -> (TestVault, PathBuf) {
    let v = TestVault::new();
    let base = v.dir.parent().unwrap().join("base");
    make_base(&base);
    v.ingest_ok(&base, "photos", "v1", &[]);
    v.run(["workspace", "new", "w", "--base", "gold/photos@v1"]).ok();
    (v, base)
}

/// Run a command; panic with its output if it fails.
#[track_caller]
fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Python script: creates, appends, seeks and overwrites, mmap-reads, os.replace, and
/// two SQLite databases (WAL and rollback journal). Prints "ok" when its own checks pass.
const PY_SCRIPT: &str = r#"
import mmap, os, sqlite3, sys
root = sys.argv[1]
os.makedirs(os.path.join(root, "py/out"), exist_ok=True)
p = os.path.join(root, "py/out/data.bin")
with open(p, "wb") as f:
    for i in range(200):
        f.write(bytes([i % 256]) * 4096)
with open(p, "ab") as f:
    f.write(b"tail")
with open(p, "r+b") as f:
    f.seek(10000)
    f.write(b"middle")
    f.flush()
    os.fsync(f.fileno())
with open(p, "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    assert m[10000:10006] == b"middle" and m[-4:] == b"tail", "mmap read"
    m.close()
tmp = os.path.join(root, "py/out/.report.tmp")
with open(tmp, "w") as f:
    f.write("report\n")
os.replace(tmp, os.path.join(root, "py/out/report.txt"))
with open(os.path.join(root, "README"), "a") as f:
    f.write("appended by python\n")
for mode in ("wal", "delete"):
    db = sqlite3.connect(os.path.join(root, f"py/{mode}.db"))
    db.execute(f"pragma journal_mode={mode}")
    db.execute("create table t (id integer primary key, v text)")
    for chunk in range(10):
        with db:
            db.executemany("insert into t (v) values (?)", [(f"row {chunk}-{i}" * 3,) for i in range(500)])
    with db:
        db.execute("delete from t where id % 3 = 0")
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert db.execute("select count(*) from t").fetchone()[0] == 5000 - 5000 // 3
    db.close()
print("ok")
"#;

/// Run the real tools on `root` (the mount's workspace or a local copy of the base).
fn run_tools(root: &Path, src: &Path, archive: &Path, changed: &Path) {
    sh(Command::new("cp")
        .arg("-r")
        .arg(root.join("labels"))
        .arg(root.join("labels-copy")));
    fs::create_dir(root.join("untar")).unwrap();
    sh(Command::new("tar")
        .arg("xf")
        .arg(archive)
        .arg("-C")
        .arg(root.join("untar")));
    if which("rsync") {
        sh(Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", src.display()))
            .arg(root.join("synced")));
        // Over base files: rewrites some through temporary files and renames, deletes others.
        sh(Command::new("rsync")
            .args(["-a", "--delete"])
            .arg(format!("{}/", changed.display()))
            .arg(root.join("images")));
    }
    let out = sh(Command::new("python3").arg("-c").arg(PY_SCRIPT).arg(root));
    assert_eq!(out.trim(), "ok");
}

fn which(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    common::require::needs(found, &format!("{tool} (scripts/test.sh installs it)"))
}

#[test]
fn real_tools_write_through_the_overlay_and_the_base_stays_intact() {
    if !can_mount() || !which("python3") {
        return;
    }
    with_and_without_passthrough(real_tools_through_a_mount);
}

fn real_tools_through_a_mount(env: &[(&str, &str)]) {
    let (v, base) = workspace_over_base();
    let tmp = v.dir.parent().unwrap().to_path_buf();

    // Inputs of the tools: an archive, and a changed copy of images/ (1 of 31 files
    // rewritten, 2 deleted, 1 added).
    let archive = tmp.join("a.tar");
    sh(Command::new("tar")
        .arg("cf")
        .arg(&archive)
        .arg("-C")
        .arg(&base)
        .arg("."));
    let changed = tmp.join("changed");
    sh(Command::new("cp").arg("-a").arg(base.join("images")).arg(&changed));
    fs::write(changed.join("small_03.bin"), random_bytes(999, 5000)).unwrap();
    fs::remove_file(changed.join("small_10.bin")).unwrap();
    fs::remove_file(changed.join("small_11.bin")).unwrap();
    fs::write(changed.join("new.bin"), random_bytes(998, 100)).unwrap();

    let local = tmp.join("local");
    v.export_ok("gold/photos@v1", &local);
    run_tools(&local, &base, &archive, &changed);

    let mp = tmp.join("mp");
    let m = mount_vault_with(&v, &mp, env);
    let work = mp.join("work/w");
    run_tools(&work, &base, &archive, &changed);
    assert_same_content(&local, &work, "");

    // Only what changed is in the upper layer: untouched base files were not copied.
    let upper = v.dir.join("workspaces/w/upper");
    assert!(
        !upper.join("images/a.bin").exists(),
        "an untouched base file was copied up"
    );
    assert!(!upper.join("labels/train.csv").exists());
    assert!(upper.join("README").exists() && upper.join("py/wal.db").exists());
    assert_eq!(
        fs::read(upper.join("images/small_03.bin")).unwrap(),
        random_bytes(999, 5000)
    );

    // Derive while mounted: the derived dataset is exactly what the mount shows.
    let d = v
        .run([
            "--json",
            "derive",
            "w",
            "--name",
            "photos-tools",
            "--version",
            "v1",
            "--command",
            "tools",
        ])
        .ok()
        .json();
    assert!(num(&d, "files_referenced") > 0, "{d}");
    let exported = tmp.join("derived-export");
    v.export_ok("derived/photos-tools@v1", &exported);
    assert_same_content(&work, &exported, "");
    assert_eq!(m.unmount(), Some(0));

    // The base is byte-identical.
    v.verify_read_data();
    let again = tmp.join("base-export");
    v.export_ok("gold/photos@v1", &again);
    assert_same_tree(&base, &again);
}

#[test]
fn deletes_leave_whiteouts_and_a_recreated_folder_is_opaque() {
    if !can_mount() {
        return;
    }
    let (v, base) = workspace_over_base();
    let tmp = v.dir.parent().unwrap().to_path_buf();
    let m = mount_vault(&v, &tmp.join("mp"));
    let work = m.mp.join("work/w");
    sh(Command::new("rm").arg("-r").arg(work.join("labels")));
    assert!(!work.join("labels").exists());
    fs::create_dir(work.join("labels")).unwrap();
    assert_eq!(
        fs::read_dir(work.join("labels")).unwrap().count(),
        0,
        "base files show through"
    );
    fs::write(work.join("labels/new.csv"), b"x\n").unwrap();
    fs::remove_file(work.join("README")).unwrap();
    fs::write(work.join("README"), b"again\n").unwrap();
    // A file deleted while open stays readable through its descriptor.
    let kept = fs::File::open(work.join("images/small_00.bin")).unwrap();
    fs::remove_file(work.join("images/small_00.bin")).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut &kept, &mut bytes).unwrap();
    assert_eq!(bytes, fs::read(base.join("images/small_00.bin")).unwrap());
    // Renaming a base folder answers EXDEV; a folder made in the workspace renames.
    let err = fs::rename(work.join("images"), work.join("pics")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
    fs::rename(work.join("labels"), work.join("labels2")).unwrap();
    assert_eq!(fs::read(work.join("labels2/new.csv")).unwrap(), b"x\n");
    // Gold stays read-only in the same mount.
    let gold_file = m.mp.join("gold/photos/v1/README");
    assert_eq!(
        fs::OpenOptions::new()
            .write(true)
            .open(&gold_file)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    assert_eq!(
        fs::set_permissions(&gold_file, fs::Permissions::from_mode(0o777))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
    drop(kept);
    // fsync of workspace folders (an upper one, one only in the base, the workspace root)
    // reaches the mount and succeeds; it is what makes whiteouts durable before an unmount.
    for dir in [work.join("labels2"), work.join("images"), work.clone()] {
        fs::File::open(&dir).unwrap().sync_all().unwrap();
    }
    let catalog = v.catalog();
    let whiteouts: Vec<String> = catalog
        .prepare("SELECT CAST(path AS TEXT) FROM whiteouts ORDER BY path")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for expected in ["README", "images/small_00.bin", "labels", "labels/train.csv"] {
        assert!(
            whiteouts.iter().any(|w| w == expected),
            "no whiteout for {expected}: {whiteouts:?}"
        );
    }
    assert_eq!(m.unmount(), Some(0));
    v.verify_read_data();
}

#[test]
fn several_bases_merge_in_the_mount_as_derive_seals_them() {
    if !can_mount() {
        return;
    }
    let v = TestVault::new();
    let tmp = v.dir.parent().unwrap().to_path_buf();
    // a's x/ is replaced by b's file x, which c's folder x/ replaces in turn: nothing of a
    // under x/ shows, c's x/w does. b also turns a's file f into a folder and overrides o.
    type Files = &'static [(&'static str, &'static [u8])];
    let layers: [(&str, Files); 3] = [
        (
            "a",
            &[
                ("x/y/z", b"a z\n"),
                ("x/keep", b"a keep\n"),
                ("f", b"a file\n"),
                ("o", b"a\n"),
            ],
        ),
        ("b", &[("x", b"b file x\n"), ("f/inner", b"b inner\n"), ("o", b"b\n")]),
        ("c", &[("x/w", b"c w\n")]),
    ];
    for (name, files) in layers {
        for (path, bytes) in files {
            write_file(&tmp.join(name), path, bytes);
        }
        v.ingest_ok(&tmp.join(name), name, "v1", &[]);
    }
    let bases = ["--base", "a@v1", "--base", "b@v1", "--base", "c@v1"];
    v.run(["workspace", "new", "w"].into_iter().chain(bases)).ok();
    let m = mount_vault(&v, &tmp.join("mp"));
    let work = m.mp.join("work/w");
    let mut listed: Vec<String> = walk_names(&work);
    listed.sort();
    assert_eq!(listed, ["f", "f/inner", "o", "x", "x/w"]);
    assert_eq!(fs::read(work.join("o")).unwrap(), b"b\n");
    assert!(fs::symlink_metadata(work.join("x/keep")).is_err());
    v.run(["derive", "w", "--name", "merged", "--version", "v1"]).ok();
    let exported = tmp.join("exported");
    v.export_ok("derived/merged@v1", &exported);
    assert_same_content(&exported, &work, "");
    assert_eq!(m.unmount(), Some(0));
    v.verify_read_data();
}

/// Paths under `root`, relative, folders included.
fn walk_names(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn gc_while_a_workspace_is_mounted_does_not_break_reads() {
    if !can_mount() {
        return;
    }
    let v = TestVault::new();
    let tmp = v.dir.parent().unwrap().to_path_buf();
    // gold/mix holds the base's files and others in the same packs; removing it makes those
    // packs partly dead, so gc repacks the chunks the workspace's base still uses.
    let base = tmp.join("base");
    make_base(&base);
    let mix = tmp.join("mix");
    sh(Command::new("cp").arg("-a").arg(&base).arg(&mix));
    write_file(&mix, "extra/other.bin", &random_bytes(77, 4 << 20));
    v.ingest_ok(&mix, "mix", "v1", &[]);
    v.ingest_ok(&base, "photos", "v1", &[]);
    v.run(["workspace", "new", "w", "--base", "gold/photos@v1"]).ok();
    let m = mount_vault(&v, &tmp.join("mp"));
    let work = m.mp.join("work/w");
    fs::write(work.join("images/small_01.bin"), b"rewritten").unwrap();
    fs::remove_file(work.join("images/small_02.bin")).unwrap();
    v.run(["rm", "gold/mix@v1", "--force-gold", "--yes-i-mean-it=gold/mix@v1"])
        .ok();
    let gc = v.run(["--json", "gc", "--grace-minutes", "0"]).ok().json();
    assert!(
        num(&gc, "packs_repacked") + num(&gc, "packs_removed") > 0,
        "gc did nothing: {gc}"
    );
    // Every file reads back right through work/ and gold/ after the repack.
    for rel in ["images/a.bin", "labels/train.csv", "images/small_05.bin"] {
        assert_eq!(
            fs::read(work.join(rel)).unwrap(),
            fs::read(base.join(rel)).unwrap(),
            "{rel}"
        );
        let gold = m.mp.join("gold/photos/v1").join(rel);
        assert_eq!(fs::read(gold).unwrap(), fs::read(base.join(rel)).unwrap(), "{rel}");
    }
    assert_eq!(fs::read(work.join("images/small_01.bin")).unwrap(), b"rewritten");
    assert!(!work.join("images/small_02.bin").exists());
    assert_eq!(m.unmount(), Some(0));
    v.verify_read_data();
}

/// Linux at least `major.minor` (from `uname -r`)?
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// Upper files are opened in FUSE passthrough mode: a write through a shared mmap of a
/// workspace file is in the upper file at once (the mapping is the upper file's own pages;
/// through the FUSE page cache it would wait for msync or writeback). A base file kept open
/// for reading while another open copies it up and writes it does not make any open fail
/// (the kernel refuses, with EIO, a passthrough open beside a cached one), and once it is
/// closed new opens are passed through again.
#[test]
fn upper_files_are_passed_through_and_mixed_opens_work() {
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    if !can_mount() {
        return;
    }
    let (v, base) = workspace_over_base();
    let tmp = v.dir.parent().unwrap().to_path_buf();
    let m = mount_vault(&v, &tmp.join("mp"));
    let work = m.mp.join("work/w");
    let upper = v.dir.join("workspaces/w/upper");
    let mut want = fs::read(base.join("labels/train.csv")).unwrap();

    // A reader of the base file (cached mode) stays open across the copy-up.
    let csv = work.join("labels/train.csv");
    let mut reader = fs::File::open(&csv).unwrap();
    let mut head = vec![0u8; 100];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(head, want[..100]);
    let mut writer = fs::OpenOptions::new().append(true).open(&csv).unwrap();
    writer.write_all(b"appended\n").unwrap();
    want.extend_from_slice(b"appended\n");
    assert_eq!(fs::read(&csv).unwrap(), want, "read beside a base reader");
    drop(writer);
    drop(reader);
    // All closed: these opens are passed through, and see what the earlier ones wrote.
    let rw = fs::OpenOptions::new().read(true).write(true).open(&csv).unwrap();
    rw.write_all_at(b"X", 0).unwrap();
    want[0] = b'X';
    assert_eq!(fs::read(&csv).unwrap(), want);
    assert_eq!(fs::read(upper.join("labels/train.csv")).unwrap(), want);
    drop(rw);

    // A new file written through a shared mapping.
    let path = work.join("mapped.bin");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(8192).unwrap();
    // SAFETY: a shared mapping of 8192 bytes of a file that long, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    // SAFETY: within the mapping.
    unsafe { std::ptr::copy_nonoverlapping(b"MAPPED".as_ptr(), (map as *mut u8).add(4096), 6) };
    let in_upper = fs::read(upper.join("mapped.bin")).unwrap();
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(map, 8192) };
    drop(f);
    if kernel_at_least(6, 9) {
        assert_eq!(&in_upper[4096..4102], b"MAPPED", "the mapping is not the upper file's");
    }
    let through = fs::read(&path).unwrap();
    assert_eq!(through.len(), 8192);
    assert_eq!(&through[4096..4102], b"MAPPED");
    assert_eq!(m.unmount(), Some(0));
    assert_eq!(fs::read(upper.join("mapped.bin")).unwrap(), through);
    v.verify_read_data();
}

/// Two writable mounts of one vault: the first to change workspace `w` holds it until it is
/// unmounted; the other reads it but its changes answer EBUSY, and `run` on `w` refuses to
/// start, naming the holder. Once the first mount is gone, the other can write; once that one
/// is killed (SIGKILL), `run` can.
#[test]
fn one_workspace_is_changed_through_one_mount_at_a_time() {
    if !can_mount() {
        return;
    }
    let (v, base) = workspace_over_base();
    let tmp = v.dir.parent().unwrap().to_path_buf();
    let first = mount_vault(&v, &tmp.join("mp1"));
    let mut second = mount_vault(&v, &tmp.join("mp2"));
    let (w1, w2) = (first.mp.join("work/w"), second.mp.join("work/w"));

    fs::write(w1.join("new.txt"), b"from the first mount\n").unwrap();
    let busy = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(busy(fs::write(w2.join("other.txt"), b"x")), Some(libc::EBUSY));
    assert_eq!(busy(fs::remove_file(w2.join("README"))), Some(libc::EBUSY));
    assert_eq!(busy(fs::create_dir(w2.join("dir"))), Some(libc::EBUSY));
    assert_eq!(
        fs::read(w2.join("README")).unwrap(),
        fs::read(base.join("README")).unwrap()
    );
    v.run(["run", "--workspace", "w", "--", "true"])
        .code_is(1)
        .mentions(&["workspace w is being changed by another process", "pid "]);
    v.run(["workspace", "rm", "w"])
        .code_is(1)
        .mentions(&["workspace w is being changed by another process"]);
    assert!(v.dir.join("workspaces/w/upper/new.txt").exists());

    assert_eq!(first.unmount(), Some(0));
    fs::write(w2.join("other.txt"), b"now mine\n").unwrap();
    assert_eq!(fs::read(w2.join("new.txt")).unwrap(), b"from the first mount\n");
    // A writer killed with SIGKILL lets go of the workspace: the kernel drops its lock.
    second.signal(libc::SIGKILL);
    second.wait(std::time::Duration::from_secs(10));
    drop(second); // detaches the dead mount
    v.run_in_workspace("w", r#"echo ran > "$DSVAULT_WORKSPACE/after-kill.txt""#)
        .ok();
    assert_eq!(
        fs::read(v.dir.join("workspaces/w/upper/after-kill.txt")).unwrap(),
        b"ran\n"
    );
    assert_eq!(
        fs::read(v.dir.join("workspaces/w/upper/other.txt")).unwrap(),
        b"now mine\n"
    );
    v.verify();
}

/// Hard links inside a workspace: `ln` of a base file (copied up first) and of a new file,
/// writes through one name seen through the other, `cp -al` of a base folder, and a derive
/// that holds both names. A dataset file cannot be linked into a workspace (EXDEV), nor a
/// folder (EPERM).
///
/// Also without FUSE passthrough (kernels before 6.9, non-root mounts), where each name has a
/// page cache of its own: a name read before a write through the other must not serve the
/// old bytes on its next open.
#[test]
fn hard_links_work_within_a_workspace() {
    if !can_mount() {
        return;
    }
    with_and_without_passthrough(hard_links_through_a_mount);
}

fn hard_links_through_a_mount(env: &[(&str, &str)]) {
    let (v, base) = workspace_over_base();
    let tmp = v.dir.parent().unwrap().to_path_buf();
    let m = mount_vault_with(&v, &tmp.join("mp"), env);
    let work = m.mp.join("work/w");
    let train = fs::read(base.join("labels/train.csv")).unwrap();

    fs::hard_link(work.join("labels/train.csv"), work.join("train-link.csv")).unwrap();
    // One inode with two names, as on a local disk (the base file was copied up first).
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        fs::symlink_metadata(work.join("labels/train.csv")).unwrap(),
        fs::symlink_metadata(work.join("train-link.csv")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "{env:?}");
    assert!(fs::read(work.join("train-link.csv")).unwrap() == train);
    assert!(fs::read(work.join("labels/train.csv")).unwrap() == train, "{env:?}");
    let mut appended = fs::OpenOptions::new()
        .append(true)
        .open(work.join("train-link.csv"))
        .unwrap();
    std::io::Write::write_all(&mut appended, b"one more row\n").unwrap();
    drop(appended);
    let mut longer = train.clone();
    longer.extend_from_slice(b"one more row\n");
    assert!(
        fs::read(work.join("labels/train.csv")).unwrap() == longer,
        "the other name serves old bytes {env:?}"
    );
    // The same size, new bytes: no size change for the kernel to notice.
    let changed = fs::OpenOptions::new()
        .write(true)
        .open(work.join("train-link.csv"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&changed, b"CHANGED", 0).unwrap();
    drop(changed);
    longer[..7].copy_from_slice(b"CHANGED");
    assert!(
        fs::read(work.join("labels/train.csv")).unwrap() == longer,
        "the other name serves old bytes {env:?}"
    );

    fs::write(work.join("new.txt"), b"fresh\n").unwrap();
    fs::hard_link(work.join("new.txt"), work.join("labels/new-link.txt")).unwrap();
    fs::remove_file(work.join("new.txt")).unwrap();
    assert_eq!(fs::read(work.join("labels/new-link.txt")).unwrap(), b"fresh\n");
    assert_eq!(fs::metadata(work.join("labels/new-link.txt")).unwrap().nlink(), 1);

    // A file replaced by a rename while open still answers fstat, with no links left.
    fs::write(work.join("old.txt"), b"old bytes\n").unwrap();
    fs::write(work.join("replacement.txt"), b"new\n").unwrap();
    let held = fs::File::open(work.join("old.txt")).unwrap();
    fs::rename(work.join("replacement.txt"), work.join("old.txt")).unwrap();
    let meta = held.metadata().unwrap();
    assert_eq!((meta.len(), meta.nlink()), (10, 0), "{env:?}");
    drop(held);

    sh(Command::new("cp")
        .arg("-al")
        .arg(work.join("images"))
        .arg(work.join("images-linked")));
    assert_eq!(
        fs::read(work.join("images-linked/a.bin")).unwrap(),
        fs::read(base.join("images/a.bin")).unwrap()
    );

    let err = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(
        err(fs::hard_link(
            m.mp.join("gold/photos/v1/README"),
            work.join("README-gold")
        )),
        Some(libc::EXDEV)
    );
    assert_eq!(
        err(fs::hard_link(work.join("images"), work.join("images-dir-link"))),
        Some(libc::EPERM)
    );

    v.run(["derive", "w", "--name", "linked", "--version", "v1"]).ok();
    let exported = tmp.join("linked-export");
    v.export_ok("derived/linked@v1", &exported);
    assert_same_content(&work, &exported, "");
    assert!(fs::read(exported.join("train-link.csv")).unwrap() == longer);
    assert_eq!(m.unmount(), Some(0));
    v.verify_read_data();
    let again = tmp.join("base-export");
    v.export_ok("gold/photos@v1", &again);
    assert_same_tree(&base, &again);
}

/// The permission bits of `path` (not following a symlink).
fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every file and folder of the modes test's source, relative.
const MODE_PATHS: [&str; 8] = [
    "scripts",
    "scripts/prepare.sh",
    "data",
    "data/table.csv",
    "private",
    "private/key",
    "shared",
    "shared/group.txt",
];

/// `./prepare.sh` run in folder `dir`; returns what it printed.
fn run_prepare(dir: &Path) -> String {
    sh(Command::new("./prepare.sh").arg("now").current_dir(dir))
}

/// Gold and derived datasets are served with their recorded modes minus the write bits, in
/// a single-dataset mount and in a whole-vault mount: a script runs from the mount. A base
/// file seen through a workspace keeps its recorded mode until it is changed; a derive
/// records the change; export restores the recorded modes.
#[test]
fn datasets_keep_their_recorded_modes_in_every_mount() {
    if !can_mount() {
        return;
    }
    let v = TestVault::new();
    let tmp = v.dir.parent().unwrap().to_path_buf();
    let src = tmp.join("tools");
    write_file_mode(&src, "scripts/prepare.sh", b"#!/bin/sh\necho prepared \"$1\"\n", 0o755);
    write_file_mode(&src, "data/table.csv", b"a,b\n1,2\n", 0o644);
    write_file_mode(&src, "private/key", b"secret\n", 0o600);
    write_file_mode(&src, "shared/group.txt", b"team\n", 0o640);
    chmod(&src.join("private"), 0o700);
    chmod(&src.join("shared"), 0o750);
    v.ingest_ok(&src, "tools", "v1", &[]);
    v.run(["workspace", "new", "w", "--base", "gold/tools@v1"]).ok();
    let served = |rel: &str| mode_of(&src.join(rel)) & 0o555;

    let one = tmp.join("one");
    fs::create_dir_all(&one).unwrap();
    let mut cmd = v.cmd();
    cmd.args(["mount", "gold/tools@v1"]).arg(&one);
    let m = mounted::spawn_mount(cmd, &one, false);
    for rel in MODE_PATHS {
        assert_eq!(mode_of(&one.join(rel)), served(rel), "{rel} in a single-dataset mount");
    }
    assert_eq!(mode_of(&one.join("scripts/prepare.sh")), 0o555);
    assert_eq!(mode_of(&one.join("data/table.csv")), 0o444);
    assert_eq!(run_prepare(&one.join("scripts")), "prepared now\n");
    assert_eq!(m.unmount(), Some(0));

    let m = mount_vault(&v, &tmp.join("all"));
    let gold = m.mp.join("gold/tools/v1");
    let work = m.mp.join("work/w");
    for rel in MODE_PATHS {
        assert_eq!(mode_of(&gold.join(rel)), served(rel), "{rel} in gold/");
        assert_eq!(mode_of(&work.join(rel)), mode_of(&src.join(rel)), "{rel} in work/w/");
    }
    assert_eq!(run_prepare(&gold.join("scripts")), "prepared now\n");
    assert_eq!(run_prepare(&work.join("scripts")), "prepared now\n");
    chmod(&work.join("scripts/prepare.sh"), 0o700);
    chmod(&work.join("data/table.csv"), 0o600);
    assert_eq!(mode_of(&work.join("scripts/prepare.sh")), 0o700);
    assert_eq!(mode_of(&gold.join("scripts/prepare.sh")), 0o555, "gold is unchanged");
    assert_eq!(m.unmount(), Some(0));

    v.run(["derive", "w", "--name", "tools-mod", "--version", "v1"]).ok();
    let changed = |rel: &str| match rel {
        "scripts/prepare.sh" => 0o700,
        "data/table.csv" => 0o600,
        _ => mode_of(&src.join(rel)),
    };
    let m = mount_vault(&v, &tmp.join("all"));
    let derived = m.mp.join("derived/tools-mod/v1");
    for rel in MODE_PATHS {
        assert_eq!(mode_of(&derived.join(rel)), changed(rel) & 0o555, "{rel} in derived/");
    }
    assert_eq!(run_prepare(&derived.join("scripts")), "prepared now\n");
    assert_eq!(m.unmount(), Some(0));

    let (gold_out, derived_out) = (tmp.join("gold-out"), tmp.join("derived-out"));
    v.export_ok("gold/tools@v1", &gold_out);
    v.export_ok("derived/tools-mod@v1", &derived_out);
    for rel in MODE_PATHS {
        assert_eq!(mode_of(&gold_out.join(rel)), mode_of(&src.join(rel)), "exported {rel}");
        assert_eq!(mode_of(&derived_out.join(rel)), changed(rel), "exported derived {rel}");
    }
    v.verify();
}
