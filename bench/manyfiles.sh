#!/usr/bin/env bash
# Many-files benchmark: a dataset of N small files (default 1,000,000) ingested and then walked
# and read through `dsvault mount`, for the mount's memory bound on huge trees (issue 3: mount
# RSS under 200 MB on a 1M-file dataset) and ingest's per-file cost.
#
# usage: bench/manyfiles.sh [--files N] [--workdir DIR] [--keep] [--no-build]
set -euo pipefail
BENCH=manyfiles.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/manyfiles.sh [options]
  --files N      number of files (1000 per folder, 0-2 KiB each)                [1000000]
  --workdir DIR  data, vault, mount point and logs             [/tmp/dsvault-bench-many]
  --keep         keep the work directory (the generated tree is reused when N matches)
  --no-build     use the binary already in target/release
EOF
}

FILES=1000000
WORKDIR=/tmp/dsvault-bench-many
KEEP=0
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
    --files) FILES=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "manyfiles.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

mkdir -p "$WORKDIR"
W=$(cd "$WORKDIR" && pwd)
DATA=$W/data-$FILES
MNT=$W/mnt
LOG=$W/logs
mkdir -p "$MNT" "$LOG"

need_root "mounts"
if [[ $BUILD == 1 ]]; then
    build_release "$LOG/build.log" || die "build failed, see $LOG/build.log"
fi

PID=
cleanup() {
    if mountpoint -q "$MNT"; then umount "$MNT" 2>/dev/null || umount -l "$MNT" || true; fi
    [[ -n $PID ]] && wait "$PID" 2>/dev/null || true
    if [[ $KEEP == 0 ]]; then rm -rf "$W"; fi
}
trap cleanup EXIT

if [[ ! -f $DATA.stamp ]]; then
    log "generating $FILES files under $DATA"
    rm -rf "$DATA"
    python3 - "$DATA" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, f"f{i % 1000:03d}.txt"), "wb") as f:
        f.write(rng.randbytes(rng.randrange(0, 2048)))
EOF
    touch "$DATA.stamp"
fi

# timed NAME CMD...: run CMD, print "wall_s peak_rss_mib" of it.
timed() {
    local name=$1; shift
    /usr/bin/time -f '%e %M' -o "$LOG/$name.time" "$@" >"$LOG/$name.out" 2>"$LOG/$name.err"
    awk '{ printf "%s %.1f\n", $1, $2 / 1024 }' "$LOG/$name.time"
}

rm -rf "$W/vault"
read -r ingest_s ingest_rss < <(timed ingest "$DSVAULT" --vault "$W/vault" ingest "$DATA" --name many --version v1 --quiet)
log "ingest: ${ingest_s}s, peak RSS ${ingest_rss} MiB"

"$DSVAULT" --vault "$W/vault" mount "$MNT" >"$LOG/mount.out" 2>"$LOG/mount.err" &
PID=$!
wait_until 100 "$PID" grep -q mounted "$LOG/mount.out" || { log "mount did not come up: $(cat "$LOG/mount.err")"; exit 1; }
TREE=$MNT/gold/many/v1

drop_caches
read -r find_s _ < <(timed find bash -c "find '$TREE' | wc -l")
entries=$(cat "$LOG/find.out")
read -r find2_s _ < <(timed find2 bash -c "find '$TREE' | wc -l")
read -r cat_s _ < <(timed cat bash -c "find '$TREE' -type f -print0 | xargs -0 cat | wc -c")
rss=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status")
native_find_s=$(drop_caches; /usr/bin/time -f %e bash -c "find '$DATA' | wc -l" 2>&1 >/dev/null)

umount "$MNT"
wait "$PID"
PID=

cat <<EOF

### Many files, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO" rev-parse --short HEAD)

Command: \`bench/manyfiles.sh --files $FILES\`; $FILES files of 0-2 KiB in folders of 1000.

| step | wall s | peak RSS MiB |
|---|---:|---:|
| dsvault ingest | $ingest_s | $ingest_rss |
| find through the mount, disk-cold ($entries entries) | $find_s | |
| find through the mount, again | $find2_s | |
| cat every file through the mount | $cat_s | |
| native find, disk-cold | $native_find_s | |
| **mount process peak RSS after all passes** | | **$rss** (target < 200) |
EOF
