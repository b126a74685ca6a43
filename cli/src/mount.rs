//! `mount`: serve a vault (or one dataset) through FUSE until unmounted or interrupted.
//! Datasets are read-only; a whole-vault mount has writable workspaces under `work/`
//! unless `--read-only` is given.
//!
//! Owns: checking the mount point, the "mounted" line, and signals: SIGINT, SIGTERM and
//! SIGHUP unmount (lazily if busy) and the command exits 0 with the mount gone. The view
//! (`dsvault::vfs::Vfs`) is handed to `dsvault_fuse` as it is: no adapter, no errno here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use dsvault::vfs::{Scope, Vfs, VfsOptions};
use dsvault::DatasetRef;
use dsvault_fuse::{Mount, MountOptions};

use super::Globals;

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Mount only this dataset (gold/NAME@VERSION, derived/NAME@VERSION or NAME@VERSION) at
    /// MOUNTPOINT; without it the whole vault is mounted (gold/, derived/, work/).
    #[arg(value_name = "DATASET")]
    first: String,
    /// An existing, empty folder.
    #[arg(value_name = "MOUNTPOINT")]
    second: Option<PathBuf>,
    /// Let other users (and containers running as other users) read the mount. A non-root
    /// user needs `user_allow_other` in /etc/fuse.conf.
    #[arg(long)]
    allow_other: bool,
    /// Memory for verified chunks, in MiB.
    #[arg(long, default_value_t = 8, value_name = "MIB")]
    cache_mib: u64,
    /// Threads serving FUSE requests (default: the number of CPUs, 2 to 8).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Mount a whole vault read-only: `work/` stays empty, and opening files costs no
    /// request (a single dataset is always mounted read-only).
    #[arg(long)]
    read_only: bool,
    /// Disk space for the read cache of a remote store (e.g. 512M, 4G; default 4G).
    #[arg(long, value_name = "SIZE", value_parser = super::remote::parse_size)]
    cache_size: Option<u64>,
}

pub fn mount(g: &Globals, a: MountArgs) -> Result<i32> {
    let (dataset, mountpoint) = match a.second {
        Some(mp) => (Some(a.first.parse::<DatasetRef>()?), mp),
        None => (None, PathBuf::from(&a.first)),
    };
    check_mountpoint(&mountpoint)?;
    // Block the stop signals before any thread starts, so that only the waiter gets them.
    let signals = StopSignals::block();
    limit_malloc_arenas();
    let vault = g.open_vault()?;
    // A user who may only read the vault mounts it read-only: its workspaces are not theirs.
    let read_only = a.read_only || dataset.is_some() || !vault.writable();
    super::remote::apply_cache_size(&vault, a.cache_size);
    let scope = dataset.map_or(Scope::Vault, Scope::Dataset);
    let options = VfsOptions {
        cache_bytes: a.cache_mib << 20,
        workspaces: !read_only,
        ..VfsOptions::default()
    };
    let view = Vfs::new(vault, &scope, options).context("opening the view")?;
    let what = view
        .dataset()
        .unwrap_or_else(|| format!("vault {}", view.vault().dir().display()));
    let mount_options = MountOptions {
        allow_other: a.allow_other,
        threads: a.threads.unwrap_or_else(default_threads),
        read_only,
        ..MountOptions::default()
    };
    let mut mounted = Mount::new(view, &mountpoint, &mount_options).map_err(|e| mount_error(e, &mountpoint))?;
    signals.unmount_on_signal(mounted.unmounter());
    announce(g, &what, &mountpoint, read_only)?;
    mounted
        .run()
        .with_context(|| format!("serving {}", mountpoint.display()))?;
    Ok(0)
}

pub(super) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

/// Chunk buffers (up to 2 MiB) freed on one thread and allocated on another would otherwise
/// spread over one glibc arena per thread and hold RSS well above the chunk cache's bound.
pub(super) fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before the serving threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn announce(g: &Globals, what: &str, mountpoint: &Path, read_only: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if g.json {
        let line = serde_json::json!({ "mounted": what, "mountpoint": mountpoint, "read_only": read_only });
        writeln!(out, "{line}")?;
    } else {
        let how = if read_only {
            "read-only"
        } else {
            "workspaces writable under work/"
        };
        writeln!(
            out,
            "mounted {what} at {mp} ({how}); stop with Ctrl-C or umount {mp}",
            mp = mountpoint.display()
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The mount point must be an existing folder, and not a dead mount left by a killed process.
pub(super) fn check_mountpoint(mp: &Path) -> Result<()> {
    match std::fs::metadata(mp) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("mount point {} is not a folder", mp.display()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "mount point {mp} is a stale mount left by a process that is gone; clear it with `umount -l {mp}` (or `fusermount3 -u {mp}`) and mount again",
            mp = mp.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mount point {} does not exist; create the folder first", mp.display())
        }
        Err(e) => Err(e).with_context(|| format!("checking mount point {}", mp.display())),
    }
}

pub(super) fn mount_error(e: std::io::Error, mp: &Path) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) if !Path::new("/dev/fuse").exists() => {
            "; /dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, pass --device /dev/fuse"
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "; mounting needs root or fusermount3 (apt-get install fuse3), and --allow-other needs user_allow_other in /etc/fuse.conf"
        }
        _ => "",
    };
    anyhow::anyhow!("mounting at {}: {e}{hint}", mp.display())
}

/// Block SIGINT, SIGTERM and SIGHUP in this thread (and the threads it starts from now on);
/// returns their set, for `sigwait`.
pub(super) fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask manipulation on a zeroed, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// SIGINT, SIGTERM and SIGHUP, blocked in every thread and taken by one waiting thread.
struct StopSignals(libc::sigset_t);

impl StopSignals {
    fn block() -> StopSignals {
        StopSignals(block_stop_signals())
    }

    /// On the first signal, unmount; if serving has not ended a few seconds later (files
    /// still open in a lazily detached mount), exit anyway: the mount is already gone.
    fn unmount_on_signal(self, mut unmounter: dsvault_fuse::Unmounter) {
        std::thread::spawn(move || {
            let mut sig = 0;
            // SAFETY: the set is initialised and the signals in it are blocked.
            unsafe { libc::sigwait(&self.0, &mut sig) };
            tracing::info!("signal {sig}: unmounting");
            if let Err(e) = unmounter.unmount() {
                eprintln!("dsvault: unmounting failed: {e}");
            }
            std::thread::sleep(Duration::from_secs(5));
            std::process::exit(0);
        });
    }
}
