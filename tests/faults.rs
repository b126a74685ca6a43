//! Faults: an ingest killed at each durable step, a real `kill -9`, a flipped byte in a
//! pack, and a full disk (under an ingest, and under a mounted workspace). After each, no
//! dataset is half-visible, `verify` passes (or names the damage), and a re-run succeeds
//! reusing what was already stored.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::mounted::{can_mount, mount_vault_with, with_and_without_passthrough};
use common::*;
use serde_json::Value;

/// 10 incompressible 1 MiB files and some text: with 1 MiB packs, an ingest publishes
/// several packs, one at a time.
fn crash_tree(root: &Path) -> u64 {
    let mut bytes = 0;
    for i in 0..10u64 {
        let data = random_bytes(1000 + i, MIB as usize);
        bytes += data.len() as u64;
        write_file(root, format!("shards/{i:02}.bin"), &data);
    }
    for i in 0..20u64 {
        let data = text_rows(i, 200);
        bytes += data.len() as u64;
        write_file(root, format!("labels/{i:02}.csv"), &data);
    }
    fs::create_dir_all(root.join("empty")).unwrap();
    bytes
}

/// A vault whose packs are sealed at 1 MiB.
fn small_pack_vault() -> TestVault {
    let v = TestVault::new();
    v.init_with_pack_target(MIB);
    v
}

/// Files an interrupted process may leave in `<vault>/tmp`.
fn tmp_files(vault: &TestVault) -> Vec<PathBuf> {
    match fs::read_dir(vault.dir.join("tmp")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn pending_rows(vault: &TestVault) -> i64 {
    vault
        .catalog()
        .query_row("SELECT count(*) FROM datasets WHERE state = 'pending'", [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// What a re-run after the crash must have reused.
enum Reuse {
    /// Nothing was durable yet.
    Nothing,
    /// At least this many bytes of packs.
    AtLeast(u64),
    /// Everything: the re-run stores no new bytes.
    Everything,
}

fn crash_then_recover(point: &str, reuse: Reuse) {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let logical = crash_tree(&src);

    // What an uninterrupted ingest stores and seals.
    let baseline_vault = small_pack_vault();
    let baseline = baseline_vault.ingest_ok(&src, "crash", "v1", &[]);
    let full = num(&baseline, "stored_bytes");
    let root = string(&baseline, "root");
    assert!(full >= 10 * MIB, "baseline stored {full}");
    assert!(baseline_vault.pack_files().len() >= 4, "expected several 1 MiB packs");

    let vault = small_pack_vault();
    let mut cmd = vault.ingest_cmd(&src, "crash", "v1", &["--json"]);
    cmd.env("DSVAULT_CRASH_AT", point);
    let crashed = run_cmd(cmd).failed();
    assert_eq!(
        crashed.status.signal(),
        Some(libc::SIGABRT),
        "expected an abort at {point}: {}",
        crashed.stderr
    );
    let crashed = crashed.mentions(&["crash point"]);
    assert!(crashed.stdout.is_empty(), "a report was printed before the crash");

    // Nothing visible, and what is there is consistent.
    assert!(vault.datasets().is_empty(), "crash at {point}: a dataset is visible");
    vault.verify();
    vault.verify_read_data();
    vault.run(["show", "crash@v1"]).code_is(1).mentions(&["no dataset"]);
    let before_rerun = vault.pack_bytes();
    let left_in_tmp = tmp_files(&vault).len();

    // The same ingest again, without the crash point.
    let again = vault.ingest_ok(&src, "crash", "v1", &[]);
    assert_eq!(string(&again, "root"), root, "crash at {point}: another root");
    assert_eq!(num(&again, "bytes"), logical);
    assert_eq!(again["already_present"], false);
    let stored = num(&again, "stored_bytes");
    eprintln!(
        "{point}: {before_rerun} bytes of packs and {left_in_tmp} temporary files after the crash; \
         the re-run stored {stored} of {full}"
    );
    match reuse {
        Reuse::Nothing => assert!(
            stored + 256 * KIB >= full,
            "crash at {point}: re-run stored only {stored} of {full}"
        ),
        Reuse::AtLeast(n) => assert!(
            stored + n <= full,
            "crash at {point}: re-run stored {stored} of {full}, expected at least {n} reused"
        ),
        Reuse::Everything => assert_eq!(stored, 0, "crash at {point}: re-run stored bytes again"),
    }
    // Nothing stored twice: the store holds what one clean ingest holds, give or take the
    // index and header of packs split differently.
    let total = vault.pack_bytes();
    assert_eq!(total, before_rerun + stored);
    assert!(
        total <= full + 64 * KIB,
        "crash at {point}: the store holds {total} bytes, a clean ingest {full}"
    );
    assert_eq!(pending_rows(&vault), 0, "a pending row survived the re-run");
    assert!(tmp_files(&vault).is_empty(), "left in tmp/: {:?}", tmp_files(&vault));

    assert_eq!(vault.datasets(), ["gold/crash@v1"]);
    let out = tmp.path().join("out");
    vault.export_ok("crash@v1", &out);
    assert_same_tree(&src, &out);
    vault.verify_read_data();
}

#[test]
fn crash_before_the_first_pack_is_fsynced() {
    crash_then_recover("pack-before-fsync", Reuse::Nothing);
}

#[test]
fn crash_before_the_third_pack_is_fsynced() {
    crash_then_recover("pack-before-fsync:3", Reuse::AtLeast(2 * MIB));
}

#[test]
fn crash_after_the_first_pack_is_published() {
    // The pack reached the store but not the catalog: the re-run indexes and reuses it.
    crash_then_recover("pack-after-rename", Reuse::AtLeast(MIB));
}

#[test]
fn crash_after_the_third_pack_is_published() {
    crash_then_recover("pack-after-rename:3", Reuse::AtLeast(3 * MIB));
}

#[test]
fn crash_before_a_batch_is_committed() {
    crash_then_recover("before-batch-commit:2", Reuse::AtLeast(2 * MIB));
}

#[test]
fn crash_before_the_ref_is_written() {
    crash_then_recover("before-ref", Reuse::Everything);
}

#[test]
fn crash_before_the_dataset_is_sealed() {
    crash_then_recover("before-seal", Reuse::Everything);
}

#[test]
fn sigkill_during_ingest() {
    // 48 MiB in 1 MiB packs on one worker thread; SIGKILL as soon as the first pack is
    // published, while the rest is still being chunked and written.
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let mut logical = 0;
    for i in 0..16u64 {
        let data = random_bytes(2000 + i, 3 * MIB as usize);
        logical += data.len() as u64;
        write_file(&src, format!("part-{i:02}.bin"), &data);
    }
    let mut killed = None;
    for attempt in 0..5 {
        let vault = small_pack_vault();
        let mut cmd = vault.ingest_cmd(&src, "killed", "v1", &["--json", "--threads", "1"]);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        let mut exited = false;
        loop {
            if child.try_wait().unwrap().is_some() {
                exited = true;
                break;
            }
            if !vault.pack_files().is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "ingest never published a pack"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        if exited {
            eprintln!("attempt {attempt}: the ingest finished before it could be killed; again");
            continue;
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        if status.signal() != Some(libc::SIGKILL) {
            eprintln!("attempt {attempt}: the ingest finished before the signal ({status:?}); again");
            continue;
        }
        killed = Some(vault);
        break;
    }
    let vault = killed.expect("could not kill an ingest in five attempts");
    let published = vault.pack_bytes();
    assert!(published > 0);
    eprintln!(
        "killed with {} packs ({published} bytes) published and {} files in tmp/",
        vault.pack_files().len(),
        tmp_files(&vault).len()
    );

    assert!(vault.datasets().is_empty(), "a killed ingest left a visible dataset");
    vault.verify();
    vault.verify_read_data();

    let r = vault.ingest_ok(&src, "killed", "v1", &[]);
    let stored = num(&r, "stored_bytes");
    assert!(stored < logical, "nothing was reused: stored {stored} of {logical}");
    // Random data: a clean ingest stores the logical bytes plus pack overhead. Across the
    // killed run and the re-run, nothing is stored twice.
    let total = vault.pack_bytes();
    assert_eq!(total, published + stored);
    assert!(
        total < logical + 256 * KIB,
        "store holds {total} for {logical} logical bytes"
    );
    assert_eq!(pending_rows(&vault), 0);
    assert!(tmp_files(&vault).is_empty(), "left in tmp/: {:?}", tmp_files(&vault));
    let out = tmp.path().join("out");
    vault.export_ok("killed@v1", &out);
    assert_same_tree(&src, &out);
    vault.verify_read_data();
}

/// The pack file and the byte range holding the last chunk of file `name`, and how many
/// chunks the file has.
fn last_chunk_of(vault: &TestVault, name: &[u8]) -> (PathBuf, u64, u64, i64) {
    let (hash, offset, len): (Vec<u8>, i64, i64) = vault
        .catalog()
        .query_row(
            "SELECT p.hash, c.offset, c.stored_len FROM entries e
             JOIN content_chunks cc ON cc.content_id = e.content_id
             JOIN chunks c ON c.hash = cc.chunk_hash JOIN packs p ON p.id = c.pack_id
             WHERE e.name = ?1 ORDER BY cc.file_offset DESC LIMIT 1",
            [name.to_vec()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let path = vault
        .store_dir()
        .join("packs")
        .join(&hex[..2])
        .join(format!("{hex}.pack"));
    assert!(path.exists(), "{}", path.display());
    let chunks: i64 = vault
        .catalog()
        .query_row(
            "SELECT count(*) FROM entries e JOIN content_chunks cc ON cc.content_id = e.content_id WHERE e.name = ?1",
            [name.to_vec()],
            |r| r.get(0),
        )
        .unwrap();
    (path, offset as u64, len as u64, chunks)
}

fn flip_byte(path: &Path, at: u64) {
    let mode = fs::metadata(path).unwrap().permissions();
    chmod(path, 0o644);
    let mut f = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x01]).unwrap();
    f.sync_all().unwrap();
    fs::set_permissions(path, mode).unwrap();
}

#[test]
fn flipped_byte_in_a_pack_is_found_and_never_served() {
    let vault = TestVault::new();
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let victim = random_bytes(50, 3 * MIB as usize);
    write_file(&src, "data/a-before.bin", &random_bytes(51, 200 * 1024));
    write_file(&src, "data/victim.bin", &victim);
    write_file(&src, "data/z-after.bin", &random_bytes(52, 200 * 1024));
    write_file(&src, "notes.txt", &text_rows(53, 1000));
    vault.ingest_ok(&src, "flip", "v1", &[]);
    // Another dataset holding the same bytes at another path shares the chunk.
    let src2 = tmp.path().join("src2");
    write_file(&src2, "copy/v.bin", &victim);
    vault.ingest_ok(&src2, "flip2", "v1", &[]);

    // Every pack is read-only on disk.
    for p in vault.pack_files() {
        let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o444, "{}", p.display());
    }

    // Damage the middle of victim.bin's last chunk: export and cat have written the
    // earlier chunks by the time they find it.
    let (pack, offset, len, chunks) = last_chunk_of(&vault, b"victim.bin");
    assert!(chunks >= 2, "victim.bin should span several chunks");
    flip_byte(&pack, offset + len / 2);

    // Without --read-data, verify checks presence and sizes only: the flip is not seen.
    vault.run(["verify"]).code_is(0);

    // --read-data re-hashes every chunk and names each dataset and path using it.
    let text = vault.run(["verify", "--read-data"]).code_is(1);
    let text = text.mentions(&[
        "damaged-chunk",
        "gold/flip@v1:data/victim.bin",
        "gold/flip2@v1:copy/v.bin",
    ]);
    assert!(!text.text().contains("a-before.bin") && !text.text().contains("notes.txt"));
    let json = vault.run(["--json", "verify", "--read-data"]).code_is(1).json();
    assert_eq!(json["ok"], false);
    let mut named: Vec<(String, String)> = json["report"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (string(p, "dataset"), string(p, "path")))
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            ("gold/flip2@v1".to_string(), "copy/v.bin".to_string()),
            ("gold/flip@v1".to_string(), "data/victim.bin".to_string()),
        ]
    );
    // Verifying only the other dataset names only its path.
    vault
        .run(["verify", "flip2@v1", "--read-data"])
        .code_is(1)
        .mentions(&["gold/flip2@v1:copy/v.bin"]);

    // export refuses, naming the file, and leaves no file with wrong bytes.
    let out = tmp.path().join("out");
    let mut cmd = vault.cmd();
    cmd.args(["export", "flip@v1"]).arg(&out);
    run_cmd(cmd).code_is(1).mentions(&["data/victim.bin", "damaged"]);
    assert!(
        !out.join("data/victim.bin").exists(),
        "a partial victim.bin was left behind"
    );
    for e in walk_files(&out) {
        let rel = e.strip_prefix(&out).unwrap();
        assert_same_bytes(&src.join(rel), &e);
    }

    // cat of the damaged file fails and never prints a wrong byte; the others still work.
    let cat = vault.run(["cat", "flip@v1", "data/victim.bin"]).code_is(1);
    let cat = cat.mentions(&["data/victim.bin", "damaged"]);
    assert!(
        victim.starts_with(&cat.stdout),
        "cat printed bytes that are not the file's"
    );
    assert!(cat.stdout.len() < victim.len(), "cat printed the whole damaged file");
    eprintln!(
        "cat printed {} good bytes of {} before the damage",
        cat.stdout.len(),
        victim.len()
    );
    assert_eq!(
        vault.cat("flip@v1", "data/a-before.bin"),
        fs::read(src.join("data/a-before.bin")).unwrap()
    );
    assert_eq!(
        vault.cat("flip@v1", "notes.txt"),
        fs::read(src.join("notes.txt")).unwrap()
    );
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn full_disk_is_a_clear_error_and_the_vault_still_verifies() {
    let tmp = tempdir();
    let mnt = tmp.path().join("mnt");
    let mount = match TmpfsMount::new(&mnt, "8m") {
        Ok(m) => m,
        Err(why) => {
            common::require::needs(false, &format!("a tmpfs to fill (mounting one failed: {why})"));
            return;
        }
    };
    let vault = TestVault::at(&mount.path.join("vault"));
    vault.init_with_pack_target(MIB);
    let src = tmp.path().join("src");
    let mut logical = 0;
    for i in 0..10u64 {
        let data = random_bytes(3000 + i, 2_000_000);
        logical += data.len() as u64;
        write_file(&src, format!("f{i:02}.bin"), &data);
    }

    let failed = vault.ingest(&src, "big", "v1", &[]).code_is(1);
    let failed = failed.mentions(&["no space left", "nothing was sealed"]);
    assert!(failed.stdout.is_empty());
    assert!(vault.datasets().is_empty());
    assert!(tmp_files(&vault).is_empty(), "left in tmp/: {:?}", tmp_files(&vault));
    vault.verify_read_data();
    let published = vault.pack_bytes();

    // Small things still fit.
    let small = tmp.path().join("small");
    write_file(&small, "a.txt", b"small\n");
    vault.ingest_ok(&small, "small", "v1", &[]);
    assert_eq!(vault.cat("small@v1", "a.txt"), b"small\n");
    vault.verify();

    // Room made (the tmpfs grows): the big ingest now succeeds, reusing the packs that
    // made it to the store before the disk filled.
    mount.resize("64m");
    let r: Value = vault.ingest_ok(&src, "big", "v1", &[]);
    let stored = num(&r, "stored_bytes");
    assert!(published > MIB, "expected packs published before the disk filled");
    assert!(
        stored + published <= logical + 128 * KIB,
        "stored {stored} after {published}"
    );
    let out = tmp.path().join("out");
    vault.export_ok("big@v1", &out);
    assert_same_tree(&src, &out);
    vault.verify_read_data();
    drop(vault);
    drop(mount);
    assert!(
        !fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(mnt.to_str().unwrap()),
        "the tmpfs is still mounted"
    );
}

/// The errno of an I/O error (0 for none).
fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Repeat `step` (given its round number) until it fails; that error. Panics after
/// `limit` successes.
fn until_error(limit: usize, mut step: impl FnMut(usize) -> std::io::Result<()>) -> std::io::Error {
    for i in 0..limit {
        if let Err(e) = step(i) {
            return e;
        }
    }
    panic!("no error after {limit} rounds");
}

/// One full-disk round: a vault on a 4 MiB tmpfs with few inodes, a workspace over a base
/// of many small files, mounted with the server environment `env`.
fn full_workspace_answers_enospc(env: &[(&str, &str)]) {
    let tmp = tempdir();
    let disk = tmp.path().join("disk");
    // Few inodes too: creating an empty file needs no block, only an inode.
    let mount = TmpfsMount::new(&disk, "4m,nr_inodes=400").expect("tmpfs for the full-disk test");
    let v = TestVault::at(&mount.path.join("vault"));
    let src = tmp.path().join("src");
    for i in 0..120 {
        write_file(&src, format!("base/f{i:03}.txt"), format!("base file {i}\n").as_bytes());
    }
    write_file(&src, "big.bin", &random_bytes(9, 256 * KIB as usize));
    v.ingest_ok(&src, "small", "v1", &[]);
    v.run(["workspace", "new", "w", "--base", "gold/small@v1"]).ok();
    let mp = tmp.path().join("mnt");
    let m = mount_vault_with(&v, &mp, env);
    let ws = mp.join("work/w");

    // write: fill the blocks.
    let mut fill = fs::File::create(ws.join("fill")).unwrap();
    let chunk = vec![7u8; 64 * KIB as usize];
    let e = until_error(1000, |_| fill.write_all(&chunk).and_then(|()| fill.sync_data()));
    assert_eq!(errno_of(&e), libc::ENOSPC, "write on a full disk: {e}");

    // rename of a base file: its copy-up needs blocks.
    let e = fs::rename(ws.join("big.bin"), ws.join("big-renamed.bin")).unwrap_err();
    assert_eq!(errno_of(&e), libc::ENOSPC, "rename on a full disk: {e}");
    assert!(ws.join("big.bin").exists(), "a failed rename keeps the source");

    // delete of base files: each records a whiteout in the catalog, which grows.
    let e = until_error(120, |i| fs::remove_file(ws.join(format!("base/f{i:03}.txt"))));
    assert_eq!(errno_of(&e), libc::ENOSPC, "delete on a full disk: {e}");

    // create: use up the inodes.
    let e = until_error(1000, |i| fs::File::create(ws.join(format!("empty{i}"))).map(drop));
    assert_eq!(errno_of(&e), libc::ENOSPC, "create on a full disk: {e}");

    // Room again: what failed works, and the vault is consistent.
    drop(fill);
    fs::remove_file(ws.join("fill")).unwrap();
    for i in 0..1000 {
        let _ = fs::remove_file(ws.join(format!("empty{i}")));
    }
    fs::rename(ws.join("big.bin"), ws.join("big-renamed.bin")).unwrap();
    assert_eq!(
        fs::read(ws.join("big-renamed.bin")).unwrap(),
        fs::read(src.join("big.bin")).unwrap()
    );
    drop(m);
    v.verify();
    drop(v);
    drop(mount);
}

#[test]
fn a_full_disk_under_a_workspace_answers_enospc_for_write_create_rename_and_delete() {
    if !can_mount() {
        return;
    }
    with_and_without_passthrough(full_workspace_answers_enospc);
}
