//! Typed identifiers over 32-byte blake3 hashes.
//!
//! Owns: the `ChunkId`, `ContentId`, `PackId` and `RootHash` newtypes and their hex form.
//! Never: computes anything but hashes; every id is the blake3 hash of the bytes it names.

use std::fmt;
use std::str::FromStr;

/// Raw 32-byte blake3 digest shared by every id type.
pub type Digest = [u8; 32];

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Digest);

        impl $name {
            /// Hash `bytes` with blake3.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }
            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex_encode(&self.0)
            }
            /// The raw digest bytes.
            pub fn as_bytes(&self) -> &Digest {
                &self.0
            }
            /// From a slice that must be exactly 32 bytes (as stored in SQLite).
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                bytes.try_into().ok().map(Self)
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> Self {
                Self(*h.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..12])
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                hex_decode(s).map(Self).ok_or_else(|| crate::Error::InvalidHash(s.to_string()))
            }
        }
    };
}

hash_id!(
    /// A chunk of file content, named by the blake3 hash of its uncompressed bytes.
    ChunkId
);
hash_id!(
    /// A whole file's content, named by the blake3 hash of all its bytes (what `b3sum` prints).
    ContentId
);
hash_id!(
    /// A pack file, named by the blake3 hash of the whole file as stored.
    PackId
);
hash_id!(
    /// A dataset's Merkle root over its sorted entries (see `manifest`).
    RootHash
);

/// Lower-case hex of any byte slice.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Parse 64 hex characters into a digest.
pub fn hex_decode(s: &str) -> Option<Digest> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let id = ChunkId::of(b"hello");
        let parsed: ChunkId = id.to_hex().parse().unwrap();
        assert_eq!(id, parsed);
        assert_eq!(id.to_hex(), blake3::hash(b"hello").to_hex().to_string());
    }

    #[test]
    fn bad_hex_is_refused() {
        assert!("zz".parse::<ChunkId>().is_err());
        assert!("0".repeat(63).parse::<ChunkId>().is_err());
        assert!("g".repeat(64).parse::<ChunkId>().is_err());
    }
}
