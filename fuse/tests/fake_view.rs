//! The filesystem against a small fake view, mounted for real: replies, errno mapping and
//! EROFS, with no vault behind it (a small fake implements the library's view traits).
//! Needs root and /dev/fuse: skipped otherwise, failed under CI (`tests/common/require.rs`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::SystemTime;

use dsvault::vfs::{Attr, DirEntry, NodeKind, OpenedDir, ReadOnlyView, StatFs, VfsError, VfsResult, WritableView};
use dsvault_fuse::{Mount, MountOptions};

/// The suite's one rule for tests that need root and /dev/fuse.
#[path = "../../tests/common/require.rs"]
mod require;

/// `/hello.txt` (readable), `/broken.bin` (damaged: EIO on read); looking up `/bug` panics
/// (a bug in a view), `/poison` panics holding [`STATE`], and `/after-poison` then needs it.
struct Fake;

const HELLO: &[u8] = b"hello from a fake view\n";

/// Shared state of the fake view, for a panic to poison.
static STATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn attr(ino: u64) -> VfsResult<Attr> {
    let (kind, size, perm) = match ino {
        1 => (NodeKind::Dir, 0, 0o555),
        2 => (NodeKind::File, HELLO.len() as u64, 0o444),
        3 => (NodeKind::File, 10, 0o444),
        _ => return Err(VfsError::NotFound),
    };
    Ok(Attr {
        ino,
        kind,
        size,
        perm,
        mtime: SystemTime::UNIX_EPOCH,
        immutable: true,
        owner: None,
        local: None,
        listing: None,
    })
}

impl ReadOnlyView for Fake {
    type Data = Vec<u8>;
    fn lookup(&self, parent: u64, name: &[u8]) -> VfsResult<Attr> {
        match (parent, std::str::from_utf8(name).ok()) {
            (1, Some("hello.txt")) => attr(2),
            (1, Some("broken.bin")) => attr(3),
            (1, Some("bug")) => panic!("a bug in the view"),
            (1, Some("poison")) => {
                let _held = STATE.lock().unwrap();
                panic!("a bug while updating shared state")
            }
            (1, Some("after-poison")) => {
                let _held = STATE.lock().expect("state lock");
                attr(2)
            }
            _ => Err(VfsError::NotFound),
        }
    }
    fn getattr(&self, ino: u64) -> VfsResult<Attr> {
        attr(ino)
    }
    fn readlink(&self, _ino: u64) -> VfsResult<Vec<u8>> {
        Err(VfsError::NotASymlink)
    }
    fn opendir(&self, ino: u64) -> VfsResult<OpenedDir> {
        if attr(ino)?.kind != NodeKind::Dir {
            return Err(VfsError::NotADirectory);
        }
        Ok(OpenedDir { fh: 1, immutable: true })
    }
    fn readdir(&self, ino: u64, _fh: u64, offset: u64, _max: usize) -> VfsResult<Vec<DirEntry>> {
        if ino != 1 {
            return Err(VfsError::NotADirectory);
        }
        let all = [(2, "hello.txt"), (3, "broken.bin")];
        Ok(all
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (ino, n))| DirEntry {
                ino: *ino,
                offset: i as u64 + 1,
                kind: NodeKind::File,
                name: n.as_bytes().to_vec(),
            })
            .collect())
    }
    fn releasedir(&self, _fh: u64) {}
    fn open(&self, _ino: u64) -> VfsResult<u64> {
        Ok(7)
    }
    fn read(&self, ino: u64, _fh: u64, offset: u64, size: u32) -> VfsResult<Vec<u8>> {
        match ino {
            2 => {
                let start = (offset as usize).min(HELLO.len());
                let end = (start + size as usize).min(HELLO.len());
                Ok(HELLO[start..end].to_vec())
            }
            _ => Err(VfsError::Damaged(Arc::new(dsvault::Error::Damaged(
                "broken.bin is damaged".into(),
            )))),
        }
    }
    fn release(&self, _fh: u64) {}
    fn getxattr(&self, ino: u64, name: &[u8]) -> VfsResult<Vec<u8>> {
        match (ino, name) {
            (2, b"user.fake") => Ok(b"yes".to_vec()),
            _ => Err(VfsError::NoAttribute),
        }
    }
    fn listxattr(&self, _ino: u64) -> VfsResult<Vec<Vec<u8>>> {
        Ok(vec![b"user.fake".to_vec()])
    }
    fn statfs(&self) -> VfsResult<StatFs> {
        Ok(StatFs {
            bytes: 4096 * 10,
            files: 2,
            free_bytes: 0,
        })
    }
}

/// Read-only: every write-type operation keeps its EROFS default.
impl WritableView for Fake {}

/// The fake view mounted in a fresh temporary folder and served on a thread; `None` (test
/// skipped, or failed under CI) without root or /dev/fuse. The caller unmounts.
struct Served {
    /// Removed when the test ends.
    _dir: tempfile::TempDir,
    mp: std::path::PathBuf,
    unmounter: dsvault_fuse::Unmounter,
    server: std::thread::JoinHandle<std::io::Result<()>>,
}

/// The errno a call failed with, if it failed.
fn code<T>(result: std::io::Result<T>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

fn serve_fake() -> Option<Served> {
    if !require::can_mount() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let options = MountOptions {
        read_ahead_kb: None,
        ..MountOptions::default()
    };
    let mut mount = Mount::new(Fake, &mp, &options).unwrap();
    let unmounter = mount.unmounter();
    let server = std::thread::spawn(move || mount.run());
    Some(Served {
        _dir: dir,
        mp,
        unmounter,
        server,
    })
}

#[test]
fn a_fake_view_mounts_reads_and_refuses_writes() {
    let Some(mut fake) = serve_fake() else {
        return;
    };
    let mp = fake.mp.clone();

    let result = std::panic::catch_unwind(|| {
        assert_eq!(fs::read(mp.join("hello.txt")).unwrap(), HELLO);
        assert_eq!(
            fs::metadata(mp.join("hello.txt")).unwrap().permissions().mode() & 0o777,
            0o444
        );
        let mut names: Vec<_> = fs::read_dir(&mp).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["broken.bin", "hello.txt"]);
        assert_eq!(code(fs::read(mp.join("broken.bin")).map(|_| ())), Some(libc::EIO));
        assert_eq!(code(fs::metadata(mp.join("missing")).map(|_| ())), Some(libc::ENOENT));
        // A panic in a request's handler answers that request EIO; the mount serves on.
        for _ in 0..3 {
            assert_eq!(code(fs::metadata(mp.join("bug")).map(|_| ())), Some(libc::EIO));
        }
        assert_eq!(fs::read(mp.join("hello.txt")).unwrap(), HELLO);
        assert_eq!(code(fs::File::create(mp.join("new")).map(|_| ())), Some(libc::EROFS));
        assert_eq!(code(fs::remove_file(mp.join("hello.txt"))), Some(libc::EROFS));
        assert_eq!(
            code(
                fs::OpenOptions::new()
                    .write(true)
                    .open(mp.join("hello.txt"))
                    .map(|_| ())
            ),
            Some(libc::EROFS)
        );
    });
    fake.unmounter.unmount().unwrap();
    fake.server.join().unwrap().unwrap();
    result.unwrap();
}

#[test]
fn a_panic_over_a_poisoned_lock_ends_the_mount() {
    let Some(mut fake) = serve_fake() else {
        return;
    };
    let mp = fake.mp.clone();

    let poisoned = code(fs::metadata(mp.join("poison")));
    let after = code(fs::metadata(mp.join("after-poison")));
    // The mount ends by itself; make sure it is gone even if it did not.
    let ended = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        fake.server.is_finished()
    });
    if !ended {
        let _ = fake.unmounter.unmount();
    }
    let served = fake.server.join().unwrap();
    if fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains(mp.to_str().unwrap())
    {
        let _ = std::process::Command::new("umount").arg("-l").arg(&mp).status();
    }
    assert_eq!(poisoned, Some(libc::EIO), "the first panic is answered EIO");
    assert!(after.is_some(), "the request over the poisoned lock fails");
    assert!(ended, "the mount ends after a panic over a poisoned lock");
    assert!(served.is_err(), "and says so: {served:?}");
}
