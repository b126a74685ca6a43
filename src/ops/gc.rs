//! `gc`: reclaim packs, chunks and contents that nothing references.
//!
//! Live data is what an entry of some dataset row uses: every sealed dataset, every pending
//! one (an ingest or derive in progress), and through them every workspace's bases (a base
//! is a sealed dataset that `rm` refuses to remove). Steps, under the vault's exclusive lock
//! (so no ingest or derive has looked up a chunk or content that gc is about to drop):
//!
//! 1. clear what dead processes left (temporary files, pending rows) and index orphan packs;
//! 2. delete contents no entry uses;
//! 3. for each pack older than the grace period: none of its chunks live → retire it; some
//!    dead (at least `repack_percent` of its bytes) → copy the live chunks, verified, into a
//!    new pack, publish it durably, then in one transaction point the chunks at it and retire
//!    the old pack;
//! 4. delete the files of packs retired at least the grace period ago.
//!
//! A retired pack is no longer in the catalog, so new readers resolve chunks to their new
//! pack; its file stays for the grace period, so a mount that looked a location up just
//! before still reads the old file. A crash at any point leaves either the old locations or
//! the new ones, and at worst a pack the next gc collects.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::catalog::{Catalog, PackUsage};
use crate::error::{Error, Result};
use crate::id::PackId;
use crate::pack::{EncodedChunk, IndexEntry, PackWriter};
use crate::vault::Vault;

/// How `gc` runs.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Report what would be done, change nothing.
    pub dry_run: bool,
    /// Packs younger than this are not touched, and retired packs are deleted only after it.
    pub grace: Duration,
    /// Repack a partly live pack when at least this percent of its bytes are dead.
    pub repack_percent: u64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            grace: Duration::from_secs(60 * 60),
            repack_percent: 10,
        }
    }
}

/// What `gc` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub contents_removed: u64,
    /// Packs dropped whole (no live chunk).
    pub packs_removed: u64,
    /// Partly live packs whose live chunks were copied to a new pack.
    pub packs_repacked: u64,
    /// Packs with dead chunks left alone: younger than the grace period or below the threshold.
    pub packs_kept: u64,
    /// Pack bytes no longer in the catalog (removed or replaced by smaller packs).
    pub bytes_freed: u64,
    /// Live bytes copied into new packs.
    pub bytes_rewritten: u64,
    /// Pack files deleted from the store (retired at least the grace period ago).
    pub pack_files_deleted: u64,
    /// Retired pack files still waiting for the grace period to pass.
    pub pack_files_waiting: u64,
    pub seconds: f64,
}

/// What to do with one pack.
enum Plan {
    Keep,
    Remove,
    Repack,
}

fn plan(p: &PackUsage, opts: &GcOptions, now: i64) -> Plan {
    let dead_bytes = p.size.saturating_sub(p.live_bytes);
    if p.live_chunks == p.chunks && p.chunks > 0 {
        return Plan::Keep;
    }
    if p.added_at > now - opts.grace.as_secs() as i64 {
        return Plan::Keep;
    }
    if p.live_chunks == 0 {
        Plan::Remove
    } else if dead_bytes * 100 >= p.size * opts.repack_percent {
        Plan::Repack
    } else {
        Plan::Keep
    }
}

/// Collect garbage in `vault`.
pub fn gc(vault: &Vault, opts: &GcOptions) -> Result<GcReport> {
    let started = Instant::now();
    if vault.store().is_shared() {
        return Err(Error::Unsupported(format!(
            "store {} is shared: its gc is ops::shared_gc::gc, which needs no catalog",
            vault.store().describe()
        )));
    }
    let _lock = vault.lock_exclusive()?;
    let catalog = vault.catalog()?;
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if !opts.dry_run {
        vault.clear_dead_tmp()?;
        catalog.clear_dead_pending(crate::process::alive)?;
        super::recover::index_orphan_packs(vault, &catalog)?;
        report.contents_removed = catalog.delete_dead_contents()? as u64;
    }
    let now = crate::catalog::now_secs();
    for listed in catalog.pack_usage()? {
        let Some(p) = catalog.pack_usage_of(listed.pack)? else {
            continue;
        };
        match plan(&p, opts, now) {
            Plan::Keep => report.packs_kept += (p.live_chunks < p.chunks) as u64,
            Plan::Remove => {
                report.packs_removed += 1;
                report.bytes_freed += p.size;
                if !opts.dry_run {
                    catalog.move_chunks_and_retire(p.pack, None)?;
                }
            }
            Plan::Repack => {
                report.packs_repacked += 1;
                report.bytes_rewritten += p.live_bytes;
                let new_size = if opts.dry_run {
                    p.live_bytes
                } else {
                    repack(vault, &catalog, p.pack)?
                };
                report.bytes_freed += p.size.saturating_sub(new_size);
            }
        }
    }
    // Packs retired just now may carry a later second than `now`: judge them by the clock as
    // it is when their files are considered, or a zero grace would still keep them waiting.
    delete_retired(vault, &catalog, opts, crate::catalog::now_secs(), &mut report)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Copy a pack's live chunks (each decoded and checked against its hash) into a new pack,
/// publish it, then move the chunks to it and retire the old pack. Returns the new size.
fn repack(vault: &Vault, catalog: &Catalog, old: PackId) -> Result<u64> {
    let live = catalog.live_chunks_in_pack(old)?;
    let mut writer = PackWriter::create(&vault.tmp_dir())?;
    for e in &live {
        if let Err(err) = copy_chunk(vault, old, e, &mut writer) {
            writer.abandon();
            return Err(err);
        }
    }
    let sealed = writer.seal()?;
    // A failed put removes the temporary file itself.
    vault.store().put_pack(&sealed)?;
    crate::crashpoint::hit("gc-before-commit");
    catalog.move_chunks_and_retire(old, Some((sealed.id, sealed.size, &sealed.entries)))?;
    Ok(sealed.size)
}

/// Append one stored chunk to `writer` as it is stored (no recompression), after checking
/// that it decodes to its id: damaged bytes are never copied.
fn copy_chunk(vault: &Vault, pack: PackId, e: &IndexEntry, writer: &mut PackWriter) -> Result<()> {
    let stored = vault.store().read_pack_range(pack, e.offset, e.stored_len as usize)?;
    crate::pack::decode_chunk(pack, e, &stored)?;
    writer.add(&EncodedChunk {
        id: e.chunk,
        raw_len: e.raw_len,
        codec: e.codec,
        stored,
    })?;
    Ok(())
}

/// Delete the files of packs retired at least the grace period ago.
fn delete_retired(vault: &Vault, catalog: &Catalog, opts: &GcOptions, now: i64, report: &mut GcReport) -> Result<()> {
    for r in catalog.retired_packs()? {
        if r.retired_at > now - opts.grace.as_secs() as i64 {
            report.pack_files_waiting += 1;
            continue;
        }
        if opts.dry_run {
            report.pack_files_deleted += 1;
            continue;
        }
        if !catalog.has_pack(r.pack)? {
            crate::crashpoint::hit("gc-before-delete");
            match vault.store().remove_pack(r.pack) {
                Err(crate::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
            report.pack_files_deleted += 1;
        }
        catalog.forget_retired(r.pack)?;
    }
    Ok(())
}
