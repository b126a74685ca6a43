#!/usr/bin/env bash
# Python read benchmark: the bench dataset read from Python through dsvault's Python API,
# through open() on `dsvault mount`, through open() on the native tree, and (large files)
# with `dsvault cat`, page cache dropped and warm, in one run (bench/python_read.py).
#
# usage: bench/python.sh [--scale F] [--seed N] [--workdir DIR] [--repeat N] [--no-build]
set -euo pipefail

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

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}/release
mkdir -p "$WORKDIR"
W=$(cd "$WORKDIR" && pwd)
LOG=$W/logs
MNT=$W/mnt
mkdir -p "$LOG" "$MNT"
log() { printf '[python.sh] %s\n' "$*" >&2; }
[[ $(id -u) == 0 ]] || { echo "python.sh: needs root (drop_caches, mount)" >&2; exit 1; }

VENV=$REPO/.venv-py
if [[ ! -x $VENV/bin/maturin ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'maturin>=1.9.4,<2' fsspec
fi
if [[ $BUILD == 1 ]]; then
    log "cargo build --release -p dsvault-cli -p dsvault-datagen; maturin develop --release"
    (cd "$REPO" && cargo build --release -p dsvault-cli -p dsvault-datagen) >"$LOG/build.log" 2>&1 ||
        { echo "python.sh: build failed, see $LOG/build.log" >&2; exit 1; }
    (source "$VENV/bin/activate" && cd "$REPO" && maturin develop --release -m python/Cargo.toml) >>"$LOG/build.log" 2>&1 ||
        { echo "python.sh: maturin failed, see $LOG/build.log" >&2; exit 1; }
fi
DSVAULT=$TARGET/dsvault

DATA=$W/data
stamp="$SCALE $SEED $(sha256sum "$TARGET/dsvault-datagen" | cut -c1-16)"
if [[ ! -d $DATA || ! -f $W/data.stamp || $(cat "$W/data.stamp") != "$stamp" ]]; then
    rm -rf "$DATA" "$W/vault"
    log "generating $DATA (scale $SCALE)"
    "$TARGET/dsvault-datagen" "$DATA" --scale "$SCALE" --seed "$SEED" --version 1 --force >&2
    echo "$stamp" >"$W/data.stamp"
fi
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
for _ in $(seq 300); do
    [[ -e $MNT/tables/metadata.csv ]] && break
    kill -0 "$PID" 2>/dev/null || { echo "python.sh: mount failed, see $LOG/mount.err" >&2; exit 1; }
    sleep 0.1
done

log "reading (repeat $REPEAT)"
{
    echo "Command: bench/python.sh --scale $SCALE --seed $SEED --repeat $REPEAT; commit $(git -C "$REPO" rev-parse --short HEAD); $(date -u +%F' '%H:%M) UTC; $(nproc) CPUs"
    echo
    "$VENV/bin/python" "$REPO/bench/python_read.py" --data "$DATA" --mount "$MNT" --vault "$W/vault" --dsvault "$DSVAULT" --repeat "$REPEAT"
} | tee "$LOG/result.md"
mkdir -p "$REPO/bench/results"
cp "$LOG/result.md" "$REPO/bench/results/python-$(date -u +%F-%H%M%S).md"
