//! Real FUSE mounts for tests: [`mount_vault`] starts `dsvault mount` and waits for its
//! ready line; the returned [`Mounted`] guard kills the server and detaches the mount when
//! dropped, so a failing test leaves nothing mounted.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use super::TestVault;

/// Root with /dev/fuse, or the test is skipped (fails under CI: see [`super::require`]).
#[allow(unused_imports)]
pub use super::require::can_mount;

/// Is something mounted at `mp`?
pub fn is_mounted(mp: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mp = mp.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*mp))
}

/// A running `dsvault mount`; dropping it stops the server and detaches the mount.
pub struct Mounted {
    child: Option<Child>,
    /// The server's stderr, when [`spawn_mount`] was asked to keep it.
    stderr: Option<ChildStderr>,
    pub mp: PathBuf,
}

impl Mounted {
    /// Unmount cleanly and wait for the server to exit; returns its exit code. A mount that
    /// is briefly busy (the kernel still releasing what a finished command had open) is
    /// retried for 10 s; one still busy then is detached (`umount -l`) rather than waited on
    /// for ever, so the server exits either way.
    pub fn unmount(mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            let _ = std::process::Command::new("umount").arg(&self.mp).status();
            if !is_mounted(&self.mp) {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                eprintln!("{} still busy after 10 s: detached (umount -l)", self.mp.display());
                let _ = std::process::Command::new("umount").arg("-l").arg(&self.mp).status();
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.child.take().and_then(|mut c| c.wait().ok()).and_then(|s| s.code())
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("server running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Wait for the server to exit; its exit code (None on timeout or signal).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("server running");
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Stop the server with SIGTERM (SIGKILL if it has not exited after `timeout`) and
    /// return what it wrote to stderr (empty unless kept).
    pub fn stop(&mut self, timeout: Duration) -> String {
        self.signal(libc::SIGTERM);
        if self.wait(timeout).is_none() && self.child.is_some() {
            self.signal(libc::SIGKILL);
            self.wait(Duration::from_secs(10));
        }
        self.stderr()
    }

    /// What the server wrote to stderr (call after it exited; empty unless kept).
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mp) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}

/// Start `cmd` (a `dsvault … mount … MP` command) and wait for its ready line. With
/// `keep_stderr` the server's stderr is kept for [`Mounted::stderr`]; otherwise it goes to
/// the test's.
pub fn spawn_mount(mut cmd: Command, mp: &Path, keep_stderr: bool) -> Mounted {
    let errors = if keep_stderr { Stdio::piped() } else { Stdio::inherit() };
    let mut child = cmd.stdout(Stdio::piped()).stderr(errors).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mounted = Mounted {
        stderr: child.stderr.take(),
        child: Some(child),
        mp: mp.to_path_buf(),
    };
    assert!(line.starts_with("mounted "), "no ready line, got {line:?}");
    mounted
}

/// `dsvault mount MP` of the whole vault (workspaces writable), at a new folder `mp`.
pub fn mount_vault(v: &TestVault, mp: &Path) -> Mounted {
    mount_vault_with(v, mp, &[])
}

/// [`mount_vault`] with extra environment variables for the server.
pub fn mount_vault_with(v: &TestVault, mp: &Path, env: &[(&str, &str)]) -> Mounted {
    std::fs::create_dir_all(mp).unwrap();
    let mut cmd = v.cmd();
    cmd.envs(env.iter().copied()).arg("mount").arg(mp);
    spawn_mount(cmd, mp, false)
}

/// The server environment that turns FUSE passthrough off: what kernels before 6.9 and
/// non-root mounts get (every read and write of a workspace file through the mount).
pub const WITHOUT_PASSTHROUGH: &[(&str, &str)] = &[("DSVAULT_NO_PASSTHROUGH", "1")];

/// Run `check` with the environment of a mount with FUSE passthrough (where the kernel
/// offers it), then of one without.
pub fn with_and_without_passthrough(check: impl Fn(&[(&str, &str)])) {
    check(&[]);
    check(WITHOUT_PASSTHROUGH);
}
