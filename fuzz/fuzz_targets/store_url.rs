//! The store URL parser on arbitrary text (`init --store`, `vault.toml`). Never a panic; an
//! accepted bucket URL has a non-empty bucket without `@` or `:` and a prefix without
//! leading or trailing `/`; a refused URL whose bucket part holds `@` is not echoed (what
//! precedes it may be a secret).
#![no_main]

use dsvault::store::StoreUrl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    match StoreUrl::parse(url) {
        Ok(StoreUrl::Local(path)) => assert!(!path.as_os_str().is_empty()),
        Ok(StoreUrl::S3 { bucket, prefix } | StoreUrl::Gcs { bucket, prefix })
        | Ok(StoreUrl::Azure {
            container: bucket,
            prefix,
        }) => {
            assert!(!bucket.is_empty() && !bucket.contains('@') && !bucket.contains(':'));
            assert!(!prefix.starts_with('/') && !prefix.ends_with('/'));
        }
        Err(e) => {
            let bucket_part = url
                .split_once("://")
                .map(|(_, rest)| rest.split('/').next().unwrap_or(""));
            if bucket_part.is_some_and(|b| b.contains('@')) && !url.starts_with("file://") {
                assert!(!e.to_string().contains(url), "echoed a URL that may hold a secret: {e}");
            }
        }
    }
});
