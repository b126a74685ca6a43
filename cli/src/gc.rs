//! `rm` and `gc`.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use dsvault::ops::gc::{self, GcOptions};
use dsvault::ops::{remove, shared_gc};
use dsvault::DatasetRef;

use super::output::{bytes, json_line};
use super::Globals;

#[derive(Args, Debug)]
pub struct RmArgs {
    /// derived/NAME@VERSION (or gold/NAME@VERSION with --force-gold).
    dataset: DatasetRef,
    /// Allow removing a gold dataset (or, in a shared vault, one another member sealed).
    /// Asks to type its full name on stdin, unless --yes-i-mean-it gives it.
    #[arg(long)]
    force_gold: bool,
    /// With --force-gold, for scripts: the full gold/NAME@VERSION being removed.
    #[arg(long, value_name = "DATASET", requires = "force_gold")]
    yes_i_mean_it: Option<String>,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Report what would be reclaimed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Leave packs younger than this alone, and delete dropped packs' files only this long
    /// after they were dropped (readers may still use them).
    #[arg(long, value_name = "MINUTES", default_value_t = 60)]
    grace_minutes: u64,
    /// Repack a partly used pack when at least this percent of it is unused.
    #[arg(long, value_name = "PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    repack_percent: u64,
}

pub fn rm(g: &Globals, a: RmArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    let d = vault.catalog()?.resolve(&a.dataset)?;
    if a.force_gold {
        confirm_gold(&d.name.to_string(), a.yes_i_mean_it.as_deref())?;
    }
    let force = a.force_gold;
    let exact: DatasetRef = d.name.to_string().parse()?;
    let r = remove::remove(&vault, &exact, force).with_context(|| format!("removing {}", d.name))?;
    if g.json {
        json_line(&r)?;
    } else if !g.quiet {
        outln!(
            "removed {} ({} files, {}); `dsvault gc` reclaims its unshared bytes",
            r.dataset,
            r.files,
            bytes(r.bytes)
        );
    }
    Ok(0)
}

/// The typed confirmation for removing gold: the full name, from the flag or from stdin.
fn confirm_gold(name: &str, given: Option<&str>) -> Result<()> {
    let typed = match given {
        Some(t) => t.to_string(),
        None => {
            eprint!("dsvault: removing {name} cannot be undone. Type its full name to confirm: ");
            std::io::stderr().flush()?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if typed != name {
        bail!("not removing {name}: the confirmation {typed:?} does not match its full name");
    }
    Ok(())
}

pub fn gc(g: &Globals, a: GcArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    let opts = GcOptions {
        dry_run: a.dry_run,
        grace: Duration::from_secs(a.grace_minutes * 60),
        repack_percent: a.repack_percent,
    };
    if vault.store().is_shared() {
        return shared_gc(g, &vault, &opts);
    }
    let r = gc::gc(&vault, &opts).context("collecting garbage")?;
    if g.json {
        json_line(&r)?;
    } else if !g.quiet {
        let verb = if r.dry_run { "would free" } else { "freed" };
        outln!(
            "{verb} {} ({} packs removed, {} repacked rewriting {}, {} unused contents); {} pack files deleted, {} waiting for the grace period",
            bytes(r.bytes_freed),
            r.packs_removed,
            r.packs_repacked,
            bytes(r.bytes_rewritten),
            r.contents_removed,
            r.pack_files_deleted,
            r.pack_files_waiting
        );
    }
    Ok(0)
}

/// `gc` on a shared bucket: the two-phase run of docs/ARCHITECTURE.md.
fn shared_gc(g: &Globals, vault: &dsvault::Vault, opts: &GcOptions) -> Result<i32> {
    let r =
        shared_gc::gc(vault, opts).with_context(|| format!("collecting garbage in {}", vault.store().describe()))?;
    if g.json {
        json_line(&super::remote::with_remote_stats(vault, &r)?)?;
        return Ok(0);
    }
    if g.quiet {
        return Ok(0);
    }
    let (deleted, condemned) = if r.dry_run {
        ("would delete", "would condemn")
    } else {
        ("deleted", "condemned")
    };
    for o in &r.deleted {
        outln!("{deleted} {} ({}): {}", o.key, bytes(o.bytes), o.why);
    }
    for o in &r.condemned {
        outln!("{condemned} {} ({}): {}", o.key, bytes(o.bytes), o.why);
    }
    outln!(
        "{} {}: {} objects, {} freed; {condemned} {} objects ({}) for the next run; {} spared, {} waiting for older leases, {} younger than the grace period",
        r.store,
        if r.dry_run { "(dry run)" } else { "" },
        r.deleted.len(),
        bytes(r.bytes_freed),
        r.condemned.len(),
        bytes(r.bytes_condemned),
        r.spared,
        r.waiting_for_leases,
        r.too_young
    );
    Ok(0)
}
