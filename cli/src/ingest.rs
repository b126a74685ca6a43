//! `init`, `ingest`, `estimate`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use dsvault::ops::ingest::{self, IngestOptions, IngestReport, SkippedFile};
use dsvault::{DatasetName, Kind, Vault};

use super::output::{bytes, json_line, json_path, print_sealed};
use super::progress::Bar;
use super::Globals;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Where packs, manifests and refs live (default: file://store inside the vault).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Make a vault every member of GROUP can ingest into, derive into and make workspaces
    /// in: setgid, group-writable folders and group-readable files, whatever each member's
    /// umask (see docs/sharing.md).
    #[arg(long, value_name = "GROUP")]
    shared: Option<String>,
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// The folder to ingest.
    src: PathBuf,
    /// Dataset name: letters, digits and . _ + - (becomes gold/NAME@VERSION).
    #[arg(long, value_parser = dataset_name)]
    name: String,
    /// Dataset version, same alphabet as the name; NAME@VERSION can never change once sealed.
    #[arg(long, value_parser = dataset_version)]
    version: String,
    /// Store symlinks that point outside the source tree instead of refusing them.
    #[arg(long)]
    allow_external_symlinks: bool,
    /// Read and hash every file, ignoring the files cache.
    #[arg(long)]
    rehash: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct EstimateArgs {
    /// The folder to estimate.
    src: PathBuf,
    #[command(flatten)]
    price: super::price::PriceArgs,
}

pub fn init(g: &Globals, a: InitArgs) -> Result<i32> {
    let vault = Vault::init_shared(&g.vault_dir, a.store.as_deref(), a.shared.as_deref())
        .with_context(|| format!("creating a vault at {}", g.vault_dir.display()))?;
    let shared = vault.config().shared.as_ref().map(|s| s.group.clone());
    if g.json {
        json_line(&serde_json::json!({ "vault": vault.dir(), "store": vault.config().store, "shared": shared }))?;
    } else if !g.quiet {
        let with = shared.map_or(String::new(), |group| format!(", shared with group {group}"));
        outln!(
            "created vault {} (store {}{with})",
            vault.dir().display(),
            vault.config().store
        );
    }
    Ok(0)
}

fn warn_skipped(g: &Globals, skipped: &[SkippedFile]) {
    if g.quiet || g.json {
        return;
    }
    for s in skipped {
        eprintln!(
            "dsvault: warning: skipped {} ({}): only files, folders and symlinks are stored",
            s.path.display(),
            s.reason
        );
    }
}

/// Skipped paths as JSON can hold them (see [`json_path`]).
fn json_paths(skipped: &mut [SkippedFile]) {
    for s in skipped {
        s.path = json_path(&s.path);
    }
}

/// NAME checked at parse time, so a bad one is a usage error (exit 2).
pub(super) fn dataset_name(s: &str) -> Result<String, dsvault::Error> {
    dsvault::dataset::validate_component("dataset name", s).map(|_| s.to_string())
}

/// VERSION checked at parse time, so a bad one is a usage error (exit 2).
pub(super) fn dataset_version(s: &str) -> Result<String, dsvault::Error> {
    dsvault::dataset::validate_component("version", s).map(|_| s.to_string())
}

pub fn ingest(g: &Globals, a: IngestArgs) -> Result<i32> {
    let name = DatasetName::new(Kind::Gold, &a.name, &a.version)?;
    // A bad source must not leave a new, empty vault behind.
    ingest::check_source(&a.src).with_context(|| format!("ingesting {} as {name}", a.src.display()))?;
    let vault =
        Vault::open_or_init(&g.vault_dir).with_context(|| format!("opening the vault at {}", g.vault_dir.display()))?;
    let mut opts = IngestOptions::new(a.src.clone(), name.clone());
    opts.allow_external_symlinks = a.allow_external_symlinks;
    opts.rehash = a.rehash;
    if let Some(t) = a.threads {
        opts.threads = t.max(1);
    }
    let bar = Bar::new(g, "ingest");
    let mut report =
        ingest::ingest(&vault, &opts, &bar).with_context(|| format!("ingesting {} as {name}", a.src.display()))?;
    warn_skipped(g, &report.skipped);
    if g.json {
        json_paths(&mut report.skipped);
        json_line(&super::remote::with_remote_stats(&vault, &report)?)?;
    } else if !g.quiet {
        print_ingest(&report)?;
    }
    Ok(0)
}

fn print_ingest(r: &IngestReport) -> Result<()> {
    let rate = r.bytes as f64 / r.seconds.max(1e-9) / (1024.0 * 1024.0);
    print_sealed(&r.dataset, &r.root, r.already_present)?;
    outln!(
        "  {} files, {} folders, {} symlinks, {} logical, {} new in the store ({:.1} s, {rate:.0} MiB/s{})",
        r.files,
        r.dirs,
        r.symlinks,
        bytes(r.bytes),
        bytes(r.stored_bytes),
        r.seconds,
        if r.files_from_cache > 0 {
            format!(", {} files unchanged since last ingest", r.files_from_cache)
        } else {
            String::new()
        }
    );
    Ok(())
}

pub fn estimate(g: &Globals, a: EstimateArgs) -> Result<i32> {
    // Estimating stores nothing, not even a new vault: without one, compare against an empty
    // vault in a temporary folder.
    let scratch = std::env::temp_dir().join(format!("dsvault-estimate-{}", std::process::id()));
    let (vault, scratch) = match Vault::open(&g.vault_dir) {
        Ok(v) => (v, None),
        Err(dsvault::Error::NoVault(_)) => (Vault::init(&scratch, None)?, Some(scratch)),
        Err(e) => return Err(e).with_context(|| format!("opening the vault at {}", g.vault_dir.display())),
    };
    let bar = Bar::new(g, "estimate");
    let result = ingest::estimate(&vault, &a.src, &bar);
    drop(vault);
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    let mut r = result.with_context(|| format!("estimating {}", a.src.display()))?;
    warn_skipped(g, &r.skipped);
    if g.json {
        json_paths(&mut r.skipped);
        r.source = json_path(&r.source);
        let mut v = serde_json::to_value(&r)?;
        if let Some(p) = a.price.price_per_gib_month {
            super::price::add_cost(&mut v, r.new_bytes, p);
        }
        json_line(&v)?;
    } else if !g.quiet {
        outln!(
            "{}: {} files, {} folders, {} symlinks",
            r.source.display(),
            r.files,
            r.dirs,
            r.symlinks
        );
        outln!("  logical            {}", bytes(r.bytes));
        outln!("  after dedup        {}  (within the source)", bytes(r.unique_bytes));
        outln!("  new to this vault  {}  (before compression)", bytes(r.new_bytes));
        if let Some(p) = a.price.price_per_gib_month {
            let cost = super::price::money(super::price::monthly_cost(r.new_bytes, p));
            outln!("  monthly cost       {cost}  at {p} per GiB-month (at most: before compression)");
        }
        outln!("  took {:.1} s", r.seconds);
    }
    Ok(0)
}
