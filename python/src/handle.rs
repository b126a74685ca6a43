//! [`Owned`]: a library object shared by Python handles, usable only in the process that
//! opened it.

use std::mem::ManuallyDrop;
use std::sync::Arc;

use pyo3::PyResult;

use crate::errors::Owner;

/// An `Arc<T>` that answers only in its own process and, dropped in a forked child, is
/// leaked: dropping it there would join prefetch threads or shut down a store runtime that
/// the child does not have (and could hang).
pub struct Owned<T> {
    inner: ManuallyDrop<Arc<T>>,
    owner: Owner,
}

impl<T> Owned<T> {
    pub fn new(value: T) -> Owned<T> {
        Owned {
            inner: ManuallyDrop::new(Arc::new(value)),
            owner: Owner::here(),
        }
    }

    /// The object, unless this is a forked child; `what` names it in the error.
    pub fn get(&self, what: &str) -> PyResult<&Arc<T>> {
        self.owner.check(what)?;
        Ok(&self.inner)
    }

    pub fn is_here(&self) -> bool {
        self.owner.is_here()
    }
}

impl<T> Clone for Owned<T> {
    fn clone(&self) -> Self {
        Owned {
            inner: ManuallyDrop::new(Arc::clone(&self.inner)),
            owner: self.owner,
        }
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if self.owner.is_here() {
            // SAFETY: dropped once, here; never used again.
            unsafe { ManuallyDrop::drop(&mut self.inner) }
        }
    }
}
