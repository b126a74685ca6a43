//! dsvault: a content-addressed, deduplicated, verifiable store for ML datasets.
//!
//! Layers, top to bottom (dependencies point down only):
//!
//! - [`ops`]: one module per verb (ingest, estimate, derive, run, lineage, remove, gc,
//!   verify, export, stats, sync); no printing, progress through [`progress::Progress`].
//! - [`workspace`]: writable upper layers over sealed datasets, and the merged-view rules.
//! - [`catalog`] (SQLite), [`chunker`] (FastCDC), [`pack`] (pack format), [`store`] (where
//!   packs, manifests and refs live), [`manifest`] (root hashes and manifests).
//! - [`vfs`]: the read-only file-tree view that `dsvault mount` serves through FUSE.
//! - [`id`] (typed blake3 ids), [`error`] (the one error enum), [`process`] (pid liveness).
//!
//! The directions are checked by a test (`layering.rs`) against docs/ARCHITECTURE.md.
//!
//! See docs/ARCHITECTURE.md for the why, docs/FORMAT.md for the bytes on disk.
//!
//! ```no_run
//! use dsvault::{ops::ingest, DatasetName, Kind, Vault};
//! let vault = Vault::open_or_init("/tmp/v".as_ref())?;
//! let opts = ingest::IngestOptions::new("/data/mnist".into(), DatasetName::new(Kind::Gold, "mnist", "v1")?);
//! let report = ingest::ingest(&vault, &opts, &dsvault::progress::NoProgress)?;
//! println!("{} {}", report.dataset, report.root);
//! # Ok::<(), dsvault::Error>(())
//! ```

pub mod catalog;
pub mod chunker;
pub mod config;
pub mod crashpoint;
pub mod dataset;
pub mod error;
pub mod id;
pub mod manifest;
pub mod ops;
pub mod pack;
pub mod process;
pub mod progress;
pub mod sharing;
pub mod store;
pub mod vault;
pub mod vfs;
pub mod workspace;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod layering;

pub use dataset::{DatasetName, DatasetRef, Kind};
pub use error::{Error, Result};
pub use id::{ChunkId, ContentId, PackId, RootHash};
pub use vault::Vault;
