//! `dsvault-datagen`: a deterministic generator of an ML-shaped dataset for the dsvault
//! ingest benchmark (see `bench/README.md`).
//!
//! ```text
//! dsvault-datagen OUT_DIR [--scale F] [--seed N] [--version 1|2] [--threads N] [--json] [--force]
//! ```
//!
//! At `--scale 1` version 1 is about 2 GB:
//!
//! * 8,000 small files of 20–200 KiB of incompressible bytes under
//!   `images/{train,val,test}/class_XXX/img_XXXXXX.bin`, about 5% of which are exact duplicates
//!   of other small files;
//! * `tables/metadata.csv` and `tables/annotations.jsonl`: 256 MiB each of text rows
//!   (compressible);
//! * `blobs/features.bin` and `blobs/shard-0000.bin`: 256 MiB each of incompressible bytes.
//!
//! `--version 2` writes version 2 of the same dataset (same seed and scale) into its own folder:
//! about 2% of the small files get a few KiB overwritten in place, about 1% are deleted and 1%
//! added, rows are appended to both text files (2 MiB each at scale 1) and 1 MiB of new bytes is
//! inserted in the middle of `blobs/shard-0000.bin`. Version 2 is generated directly rather than
//! by copying version 1: every byte is a function of (seed, scale, version), so unchanged files
//! are byte-identical to version 1 and no version 1 tree is needed.
//!
//! `--scale` multiplies the file counts and every size (big files, appended and inserted bytes).
//!
//! Besides the tree, a summary is written to `OUT_DIR/../<name>.datagen.json` (and printed on
//! stdout with `--json`). For version 2 it holds `ideal_new_bytes`: the sizes of the edited and
//! added small files, plus the appended and inserted bytes — what an ideal deduplicating store
//! must add on top of version 1.
//!
//! Random bytes come from xoshiro256++ seeded per 64 KiB block, filling `u64`s, so generation is
//! bounded by write speed; files are written by a few threads in parallel.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Random streams are seeded independently per block of this size, so any block-aligned range
/// of a stream can be produced without generating what comes before it.
const BLOCK: u64 = 64 * KIB;
/// Size of the write buffers for big files.
const WRITE_BUF: usize = 4 * MIB as usize;

const SMALL_FILES: f64 = 8000.0;
const CLASSES: f64 = 100.0;
const SMALL_MIN: u64 = 20 * KIB;
const SMALL_MAX: u64 = 200 * KIB;
const BIG_SIZE: f64 = (256 * MIB) as f64;
const APPEND_SIZE: f64 = (2 * MIB) as f64;
const INSERT_SIZE: f64 = MIB as f64;
/// Per-mille of small files that duplicate an earlier small file.
const DUP_PERMILLE: u64 = 50;
/// Small files deleted, edited and added in version 2, as fractions of the version 1 count
/// (at least one each).
const DELETE_FRACTION: f64 = 0.01;
const EDIT_FRACTION: f64 = 0.02;
const ADD_FRACTION: f64 = 0.01;

// Domain separation tags for the hash-derived keys.
const TAG_LAYOUT: u64 = 0x6c61796f7574;
const TAG_CONTENT: u64 = 0x636f6e74656e74;
const TAG_EDIT: u64 = 0x65646974;
const TAG_ROWS: u64 = 0x726f7773;
const TAG_BIG: u64 = 0x626967;
const TAG_INSERT: u64 = 0x696e73657274;

// ---------------------------------------------------------------------------------------------
// Randomness

/// One step of SplitMix64; used to seed xoshiro and as a hash.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic hash of two words.
fn mix(a: u64, b: u64) -> u64 {
    let mut s = a ^ splitmix64(&mut b.wrapping_mul(0xd6e8_feb8_6659_fd93));
    splitmix64(&mut s)
}

/// xoshiro256++: fast, small, good enough for incompressible test data.
struct Xoshiro([u64; 4]);

impl Xoshiro {
    fn new(seed: u64) -> Self {
        let mut s = seed;
        Xoshiro([
            splitmix64(&mut s),
            splitmix64(&mut s),
            splitmix64(&mut s),
            splitmix64(&mut s),
        ])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&v[..rest.len()]);
        }
    }
}

/// Fills `buf` with bytes `offset..offset + buf.len()` of the random stream named `key`.
/// `offset` must be a multiple of [`BLOCK`].
fn fill_stream(key: u64, offset: u64, buf: &mut [u8]) {
    assert_eq!(offset % BLOCK, 0, "stream offsets are block-aligned");
    for (i, block) in buf.chunks_mut(BLOCK as usize).enumerate() {
        Xoshiro::new(mix(key, offset / BLOCK + i as u64)).fill(block);
    }
}

// ---------------------------------------------------------------------------------------------
// The plan: every file of a version, derived from (seed, scale, version) alone

#[derive(Clone, Copy, Debug, PartialEq)]
struct Params {
    scale: f64,
    seed: u64,
    version: u8,
}

/// Bytes `offset..offset + len` of a small file replaced by new random bytes (version 2).
#[derive(Clone, Copy, Debug)]
struct Edit {
    offset: u64,
    len: u64,
    key: u64,
}

#[derive(Clone, Debug)]
struct SmallFile {
    path: String,
    size: u64,
    /// Key of the random stream holding the content; duplicates share it.
    content: u64,
    duplicate: bool,
    edit: Option<Edit>,
    /// Added in version 2.
    added: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BigKind {
    Csv,
    Jsonl,
    Binary,
}

#[derive(Clone, Debug)]
struct BigFile {
    path: &'static str,
    kind: BigKind,
    key: u64,
    /// Version 1 size (text files: rows are written until this is reached).
    size: u64,
    /// Text files: bytes of rows appended in version 2 (at least; whole rows are written).
    append: u64,
    /// Binary files: `(offset, len)` of new bytes inserted in version 2.
    insert: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Plan {
    small: Vec<SmallFile>,
    big: Vec<BigFile>,
    deleted_files: u64,
    deleted_bytes: u64,
}

fn scaled(base: f64, scale: f64, min: u64) -> u64 {
    ((base * scale).round() as u64).max(min)
}

fn split_name(index: u64) -> &'static str {
    match index % 10 {
        0..=7 => "train",
        8 => "val",
        _ => "test",
    }
}

fn small_path(index: u64, classes: u64, seed: u64) -> String {
    let class = mix(seed ^ TAG_LAYOUT, index) % classes;
    format!("images/{}/class_{class:03}/img_{index:06}.bin", split_name(index))
}

fn plan(p: Params) -> Plan {
    let n = scaled(SMALL_FILES, p.scale, 1);
    let classes = scaled(CLASSES, p.scale, 2);
    let v2 = p.version >= 2;
    let count = |fraction: f64| ((n as f64 * fraction).round() as u64).max(1) as usize;
    // Version 2 deletes and edits exact numbers of files, picked by hash rank.
    let mut deleted = vec![false; n as usize];
    let mut edited = vec![false; n as usize];
    if v2 {
        let mut order: Vec<u64> = (0..n).collect();
        order.sort_by_key(|&i| mix(mix(p.seed, i), 4));
        for &i in order.iter().take(count(DELETE_FRACTION)) {
            deleted[i as usize] = true;
        }
        order.retain(|&i| !deleted[i as usize]);
        order.sort_by_key(|&i| mix(mix(p.seed, i), 5));
        for &i in order.iter().take(count(EDIT_FRACTION)) {
            edited[i as usize] = true;
        }
    }
    let mut out = Plan::default();
    // (content key, size) of every version 1 small file, to resolve duplicates.
    let mut contents: Vec<(u64, u64)> = Vec::with_capacity(n as usize);
    for i in 0..n {
        let h = mix(p.seed, i);
        let (content, size, duplicate) = if i > 0 && mix(h, 1) % 1000 < DUP_PERMILLE {
            let (c, s) = contents[(mix(h, 2) % i) as usize];
            (c, s, true)
        } else {
            let size = SMALL_MIN + mix(h, 3) % (SMALL_MAX - SMALL_MIN + 1);
            (mix(p.seed ^ TAG_CONTENT, i), size, false)
        };
        contents.push((content, size));
        let path = small_path(i, classes, p.seed);
        if deleted[i as usize] {
            out.deleted_files += 1;
            out.deleted_bytes += size;
            continue;
        }
        let edit = edited[i as usize].then(|| {
            let len = (2 * KIB + mix(h, 6) % (6 * KIB + 1)).min(size);
            Edit {
                offset: mix(h, 7) % (size - len + 1),
                len,
                key: mix(p.seed ^ TAG_EDIT, i),
            }
        });
        out.small.push(SmallFile {
            path,
            size,
            content,
            duplicate,
            edit,
            added: false,
        });
    }
    if v2 {
        for i in n..n + count(ADD_FRACTION) as u64 {
            let h = mix(p.seed, i);
            out.small.push(SmallFile {
                path: small_path(i, classes, p.seed),
                size: SMALL_MIN + mix(h, 3) % (SMALL_MAX - SMALL_MIN + 1),
                content: mix(p.seed ^ TAG_CONTENT, i),
                duplicate: false,
                edit: None,
                added: true,
            });
        }
    }

    let size = scaled(BIG_SIZE, p.scale, 4 * KIB);
    let append = if v2 { scaled(APPEND_SIZE, p.scale, KIB) } else { 0 };
    let insert_len = scaled(INSERT_SIZE, p.scale, 64 * KIB);
    let big = [
        ("tables/metadata.csv", BigKind::Csv, false),
        ("tables/annotations.jsonl", BigKind::Jsonl, false),
        ("blobs/features.bin", BigKind::Binary, false),
        ("blobs/shard-0000.bin", BigKind::Binary, true),
    ];
    for (k, (path, kind, inserted)) in big.into_iter().enumerate() {
        out.big.push(BigFile {
            path,
            kind,
            key: mix(p.seed ^ TAG_BIG, k as u64),
            size,
            append: if kind == BigKind::Binary { 0 } else { append },
            insert: (v2 && inserted).then_some((size / 2 / BLOCK * BLOCK, insert_len)),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Writing

const WORDS: [&str; 32] = [
    "a", "photo", "of", "the", "red", "blue", "green", "small", "large", "dog", "cat", "car", "tree", "house",
    "person", "bird", "on", "in", "with", "near", "street", "field", "water", "sky", "two", "three", "running",
    "sitting", "old", "new", "bright", "dark",
];
const TAGS: [&str; 8] = [
    "outdoor", "indoor", "night", "day", "blurry", "crowd", "closeup", "animal",
];

/// Appends row `r` of a text file (row 0 of the CSV is its header).
fn push_row(kind: BigKind, key: u64, r: u64, out: &mut String) {
    let h = mix(key ^ TAG_ROWS, r);
    let g = mix(h, 1);
    let class = h % 1000;
    let score = (h >> 10) % 1_000_000;
    match kind {
        BigKind::Csv => {
            if r == 0 {
                out.push_str("id,split,label,width,height,score,caption\n");
                return;
            }
            let _ = write!(
                out,
                "{r},{},class_{class:03},{},{},0.{score:06},",
                split_name(r),
                64 + (g & 0x1ff),
                64 + ((g >> 9) & 0x1ff),
            );
            let words = 3 + (g >> 18) % 6;
            for w in 0..words {
                if w > 0 {
                    out.push(' ');
                }
                out.push_str(WORDS[((g >> (24 + 5 * w)) & 31) as usize]);
            }
            out.push('\n');
        }
        BigKind::Jsonl => {
            let _ = write!(
                out,
                "{{\"id\":{r},\"image\":\"images/{}/class_{class:03}/img_{r:06}.bin\",\
                 \"label\":{class},\"bbox\":[{},{},{},{}],\"score\":0.{score:06},\"tags\":[",
                split_name(r),
                g & 0xff,
                (g >> 8) & 0xff,
                (g >> 16) & 0xff,
                (g >> 24) & 0xff,
            );
            let tags = 1 + (g >> 32) % 3;
            for t in 0..tags {
                if t > 0 {
                    out.push(',');
                }
                let _ = write!(out, "\"{}\"", TAGS[((g >> (40 + 3 * t)) & 7) as usize]);
            }
            out.push_str("]}\n");
        }
        BigKind::Binary => unreachable!("binary files have no rows"),
    }
}

/// Writes bytes `from..to` of stream `key`; `from` must be block-aligned.
fn write_stream(w: &mut File, key: u64, from: u64, to: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(buf.len() as u64) as usize;
        fill_stream(key, pos, &mut buf[..n]);
        w.write_all(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

fn create(root: &Path, rel: &str) -> io::Result<File> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    File::create(&path)
}

/// Bytes written by one file, and the text bytes appended in version 2.
struct Written {
    bytes: u64,
    appended: u64,
}

fn write_small(root: &Path, f: &SmallFile) -> io::Result<Written> {
    let mut buf = vec![0u8; f.size as usize];
    fill_stream(f.content, 0, &mut buf);
    if let Some(e) = f.edit {
        fill_stream(e.key, 0, &mut buf[e.offset as usize..(e.offset + e.len) as usize]);
    }
    create(root, &f.path)?.write_all(&buf)?;
    Ok(Written {
        bytes: f.size,
        appended: 0,
    })
}

fn write_big(root: &Path, f: &BigFile) -> io::Result<Written> {
    let mut file = create(root, f.path)?;
    if f.kind == BigKind::Binary {
        let mut buf = vec![0u8; WRITE_BUF];
        let mut bytes = f.size;
        match f.insert {
            Some((at, len)) => {
                write_stream(&mut file, f.key, 0, at, &mut buf)?;
                write_stream(&mut file, mix(f.key, TAG_INSERT), 0, len, &mut buf)?;
                write_stream(&mut file, f.key, at, f.size, &mut buf)?;
                bytes += len;
            }
            None => write_stream(&mut file, f.key, 0, f.size, &mut buf)?,
        }
        return Ok(Written { bytes, appended: 0 });
    }
    // Text: whole rows until the version 1 size is reached, then the appended rows.
    let mut buf = String::with_capacity(WRITE_BUF + 4 * KIB as usize);
    let mut total = 0u64;
    let mut v1_len = None;
    let mut r = 0u64;
    loop {
        if v1_len.is_none() && total + buf.len() as u64 >= f.size {
            v1_len = Some(total + buf.len() as u64);
        }
        if let Some(v1) = v1_len {
            if total + buf.len() as u64 >= v1 + f.append {
                break;
            }
        }
        push_row(f.kind, f.key, r, &mut buf);
        r += 1;
        if buf.len() >= WRITE_BUF {
            file.write_all(buf.as_bytes())?;
            total += buf.len() as u64;
            buf.clear();
        }
    }
    file.write_all(buf.as_bytes())?;
    total += buf.len() as u64;
    let v1 = v1_len.unwrap_or(total);
    Ok(Written {
        bytes: total,
        appended: total - v1,
    })
}

/// What was generated; for version 2 also what changed relative to version 1.
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    files: u64,
    bytes: u64,
    small_files: u64,
    duplicate_files: u64,
    edited_files: u64,
    edited_bytes: u64,
    added_files: u64,
    added_bytes: u64,
    deleted_files: u64,
    deleted_bytes: u64,
    appended_bytes: u64,
    inserted_bytes: u64,
}

impl Summary {
    fn ideal_new_bytes(&self) -> u64 {
        self.edited_bytes + self.added_bytes + self.appended_bytes + self.inserted_bytes
    }

    fn to_json(&self, p: Params) -> String {
        format!(
            "{{\"version\":{},\"seed\":{},\"scale\":{},\"files\":{},\"bytes\":{},\
             \"small_files\":{},\"duplicate_files\":{},\"edited_files\":{},\"edited_bytes\":{},\
             \"added_files\":{},\"added_bytes\":{},\"deleted_files\":{},\"deleted_bytes\":{},\
             \"appended_bytes\":{},\"inserted_bytes\":{},\"ideal_new_bytes\":{}}}",
            p.version,
            p.seed,
            p.scale,
            self.files,
            self.bytes,
            self.small_files,
            self.duplicate_files,
            self.edited_files,
            self.edited_bytes,
            self.added_files,
            self.added_bytes,
            self.deleted_files,
            self.deleted_bytes,
            self.appended_bytes,
            self.inserted_bytes,
            self.ideal_new_bytes(),
        )
    }
}

/// Writes the tree of `p` into `root` (which must exist) with `threads` threads.
fn generate(root: &Path, p: Params, threads: usize) -> io::Result<Summary> {
    let plan = plan(p);
    let mut s = Summary {
        files: (plan.small.len() + plan.big.len()) as u64,
        small_files: plan.small.len() as u64,
        deleted_files: plan.deleted_files,
        deleted_bytes: plan.deleted_bytes,
        ..Summary::default()
    };
    for f in &plan.small {
        s.duplicate_files += f.duplicate as u64;
        if f.edit.is_some() {
            s.edited_files += 1;
            s.edited_bytes += f.size;
        }
        if f.added {
            s.added_files += 1;
            s.added_bytes += f.size;
        }
    }
    s.inserted_bytes = plan.big.iter().filter_map(|b| b.insert).map(|i| i.1).sum();

    // Big files first: they are the longest jobs.
    let jobs = plan.big.len() + plan.small.len();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let error: Mutex<Option<io::Error>> = Mutex::new(None);
    let bytes = AtomicU64::new(0);
    let appended = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= jobs || failed.load(Ordering::Relaxed) {
                    break;
                }
                let result = match plan.big.get(j) {
                    Some(b) => write_big(root, b),
                    None => write_small(root, &plan.small[j - plan.big.len()]),
                };
                match result {
                    Ok(w) => {
                        bytes.fetch_add(w.bytes, Ordering::Relaxed);
                        appended.fetch_add(w.appended, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        error.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap() {
        return Err(e);
    }
    s.bytes = bytes.into_inner();
    s.appended_bytes = appended.into_inner();
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Command line

const USAGE: &str = "\
usage: dsvault-datagen OUT_DIR [--scale F] [--seed N] [--version 1|2 | --mutate] [--threads N] [--json] [--force]

Writes a deterministic ML-shaped dataset (about 2 GB at --scale 1) into OUT_DIR, which must not
exist or be empty (--force deletes it first). --version 2 (or --mutate) writes version 2 of the same dataset
(edits, deletions, additions, appended rows, a mid-file insertion) into its own OUT_DIR.
A summary (with ideal_new_bytes for version 2) goes to OUT_DIR/../<name>.datagen.json and, with
--json, to stdout as one JSON object.";

struct Args {
    out: PathBuf,
    params: Params,
    threads: usize,
    json: bool,
    force: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = None;
    let mut params = Params {
        scale: 1.0,
        seed: 1,
        version: 1,
    };
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let mut json = false;
    let mut force = false;
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--scale" => {
                params.scale = value("--scale")?.parse().map_err(|e| format!("--scale: {e}"))?;
                if !(params.scale > 0.0 && params.scale.is_finite()) {
                    return Err("--scale must be a positive number".into());
                }
            }
            "--seed" => params.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--version" => {
                params.version = match value("--version")?.as_str() {
                    "1" | "v1" => 1,
                    "2" | "v2" => 2,
                    v => return Err(format!("--version must be 1 or 2, not {v:?}")),
                }
            }
            // The ingest issue's name for "write version 2".
            "--mutate" => params.version = 2,
            "--threads" => threads = value("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--json" => json = true,
            "--force" => force = true,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if out.is_none() => out = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    Ok(Args {
        out: out.ok_or("OUT_DIR is required")?,
        params,
        threads,
        json,
        force,
    })
}

fn summary_path(out: &Path) -> io::Result<PathBuf> {
    let out = std::path::absolute(out)?;
    let name = out
        .file_name()
        .ok_or_else(|| io::Error::other("OUT_DIR has no file name"))?;
    let mut file = name.to_os_string();
    file.push(".datagen.json");
    Ok(out.with_file_name(file))
}

fn run(args: &Args) -> io::Result<Summary> {
    if args.out.exists() {
        if args.force {
            fs::remove_dir_all(&args.out)?;
        } else if fs::read_dir(&args.out)?.next().is_some() {
            return Err(io::Error::other(format!(
                "{} is not empty (use --force to replace it)",
                args.out.display()
            )));
        }
    }
    fs::create_dir_all(&args.out)?;
    let summary = generate(&args.out, args.params, args.threads)?;
    let json = summary.to_json(args.params);
    fs::write(summary_path(&args.out)?, format!("{json}\n"))?;
    Ok(summary)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("dsvault-datagen: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let start = std::time::Instant::now();
    match run(&args) {
        Ok(s) => {
            if args.json {
                println!("{}", s.to_json(args.params));
            } else {
                let mib = |b: u64| b as f64 / MIB as f64;
                println!(
                    "{}: version {}, {} files, {:.1} MiB in {:.1} s ({} duplicates)",
                    args.out.display(),
                    args.params.version,
                    s.files,
                    mib(s.bytes),
                    start.elapsed().as_secs_f64(),
                    s.duplicate_files,
                );
                if args.params.version >= 2 {
                    println!(
                        "changes: {} edited ({:.1} MiB), {} added ({:.1} MiB), {} deleted, \
                         {:.1} MiB appended, {:.1} MiB inserted; ideal new bytes {} ({:.1} MiB)",
                        s.edited_files,
                        mib(s.edited_bytes),
                        s.added_files,
                        mib(s.added_bytes),
                        s.deleted_files,
                        mib(s.appended_bytes),
                        mib(s.inserted_bytes),
                        s.ideal_new_bytes(),
                        mib(s.ideal_new_bytes()),
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dsvault-datagen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("dsvault-datagen-test-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Every file under `root`, by relative path.
    fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for e in fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                    out.insert(rel, fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    const SMALL: f64 = 0.01;

    fn params(version: u8) -> Params {
        Params {
            scale: SMALL,
            seed: 7,
            version,
        }
    }

    #[test]
    fn same_arguments_give_identical_trees() {
        let (a, b) = (TempDir::new("det-a"), TempDir::new("det-b"));
        let sa = generate(&a.0, params(1), 1).unwrap();
        let sb = generate(&b.0, params(1), 3).unwrap();
        assert_eq!(sa, sb);
        let (ta, tb) = (read_tree(&a.0), read_tree(&b.0));
        assert_eq!(ta.len() as u64, sa.files);
        assert_eq!(ta.values().map(|v| v.len() as u64).sum::<u64>(), sa.bytes);
        assert!(ta == tb, "trees differ");

        let c = TempDir::new("det-c");
        let other_seed = Params { seed: 8, ..params(1) };
        generate(&c.0, other_seed, 2).unwrap();
        let tc = read_tree(&c.0);
        assert_ne!(ta["blobs/features.bin"], tc["blobs/features.bin"]);
    }

    #[test]
    fn version_2_differs_from_version_1_by_the_ideal_bytes() {
        let (a, b) = (TempDir::new("v-1"), TempDir::new("v-2"));
        generate(&a.0, params(1), 2).unwrap();
        let s = generate(&b.0, params(2), 2).unwrap();
        let (v1, v2) = (read_tree(&a.0), read_tree(&b.0));
        assert!(s.edited_files > 0 && s.added_files > 0 && s.deleted_files > 0);

        let mut changed = 0u64;
        for (path, new) in &v2 {
            match v1.get(path) {
                None => changed += new.len() as u64,
                Some(old) if path.ends_with(".csv") || path.ends_with(".jsonl") => {
                    assert!(new.starts_with(old), "{path}: rows only appended");
                    changed += (new.len() - old.len()) as u64;
                }
                Some(old) if path == "blobs/shard-0000.bin" => {
                    let (at, len) = plan(params(2)).big[3].insert.unwrap();
                    let (at, len) = (at as usize, len as usize);
                    assert_eq!(new.len(), old.len() + len);
                    assert_eq!(new[..at], old[..at]);
                    assert_eq!(new[at + len..], old[at..]);
                    changed += len as u64;
                }
                Some(old) if old != new => {
                    assert_eq!(old.len(), new.len(), "{path}: edits are in place");
                    changed += new.len() as u64;
                }
                Some(_) => {}
            }
        }
        assert_eq!(changed, s.ideal_new_bytes());
        let deleted = v1.keys().filter(|p| !v2.contains_key(*p)).count() as u64;
        assert_eq!(deleted, s.deleted_files);
    }

    #[test]
    fn full_scale_plan_has_the_intended_shape() {
        let p = Params {
            scale: 1.0,
            seed: 1,
            version: 2,
        };
        let v1 = plan(Params { version: 1, ..p });
        let v2 = plan(p);
        assert_eq!(v1.small.len(), 8000);
        let dups = v1.small.iter().filter(|f| f.duplicate).count();
        assert!((300..500).contains(&dups), "{dups} duplicates");
        let bytes: u64 = v1.small.iter().map(|f| f.size).sum::<u64>() + v1.big.iter().map(|f| f.size).sum::<u64>();
        assert!((1_900_000_000..2_100_000_000).contains(&bytes), "{bytes} bytes");
        let edited = v2.small.iter().filter(|f| f.edit.is_some()).count();
        let added = v2.small.iter().filter(|f| f.added).count();
        assert!((120..200).contains(&edited), "{edited} edited");
        assert_eq!(added, 80);
        assert!((50..110).contains(&v2.deleted_files), "{} deleted", v2.deleted_files);
    }

    #[test]
    fn streams_are_block_addressable() {
        let mut whole = vec![0u8; 3 * BLOCK as usize + 5];
        fill_stream(42, 0, &mut whole);
        let mut tail = vec![0u8; BLOCK as usize + 5];
        fill_stream(42, 2 * BLOCK, &mut tail);
        assert_eq!(whole[2 * BLOCK as usize..], tail[..]);
    }
}
