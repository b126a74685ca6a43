//! Folder listings: each folder's children (entry id, kind, name, in name order) packed in
//! pages of [`PAGE_CHILDREN`], written when a dataset is sealed (schema 4).
//!
//! A mount lists a folder without attributes by reading one row per page, instead of an
//! index entry and a table row per child: that SQL was a third of the server's time in a
//! 300,000-file d_type walk (docs/mount.md, "Listings"). Pages are numbered by position, so
//! a listing resumes at any offset with one indexed read.
//!
//! Encoding of `packed` (docs/FORMAT.md): per child, the zigzag LEB128 difference between
//! its entry id and the previous child's (the first: from 0), its kind as one byte (0 file,
//! 1 folder, 2 symlink), the LEB128 length of its name, and the name's bytes.
//!
//! Owns: the `listings` table, its encoding, the check that it matches `entries`, and the
//! migration to schema 4 writing the listings of datasets sealed before it.
//! Never: decides which listings a mount reads. Every sealed dataset has listings once the
//! catalog is at schema 4; one that lacks them all the same (rows removed behind the
//! triggers) is listed from `entries` by callers, and named by `verify`.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension};

use super::entries::join_path;
use super::{Catalog, ChildName, EntryKind};
use crate::error::{Error, Result};

/// Children per listing page.
pub const PAGE_CHILDREN: usize = 1024;

/// The catalog schema that added listings (`schema/0004_listings.sql`).
pub(super) const SCHEMA: usize = 4;

/// The trigger that refuses listings for sealed datasets, as the migration creates it.
const SEALED_NO_INSERT: &str = "listings_sealed_no_insert";

/// How large a folder's listing is: its children and the bytes they take packed (about
/// three bytes each plus their names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingSize {
    pub children: u64,
    pub packed_bytes: u64,
}

impl Catalog {
    /// Write the listings of pending dataset `dataset_id` from its entries: a page 0 for
    /// every folder (empty for an empty one) and one page more per [`PAGE_CHILDREN`]
    /// children. Part of sealing it.
    pub(super) fn write_listings(&self, dataset_id: i64) -> Result<()> {
        let mut insert = self.conn().prepare_cached(
            "INSERT INTO listings (dataset_id, parent, page, count, packed) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut folders: HashSet<Vec<u8>> = HashSet::from([Vec::new()]);
        let mut listed: HashSet<Vec<u8>> = HashSet::new();
        let mut write = |page: &PageWriter| -> Result<()> {
            if page.count > 0 {
                insert.execute(params![
                    dataset_id,
                    page.parent,
                    page.number,
                    page.count as i64,
                    page.children
                ])?;
                listed.insert(page.parent.clone());
            }
            Ok(())
        };
        let mut page = PageWriter::default();
        self.each_child(dataset_id, |parent, child| {
            if child.kind == EntryKind::Dir {
                folders.insert(join_path(&parent, &child.name));
            }
            if page.parent != parent || page.count == PAGE_CHILDREN {
                write(&page)?;
                page = std::mem::take(&mut page).next(parent);
            }
            page.push(child.id, child.kind as u8, &child.name);
            Ok(())
        })?;
        write(&page)?;
        for empty in folders.difference(&listed) {
            insert.execute(params![dataset_id, empty, 0, 0, Vec::<u8>::new()])?;
        }
        Ok(())
    }

    /// Visit every entry of a dataset as (its folder's path, the child it is), by folder
    /// path and then name: the order of listings.
    fn each_child(&self, dataset_id: i64, mut f: impl FnMut(Vec<u8>, ChildName) -> Result<()>) -> Result<()> {
        let mut stmt = self
            .conn()
            .prepare("SELECT id, parent, name, kind FROM entries WHERE dataset_id = ?1 ORDER BY parent, name")?;
        let mut rows = stmt.query([dataset_id])?;
        while let Some(r) = rows.next()? {
            let child = ChildName {
                id: r.get(0)?,
                name: r.get(2)?,
                kind: EntryKind::from_i64(r.get(3)?).unwrap_or(EntryKind::File),
            };
            f(r.get(1)?, child)?;
        }
        Ok(())
    }

    /// Write the listings of every dataset sealed before schema 4, inside the migration's
    /// transaction, so that upgraded vaults list as fast as new ones. The trigger that
    /// refuses listings for sealed datasets is lifted for this and put back as the migration
    /// wrote it, before the transaction commits.
    pub(super) fn backfill_listings(&self) -> Result<()> {
        let sealed: Vec<i64> = self
            .conn()
            .prepare("SELECT id FROM datasets WHERE state = 'sealed' ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if sealed.is_empty() {
            return Ok(());
        }
        tracing::info!(
            "catalog schema {SCHEMA}: writing folder listings of {} datasets (once)",
            sealed.len()
        );
        let trigger: String = self.conn().query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
            [SEALED_NO_INSERT],
            |r| r.get(0),
        )?;
        self.conn().execute_batch(&format!("DROP TRIGGER {SEALED_NO_INSERT}"))?;
        for id in sealed {
            self.write_listings(id)?;
        }
        self.conn().execute_batch(&trigger)?;
        Ok(())
    }

    /// Does dataset `dataset_id` have listings (its top folder's page 0)?
    pub fn has_listings(&self, dataset_id: i64) -> Result<bool> {
        Ok(self
            .conn()
            .prepare_cached("SELECT 1 FROM listings WHERE dataset_id = ?1 AND parent = x'' AND page = 0")?
            .query_row([dataset_id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The listing sizes of folders (those of a listing page, or one), by path; folders
    /// without a listing are left out.
    pub fn listing_sizes(&self, dataset_id: i64, folders: &[Vec<u8>]) -> Result<HashMap<Vec<u8>, ListingSize>> {
        const AT_ONCE: usize = 32;
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT parent, SUM(count), SUM(length(packed)) FROM listings WHERE dataset_id = ?1 AND parent IN ({}) GROUP BY parent",
            (2..AT_ONCE + 2).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
        ))?;
        let mut out = HashMap::with_capacity(folders.len());
        for batch in folders.chunks(AT_ONCE) {
            let mut values: Vec<rusqlite::types::Value> = vec![dataset_id.into()];
            values.extend(batch.iter().map(|f| rusqlite::types::Value::Blob(f.clone())));
            values.resize(AT_ONCE + 1, rusqlite::types::Value::Null);
            let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    ListingSize {
                        children: r.get::<_, i64>(1)? as u64,
                        packed_bytes: r.get::<_, i64>(2)? as u64,
                    },
                ))
            })?;
            for row in rows {
                let (folder, size) = row?;
                out.insert(folder, size);
            }
        }
        Ok(out)
    }

    /// Up to `limit` children of folder `parent` from position `skip` on (0 = the first), in
    /// name order, from its listing; an empty list past the end. For datasets with listings.
    pub fn listed_children(&self, dataset_id: i64, parent: &[u8], skip: u64, limit: usize) -> Result<Vec<ChildName>> {
        let first_page = skip / PAGE_CHILDREN as u64;
        let mut within = (skip % PAGE_CHILDREN as u64) as usize;
        let pages = within
            .saturating_add(limit)
            .div_ceil(PAGE_CHILDREN)
            .min(i64::MAX as usize);
        let mut stmt = self.conn().prepare_cached(
            "SELECT packed FROM listings WHERE dataset_id = ?1 AND parent = ?2 AND page >= ?3 ORDER BY page LIMIT ?4",
        )?;
        let mut rows = stmt.query(params![dataset_id, parent, first_page as i64, pages as i64])?;
        let mut out = Vec::with_capacity(limit.min(PAGE_CHILDREN));
        while let Some(r) = rows.next()? {
            let children = r.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
            let damaged = || Error::DamagedListing {
                dataset_id,
                folder: String::from_utf8_lossy(parent).into_owned(),
            };
            for child in PageReader::new(children) {
                let child = child.ok_or_else(damaged)?;
                if within > 0 {
                    within -= 1;
                    continue;
                }
                if out.len() == limit {
                    return Ok(out);
                }
                out.push(child);
            }
        }
        Ok(out)
    }

    /// Folders of a sealed dataset whose listing differs from its entries (by id, kind,
    /// name or order), is damaged, or is missing, and listings of folders that do not exist:
    /// what `verify` reports.
    pub fn dataset_listing_mismatches(&self, dataset_id: i64) -> Result<Vec<Vec<u8>>> {
        // What the listings should say: every folder (the top one too), with its children.
        let mut want: HashMap<Vec<u8>, Vec<ChildName>> = HashMap::from([(Vec::new(), Vec::new())]);
        self.each_child(dataset_id, |parent, child| {
            if child.kind == EntryKind::Dir {
                want.entry(join_path(&parent, &child.name)).or_default();
            }
            want.entry(parent).or_default().push(child);
            Ok(())
        })?;
        let mut stmt = self
            .conn()
            .prepare("SELECT DISTINCT parent FROM listings WHERE dataset_id = ?1")?;
        let stored: HashSet<Vec<u8>> = stmt
            .query_map([dataset_id], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut bad: Vec<Vec<u8>> = Vec::new();
        for folder in want.keys().chain(stored.iter().filter(|f| !want.contains_key(*f))) {
            let have = if stored.contains(folder) {
                self.listed_children(dataset_id, folder, 0, usize::MAX).ok()
            } else {
                None
            };
            if have.as_ref() != want.get(folder) {
                bad.push(folder.clone());
            }
        }
        bad.sort();
        Ok(bad)
    }
}

/// One listing page being built.
#[derive(Default)]
struct PageWriter {
    parent: Vec<u8>,
    number: i64,
    count: usize,
    children: Vec<u8>,
    last_id: i64,
}

impl PageWriter {
    /// The page after this one: the next of the same folder, or page 0 of `parent`.
    fn next(self, parent: Vec<u8>) -> PageWriter {
        let number = if parent == self.parent { self.number + 1 } else { 0 };
        PageWriter {
            parent,
            number,
            ..PageWriter::default()
        }
    }

    fn push(&mut self, id: i64, kind: u8, name: &[u8]) {
        let delta = id.wrapping_sub(self.last_id);
        put_varint(&mut self.children, ((delta << 1) ^ (delta >> 63)) as u64);
        self.children.push(kind);
        put_varint(&mut self.children, name.len() as u64);
        self.children.extend_from_slice(name);
        self.last_id = id;
        self.count += 1;
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The children of one encoded page; `None` for a damaged one (then nothing more).
struct PageReader<'a> {
    rest: &'a [u8],
    last_id: i64,
    damaged: bool,
}

impl<'a> PageReader<'a> {
    fn new(children: &'a [u8]) -> Self {
        PageReader {
            rest: children,
            last_id: 0,
            damaged: false,
        }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.rest.split_first()?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn child(&mut self) -> Option<ChildName> {
        let zigzag = self.varint()?;
        let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        let (&kind, rest) = self.rest.split_first()?;
        self.rest = rest;
        let kind = EntryKind::from_i64(i64::from(kind))?;
        let len = usize::try_from(self.varint()?).ok()?;
        if len == 0 || len > self.rest.len() {
            return None;
        }
        let (name, rest) = self.rest.split_at(len);
        self.rest = rest;
        self.last_id = self.last_id.wrapping_add(delta);
        Some(ChildName {
            id: self.last_id,
            name: name.to_vec(),
            kind,
        })
    }
}

impl Iterator for PageReader<'_> {
    type Item = Option<ChildName>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.damaged {
            return None;
        }
        let child = self.child();
        self.damaged = child.is_none();
        Some(child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_decode_to_what_was_written() {
        let mut page = PageWriter::default();
        let children = [
            (7i64, EntryKind::File, b"a".to_vec()),
            (3, EntryKind::Dir, b"b\xff\x00c".to_vec()),
            (1 << 40, EntryKind::Symlink, vec![b'n'; 300]),
        ];
        for (id, kind, name) in &children {
            page.push(*id, *kind as u8, name);
        }
        let read: Vec<ChildName> = PageReader::new(&page.children).map(Option::unwrap).collect();
        let want: Vec<ChildName> = children
            .iter()
            .map(|(id, kind, name)| ChildName {
                id: *id,
                name: name.clone(),
                kind: *kind,
            })
            .collect();
        assert_eq!(read, want);
    }

    #[test]
    fn arbitrary_bytes_decode_to_children_or_damage_without_panicking() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let read: Vec<Option<ChildName>> = PageReader::new(&bytes).collect();
            // At most one child per 3 bytes (id, kind, length, a name byte), and a damaged
            // child is the last thing read.
            assert!(read.len() <= len / 3 + 1);
            assert!(read.iter().rev().skip(1).all(Option::is_some));
            for child in read.iter().flatten() {
                assert!(!child.name.is_empty() && child.name.len() <= len);
            }
        }
    }

    #[test]
    fn a_damaged_page_reads_as_damaged_never_as_other_children() {
        let mut page = PageWriter::default();
        page.push(5, 0, b"file");
        for cut in 1..page.children.len() {
            let read: Vec<_> = PageReader::new(&page.children[..cut]).collect();
            assert_eq!(read, vec![None], "cut at {cut}");
        }
        let mut bad_kind = page.children.clone();
        bad_kind[1] = 9;
        assert_eq!(PageReader::new(&bad_kind).collect::<Vec<_>>(), vec![None]);
    }
}
