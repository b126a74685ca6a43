#!/usr/bin/env bash
# Run each cargo-fuzz target for a bounded time on its checked-in corpus (.ci/run calls this;
# cargo-fuzz is installed here when missing).
# The corpus in fuzz/corpus/TARGET is read, never written: what a run discovers goes to a
# temporary folder and is dropped. A crash fails this script and leaves the input that
# caused it in fuzz/artifacts/TARGET/ (run it again with `cargo fuzz run TARGET FILE`).
#
# usage: fuzz/run.sh [SECONDS_PER_TARGET]     (default 20)
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the nightly flags it
# needs (sanitizer, coverage).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in pack_index manifest store_url; do
    found=$(mktemp -d)
    echo "fuzz/run.sh: $target for ${seconds}s" >&2
    # -a: debug assertions and overflow checks on, so wrapping arithmetic is a crash.
    cargo fuzz run -a "$target" "$found" "fuzz/corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1
    rm -rf "$found"
done
