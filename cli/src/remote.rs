//! `sync`, and the command-line side of remote stores: `--cache-size` values and the
//! request counts `--json` reports add for a remote vault.

use anyhow::{Context, Result};
use serde::Serialize;

use dsvault::ops::sync;
use dsvault::Vault;

use super::output::json_line;
use super::progress::Bar;
use super::Globals;

#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// Also drop from this catalog the datasets whose ref is gone from the store (removed
    /// with `rm` on another machine); without it they are only listed.
    #[arg(long)]
    prune: bool,
}

/// `sync`: bring the catalog up to date with the store.
pub fn sync(g: &Globals, a: SyncArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    let bar = Bar::new(g, "sync");
    let r = sync::sync(&vault, a.prune, &bar)
        .with_context(|| format!("syncing the catalog with {}", vault.config().store))?;
    if g.json {
        json_line(&with_remote_stats(&vault, &r)?)?;
    } else {
        for p in &r.problems {
            eprintln!("dsvault: warning: {p}");
        }
        if !g.quiet {
            outln!(
                "synced with {}: {} packs ({} new), {} datasets ({} new) in {:.1} s",
                r.store,
                r.packs,
                r.packs_indexed,
                r.datasets,
                r.datasets_imported.len(),
                r.seconds
            );
            for d in &r.datasets_imported {
                outln!("  + {d}");
            }
            for d in &r.datasets_pruned {
                outln!("  - {d} (gone from the store)");
            }
            let kept: Vec<&String> = r
                .datasets_gone
                .iter()
                .filter(|d| !r.datasets_pruned.contains(d))
                .collect();
            for d in &kept {
                outln!("  ? {d}: gone from the store (removed elsewhere); `dsvault sync --prune` drops it here");
            }
        }
    }
    Ok(if r.problems.is_empty() { 0 } else { 1 })
}

/// A report as a JSON object, with `"remote": {requests and bytes}` added for a remote vault.
pub fn with_remote_stats<T: Serialize>(vault: &Vault, report: &T) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(report)?;
    if let (Some(stats), Some(obj)) = (vault.store().remote_stats(), value.as_object_mut()) {
        obj.insert("remote".into(), serde_json::to_value(stats)?);
    }
    Ok(value)
}

/// Apply `--cache-size` (when given) to a remote vault's read cache.
pub fn apply_cache_size(vault: &Vault, size: Option<u64>) {
    if let Some(bytes) = size {
        vault.store().set_cache_capacity(bytes);
    }
}

/// A size such as `512M`, `4G`, `4GiB` or `1048576` (bytes); K, M, G, T are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 512M or 4G)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("64kb"), Ok(64 << 10));
        assert!(parse_size("lots").is_err() && parse_size("5X").is_err());
    }
}
