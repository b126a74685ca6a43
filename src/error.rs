//! The library's error type.
//!
//! Policy: every fallible public function returns [`Result<T>`] with this one enum. Each
//! variant names the thing that failed (a path, a dataset, a chunk) so that the CLI can print
//! it as is; the CLI adds the command's context with `anyhow`, the library never wraps an
//! `Error` in another `Error`. I/O errors always carry the path they happened on and what we
//! were doing; `ENOSPC` becomes [`Error::NoSpace`] so users get an actionable message.

use std::path::{Path, PathBuf};

use crate::id::{ChunkId, PackId};

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A catalog (SQLite) failure: what callers branch on, and SQLite's message. The SQLite
/// error itself stays private (the catalog makes these), so upgrading SQLite never changes
/// this API.
#[derive(Debug)]
pub struct CatalogError {
    kind: CatalogErrorKind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// What kind of catalog failure it was, as far as callers act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatalogErrorKind {
    /// A UNIQUE (or other) constraint refused a write.
    Constraint,
    /// Another connection held the lock past the busy timeout.
    Busy,
    Other,
}

impl CatalogError {
    pub(crate) fn new(kind: CatalogErrorKind, source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        CatalogError { kind, source }
    }

    pub fn kind(&self) -> CatalogErrorKind {
        self.kind
    }
}

impl std::fmt::Display for CatalogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for CatalogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Everything the library can fail with. New variants may be added in any release, so a
/// `match` outside this crate needs a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no space left on the device holding {}: free some space or move the vault (--vault) and run the command again; nothing was sealed", path.display())]
    NoSpace { path: PathBuf },
    #[error("catalog: {0}")]
    Catalog(CatalogError),
    #[error("{0}")]
    Config(String),
    #[error("{} already holds a vault", .0.display())]
    VaultExists(PathBuf),
    #[error("manifest {0} is missing from the store")]
    MissingManifest(crate::id::RootHash),
    /// Sealing found its pending row gone or sealed already (another process cleared it).
    #[error("dataset row {0} was not pending when sealing")]
    NotPending(i64),
    #[error("no vault at {}: create one with `dsvault init` (or `dsvault ingest`, which creates it)", .0.display())]
    NoVault(PathBuf),
    #[error("vault format {found} at {} is newer than this dsvault understands ({supported}); upgrade dsvault", path.display())]
    UnsupportedFormat { path: PathBuf, found: u32, supported: u32 },
    #[error("not a valid blake3 hash: {0:?} (expected 64 hex characters)")]
    InvalidHash(String),
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("no dataset {0}; `dsvault ls` lists the datasets in this vault")]
    DatasetNotFound(String),
    #[error("{name} is ambiguous: it names {candidates}; say which with gold/ or derived/")]
    AmbiguousDataset { name: String, candidates: String },
    #[error("{dataset} already exists with root {existing} but this source has root {new}; sealed datasets never change: use a new --version")]
    DatasetExists {
        dataset: String,
        existing: String,
        new: String,
    },
    #[error("{dataset} already exists with root {existing} in the store but this source has root {new}; this catalog does not list it yet (another ingest is finishing it, an ingest was interrupted at its last step, or another machine sealed it); gold datasets never change: use a new --version")]
    SealedInStore {
        dataset: String,
        existing: String,
        new: String,
    },
    #[error("source {} does not exist", .0.display())]
    SourceMissing(PathBuf),
    #[error("source {} is not a folder: ingest takes a folder (put the file in a folder of its own)", .0.display())]
    SourceNotDir(PathBuf),
    #[error("cannot read {}: {source}; fix its permissions or remove it from the source, then run the command again (nothing was sealed)", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} changed while it was being read; run the command again once nothing writes to the source (nothing was sealed)", .0.display())]
    ChangedDuringRead(PathBuf),
    #[error("symlink {} points outside the source tree (to {target:?}); pass --allow-external-symlinks to store it anyway", path.display())]
    ExternalSymlink { path: PathBuf, target: String },
    /// FIFOs, sockets or device nodes in a workspace being derived (a dataset holds only
    /// files, folders and symlinks); each is (path in the workspace, what it is).
    #[error("workspace {workspace} holds special files that a dataset cannot store: {}; remove them, or pass --skip-special to derive without them (nothing was sealed)", list_special(.paths))]
    SpecialFiles {
        workspace: String,
        paths: Vec<(PathBuf, &'static str)>,
    },
    #[error("chunk {chunk} in pack {pack} is damaged: {detail}")]
    CorruptChunk {
        chunk: ChunkId,
        pack: PackId,
        detail: String,
    },
    #[error("pack {pack} is damaged: {detail}")]
    CorruptPack { pack: PackId, detail: String },
    /// A folder listing in the catalog does not decode (schema 4, `catalog::listings`).
    #[error("the catalog's listing of folder '{folder}' in dataset #{dataset_id} is damaged (the data is not): run `dsvault verify`, and see docs/data.md on repairing a listing")]
    DamagedListing { dataset_id: i64, folder: String },
    #[error("pack {0} is missing from the store")]
    MissingPack(PackId),
    #[error("chunk {0} is not in the catalog")]
    MissingChunk(ChunkId),
    #[error("{dataset} has no {path}")]
    PathNotFound { dataset: String, path: String },
    #[error("{dataset}:{path} is not a regular file")]
    NotAFile { dataset: String, path: String },
    #[error("{}: {reason}", path.display())]
    Destination { path: PathBuf, reason: String },
    #[error("{0}")]
    Damaged(String),
    /// A pipeline stage stopped because another stage failed first; that failure is the one
    /// reported, this one never reaches the user.
    #[error("stopped: {0}")]
    Stopped(&'static str),
    #[error("{0}")]
    Manifest(String),
    #[error("no workspace {0}; `dsvault workspace ls` lists them")]
    WorkspaceNotFound(String),
    #[error("workspace {0} already exists; pick another name or `dsvault workspace rm {0}` first")]
    WorkspaceExists(String),
    #[error(
        "workspace {name} is being changed by another process ({holder}); stop or unmount that \
         first, or read the workspace through that mount"
    )]
    WorkspaceBusy { name: String, holder: String },
    #[error("workspace {workspace} already exists with bases [{}]; omit --base to use it, or pick a new --workspace", bases.join(", "))]
    WorkspaceBasesDiffer { workspace: String, bases: Vec<String> },
    #[error("command argument {arg:?}: {reason}")]
    InvalidPlaceholder { arg: String, reason: String },
    #[error("{dataset}, a base of workspace {workspace}, is no longer in the vault; remove the workspace")]
    BaseMissing { workspace: String, dataset: String },
    #[error("{dataset} is a base of workspace {workspace}; `dsvault workspace rm {workspace}` first")]
    InUseByWorkspace { dataset: String, workspace: String },
    #[error("{dataset} is a base of workspace {workspace} on {host} (pinned in the store); run `dsvault workspace rm {workspace}` on {host} first")]
    PinnedByWorkspace {
        dataset: String,
        workspace: String,
        host: String,
    },
    #[error("{0} is gold: gold datasets are removed only with --force-gold and a typed confirmation")]
    GoldProtected(String),
    #[error("{path:?} is not a valid path in a workspace: {reason}")]
    InvalidWorkspacePath { path: String, reason: &'static str },
    #[error("content {0} is not in the catalog (was it collected by gc while this ran?); run the command again")]
    MissingContent(crate::id::ContentId),
    #[error("{0} is running in this vault; try again when it has finished")]
    Busy(&'static str),
    /// A request to a remote store failed (after its retries) or timed out. `location` is
    /// the store URL and key, never a credential.
    #[error("{action} {location} failed: {detail}; check that the store is reachable and its credentials (AWS_*, GOOGLE_*, AZURE_* variables) are right, then run the command again")]
    Remote {
        action: &'static str,
        location: String,
        detail: String,
    },
    /// An upload the store accepted does not read back as what was sent.
    #[error("uploaded {location}, but the store {detail}; nothing was sealed (run the command again; if it keeps failing, the store is losing data)")]
    UploadCheck { location: String, detail: String },
    #[error("{0}")]
    Unsupported(String),
    /// A command that must write was run by a user who may only read the vault.
    #[error("the vault {} is not writable by {user} (uid {uid}): ask its owner, or use a vault made with `init --shared GROUP`", vault.display())]
    NotWritable { vault: PathBuf, user: String, uid: u32 },
    #[error("the catalog {} cannot be read without write access: its -wal and -shm files are missing (it was last written by an older dsvault or another SQLite program); ask the vault's owner to run any dsvault command in it once (e.g. `dsvault stats`), they are kept from then on", .0.display())]
    CatalogNotShared(PathBuf),
    #[error("the catalog {} was made by an older dsvault and must be upgraded by a user who may write it; ask the vault's owner to run any dsvault command in it once (e.g. `dsvault stats`)", .0.display())]
    CatalogOutdated(PathBuf),
    #[error("{dataset} was sealed by {owner}: in a shared vault only they may remove it, or pass --force-gold (with its typed confirmation)")]
    SealedByAnother { dataset: String, owner: String },
    #[error("workspace {name} belongs to {owner}: only its owner (or root) may change or remove it")]
    WorkspaceNotYours { name: String, owner: String },
    /// The shared-bucket protocol (leases, condemned lists) stopped a writer or a gc.
    #[error("{0}")]
    SharedStore(String),
}

impl Error {
    /// Wrap an I/O error with the action and path it concerns; `ENOSPC` and `EDQUOT` become
    /// [`Error::NoSpace`].
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::NoSpace {
                path: path.to_path_buf(),
            },
            _ => Error::Io {
                action,
                path: path.to_path_buf(),
                source,
            },
        }
    }

    /// A closure for `map_err` that wraps an I/O error with its action and path.
    pub fn io_at<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |e| Error::io(action, path, e)
    }

    /// True when the catalog refused a write for a UNIQUE (or other) constraint.
    pub fn is_constraint_violation(&self) -> bool {
        matches!(self, Error::Catalog(e) if e.kind() == CatalogErrorKind::Constraint)
    }
}

/// `a/fifo (fifo), b/sock (socket)`.
fn list_special(paths: &[(PathBuf, &'static str)]) -> String {
    let items: Vec<String> = paths.iter().map(|(p, k)| format!("{} ({k})", p.display())).collect();
    items.join(", ")
}
