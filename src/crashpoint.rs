//! Named crash points for fault-injection tests.
//!
//! Owns: `hit(name)`, which aborts the process (like `kill -9`: no destructors, no flushing)
//! when the environment variable `DSVAULT_CRASH_AT` equals `name` or `name:N` and this is the
//! Nth hit. Tests use it to stop an ingest between each durable step and then check that the
//! vault still verifies. Costs one relaxed load when the variable is unset.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let spec = std::env::var("DSVAULT_CRASH_AT").ok()?;
        match spec.split_once(':') {
            Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1))),
            None => Some((spec, 1)),
        }
    })
}

/// Abort here if the test asked for a crash at `name`.
pub fn hit(name: &str) {
    if let Some((want, nth)) = target() {
        if want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
            eprintln!("dsvault: crash point {name} reached; aborting (test)");
            std::process::abort();
        }
    }
}
