//! Named crash points for fault-injection tests.
//!
//! Owns: `hit(name)`, which aborts the process (like `kill -9`: no destructors, no flushing)
//! when the environment variable `DSVAULT_CRASH_AT` equals `name` or `name:N` and this is the
//! Nth hit. Tests use it to stop an ingest between each durable step and then check that the
//! vault still verifies. `DSVAULT_PAUSE_AT` instead makes the process wait at a point until
//! the test lets it go. Costs one relaxed load when the variables are unset.

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

/// `DSVAULT_PAUSE_AT=name` and `DSVAULT_PAUSE_DIR=dir`: the point to wait at, and where.
static PAUSE: OnceLock<Option<(String, std::path::PathBuf)>> = OnceLock::new();

fn pause_target() -> &'static Option<(String, std::path::PathBuf)> {
    PAUSE.get_or_init(|| {
        let name = std::env::var("DSVAULT_PAUSE_AT").ok()?;
        let dir = std::env::var_os("DSVAULT_PAUSE_DIR")?;
        Some((name, dir.into()))
    })
}

/// Abort here if the test asked for a crash at `name`; wait here if it asked for a pause
/// (`DSVAULT_PAUSE_AT`): create `<DSVAULT_PAUSE_DIR>/<name>.reached`, then wait until the
/// test creates `<name>.go`. Interleaving tests run another process in between.
pub fn hit(name: &str) {
    if let Some((want, dir)) = pause_target() {
        if want == name {
            let _ = std::fs::write(dir.join(format!("{name}.reached")), std::process::id().to_string());
            while !dir.join(format!("{name}.go")).exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    if let Some((want, nth)) = target() {
        if want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
            eprintln!("dsvault: crash point {name} reached; aborting (test)");
            std::process::abort();
        }
    }
}
