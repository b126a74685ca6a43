//! Reading a pack's index and checking a whole pack.
//!
//! Every offset, length and count read from a pack is checked before it is used: sums and
//! products are checked (never wrapping), and nothing is allocated or sliced from a value
//! the file gave until it is known to lie inside the pack. Packs come from a bucket that
//! other machines write (`sync` indexes them), so a damaged or hostile pack must end in
//! `Error::CorruptPack`, never a panic or a huge allocation. `fuzz/` fuzzes these parsers.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{decode_chunk, Codec, IndexEntry, ENTRY_LEN, FOOTER_LEN, FOOTER_MAGIC, HEADER_LEN, HEADER_MAGIC};
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};

/// Parse the footer from a pack's last [`FOOTER_LEN`] bytes: (index offset, chunk count).
pub fn parse_footer(pack: PackId, footer: &[u8]) -> Result<(u64, usize, [u8; 32])> {
    let bad = |d: &str| Error::CorruptPack {
        pack,
        detail: d.to_string(),
    };
    if footer.len() != FOOTER_LEN || &footer[48..56] != FOOTER_MAGIC {
        return Err(bad("no pack footer (truncated or not a pack)"));
    }
    let index_offset = u64::from_le_bytes(footer[0..8].try_into().unwrap());
    let count = u32::from_le_bytes(footer[8..12].try_into().unwrap()) as usize;
    let version = u32::from_le_bytes(footer[12..16].try_into().unwrap());
    if version != super::PACK_VERSION {
        return Err(bad("unknown pack version"));
    }
    Ok((index_offset, count, footer[16..48].try_into().unwrap()))
}

/// Parse an index given the pack's total size, the index bytes and the footer.
fn parse_entries(
    pack: PackId,
    size: u64,
    index: &[u8],
    count: usize,
    index_hash: &[u8; 32],
) -> Result<Vec<IndexEntry>> {
    let bad = |d: String| Error::CorruptPack { pack, detail: d };
    if Some(index.len()) != count.checked_mul(ENTRY_LEN) || blake3::hash(index).as_bytes() != index_hash {
        return Err(bad("index does not match its hash".into()));
    }
    let data_end = size
        .checked_sub(FOOTER_LEN as u64 + index.len() as u64)
        .ok_or_else(|| bad("index larger than the pack".into()))?;
    index
        .chunks_exact(ENTRY_LEN)
        .map(|e| {
            let entry = IndexEntry {
                chunk: ChunkId::from_slice(&e[0..32]).unwrap(),
                offset: u64::from_le_bytes(e[32..40].try_into().unwrap()),
                stored_len: u32::from_le_bytes(e[40..44].try_into().unwrap()),
                raw_len: u32::from_le_bytes(e[44..48].try_into().unwrap()),
                codec: Codec::from_u8(e[48]).ok_or_else(|| bad(format!("unknown codec {}", e[48])))?,
            };
            if entry.raw_len > super::MAX_RAW_CHUNK || (entry.codec == Codec::Raw && entry.raw_len != entry.stored_len)
            {
                return Err(bad(format!("chunk {} has an impossible length", entry.chunk)));
            }
            let end = entry.offset.checked_add(entry.stored_len as u64);
            if entry.offset < HEADER_LEN || end.is_none_or(|end| end > data_end) {
                return Err(bad(format!("chunk {} lies outside the pack", entry.chunk)));
            }
            Ok(entry)
        })
        .collect()
}

/// Parse the index of a pack held in memory.
pub fn parse_index(pack: PackId, bytes: &[u8]) -> Result<Vec<IndexEntry>> {
    if bytes.len() < HEADER_LEN as usize + FOOTER_LEN || &bytes[..8] != HEADER_MAGIC {
        return Err(Error::CorruptPack {
            pack,
            detail: "no pack header".into(),
        });
    }
    if bytes[8..12] != super::PACK_VERSION.to_le_bytes() {
        return Err(Error::CorruptPack {
            pack,
            detail: "unknown pack version in the header".into(),
        });
    }
    let (index_offset, count, index_hash) = parse_footer(pack, &bytes[bytes.len() - FOOTER_LEN..])?;
    let index_end = bytes.len() - FOOTER_LEN;
    let index_start = usize::try_from(index_offset)
        .ok()
        .filter(|&start| start >= HEADER_LEN as usize && start <= index_end)
        .ok_or_else(|| Error::CorruptPack {
            pack,
            detail: "index offset outside the pack".into(),
        })?;
    parse_entries(
        pack,
        bytes.len() as u64,
        &bytes[index_start..index_end],
        count,
        &index_hash,
    )
}

/// Read just the index of a pack file (footer, then index), without reading its chunks.
pub fn read_index_from_file(pack: PackId, path: &Path) -> Result<Vec<IndexEntry>> {
    let file = File::open(path).map_err(Error::io_at("opening pack", path))?;
    let size = file.metadata().map_err(Error::io_at("reading", path))?.len();
    read_index_with(pack, size, |offset, len| {
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(Error::io_at("reading", path))?;
        Ok(buf)
    })
}

/// Read just the index of a pack of `size` bytes through `read_at(offset, len)` (footer,
/// then index): how a pack in a file or behind ranged requests is indexed.
pub fn read_index_with(
    pack: PackId,
    size: u64,
    mut read_at: impl FnMut(u64, usize) -> Result<Vec<u8>>,
) -> Result<Vec<IndexEntry>> {
    if size < HEADER_LEN + FOOTER_LEN as u64 {
        return Err(Error::CorruptPack {
            pack,
            detail: format!("only {size} bytes"),
        });
    }
    let footer = read_at(size - FOOTER_LEN as u64, FOOTER_LEN)?;
    let (index_offset, count, index_hash) = parse_footer(pack, &footer)?;
    let index_len = count.checked_mul(ENTRY_LEN);
    let ends_at_footer = index_len
        .and_then(|len| index_offset.checked_add(len as u64))
        .and_then(|end| end.checked_add(FOOTER_LEN as u64))
        == Some(size);
    if !ends_at_footer || index_offset < HEADER_LEN {
        return Err(Error::CorruptPack {
            pack,
            detail: "index does not end at the footer".into(),
        });
    }
    // Bounded by the pack's real size, checked just above.
    let index = read_at(index_offset, index_len.unwrap_or(0))?;
    parse_entries(pack, size, &index, count, &index_hash)
}

/// What a full check of one pack found.
#[derive(Debug, Default)]
pub struct PackDamage {
    /// The pack's bytes do not hash to its name.
    pub hash_mismatch: bool,
    /// The index could not be read; every chunk the catalog places here is suspect.
    pub unreadable_index: Option<String>,
    /// Chunks whose stored bytes do not decode to their id.
    pub bad_chunks: Vec<ChunkId>,
}

impl PackDamage {
    pub fn is_clean(&self) -> bool {
        !self.hash_mismatch && self.unreadable_index.is_none() && self.bad_chunks.is_empty()
    }
}

/// Re-hash a whole pack and every chunk in it.
pub fn verify_pack_bytes(pack: PackId, bytes: &[u8]) -> PackDamage {
    let mut damage = PackDamage {
        hash_mismatch: PackId::of(bytes) != pack,
        ..Default::default()
    };
    match parse_index(pack, bytes) {
        Ok(entries) => {
            for e in entries {
                let stored = &bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
                if decode_chunk(pack, &e, stored).is_err() {
                    damage.bad_chunks.push(e.chunk);
                }
            }
        }
        Err(e) => damage.unreadable_index = Some(e.to_string()),
    }
    damage
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    #[test]
    fn pack_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000 + i as usize * 100]).collect();
        let (sealed, bytes) = test_pack(dir.path(), &chunks.iter().map(Vec::as_slice).collect::<Vec<_>>(), 3);
        assert_eq!(PackId::of(&bytes), sealed.id);
        assert_eq!(
            read_index_from_file(sealed.id, &sealed.tmp_path).unwrap(),
            sealed.entries
        );
        assert_eq!(parse_index(sealed.id, &bytes).unwrap(), sealed.entries);
        for (e, c) in sealed.entries.iter().zip(&chunks) {
            let stored = &bytes[e.offset as usize..][..e.stored_len as usize];
            assert_eq!(&decode_chunk(sealed.id, e, stored).unwrap(), c);
        }
        assert!(verify_pack_bytes(sealed.id, &bytes).is_clean());
        let mut bad = bytes.clone();
        let victim = sealed.entries[5];
        bad[victim.offset as usize + 3] ^= 0x40;
        let damage = verify_pack_bytes(sealed.id, &bad);
        assert!(damage.hash_mismatch);
        assert_eq!(damage.bad_chunks, vec![victim.chunk]);
        assert!(parse_index(sealed.id, &bytes[..bytes.len() - 1]).is_err());
    }

    /// A footer or index entry whose numbers wrap around u64 is refused, never trusted.
    #[test]
    fn offsets_that_overflow_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (sealed, bytes) = test_pack(dir.path(), &[b"abc"], 0);
        let footer_at = bytes.len() - FOOTER_LEN;
        let index_at = footer_at - ENTRY_LEN;
        let read = |b: &[u8]| read_index_with(sealed.id, b.len() as u64, |o, l| Ok(b[o as usize..][..l].to_vec()));
        // The largest count with an index offset that makes `offset + count * 56 + 56` wrap
        // around to the pack's size: unchecked, that asked for a 240 GB read.
        let mut b = bytes.clone();
        let huge_index = u64::from(u32::MAX) * ENTRY_LEN as u64;
        let wrapped = (b.len() as u64)
            .wrapping_sub(FOOTER_LEN as u64)
            .wrapping_sub(huge_index);
        b[footer_at..footer_at + 8].copy_from_slice(&wrapped.to_le_bytes());
        b[footer_at + 8..footer_at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_index(sealed.id, &b).is_err());
        assert!(read(&b).is_err());
        // A chunk offset near u64::MAX with a valid index hash: offset + length wraps.
        let mut b = bytes.clone();
        b[index_at + 32..index_at + 40].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        let hash = *blake3::hash(&b[index_at..footer_at]).as_bytes();
        b[footer_at + 16..footer_at + 48].copy_from_slice(&hash);
        assert!(matches!(parse_index(sealed.id, &b), Err(Error::CorruptPack { .. })));
        assert!(read(&b).is_err());
        assert!(verify_pack_bytes(sealed.id, &b).unreadable_index.is_some());
        // A chunk count whose index would be larger than the pack.
        let mut b = bytes.clone();
        b[footer_at + 8..footer_at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_index(sealed.id, &b).is_err());
        assert!(read(&b).is_err());
    }
}
