//! Walking the source tree: classify each entry and hand files to the workers.
//!
//! Never follows symlinks. Folders and symlinks go straight to the writer; regular files go
//! to the workers as [`FileJob`]s; sockets, FIFOs and devices are reported as skipped.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crossbeam_channel::Sender;

use super::{Msg, SkippedFile};
use crate::catalog::{Entry, EntryKind, FileStamp};
use crate::error::{Error, Result};

/// One regular file for a worker.
pub struct FileJob {
    pub token: u64,
    pub abs_path: PathBuf,
    pub entry: Entry,
    pub stamp: FileStamp,
}

pub fn stamp_of(meta: &std::fs::Metadata) -> FileStamp {
    FileStamp {
        dev: meta.dev(),
        inode: meta.ino(),
        size: meta.size(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    }
}

fn entry_for(rel: &Path, kind: EntryKind, meta: &std::fs::Metadata) -> Entry {
    let parent = rel
        .parent()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    let name = rel.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
    Entry {
        id: 0,
        parent,
        name,
        kind,
        mode: meta.mode() & 0o7777,
        size: if kind == EntryKind::File { meta.size() } else { 0 },
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        content: None,
        content_id: None,
        target: None,
    }
}

/// Does a symlink at `rel` (relative to the source root) with this target leave the tree?
pub fn symlink_leaves_tree(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth = rel.parent().map(|p| p.components().count()).unwrap_or(0) as i64;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            Component::Normal(_) => depth += 1,
            Component::RootDir | Component::Prefix(_) => return true,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// Walk `source`, sending folders, symlinks and skips to `to_writer` and files to `to_workers`.
/// Returns the number of file jobs sent; stops at the first error (sent to the writer).
pub fn walk(source: &Path, allow_external_symlinks: bool, to_writer: &Sender<Msg>, to_workers: &Sender<FileJob>) {
    if let Err(e) = walk_inner(source, allow_external_symlinks, to_writer, to_workers) {
        let _ = to_writer.send(Msg::Failed(e));
    }
}

fn walk_inner(
    source: &Path,
    allow_external_symlinks: bool,
    to_writer: &Sender<Msg>,
    to_workers: &Sender<FileJob>,
) -> Result<()> {
    let mut token = 0u64;
    let walker = walkdir::WalkDir::new(source)
        .follow_links(false)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for item in walker.min_depth(1) {
        let item = item.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| source.to_path_buf());
            let io = e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("file system loop"));
            Error::Unreadable { path, source: io }
        })?;
        let rel = item
            .path()
            .strip_prefix(source)
            .expect("walk stays under the source")
            .to_path_buf();
        let meta = item.metadata().map_err(|e| Error::Unreadable {
            path: item.path().to_path_buf(),
            source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("metadata")),
        })?;
        let ft = meta.file_type();
        let sent = if ft.is_dir() {
            to_writer.send(Msg::Entry(entry_for(&rel, EntryKind::Dir, &meta)))
        } else if ft.is_symlink() {
            let target = std::fs::read_link(item.path()).map_err(|e| Error::Unreadable {
                path: item.path().to_path_buf(),
                source: e,
            })?;
            if !allow_external_symlinks && symlink_leaves_tree(&rel, &target) {
                return Err(Error::ExternalSymlink {
                    path: item.path().to_path_buf(),
                    target: target.to_string_lossy().into_owned(),
                });
            }
            let mut entry = entry_for(&rel, EntryKind::Symlink, &meta);
            entry.target = Some(target.as_os_str().as_bytes().to_vec());
            to_writer.send(Msg::Entry(entry))
        } else if ft.is_file() {
            token += 1;
            let job = FileJob {
                token,
                abs_path: item.path().to_path_buf(),
                entry: entry_for(&rel, EntryKind::File, &meta),
                stamp: stamp_of(&meta),
            };
            if to_workers.send(job).is_err() {
                return Ok(()); // the writer stopped; it reports why
            }
            Ok(())
        } else {
            let kind = special_kind(&meta);
            to_writer.send(Msg::Skipped(SkippedFile {
                path: item.path().to_path_buf(),
                reason: kind.to_string(),
            }))
        };
        if sent.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// What a special file is (`fifo`, `socket`, `block device`, `character device`).
pub fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_escape_rules() {
        let at = |rel: &str, target: &str| symlink_leaves_tree(Path::new(rel), Path::new(target));
        assert!(!at("a/link", "b"));
        assert!(!at("a/link", "../b"));
        assert!(at("a/link", "../../b"));
        assert!(at("link", "../x"));
        assert!(at("link", "/etc/passwd"));
        assert!(!at("a/b/link", "../../c/./d"));
        assert!(at("a/link", "x/../../../y"));
    }
}
