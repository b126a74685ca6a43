//! `cat`, `export`, `verify`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use dsvault::ops::{export, verify};
use dsvault::DatasetRef;

use super::output::{bytes, json_line, json_path};
use super::progress::Bar;
use super::remote::{apply_cache_size, with_remote_stats};
use super::Globals;

#[derive(Args, Debug)]
pub struct CatArgs {
    /// gold/NAME@VERSION, derived/NAME@VERSION or NAME@VERSION.
    dataset: DatasetRef,
    /// Path of the file inside the dataset.
    path: String,
    /// Disk space for the read cache of a remote store (e.g. 512M, 4G; default 4G).
    #[arg(long, value_name = "SIZE", value_parser = super::remote::parse_size)]
    cache_size: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    dataset: DatasetRef,
    /// A new (or empty) folder to write the dataset into.
    dest: PathBuf,
    /// Disk space for the read cache of a remote store (e.g. 512M, 4G; default 4G).
    #[arg(long, value_name = "SIZE", value_parser = super::remote::parse_size)]
    cache_size: Option<u64>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Check only this dataset (default: every dataset and every pack).
    dataset: Option<DatasetRef>,
    /// Re-read and re-hash every stored chunk (slow: reads the whole store).
    #[arg(long)]
    read_data: bool,
}

pub fn cat(g: &Globals, a: CatArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    apply_cache_size(&vault, a.cache_size);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    export::cat(&vault, &a.dataset, &a.path, &mut out).with_context(|| format!("reading {}:{}", a.dataset, a.path))?;
    out.flush()?;
    Ok(0)
}

pub fn export(g: &Globals, a: ExportArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    apply_cache_size(&vault, a.cache_size);
    let bar = Bar::new(g, "export");
    let mut r = export::export(&vault, &a.dataset, &a.dest, &bar)
        .with_context(|| format!("exporting {} to {}", a.dataset, a.dest.display()))?;
    if g.json {
        r.destination = json_path(&r.destination);
        json_line(&with_remote_stats(&vault, &r)?)?;
    } else if !g.quiet {
        outln!(
            "{} -> {}: {} files, {} folders, {} symlinks, {}",
            r.dataset,
            r.destination.display(),
            r.files,
            r.dirs,
            r.symlinks,
            bytes(r.bytes)
        );
    }
    Ok(0)
}

pub fn verify(g: &Globals, a: VerifyArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    let bar = Bar::new(g, "verify");
    let r = verify::verify(&vault, a.dataset.as_ref(), a.read_data, &bar)?;
    if g.json {
        json_line(&serde_json::json!({ "ok": r.is_clean(), "report": r }))?;
    } else {
        for p in &r.problems {
            let place = match (&p.dataset, &p.path) {
                (Some(d), Some(path)) => format!("{d}:{path}: "),
                (Some(d), None) => format!("{d}: "),
                _ => String::new(),
            };
            outln!("{}: {place}{}", p.kind, p.detail);
        }
        let read = if a.read_data {
            format!(", {} re-hashed", bytes(r.bytes_read))
        } else {
            String::new()
        };
        if r.is_clean() {
            if !g.quiet {
                outln!("ok: {} datasets, {} packs{read}", r.datasets, r.packs);
            }
        } else {
            eprintln!(
                "dsvault: verify found {} problems in {} datasets, {} packs{read}",
                r.problems.len(),
                r.datasets,
                r.packs
            );
        }
    }
    Ok(if r.is_clean() { 0 } else { 1 })
}
