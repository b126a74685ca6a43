//! `diff A B [PATH]`: what changed between two datasets, as text or one JSON object.

use anyhow::{Context, Result};
use clap::Args;

use dsvault::ops::diff::{self, DiffItem, DiffReport, Side};
use dsvault::DatasetRef;

use super::output::{bytes, json_line};
use super::Globals;

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The dataset to compare from (gold/NAME@VERSION, derived/NAME@VERSION or NAME@VERSION).
    a: DatasetRef,
    /// The dataset to compare to.
    b: DatasetRef,
    /// Compare only what is under this folder (or this one file).
    path: Option<std::path::PathBuf>,
}

pub fn diff(g: &Globals, a: DiffArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    let path = a
        .path
        .as_ref()
        .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()));
    let report = diff::diff(&vault, &a.a, &a.b, path).with_context(|| format!("comparing {} with {}", a.a, a.b))?;
    if g.json {
        json_line(&report)?;
    } else {
        print_text(&report)?;
    }
    Ok(0)
}

fn print_text(r: &DiffReport) -> Result<()> {
    let place = r.path.as_ref().map(|p| format!(" under {p}")).unwrap_or_default();
    outln!("{} -> {}{place}", r.a, r.b);
    for c in &r.changes {
        outln!("{}", change_line(c));
    }
    let t = &r.totals;
    outln!(
        "{} added ({}), {} removed ({}), {} modified ({}), {} mode, {} symlink target, {} type changed, {} unchanged",
        t.added,
        bytes(t.added_bytes),
        t.removed,
        bytes(t.removed_bytes),
        t.modified,
        bytes(t.modified_bytes),
        t.mode,
        t.target,
        t.type_changed,
        t.unchanged
    );
    outln!(
        "{} of {}'s {} ({:.1}%) already stored by {}; {} new",
        bytes(t.b_bytes_in_a),
        r.b,
        bytes(t.b_bytes),
        t.share_in_a * 100.0,
        r.a,
        bytes(t.new_bytes)
    );
    Ok(())
}

/// `M path  1.0 KiB -> 2.0 KiB, 1.0 KiB new` and the like.
pub fn change_line(c: &DiffItem) -> String {
    let marker = match c.change {
        diff::Change::Added => "+",
        diff::Change::Removed => "-",
        diff::Change::Modified => "M",
        diff::Change::Mode => "m",
        diff::Change::Target => "T",
        diff::Change::Type => "K",
    };
    format!("{marker} {}  {}", c.path, change_detail(c))
}

fn describe(s: &Side) -> String {
    match (&s.target, s.kind) {
        (Some(t), _) => format!("symlink -> {t}"),
        (None, "file") => format!("file {}", bytes(s.size)),
        (None, kind) => kind.to_string(),
    }
}

fn change_detail(c: &DiffItem) -> String {
    let new = c.new_bytes.map(|n| format!(", {} new", bytes(n))).unwrap_or_default();
    let mode = match (&c.a, &c.b) {
        (Some(a), Some(b)) if a.mode != b.mode => format!(", mode {} -> {}", a.mode, b.mode),
        _ => String::new(),
    };
    match (&c.a, &c.b) {
        (None, Some(b)) => format!("{} {}{new}", describe(b), b.mode),
        (Some(a), None) => format!("{} {}", describe(a), a.mode),
        (Some(a), Some(b)) if c.change == diff::Change::Mode => format!("{} -> {}", a.mode, b.mode),
        (Some(a), Some(b)) => format!("{} -> {}{mode}{new}", describe(a), describe(b)),
        (None, None) => String::new(),
    }
}
