//! Real FUSE mounts through the `dsvault` binary: exact bytes, modes, symlinks, non-UTF-8
//! names, xattrs, EROFS for writes, EIO for damage, container-style binds, signals, new
//! datasets appearing, many readers, huge folders, and no leaked mounts or processes.
//!
//! Needs root and /dev/fuse (a test prints "skipped" and passes without them). Every mount is
//! owned by a [`Mounted`] guard whose `Drop` kills the server and runs `umount -l`, so a
//! failing test leaves nothing mounted.

mod common;

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mounted::{can_mount, is_mounted, spawn_mount, Mounted};
use common::random_bytes;
use rand::{RngCore, SeedableRng};

fn text_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"id,label,score,caption\n"[i % 23]).collect()
}

/// A source tree with multi-chunk files (random and compressible), small and empty files,
/// a symlink, nested folders and a non-UTF-8 name.
fn make_source(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("images/train")).unwrap();
    fs::create_dir_all(dir.join("empty-dir")).unwrap();
    fs::write(dir.join("big.bin"), random_bytes(seed, 5 << 20)).unwrap();
    fs::write(dir.join("table.csv"), text_bytes(3 << 20)).unwrap();
    for i in 0..20 {
        let len = 1000 + (i * 7919) % 60_000;
        fs::write(
            dir.join(format!("images/train/img_{i:03}.bin")),
            random_bytes(seed * 100 + i as u64, len),
        )
        .unwrap();
    }
    fs::write(dir.join("empty.txt"), b"").unwrap();
    let weird = OsString::from_vec(b"caf\xe9-\xff.txt".to_vec());
    fs::write(dir.join("images").join(&weird), b"latin-1 name").unwrap();
    std::os::unix::fs::symlink("images/train/img_000.bin", dir.join("first-image")).unwrap();
}

struct Vault {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
}

impl Vault {
    fn new() -> Vault {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Vault {
            dir: root.join("vault"),
            root,
            _tmp: tmp,
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(common::BIN);
        c.arg("--vault").arg(&self.dir).arg("--quiet");
        c
    }

    /// Ingest `src` as gold/NAME@VERSION; returns the root hash.
    fn ingest(&self, src: &Path, name: &str, version: &str) -> String {
        let out = self
            .cmd()
            .arg("--json")
            .args(["ingest"])
            .arg(src)
            .args(["--name", name, "--version", version])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ingest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["root"].as_str().unwrap().to_string()
    }

    fn mountpoint(&self, name: &str) -> PathBuf {
        let mp = self.root.join(name);
        fs::create_dir_all(&mp).unwrap();
        mp
    }

    /// `dsvault mount [DATASET] MP`, waiting for the "mounted" line.
    fn mount(&self, dataset: Option<&str>, mp: &Path) -> Mounted {
        let mut c = self.cmd();
        c.arg("mount");
        if let Some(d) = dataset {
            c.arg(d);
        }
        c.arg(mp);
        spawn_mount(c, mp, true)
    }
}

/// Every path under `dir` (relative), sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(dir.join(&rel)).unwrap() {
            let e = e.unwrap();
            let p = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

/// The mounted tree equals the source: same paths, bytes, sizes, symlink targets; files
/// and folders with the source's modes minus the write bits; each file's blake3 xattr is its hash and the root xattr the root.
fn assert_same_tree(src: &Path, mounted: &Path, root: &str) {
    assert_eq!(walk(src), walk(mounted), "listings differ");
    for rel in walk(src) {
        let (s, m) = (src.join(&rel), mounted.join(&rel));
        let (sm, mm) = (fs::symlink_metadata(&s).unwrap(), fs::symlink_metadata(&m).unwrap());
        assert_eq!(sm.file_type(), mm.file_type(), "{rel:?}");
        if sm.is_symlink() {
            assert_eq!(fs::read_link(&s).unwrap(), fs::read_link(&m).unwrap());
        } else if sm.is_dir() {
            assert_eq!(
                mm.permissions().mode() & 0o7777,
                sm.permissions().mode() & 0o555,
                "{rel:?}"
            );
        } else {
            assert_eq!(
                mm.permissions().mode() & 0o7777,
                sm.permissions().mode() & 0o555,
                "{rel:?}"
            );
            assert_eq!(sm.len(), mm.len(), "{rel:?}");
            let bytes = fs::read(&s).unwrap();
            assert!(bytes == fs::read(&m).unwrap(), "bytes of {rel:?} differ");
            let hash = blake3::hash(&bytes).to_hex().to_string();
            assert_eq!(getxattr(&m, "user.dsvault.blake3").unwrap(), hash.as_bytes(), "{rel:?}");
            assert_eq!(getxattr(&m, "user.dsvault.root").unwrap(), root.as_bytes());
        }
    }
    assert_eq!(getxattr(mounted, "user.dsvault.root").unwrap(), root.as_bytes());
    assert_eq!(getxattr(mounted, "user.dsvault.nope"), Err(libc::ENODATA));
}

#[test]
fn whole_vault_and_single_dataset_mounts_serve_exact_bytes() {
    if !can_mount() {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    make_source(&src, 1);
    let root = v.ingest(&src, "demo", "v1");

    let mp = v.mountpoint("all");
    let m = v.mount(None, &mp);
    let names: Vec<_> = fs::read_dir(&mp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for top in ["gold", "derived", "work"] {
        assert!(mp.join(top).is_dir());
        assert_eq!(fs::metadata(mp.join(top)).unwrap().permissions().mode() & 0o7777, 0o555);
    }
    assert_eq!(fs::read_dir(mp.join("work")).unwrap().count(), 0);
    assert_same_tree(&src, &mp.join("gold/demo/v1"), &root);
    // Random-offset reads across chunk boundaries.
    let data = fs::read(src.join("big.bin")).unwrap();
    let f = fs::File::open(mp.join("gold/demo/v1/big.bin")).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for _ in 0..200 {
        let off = (rng.next_u64() % data.len() as u64) as usize;
        let len = (rng.next_u64() % (3 << 20)) as usize;
        let end = (off + len).min(data.len());
        let mut buf = vec![0u8; end - off];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf == data[off..end], "pread at {off}+{len}");
    }
    // Inode numbers are stable across lookups.
    use std::os::unix::fs::MetadataExt;
    let a = fs::metadata(mp.join("gold/demo/v1/table.csv")).unwrap().ino();
    assert_eq!(a, fs::metadata(mp.join("gold/demo/v1/table.csv")).unwrap().ino());
    drop(m);
    assert!(!is_mounted(&mp));

    let one = v.mountpoint("one");
    let m = v.mount(Some("gold/demo@v1"), &one);
    assert_same_tree(&src, &one, &root);
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts.lines().find(|l| l.contains(&*one.to_string_lossy())).unwrap();
    for opt in ["ro", "nosuid", "nodev", "default_permissions"] {
        assert!(
            line.split(' ').nth(3).unwrap().split(',').any(|o| o == opt),
            "{opt} missing: {line}"
        );
    }
    drop(m);
    assert!(!is_mounted(&one));
}

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

#[test]
fn every_write_is_refused_with_erofs() {
    if !can_mount() {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    make_source(&src, 2);
    v.ingest(&src, "demo", "v1");
    for (dataset, sub) in [(Some("demo@v1"), ""), (None, "gold/demo/v1")] {
        let mp = v.mountpoint(if dataset.is_some() { "one" } else { "all" });
        let _m = v.mount(dataset, &mp);
        let d = mp.join(sub);
        let file = d.join("table.csv");
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        let checks: Vec<(&str, i32)> = vec![
            (
                "open O_WRONLY",
                errno_of(fs::OpenOptions::new().write(true).open(&file)),
            ),
            (
                "open O_RDWR",
                errno_of(fs::OpenOptions::new().read(true).write(true).open(&file)),
            ),
            (
                "open O_TRUNC",
                errno_of(fs::OpenOptions::new().write(true).truncate(true).open(&file)),
            ),
            ("create", errno_of(fs::File::create(d.join("new.txt")))),
            (
                "create_new",
                errno_of(
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o644)
                        .open(d.join("n2")),
                ),
            ),
            ("unlink", errno_of(fs::remove_file(&file))),
            ("rename", errno_of(fs::rename(&file, d.join("moved.csv")))),
            ("mkdir", errno_of(fs::create_dir(d.join("newdir")))),
            ("rmdir", errno_of(fs::remove_dir(d.join("empty-dir")))),
            (
                "chmod",
                errno_of(fs::set_permissions(&file, fs::Permissions::from_mode(0o644))),
            ),
            ("truncate", {
                // SAFETY: valid C string.
                let r = unsafe { libc::truncate(c(&file).as_ptr(), 0) };
                if r == 0 {
                    0
                } else {
                    std::io::Error::last_os_error().raw_os_error().unwrap()
                }
            }),
            ("setxattr", {
                let n = CString::new("user.x").unwrap();
                // SAFETY: valid C strings and value.
                let r = unsafe { libc::setxattr(c(&file).as_ptr(), n.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
                if r == 0 {
                    0
                } else {
                    std::io::Error::last_os_error().raw_os_error().unwrap()
                }
            }),
            (
                "symlink",
                errno_of(std::os::unix::fs::symlink("table.csv", d.join("ln"))),
            ),
            ("link", errno_of(fs::hard_link(&file, d.join("hard")))),
        ];
        for (op, errno) in checks {
            assert_eq!(errno, libc::EROFS, "{op} in {}: errno {errno}", d.display());
        }
        // Nothing changed.
        assert_eq!(fs::read(&file).unwrap(), fs::read(src.join("table.csv")).unwrap());
        if dataset.is_none() {
            assert_eq!(errno_of(fs::create_dir(mp.join("gold/x"))), libc::EROFS);
            assert_eq!(errno_of(fs::File::create(mp.join("work/out.txt"))), libc::EROFS);
        }
    }
}

/// Offset of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn packs(vault: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(vault.join("store/packs")).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

#[test]
fn a_flipped_pack_byte_gives_eio_on_exactly_the_damaged_file() {
    if !can_mount() {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    fs::create_dir_all(&src).unwrap();
    let damaged = random_bytes(31, 300_000);
    fs::write(src.join("damaged.bin"), &damaged).unwrap();
    fs::write(src.join("fine.bin"), random_bytes(32, 300_000)).unwrap();
    fs::write(src.join("also-fine.txt"), text_bytes(100_000)).unwrap();
    v.ingest(&src, "demo", "v1");
    let needle = &damaged[150_000..150_064];
    let (pack, at) = packs(&v.dir)
        .into_iter()
        .find_map(|p| find(&fs::read(&p).ok()?, needle).map(|at| (p, at)))
        .expect("the damaged file's bytes are stored raw in a pack");
    let mut perms = fs::metadata(&pack).unwrap().permissions();
    perms.set_mode(0o644);
    fs::set_permissions(&pack, perms).unwrap();
    let f = fs::OpenOptions::new().read(true).write(true).open(&pack).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at as u64 + 10).unwrap();
    f.write_all_at(&[b[0] ^ 1], at as u64 + 10).unwrap();
    drop(f);

    let mp = v.mountpoint("mnt");
    let mut m = v.mount(Some("gold/demo@v1"), &mp);
    assert_eq!(errno_of(fs::read(mp.join("damaged.bin"))), libc::EIO);
    assert_eq!(
        errno_of(fs::read(mp.join("damaged.bin"))),
        libc::EIO,
        "damage is not cached away"
    );
    assert_eq!(
        fs::read(mp.join("fine.bin")).unwrap(),
        fs::read(src.join("fine.bin")).unwrap()
    );
    assert_eq!(fs::read(mp.join("also-fine.txt")).unwrap(), text_bytes(100_000));
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait(Duration::from_secs(10)), Some(0));
    let log = m.stderr();
    assert!(
        log.contains("gold/demo@v1") && log.contains("damaged.bin") && log.contains("chunk"),
        "log: {log}"
    );
}

#[test]
fn a_read_only_bind_in_a_fresh_mount_namespace_reads_correctly() {
    let unshare = Command::new("unshare").arg("--version").output().is_ok();
    if !can_mount() || !common::require::needs(unshare, "unshare (util-linux)") {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    make_source(&src, 3);
    v.ingest(&src, "demo", "v1");
    let mp = v.mountpoint("mnt");
    let _m = v.mount(Some("gold/demo@v1"), &mp);
    let target = v.mountpoint("container-data");
    let script = format!(
        "set -e; mount --bind -o ro '{mp}' '{t}'; cmp '{src}/big.bin' '{t}/big.bin'; cmp '{src}/table.csv' '{t}/table.csv'; \
         ls '{t}/images/train' | wc -l; if touch '{t}/x' 2>/dev/null; then exit 9; fi; grep ' {t} ' /proc/mounts",
        mp = mp.display(),
        t = target.display(),
        src = src.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("20\n"), "{stdout}");
    assert!(stdout.contains(" ro,"), "bind is not read-only: {stdout}");
    assert!(!is_mounted(&target), "the bind leaked out of its namespace");
}

#[test]
fn sigterm_and_sigint_exit_zero_with_the_mount_gone() {
    if !can_mount() {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    make_source(&src, 4);
    v.ingest(&src, "demo", "v1");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mp = v.mountpoint("mnt");
        let mut m = v.mount(None, &mp);
        // A file held open keeps the mount busy: the server must still go.
        let held = fs::File::open(mp.join("gold/demo/v1/table.csv")).unwrap();
        m.signal(sig);
        assert_eq!(m.wait(Duration::from_secs(15)), Some(0), "signal {sig}");
        assert!(!is_mounted(&mp), "still mounted after signal {sig}");
        drop(held);
    }
}

#[test]
fn a_stale_mount_point_is_reported_with_the_command_that_clears_it() {
    if !can_mount() {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    make_source(&src, 5);
    v.ingest(&src, "demo", "v1");
    let mp = v.mountpoint("mnt");
    let mut m = v.mount(None, &mp);
    m.signal(libc::SIGKILL);
    m.wait(Duration::from_secs(10));
    assert!(is_mounted(&mp));
    let out = v.cmd().arg("mount").arg(&mp).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stale") && err.contains(&format!("umount -l {}", mp.display())),
        "{err}"
    );
    drop(m);
    assert!(!is_mounted(&mp));

    let out = v.cmd().arg("mount").arg(v.root.join("nope")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = v.cmd().arg("mount").arg(src.join("table.csv")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a folder"));
}

#[test]
fn a_dataset_ingested_while_mounted_appears() {
    if !can_mount() {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    make_source(&src, 6);
    v.ingest(&src, "demo", "v1");
    let mp = v.mountpoint("mnt");
    let _m = v.mount(None, &mp);
    assert!(!mp.join("gold/demo/v2").exists());
    assert!(!mp.join("gold/other").exists());
    fs::write(src.join("added.txt"), b"new in v2").unwrap();
    v.ingest(&src, "demo", "v2");
    v.ingest(&src, "other", "v1");
    let start = Instant::now();
    while !(mp.join("gold/demo/v2").exists() && mp.join("gold/other/v1").exists()) {
        assert!(start.elapsed() < Duration::from_secs(10), "new datasets did not appear");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(fs::read(mp.join("gold/demo/v2/added.txt")).unwrap(), b"new in v2");
    let names: Vec<_> = fs::read_dir(mp.join("gold"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

fn server_processes(vault: &Path) -> usize {
    let needle = vault.as_os_str().as_bytes();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c.windows(needle.len()).any(|w| w == needle) && c.windows(5).any(|w| w == b"mount"))
        .count()
}

#[test]
fn mount_and_unmount_fifty_times_without_leaks() {
    if !can_mount() {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"hello").unwrap();
    v.ingest(&src, "demo", "v1");
    let mp = v.mountpoint("mnt");
    for i in 0..50 {
        let mut m = v.mount(if i % 2 == 0 { Some("demo@v1") } else { None }, &mp);
        let file = if i % 2 == 0 {
            mp.join("a.txt")
        } else {
            mp.join("gold/demo/v1/a.txt")
        };
        assert_eq!(fs::read(&file).unwrap(), b"hello");
        match i % 3 {
            0 => assert!(Command::new("umount").arg(&mp).status().unwrap().success()),
            1 => assert!(Command::new("fusermount3")
                .arg("-u")
                .arg(&mp)
                .status()
                .map(|s| s.success())
                .unwrap_or_else(|_| { Command::new("umount").arg(&mp).status().unwrap().success() })),
            _ => m.signal(libc::SIGTERM),
        }
        assert_eq!(m.wait(Duration::from_secs(10)), Some(0), "round {i}");
        assert!(!is_mounted(&mp), "round {i}: still mounted");
    }
    assert_eq!(server_processes(&v.dir), 0, "mount processes left behind");
}

#[test]
fn sixteen_readers_on_two_mounts_read_correct_bytes_while_an_ingest_runs() {
    if !can_mount() {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    make_source(&src, 7);
    v.ingest(&src, "demo", "v1");
    let other = v.root.join("other");
    make_source(&other, 8);
    let mp1 = v.mountpoint("m1");
    let mp2 = v.mountpoint("m2");
    let _m1 = v.mount(None, &mp1);
    let _m2 = v.mount(Some("gold/demo@v1"), &mp2);
    let mut ingest = v
        .cmd()
        .arg("ingest")
        .arg(&other)
        .args(["--name", "other", "--version", "v1"])
        .spawn()
        .unwrap();
    let files: Vec<PathBuf> = walk(&src).into_iter().filter(|p| src.join(p).is_file()).collect();
    let readers: Vec<_> = (0..16)
        .map(|i| {
            let base = if i % 2 == 0 {
                mp1.join("gold/demo/v1")
            } else {
                mp2.clone()
            };
            let (src, files) = (src.clone(), files.clone());
            std::thread::spawn(move || {
                for _ in 0..3 {
                    for rel in &files {
                        let got = fs::read(base.join(rel)).unwrap();
                        assert!(got == fs::read(src.join(rel)).unwrap(), "reader {i}: {rel:?} differs");
                    }
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    assert!(ingest.wait().unwrap().success());
    let start = Instant::now();
    while !mp1.join("gold/other/v1/big.bin").exists() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        fs::read(mp1.join("gold/other/v1/big.bin")).unwrap(),
        fs::read(other.join("big.bin")).unwrap()
    );
}

#[test]
fn a_folder_of_100k_entries_lists_completely() {
    if !can_mount() {
        return;
    }
    const N: usize = 100_000;
    let v = Vault::new();
    let src = v.root.join("src");
    fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..N {
        fs::File::create(src.join(format!("many/f{i:06}"))).unwrap();
    }
    fs::write(src.join("many/f000123"), b"one with bytes").unwrap();
    v.ingest(&src, "big", "v1");
    let mp = v.mountpoint("mnt");
    let _m = v.mount(Some("big@v1"), &mp);
    let dir = mp.join("many");
    let mut names: Vec<OsString> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), N);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), N, "duplicates in the listing");
    assert_eq!(names[N - 1], OsStr::new(&format!("f{:06}", N - 1)));
    assert_eq!(fs::read(dir.join("f000123")).unwrap(), b"one with bytes");
    // A second listing (served from the kernel's folder cache or again by us) agrees.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), N);
}

/// Every entry under `dir` as a d_type walk sees it (names, `d_ino`, `d_type`; no `stat`),
/// relative paths.
fn dtype_walk(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, u64, fs::FileType)>) {
    use std::os::unix::fs::DirEntryExt;
    for e in fs::read_dir(dir.join(rel)).unwrap() {
        let e = e.unwrap();
        let (path, kind) = (rel.join(e.file_name()), e.file_type().unwrap());
        out.push((path.clone(), e.ino(), kind));
        if kind.is_dir() {
            dtype_walk(dir, &path, out);
        }
    }
}

/// Checks what a d_type walk of `mp` listed against `stat` through the mount and the source
/// tree `src`: same inode numbers and types, same sizes and (write-less) modes, and the bytes
/// of every `read_every`th file.
fn check_walk(mp: &Path, src: &Path, listed: &[(PathBuf, u64, fs::FileType)], read_every: usize) {
    use std::os::unix::fs::MetadataExt;
    // Per folder: itself, 1,000 files, `sub`, `sub/inner` and `link`.
    assert_eq!(listed.len(), 12 * 1004);
    for (i, (rel, ino, kind)) in listed.iter().enumerate() {
        let served = fs::symlink_metadata(mp.join(rel)).unwrap();
        let source = fs::symlink_metadata(src.join(rel)).unwrap();
        assert_eq!(served.ino(), *ino, "{rel:?}: d_ino differs from st_ino");
        assert_eq!(
            served.file_type(),
            *kind,
            "{rel:?}: d_type differs from the stat's type"
        );
        assert_eq!(served.file_type(), source.file_type(), "{rel:?}");
        if kind.is_file() {
            assert_eq!(served.len(), source.len(), "{rel:?}");
            assert_eq!(served.mode() & 0o7777, source.mode() & 0o555, "{rel:?}");
            if i % read_every == 0 {
                assert_eq!(
                    fs::read(mp.join(rel)).unwrap(),
                    fs::read(src.join(rel)).unwrap(),
                    "{rel:?}"
                );
            }
        }
    }
}

/// (files listed bare, files described) from a mount's debug log.
fn files_listed(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find_map(|l| l.split("listings: ").nth(1).filter(|l| l.ends_with(" described")))
        .unwrap_or_else(|| panic!("no listing counts in the server log:\n{log}"));
    let numbers: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1])
}

/// A d_type walk long enough for the mount to list files without attributes (nodeid 0 in
/// READDIRPLUS, fuse/src/listing.rs) shows the same inode numbers and types as `stat`, and
/// files listed that way still stat and read exactly like the source afterwards; so do
/// four walkers at once on a fresh mount, two walking bare and two stat-walking and
/// reading, while the mount's guess flips between them.
#[test]
fn files_listed_without_attributes_stat_and_read_like_the_source() {
    if !can_mount() {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    for d in 0..12 {
        for f in 0..1000 {
            let mode = if f % 7 == 0 { 0o755 } else { 0o644 };
            common::write_file_mode(&src, format!("d{d:02}/f{f:04}"), format!("{d}/{f}\n").as_bytes(), mode);
        }
        common::write_file(&src, format!("d{d:02}/sub/inner"), b"inner");
        common::symlink(&src, format!("d{d:02}/link"), "f0000");
    }
    v.ingest(&src, "walk", "v1");
    let mp = v.mountpoint("mnt");
    let mount = || {
        let mut c = v.cmd();
        c.env("DSVAULT_LOG", "dsvault_fuse=debug")
            .arg("mount")
            .arg("walk@v1")
            .arg(&mp);
        spawn_mount(c, &mp, true)
    };

    let mut m = mount();
    let mut listed = Vec::new();
    dtype_walk(&mp, Path::new(""), &mut listed);
    check_walk(&mp, &src, &listed, 97);
    let log = m.stop(Duration::from_secs(10));
    // The mount starts bare, and check_walk's stats (one entry in 97, 124 in all) come
    // after the walk: every file (12 x 1,002) went out bare, some twice (the kernel asks
    // again for what did not fit the reader's buffer).
    let (bare, described) = files_listed(&log);
    assert!(
        bare >= 12 * 1002 && described == 0,
        "the walk did not list every file without attributes; server log:\n{log}"
    );
    drop(m);

    let _m = mount();
    let walks: Vec<Vec<(PathBuf, u64)>> = std::thread::scope(|s| {
        let walkers: Vec<_> = (0..4)
            .map(|walker| {
                let (mp, src) = (&mp, &src);
                s.spawn(move || {
                    let mut listed = Vec::new();
                    dtype_walk(mp, Path::new(""), &mut listed);
                    if walker % 2 == 1 {
                        check_walk(mp, src, &listed, 13);
                    }
                    let mut seen: Vec<(PathBuf, u64)> = listed.into_iter().map(|(p, ino, _)| (p, ino)).collect();
                    seen.sort();
                    seen
                })
            })
            .collect();
        walkers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(walks[0].len(), 12 * 1004);
    for w in &walks[1..] {
        assert!(w == &walks[0], "walkers at once saw different names or inode numbers");
    }
}

/// A dataset whose folder listings were removed behind the catalog's triggers (every dataset
/// has them since schema 4, whose migration writes them) is listed from the entries instead, bare or described, folders past a listing page too. A listing damaged
/// behind the catalog's back fails that folder's listing with EIO, never shows other names,
/// and leaves the other folders listing.
#[test]
fn datasets_without_listings_list_from_entries_and_a_damaged_listing_is_eio() {
    if !can_mount() {
        return;
    }
    let v = Vault::new();
    let src = v.root.join("src");
    for d in 0..3 {
        for f in 0..1500 {
            common::write_file(&src, format!("d{d}/f{f:04}"), format!("{d}/{f}").as_bytes());
        }
    }
    v.ingest(&src, "old", "v1");
    v.ingest(&src, "new", "v1");
    let conn = rusqlite::Connection::open(v.dir.join("catalog.db")).unwrap();
    let id = |name: &str| -> i64 {
        conn.query_row("SELECT id FROM datasets WHERE name = ?1", [name], |r| r.get(0))
            .unwrap()
    };
    let (old, new) = (id("old"), id("new"));
    conn.execute_batch("DROP TRIGGER listings_sealed_no_delete; DROP TRIGGER listings_no_update;")
        .unwrap();
    conn.execute("DELETE FROM listings WHERE dataset_id = ?1", [old])
        .unwrap();
    conn.execute(
        "UPDATE listings SET packed = substr(packed, 1, 2) WHERE dataset_id = ?1 AND parent = CAST('d1' AS BLOB) AND page = 1",
        [new],
    )
    .unwrap();
    drop(conn);

    let mp = v.mountpoint("old");
    let m = v.mount(Some("old@v1"), &mp);
    let mut listed = Vec::new();
    dtype_walk(&mp, Path::new(""), &mut listed);
    let mut names: Vec<PathBuf> = listed.iter().map(|(p, _, _)| p.clone()).collect();
    names.sort();
    assert_eq!(names, walk(&src));
    {
        // Without listings a folder's size is unknown: the default block size.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(mp.join("d0")).unwrap().blksize(), 128 << 10);
    }
    for (rel, ino, _) in listed.iter().step_by(101) {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::symlink_metadata(mp.join(rel)).unwrap();
        assert_eq!(meta.ino(), *ino, "{}", rel.display());
        assert_eq!(
            fs::read(mp.join(rel)).ok(),
            fs::read(src.join(rel)).ok().filter(|_| meta.is_file())
        );
    }
    drop(m);

    let mp = v.mountpoint("new");
    let _m = v.mount(Some("new@v1"), &mp);
    // Folders with listings get a block size that holds their READDIRPLUS listing (readers
    // size their getdents buffer by it): 1,500 entries of 160-odd bytes take 256 KiB. A
    // folder listed three times lists the same (the kernel keeps it from the second open).
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(mp.join("d0")).unwrap().blksize(), 256 << 10);
    }
    for _ in 0..3 {
        let mut names: Vec<OsString> = fs::read_dir(mp.join("d0"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        let want: Vec<OsString> = (0..1500).map(|f| format!("f{f:04}").into()).collect();
        assert_eq!(names, want);
    }
    let mut seen = Vec::new();
    let err = fs::read_dir(mp.join("d1"))
        .unwrap()
        .find_map(|e| match e {
            Ok(e) => {
                seen.push(e.file_name());
                None
            }
            Err(e) => Some(e),
        })
        .expect("a damaged listing lists without an error");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let want: Vec<OsString> = (0..seen.len()).map(|f| format!("f{f:04}").into()).collect();
    assert_eq!(seen, want, "the folder listed names that are not its own");
    assert_eq!(fs::read(mp.join("d2/f1499")).unwrap(), b"2/1499");
}
