//! A small pool of catalog connections: a catalog connection is not `Sync`, so each
//! thread of the mount borrows one for the length of a call and gives it back.
//!
//! The pool grows to the number of threads that query at once (FUSE workers plus prefetch
//! threads) and no further.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::catalog::Catalog;
use crate::error::Result;

pub(crate) struct CatalogPool {
    path: PathBuf,
    /// Open read-only connections (the caller may not write the vault).
    read_only: bool,
    idle: Mutex<Vec<Catalog>>,
}

impl CatalogPool {
    pub fn new(path: PathBuf, read_only: bool) -> Self {
        CatalogPool {
            path,
            read_only,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Run `f` with a connection of the pool (opening one if all are busy).
    pub fn with<T>(&self, f: impl FnOnce(&Catalog) -> Result<T>) -> Result<T> {
        let idle = self.idle.lock().expect("pool lock").pop();
        let catalog = match idle {
            Some(c) => c,
            None if self.read_only => Catalog::open_read_only(&self.path)?,
            None => Catalog::open(&self.path)?,
        };
        let out = f(&catalog);
        self.idle.lock().expect("pool lock").push(catalog);
        out
    }
}
