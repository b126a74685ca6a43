//! The model test of the workspace overlay: seeded random sequences of file operations
//! (create, write at an offset, append, truncate, overwrite, rename, unlink, mkdir, rmdir,
//! chmod, symlink) applied both to `work/<workspace>/` of a real mount and to a plain
//! folder exported from the same base, comparing the two trees (names, types, permission
//! bits, sizes, bytes, symlink targets) and each operation's errno after every step. At the
//! end of each sequence the workspace is derived and the export of the derived dataset must
//! equal the plain folder too.
//!
//! The one allowed difference: renaming a folder that has content from the base answers
//! EXDEV in the overlay (see docs/workspaces.md); the test then does what `mv` does
//! (copy through the mount, delete the source) and checks the result.
//!
//! Odd seeds run through a mount with FUSE passthrough (where the kernel offers it), even
//! seeds through one without (`DSVAULT_NO_PASSTHROUGH=1`).
//!
//! `DSVAULT_MODEL_SEED=N` runs only sequence N; `DSVAULT_MODEL_STEPS=N` sets its length.
//! A failure names the seed and the step.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::mounted::{can_mount, mount_vault_with, WITHOUT_PASSTHROUGH};
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEEDS: u64 = 8;
const STEPS: usize = 250;
const FILE_MODES: [u32; 4] = [0o644, 0o600, 0o755, 0o444];
const DIR_MODES: [u32; 4] = [0o755, 0o700, 0o750, 0o555];

/// One operation, on paths relative to the tree's root.
#[derive(Debug, Clone)]
enum Op {
    Create { path: PathBuf, len: usize, mode: u32 },
    WriteAt { path: PathBuf, offset: u64, len: usize },
    Append { path: PathBuf, len: usize },
    Truncate { path: PathBuf, len: u64 },
    Overwrite { path: PathBuf, len: usize },
    Rename { from: PathBuf, to: PathBuf },
    Unlink { path: PathBuf },
    Mkdir { path: PathBuf, mode: u32 },
    Rmdir { path: PathBuf },
    Chmod { path: PathBuf, mode: u32 },
    Symlink { path: PathBuf, target: String },
}

/// The base: nested folders, files from empty to multi-chunk, symlinks, several modes.
fn make_base(dir: &Path) {
    for d in ["a/b/c", "a/d", "e", "empty", "f/g"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let files: [(&str, usize, u32); 10] = [
        ("top.txt", 100, 0o644),
        ("a/one.bin", 5000, 0o600),
        ("a/b/two.bin", 70_000, 0o644),
        ("a/b/c/three.txt", 10, 0o755),
        ("a/d/big.bin", 1_500_000, 0o644),
        ("e/empty.txt", 0, 0o644),
        ("e/x.csv", 3000, 0o444),
        ("f/g/deep.bin", 20_000, 0o644),
        ("f/h.txt", 42, 0o640),
        ("z.txt", 7, 0o644),
    ];
    for (i, (path, len, mode)) in files.iter().enumerate() {
        write_file_mode(dir, path, &random_bytes(i as u64 + 1, *len), *mode);
    }
    symlink(dir, "link-top", "top.txt");
    // No ".." in targets: a renamed link could point outside the tree, which derive refuses.
    symlink(dir, "a/link-up", "one.bin");
    symlink(dir, "dangling", "nowhere/at/all");
    chmod(&dir.join("f"), 0o750);
}

/// Everything under `root`: (relative path, its metadata), sorted by path.
fn entries(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut items: Vec<_> = fs::read_dir(root.join(&rel))
            .unwrap_or_else(|e| panic!("listing {}: {e}", root.join(&rel).display()))
            .map(|e| e.unwrap())
            .collect();
        items.sort_by_key(|e| e.file_name());
        for e in items {
            let p = rel.join(e.file_name());
            let m = fs::symlink_metadata(root.join(&p)).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, m));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn errno<T>(r: std::io::Result<T>) -> Result<(), i32> {
    r.map(|_| ()).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// Apply `op` under `root`; the data written is a function of the op and `salt`.
fn apply(root: &Path, op: &Op, salt: u64) -> Result<(), i32> {
    let data = |len: usize| random_bytes(salt, len);
    match op {
        Op::Create { path, len, mode } => errno((|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(*mode)
                .open(root.join(path))?;
            f.write_all(&data(*len))?;
            f.set_permissions(fs::Permissions::from_mode(*mode))
        })()),
        Op::WriteAt { path, offset, len } => errno((|| {
            let f = fs::OpenOptions::new().read(true).write(true).open(root.join(path))?;
            f.write_all_at(&data(*len), *offset)
        })()),
        Op::Append { path, len } => errno((|| {
            let mut f = fs::OpenOptions::new().append(true).open(root.join(path))?;
            f.write_all(&data(*len))
        })()),
        Op::Truncate { path, len } => errno((|| {
            fs::OpenOptions::new().write(true).open(root.join(path))?.set_len(*len)
        })()),
        Op::Overwrite { path, len } => errno((|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(root.join(path))?;
            f.write_all(&data(*len))?;
            f.sync_all()
        })()),
        Op::Rename { from, to } => errno(fs::rename(root.join(from), root.join(to))),
        Op::Unlink { path } => errno(fs::remove_file(root.join(path))),
        Op::Mkdir { path, mode } => errno((|| {
            fs::create_dir(root.join(path))?;
            fs::set_permissions(root.join(path), fs::Permissions::from_mode(*mode))
        })()),
        Op::Rmdir { path } => errno(fs::remove_dir(root.join(path))),
        Op::Chmod { path, mode } => errno(fs::set_permissions(root.join(path), fs::Permissions::from_mode(*mode))),
        Op::Symlink { path, target } => errno(std::os::unix::fs::symlink(target, root.join(path))),
    }
}

/// What `mv` does after EXDEV: copy the tree through the mount, then delete the source.
fn copy_then_delete(root: &Path, from: &Path, to: &Path) {
    fn copy(src: &Path, dst: &Path) {
        let m = fs::symlink_metadata(src).unwrap();
        if m.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(src).unwrap(), dst).unwrap();
        } else if m.is_dir() {
            fs::create_dir(dst).unwrap();
            for e in fs::read_dir(src).unwrap() {
                let e = e.unwrap();
                copy(&e.path(), &dst.join(e.file_name()));
            }
            fs::set_permissions(dst, m.permissions()).unwrap();
        } else {
            fs::copy(src, dst).unwrap();
            fs::set_permissions(dst, m.permissions()).unwrap();
        }
    }
    copy(&root.join(from), &root.join(to));
    fs::remove_dir_all(root.join(from)).unwrap();
}

/// Picks operations from the current state of the plain tree.
struct Gen {
    rng: ChaCha8Rng,
    next_name: u32,
}

impl Gen {
    fn pick(&mut self, v: &[PathBuf]) -> Option<PathBuf> {
        (!v.is_empty()).then(|| v[self.rng.random_range(0..v.len())].clone())
    }

    fn fresh(&mut self, dirs: &[PathBuf]) -> PathBuf {
        self.next_name += 1;
        let dir = if self.rng.random_bool(0.25) {
            PathBuf::new()
        } else {
            self.pick(dirs).unwrap_or_default()
        };
        dir.join(format!("n{}", self.next_name))
    }

    fn op(&mut self, plain: &Path) -> Op {
        let all = entries(plain);
        let of = |pred: &dyn Fn(&fs::Metadata) -> bool| -> Vec<PathBuf> {
            all.iter().filter(|(_, m)| pred(m)).map(|(p, _)| p.clone()).collect()
        };
        let files = of(&|m| m.is_file());
        let dirs = of(&|m| m.is_dir());
        let any: Vec<PathBuf> = all.iter().map(|(p, _)| p.clone()).collect();
        let crowded = all.len() > 70;
        let r = &mut self.rng;
        let len = if r.random_bool(0.1) {
            r.random_range(0..300_000)
        } else {
            r.random_range(0..5000)
        };
        let file_mode = FILE_MODES[r.random_range(0..FILE_MODES.len())];
        let dir_mode = DIR_MODES[r.random_range(0..DIR_MODES.len())];
        let choice = r.random_range(0..if crowded { 14 } else { 12 });
        match (choice, self.pick(&files)) {
            (0 | 1, _) => Op::Create {
                path: self.fresh(&dirs),
                len,
                mode: file_mode,
            },
            (2, Some(path)) => {
                let size = fs::metadata(plain.join(&path)).unwrap().len();
                let offset = self.rng.random_range(0..size + 200);
                Op::WriteAt {
                    path,
                    offset,
                    len: len.min(70_000),
                }
            }
            (3, Some(path)) => Op::Append { path, len },
            (4, Some(path)) => {
                let size = fs::metadata(plain.join(&path)).unwrap().len();
                Op::Truncate {
                    path,
                    len: self.rng.random_range(0..size * 2 + 10),
                }
            }
            (5, Some(path)) => Op::Overwrite { path, len },
            (6 | 7, _) => {
                let from = self.pick(&any).unwrap_or_else(|| "nothing".into());
                let to = if self.rng.random_bool(0.4) {
                    self.pick(&any).unwrap_or_default()
                } else {
                    self.fresh(&dirs)
                };
                Op::Rename { from, to }
            }
            (8, _) => Op::Mkdir {
                path: self.fresh(&dirs),
                mode: dir_mode,
            },
            (9, _) => {
                let path = self.fresh(&dirs);
                // Targets stay inside the tree: derive refuses symlinks that leave it.
                let target = ["top.txt", "e/x.csv", "a/one.bin", "missing", "n3"][self.rng.random_range(0..5)];
                Op::Symlink {
                    path,
                    target: target.into(),
                }
            }
            (10, _) => {
                let path = self.pick(&files).or_else(|| self.pick(&dirs)).unwrap_or_default();
                let is_dir = fs::metadata(plain.join(&path)).is_ok_and(|m| m.is_dir());
                Op::Chmod {
                    path,
                    mode: if is_dir { dir_mode } else { file_mode },
                }
            }
            (11 | 13, _) => Op::Rmdir {
                path: self.pick(&dirs).unwrap_or_else(|| "nothing".into()),
            },
            _ => Op::Unlink {
                path: self.pick(&any).unwrap_or_else(|| "nothing".into()),
            },
        }
    }
}

/// Base folders still there under their original path (the ones whose rename is EXDEV).
fn base_dirs(base: &Path) -> BTreeSet<PathBuf> {
    entries(base)
        .into_iter()
        .filter(|(_, m)| m.is_dir())
        .map(|(p, _)| p)
        .collect()
}

/// Run one sequence against workspace `ws{seed}`; returns the number of steps.
fn run_sequence(v: &TestVault, mp: &Path, base: &Path, seed: u64, steps: usize) -> usize {
    let ws = format!("ws{seed}");
    v.run(["workspace", "new", &ws, "--base", "gold/base@v1"]).ok();
    let plain = v.dir.parent().unwrap().join(format!("plain{seed}"));
    v.export_ok("gold/base@v1", &plain);
    let work = mp.join("work").join(&ws);
    let mut flagged = base_dirs(base);
    let mut gen = Gen {
        rng: ChaCha8Rng::seed_from_u64(seed),
        next_name: 0,
    };
    let (mut ok, mut refused, mut exdev) = (0, 0, 0);
    assert_same_content(&plain, &work, &format!("seed {seed} before any step: "));
    for step in 0..steps {
        let op = gen.op(&plain);
        let ctx = format!("seed {seed} step {step} {op:?} (rerun: DSVAULT_MODEL_SEED={seed})");
        let salt = seed * 1_000_000 + step as u64;
        let got = apply(&work, &op, salt);
        match (&op, got) {
            (Op::Rename { from, to }, Err(libc::EXDEV)) => {
                assert!(
                    flagged.contains(from),
                    "{ctx}: EXDEV for a folder that is not from the base"
                );
                exdev += 1;
                copy_then_delete(&work, from, to);
                assert_eq!(apply(&plain, &op, salt), Ok(()), "{ctx}: plain rename");
                flagged.retain(|d| !d.starts_with(from));
            }
            (_, got) => {
                let want = apply(&plain, &op, salt);
                assert_eq!(got, want, "{ctx}: result (Err = errno) differs from a local folder");
                if want.is_ok() {
                    ok += 1;
                } else {
                    refused += 1;
                }
                if want.is_ok() {
                    match &op {
                        Op::Rmdir { path } => {
                            flagged.remove(path);
                        }
                        Op::Rename { to, .. } => {
                            flagged.remove(to);
                        }
                        _ => {}
                    }
                }
            }
        }
        assert_same_content(&plain, &work, &format!("{ctx}: "));
    }
    eprintln!("seed {seed}: {ok} operations done, {refused} refused alike, {exdev} EXDEV renames");
    assert!(ok > steps / 2, "seed {seed}: most operations should succeed");
    check_derive(v, &ws, &plain, seed);
    fs::remove_dir_all(&plain).unwrap();
    steps
}

/// The derived dataset of the workspace exports to exactly the plain folder.
fn check_derive(v: &TestVault, ws: &str, plain: &Path, seed: u64) {
    v.run(["derive", ws, "--name", &format!("model{seed}"), "--version", "v1"])
        .ok();
    let out = v.dir.parent().unwrap().join(format!("derived{seed}"));
    v.export_ok(&format!("derived/model{seed}@v1"), &out);
    assert_same_content(plain, &out, &format!("seed {seed}: derived export vs plain folder: "));
    fs::remove_dir_all(&out).unwrap();
}

#[test]
fn random_operations_on_the_overlay_match_a_local_folder() {
    if !can_mount() {
        return;
    }
    let v = TestVault::new();
    let base = v.dir.parent().unwrap().join("base");
    make_base(&base);
    v.ingest_ok(&base, "base", "v1", &[]);
    let steps = std::env::var("DSVAULT_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STEPS);
    let seeds: Vec<u64> = match std::env::var("DSVAULT_MODEL_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=SEEDS).collect(),
    };
    let started = std::time::Instant::now();
    // Odd seeds through FUSE passthrough (where the kernel offers it), even seeds without it
    // (each read and write through the mount, what kernels before 6.9 and non-root mounts get).
    let mut total = 0;
    for (env, parity) in [(&[][..], 1), (WITHOUT_PASSTHROUGH, 0)] {
        let mp = v.dir.parent().unwrap().join(format!("mp{parity}"));
        let m = mount_vault_with(&v, &mp, env);
        for &seed in seeds.iter().filter(|&&s| s % 2 == parity) {
            total += run_sequence(&v, &mp, &base, seed, steps);
        }
        assert_eq!(m.unmount(), Some(0));
    }
    eprintln!("{total} model steps in {:.1} s", started.elapsed().as_secs_f64());
    // The base is untouched whatever happened in the workspaces.
    v.verify_read_data();
    let again = v.dir.parent().unwrap().join("base-again");
    v.export_ok("gold/base@v1", &again);
    assert_same_tree(&base, &again);
}
