#!/usr/bin/env bash
# Workspace benchmark: the writable overlay of `dsvault mount` (work/<workspace>/) on the
# bench dataset as base. Three measurements, each against its reference:
#   1. writing new files into work/<ws>/ vs the same writes to a local folder on the same disk
#      (target >= 70% of native throughput);
#   2. reading untouched base files (cold caches) through work/<ws>/ vs through gold/
#      (target <= 1.1x the time);
#   3. derive of a workspace that changed 1% of the files vs a full ingest of the base
#      (target < 10% of the time).
#
# usage: bench/workspace.sh [--scale F] [--write-mib N] [--seed N] [--workdir DIR] [--keep] [--no-build]
set -euo pipefail
BENCH=workspace.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'USAGE'
usage: bench/workspace.sh [options]
  --scale F      bench dataset scale (1 = about 2 GB)                                [0.25]
  --write-mib N  MiB of new files written in test 1 (the issue asks for 1024)        [1024]
  --seed N       generator seed                                                       [1]
  --workdir DIR  data, vault, mount point and logs       [/tmp/dsvault-bench-workspace]
  --keep         keep the work directory
  --no-build     use the binaries already in target/release
USAGE
}

SCALE=0.25
WRITE_MIB=1024
SEED=1
WORKDIR=/tmp/dsvault-bench-workspace
KEEP=0
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --write-mib) WRITE_MIB=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "workspace.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

need_root "drop_caches, mounts"
rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"
W=$(cd "$WORKDIR" && pwd)
LOG=$W/logs MNT=$W/mnt
mkdir -p "$LOG" "$MNT"
secs() { echo "$2 - $1" | bc -l; }

if [[ $BUILD == 1 ]]; then
    build_release "$LOG/build.log" || die "build failed, see $LOG/build.log"
fi
V=(--vault "$W/vault" --quiet)

cleanup() {
    if grep -q " $MNT " /proc/mounts; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
    [[ -n ${MOUNT_PID:-} ]] && wait "$MOUNT_PID" 2>/dev/null || true
    [[ $KEEP == 1 ]] || rm -rf "$W"
}
trap cleanup EXIT

gen_data "$W/data" "$SCALE" "$SEED" 1
DATA_BYTES=$(du -sb "$W/data" | cut -f1)
FILES=$(find "$W/data" -type f | wc -l)

log "full ingest of the base (the reference of test 3)"
drop_caches
t0=$(now)
"$DSVAULT" "${V[@]}" ingest "$W/data" --name bench --version v1 >"$LOG/ingest.log"
INGEST_S=$(secs "$t0" "$(now)")
"$DSVAULT" "${V[@]}" workspace new w --base gold/bench@v1 >/dev/null

"$DSVAULT" "${V[@]}" mount "$MNT" >"$LOG/mount.log" 2>&1 &
MOUNT_PID=$!
wait_until 100 "$MOUNT_PID" grep -q " $MNT " /proc/mounts || die "the mount did not come up (see $LOG/mount.log)"
WORK=$MNT/work/w GOLD=$MNT/gold/bench/v1

# 1. Writes: 64 files of WRITE_MIB/64 MiB, 1 MiB writes, then sync.
write_files() { # DIR
    mkdir -p "$1"
    local per=$((WRITE_MIB / 64))
    for i in $(seq -w 0 63); do dd if=/dev/zero of="$1/out-$i.bin" bs=1M count="$per" status=none; done
    sync
}
timed_write() { # DIR -> seconds
    rm -rf "$1"
    sync
    local t0
    t0=$(now)
    write_files "$1"
    secs "$t0" "$(now)"
    rm -rf "$1"
}
min_of() { tr ' ' '\n' | awk 'NF' | sort -g | head -1; }
log "test 1: writing $WRITE_MIB MiB (native and work/, interleaved, best of 3)"
NATIVE_W= WORK_W=
for _ in 1 2 3; do
    NATIVE_W="$NATIVE_W $(timed_write "$W/native-out")"
    WORK_W="$WORK_W $(timed_write "$WORK/bench-out")"
done
NATIVE_W=$(echo "$NATIVE_W" | min_of)
WORK_W=$(echo "$WORK_W" | min_of)

# 2. Cold reads of every base file through gold/ and through work/ (untouched), interleaved,
#    best of three each.
read_all() { (cd "$1" && find . -type f -print0 | xargs -0 cat >/dev/null); }
timed_read() { # DIR -> seconds
    drop_caches
    local t0
    t0=$(now)
    read_all "$1"
    secs "$t0" "$(now)"
}
log "test 2: cold reads of the base (gold/ and work/, interleaved)"
GOLD_R= WORK_R=
for _ in 1 2 3; do
    g=$(timed_read "$GOLD")
    w=$(timed_read "$WORK")
    if [[ -z $GOLD_R ]] || (($(echo "$g < $GOLD_R" | bc -l))); then GOLD_R=$g; fi
    if [[ -z $WORK_R ]] || (($(echo "$w < $WORK_R" | bc -l))); then WORK_R=$w; fi
done

# 3. Change 1% of the files through the mount (append a line), then derive.
log "test 3: change 1% of the files, derive"
(cd "$WORK" && find . -type f | sort | awk 'NR % 100 == 0') >"$W/changed.txt"
CHANGED=$(wc -l <"$W/changed.txt")
while read -r f; do echo "cleaned" >>"$WORK/$f"; done <"$W/changed.txt"
drop_caches
t0=$(now)
"$DSVAULT" "${V[@]}" --json derive w --name bench-clean --version v1 >"$W/derive.json"
DERIVE_S=$(secs "$t0" "$(now)")
STORED=$(json_get "$W/derive.json" stored_bytes)

umount "$MNT"
wait "$MOUNT_PID" || true
MOUNT_PID=

ratio() { echo "scale=3; $1 / $2" | bc -l; }
mibs() { echo "scale=1; $WRITE_MIB / $1" | bc -l; }
RESULT=$(
    cat <<TABLE
| test | reference | work/ | ratio | target |
|---|---|---|---|---|
| write $WRITE_MIB MiB (64 files, 1 MiB writes, sync) | local disk $(printf %.2f "$NATIVE_W") s ($(mibs "$NATIVE_W") MiB/s) | $(printf %.2f "$WORK_W") s ($(mibs "$WORK_W") MiB/s) | $(ratio "$NATIVE_W" "$WORK_W") of native | >= 0.70 |
| cold read of all $FILES base files ($((DATA_BYTES >> 20)) MiB) | gold/ $(printf %.2f "$GOLD_R") s | $(printf %.2f "$WORK_R") s | $(ratio "$WORK_R" "$GOLD_R")x | <= 1.1x |
| derive after changing $CHANGED files (1%) | full ingest $(printf %.2f "$INGEST_S") s | derive $(printf %.2f "$DERIVE_S") s, $STORED B stored | $(ratio "$DERIVE_S" "$INGEST_S") of ingest | < 0.10 |
TABLE
)
echo "$RESULT"
mkdir -p "$REPO/bench/results"
echo "$RESULT" >"$REPO/bench/results/workspace-$(date -u +%Y-%m-%d-%H%M%S).md"
