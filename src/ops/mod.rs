//! Operations: one module per verb. Nothing here prints; long work reports through
//! [`crate::progress::Progress`].

pub mod derive;
pub mod diff;
pub mod export;
pub mod gc;
pub mod ingest;
pub mod lineage;
pub mod read;
pub mod recover;
pub mod remove;
pub mod run;
pub mod shared_gc;
pub mod stats;
pub mod sync;
pub mod verify;
