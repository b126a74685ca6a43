#!/usr/bin/env bash
# Many-files benchmark: N small files in folders of 1000, ingested, then walked and read
# through a single-dataset `dsvault mount` and, side by side in the same run, through
# squashfuse_ll over a zstd squashfs image of the same tree. Every pass is FUSE-cold: caches
# dropped, the store (vault or image) read back into the page cache, a fresh mount. Passes:
#   find -type f                   a d_type walk (what os.scandir / ImageFolder do)
#   find -type f -printf '%s\n'    a stat walk
#   xargs -P2 cat                  read every file
# Reports wall seconds per pass and tool, the ratios, ingest time and the mount's peak RSS.
#
# usage: bench/manyfiles.sh [--files N] [--workdir DIR] [--tools LIST] [--keep] [--no-build]
set -euo pipefail
BENCH=manyfiles.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/manyfiles.sh [options]
  --files N      number of files, 200-1500 bytes each, 1000 per folder            [300000]
  --workdir DIR  data, vault, image, mount points and logs     [/tmp/dsvault-bench-many]
  --tools LIST   dsvault,squashfuse or one of them                    [dsvault,squashfuse]
  --keep         keep the work directory (tree, vault and image are reused when N matches)
  --no-build     use the binary already in target/release
  --install      apt-get install squashfuse and squashfs-tools when missing
EOF
}

FILES=300000
WORKDIR=/tmp/dsvault-bench-many
TOOLS=dsvault,squashfuse
KEEP=0
BUILD=1
INSTALL=0
while [[ $# -gt 0 ]]; do
    case "$1" in
    --files) FILES=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --install) INSTALL=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "manyfiles.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

mkdir -p "$WORKDIR"
W=$(cd "$WORKDIR" && pwd)
DATA=$W/data-$FILES
VAULT=$W/vault-$FILES
IMAGE=$W/image-$FILES.sqfs
MNT=$W/mnt
LOG=$W/logs
mkdir -p "$MNT" "$LOG"
want() { [[ ,$TOOLS, == *,$1,* ]]; }

need_root "drop_caches, mounts"
if want squashfuse && ! { have squashfuse_ll && have mksquashfs; }; then
    if [[ $INSTALL == 1 ]]; then
        apt-get install -y -qq squashfuse squashfs-tools >/dev/null
    else
        die "squashfuse_ll or mksquashfs missing (--install, or --tools dsvault)"
    fi
fi
if [[ $BUILD == 1 ]]; then
    build_release "$LOG/build.log" || die "build failed, see $LOG/build.log"
fi

PID=
cleanup() {
    for t in dsvault squashfuse; do
        if mountpoint -q "$MNT/$t"; then umount "$MNT/$t" 2>/dev/null || umount -l "$MNT/$t" || true; fi
    done
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
        f.write(rng.randbytes(rng.randrange(200, 1501)))
EOF
    touch "$DATA.stamp"
fi

# timed NAME CMD...: run CMD, print "wall_s peak_rss_mib" of it.
timed() {
    local name=$1; shift
    /usr/bin/time -f '%e %M' -o "$LOG/$name.time" "$@" >"$LOG/$name.out" 2>"$LOG/$name.err"
    awk '{ printf "%s %.1f\n", $1, $2 / 1024 }' "$LOG/$name.time"
}

ingest_s=n/a ingest_rss=n/a
if want dsvault && [[ ! -f $VAULT.stamp ]]; then
    rm -rf "$VAULT"
    read -r ingest_s ingest_rss < <(timed ingest "$DSVAULT" --vault "$VAULT" ingest "$DATA" --name many --version v1 --quiet)
    log "ingest: ${ingest_s}s, peak RSS ${ingest_rss} MiB"
    touch "$VAULT.stamp"
fi
if want squashfuse && [[ ! -f $IMAGE ]]; then
    log "mksquashfs -comp zstd"
    mksquashfs "$DATA" "$IMAGE" -comp zstd -noappend -no-progress >"$LOG/mksquashfs.log" 2>&1
fi

# start TOOL: a fresh mount of the tree at $MNT/TOOL (PID set to its server).
start() {
    local mp=$MNT/$1
    mkdir -p "$mp"
    case $1 in
    dsvault) "$DSVAULT" --vault "$VAULT" mount gold/many@v1 "$mp" >"$LOG/dsvault-mount.out" 2>"$LOG/dsvault-mount.err" & ;;
    squashfuse) squashfuse_ll -f "$IMAGE" "$mp" >"$LOG/squashfuse.out" 2>&1 & ;;
    esac
    PID=$!
    for _ in $(seq 300); do
        [[ -e $mp/d0000/f000.txt ]] && return 0
        sleep 0.1
    done
    log "$1 did not mount (see $LOG)"
    exit 1
}
stop() {
    umount "$MNT/$1" 2>/dev/null || umount -l "$MNT/$1"
    wait "$PID" 2>/dev/null || true
    PID=
}
# FUSE-cold: nothing cached by the kernel for the mount, the store in the page cache.
fuse_cold() {
    drop_caches
    case $1 in
    dsvault) find "$VAULT" -type f -print0 | xargs -0 cat >/dev/null ;;
    squashfuse) cat "$IMAGE" >/dev/null ;;
    esac
}

declare -A R
PASSES=(dtype stat read)
pass_cmd() { # PASS TREE
    case $1 in
    dtype) echo "find '$2' -type f | wc -l" ;;
    stat) echo "find '$2' -type f -printf '%s\n' | awk '{ s += \$1 } END { print NR, s }'" ;;
    read) echo "find '$2' -type f -print0 | xargs -0 -P2 -n 500 cat | wc -c" ;;
    esac
}
rss=0
for tool in dsvault squashfuse; do
    want "$tool" || continue
    for pass in "${PASSES[@]}"; do
        fuse_cold "$tool"
        start "$tool"
        read -r R[$tool,$pass] _ < <(timed "$tool-$pass" bash -c "$(pass_cmd "$pass" "$MNT/$tool")")
        cpu=$(awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$PID/stat")
        log "$tool $pass: ${R[$tool,$pass]} s, server CPU $cpu s ($(cat "$LOG/$tool-$pass.out"))"
        if [[ $tool == dsvault ]]; then
            rss=$(awk -v r="$rss" '/VmHWM/ { m = $2 / 1024; printf "%.1f", (m > r ? m : r) }' "/proc/$PID/status")
        fi
        stop "$tool"
    done
done

ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a != "" && b + 0 > 0) printf "%.2fx", a / b; else print "n/a" }'; }
cat <<EOF

### Many files, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet 2>/dev/null || echo '+dirty')

Command: \`bench/manyfiles.sh --files $FILES\` (as root); $FILES files of 200-1500 bytes in
folders of 1000; every pass FUSE-cold (caches dropped, store in the page cache, fresh mount).
dsvault: single-dataset mount; squashfuse_ll: zstd squashfs image of the same tree.

| pass | dsvault s | squashfuse_ll s | dsvault / squashfuse_ll |
|---|---:|---:|---:|
| \`find -type f\` (d_type walk) | ${R[dsvault,dtype]:-n/a} | ${R[squashfuse,dtype]:-n/a} | $(ratio "${R[dsvault,dtype]:-}" "${R[squashfuse,dtype]:-}") |
| \`find -type f -printf '%s\n'\` (stat walk) | ${R[dsvault,stat]:-n/a} | ${R[squashfuse,stat]:-n/a} | $(ratio "${R[dsvault,stat]:-}" "${R[squashfuse,stat]:-}") |
| read every file, \`xargs -P2 cat\` | ${R[dsvault,read]:-n/a} | ${R[squashfuse,read]:-n/a} | $(ratio "${R[dsvault,read]:-}" "${R[squashfuse,read]:-}") |

dsvault ingest: ${ingest_s} s, peak RSS ${ingest_rss} MiB$([[ $ingest_s == n/a ]] && echo ' (the vault was reused)').
Mount peak RSS over the passes: **${rss} MiB** (target < 64).
EOF
