//! `run`: run a command in a workspace, mounted writable, and record it.
//!
//! Owns: mounting the vault at a private temporary folder, starting the command (in the
//! workspace's folder with `--cd`, its placeholders expanded by
//! [`dsvault::ops::run::expand_command`]) with `DSVAULT_WORKSPACE` (the workspace's
//! writable folder) and `DSVAULT_INPUTS` (the base datasets' folders, `:`-separated, lowest
//! base first), forwarding SIGINT/SIGTERM/SIGHUP to it, unmounting whatever happens, and
//! printing. Choosing the workspace, recording the run and deriving are
//! [`dsvault::ops::run`]'s. `dsvault run` exits with the command's status (128 + signal
//! when a signal ended it), or 1 when the run could not be set up or the derive failed.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use dsvault::ops;
use dsvault::ops::derive::{DeriveOptions, DeriveReport};
use dsvault::ops::run::{FinishedRun, MountedPaths};
use dsvault::vfs::{Scope, Vfs, VfsOptions};
use dsvault::{DatasetRef, Vault};
use dsvault_fuse::{Mount, MountOptions, Unmounter};

use super::mount::{block_stop_signals, check_mountpoint, default_threads, limit_malloc_arenas, mount_error};
use super::output::json_line;
use super::progress::Bar;
use super::Globals;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The workspace to run in (created when it does not exist).
    #[arg(long, value_parser = super::workspace::workspace_name)]
    workspace: String,
    /// A base dataset of a new workspace, lowest first (repeatable). For an existing
    /// workspace, when given, they must be its bases.
    #[arg(long = "base", value_name = "DATASET")]
    bases: Vec<DatasetRef>,
    /// Seal the workspace as derived/NAME@VERSION when the command exits 0.
    #[arg(long, value_name = "NAME@VERSION", value_parser = derive_target)]
    derive: Option<(String, String)>,
    /// With --derive: store symlinks that point outside the workspace as they are (see
    /// `derive --allow-external-symlinks`).
    #[arg(long, requires = "derive")]
    allow_external_symlinks: bool,
    /// With --derive: leave FIFOs, sockets and device nodes the command left in the
    /// workspace out of the dataset (see `derive --skip-special`).
    #[arg(long, requires = "derive")]
    skip_special: bool,
    /// Run the command in the workspace's writable folder instead of the current one.
    #[arg(long)]
    cd: bool,
    /// The command and its arguments (after `--`). No shell: placeholders are expanded in
    /// each argument: {workspace} (the writable folder), {input} (the only base's folder),
    /// {inputs} (every base's folder, each its own argument), {{ and }} (literal braces).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// `NAME@VERSION`, checked at parse time (a bad one is a usage error, exit 2).
fn derive_target(s: &str) -> std::result::Result<(String, String), String> {
    let (name, version) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?}: expected NAME@VERSION"))?;
    let name = super::ingest::dataset_name(name).map_err(|e| e.to_string())?;
    let version = super::ingest::dataset_version(version).map_err(|e| e.to_string())?;
    Ok((name, version))
}

/// What `run --json` prints.
#[derive(Serialize)]
struct RunReport {
    workspace: String,
    command: Vec<String>,
    exit_status: i32,
    started_at: i64,
    ended_at: i64,
    seconds: f64,
    workspace_path: PathBuf,
    inputs: Vec<PathBuf>,
    derived: Option<DeriveReport>,
}

pub fn run(g: &Globals, a: RunArgs) -> Result<i32> {
    let vault = g.open_vault()?;
    vault.require_writable()?;
    let ws = ops::run::workspace_for_run(&vault, &a.workspace, &a.bases)
        .with_context(|| format!("preparing workspace {}", a.workspace))?;
    // Fail before the command starts, not at its first write, when another mount is
    // changing this workspace. (The lock is let go here and taken again by this run's mount
    // at the command's first change.)
    drop(ws.lock_writer()?);
    let mp = private_mountpoint()?;
    let paths = MountedPaths::new(&mp, &ws);
    let argv = ops::run::expand_command(&a.command, &paths).inspect_err(|_| {
        let _ = std::fs::remove_dir(&mp);
    })?;
    let signals = Signals::block();
    limit_malloc_arenas();
    let served = serve(vault, &mp)?;
    let started = Instant::now();
    let started_at = now_secs();
    let status = run_command(&argv, &paths, a.cd, &signals);
    let ended_at = now_secs();
    let seconds = started.elapsed().as_secs_f64();
    served.stop();
    let _ = std::fs::remove_dir(&mp);
    // Unmounted: from now on a signal simply ends dsvault.
    signals.child_done();
    let exit_status = exit_code(status.with_context(|| format!("starting {:?}", argv[0]))?);
    let vault = g.open_vault()?;
    let finished = FinishedRun {
        workspace: ws.name.clone(),
        command: a.command.iter().map(|c| c.to_string_lossy().into_owned()).collect(),
        started_at,
        ended_at,
        duration_ms: (seconds * 1000.0) as i64,
        exit_status,
    };
    let run_id = ops::run::record(&vault, &finished).context("recording the run")?;
    let derived = match &a.derive {
        Some((name, version)) if exit_status == 0 => {
            let mut opts = DeriveOptions::new(&ws.name, name, version)?;
            opts.allow_external_symlinks = a.allow_external_symlinks;
            opts.skip_special = a.skip_special;
            let bar = Bar::new(g, "derive");
            let r = ops::run::derive_after(&vault, run_id, &finished, opts, &bar).with_context(|| {
                format!("the command succeeded (run recorded), but deriving derived/{name}@{version} failed")
            })?;
            Some(r)
        }
        _ => None,
    };
    let report = RunReport {
        workspace: ws.name.clone(),
        command: finished.command,
        exit_status,
        started_at,
        ended_at,
        seconds,
        workspace_path: paths.workspace,
        inputs: paths.inputs,
        derived,
    };
    print_report(g, &report, a.derive.is_some())?;
    Ok(exit_status)
}

/// A new empty folder only this run uses as its mount point.
fn private_mountpoint() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000 {
        let mp = base.join(format!("dsvault-run-{}-{n}", std::process::id()));
        match std::fs::create_dir(&mp) {
            Ok(()) => {
                check_mountpoint(&mp)?;
                return Ok(mp);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating mount point {}", mp.display())),
        }
    }
    bail!("no free mount point name under {}", base.display())
}

/// A mount being served on a background thread.
struct Served {
    unmounter: Unmounter,
    done: crossbeam_channel::Receiver<()>,
    mountpoint: PathBuf,
}

impl Served {
    /// Unmount (lazily if something still uses it) and wait a little for serving to end.
    fn stop(mut self) {
        if let Err(e) = self.unmounter.unmount() {
            eprintln!("dsvault: unmounting {}: {e}", self.mountpoint.display());
        }
        let _ = self.done.recv_timeout(Duration::from_secs(5));
    }
}

/// Mount the vault (workspaces writable) at `mp` and serve it on a thread.
fn serve(vault: Vault, mp: &Path) -> Result<Served> {
    let options = VfsOptions {
        workspaces: true,
        ..VfsOptions::default()
    };
    let view = Vfs::new(vault, &Scope::Vault, options).context("opening the view")?;
    let mount_options = MountOptions {
        read_only: false,
        threads: default_threads(),
        fsname: "dsvault-run".into(),
        ..MountOptions::default()
    };
    let mut mount = Mount::new(view, mp, &mount_options).map_err(|e| {
        let _ = std::fs::remove_dir(mp);
        mount_error(e, mp)
    })?;
    let unmounter = mount.unmounter();
    let (tx, done) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        if let Err(e) = mount.run() {
            tracing::warn!("serving the run's mount: {e}");
        }
        let _ = tx.send(());
    });
    Ok(Served {
        unmounter,
        done,
        mountpoint: mp.to_path_buf(),
    })
}

/// Start the command with the workspace's environment (in its folder with `cd`) and wait.
fn run_command(argv: &[OsString], paths: &MountedPaths, cd: bool, signals: &Signals) -> std::io::Result<ExitStatus> {
    let joined = paths
        .inputs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("DSVAULT_WORKSPACE", &paths.workspace)
        .env("DSVAULT_INPUTS", joined);
    if cd {
        cmd.current_dir(&paths.workspace);
    }
    let unblock = signals.set;
    // SAFETY: between fork and exec only async-signal-safe calls: unblock the signals this
    // process blocked, so the command gets its default handling.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    signals.forward_to(child.id() as i32);
    child.wait()
}

/// The exit status as a shell shows it: the code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn print_report(g: &Globals, r: &RunReport, derive_asked: bool) -> Result<()> {
    if let Some(d) = &r.derived {
        super::derive::warn_unchanged(g, d);
        if !g.json && !g.quiet {
            super::derive::warn_skipped(d);
        }
    }
    if g.json {
        return json_line(r);
    }
    if g.quiet {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "run in workspace {}: `{}` exited {} after {:.1} s (recorded)",
        r.workspace,
        ops::run::shell_words(&r.command),
        r.exit_status,
        r.seconds
    )?;
    match &r.derived {
        Some(d) => writeln!(
            out,
            "derived {}  root {}  ({} files, {} new in the store)",
            d.dataset,
            d.root,
            d.files,
            super::output::bytes(d.stored_bytes)
        )?,
        None if derive_asked => writeln!(out, "nothing derived: the command failed")?,
        None => {}
    }
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP: blocked in every thread of dsvault, forwarded to the
/// command while it runs (the command unblocks them before it starts). After the command
/// has exited (during the derive), a signal ends dsvault with 128 + the signal.
struct Signals {
    set: libc::sigset_t,
    child: Arc<AtomicI32>,
    done: Arc<AtomicBool>,
}

impl Signals {
    fn block() -> Signals {
        let set = block_stop_signals();
        let signals = Signals {
            set,
            child: Arc::new(AtomicI32::new(0)),
            done: Arc::new(AtomicBool::new(false)),
        };
        let (child, done) = (signals.child.clone(), signals.done.clone());
        std::thread::spawn(move || loop {
            let mut sig = 0;
            // SAFETY: the set is initialised and its signals are blocked in every thread.
            unsafe { libc::sigwait(&set, &mut sig) };
            let pid = child.load(Ordering::SeqCst);
            if done.load(Ordering::SeqCst) {
                let _ = std::io::stdout().flush();
                std::process::exit(128 + sig);
            }
            if pid > 0 {
                // SAFETY: sending a signal to our own child process.
                unsafe { libc::kill(pid, sig) };
            }
        });
        signals
    }

    fn forward_to(&self, pid: i32) {
        self.child.store(pid, Ordering::SeqCst);
    }

    fn child_done(&self) {
        self.done.store(true, Ordering::SeqCst);
    }
}
