//! Whether a test that needs something of the machine (root and /dev/fuse, a tool) may run,
//! and what happens when it may not: on a developer's machine the test says it is skipped
//! and passes; under `CI=true` or `DSVAULT_REQUIRE_FUSE=1` (`.ci/run` sets it) it FAILS, so
//! a CI run can never report "ok" for a test that did not run.
//!
//! Used by the end-to-end tests (through `tests/common`) and by `fuse/tests` (by path):
//! one rule for every test.

use std::path::Path;

/// Must every test run here (CI, or `DSVAULT_REQUIRE_FUSE=1`)?
pub fn everything_required() -> bool {
    let set = |var: &str, value: &str| std::env::var(var).is_ok_and(|v| v == value);
    set("CI", "true") || set("DSVAULT_REQUIRE_FUSE", "1")
}

/// `available` when this test can run; otherwise it is skipped with a note naming `what` it
/// needs, or fails when [`everything_required`].
pub fn needs(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if everything_required() {
        panic!("this test needs {what}, which this machine lacks; under CI=true or DSVAULT_REQUIRE_FUSE=1 that is a failure, not a skip");
    }
    eprintln!("skipped: needs {what} (under CI=true or DSVAULT_REQUIRE_FUSE=1 this fails)");
    false
}

/// Root with /dev/fuse (real mounts), or the test is skipped (fails under CI).
pub fn can_mount() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    needs(root && Path::new("/dev/fuse").exists(), "root and /dev/fuse")
}
