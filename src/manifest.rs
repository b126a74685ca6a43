//! Root hashes and manifests.
//!
//! Owns: the definition of a dataset's root hash, and the canonical manifest written to the
//! store for each sealed dataset (the record `sync` rebuilds a catalog from). A manifest is
//! named by its root and describes content only: which names point at it is what refs say,
//! so two datasets with equal content share one manifest. Modification times in it are those
//! of the first ingest of that content.
//!
//! Root hash: entries in canonical order (parent path bytes, then name bytes); each entry's
//! leaf is blake3 over `kind u8 | mode u32 | size u64 | path_len u32 | path | content [32] |
//! target_len u32 | target` (little-endian; content is zeros for folders and symlinks); the
//! root is blake3 in derive-key mode ("dsvault 2026 root v1") over `count u64` followed by
//! the 32-byte derive-key hash of all leaves in order. Modification times are recorded but
//! not hashed: equal content, equal root.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Entry, EntryKind, FileChunk};
use crate::error::{Error, Result};
use crate::id::{hex_encode, ContentId, RootHash};

const ROOT_CONTEXT: &str = "dsvault 2026 root v1";

/// Incremental root hash over entries given in canonical order.
pub struct RootHasher {
    hasher: blake3::Hasher,
    leaves: Vec<[u8; 32]>,
    count: u64,
}

impl Default for RootHasher {
    fn default() -> Self {
        RootHasher {
            hasher: blake3::Hasher::new_derive_key(ROOT_CONTEXT),
            leaves: Vec::new(),
            count: 0,
        }
    }
}

impl RootHasher {
    /// Add the next entry.
    pub fn add(
        &mut self,
        kind: EntryKind,
        mode: u32,
        size: u64,
        path: &[u8],
        content: Option<ContentId>,
        target: Option<&[u8]>,
    ) {
        let mut leaf = blake3::Hasher::new();
        leaf.update(&[kind as u8]);
        leaf.update(&mode.to_le_bytes());
        leaf.update(&size.to_le_bytes());
        leaf.update(&(path.len() as u32).to_le_bytes());
        leaf.update(path);
        leaf.update(content.map(|c| c.0).as_ref().unwrap_or(&[0u8; 32]));
        let target = target.unwrap_or(&[]);
        leaf.update(&(target.len() as u32).to_le_bytes());
        leaf.update(target);
        self.leaves.push(*leaf.finalize().as_bytes());
        self.count += 1;
        // Fold leaves in batches so memory stays flat for huge datasets.
        if self.leaves.len() == 4096 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for leaf in self.leaves.drain(..) {
            self.hasher.update(&leaf);
        }
    }

    /// The root.
    pub fn finish(mut self) -> RootHash {
        self.flush();
        let mut outer = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
        outer.update(&self.count.to_le_bytes());
        outer.update(self.hasher.finalize().as_bytes());
        RootHash(*outer.finalize().as_bytes())
    }
}

/// One entry as written in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    /// Set instead of `path` when the path is not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path_hex: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content: Option<String>,
    /// `[file_offset, chunk hash]` pairs, for files.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub chunks: Option<Vec<(u64, String)>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target_hex: Option<String>,
}

/// A whole manifest, as read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub entries: Vec<ManifestEntry>,
    pub root: String,
}

fn text_or_hex(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(hex_encode(bytes))),
    }
}

fn bytes_of(text: &Option<String>, hex: &Option<String>) -> Result<Vec<u8>> {
    match (text, hex) {
        (Some(t), None) => Ok(t.as_bytes().to_vec()),
        (None, Some(h)) => decode_hex_any(h).ok_or_else(|| Error::Manifest(format!("bad hex {h:?}"))),
        _ => Err(Error::Manifest("entry needs exactly one of path/path_hex".into())),
    }
}

fn decode_hex_any(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

impl ManifestEntry {
    /// The entry's path bytes.
    pub fn path_bytes(&self) -> Result<Vec<u8>> {
        bytes_of(&self.path, &self.path_hex)
    }

    /// The symlink target's bytes, for symlinks.
    pub fn target_bytes(&self) -> Option<Vec<u8>> {
        bytes_of(&self.target, &self.target_hex).ok()
    }

    /// The entry's kind.
    pub fn kind(&self) -> Result<EntryKind> {
        match self.kind.as_str() {
            "file" => Ok(EntryKind::File),
            "dir" => Ok(EntryKind::Dir),
            "symlink" => Ok(EntryKind::Symlink),
            k => Err(Error::Manifest(format!("unknown entry type {k:?}"))),
        }
    }
}

/// Stream a pending dataset's manifest to `out` and return its root hash.
pub fn write_manifest(catalog: &Catalog, dataset_id: i64, out: &mut impl Write) -> Result<RootHash> {
    let io = |e: std::io::Error| Error::Manifest(format!("writing manifest: {e}"));
    let mut root = RootHasher::default();
    write!(out, "{{\"format\":1,\"entries\":[").map_err(io)?;
    let mut first = true;
    catalog.for_each_entry(dataset_id, |e: Entry| {
        let path = e.path();
        root.add(e.kind, e.mode, e.size, &path, e.content, e.target.as_deref());
        let chunks: Option<Vec<FileChunk>> = match e.content_id {
            Some(id) => Some(catalog.content_chunks(id)?),
            None => None,
        };
        let (path_text, path_hex) = text_or_hex(&path);
        let (target, target_hex) = e.target.as_deref().map(text_or_hex).unwrap_or((None, None));
        let m = ManifestEntry {
            path: path_text,
            path_hex,
            kind: e.kind.as_str().to_string(),
            mode: e.mode,
            size: e.size,
            mtime_ns: e.mtime_ns,
            content: e.content.map(|c| c.to_hex()),
            chunks: chunks.map(|cs| cs.iter().map(|c| (c.file_offset, c.chunk.to_hex())).collect()),
            target,
            target_hex,
        };
        if !first {
            out.write_all(b",\n").map_err(io)?;
        }
        first = false;
        serde_json::to_writer(&mut *out, &m).map_err(|e| Error::Manifest(e.to_string()))?;
        Ok(())
    })?;
    let root = root.finish();
    writeln!(out, "],\"root\":\"{root}\"}}").map_err(io)?;
    Ok(root)
}

/// Parse a manifest and check that its entries hash to the root it claims (and to `expect`).
pub fn parse_and_check(bytes: &[u8], expect: RootHash) -> Result<Manifest> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| Error::Manifest(format!("manifest {expect} does not parse: {e}")))?;
    let mut root = RootHasher::default();
    for e in &manifest.entries {
        let content = e.content.as_deref().map(str::parse::<ContentId>).transpose()?;
        let target = bytes_of(&e.target, &e.target_hex).ok();
        root.add(e.kind()?, e.mode, e.size, &e.path_bytes()?, content, target.as_deref());
    }
    let got = root.finish();
    if got != expect || manifest.root != expect.to_hex() {
        return Err(Error::Manifest(format!(
            "manifest {expect} does not hash to its root (entries give {got})"
        )));
    }
    Ok(manifest)
}
