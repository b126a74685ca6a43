//! The pack format: many chunks in one immutable file with a self-describing index at its end.
//!
//! Owns: the byte layout of a pack (docs/FORMAT.md), chunk encoding (raw or zstd), and the
//! checks that turn stored bytes back into verified chunk bytes.
//! Never: decides where packs live (that is `store`) or what a chunk means (that is `catalog`).
//!
//! ```text
//! header  "DSVPACK\0" | version u32 | reserved u32                    16 bytes
//! blobs   chunk bytes as stored (raw or zstd frame), back to back
//! index   per chunk: id [32] | offset u64 | stored_len u32 | raw_len u32 | codec u8 | 0 [7]
//! footer  index_offset u64 | count u32 | version u32 | blake3(index) [32] | "DSVPIDX\0"
//! ```
//! All integers little-endian. The pack's name is the blake3 hash of the whole file.

mod reader;
mod sink;
mod writer;

pub use reader::{parse_footer, parse_index, read_index_from_file, read_index_with, verify_pack_bytes, PackDamage};
pub use writer::{PackWriter, SealedPack};

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};

pub(crate) const HEADER_MAGIC: &[u8; 8] = b"DSVPACK\0";
pub(crate) const FOOTER_MAGIC: &[u8; 8] = b"DSVPIDX\0";
pub(crate) const PACK_VERSION: u32 = 1;
pub(crate) const HEADER_LEN: u64 = 16;
pub(crate) const ENTRY_LEN: usize = 56;
pub(crate) const FOOTER_LEN: usize = 56;
/// No chunk is larger (`config` allows a chunker maximum of at most 16 MiB): an index entry
/// claiming more is damage, and decoding never allocates more for one chunk.
pub(crate) const MAX_RAW_CHUNK: u32 = 1 << 24;

/// How a chunk's bytes are stored in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    pub fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// Where one chunk sits inside a pack and how to decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub chunk: ChunkId,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
}

/// A chunk ready to go into a pack: its id, raw length and the bytes to store.
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    pub id: ChunkId,
    pub raw_len: u32,
    pub codec: Codec,
    pub stored: Vec<u8>,
}

/// Compression policy for [`encode_chunk`].
#[derive(Debug, Clone, Copy)]
pub struct CompressPolicy {
    pub level: i32,
    pub min_saving_percent: u32,
}

/// Encodes chunks: zstd when it saves at least the policy's fraction, raw otherwise.
///
/// A cheap trial on a 32 KiB sample at level 1 first skips incompressible data (images,
/// audio, shards) without paying for a full compression. A compressed result is decompressed
/// and re-hashed here, before it can reach a pack, so a codec bug can never seal wrong bytes.
/// One encoder per thread: it keeps its zstd contexts between chunks (the check decompresses
/// with the thread's context, as [`decode_chunk`] does).
pub struct ChunkEncoder {
    policy: CompressPolicy,
    compressor: zstd::bulk::Compressor<'static>,
    sampler: zstd::bulk::Compressor<'static>,
}

impl ChunkEncoder {
    pub fn new(policy: CompressPolicy) -> Result<Self> {
        let zstd_err = |e: std::io::Error| Error::Config(format!("zstd: {e}"));
        Ok(ChunkEncoder {
            policy,
            // Level 0 means "store raw" here (see `encode`), not zstd's default level.
            compressor: zstd::bulk::Compressor::new(if policy.level == 0 { 1 } else { policy.level })
                .map_err(zstd_err)?,
            sampler: zstd::bulk::Compressor::new(1).map_err(zstd_err)?,
        })
    }

    /// Encode one chunk whose id is `id`. An owned buffer that ends up stored raw is moved
    /// into the result, not copied (a small file read whole is often exactly one chunk).
    pub fn encode(&mut self, id: ChunkId, data: Cow<'_, [u8]>) -> Result<EncodedChunk> {
        let raw = |data: Cow<'_, [u8]>| EncodedChunk {
            id,
            raw_len: data.len() as u32,
            codec: Codec::Raw,
            stored: data.into_owned(),
        };
        if self.policy.level == 0 || data.len() < 512 || !self.sample_compresses(&data) {
            return Ok(raw(data));
        }
        let Ok(compressed) = self.compressor.compress(&data) else {
            return Ok(raw(data));
        };
        let limit = data.len() as u64 * (100 - self.policy.min_saving_percent.min(100)) as u64 / 100;
        if compressed.len() as u64 > limit {
            return Ok(raw(data));
        }
        match decompress(&compressed, data.len()) {
            Ok(check) if check.len() == data.len() && ChunkId::of(&check) == id => Ok(EncodedChunk {
                id,
                raw_len: data.len() as u32,
                codec: Codec::Zstd,
                stored: compressed,
            }),
            _ => {
                // Never store what does not decode back to the original; raw always does.
                tracing::warn!(chunk = %id, "zstd round trip mismatch; storing raw");
                Ok(raw(data))
            }
        }
    }

    /// Whether a 32 KiB sample from the middle of `data` shrinks by a quarter at level 1.
    fn sample_compresses(&mut self, data: &[u8]) -> bool {
        const SAMPLE: usize = 32 * 1024;
        if data.len() <= SAMPLE {
            return true;
        }
        let start = (data.len() - SAMPLE) / 2;
        match self.sampler.compress(&data[start..start + SAMPLE]) {
            Ok(c) => c.len() < SAMPLE * 3 / 4,
            Err(_) => false,
        }
    }
}

/// A sealed pack of `chunks` (zstd `level`, 0 = raw) written into `dir`, and its bytes.
#[cfg(test)]
pub(crate) fn test_pack(dir: &std::path::Path, chunks: &[&[u8]], level: i32) -> (SealedPack, Vec<u8>) {
    let mut writer = PackWriter::create(dir).unwrap();
    let policy = CompressPolicy {
        level,
        min_saving_percent: 10,
    };
    for c in chunks {
        writer.add(&encode_chunk(ChunkId::of(c), c, policy).unwrap()).unwrap();
    }
    let sealed = writer.seal().unwrap();
    let bytes = std::fs::read(&sealed.tmp_path).unwrap();
    (sealed, bytes)
}

/// Encode one chunk with a fresh encoder (convenient for tests and one-offs).
pub fn encode_chunk(id: ChunkId, data: &[u8], policy: CompressPolicy) -> Result<EncodedChunk> {
    ChunkEncoder::new(policy)?.encode(id, Cow::Borrowed(data))
}

/// Turn a chunk's stored bytes back into its raw bytes and check them against its id.
pub fn decode_chunk(pack: PackId, entry: &IndexEntry, stored: &[u8]) -> Result<Vec<u8>> {
    let damaged = |detail: String| Error::CorruptChunk {
        chunk: entry.chunk,
        pack,
        detail,
    };
    if stored.len() != entry.stored_len as usize {
        return Err(damaged(format!(
            "expected {} stored bytes, read {}",
            entry.stored_len,
            stored.len()
        )));
    }
    let raw = match entry.codec {
        Codec::Raw => stored.to_vec(),
        Codec::Zstd => decompress(stored, entry.raw_len as usize).map_err(|e| damaged(format!("zstd: {e}")))?,
    };
    if raw.len() != entry.raw_len as usize || ChunkId::of(&raw) != entry.chunk {
        return Err(damaged("content does not match its blake3 hash".into()));
    }
    Ok(raw)
}

thread_local! {
    /// Each thread's zstd decompression context, kept between chunks, for reads and for the
    /// encoder's check: creating one per chunk (`zstd::bulk::decompress`) was about 1% of a
    /// mount's CPU reading compressible files.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompress one zstd frame of at most `capacity` bytes with this thread's context.
fn decompress(stored: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let ctx = match cell.as_mut() {
            Some(ctx) => ctx,
            None => cell.insert(zstd::bulk::Decompressor::new()?),
        };
        ctx.decompress(stored, capacity)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CompressPolicy = CompressPolicy {
        level: 3,
        min_saving_percent: 10,
    };

    #[test]
    fn text_compresses_random_does_not() {
        let text: Vec<u8> = (0..200_000).map(|i| b"id,label,score\n"[i % 15]).collect();
        let enc = encode_chunk(ChunkId::of(&text), &text, POLICY).unwrap();
        assert_eq!(enc.codec, Codec::Zstd);
        assert!(enc.stored.len() < text.len() / 10);
        let mut noise = vec![0u8; 200_000];
        let mut x = 0x9E3779B97F4A7C15u64;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let enc = encode_chunk(ChunkId::of(&noise), &noise, POLICY).unwrap();
        assert_eq!(enc.codec, Codec::Raw);
        assert_eq!(enc.stored, noise);
    }

    #[test]
    fn negative_levels_compress_and_zero_stores_raw() {
        let text: Vec<u8> = (0..200_000).map(|i| b"id,label,score\n"[i % 15]).collect();
        let id = ChunkId::of(&text);
        let fast = encode_chunk(
            id,
            &text,
            CompressPolicy {
                level: -3,
                min_saving_percent: 10,
            },
        )
        .unwrap();
        assert_eq!(fast.codec, Codec::Zstd);
        let raw = encode_chunk(
            id,
            &text,
            CompressPolicy {
                level: 0,
                min_saving_percent: 10,
            },
        )
        .unwrap();
        assert_eq!((raw.codec, raw.stored.len()), (Codec::Raw, text.len()));
    }

    #[test]
    fn decode_detects_a_flipped_byte() {
        let text: Vec<u8> = (0..100_000).map(|i| (i % 7) as u8).collect();
        let id = ChunkId::of(&text);
        for policy in [
            POLICY,
            CompressPolicy {
                level: 0,
                min_saving_percent: 10,
            },
        ] {
            let enc = encode_chunk(id, &text, policy).unwrap();
            let entry = IndexEntry {
                chunk: id,
                offset: 0,
                stored_len: enc.stored.len() as u32,
                raw_len: enc.raw_len,
                codec: enc.codec,
            };
            let pack = PackId::of(b"p");
            assert_eq!(decode_chunk(pack, &entry, &enc.stored).unwrap(), text);
            let mut bad = enc.stored.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 1;
            assert!(matches!(
                decode_chunk(pack, &entry, &bad),
                Err(Error::CorruptChunk { .. })
            ));
            // A frame cut short fails inside zstd; the thread's reused context still
            // decodes the next chunk.
            let cut = &enc.stored[..enc.stored.len() / 2];
            assert!(matches!(
                decode_chunk(pack, &entry, cut),
                Err(Error::CorruptChunk { .. })
            ));
            let whole = IndexEntry {
                stored_len: cut.len() as u32,
                ..entry
            };
            assert!(matches!(
                decode_chunk(pack, &whole, cut),
                Err(Error::CorruptChunk { .. })
            ));
            assert_eq!(decode_chunk(pack, &entry, &enc.stored).unwrap(), text);
        }
    }
}
