//! `derive` and `lineage`.

use anyhow::{Context, Result};
use clap::Args;

use dsvault::ops::derive::{self, DeriveOptions, DeriveReport};
use dsvault::ops::lineage::{self, LineageNode};
use dsvault::DatasetRef;

use super::output::{bytes, json_line, json_path, print_sealed, timestamp};
use super::progress::Bar;
use super::Globals;

#[derive(Args, Debug)]
pub struct DeriveArgs {
    /// The workspace whose merged view (bases + upper layer - deletions) to seal.
    #[arg(value_parser = super::workspace::workspace_name)]
    workspace: String,
    /// Dataset name (becomes derived/NAME@VERSION).
    #[arg(long, value_parser = super::ingest::dataset_name)]
    name: String,
    /// Dataset version; derived/NAME@VERSION can never change once sealed.
    #[arg(long, value_parser = super::ingest::dataset_version)]
    version: String,
    /// The command that produced the workspace's content, recorded in the lineage.
    #[arg(long, value_name = "TEXT")]
    command: Option<String>,
    /// Worker threads for the upper layer (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Store symlinks that point outside the workspace (absolute, or `..` beyond its top)
    /// as they are, instead of refusing them.
    #[arg(long)]
    allow_external_symlinks: bool,
    /// Leave FIFOs, sockets and device nodes out of the dataset (they are listed as
    /// skipped) instead of refusing the derive.
    #[arg(long)]
    skip_special: bool,
}

#[derive(Args, Debug)]
pub struct LineageArgs {
    /// gold/NAME@VERSION, derived/NAME@VERSION or NAME@VERSION.
    dataset: DatasetRef,
}

pub fn derive(g: &Globals, a: DeriveArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    let mut opts = DeriveOptions::new(&a.workspace, &a.name, &a.version)?;
    opts.command = a.command;
    opts.allow_external_symlinks = a.allow_external_symlinks;
    opts.skip_special = a.skip_special;
    if let Some(t) = a.threads {
        opts.threads = t.max(1);
    }
    let bar = Bar::new(g, "derive");
    let context = || {
        format!(
            "deriving derived/{}@{} from workspace {}",
            a.name, a.version, a.workspace
        )
    };
    let mut r = derive::derive(&vault, &opts, &bar).with_context(context)?;
    warn_unchanged(g, &r);
    if g.json {
        for s in &mut r.skipped {
            s.path = json_path(&s.path);
        }
        json_line(&r)?;
    } else if !g.quiet {
        print_derive(&r)?;
    }
    Ok(0)
}

/// On stderr (unless --quiet), when a derive sealed exactly its only base's tree: most often
/// the command wrote somewhere else (see `run --cd` and its placeholders).
pub fn warn_unchanged(g: &Globals, r: &DeriveReport) {
    if r.unchanged && !g.quiet {
        eprintln!(
            "dsvault: warning: the workspace is unchanged: {} has the same root as {}",
            r.dataset, r.inputs[0]
        );
    }
}

fn print_derive(r: &DeriveReport) -> Result<()> {
    print_sealed(&r.dataset, &r.root, r.already_present)?;
    outln!(
        "  {} files ({} unchanged from the bases, {} from the workspace), {} folders, {} symlinks",
        r.files,
        r.files_referenced,
        r.files_from_upper,
        r.dirs,
        r.symlinks
    );
    outln!(
        "  {} logical, {} new in the store ({:.1} s)",
        bytes(r.bytes),
        bytes(r.stored_bytes),
        r.seconds
    );
    warn_skipped(r);
    Ok(())
}

/// A warning for each special file a derive left out (`--skip-special`).
pub fn warn_skipped(r: &DeriveReport) {
    for s in &r.skipped {
        eprintln!("dsvault: warning: skipped {} ({})", s.path.display(), s.reason);
    }
}

pub fn lineage(g: &Globals, a: LineageArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    let tree = lineage::lineage(&vault, &a.dataset).with_context(|| format!("lineage of {}", a.dataset))?;
    if g.json {
        json_line(&tree)?;
    } else {
        print_node(&tree, "", "")?;
    }
    Ok(0)
}

/// One line per dataset, children indented under their parent.
fn print_node(n: &LineageNode, first: &str, rest: &str) -> Result<()> {
    outln!("{first}{}", describe(n));
    for (i, input) in n.inputs.iter().enumerate() {
        let last = i + 1 == n.inputs.len();
        let (branch, pad) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        print_node(input, &format!("{rest}{branch}"), &format!("{rest}{pad}"))?;
    }
    Ok(())
}

fn describe(n: &LineageNode) -> String {
    let root = n.root.map(|r| r.to_hex()[..16].to_string()).unwrap_or_default();
    let mut text = format!("{}  root {root}", n.dataset);
    if !n.present {
        text.push_str("  (no longer in the vault)");
        return text;
    }
    let Some(ws) = &n.workspace else {
        text.push_str("  (gold)");
        return text;
    };
    text.push_str(&format!("  workspace {ws}"));
    if let Some(c) = &n.command {
        text.push_str(&format!(", command {c:?}"));
    }
    if let Some(s) = n.exit_status {
        text.push_str(&format!(", exit {s}"));
    }
    let who = [n.user.as_deref(), n.host.as_deref()];
    if let [Some(u), Some(h)] = who {
        text.push_str(&format!(", by {u}@{h}"));
    }
    if let Some(t) = n.derived_at {
        text.push_str(&format!(", {}", timestamp(t)));
    }
    text
}
