//! A vault on disk: `vault.toml`, `catalog.db`, the store, `tmp/` and `workspaces/`.
//!
//! Owns: creating and opening vaults, where each part lives (a remote store's block cache
//! is `cache/`), and clearing what a killed process left in `tmp/`; whether the caller may
//! write the vault (a user who may only read it gets read-only catalog connections, and
//! every writer is refused up front with [`Error::NotWritable`]); a shared vault's modes
//! ([`crate::sharing`], docs/sharing.md).

use std::fs;
use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::config::{SharedConfig, VaultConfig};
use crate::error::{Error, Result};
use crate::sharing::{self, Modes};
use crate::store::{Store, StoreUrl};

/// What a folder held before `init`, so that a failed `init` (an unreachable store, a full
/// disk) leaves it as it was instead of half a vault.
enum DirBefore {
    Missing,
    Entries(std::collections::HashSet<std::ffi::OsString>),
}

impl DirBefore {
    fn of(dir: &Path) -> DirBefore {
        match fs::read_dir(dir) {
            Ok(entries) => DirBefore::Entries(entries.filter_map(|e| e.ok().map(|e| e.file_name())).collect()),
            Err(_) => DirBefore::Missing,
        }
    }

    /// Remove what `init` added (best effort: the error being reported matters more).
    fn restore(&self, dir: &Path) {
        let added: Vec<PathBuf> = match self {
            DirBefore::Missing => vec![dir.to_path_buf()],
            DirBefore::Entries(kept) => fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter(|e| !kept.contains(&e.file_name()))
                .map(|e| e.path())
                .collect(),
        };
        for path in added {
            let removed = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(_) => Ok(()),
            };
            if let Err(e) = removed {
                tracing::warn!("could not remove {} after the failed init: {e}", path.display());
            }
        }
    }
}

/// An open vault.
pub struct Vault {
    dir: PathBuf,
    config: VaultConfig,
    store: Store,
    /// May the caller write the vault folder and its catalog? Decided once, at open.
    writable: bool,
}

impl Vault {
    /// Create a private vault at `dir` (which may exist but must not hold a vault).
    pub fn init(dir: &Path, store_url: Option<&str>) -> Result<Vault> {
        Vault::init_shared(dir, store_url, None)
    }

    /// Create a vault at `dir`; with `group`, a shared one every member of that group may
    /// write (the caller must be a member, or root).
    pub fn init_shared(dir: &Path, store_url: Option<&str>, group: Option<&str>) -> Result<Vault> {
        let config_path = dir.join("vault.toml");
        if config_path.exists() {
            return Err(Error::VaultExists(dir.to_path_buf()));
        }
        let mut config = VaultConfig::default();
        if let Some(url) = store_url {
            // Only the parsed, credential-free form is kept.
            config.store = StoreUrl::parse(url)?.to_string();
        }
        if let Some(group) = group {
            let gid = sharing::group_by_name(group)?;
            if !sharing::in_group(gid) {
                return Err(Error::Config(format!(
                    "{} is not a member of group {group}: only members (or root) can make a vault shared with it",
                    sharing::caller().name
                )));
            }
            let group = sharing::group_name(gid).unwrap_or_else(|| group.to_string());
            config.shared = Some(SharedConfig { group, gid });
        }
        let before = DirBefore::of(dir);
        Vault::create(dir, config).inspect_err(|_| before.restore(dir))
    }

    /// The steps of [`Vault::init`] after its checks; `vault.toml` is written last, so a
    /// folder without it holds no vault.
    fn create(dir: &Path, config: VaultConfig) -> Result<Vault> {
        let config_path = dir.join("vault.toml");
        let modes = modes_of(&config);
        fs::create_dir_all(dir).map_err(Error::io_at("creating", dir))?;
        if let Some(shared) = &config.shared {
            modes.share_dir(dir, shared.gid)?;
        }
        for sub in ["tmp", "workspaces"] {
            modes.create_dir_all(&dir.join(sub))?;
        }
        let vault = Vault::assemble(dir, config.clone(), None)?;
        vault.store.probe()?;
        // Made before SQLite sees them, with the vault's modes: SQLite gives its -wal and
        // -shm files the catalog's mode, whatever the umask.
        for file in [vault.catalog_path(), dir.join("lock")] {
            create_file(&file, modes)?;
        }
        Catalog::open(&vault.catalog_path())?;
        crate::store::write_durably(&config_path, config.to_toml().as_bytes(), 0o644)?;
        Ok(vault)
    }

    /// Open the vault at `dir`.
    pub fn open(dir: &Path) -> Result<Vault> {
        Vault::open_cached_in(dir, None)
    }

    /// Open the vault at `dir`, keeping a remote store's block cache in `cache_dir` (created
    /// if missing) instead of `<vault>/cache`: how a user who may only read the vault gets a
    /// cache of their own. A local store has no such cache and ignores it.
    pub fn open_cached_in(dir: &Path, cache_dir: Option<&Path>) -> Result<Vault> {
        let config_path = dir.join("vault.toml");
        if !config_path.exists() {
            return Err(Error::NoVault(dir.to_path_buf()));
        }
        let config = VaultConfig::load(&config_path)?;
        Vault::assemble(dir, config, cache_dir)
    }

    /// Open the vault at `dir`, creating it with default settings if there is none.
    pub fn open_or_init(dir: &Path) -> Result<Vault> {
        match Vault::open(dir) {
            Err(Error::NoVault(_)) => Vault::init(dir, None),
            other => other,
        }
    }

    fn assemble(dir: &Path, config: VaultConfig, cache_dir: Option<&Path>) -> Result<Vault> {
        let url = StoreUrl::parse(&config.store)?;
        let store = Store::open_with(dir, &url, &config.remote, modes_of(&config), cache_dir)?;
        let catalog = dir.join("catalog.db");
        let writable = sharing::may(dir, libc::W_OK) && (!catalog.exists() || sharing::may(&catalog, libc::W_OK));
        Ok(Vault {
            dir: dir.to_path_buf(),
            config,
            store,
            writable,
        })
    }

    /// May the caller change this vault? When not, [`Vault::catalog`] opens read-only and
    /// every command that writes fails with [`Error::NotWritable`].
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// [`Error::NotWritable`] unless the caller may change this vault: what every writer
    /// checks before it touches anything.
    pub fn require_writable(&self) -> Result<()> {
        if self.writable {
            return Ok(());
        }
        let me = sharing::caller();
        Err(Error::NotWritable {
            vault: self.dir.clone(),
            user: me.name,
            uid: me.uid,
        })
    }

    /// The modes writers give what they create here (shared or private vault).
    pub fn modes(&self) -> Modes {
        modes_of(&self.config)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.dir.join("catalog.db")
    }

    /// A new connection to the catalog (one per thread); read-only when the caller may not
    /// write the vault.
    pub fn catalog(&self) -> Result<Catalog> {
        if self.writable {
            Catalog::open(&self.catalog_path())
        } else {
            Catalog::open_read_only(&self.catalog_path())
        }
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Remove temporary files left by processes that no longer run.
    pub fn clear_dead_tmp(&self) -> Result<usize> {
        let tmp = self.tmp_dir();
        self.modes().create_dir_all(&tmp)?;
        let mut removed = 0;
        for f in fs::read_dir(&tmp).map_err(Error::io_at("listing", &tmp))? {
            let f = f.map_err(Error::io_at("listing", &tmp))?;
            if remove_if_writer_gone(&f) {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn modes_of(config: &VaultConfig) -> Modes {
    if config.shared.is_some() {
        Modes::SHARED
    } else {
        Modes::PRIVATE
    }
}

/// Create the empty file `path` if it is missing, with the vault's modes (0644 less the
/// umask in a private vault, 0664 in a shared one). Two processes doing it at once is fine.
fn create_file(path: &Path, modes: Modes) -> Result<()> {
    match fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => modes.file_created(path),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("creating", path, e)),
    }
}

/// Remove `entry` if its name starts with the pid of a process that no longer runs (how
/// temporary and scratch files are named: `<pid>-…`); anything else is left alone. Returns
/// whether it was removed.
pub(crate) fn remove_if_writer_gone(entry: &fs::DirEntry) -> bool {
    let name = entry.file_name();
    let pid = name
        .to_str()
        .and_then(|n| n.split('-').next())
        .and_then(|p| p.parse::<i64>().ok());
    pid.is_some_and(|p| !crate::process::alive(p)) && fs::remove_file(entry.path()).is_ok()
}

/// A lock on the vault's `lock` file, released when dropped. Ingest and derive hold it
/// shared for their whole run; gc holds it exclusive, so it never runs while a writer has
/// looked up chunks or contents it is about to reference.
pub struct VaultLock {
    _file: fs::File,
}

/// `flock(op)` on `file` (opened from `path`, named in errors): `false` when `op` has
/// `LOCK_NB` and another holder has it. The kernel releases the lock when the last
/// descriptor of the open file closes, however the process ends.
pub(crate) fn flock(file: &fs::File, op: libc::c_int, path: &Path) -> Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock only takes the descriptor and an integer operation.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(Error::io("locking", path, e)),
        }
    }
}

impl Vault {
    fn lock(&self, op: libc::c_int) -> Result<Option<VaultLock>> {
        self.require_writable()?;
        let path = self.dir.join("lock");
        if !path.exists() {
            create_file(&path, self.modes())?;
        }
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(Error::io_at("opening", &path))?;
        Ok(flock(&file, op, &path)?.then_some(VaultLock { _file: file }))
    }

    /// Shared lock for a writer (ingest, derive, sync); waits while gc runs.
    /// [`Error::NotWritable`] when the caller may not write the vault.
    pub fn lock_writer(&self) -> Result<VaultLock> {
        Ok(self.lock(libc::LOCK_SH)?.expect("a blocking flock returns the lock"))
    }

    /// Exclusive lock for gc; [`Error::Busy`] when an ingest or derive is running.
    pub fn lock_exclusive(&self) -> Result<VaultLock> {
        self.lock(libc::LOCK_EX | libc::LOCK_NB)?
            .ok_or(Error::Busy("an ingest or derive"))
    }

    /// The folder holding workspace upper layers.
    pub fn workspaces_dir(&self) -> PathBuf {
        self.dir.join("workspaces")
    }
}
