//! `gc` on a shared bucket, and what every writer does first there.
//!
//! Owns: the liveness of a shared store computed from the store alone (refs, pins, manifests,
//! pack indexes: never a machine's catalog), the two phases of a run (delete what an earlier
//! run condemned once no older lease can still need it; condemn what is dead now), and the
//! writer's prelude [`begin_write`] (a lease, then forgetting in this catalog the packs a gc
//! condemned or deleted). The protocol and its safety argument: docs/ARCHITECTURE.md, "gc on
//! a shared bucket".
//! Never: compares a time of this machine's clock with a store time; deletes anything that is
//! not in a condemned list written by an earlier run; deletes anything after a listing or read
//! failed or came back incomplete.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::gc::GcOptions;
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId, RootHash};
use crate::manifest::parse_and_check;
use crate::store::shared::{CondemnedObject, LeaseGuard, PinBody, MARGIN_SECS};
use crate::store::{lineage_key, manifest_key, pack_key, ObjectInfo, Store};
use crate::vault::Vault;
use crate::workspace::BasePins;

/// One object gc deleted or would delete, or condemned.
#[derive(Debug, Clone, Serialize)]
pub struct GcObject {
    pub key: String,
    pub bytes: u64,
    pub why: String,
}

/// What a gc run on a shared store did (with `dry_run`: would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SharedGcReport {
    pub dry_run: bool,
    pub store: String,
    /// The store clock when the run began.
    pub store_time: i64,
    pub refs: u64,
    pub pins: u64,
    pub leases: u64,
    pub packs: u64,
    pub live_packs: u64,
    /// Deleted now: condemned by an earlier run, still dead, no older lease alive.
    pub deleted: Vec<GcObject>,
    pub bytes_freed: u64,
    /// Condemned now, for a later run to delete.
    pub condemned: Vec<GcObject>,
    pub bytes_condemned: u64,
    /// Condemned earlier but live again (a writer that started before published them).
    pub spared: u64,
    /// Objects of condemned lists that a running older lease keeps for now.
    pub waiting_for_leases: u64,
    /// Dead objects younger than the grace period.
    pub too_young: u64,
    pub expired_leases_removed: u64,
    pub seconds: f64,
}

/// Start writing into a shared store: take a lease, then make sure this catalog relies on
/// no pack a gc has condemned or deleted (such packs are forgotten here; a dataset of this
/// catalog that still uses one is dropped when its ref is gone from the store, else the
/// writer refuses). Call before any lookup of what is already stored.
pub fn begin_write<'v>(vault: &'v Vault, catalog: &Catalog, purpose: &str) -> Result<LeaseGuard<'v>> {
    let store = vault.store();
    let ttl = vault.config().remote.lease_ttl_secs;
    let (guard, lists) = store.begin_lease(purpose, ttl)?;
    if !store.is_shared() {
        return Ok(guard);
    }
    let condemned: HashMap<String, &str> = lists
        .iter()
        .flat_map(|c| c.objects.iter().map(move |o| (o.key.clone(), c.key.as_str())))
        .collect();
    let listed: HashSet<PackId> = store.list_packs()?.into_iter().map(|(id, _)| id).collect();
    let mut avoid: Vec<PackId> = Vec::new();
    for (id, _) in catalog.packs()? {
        if !listed.contains(&id) || condemned.contains_key(&pack_key(id)) {
            avoid.push(id);
        }
    }
    let stuck = forget_packs(vault, catalog, &avoid, true)?;
    if let Some(p) = stuck.iter().find(|p| !listed.contains(p)) {
        return Err(Error::SharedStore(format!(
            "pack {p} was deleted from {} by a gc, but a dataset of this catalog still uses chunks that no other pack holds; run `dsvault sync --prune` (and `dsvault verify`) to see which, then run this again",
            store.describe()
        )));
    }
    spare(vault, catalog, &stuck, &condemned)?;
    Ok(guard)
}

/// Packs a gc condemned that datasets here still need (published after the condemnation by a
/// writer that started before it): note them as spared in the store first, then check again
/// that the refs of the datasets using them exist (so a gc that missed the note saw the refs),
/// and only then rely on them.
fn spare(vault: &Vault, catalog: &Catalog, stuck: &[PackId], condemned: &HashMap<String, &str>) -> Result<()> {
    if stuck.is_empty() {
        return Ok(());
    }
    let mut by_list: HashMap<&str, Vec<String>> = HashMap::new();
    for p in stuck {
        let key = pack_key(*p);
        if let Some(list) = condemned.get(&key) {
            by_list.entry(list).or_default().push(key);
        }
    }
    for (list, keys) in by_list {
        vault.store().write_spared(list, keys)?;
    }
    crate::crashpoint::hit("lease-after-spare");
    super::sync::prune_gone(vault, catalog)?;
    catalog.delete_dead_contents()?;
    for p in stuck {
        // Not needed after all once a dataset whose ref is gone was dropped: forget it.
        let _ = catalog.move_chunks_and_retire(*p, None);
    }
    Ok(())
}

/// The file in a workspace's folder that holds the key of its pin in the store.
const PIN_FILE: &str = "store-pin";

/// Workspaces' pins in the store: what every caller of
/// [`crate::workspace::Workspace::create`] and [`crate::workspace::Workspace::remove`] passes.
///
/// On a shared store, pinning a new workspace's bases happens under a lease (refused when a
/// base was condemned by a gc) and remembers the pin's key in the workspace folder;
/// unpinning removes that pin (if there is one). On a store of one machine both do nothing.
pub struct StorePins;

impl BasePins for StorePins {
    fn pin(
        &self,
        vault: &Vault,
        catalog: &Catalog,
        workspace: &str,
        dir: &std::path::Path,
        bases: &[(String, RootHash)],
    ) -> Result<()> {
        let store = vault.store();
        if !store.is_shared() {
            return Ok(());
        }
        let _lease = begin_write(vault, catalog, &format!("workspace create {workspace}"))?;
        let key = store.put_pin(&PinBody {
            workspace: workspace.to_string(),
            host: std::fs::read_to_string("/etc/hostname")
                .unwrap_or_default()
                .trim()
                .to_string(),
            bases: bases.iter().map(|(d, r)| (d.clone(), r.to_hex())).collect(),
        })?;
        let file = dir.join(PIN_FILE);
        std::fs::write(&file, &key).map_err(Error::io_at("writing", &file))
    }

    fn unpin(&self, vault: &Vault, dir: &std::path::Path) -> Result<()> {
        let file = dir.join(PIN_FILE);
        match std::fs::read_to_string(&file) {
            Ok(key) => vault.store().remove_pin(key.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("reading", &file, e)),
        }
    }
}

/// The pins in the store that name `dataset` with `root`, as (workspace, host).
pub(crate) fn pinned_by(store: &Store, dataset: &str, root: RootHash) -> Result<Vec<(String, String)>> {
    let hex = root.to_hex();
    Ok(store
        .pins()?
        .into_iter()
        .filter(|(_, p)| p.bases.iter().any(|(name, r)| name == dataset && *r == hex))
        .map(|(_, p)| (p.workspace, p.host))
        .collect())
}

/// `sync`: forget the packs a gc deleted from the store. Returns how many, and a problem
/// line for each dataset here that can no longer be read because it used one.
pub(crate) fn forget_deleted_packs(vault: &Vault, catalog: &Catalog) -> Result<(u64, Vec<String>)> {
    let listed: HashSet<PackId> = vault.store().list_packs()?.into_iter().map(|(id, _)| id).collect();
    let gone: Vec<PackId> = catalog
        .packs()?
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !listed.contains(id))
        .collect();
    let stuck = forget_packs(vault, catalog, &gone, false)?;
    let problems = stuck
        .iter()
        .map(|id| format!(
            "pack {id} was deleted from {} (by a gc) but a dataset here still uses it; `dsvault sync --prune` drops datasets removed elsewhere, `dsvault verify` names the damaged ones",
            vault.store().describe()
        ))
        .collect();
    Ok(((gone.len() - stuck.len()) as u64, problems))
}

/// `sync`: packs this catalog retired because a gc had condemned them, which the store still
/// holds and no condemned list names any more (a writer made them live again), are forgotten
/// as retired so that they are indexed again.
pub(crate) fn unretire_spared(vault: &Vault, catalog: &Catalog) -> Result<()> {
    let retired = catalog.retired_packs()?;
    if retired.is_empty() {
        return Ok(());
    }
    let store = vault.store();
    let condemned: HashSet<String> = store
        .condemned_lists()?
        .into_iter()
        .flat_map(|c| c.objects.into_iter().map(|o| o.key))
        .collect();
    let listed: HashSet<PackId> = store.list_packs()?.into_iter().map(|(id, _)| id).collect();
    for r in retired {
        if listed.contains(&r.pack) && !condemned.contains(&pack_key(r.pack)) {
            catalog.forget_retired(r.pack)?;
        }
    }
    Ok(())
}

/// Drop packs from this catalog (they are gone or condemned in the store). With `prune`,
/// datasets whose ref the store no longer has are dropped first (as `sync --prune` would);
/// chunks a dataset here still uses are moved to another copy in a pack the store keeps.
/// Returns the packs that could not be forgotten (a dataset here needs a chunk only they hold).
fn forget_packs(vault: &Vault, catalog: &Catalog, packs: &[PackId], prune: bool) -> Result<Vec<PackId>> {
    let mut pruned = !prune;
    let mut copies: Option<Vec<(PackId, u64, Vec<crate::pack::IndexEntry>)>> = None;
    let mut stuck = Vec::new();
    for &p in packs {
        if catalog.move_chunks_and_retire(p, None).is_ok() {
            continue;
        }
        if !pruned {
            super::sync::prune_gone(vault, catalog)?;
            pruned = true;
        }
        catalog.delete_dead_contents()?;
        if catalog.move_chunks_and_retire(p, None).is_ok() {
            continue;
        }
        let needed: HashSet<ChunkId> = catalog.live_chunks_in_pack(p)?.into_iter().map(|e| e.chunk).collect();
        let copies = match &mut copies {
            Some(c) => c,
            None => copies.insert(other_copies(vault.store(), packs)?),
        };
        for (q, size, entries) in copies.iter() {
            if entries.iter().any(|e| needed.contains(&e.chunk)) {
                catalog.relocate_chunks(*q, *size, entries)?;
            }
        }
        if catalog.move_chunks_and_retire(p, None).is_err() {
            stuck.push(p);
        }
    }
    Ok(stuck)
}

/// The indexes of every pack in the store except `avoid` (for moving chunks off those).
fn other_copies(store: &Store, avoid: &[PackId]) -> Result<Vec<(PackId, u64, Vec<crate::pack::IndexEntry>)>> {
    let others: Vec<(PackId, u64)> = store
        .list_packs()?
        .into_iter()
        .filter(|(id, _)| !avoid.contains(id))
        .collect();
    let mut out = Vec::new();
    for ((id, size), index) in others.iter().zip(store.read_pack_indexes(&others)) {
        out.push((*id, *size, index?));
    }
    Ok(out)
}

/// Everything a run needs to know, read after the store clock.
struct View {
    /// Keys writers noted as live again, by condemned list, and the notes' own keys.
    spared: HashMap<String, HashSet<String>>,
    spared_notes: HashMap<String, Vec<String>>,
    leases: Vec<ObjectInfo>,
    live_roots: HashMap<RootHash, String>,
    live_lineage: HashSet<String>,
    refs: u64,
    pins: u64,
    packs: Vec<ObjectInfo>,
    manifests: Vec<ObjectInfo>,
    lineage: Vec<ObjectInfo>,
}

fn read_view(store: &Store) -> Result<View> {
    let leases = store.leases()?;
    crate::crashpoint::hit("gc-after-leases");
    let refs = store.list_refs()?;
    let pins = store.pins()?;
    crate::crashpoint::hit("gc-after-refs");
    // After the refs: a writer notes a pack as spared before it checks the ref that makes the
    // pack live, so a note this listing misses belongs to a ref the listing above saw.
    let mut spared: HashMap<String, HashSet<String>> = HashMap::new();
    let mut spared_notes: HashMap<String, Vec<String>> = HashMap::new();
    for (key, note) in store.spared()? {
        spared.entry(note.list.clone()).or_default().extend(note.keys);
        spared_notes.entry(note.list).or_default().push(key);
    }
    let mut live_roots = HashMap::new();
    let mut live_lineage = HashSet::new();
    for r in &refs {
        let d = &r.dataset;
        live_roots.insert(r.root, format!("ref {d}"));
        live_lineage.insert(lineage_key(d.kind.as_str(), &d.name, &d.version, r.root));
    }
    for (key, pin) in &pins {
        for (dataset, root) in &pin.bases {
            let root: RootHash = root
                .parse()
                .map_err(|_| Error::SharedStore(format!("{key} names a damaged root {root:?}; nothing was deleted")))?;
            live_roots
                .entry(root)
                .or_insert_with(|| format!("pin of workspace {} ({dataset})", pin.workspace));
        }
    }
    let backend = store.backend();
    Ok(View {
        spared,
        spared_notes,
        leases,
        live_roots,
        live_lineage,
        refs: refs.len() as u64,
        pins: pins.len() as u64,
        packs: backend.list_objects("packs")?,
        manifests: backend.list_objects("manifests")?,
        lineage: backend.list_objects("lineage")?,
    })
}

/// Packs that hold a chunk of a live manifest. Aborts when a live manifest is missing or
/// names a chunk no listed pack holds: the listing omitted something, or the store is damaged.
fn live_packs(store: &Store, view: &View) -> Result<HashSet<String>> {
    let mut needed: HashSet<ChunkId> = HashSet::new();
    for (root, why) in &view.live_roots {
        let bytes = store.get_manifest(*root)?.ok_or_else(|| {
            Error::SharedStore(format!(
                "manifest {root} ({why}) is missing from {}; gc deleted nothing (run `dsvault verify`)",
                store.describe()
            ))
        })?;
        for e in parse_and_check(&bytes, *root)?.entries {
            for (_, hex) in e.chunks.unwrap_or_default() {
                needed.insert(hex.parse()?);
            }
        }
    }
    let packs: Vec<(PackId, u64)> = view
        .packs
        .iter()
        .filter_map(|o| pack_id_of(&o.key).map(|id| (id, o.size)))
        .collect();
    let mut live = HashSet::new();
    let mut found: HashSet<ChunkId> = HashSet::new();
    for ((id, _), index) in packs.iter().zip(store.read_pack_indexes(&packs)) {
        let index = index.map_err(|e| {
            Error::SharedStore(format!(
                "reading the index of pack {id} failed ({e}); gc deleted nothing"
            ))
        })?;
        for e in index {
            if needed.contains(&e.chunk) {
                found.insert(e.chunk);
                live.insert(pack_key(*id));
            }
        }
    }
    if let Some(missing) = needed.difference(&found).next() {
        return Err(Error::SharedStore(format!(
            "chunk {missing} of a live dataset is in no pack the listing of {} returned ({} of {} chunks missing): the listing is incomplete or the store lost data; gc deleted nothing",
            store.describe(),
            needed.len() - found.len(),
            needed.len()
        )));
    }
    Ok(live)
}

fn pack_id_of(key: &str) -> Option<PackId> {
    key.rsplit('/').next()?.strip_suffix(".pack")?.parse().ok()
}

/// Dead objects now, by key: (size, store time, why).
fn dead_objects(view: &View, live_packs: &HashSet<String>) -> HashMap<String, (u64, i64, String)> {
    let mut dead = HashMap::new();
    for o in &view.packs {
        if pack_id_of(&o.key).is_some() && !live_packs.contains(&o.key) {
            dead.insert(
                o.key.clone(),
                (o.size, o.modified, "no live dataset uses a chunk of this pack".into()),
            );
        }
    }
    let live_manifests: HashSet<String> = view.live_roots.keys().map(|r| manifest_key(*r)).collect();
    for o in &view.manifests {
        if !live_manifests.contains(&o.key) {
            dead.insert(
                o.key.clone(),
                (o.size, o.modified, "no ref or pin names this root".into()),
            );
        }
    }
    for o in &view.lineage {
        if !view.live_lineage.contains(&o.key) {
            dead.insert(
                o.key.clone(),
                (o.size, o.modified, "no ref names this dataset and root".into()),
            );
        }
    }
    dead
}

/// Collect garbage in a shared store (see the module doc).
pub fn gc(vault: &Vault, opts: &GcOptions) -> Result<SharedGcReport> {
    let started = Instant::now();
    let store = vault.store();
    let ttl = store.protocol(vault.config().remote.lease_ttl_secs)?;
    let now = store.server_time()?;
    crate::crashpoint::hit("gc-after-clock");
    let view = read_view(store)?;
    let condemned = store.condemned_lists()?;
    let live = live_packs(store, &view)?;
    let dead = dead_objects(&view, &live);
    let mut r = SharedGcReport {
        dry_run: opts.dry_run,
        store: store.describe(),
        store_time: now,
        refs: view.refs,
        pins: view.pins,
        leases: view.leases.len() as u64,
        packs: view.packs.len() as u64,
        live_packs: live.len() as u64,
        ..Default::default()
    };
    let mut still_condemned: HashSet<String> = HashSet::new();
    for list in &condemned {
        // A list another gc wrote after this run's clock is that run's business.
        if list.time + MARGIN_SECS > now {
            still_condemned.extend(list.objects.iter().map(|o| o.key.clone()));
            continue;
        }
        let blocked = view
            .leases
            .iter()
            .any(|l| l.modified < list.time + MARGIN_SECS && now - l.modified < ttl);
        if blocked {
            r.waiting_for_leases += list.objects.len() as u64;
            still_condemned.extend(list.objects.iter().map(|o| o.key.clone()));
            continue;
        }
        delete_list(store, list, &view, &dead, opts.dry_run, &mut r)?;
    }
    // Notes whose list is gone (deleted by another run) protect nothing any more.
    if !opts.dry_run {
        let lists: HashSet<&str> = condemned.iter().map(|c| c.key.as_str()).collect();
        for (list, notes) in &view.spared_notes {
            if !lists.contains(list.as_str()) {
                for n in notes {
                    store.backend().delete_object(n)?;
                }
            }
        }
    }
    let grace = opts.grace.as_secs() as i64;
    let mut fresh: Vec<CondemnedObject> = Vec::new();
    let deleted: HashSet<&str> = r.deleted.iter().map(|o| o.key.as_str()).collect();
    let mut dead_sorted: Vec<_> = dead.iter().collect();
    dead_sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (key, (size, modified, why)) in dead_sorted {
        if still_condemned.contains(key) || deleted.contains(key.as_str()) {
            continue;
        }
        if now - modified < grace {
            r.too_young += 1;
            continue;
        }
        fresh.push(CondemnedObject {
            key: key.clone(),
            size: *size,
            why: why.clone(),
        });
    }
    r.bytes_condemned = fresh.iter().map(|o| o.size).sum();
    r.condemned = fresh
        .iter()
        .map(|o| GcObject {
            key: o.key.clone(),
            bytes: o.size,
            why: o.why.clone(),
        })
        .collect();
    if !opts.dry_run && !fresh.is_empty() {
        crate::crashpoint::hit("gc-before-condemn");
        store.write_condemned(fresh)?;
    }
    for l in &view.leases {
        if now - l.modified >= ttl {
            r.expired_leases_removed += 1;
            if !opts.dry_run {
                store.backend().delete_object(&l.key)?;
            }
        }
    }
    r.seconds = started.elapsed().as_secs_f64();
    Ok(r)
}

/// Delete the objects of one condemned list that are still dead, then the list.
fn delete_list(
    store: &Store,
    list: &crate::store::shared::CondemnedList,
    view: &View,
    dead: &HashMap<String, (u64, i64, String)>,
    dry_run: bool,
    r: &mut SharedGcReport,
) -> Result<()> {
    for o in &list.objects {
        let noted = view.spared.get(&list.key).is_some_and(|k| k.contains(&o.key));
        let Some((size, _, why)) = dead.get(&o.key).filter(|_| !noted) else {
            // Live again, or already gone (another gc deleted it).
            r.spared += 1;
            continue;
        };
        if !dry_run {
            crate::crashpoint::hit("gc-before-delete");
            store.backend().delete_object(&o.key)?;
        }
        r.bytes_freed += size;
        r.deleted.push(GcObject {
            key: o.key.clone(),
            bytes: *size,
            why: format!("{why}; condemned at store time {}", list.time),
        });
    }
    if !dry_run {
        store.backend().delete_object(&list.key)?;
        for n in view.spared_notes.get(&list.key).into_iter().flatten() {
            store.backend().delete_object(n)?;
        }
    }
    Ok(())
}
