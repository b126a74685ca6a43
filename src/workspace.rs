//! Workspaces: a writable upper layer on local disk over zero or more sealed base datasets.
//!
//! Owns: creating, opening, listing and removing workspaces (catalog rows plus the folder
//! `<vault>/workspaces/<name>/upper/`), and recording whiteouts. A workspace belongs to the
//! user owning its folder (its creator, or the user root made it for): only that user (or
//! root) may take its writer lock, so change or remove it; in a shared vault the group may
//! read it (mode 2750), in a private one the umask decides. The merged view is: the
//! bases in order (a later base overrides an earlier one on the same path), then the upper
//! layer (which overrides every base), minus the paths hidden by whiteouts. A whiteout hides
//! the bases' entry at its path and everything below it, never the upper layer.
//! Never: reads dataset content or writes into the store; [`crate::ops::derive`] turns the
//! merged view into a dataset, and the FUSE overlay ([`crate::vfs::work`]) writes into
//! `upper/` and records deletes as the same whiteout rows [`Workspace::whiteout`] adds.
//! Keeping bases alive on a shared store is the caller's [`BasePins`] (the shared-gc
//! protocol lives in `ops`); this module only says when to pin and unpin.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::catalog::{entries::split_path, BaseRow, Catalog, DatasetRow, Entry, EntryKind};
use crate::dataset::{validate_component, DatasetRef};
use crate::error::{Error, Result};
use crate::vault::Vault;

/// Does one of the bases `later` (their dataset ids: the bases above the one an entry comes
/// from) have a non-folder at `dir` or one of its ancestors? Such an entry hides everything
/// below it in the merged view. One rule for what `derive` seals and what the mount shows;
/// `entry_at(dataset id, path)` looks an entry up in the caller's catalog connection.
pub(crate) fn replaced_by_later_base(
    later: impl Iterator<Item = i64> + Clone,
    dir: &[u8],
    mut entry_at: impl FnMut(i64, &[u8]) -> Result<Option<Entry>>,
) -> Result<bool> {
    let mut at = dir;
    while !at.is_empty() {
        for base in later.clone() {
            if matches!(entry_at(base, at)?, Some(e) if e.kind != EntryKind::Dir) {
                return Ok(true);
            }
        }
        at = split_path(at).0;
    }
    Ok(false)
}

/// Keeps a workspace's bases alive beyond this vault while the workspace exists: on a shared
/// store, a pin that `gc` on every machine honours (`ops::shared_gc::StorePins`). Creating a
/// workspace pins before the workspace is recorded (and unpins if recording fails);
/// removing one unpins before its folder goes. `dir` is the workspace's folder, where an
/// implementation may keep what it needs to unpin.
pub trait BasePins {
    fn pin(
        &self,
        vault: &Vault,
        catalog: &Catalog,
        workspace: &str,
        dir: &Path,
        bases: &[(String, crate::RootHash)],
    ) -> Result<()>;
    fn unpin(&self, vault: &Vault, dir: &Path) -> Result<()>;
}

/// An open workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    /// The upper layer: plain files, written by experiments (or the overlay).
    pub upper: PathBuf,
    /// Base datasets, lowest first, as sealed in the catalog now.
    pub bases: Vec<DatasetRow>,
    /// The user id owning the workspace (its folder's owner).
    pub owner: u32,
    /// The group id of the workspace's folder.
    pub group: u32,
}

/// The right to change a workspace's upper layer, held by one process at a time: an
/// exclusive `flock` on `<vault>/workspaces/<name>/writer.lock`, which the kernel releases
/// when the process ends, however it ends. The file names the holder for the message others
/// get.
#[derive(Debug)]
pub struct WriterLock {
    _file: fs::File,
}

/// `<vault>/workspaces/<name>`.
fn workspace_dir(vault: &Vault, name: &str) -> PathBuf {
    vault.workspaces_dir().join(name)
}

impl Workspace {
    /// Take the workspace's [`WriterLock`], or fail with [`Error::WorkspaceBusy`] naming the
    /// process that holds it.
    pub fn lock_writer(&self) -> Result<WriterLock> {
        lock_writer_in(self.upper.parent().unwrap_or(&self.upper), &self.name)
    }

    /// [`Error::WorkspaceNotYours`] unless the caller owns this workspace (or is root): what
    /// `derive` checks, so a dataset's lineage never credits one member with another's work.
    pub fn require_owner(&self) -> Result<()> {
        let me = crate::sharing::caller();
        if me.uid == self.owner || me.uid == 0 {
            return Ok(());
        }
        Err(Error::WorkspaceNotYours {
            name: self.name.clone(),
            owner: crate::sharing::user_name(self.owner).unwrap_or_else(|| format!("uid {}", self.owner)),
        })
    }

    /// Create workspace `name` over `bases` (lowest first), with an empty upper layer,
    /// belonging to the caller.
    pub fn create(vault: &Vault, name: &str, bases: &[DatasetRef], pins: &dyn BasePins) -> Result<Workspace> {
        Workspace::create_for(vault, name, bases, None, pins)
    }

    /// [`Workspace::create`], belonging to user `owner` (a uid) when given: how root makes a
    /// workspace for a user of a vault that user may not write (changing owners needs root).
    pub fn create_for(
        vault: &Vault,
        name: &str,
        bases: &[DatasetRef],
        owner: Option<u32>,
        pins: &dyn BasePins,
    ) -> Result<Workspace> {
        validate_component("workspace name", name)?;
        vault.require_writable()?;
        let catalog = vault.catalog()?;
        if catalog.workspace(name)?.is_some() {
            return Err(Error::WorkspaceExists(name.to_string()));
        }
        let rows = bases.iter().map(|b| catalog.resolve(b)).collect::<Result<Vec<_>>>()?;
        let dir = workspace_dir(vault, name);
        if dir.exists() {
            return Err(Error::Destination {
                path: dir,
                reason: "exists but no workspace of that name is recorded; move it away first".into(),
            });
        }
        let upper = dir.join("upper");
        if let Err(e) = make_folders(vault, &dir, &upper, owner) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        let base_rows: Vec<BaseRow> = rows
            .iter()
            .map(|d| BaseRow {
                dataset_id: d.id,
                root: d.root.unwrap_or(crate::RootHash([0; 32])),
            })
            .collect();
        let bases: Vec<(String, crate::RootHash)> = rows
            .iter()
            .zip(&base_rows)
            .map(|(d, b)| (d.name.to_string(), b.root))
            .collect();
        let pinned = pins.pin(vault, &catalog, name, &dir, &bases);
        if let Err(e) = pinned.and_then(|()| catalog.insert_workspace(name, &base_rows)) {
            pins.unpin(vault, &dir)?;
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Workspace::open(vault, name)
    }

    /// Open workspace `name`; fails if one of its bases is no longer sealed with its root.
    pub fn open(vault: &Vault, name: &str) -> Result<Workspace> {
        validate_component("workspace name", name)?;
        let catalog = vault.catalog()?;
        let row = catalog
            .workspace(name)?
            .ok_or_else(|| Error::WorkspaceNotFound(name.to_string()))?;
        let bases = load_bases(&catalog, name, row.id)?;
        let dir = workspace_dir(vault, name);
        let (owner, group) = folder_owner(&dir);
        Ok(Workspace {
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            upper: dir.join("upper"),
            bases,
            owner,
            group,
        })
    }

    /// Every workspace, by name.
    pub fn list(vault: &Vault) -> Result<Vec<Workspace>> {
        let catalog = vault.catalog()?;
        catalog
            .list_workspaces()?
            .into_iter()
            .map(|w| Workspace::open(vault, &w.name))
            .collect()
    }

    /// Remove workspace `name`: its upper layer first (so an interrupted removal can be run
    /// again), then its catalog rows. Its bases stay; `gc` reclaims what only it used.
    pub fn remove(vault: &Vault, name: &str, pins: &dyn BasePins) -> Result<()> {
        validate_component("workspace name", name)?;
        vault.require_writable()?;
        let catalog = vault.catalog()?;
        let row = catalog
            .workspace(name)?
            .ok_or_else(|| Error::WorkspaceNotFound(name.to_string()))?;
        let dir = workspace_dir(vault, name);
        // Not while a mount or `run` is changing it.
        let _writer = match lock_writer_in(&dir, name) {
            Err(Error::Io { .. }) if !dir.exists() => None,
            other => Some(other?),
        };
        pins.unpin(vault, &dir)?;
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io("removing", &dir, e)),
            _ => {}
        }
        catalog.delete_workspace(row.id)
    }

    /// Record that `path` (relative to the workspace root) was deleted: the bases' entry there,
    /// and everything below it, disappear from the merged view. The upper layer is not
    /// touched; remove the path from `upper/` too if it is there.
    pub fn whiteout(&self, vault: &Vault, path: &Path) -> Result<()> {
        let bytes = normalise_path(path)?;
        vault.catalog()?.add_whiteout(self.id, &bytes)
    }

    /// The whiteouts of this workspace, sorted by path bytes.
    pub fn whiteouts(&self, catalog: &Catalog) -> Result<Vec<Vec<u8>>> {
        catalog.whiteouts(self.id)
    }
}

/// The workspace folder `dir` and its `upper`, owned by `owner` (uid) when given. In a
/// shared vault they are 2750 whatever the umask: the group may look, not touch.
fn make_folders(vault: &Vault, dir: &Path, upper: &Path, owner: Option<u32>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    vault.modes().create_dir_all(&vault.workspaces_dir())?;
    for d in [dir, upper] {
        fs::create_dir(d).map_err(Error::io_at("creating", d))?;
        if vault.modes().is_shared() {
            fs::set_permissions(d, fs::Permissions::from_mode(0o2750))
                .map_err(Error::io_at("setting permissions of", d))?;
        }
        if let Some(uid) = owner {
            // The group stays the vault's in a shared vault (inherited from the setgid
            // folder); in a private one it is the owner's primary group.
            let gid = (!vault.modes().is_shared())
                .then(|| crate::sharing::primary_gid(uid))
                .flatten();
            std::os::unix::fs::chown(d, Some(uid), gid).map_err(Error::io_at("changing the owner of", d))?;
        }
    }
    Ok(())
}

/// Owner and group of a workspace folder (root's when it cannot be read: a workspace whose
/// folder is gone).
fn folder_owner(dir: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(dir).map_or((0, 0), |m| (m.uid(), m.gid()))
}

fn load_bases(catalog: &Catalog, name: &str, workspace_id: i64) -> Result<Vec<DatasetRow>> {
    catalog
        .workspace_bases(workspace_id)?
        .into_iter()
        .map(|b| match catalog.sealed_dataset_by_id(b.dataset_id)? {
            Some(d) if d.root == Some(b.root) => Ok(d),
            _ => Err(Error::BaseMissing {
                workspace: name.to_string(),
                dataset: format!("dataset row {} (root {})", b.dataset_id, b.root),
            }),
        })
        .collect()
}

/// A workspace path as dataset path bytes: relative, `/`-separated, no `.`, `..` or empty
/// components.
pub fn normalise_path(path: &Path) -> Result<Vec<u8>> {
    let bad = |reason| Error::InvalidWorkspacePath {
        path: path.to_string_lossy().into_owned(),
        reason,
    };
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part.as_bytes());
            }
            Component::CurDir => {}
            _ => return Err(bad("must be relative, without '..'")),
        }
    }
    if out.is_empty() {
        return Err(bad("names no file"));
    }
    Ok(out)
}

/// [`Workspace::lock_writer`] for the workspace folder `dir` (which need not be openable:
/// `workspace rm` takes the lock of a workspace whose base is gone).
fn lock_writer_in(dir: &Path, name: &str) -> Result<WriterLock> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("writer.lock");
    let opened = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path);
    let (owner, group) = folder_owner(dir);
    let mut file = match opened {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && owner != crate::sharing::caller().uid => {
            return Err(Error::WorkspaceNotYours {
                name: name.to_string(),
                owner: crate::sharing::user_name(owner).unwrap_or_else(|| format!("uid {owner}")),
            });
        }
        other => other.map_err(Error::io_at("opening", &path))?,
    };
    // Root (a mount serving every user) keeps the lock file its owner's, so the owner can
    // take the lock later.
    if dir.exists()
        && file
            .metadata()
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) != owner)
    {
        let _ = std::os::unix::fs::fchown(&file, Some(owner), Some(group));
    }
    if !crate::vault::flock(&file, libc::LOCK_EX | libc::LOCK_NB, &path)? {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(Error::WorkspaceBusy {
            name: name.to_string(),
            holder: if holder.is_empty() {
                "unknown".into()
            } else {
                holder.to_string()
            },
        });
    }
    let cmdline = fs::read("/proc/self/cmdline").unwrap_or_default();
    let cmdline: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let holder = format!("pid {}: {}", std::process::id(), cmdline.join(" "));
    let described = file
        .set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(holder.as_bytes()));
    if let Err(e) = described {
        tracing::debug!("could not describe the holder in {}: {e}", path.display());
    }
    Ok(WriterLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_checked() {
        assert_eq!(normalise_path(Path::new("a/./b/")).unwrap(), b"a/b");
        for bad in ["", ".", "/etc", "a/../b", ".."] {
            assert!(normalise_path(Path::new(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
