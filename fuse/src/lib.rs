//! dsvault-fuse: serves a file tree through FUSE (the `fuser` crate).
//!
//! Owns: the `fuser::Filesystem` over a view (the library's [`dsvault::vfs::WritableView`],
//! which `dsvault::vfs::Vfs` implements and a test can implement with a small fake), mount
//! options and kernel tuning (1 MiB requests, readahead, keep-cache, long timeouts for
//! immutable nodes, READDIRPLUS with attributes where callers use them, zero-message opens on read-only mounts), FUSE passthrough
//! for workspace files, and mounting and unmounting.
//! Never: defines view types or chooses the errno of a failed view operation: both belong to
//! `dsvault::vfs` (the errno is [`dsvault::vfs::VfsError::errno`]); it reads no vault,
//! catalog or pack itself. The library does not depend on this crate (nor on `fuser`).

mod fs;
mod listing;
mod mount;
mod passthrough;

pub use mount::{bdi_read_ahead, is_stale_mount, Mount, MountOptions, Unmounter};
