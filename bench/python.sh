#!/usr/bin/env bash
# Python read benchmark: the bench dataset read from Python through dsvault's Python API,
# through open() on `dsvault mount`, through open() on the native tree, and (large files)
# with `dsvault cat`, page cache dropped and warm, in one run (bench/python_read.py).
#
# usage: bench/python.sh [--scale F] [--seed N] [--workdir DIR] [--repeat N] [--no-build]
set -euo pipefail
BENCH=python.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCALE=1
SEED=1
WORKDIR=/tmp/dsvault-bench-python
REPEAT=1
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) sed -n 2,6p "$0"; exit 0 ;;
    *) echo "python.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

mkdir -p "$WORKDIR"
W=$(cd "$WORKDIR" && pwd)
LOG=$W/logs
MNT=$W/mnt
mkdir -p "$LOG" "$MNT"
need_root "drop_caches, mount"

VENV=$REPO/.venv-py
if [[ ! -x $VENV/bin/maturin ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'maturin>=1.9.4,<2' fsspec
fi
if [[ $BUILD == 1 ]]; then
    build_release "$LOG/build.log" || die "build failed, see $LOG/build.log"
    log "maturin develop --release"
    (source "$VENV/bin/activate" && cd "$REPO" && maturin develop --release -m python/Cargo.toml) >>"$LOG/build.log" 2>&1 ||
        { echo "python.sh: maturin failed, see $LOG/build.log" >&2; exit 1; }
fi

DATA=$W/data
gen_data "$DATA" "$SCALE" "$SEED" 1
[[ $GENERATED == 0 ]] || rm -rf "$W/vault"
if [[ ! -d $W/vault ]]; then
    log "dsvault ingest"
    "$DSVAULT" --vault "$W/vault" --quiet ingest "$DATA" --name bench --version v1 >"$LOG/ingest.log" 2>&1
fi

"$DSVAULT" --vault "$W/vault" mount gold/bench@v1 "$MNT" >"$LOG/mount.out" 2>"$LOG/mount.err" &
PID=$!
cleanup() {
    grep -q " $MNT " /proc/mounts && { umount "$MNT" 2>/dev/null || umount -l "$MNT"; }
    wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT
wait_until 300 "$PID" test -e "$MNT/tables/metadata.csv" || die "mount failed, see $LOG/mount.err"

log "reading (repeat $REPEAT)"
{
    echo "Command: bench/python.sh --scale $SCALE --seed $SEED --repeat $REPEAT; commit $(git -C "$REPO" rev-parse --short HEAD); $(date -u +%F' '%H:%M) UTC; $(nproc) CPUs"
    echo
    "$VENV/bin/python" "$REPO/bench/python_read.py" --data "$DATA" --mount "$MNT" --vault "$W/vault" --dsvault "$DSVAULT" --repeat "$REPEAT"
} | tee "$LOG/result.md"
mkdir -p "$REPO/bench/results"
cp "$LOG/result.md" "$REPO/bench/results/python-$(date -u +%F-%H%M%S).md"
