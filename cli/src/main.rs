//! The `dsvault` command: argument parsing, progress bars, human or JSON output.
//!
//! This is its own package (`dsvault-cli`) so that the library (`dsvault`) builds without
//! clap, anyhow, indicatif, tracing-subscriber, directories or the FUSE crate: the Python
//! module and any other user of the library compile none of them.
//!
//! Owns: everything the user sees. The library below never prints; each command here calls
//! one operation and renders its report. Exit codes: 0 success, 1 error, 2 usage error.
//! A closed stdout (`dsvault ls | head`) is a normal exit.

/// `println!` that returns a closed stdout as an error (through `?`) instead of panicking, so
/// `dsvault stats | head` ends as a normal exit (see [`is_broken_pipe`]). Use it in every
/// command body; it needs a function returning `anyhow::Result`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

mod data;
mod derive;
mod diff;
mod gc;
mod ingest;
mod inspect;
mod mount;
mod output;
mod price;
mod progress;
mod remote;
mod run;
mod ui;
mod workspace;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use dsvault::Vault;

/// dsvault: immutable, deduplicated, verifiable ML datasets.
#[derive(Parser, Debug)]
#[command(name = "dsvault", version, about, max_term_width = 100)]
pub struct Cli {
    /// The vault folder (default: $DSVAULT_DIR, else the platform data dir, e.g. ~/.local/share/dsvault).
    #[arg(long, global = true, env = "DSVAULT_DIR", value_name = "DIR")]
    vault: Option<PathBuf>,
    /// Print one JSON object (one per line for lists) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars and no warnings; errors still go to stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a vault.
    Init(ingest::InitArgs),
    /// Ingest a folder as the immutable gold dataset NAME@VERSION.
    Ingest(ingest::IngestArgs),
    /// What ingesting a folder would store, storing nothing.
    Estimate(ingest::EstimateArgs),
    /// List datasets, one a line.
    Ls(inspect::LsArgs),
    /// A dataset's root hash, size, stored bytes and origin.
    Show(inspect::ShowArgs),
    /// Logical versus stored bytes, per dataset and for the vault.
    Stats(inspect::StatsArgs),
    /// Write one file of a dataset to stdout.
    Cat(data::CatArgs),
    /// Materialise a dataset as plain files in a new folder.
    Export(data::ExportArgs),
    /// Check the catalog against the store; --read-data re-hashes every stored byte.
    Verify(data::VerifyArgs),
    /// Serve the vault (or one dataset) read-only as files until unmounted or interrupted.
    Mount(mount::MountArgs),
    /// Create, list or remove workspaces (writable layers over datasets).
    Workspace(workspace::WorkspaceArgs),
    /// Seal a workspace's merged view as the derived dataset NAME@VERSION.
    Derive(derive::DeriveArgs),
    /// Run a command in a workspace mounted writable, record it, and derive on success.
    Run(run::RunArgs),
    /// The inputs of a dataset, back to gold.
    Lineage(derive::LineageArgs),
    /// Remove a derived dataset (gold only with --force-gold and a typed confirmation).
    Rm(gc::RmArgs),
    /// Reclaim stored bytes nothing references any more.
    Gc(gc::GcArgs),
    /// Rebuild or refresh the catalog from the store (refs, manifests, pack indexes).
    Sync(remote::SyncArgs),
    /// What changed between two datasets (from the catalog; reads no data).
    Diff(diff::DiffArgs),
    /// Serve a read-only web catalog of the vault (datasets, files, diffs, lineage, storage).
    Ui(ui::UiArgs),
}

/// Global settings every command sees.
pub struct Globals {
    pub vault_dir: PathBuf,
    pub json: bool,
    pub quiet: bool,
}

impl Globals {
    pub fn open_vault(&self) -> Result<Vault> {
        Vault::open(&self.vault_dir).with_context(|| format!("opening the vault at {}", self.vault_dir.display()))
    }
}

fn default_vault_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "dsvault")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".dsvault"))
}

fn main() {
    std::process::exit(parse_and_run());
}

/// Parse, run, and turn the outcome into an exit code.
fn parse_and_run() -> i32 {
    let cli = Cli::parse();
    let filter = if cli.quiet { "error" } else { "warn,fuser=error" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DSVAULT_LOG").unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    let globals = Globals {
        vault_dir: cli.vault.clone().unwrap_or_else(default_vault_dir),
        json: cli.json,
        quiet: cli.quiet,
    };
    match run(&globals, cli.command) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("dsvault: error: {}", error_text(&e));
            1
        }
    }
}

/// The error with its context, each cause once: library errors already quote the OS error
/// they wrap, so a cause whose text is already in the message is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(g: &Globals, command: Command) -> Result<i32> {
    match command {
        Command::Init(a) => ingest::init(g, a),
        Command::Ingest(a) => ingest::ingest(g, a),
        Command::Estimate(a) => ingest::estimate(g, a),
        Command::Ls(a) => inspect::ls(g, a),
        Command::Show(a) => inspect::show(g, a),
        Command::Stats(a) => inspect::stats(g, a),
        Command::Cat(a) => data::cat(g, a),
        Command::Export(a) => data::export(g, a),
        Command::Verify(a) => data::verify(g, a),
        Command::Mount(a) => mount::mount(g, a),
        Command::Workspace(a) => workspace::workspace(g, a),
        Command::Derive(a) => derive::derive(g, a),
        Command::Run(a) => run::run(g, a),
        Command::Lineage(a) => derive::lineage(g, a),
        Command::Rm(a) => gc::rm(g, a),
        Command::Gc(a) => gc::gc(g, a),
        Command::Sync(a) => remote::sync(g, a),
        Command::Diff(a) => diff::diff(g, a),
        Command::Ui(a) => ui::ui(g, a),
    }
}
