//! Library errors as Python exceptions, in one place, and the guard against using a handle
//! in a forked child.
//!
//! Mapping: absent → `FileNotFoundError`, a folder where a file is needed →
//! `IsADirectoryError` (and the reverse `NotADirectoryError`), any write → `PermissionError`,
//! damaged or missing stored bytes → `dsvault.IntegrityError` (an `OSError`), a refused path
//! or argument → `ValueError`, a closed handle → `ValueError` (as for closed Python files),
//! other store or catalog trouble → `OSError`. Each message names the dataset and path.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyNotADirectoryError, PyOSError, PyPermissionError, PyRuntimeError,
    PyValueError,
};
use pyo3::PyErr;

use dsvault::vfs::{InvalidPath, VfsError};
use dsvault::Error;

create_exception!(
    dsvault,
    IntegrityError,
    PyOSError,
    "Stored bytes do not match their hash (or a pack is missing): the read was refused, no wrong byte was returned. `dsvault verify --read-data` lists all damage."
);
create_exception!(
    dsvault,
    ForkedHandleError,
    PyRuntimeError,
    "A handle opened in one process was used in a child forked from it."
);

/// A failure of an operation on `what` (`gold/NAME@VERSION:path`).
pub fn vfs_err(e: VfsError, what: &str) -> PyErr {
    match e {
        VfsError::NotFound => PyFileNotFoundError::new_err((libc::ENOENT, "no such file or folder", what.to_string())),
        VfsError::IsADirectory => PyIsADirectoryError::new_err((libc::EISDIR, "is a folder", what.to_string())),
        VfsError::NotADirectory => PyNotADirectoryError::new_err((libc::ENOTDIR, "not a folder", what.to_string())),
        VfsError::ReadOnly => read_only(what),
        VfsError::BadHandle => PyValueError::new_err(format!("I/O operation on closed file {what}")),
        VfsError::Damaged(e) => IntegrityError::new_err((
            libc::EIO,
            format!("{what}: {e}; the read was refused (`dsvault verify --read-data` lists all damage)"),
        )),
        VfsError::Failed(e) => lib_err(&e),
        other => PyOSError::new_err((libc::EIO, format!("{what}: {other}"))),
    }
}

/// Datasets are read-only.
pub fn read_only(what: &str) -> PyErr {
    PyPermissionError::new_err((
        libc::EROFS,
        "dsvault datasets are read-only (write into a workspace instead)",
        what.to_string(),
    ))
}

/// A library error outside a read (opening a vault or a dataset, listing datasets).
pub fn lib_err(e: &Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::DatasetNotFound(_) | Error::NoVault(_) => PyFileNotFoundError::new_err((libc::ENOENT, msg)),
        Error::AmbiguousDataset { .. } | Error::InvalidName { .. } => PyValueError::new_err(msg),
        Error::CorruptChunk { .. }
        | Error::CorruptPack { .. }
        | Error::MissingPack(_)
        | Error::MissingChunk(_)
        | Error::Damaged(_) => IntegrityError::new_err((libc::EIO, msg)),
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            PyPermissionError::new_err((libc::EACCES, msg))
        }
        _ => PyOSError::new_err((libc::EIO, msg)),
    }
}

pub fn path_err(e: InvalidPath) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The process a handle belongs to. Its threads (chunk prefetch, a remote store's runtime)
/// and its SQLite connections exist only there: a forked child that used them could hang
/// on a lock held at the fork, so it gets [`ForkedHandleError`] instead, and dropping the
/// handle there leaks it rather than joining threads the child does not have.
#[derive(Clone, Copy)]
pub struct Owner(u32);

impl Owner {
    pub fn here() -> Owner {
        Owner(std::process::id())
    }

    pub fn is_here(&self) -> bool {
        self.0 == std::process::id()
    }

    pub fn check(&self, what: &str) -> Result<(), PyErr> {
        if self.is_here() {
            return Ok(());
        }
        Err(ForkedHandleError::new_err(format!(
            "{what} was opened in process {} and cannot be used in process {}, a child forked from it \
             (its threads and catalog connections stayed in the parent): open it again in the child \
             (dsvault.open_vault(...).dataset(...)), pickle it to the child (spawn, forkserver), or use \
             dsvault.torch datasets, which reopen in each worker",
            self.0,
            std::process::id()
        )))
    }
}
