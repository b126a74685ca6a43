//! Reading one file of a dataset by a path a user (or a web page) gave: the path checked, the
//! entry found, and its first bytes or all of them, every chunk re-hashed before use.
//!
//! Owns: refusing paths that could name something outside a dataset (empty, `.` or `..`
//! components, a leading `/`, NUL) before the catalog is asked, and bounded reads. Never:
//! reads more chunks than a prefix needs, prints. The bytes come through the same verified
//! path as `cat` ([`crate::ops::export::write_content`], `Store::read_chunk`).

use std::io::Write;

use crate::catalog::{Catalog, DatasetRow, Entry};
use crate::error::{Error, Result};
use crate::store::Store;

/// Is `path` a plain relative path inside a dataset: `a/b/c`, no empty, `.` or `..`
/// component, no NUL?
pub fn is_dataset_path(path: &[u8]) -> bool {
    !path.is_empty()
        && path
            .split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b".." && !c.contains(&0))
}

/// The entry at `path` in a dataset (any kind); `PathNotFound` when there is none or the
/// path is not a plain relative path.
pub fn entry(catalog: &Catalog, dataset: &DatasetRow, path: &[u8]) -> Result<Entry> {
    let not_found = || Error::PathNotFound {
        dataset: dataset.name.to_string(),
        path: String::from_utf8_lossy(path).into_owned(),
    };
    if !is_dataset_path(path) {
        return Err(not_found());
    }
    catalog.entry_at(dataset.id, path)?.ok_or_else(not_found)
}

/// At most the first `limit` bytes of a file, reading only the chunks that hold them.
pub fn prefix(store: &Store, catalog: &Catalog, dataset: &DatasetRow, entry: &Entry, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(limit.min(entry.size as usize));
    let Some(content_id) = entry.content_id else {
        return Ok(out);
    };
    for chunk in catalog.content_chunks(content_id)? {
        if out.len() >= limit {
            break;
        }
        let bytes = catalog
            .chunk_location(chunk.chunk)
            .and_then(|loc| store.read_chunk(loc.pack, &loc.entry))
            .map_err(|e| {
                Error::Damaged(format!(
                    "{}:{}: {e}; `dsvault verify --read-data` lists all damage",
                    dataset.name,
                    String::from_utf8_lossy(&entry.path())
                ))
            })?;
        let take = bytes.len().min(limit - out.len());
        out.extend_from_slice(&bytes[..take]);
    }
    Ok(out)
}

/// The whole file to `out`, as `cat` writes it.
pub fn whole(
    store: &Store,
    catalog: &Catalog,
    dataset: &DatasetRow,
    entry: &Entry,
    out: &mut dyn Write,
) -> Result<u64> {
    crate::ops::export::write_content(store, catalog, dataset, entry, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths() {
        for ok in [&b"a"[..], b"a/b", b"caf\xe9/x", b"...", b"a..b"] {
            assert!(is_dataset_path(ok), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"a//b",
            b"a/",
            b"..",
            b"a/../b",
            b"./a",
            b"a/.",
            b"a\0b",
        ] {
            assert!(!is_dataset_path(bad), "{bad:?}");
        }
    }
}
