//! `mount`: serve a vault (or one dataset) read-only through FUSE until unmounted or
//! interrupted.
//!
//! Owns: checking the mount point, the adapter from `dsvault::vfs::Vfs` to the
//! `dsvault_fuse::ReadOnlyView` trait, the "mounted" line, and signals: SIGINT, SIGTERM and
//! SIGHUP unmount (lazily if busy) and the command exits 0 with the mount gone.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use dsvault::vfs::{self, Scope, Vfs, VfsError, VfsOptions};
use dsvault::DatasetRef;
use dsvault_fuse::{Mount, MountOptions, ReadOnlyView, ViewError, ViewResult};

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
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    cache_mib: u64,
    /// Threads serving FUSE requests (default: the number of CPUs, 2 to 8).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Disk space for the block cache of a remote store (e.g. 512M, 4G; default 4G).
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
    super::remote::apply_cache_size(&vault, a.cache_size);
    let scope = dataset.map_or(Scope::Vault, Scope::Dataset);
    let options = VfsOptions {
        cache_bytes: a.cache_mib << 20,
        ..VfsOptions::default()
    };
    let view = Vfs::new(vault, &scope, options).context("opening the view")?;
    let what = view
        .dataset()
        .unwrap_or_else(|| format!("vault {}", view.vault().dir().display()));
    let mount_options = MountOptions {
        allow_other: a.allow_other,
        threads: a.threads.unwrap_or_else(default_threads),
        ..MountOptions::default()
    };
    let mut mounted =
        Mount::new(VfsView(view), &mountpoint, &mount_options).map_err(|e| mount_error(e, &mountpoint))?;
    signals.unmount_on_signal(mounted.unmounter());
    announce(g, &what, &mountpoint)?;
    mounted
        .run()
        .with_context(|| format!("serving {}", mountpoint.display()))?;
    Ok(0)
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

/// Chunk buffers (up to 2 MiB) freed on one thread and allocated on another would otherwise
/// spread over one glibc arena per thread and hold RSS well above the chunk cache's bound.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before the serving threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn announce(g: &Globals, what: &str, mountpoint: &Path) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if g.json {
        let line = serde_json::json!({ "mounted": what, "mountpoint": mountpoint, "read_only": true });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "mounted {what} at {mp} (read-only); stop with Ctrl-C or umount {mp}",
            mp = mountpoint.display()
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The mount point must be an existing folder, and not a dead mount left by a killed process.
fn check_mountpoint(mp: &Path) -> Result<()> {
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

fn mount_error(e: std::io::Error, mp: &Path) -> anyhow::Error {
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

/// SIGINT, SIGTERM and SIGHUP, blocked in every thread and taken by one waiting thread.
struct StopSignals(libc::sigset_t);

impl StopSignals {
    fn block() -> StopSignals {
        // SAFETY: plain signal-mask manipulation on a zeroed, initialised set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            StopSignals(set)
        }
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

/// `dsvault_fuse::ReadOnlyView` over the library's view.
struct VfsView(Vfs);

/// Folder entries returned per `readdir` call.
const READDIR_PAGE: usize = 512;

fn view_error(e: VfsError) -> ViewError {
    match e {
        VfsError::NotFound => ViewError::NotFound,
        VfsError::NotADirectory => ViewError::NotADirectory,
        VfsError::IsADirectory => ViewError::IsADirectory,
        VfsError::NotASymlink => ViewError::NotASymlink,
        VfsError::NoAttribute => ViewError::NoAttribute,
        VfsError::BadHandle => ViewError::BadHandle,
        VfsError::Damaged(_) => ViewError::Damaged,
        VfsError::Failed(e) => {
            tracing::warn!("mount: {e}");
            ViewError::Failed
        }
    }
}

fn attr(a: vfs::Attr) -> dsvault_fuse::Attr {
    dsvault_fuse::Attr {
        ino: a.ino,
        kind: node_kind(a.kind),
        size: a.size,
        perm: a.perm,
        mtime: a.mtime,
        immutable: a.immutable,
    }
}

fn node_kind(k: vfs::NodeKind) -> dsvault_fuse::NodeKind {
    match k {
        vfs::NodeKind::Dir => dsvault_fuse::NodeKind::Dir,
        vfs::NodeKind::File => dsvault_fuse::NodeKind::File,
        vfs::NodeKind::Symlink => dsvault_fuse::NodeKind::Symlink,
    }
}

impl ReadOnlyView for VfsView {
    type Data = vfs::ReadBytes;

    fn lookup(&self, parent: u64, name: &OsStr) -> ViewResult<dsvault_fuse::Attr> {
        self.0.lookup(parent, name.as_bytes()).map(attr).map_err(view_error)
    }

    fn getattr(&self, ino: u64) -> ViewResult<dsvault_fuse::Attr> {
        self.0.getattr(ino).map(attr).map_err(view_error)
    }

    fn readlink(&self, ino: u64) -> ViewResult<Vec<u8>> {
        self.0.readlink(ino).map_err(view_error)
    }

    fn opendir(&self, ino: u64) -> ViewResult<u64> {
        self.0.opendir(ino).map_err(view_error)
    }

    fn readdir(&self, ino: u64, fh: u64, offset: u64) -> ViewResult<Vec<dsvault_fuse::DirEntry>> {
        let entries = self.0.readdir(ino, fh, offset, READDIR_PAGE).map_err(view_error)?;
        Ok(entries
            .into_iter()
            .map(|e| dsvault_fuse::DirEntry {
                ino: e.ino,
                offset: e.offset,
                kind: node_kind(e.kind),
                name: OsString::from_vec(e.name),
            })
            .collect())
    }

    fn readdir_plus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        max: usize,
    ) -> ViewResult<Vec<(dsvault_fuse::DirEntry, dsvault_fuse::Attr)>> {
        let entries = self
            .0
            .readdir_plus(ino, fh, offset, max.min(READDIR_PAGE))
            .map_err(view_error)?;
        Ok(entries
            .into_iter()
            .map(|(e, a)| {
                let e = dsvault_fuse::DirEntry {
                    ino: e.ino,
                    offset: e.offset,
                    kind: node_kind(e.kind),
                    name: OsString::from_vec(e.name),
                };
                (e, attr(a))
            })
            .collect())
    }

    fn releasedir(&self, fh: u64) {
        self.0.releasedir(fh)
    }

    fn open(&self, ino: u64) -> ViewResult<u64> {
        self.0.open(ino).map_err(view_error)
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> ViewResult<vfs::ReadBytes> {
        match fh {
            0 => self.0.read_ino(ino, offset, size),
            fh => self.0.read(fh, offset, size),
        }
        .map_err(view_error)
    }

    fn release(&self, fh: u64) {
        self.0.release(fh)
    }

    fn getxattr(&self, ino: u64, name: &OsStr) -> ViewResult<Vec<u8>> {
        self.0.getxattr(ino, name.as_bytes()).map_err(view_error)
    }

    fn listxattr(&self, ino: u64) -> ViewResult<Vec<OsString>> {
        let names = self.0.listxattr(ino).map_err(view_error)?;
        Ok(names.into_iter().map(OsString::from).collect())
    }

    fn statfs(&self) -> ViewResult<dsvault_fuse::StatFs> {
        let s = self.0.statfs().map_err(view_error)?;
        Ok(dsvault_fuse::StatFs {
            bytes: s.bytes,
            files: s.files,
        })
    }
}
