//! Mounting a view: options, the multi-threaded session, unmounting (also from another
//! thread, e.g. a signal handler), kernel readahead, and stale mount point detection.

use std::io;
use std::path::{Path, PathBuf};

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};

use crate::fs::{Breaker, ViewFs};
use dsvault::vfs::WritableView;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Mount `ro` (the kernel refuses writes before they reach the filesystem, and opens
    /// cost no request). Otherwise the view's [`WritableView`] methods decide.
    pub read_only: bool,
    /// Let users other than the one mounting use the mount (`allow_other`; a non-root user
    /// needs `user_allow_other` in /etc/fuse.conf).
    pub allow_other: bool,
    /// Threads serving requests (each reads its own cloned /dev/fuse descriptor).
    pub threads: usize,
    /// Shown as the source in /proc/mounts.
    pub fsname: String,
    /// Kernel readahead for the mount in KiB (set through /sys/class/bdi; needs root), or
    /// `None` to leave the kernel's default (128 KiB).
    pub read_ahead_kb: Option<u32>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: true,
            allow_other: false,
            threads: 4,
            fsname: "dsvault".into(),
            read_ahead_kb: Some(4096),
        }
    }
}

impl MountOptions {
    fn config(&self) -> Config {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(self.fsname.clone()),
            MountOption::Subtype("dsvault".into()),
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::NoAtime,
            MountOption::DefaultPermissions,
        ];
        if self.read_only {
            config.mount_options.push(MountOption::RO);
        }
        config.acl = if self.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(self.threads.max(1));
        config.clone_fd = true;
        config
    }
}

/// A mounted view, not yet serving: call [`Mount::run`].
pub struct Mount<V: WritableView> {
    session: Session<ViewFs<V>>,
    mountpoint: PathBuf,
    breaker: std::sync::Arc<Breaker>,
}

impl<V: WritableView> Mount<V> {
    /// Mount `view` at `mountpoint`. Requests queue until [`Mount::run`] serves them.
    pub fn new(view: V, mountpoint: &Path, options: &MountOptions) -> io::Result<Self> {
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let fs = ViewFs {
            view,
            uid,
            gid,
            read_only: options.read_only,
            passthrough: Default::default(),
            breaker: Default::default(),
            listing: Default::default(),
            folders: Default::default(),
        };
        let breaker = fs.breaker.clone();
        let session = Session::new(fs, mountpoint, &options.config())?;
        if let Some(kb) = options.read_ahead_kb {
            if let Err(e) = bdi_read_ahead(mountpoint, kb) {
                tracing::debug!("could not set readahead of {}: {e}", mountpoint.display());
            }
        }
        let mut mount = Mount {
            session,
            mountpoint: mountpoint.to_path_buf(),
            breaker,
        };
        let unmounter = mount.unmounter();
        mount.breaker.arm(unmounter);
        Ok(mount)
    }

    /// Something that unmounts this mount from any thread (which ends [`Mount::run`]).
    pub fn unmounter(&mut self) -> Unmounter {
        Unmounter {
            inner: self.session.unmount_callable(),
            mountpoint: self.mountpoint.clone(),
        }
    }

    /// Serve requests until the filesystem is unmounted (by `umount`, `fusermount3 -u` or an
    /// [`Unmounter`]); an error if it ended because of an internal error.
    pub fn run(self) -> io::Result<()> {
        let breaker = self.breaker.clone();
        self.session.run()?;
        if breaker.is_broken() {
            return Err(io::Error::other(
                "the mount was ended after an internal error left its state broken (see the log above)",
            ));
        }
        Ok(())
    }
}

/// Unmounts a mount from another thread.
pub struct Unmounter {
    inner: SessionUnmounter,
    mountpoint: PathBuf,
}

impl Unmounter {
    /// Unmount; if the mount is busy (a process has a file open or its working folder
    /// inside), detach it lazily instead: it disappears from the tree at once and the kernel
    /// drops it when the last user lets go.
    pub fn unmount(&mut self) -> io::Result<()> {
        match self.inner.unmount() {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => unmount_lazily(&self.mountpoint),
            Err(e) => Err(e),
        }
    }
}

/// `umount2(path, MNT_DETACH)`.
fn unmount_lazily(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when `path` is a FUSE mount point whose server is gone (`stat` gives ENOTCONN).
pub fn is_stale_mount(path: &Path) -> bool {
    matches!(std::fs::metadata(path), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Set the kernel readahead (KiB) of the file system mounted at `mountpoint`, through
/// `/sys/class/bdi/<major>:<minor>/read_ahead_kb`. The device comes from
/// /proc/self/mountinfo, so this sends no request to the file system itself.
pub fn bdi_read_ahead(mountpoint: &Path, kb: u32) -> io::Result<()> {
    let target = mountpoint.canonicalize()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dev = info
        .lines()
        .rev()
        .find_map(|line| {
            let mut fields = line.split(' ');
            let dev = fields.nth(2)?;
            let point = fields.nth(1)?;
            (unescape_mountinfo(point) == target.as_os_str().to_string_lossy()).then(|| dev.to_string())
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "mount not in /proc/self/mountinfo"))?;
    std::fs::write(format!("/sys/class/bdi/{dev}/read_ahead_kb"), kb.to_string())
}

/// Undo mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
