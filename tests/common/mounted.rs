//! Real FUSE mounts for tests: [`mount_vault`] starts `dsvault mount` and waits for its
//! ready line; the returned [`Mounted`] guard kills the server and detaches the mount when
//! dropped, so a failing test leaves nothing mounted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::TestVault;

/// Root with /dev/fuse, or the test is skipped (it prints why and passes).
pub fn can_mount() -> bool {
    // SAFETY: geteuid cannot fail.
    let ok = unsafe { libc::geteuid() } == 0 && Path::new("/dev/fuse").exists();
    if !ok {
        eprintln!("skipped: needs root and /dev/fuse");
    }
    ok
}

/// Is something mounted at `mp`?
pub fn is_mounted(mp: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mp = mp.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*mp))
}

/// A running `dsvault mount`; dropping it stops the server and detaches the mount.
pub struct Mounted {
    child: Option<Child>,
    pub mp: PathBuf,
}

impl Mounted {
    /// Unmount cleanly and wait for the server to exit; returns its exit code.
    pub fn unmount(mut self) -> Option<i32> {
        let _ = std::process::Command::new("umount").arg(&self.mp).status();
        self.child.take().and_then(|mut c| c.wait().ok()).and_then(|s| s.code())
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

/// `dsvault mount MP` of the whole vault (workspaces writable), at a new folder `mp`.
pub fn mount_vault(v: &TestVault, mp: &Path) -> Mounted {
    mount_vault_with(v, mp, &[])
}

/// [`mount_vault`] with extra environment variables for the server.
pub fn mount_vault_with(v: &TestVault, mp: &Path, env: &[(&str, &str)]) -> Mounted {
    std::fs::create_dir_all(mp).unwrap();
    let mut cmd = v.cmd();
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .arg("mount")
        .arg(mp)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mounted = Mounted {
        child: Some(child),
        mp: mp.to_path_buf(),
    };
    assert!(line.starts_with("mounted "), "no ready line, got {line:?}");
    mounted
}
