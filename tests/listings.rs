//! The catalog's folder listings (schema 4, `src/catalog/listings.rs`): written at seal for
//! every folder, they page exactly like the entries they pack, at any position; `verify`
//! names a folder whose listing was tampered with, and the damage never reads as other
//! names.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use common::{tempdir, TestVault};
use dsvault::catalog::{Catalog, ChildName, PAGE_CHILDREN};
use dsvault::dataset::{DatasetName, Kind};

/// A tree with a folder of 2,500 files (three listing pages), an empty folder, nested
/// folders, a symlink and non-UTF-8 names; returns the vault and the dataset's id.
fn ingested() -> (TestVault, Catalog, i64) {
    let src = tempdir();
    let root = src.path();
    for i in 0..2500 {
        // Names of varying length, so pages hold varying bytes.
        let name = format!("big/{}{i:05}", "n".repeat(i % 37));
        common::write_file(root, name, format!("{i}").as_bytes());
    }
    common::write_file(root, OsStr::from_bytes(b"odd/caf\xe9"), b"latin-1");
    common::write_file(root, OsStr::from_bytes(b"odd/\xff\xfe"), b"bytes");
    common::write_file(root, "nested/a/b/deep", b"deep");
    common::write_file(root, "top.txt", b"top");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("top.txt", root.join("link")).unwrap();
    let vault = TestVault::new();
    vault.ingest_ok(root, "tree", "v1", &[]);
    let catalog = Catalog::open(&vault.dir.join("catalog.db")).unwrap();
    let name = DatasetName::new(Kind::Gold, "tree", "v1").unwrap();
    let id = catalog.sealed_dataset(&name).unwrap().unwrap().id;
    (vault, catalog, id)
}

const FOLDERS: [&[u8]; 8] = [
    b"",
    b"big",
    b"empty",
    b"nested",
    b"nested/a",
    b"nested/a/b",
    b"odd",
    b"link",
];

#[test]
fn listings_page_every_folder_exactly_like_its_entries() {
    let (vault, catalog, id) = ingested();
    assert!(catalog.has_listings(id).unwrap());
    let page = PAGE_CHILDREN as u64;
    let windows = [
        (0, usize::MAX),
        (0, 1),
        (1, 2),
        (page - 1, 3),
        (page, PAGE_CHILDREN),
        (page + 17, 819),
        (2 * page - 1, 2),
        (2499, 10),
        (2500, 5),
        (9999, 5),
    ];
    for folder in FOLDERS {
        let all = catalog.child_names(id, folder, None, 0, usize::MAX >> 1).unwrap();
        for (skip, limit) in windows {
            let want: Vec<ChildName> = all.iter().skip(skip as usize).take(limit).cloned().collect();
            let have = catalog.listed_children(id, folder, skip, limit).unwrap();
            assert!(
                have == want,
                "folder {:?} from {skip}, {limit}: {} listed, {} in entries",
                String::from_utf8_lossy(folder),
                have.len(),
                want.len()
            );
        }
    }
    // Sizes: children and packed bytes, one folder or several at once.
    let sizes = catalog.listing_sizes(id, &FOLDERS.map(<[u8]>::to_vec)).unwrap();
    for folder in FOLDERS {
        let size = catalog.listing_sizes(id, &[folder.to_vec()]).unwrap().remove(folder);
        assert_eq!(
            size,
            sizes.get(folder).copied(),
            "{:?}",
            String::from_utf8_lossy(folder)
        );
        let children = catalog.child_names(id, folder, None, 0, usize::MAX >> 1).unwrap();
        if folder != b"link" {
            let size = size.expect("every folder has a listing");
            assert_eq!(size.children, children.len() as u64);
            let names: u64 = children.iter().map(|c| c.name.len() as u64).sum();
            assert!(size.packed_bytes >= names + 2 * size.children, "{size:?}");
        } else {
            assert_eq!(size, None, "a symlink has no listing");
        }
    }
    let big = catalog.listed_children(id, b"big", 0, usize::MAX).unwrap();
    assert_eq!(big.len(), 2500);
    assert!(catalog.listed_children(id, b"empty", 0, 10).unwrap().is_empty());
    assert_eq!(catalog.dataset_listing_mismatches(id).unwrap(), Vec::<Vec<u8>>::new());
    // Every folder has a page 0, the empty one too; "big" has three pages.
    let pages: Vec<(Vec<u8>, i64)> = {
        let conn = vault.catalog();
        let mut stmt = conn
            .prepare("SELECT parent, page FROM listings WHERE dataset_id = ?1 ORDER BY parent, page")
            .unwrap();
        stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let mut want: Vec<(Vec<u8>, i64)> = [
        &b""[..],
        b"big",
        b"big",
        b"big",
        b"empty",
        b"nested",
        b"nested/a",
        b"nested/a/b",
        b"odd",
    ]
    .iter()
    .map(|f| (f.to_vec(), 0))
    .collect();
    want[2].1 = 1;
    want[3].1 = 2;
    assert_eq!(pages, want);
    vault.verify();
}

#[test]
fn listings_cannot_be_changed_or_deleted_once_sealed() {
    let (vault, _catalog, id) = ingested();
    let conn = vault.catalog();
    for sql in [
        "UPDATE listings SET packed = x'' WHERE dataset_id = ?1",
        "DELETE FROM listings WHERE dataset_id = ?1",
        "INSERT INTO listings (dataset_id, parent, page, count, packed) VALUES (?1, 'new', 0, 0, x'')",
    ] {
        let err = conn.execute(sql, [id]).unwrap_err().to_string();
        assert!(err.contains("dsvault: "), "{sql}: {err}");
    }
    vault.verify();
}

/// Tampering that bypasses the triggers: a listing that does not decode, one that decodes to
/// other children, a folder without its listing and a listing of no folder are each named by
/// `verify`; a damaged page fails the query, never reads as other names.
#[test]
fn verify_names_each_folder_whose_listing_was_tampered_with() {
    let (vault, catalog, id) = ingested();
    let conn = vault.catalog();
    conn.execute_batch("DROP TRIGGER listings_no_update; DROP TRIGGER listings_sealed_no_delete; DROP TRIGGER listings_sealed_no_insert;")
        .unwrap();
    // "big" page 1: cut inside its first child.
    conn.execute(
        "UPDATE listings SET packed = substr(packed, 1, 2) WHERE dataset_id = ?1 AND parent = CAST('big' AS BLOB) AND page = 1",
        [id],
    )
    .unwrap();
    // "odd": the page of "nested" (other, well-formed children).
    conn.execute(
        "UPDATE listings SET packed = (SELECT packed FROM listings WHERE dataset_id = ?1 AND parent = CAST('nested' AS BLOB)) WHERE dataset_id = ?1 AND parent = CAST('odd' AS BLOB)",
        [id],
    )
    .unwrap();
    conn.execute(
        "DELETE FROM listings WHERE dataset_id = ?1 AND parent = CAST('nested/a' AS BLOB)",
        [id],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO listings (dataset_id, parent, page, count, packed) VALUES (?1, CAST('ghost' AS BLOB), 0, 0, x'')",
        [id],
    )
    .unwrap();
    let err = catalog
        .listed_children(id, b"big", PAGE_CHILDREN as u64, 10)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listing of folder 'big'") && err.contains("damaged"),
        "{err}"
    );
    assert_eq!(
        catalog.dataset_listing_mismatches(id).unwrap(),
        [&b"big"[..], b"ghost", b"nested/a", b"odd"].map(<[u8]>::to_vec)
    );
    let out = vault.run(["--json", "verify"]).failed();
    let report = out.json();
    let mut named: Vec<String> = report["report"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "listing")
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    named.sort();
    assert_eq!(named, ["big", "ghost", "nested/a", "odd"], "{report}");
}

/// A vault from before schema 4: the first command of a newer dsvault migrates it and writes
/// the listings of the datasets it already had, exactly as a seal would have; `verify`
/// passes and the listings page like the entries.
#[test]
fn upgrading_a_vault_writes_the_listings_of_its_datasets() {
    let (vault, catalog, id) = ingested();
    drop(catalog);
    let written: Vec<(Vec<u8>, i64, i64, Vec<u8>)> = listing_rows(&vault);
    // Back to schema 3: no listings table, no triggers on it.
    vault
        .catalog()
        .execute_batch(
            "DROP TRIGGER listings_sealed_no_insert; DROP TRIGGER listings_no_update; \
             DROP TRIGGER listings_sealed_no_delete; DROP TABLE listings; PRAGMA user_version = 3;",
        )
        .unwrap();
    vault.run(["ls"]).ok();
    let conn = vault.catalog();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, dsvault::catalog::SCHEMA_VERSION as i64);
    assert_eq!(
        listing_rows(&vault),
        written,
        "the upgrade wrote other listings than a seal"
    );
    // The insert trigger is back.
    let err = conn
        .execute(
            "INSERT INTO listings (dataset_id, parent, page, count, packed) VALUES (?1, CAST('x' AS BLOB), 0, 0, x'')",
            [id],
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dsvault: listings can only be added to a pending dataset"),
        "{err}"
    );
    vault.verify();
}

/// Every listing row of the vault: (parent, page, count, packed).
fn listing_rows(vault: &TestVault) -> Vec<(Vec<u8>, i64, i64, Vec<u8>)> {
    let conn = vault.catalog();
    let mut stmt = conn
        .prepare("SELECT parent, page, count, packed FROM listings ORDER BY dataset_id, parent, page")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
