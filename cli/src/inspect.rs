//! `ls`, `show`, `stats`.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use dsvault::catalog::DatasetRow;
use dsvault::{DatasetRef, Kind};

use super::output::{bytes, json_line, timestamp};
use super::price::{add_cost, money, monthly_cost};
use super::Globals;

#[derive(Args, Debug)]
pub struct LsArgs {
    /// `gold`, `derived`, or a dataset NAME (all its versions).
    #[arg(value_parser = ls_filter)]
    filter: Option<LsFilter>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    price: super::price::PriceArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// gold/NAME@VERSION, derived/NAME@VERSION or NAME@VERSION.
    dataset: DatasetRef,
}

fn dataset_json(d: &DatasetRow) -> serde_json::Value {
    json!({
        "dataset": d.name.to_string(),
        "kind": d.name.kind.as_str(),
        "name": d.name.name,
        "version": d.name.version,
        "root": d.root.map(|r| r.to_hex()),
        "files": d.files,
        "dirs": d.dirs,
        "symlinks": d.symlinks,
        "bytes": d.bytes,
        "stored_bytes": d.stored_bytes,
        "source": d.source,
        "created_at": timestamp(d.created_at),
        "sealed_at": d.sealed_at.map(timestamp),
    })
}

/// What `ls` lists.
#[derive(Debug, Clone)]
pub enum LsFilter {
    Kind(Kind),
    Name(String),
}

/// Checked at parse time, so a bad filter is a usage error (exit 2).
fn ls_filter(s: &str) -> Result<LsFilter, dsvault::Error> {
    match s {
        "gold" => Ok(LsFilter::Kind(Kind::Gold)),
        "derived" => Ok(LsFilter::Kind(Kind::Derived)),
        n => dsvault::dataset::validate_component("dataset name", n).map(|_| LsFilter::Name(n.to_string())),
    }
}

pub fn ls(g: &Globals, a: LsArgs) -> Result<i32> {
    let catalog = g.open_vault()?.catalog()?;
    let (kind, name) = match &a.filter {
        None => (None, None),
        Some(LsFilter::Kind(k)) => (Some(*k), None),
        Some(LsFilter::Name(n)) => (None, Some(n.as_str())),
    };
    for d in catalog.list_datasets(kind, name)? {
        if g.json {
            json_line(&dataset_json(&d))?;
        } else {
            let root = d.root.map(|r| r.to_hex()[..16].to_string()).unwrap_or_default();
            outln!(
                "{:<40} {root}  {:>8} files  {:>10}",
                d.name.to_string(),
                d.files,
                bytes(d.bytes)
            );
        }
    }
    Ok(0)
}

pub fn show(g: &Globals, a: ShowArgs) -> Result<i32> {
    let catalog = g.open_vault()?.catalog()?;
    let d = catalog.resolve(&a.dataset)?;
    if g.json {
        json_line(&dataset_json(&d))?;
        return Ok(0);
    }
    outln!("{}", d.name);
    outln!("  root          {}", d.root.map(|r| r.to_hex()).unwrap_or_default());
    outln!(
        "  files         {} ({} folders, {} symlinks)",
        d.files,
        d.dirs,
        d.symlinks
    );
    outln!("  logical       {} ({} bytes)", bytes(d.bytes), d.bytes);
    outln!(
        "  stored        {} added by this dataset's ingest",
        bytes(d.stored_bytes)
    );
    outln!("  source        {}", d.source.as_deref().unwrap_or("-"));
    outln!("  sealed        {}", d.sealed_at.map(timestamp).unwrap_or_default());
    let lineage = match catalog.lineage(d.id)? {
        _ if d.name.kind == Kind::Gold => "gold (ingested from source)".to_string(),
        Some(l) => {
            let inputs: Vec<String> = l.inputs.iter().map(|i| i.name.to_string()).collect();
            format!(
                "from workspace {} over {} (`dsvault lineage` for the tree)",
                l.workspace,
                inputs.join(", ")
            )
        }
        None => "-".to_string(),
    };
    outln!("  lineage       {lineage}");
    Ok(0)
}

pub fn stats(g: &Globals, a: StatsArgs) -> Result<i32> {
    let s = dsvault::ops::stats::stats(&g.open_vault()?)?;
    let price = a.price.price_per_gib_month;
    if g.json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(p) = price {
            add_cost(&mut v, s.stored_bytes, p);
            for (d, dv) in s
                .datasets
                .iter()
                .zip(v["datasets"].as_array_mut().into_iter().flatten())
            {
                add_cost(dv, d.stored_bytes, p);
            }
        }
        json_line(&v)?;
        return Ok(0);
    }
    outln!(
        "{:<40} {:>10} {:>12} {:>12} {:>12}",
        "dataset",
        "files",
        "logical",
        "added",
        "referenced"
    );
    for d in &s.datasets {
        outln!(
            "{:<40} {:>10} {:>12} {:>12} {:>12}",
            d.dataset,
            d.files,
            bytes(d.bytes),
            bytes(d.stored_bytes),
            bytes(d.referenced_stored_bytes)
        );
    }
    outln!();
    outln!(
        "vault: {} logical in {} datasets, {} stored in {} packs ({} chunks); dedup ratio {:.2}x",
        bytes(s.logical_bytes),
        s.datasets.len(),
        bytes(s.stored_bytes),
        s.packs,
        s.chunks,
        s.dedup_ratio
    );
    if let Some(p) = price {
        outln!(
            "monthly cost at {p} per GiB-month: {} for the vault's {} stored",
            money(monthly_cost(s.stored_bytes, p)),
            bytes(s.stored_bytes)
        );
        for d in s.datasets.iter().filter(|d| d.stored_bytes > 0) {
            outln!(
                "  {:<40} {:>12}  for the {} it added",
                d.dataset,
                money(monthly_cost(d.stored_bytes, p)),
                bytes(d.stored_bytes)
            );
        }
    }
    Ok(0)
}
