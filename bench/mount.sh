#!/usr/bin/env bash
# Mount benchmark: reading the bench dataset through `dsvault mount` against the native tree,
# squashfuse_ll (a squashfs image of the tree), borg mount and restic mount, in one run.
# See bench/README.md ("Mount benchmark") for what each number means.
#
# usage: bench/mount.sh [--scale F] [--seed N] [--workdir DIR] [--keep] [--no-build]
#                       [--tools LIST] [--install] [--repeat N]
set -euo pipefail
BENCH=mount.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/mount.sh [options]
  --scale F      dataset scale (1 = about 2 GB)                                     [1]
  --seed N       generator seed                                                     [1]
  --workdir DIR  data, vault, images, repositories and logs       [/tmp/dsvault-bench-mount]
  --keep         keep the work directory (data is reused when scale and seed match)
  --no-build     use the binaries already in target/release
  --tools LIST   subset of native,dsvault,squashfuse,borg,restic                  [all]
  --install      apt-get install missing squashfs-tools squashfuse borgbackup restic
  --repeat N     run every tool's passes N times (interleaved) and report medians     [1]
EOF
}

SCALE=1
SEED=1
WORKDIR=/tmp/dsvault-bench-mount
KEEP=0
BUILD=1
INSTALL=0
REPEAT=1
TOOLS=native,dsvault,squashfuse,borg,restic
while [[ $# -gt 0 ]]; do
    case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --tools) TOOLS=$2; shift 2 ;;
    --install) INSTALL=1; shift ;;
    --repeat) REPEAT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "mount.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

mkdir -p "$WORKDIR"
W=$(cd "$WORKDIR" && pwd)
LOG=$W/logs
MNT=$W/mnt
mkdir -p "$LOG" "$MNT"

want() { [[ ",$TOOLS," == *",$1,"* ]]; }

need_root "drop_caches, mounts"
if [[ $INSTALL == 1 ]]; then
    pkgs=()
    have mksquashfs || pkgs+=(squashfs-tools)
    have squashfuse_ll || pkgs+=(squashfuse)
    have borg || pkgs+=(borgbackup)
    have restic || pkgs+=(restic)
    have fusermount3 || pkgs+=(fuse3)
    if [[ ${#pkgs[@]} -gt 0 ]]; then
        log "installing ${pkgs[*]}"
        apt-get install -y "${pkgs[@]}" >"$LOG/apt.log" 2>&1 ||
            { apt-get update >>"$LOG/apt.log" 2>&1 && apt-get install -y "${pkgs[@]}" >>"$LOG/apt.log" 2>&1; } ||
            log "apt-get failed (see $LOG/apt.log); continuing with what is installed"
    fi
fi

if [[ $BUILD == 1 ]]; then
    build_release "$LOG/build.log" || die "build failed, see $LOG/build.log"
fi

# --- data ------------------------------------------------------------------------------------

DATA=$W/data
gen_data "$DATA" "$SCALE" "$SEED" 1
# The stores below are built from the data: new data, new stores.
[[ $GENERATED == 0 ]] || rm -rf "$W/vault" "$W/image.sqfs" "$W/borg" "$W/restic"
BIG=(tables/metadata.csv tables/annotations.jsonl blobs/features.bin blobs/shard-0000.bin)
BIG_BYTES=$(cd "$DATA" && du -cb "${BIG[@]}" | tail -n 1 | cut -f1)
SMALL_FILES=$(find "$DATA/images" -type f | wc -l)
SMALL_BYTES=$(du -sb "$DATA/images" | cut -f1)

# --- stores ----------------------------------------------------------------------------------

export BORG_BASE_DIR=$W/borg-home BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$W/restic-cache
declare -A STORE # the files a tool's mount reads from (to warm for FUSE-cold passes)
STORE[native]=$DATA
if want dsvault && [[ ! -d $W/vault ]]; then
    log "dsvault ingest"
    "$DSVAULT" --vault "$W/vault" --quiet ingest "$DATA" --name bench --version v1 >"$LOG/ingest.log" 2>&1
fi
STORE[dsvault]=$W/vault
if want squashfuse && have mksquashfs && [[ ! -f $W/image.sqfs ]]; then
    log "mksquashfs (default settings: gzip, 128 KiB blocks)"
    mksquashfs "$DATA" "$W/image.sqfs" -noappend -no-progress >"$LOG/mksquashfs.log" 2>&1
fi
STORE[squashfuse]=$W/image.sqfs
if want borg && have borg && [[ ! -d $W/borg ]]; then
    log "borg create"
    { borg init --encryption none "$W/borg" && (cd "$DATA" && borg create --compression none "$W/borg::v1" .); } >"$LOG/borg.log" 2>&1 ||
        log "borg failed (see $LOG/borg.log)"
fi
STORE[borg]=$W/borg
if want restic && have restic && [[ ! -d $W/restic ]]; then
    log "restic backup"
    { restic --repo "$W/restic" init && (cd "$DATA" && restic --repo "$W/restic" backup --host bench .); } >"$LOG/restic.log" 2>&1 ||
        log "restic failed (see $LOG/restic.log)"
fi
STORE[restic]=$W/restic

# --- mounting --------------------------------------------------------------------------------

PID=
ROOT=   # where the dataset's files are, once mounted
start_mount() { # tool
    local tool=$1 mp=$MNT/$1
    mkdir -p "$mp"
    PID=
    case $tool in
    native) ROOT=$DATA; return 0 ;;
    dsvault)
        "$DSVAULT" --vault "$W/vault" mount gold/bench@v1 "$mp" >"$LOG/dsvault-mount.out" 2>"$LOG/dsvault-mount.err" &
        PID=$!; ROOT=$mp ;;
    squashfuse)
        squashfuse_ll -f "$W/image.sqfs" "$mp" >"$LOG/squashfuse.out" 2>&1 &
        PID=$!; ROOT=$mp ;;
    borg)
        borg mount --foreground "$W/borg::v1" "$mp" >"$LOG/borg-mount.out" 2>&1 &
        PID=$!; ROOT=$mp ;;
    restic)
        restic --repo "$W/restic" mount "$mp" >"$LOG/restic-mount.out" 2>&1 &
        PID=$!; ROOT=$mp/snapshots/latest ;;
    esac
    wait_until 300 "$PID" test -e "$ROOT/tables/metadata.csv"
}
stop_mount() { # tool
    [[ -n $PID ]] || return 0
    umount "$MNT/$1" 2>/dev/null || umount -l "$MNT/$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
}
cleanup() {
    for t in native dsvault squashfuse borg restic; do
        grep -q " $MNT/$t " /proc/mounts 2>/dev/null && umount -l "$MNT/$t" 2>/dev/null
    done
    jobs -p | xargs -r kill 2>/dev/null || true
}
trap cleanup EXIT

# Server CPU seconds and peak RSS (MiB) so far.
server_cpu() { [[ -n $PID ]] && awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$PID/stat" || echo ""; }
server_rss() { [[ -n $PID ]] && awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status" || echo ""; }

elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v t="$2" -v d="$3" 'BEGIN { if (t > 0) printf "%.0f", n / d / t; else print "inf" }'; }

read_big() { (cd "$ROOT" && cat "${BIG[@]}" >/dev/null); }
read_small() { (cd "$ROOT/images" && find . -type f -print0 | xargs -0 -P 4 -n 200 cat >/dev/null); }
walk() { (cd "$ROOT" && find . >/dev/null); }

declare -A R
# run_passes TOOL MODE: first pass (large, small, find), then a second pass (large, small).
run_passes() {
    local tool=$1 mode=$2 t
    t=$(now); read_big; R[$tool,$mode,big]=$(rate "$BIG_BYTES" "$(elapsed "$t")" 1048576)
    t=$(now); read_small; R[$tool,$mode,small]=$(rate "$SMALL_FILES" "$(elapsed "$t")" 1)
    t=$(now); walk; R[$tool,$mode,find]=$(elapsed "$t")
    t=$(now); read_big; R[$tool,$mode,big2]=$(rate "$BIG_BYTES" "$(elapsed "$t")" 1048576)
    t=$(now); read_small; R[$tool,$mode,small2]=$(rate "$SMALL_FILES" "$(elapsed "$t")" 1)
    R[$tool,$mode,rss]=$(server_rss)
    R[$tool,$mode,cpu]=$(server_cpu)
}

available() {
    case $1 in
    native | dsvault) return 0 ;;
    squashfuse) have squashfuse_ll && [[ -f $W/image.sqfs ]] ;;
    borg) have borg && [[ -d $W/borg ]] ;;
    restic) have restic && [[ -d $W/restic ]] ;;
    esac
}

TOOLS_RUN=()
for tool in native dsvault squashfuse borg restic; do
    want "$tool" || continue
    if ! available "$tool"; then
        log "$tool: not installed or not prepared; skipped"
        continue
    fi
    TOOLS_RUN+=("$tool")
done

# Every repetition runs each tool's passes once, so that a noisy moment of a shared machine
# hits all tools alike; the report shows each figure's median over the repetitions. Each
# repetition starts one tool further along the list: the first pass after an idle spell is
# slow on this kind of VM (the host takes back freed guest memory, and the next pass faults
# it in again), and rotating spreads that cost over the tools instead of always charging it
# to the first.
rotated() { # REP: TOOLS_RUN, starting at index (REP - 1) mod count
    local n=${#TOOLS_RUN[@]} i
    for ((i = 0; i < n; i++)); do echo "${TOOLS_RUN[((i + $1 - 1) % n)]}"; done
}
declare -A ALL
for rep in $(seq "$REPEAT"); do
    for tool in $(rotated "$rep"); do
        for mode in disk-cold fuse-cold; do
            [[ $tool == native && $mode == fuse-cold ]] && continue
            drop_caches
            if [[ $mode == fuse-cold ]]; then
                # The store is in the page cache; the mount is fresh (nothing cached by FUSE).
                find "${STORE[$tool]}" -type f -print0 | xargs -0 cat >/dev/null
            fi
            log "$tool, $mode (run $rep of $REPEAT)"
            if ! start_mount "$tool"; then
                log "$tool did not mount (see $LOG)"; stop_mount "$tool"; ALL[$tool,$mode,big]+=" failed"; continue
            fi
            run_passes "$tool" "$mode"
            stop_mount "$tool"
            for m in big small find big2 small2 rss cpu; do
                ALL[$tool,$mode,$m]+=" ${R[$tool,$mode,$m]:-}"
            done
        done
    done
done
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (v[1] !~ /^[0-9.]+$/) print v[1]; else if (NR % 2) print v[(NR + 1) / 2]; else { m = (v[NR / 2] + v[NR / 2 + 1]) / 2; if (m >= 100) printf "%.0f\n", m; else printf "%.4g\n", m } }'; }
for key in "${!ALL[@]}"; do
    R[$key]=$(echo "${ALL[$key]}" | median)
done

# --- report ----------------------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" -v p="${3:-2}" 'BEGIN { if (a != "" && b != "" && b + 0 > 0 && a ~ /^[0-9.]+$/) printf "%.*f", p, a / b; else print "n/a" }'; }
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { if (v == "n/a") { print "n/a"; exit } ok = (op == ">=" ? v >= t : v <= t); print (ok ? "met" : "NOT met") }'; }

report() {
    echo "# Mount benchmark, $(date -u +%Y-%m-%d) UTC"
    echo
    echo "Machine: $(nproc) CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ { print $2 }') GiB RAM, $(df -T "$W" | awk 'NR == 2 { print $2 }') under $W; kernel $(uname -r)."
    echo "Dataset: dsvault-datagen --scale $SCALE --seed $SEED: large files $(awk -v b="$BIG_BYTES" 'BEGIN { printf "%.0f", b / 1048576 }') MiB (4 files), $SMALL_FILES small files ($(awk -v b="$SMALL_BYTES" 'BEGIN { printf "%.0f", b / 1048576 }') MiB)."
    echo "Commit: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO" && git diff --quiet 2>/dev/null || echo '+dirty'). Command: bench/mount.sh --scale $SCALE --seed $SEED --repeat $REPEAT --tools $TOOLS (medians of $REPEAT runs; tool order rotated each run)"
    echo
    echo "| tool | first pass | large MiB/s | small files/s | find s | 2nd large MiB/s | 2nd small files/s | server peak RSS MiB | server CPU s |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    local tool mode
    for tool in "${TOOLS_RUN[@]}"; do
        for mode in disk-cold fuse-cold; do
            [[ -n ${R[$tool,$mode,big]:-} ]] || continue
            echo "| $tool | $mode | ${R[$tool,$mode,big]} | ${R[$tool,$mode,small]:-} | ${R[$tool,$mode,find]:-} | ${R[$tool,$mode,big2]:-} | ${R[$tool,$mode,small2]:-} | ${R[$tool,$mode,rss]:-} | ${R[$tool,$mode,cpu]:-} |"
        done
    done
    echo
    local r1 r2 r3 r4 r5 r6 r7
    r1=$(ratio "${R[dsvault,fuse-cold,big]:-}" "${R[squashfuse,fuse-cold,big]:-}")
    r2=$(ratio "${R[dsvault,fuse-cold,small]:-}" "${R[squashfuse,fuse-cold,small]:-}")
    # Time ratios: native rate / dsvault rate = dsvault time / native time.
    r3=$(ratio "${R[native,disk-cold,big]:-}" "${R[dsvault,disk-cold,big]:-}")
    r4=$(ratio "${R[native,disk-cold,small]:-}" "${R[dsvault,disk-cold,small]:-}")
    r5=$(ratio "${R[dsvault,fuse-cold,big2]:-}" "${R[native,disk-cold,big2]:-}")
    r6=$(ratio "${R[dsvault,fuse-cold,find]:-}" "${R[native,disk-cold,find]:-}")
    r7=$(awk -v a="${R[dsvault,disk-cold,rss]:-0}" -v b="${R[dsvault,fuse-cold,rss]:-0}" 'BEGIN { m = (a > b ? a : b); printf "%.1f", m * 1.048576 }')
    echo "| target | value | goal | verdict |"
    echo "|---|---:|---|---|"
    echo "| FUSE-cold large files, dsvault / squashfuse_ll | $r1 | ≥ 2 | $(verdict "$r1" ">=" 2) |"
    echo "| FUSE-cold small files, dsvault / squashfuse_ll | $r2 | ≥ 1.5 | $(verdict "$r2" ">=" 1.5) |"
    echo "| disk-cold large files, dsvault time / native time | $r3 | ≤ 1.2 | $(verdict "$r3" "<=" 1.2) |"
    echo "| disk-cold small files, dsvault time / native time | $r4 | ≤ 1.5 | $(verdict "$r4" "<=" 1.5) |"
    echo "| second pass large files, dsvault / native page cache | $r5 | ≥ 0.9 | $(verdict "$r5" ">=" 0.9) |"
    echo "| find walk (FUSE-cold), dsvault time / native time | $r6 | ≤ 2 | $(verdict "$r6" "<=" 2) |"
    echo "| dsvault mount peak RSS, MB | $r7 | < 64 | $(verdict "$r7" "<=" 64) |"
}

mkdir -p "$REPO/bench/results"
OUT=$REPO/bench/results/mount-$(date -u +%Y-%m-%d-%H%M%S).md
report | tee "$OUT"
log "written to ${OUT#"$REPO"/}; logs in $LOG"
if [[ $KEEP == 0 ]]; then
    rm -rf "$DATA" "$DATA.stamp" "$DATA.datagen.json" "$W/vault" "$W/image.sqfs" "$W/borg" "$W/borg-home" "$W/restic" "$W/restic-cache"
fi
