//! Operations: one module per verb. Nothing here prints; long work reports through
//! [`crate::progress::Progress`].

pub mod export;
pub mod ingest;
pub mod recover;
pub mod stats;
pub mod verify;
