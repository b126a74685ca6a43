//! The pack index and footer parser on arbitrary bytes: a pack `sync` fetched from a bucket
//! may be damaged or hostile. Never a panic or an unbounded allocation; an index that parses
//! lies inside the pack, reads the same through ranged reads as from memory, and `verify`
//! can slice every chunk it names.
#![no_main]

use dsvault::pack::{parse_index, read_index_with, verify_pack_bytes};
use dsvault::PackId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = PackId::of(data);
    let in_memory = parse_index(id, data);
    let ranged = read_index_with(id, data.len() as u64, |offset, len| {
        let start = usize::try_from(offset).expect("offset checked against the size");
        Ok(data[start..start + len].to_vec())
    });
    if let Ok(entries) = &in_memory {
        for e in entries {
            assert!(e.offset >= 16 && e.offset + e.stored_len as u64 <= data.len() as u64);
        }
        assert_eq!(
            ranged.as_ref().ok(),
            Some(entries),
            "ranged and in-memory parses disagree"
        );
    }
    let damage = verify_pack_bytes(id, data);
    assert!(!damage.hash_mismatch, "a pack is named by its own hash");
    assert_eq!(damage.unreadable_index.is_none(), in_memory.is_ok());
});
