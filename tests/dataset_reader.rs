//! The library's read-by-path API (`dsvault::vfs::DatasetReader`, what the Python module
//! reads through) against a real vault: bytes, positional reads, listings, symlinks that stay
//! inside the dataset, wrong kinds and absent paths.

use dsvault::ops::ingest;
use dsvault::vfs::{DatasetPath, DatasetReader, NodeKind, VfsError, VfsOptions, VfsResult};
use dsvault::{ContentId, DatasetName, Kind, Vault};

/// A vault with `gold/t@v1`: a small file, a file of several chunks, a folder, an
/// empty file, and symlinks to a file and to a folder.
fn vault_with_dataset() -> (tempfile::TempDir, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("small.txt"), b"hello\n").unwrap();
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();
    std::fs::write(src.join("sub/deep/empty"), b"").unwrap();
    std::os::unix::fs::symlink("sub/big.bin", src.join("to-big")).unwrap();
    std::os::unix::fs::symlink("sub", src.join("to-sub")).unwrap();
    let vault = Vault::open_or_init(&tmp.path().join("vault")).unwrap();
    let opts = ingest::IngestOptions::new(src, DatasetName::new(Kind::Gold, "t", "v1").unwrap());
    ingest::ingest(&vault, &opts, &dsvault::progress::NoProgress).unwrap();
    (tmp, big)
}

fn reader(tmp: &tempfile::TempDir) -> DatasetReader {
    let vault = Vault::open(&tmp.path().join("vault")).unwrap();
    DatasetReader::open(vault, &"gold/t@v1".parse().unwrap(), VfsOptions::default()).unwrap()
}

fn p(s: &str) -> DatasetPath {
    DatasetPath::parse(s.as_bytes()).unwrap()
}

fn read_all(r: &DatasetReader, path: &str) -> VfsResult<Vec<u8>> {
    let (fh, info) = r.open_file(&p(path))?;
    let mut buf = vec![0; info.size as usize + 10];
    let n = r.read_at(fh, 0, &mut buf)?;
    r.close(fh);
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn reads_by_path_serve_the_ingested_bytes() {
    let (tmp, big) = vault_with_dataset();
    let r = reader(&tmp);
    assert_eq!(r.name(), "gold/t@v1");
    assert_eq!(read_all(&r, "small.txt").unwrap(), b"hello\n");
    assert_eq!(read_all(&r, "sub/big.bin").unwrap(), big);
    assert_eq!(read_all(&r, "./sub//big.bin").unwrap(), big);
    assert_eq!(read_all(&r, "sub/deep/empty").unwrap(), b"");
    // Positional reads across chunk boundaries, and past the end.
    let (fh, _) = r.open_file(&p("sub/big.bin")).unwrap();
    let mut buf = vec![0; 3_000_000];
    assert_eq!(r.read_at(fh, 1_234_567, &mut buf).unwrap(), buf.len());
    assert_eq!(buf, big[1_234_567..4_234_567]);
    assert_eq!(r.read_at(fh, 4_999_990, &mut buf).unwrap(), 10);
    assert_eq!(r.read_at(fh, 9_000_000, &mut buf).unwrap(), 0);
    r.close(fh);
    assert!(matches!(r.read_at(fh, 0, &mut buf), Err(VfsError::BadHandle)));
}

#[test]
fn stat_list_and_symlinks() {
    let (tmp, big) = vault_with_dataset();
    let r = reader(&tmp);
    let info = r.stat(&p("sub/big.bin")).unwrap();
    assert_eq!((info.kind, info.size), (NodeKind::File, big.len() as u64));
    assert_eq!(info.content, Some(ContentId::of(&big)));
    assert_eq!(r.stat(&DatasetPath::root()).unwrap().kind, NodeKind::Dir);
    let names: Vec<_> = r
        .list(&DatasetPath::root())
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, [&b"small.txt"[..], b"sub", b"to-big", b"to-sub"]);
    // Symlinks: followed by stat and open (also inside a path), reported by lstat and list.
    assert_eq!(r.lstat(&p("to-big")).unwrap().kind, NodeKind::Symlink);
    let via = r.stat(&p("to-big")).unwrap();
    assert_eq!(
        (via.kind, via.path.to_string(), via.name),
        (NodeKind::File, "sub/big.bin".into(), b"to-big".to_vec())
    );
    assert_eq!(read_all(&r, "to-sub/big.bin").unwrap(), big);
    assert_eq!(r.list(&p("to-sub/deep")).unwrap().len(), 1);
    // Wrong kinds and absent paths.
    assert!(matches!(r.open_file(&p("sub")), Err(VfsError::IsADirectory)));
    assert!(matches!(r.open_file(&DatasetPath::root()), Err(VfsError::IsADirectory)));
    assert!(matches!(r.list(&p("small.txt")), Err(VfsError::NotADirectory)));
    assert!(matches!(r.stat(&p("small.txt/x")), Err(VfsError::NotADirectory)));
    assert!(matches!(r.stat(&p("nope")), Err(VfsError::NotFound)));
    assert!(matches!(r.open_file(&p("sub/nope")), Err(VfsError::NotFound)));
}

#[test]
fn an_unknown_dataset_is_refused() {
    let (tmp, _) = vault_with_dataset();
    let vault = Vault::open(&tmp.path().join("vault")).unwrap();
    let err = DatasetReader::open(vault, &"gold/t@v9".parse().unwrap(), VfsOptions::default()).err();
    assert!(matches!(err, Some(dsvault::Error::DatasetNotFound(_))), "{err:?}");
}
