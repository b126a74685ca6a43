//! The manifest parser on arbitrary bytes: `sync` reads manifests from a bucket. Never a
//! panic; a manifest that is accepted for the root it claims is accepted again after a
//! round trip through serde (same root).
#![no_main]

use dsvault::manifest::{parse_and_check, Manifest};
use dsvault::RootHash;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_and_check(data, RootHash([0; 32]));
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    let Ok(claimed) = m.root.parse::<RootHash>() else {
        return;
    };
    if parse_and_check(data, claimed).is_ok() {
        let again = serde_json::to_vec(&m).expect("a parsed manifest serialises");
        assert!(parse_and_check(&again, claimed).is_ok(), "round trip changed the root");
    }
});
