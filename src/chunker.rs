//! Content-defined chunking (FastCDC 2020, the `fastcdc` crate, normalization level 1).
//!
//! Owns: where chunk boundaries fall, over a slice or a stream. Boundaries are part of the
//! on-disk format (they decide which chunks exist), so the parameters come from `vault.toml`
//! and golden tests below pin `(offset, length, hash)` for seeded data.
//! Never: hashes, compresses or stores anything; the only I/O is reading the reader given.

use std::io::{self, Read};
use std::ops::Range;

use fastcdc::v2020::{cut, select_masks, Normalization};

use crate::config::ChunkingConfig;

/// Finds chunk boundaries with fixed parameters.
#[derive(Debug, Clone, Copy)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// A chunker for validated parameters (see [`ChunkingConfig::validate`]).
    pub fn new(config: &ChunkingConfig) -> Self {
        let avg = config.avg_size as usize;
        let (mask_s, mask_l) = select_masks(avg, Normalization::Level1);
        Chunker {
            min: config.min_size as usize,
            avg,
            max: config.max_size as usize,
            mask_s,
            mask_l,
        }
    }

    /// Largest chunk this chunker cuts.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the next chunk at the start of `data`, where `data` is either at least
    /// `max_size` long or the end of the input.
    fn next_cut(&self, data: &[u8]) -> usize {
        let (_, len) = cut(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        len
    }

    /// The chunk ranges of a complete in-memory input. Empty input has no chunks.
    pub fn chunk_slice<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = Range<usize>> + 'a {
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= data.len() {
                return None;
            }
            let len = self.next_cut(&data[start..]);
            let range = start..start + len;
            start += len;
            Some(range)
        })
    }

    /// Chunk a stream with a reusable buffer; chunks borrow from it.
    pub fn stream<R: Read>(&self, reader: R) -> StreamChunker<R> {
        StreamChunker {
            chunker: *self,
            reader,
            buf: vec![0; self.max * 4],
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

/// Chunks a reader without holding more than a few maximum-size chunks in memory.
pub struct StreamChunker<R> {
    chunker: Chunker,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> StreamChunker<R> {
    /// The next chunk's bytes, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        if self.end - self.start < self.chunker.max && !self.eof {
            self.refill()?;
        }
        if self.start == self.end {
            return Ok(None);
        }
        let len = self.chunker.next_cut(&self.buf[self.start..self.end]);
        let range = self.start..self.start + len;
        self.start += len;
        Ok(Some(&self.buf[range]))
    }

    /// Move the unread tail to the front and read until the buffer is full or the input ends.
    fn refill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn seeded(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
        data
    }

    /// A reader that returns short reads, to exercise refills at odd boundaries.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(out.len()).min(self.1);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn stream_ranges(chunker: &Chunker, data: &[u8], step: usize) -> Vec<(usize, usize, String)> {
        let mut stream = chunker.stream(Trickle(data, step));
        let mut offset = 0;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next_chunk().unwrap() {
            out.push((offset, chunk.len(), blake3::hash(chunk).to_hex()[..16].to_string()));
            offset += chunk.len();
        }
        out
    }

    #[test]
    fn stream_and_slice_agree() {
        let chunker = Chunker::new(&ChunkingConfig::default());
        let data = seeded(9 * 1024 * 1024 + 12345, 7);
        let from_slice: Vec<_> = chunker
            .chunk_slice(&data)
            .map(|r| (r.start, r.len(), blake3::hash(&data[r]).to_hex()[..16].to_string()))
            .collect();
        assert_eq!(from_slice, stream_ranges(&chunker, &data, 1 << 20));
        assert_eq!(from_slice, stream_ranges(&chunker, &data, 77_777));
        let total: usize = from_slice.iter().map(|c| c.1).sum();
        assert_eq!(total, data.len());
    }

    #[test]
    fn empty_and_tiny_inputs() {
        let chunker = Chunker::new(&ChunkingConfig::default());
        assert_eq!(chunker.chunk_slice(&[]).count(), 0);
        assert_eq!(chunker.chunk_slice(b"x").collect::<Vec<_>>(), vec![0..1]);
        assert!(chunker.stream(&b""[..]).next_chunk().unwrap().is_none());
    }

    /// Golden cut points: if this test fails, chunk boundaries changed and every existing
    /// vault would stop deduplicating against new ingests. Never update it casually.
    #[test]
    fn golden_boundaries_default_params() {
        let chunker = Chunker::new(&ChunkingConfig::default());
        let data = seeded(4 * 1024 * 1024, 42);
        let got = stream_ranges(&chunker, &data, 1 << 16);
        let golden: &[(usize, usize, &str)] = GOLDEN;
        let got_ref: Vec<(usize, usize, &str)> = got.iter().map(|(o, l, h)| (*o, *l, h.as_str())).collect();
        assert_eq!(got_ref, golden, "chunk boundaries changed: {got:?}");
    }

    const GOLDEN: &[(usize, usize, &str)] = &[
        (0, 277360, "22e023fdd4169f6f"),
        (277360, 566744, "abdb86f39010e78f"),
        (844104, 875065, "a5d61f6ae19f8e8b"),
        (1719169, 192808, "c41464f9fc1eb01e"),
        (1911977, 1082099, "01a5edf5b941325f"),
        (2994076, 527449, "3c0c724cb1fee198"),
        (3521525, 285261, "ff1e5002e02b063c"),
        (3806786, 387518, "5333e3a3823772c3"),
    ];

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let chunker = Chunker::new(&ChunkingConfig::default());
        let base = seeded(32 * 1024 * 1024, 3);
        let mut edited = base[..16 * 1024 * 1024].to_vec();
        edited.extend_from_slice(&seeded(1024 * 1024, 4));
        edited.extend_from_slice(&base[16 * 1024 * 1024..]);
        let hashes = |d: &[u8]| -> std::collections::HashSet<[u8; 32]> {
            chunker
                .chunk_slice(d)
                .map(|r| *blake3::hash(&d[r]).as_bytes())
                .collect()
        };
        let before = hashes(&base);
        let new_bytes: usize = chunker
            .chunk_slice(&edited)
            .filter(|r| !before.contains(blake3::hash(&edited[r.clone()]).as_bytes()))
            .map(|r| r.len())
            .sum();
        assert!(
            new_bytes < 1024 * 1024 + 3 * chunker.max_size(),
            "{new_bytes} new bytes"
        );
    }
}
