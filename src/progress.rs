//! Progress reporting from long operations, without printing.
//!
//! Owns: the [`Progress`] trait that ops call as work advances. The CLI implements it with
//! progress bars; tests implement it to count; [`NoProgress`] ignores everything.

/// Receives progress from a long operation. Every method has a do-nothing default.
pub trait Progress: Send + Sync {
    /// Work of `total_bytes` (when known) has started.
    fn set_total(&self, _total_bytes: u64) {}
    /// `bytes` more bytes were processed.
    fn advance(&self, _bytes: u64) {}
    /// Something the user should know that does not stop the operation.
    fn warn(&self, _message: &str) {}
    /// The operation is done (successfully or not).
    fn finish(&self) {}
}

/// Ignores all progress.
pub struct NoProgress;

impl Progress for NoProgress {}
