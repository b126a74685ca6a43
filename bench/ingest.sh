#!/usr/bin/env bash
# Ingest benchmark: dsvault against cat, tar, b3sum, borg and restic, side by side in one run,
# on the same generated dataset and the same (warm or cold) page-cache state.
# See bench/README.md for what each number means.
#
# usage: bench/ingest.sh [--scale F] [--seed N] [--workdir DIR] [--cold] [--keep] [--install]
#                        [--double] [--tools LIST] [--no-build]
set -euo pipefail
BENCH=ingest.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/ingest.sh [options]
  --scale F      dataset scale (1 = about 2 GB; 0.05 for a quick run)          [1]
  --seed N       generator seed                                                 [1]
  --workdir DIR  where data, vault and peer repositories go        [/tmp/dsvault-bench]
  --cold         drop the page cache (sync; echo 3 > /proc/sys/vm/drop_caches) before
                 each measured step (needs root); default: warm (source pre-read)
  --repeat N     run the dsvault, borg and restic rounds N times, interleaved, and
                 report the median of each figure (this machine is shared and noisy) [3]
  --keep         keep the work directory (generated data is reused by the next run
                 when scale, seed and generator are unchanged)
  --install      apt-get install the missing peers (borgbackup restic b3sum time)
  --double       also ingest a 2x-scale v1 into a fresh vault: the flat-RSS check
  --tools LIST   comma-separated subset of cat,tar,b3sum,dsvault,borg,restic   [all]
  --no-build     use the binaries already in target/release
EOF
}

SCALE=1
SEED=1
WORKDIR=/tmp/dsvault-bench
COLD=0
KEEP=0
REPEAT=3
INSTALL=0
DOUBLE=0
BUILD=1
TOOLS=cat,tar,b3sum,dsvault,borg,restic
while [[ $# -gt 0 ]]; do
    case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --cold) COLD=1; shift ;;
    --keep) KEEP=1; shift ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --install) INSTALL=1; shift ;;
    --double) DOUBLE=1; shift ;;
    --tools) TOOLS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "ingest.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

mkdir -p "$WORKDIR"
W=$(cd "$WORKDIR" && pwd)
LOG=$W/logs
mkdir -p "$LOG"

want() { [[ ",$TOOLS," == *",$1,"* ]]; }

# --- prerequisites ---------------------------------------------------------------------------

if [[ $INSTALL == 1 ]]; then
    pkgs=()
    have borg || pkgs+=(borgbackup)
    have restic || pkgs+=(restic)
    have b3sum || pkgs+=(b3sum)
    [[ -x /usr/bin/time ]] || pkgs+=(time)
    if [[ ${#pkgs[@]} -gt 0 ]]; then
        log "installing ${pkgs[*]}"
        SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
        $SUDO apt-get install -y "${pkgs[@]}" >"$LOG/apt.log" 2>&1 ||
            { $SUDO apt-get update >>"$LOG/apt.log" 2>&1 && $SUDO apt-get install -y "${pkgs[@]}" >>"$LOG/apt.log" 2>&1; } ||
            log "apt-get failed (see $LOG/apt.log); continuing with what is installed"
    fi
fi
if [[ ! -x /usr/bin/time ]]; then
    echo "ingest.sh: /usr/bin/time (GNU time) is required: apt-get install time, or rerun with --install" >&2
    exit 1
fi
if ! have jq && ! have python3; then
    echo "ingest.sh: jq or python3 is required to read JSON output" >&2
    exit 1
fi
if [[ $COLD == 1 && ! -w /proc/sys/vm/drop_caches ]]; then
    echo "ingest.sh: --cold needs root (cannot write /proc/sys/vm/drop_caches)" >&2
    exit 1
fi

# --- build -----------------------------------------------------------------------------------

if [[ $BUILD == 1 ]]; then
    if ! build_release "$LOG/build.log"; then
        log "dsvault did not build (see $LOG/build.log); building the generator alone"
        (cd "$REPO" && cargo build --release -p dsvault-datagen) >>"$LOG/build.log" 2>&1 ||
            { echo "ingest.sh: dsvault-datagen does not build, see $LOG/build.log" >&2; exit 1; }
        DSVAULT=
    fi
fi
[[ -n $DSVAULT && -x $DSVAULT ]] || DSVAULT=
[[ -x $DATAGEN ]] || { echo "ingest.sh: $DATAGEN missing" >&2; exit 1; }

# --- helpers ---------------------------------------------------------------------------------

du_bytes() { du -sb "$1" 2>/dev/null | cut -f1; }
calc() { awk "BEGIN { printf \"%.${1}f\", $2 }"; }

# Bring the page cache to the state under test before a measured step.
prepare() {
    if [[ $COLD == 1 ]]; then
        drop_caches
    else
        sync
        (cd "$1" && find . -type f -print0 | xargs -0 cat >/dev/null)
    fi
}

declare -A WALL CPU RSS MIBS ADDED GROWTH NOTE SRC_BYTES S_WALL S_CPU S_RSS RUNS
# median of the numbers given as arguments
median() { printf "%s\n" "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
STEPS=()

# measure KEY SRC_DIR SRC_BYTES CMD...: runs CMD under /usr/bin/time from inside SRC_DIR;
# stdout goes to $LOG/KEY.out, stderr to $LOG/KEY.err. Returns CMD's status.
measure() {
    local key=$1 src=$2 bytes=$3
    shift 3
    prepare "$src"
    log "measuring $key"
    local rc=0
    (cd "$src" && /usr/bin/time -f '%e %U %S %M' -o "$LOG/$key.time" "$@") \
        >"$LOG/$key.out" 2>"$LOG/$key.err" || rc=$?
    [[ " ${STEPS[*]} " == *" $key "* ]] || STEPS+=("$key")
    SRC_BYTES[$key]=$bytes
    if [[ $rc != 0 ]]; then
        NOTE[$key]="failed (exit $rc, see logs/$key.err)"
        log "$key failed with exit $rc: $(tail -n 3 "$LOG/$key.err" | tr '\n' ' ')"
        return $rc
    fi
    local e u s m
    read -r e u s m < <(tail -n 1 "$LOG/$key.time")
    S_WALL[$key]+=" $e"
    S_CPU[$key]+=" $(calc 2 "$u + $s")"
    S_RSS[$key]+=" $(calc 1 "$m / 1024")"
    WALL[$key]=$(median ${S_WALL[$key]})
    CPU[$key]=$(median ${S_CPU[$key]})
    RSS[$key]=$(median ${S_RSS[$key]})
    RUNS[$key]=$(wc -w <<<"${S_WALL[$key]}")
    MIBS[$key]=$(awk -v b="$bytes" -v t="${WALL[$key]}" 'BEGIN { if (t > 0) printf "%.0f", b / 1048576 / t; else print "inf" }')
}

skip() { STEPS+=("$1"); NOTE[$1]=$2; }

# --- data --------------------------------------------------------------------------------

DATA=$W/data
gen() { gen_data "$DATA/$1" "$2" "$SEED" "$3"; } # gen NAME SCALE VERSION
mkdir -p "$DATA"
gen v1 "$SCALE" 1
gen v2 "$SCALE" 2
# On a VM the first write into guest memory the guest has never touched costs about ten times
# a later one (measured here: 5.2 s vs 0.47 s for 1.5 GB into the page cache). Whichever tool
# ran first would pay that tax for the others, so touch most free memory once, up front.
prefault() {
    local avail_mib shm_mib n
    avail_mib=$(awk '/MemAvailable/ { print int($2 / 1024) }' /proc/meminfo)
    shm_mib=$(df -m --output=avail /dev/shm 2>/dev/null | tail -n 1 | tr -d ' ')
    n=$((avail_mib - 6144))
    [[ -n $shm_mib && $n -gt $((shm_mib - 256)) ]] && n=$((shm_mib - 256))
    [[ $n -gt 0 ]] || return 0
    log "prefaulting ${n} MiB of guest memory (once, so no tool pays for first-touch)"
    dd if=/dev/zero of=/dev/shm/dsvault-bench-prefault bs=1M count="$n" status=none || true
    rm -f /dev/shm/dsvault-bench-prefault
}
prefault

V1_BYTES=$(json_get "$DATA/v1.datagen.json" bytes)
V2_BYTES=$(json_get "$DATA/v2.datagen.json" bytes)
V1_FILES=$(json_get "$DATA/v1.datagen.json" files)
IDEAL=$(json_get "$DATA/v2.datagen.json" ideal_new_bytes)

# --- baselines -------------------------------------------------------------------------------

if want cat; then
    measure cat "$DATA/v1" "$V1_BYTES" bash -c 'find . -type f -print0 | xargs -0 cat >/dev/null' || true
fi
if want tar; then
    # `| cat`: GNU tar does not read file contents when writing straight to /dev/null.
    measure tar "$DATA/v1" "$V1_BYTES" bash -c 'set -o pipefail; tar cf - . | cat >/dev/null' || true
fi
if want b3sum; then
    if have b3sum; then
        measure b3sum "$DATA/v1" "$V1_BYTES" \
            bash -c 'find . -type f -print0 | xargs -0 b3sum --num-threads 2 >/dev/null' || true
    else
        skip b3sum "not installed"
    fi
fi

for ROUND in $(seq "$REPEAT"); do
log "round $ROUND of $REPEAT"

# --- dsvault ---------------------------------------------------------------------------------

if want dsvault; then
    if [[ -z $DSVAULT ]]; then
        skip dsvault-v1 "not built (see logs/build.log)"
        skip dsvault-v2 "not built"
    else
        VAULT=$W/vault
        rm -rf "$VAULT"
        "$DSVAULT" --vault "$VAULT" init >"$LOG/dsvault-init.out" 2>&1 || true
        for v in v1 v2; do
            before=$(du_bytes "$VAULT" || echo 0)
            bytes=$([[ $v == v1 ]] && echo "$V1_BYTES" || echo "$V2_BYTES")
            if measure dsvault-$v "$DATA/$v" "$bytes" \
                "$DSVAULT" --vault "$VAULT" --json ingest "$DATA/$v" --name bench --version $v; then
                ADDED[dsvault-$v]=$(json_get "$LOG/dsvault-$v.out" stored_bytes)
                GROWTH[dsvault-$v]=$(($(du_bytes "$VAULT") - ${before:-0}))
                log "dsvault $v: root $(json_get "$LOG/dsvault-$v.out" root), files $(json_get "$LOG/dsvault-$v.out" files)"
            fi
        done
    fi
fi

# --- borg ------------------------------------------------------------------------------------

if want borg; then
    if have borg; then
        export BORG_BASE_DIR=$W/borg-home BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes \
            BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
        BORG_REPO_DIR=$W/borg
        rm -rf "$BORG_REPO_DIR" "$BORG_BASE_DIR"
        borg init --encryption none "$BORG_REPO_DIR" >"$LOG/borg-init.out" 2>&1
        for v in v1 v2; do
            before=$(du_bytes "$BORG_REPO_DIR")
            bytes=$([[ $v == v1 ]] && echo "$V1_BYTES" || echo "$V2_BYTES")
            if measure borg-$v "$DATA/$v" "$bytes" \
                borg create --compression none --json "$BORG_REPO_DIR::$v" .; then
                ADDED[borg-$v]=$(json_get "$LOG/borg-$v.out" archive.stats.deduplicated_size)
                GROWTH[borg-$v]=$(($(du_bytes "$BORG_REPO_DIR") - before))
            fi
        done
    else
        skip borg-v1 "not installed"
        skip borg-v2 "not installed"
    fi
fi

# --- restic ----------------------------------------------------------------------------------

if want restic; then
    if have restic; then
        export RESTIC_PASSWORD=dsvault-bench RESTIC_CACHE_DIR=$W/restic-cache
        RESTIC_REPO_DIR=$W/restic
        rm -rf "$RESTIC_REPO_DIR" "$RESTIC_CACHE_DIR"
        restic --repo "$RESTIC_REPO_DIR" init >"$LOG/restic-init.out" 2>&1
        for v in v1 v2; do
            before=$(du_bytes "$RESTIC_REPO_DIR")
            bytes=$([[ $v == v1 ]] && echo "$V1_BYTES" || echo "$V2_BYTES")
            if measure restic-$v "$DATA/$v" "$bytes" \
                restic --repo "$RESTIC_REPO_DIR" backup --json --host bench .; then
                ADDED[restic-$v]=$(json_get "$LOG/restic-$v.out" data_added)
                GROWTH[restic-$v]=$(($(du_bytes "$RESTIC_REPO_DIR") - before))
            fi
        done
    else
        skip restic-v1 "not installed"
        skip restic-v2 "not installed"
    fi
fi

done

# --- flat-RSS check --------------------------------------------------------------------------

if [[ $DOUBLE == 1 ]] && want dsvault; then
    if [[ -z $DSVAULT ]]; then
        skip dsvault-v1x2 "not built"
    else
        SCALE2=$(calc 6 "$SCALE * 2")
        gen v1x2 "$SCALE2" 1
        rm -rf "$W/vault-x2"
        "$DSVAULT" --vault "$W/vault-x2" init >/dev/null 2>&1 || true
        if measure dsvault-v1x2 "$DATA/v1x2" "$(json_get "$DATA/v1x2.datagen.json" bytes)" \
            "$DSVAULT" --vault "$W/vault-x2" --json ingest "$DATA/v1x2" --name bench --version v1; then
            ADDED[dsvault-v1x2]=$(json_get "$LOG/dsvault-v1x2.out" stored_bytes)
            GROWTH[dsvault-v1x2]=$(du_bytes "$W/vault-x2")
        fi
        rm -rf "$W/vault-x2"
        [[ $KEEP == 1 ]] || rm -rf "$DATA/v1x2" "$DATA/v1x2.datagen.json" "$DATA/v1x2.stamp"
    fi
fi

# --- report ----------------------------------------------------------------------------------

mib() { [[ -n ${1:-} ]] && calc 1 "$1 / 1048576" || echo "–"; }
# ratio A B DIGITS: A / B, or "–" when either is missing.
ratio() {
    [[ -n ${1:-} && -n ${2:-} ]] || { echo "–"; return; }
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b > 0) printf "%.*f", d, a / b; else print "–" }'
}
# verdict VALUE OP LIMIT: PASS/FAIL against a target, or "–" when unmeasured.
verdict() {
    [[ -n ${1:-} && $1 != "–" ]] || { echo "–"; return; }
    awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
        ok = (op == ">=") ? v >= l : (op == "<=") ? v <= l : v < l
        print ok ? "PASS" : "FAIL" }'
}

describe() {
    case "$1" in
    cat) echo "cat of every file (v1)" ;;
    tar) echo "tar cf - . \| cat (v1)" ;;
    b3sum) echo "b3sum --num-threads 2 (v1)" ;;
    dsvault-v1) echo "dsvault ingest v1" ;;
    dsvault-v2) echo "dsvault ingest v2" ;;
    dsvault-v1x2) echo "dsvault ingest v1 at 2x scale" ;;
    borg-v1) echo "borg create --compression none v1" ;;
    borg-v2) echo "borg create --compression none v2" ;;
    restic-v1) echo "restic backup v1" ;;
    restic-v2) echo "restic backup v2" ;;
    *) echo "$1" ;;
    esac
}

git_rev=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo "no commit")
[[ -z $(cd "$REPO" && git status --porcelain 2>/dev/null | head -1) ]] || git_rev="$git_rev (uncommitted changes)"
version_of() { have "$1" && "$@" 2>/dev/null | head -1 || echo "not installed"; }

report() {
    echo "# dsvault ingest benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
    echo "- work directory: \`$W\` on $(df -T "$W" | awk 'NR == 2 { print $2 " (" $1 ")" }')"
    echo "- rounds: $REPEAT, interleaved (dsvault v1, v2, borg v1, v2, restic v1, v2, repeated); each figure is the median over the rounds"
    echo "- page cache: $([[ $COLD == 1 ]] && echo "cold (sync; echo 3 > /proc/sys/vm/drop_caches before each step)" || echo "warm (source tree read once before each step)")"
    echo "- dataset: \`dsvault-datagen --scale $SCALE --seed $SEED\`: v1 $V1_FILES files, $(mib "$V1_BYTES") MiB; v2 $(mib "$V2_BYTES") MiB; ideal new bytes of v2: $IDEAL ($(mib "$IDEAL") MiB)"
    echo "- commit: $git_rev; $(version_of borg --version); $(version_of restic version); $(version_of b3sum --version)"
    echo "- command: \`bench/ingest.sh --scale $SCALE --seed $SEED$([[ $COLD == 1 ]] && echo " --cold")$([[ $DOUBLE == 1 ]] && echo " --double")$([[ $TOOLS != cat,tar,b3sum,dsvault,borg,restic ]] && echo " --tools $TOOLS")\`"
    echo
    echo "| step | wall s | CPU s (user+sys) | CPU % | peak RSS MiB | MiB/s | added bytes (tool) | store growth (du) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    local k
    for k in "${STEPS[@]}"; do
        if [[ -n ${NOTE[$k]:-} ]]; then
            echo "| $(describe "$k") | ${NOTE[$k]} | | | | | | |"
            continue
        fi
        local pct added growth
        pct=$(awk -v c="${CPU[$k]}" -v w="${WALL[$k]}" 'BEGIN { if (w > 0) printf "%.0f", 100 * c / w; else print "–" }')
        added=${ADDED[$k]:-}
        growth=${GROWTH[$k]:-}
        echo "| $(describe "$k") | ${WALL[$k]} | ${CPU[$k]} | $pct | ${RSS[$k]} | ${MIBS[$k]} | ${added:-–}$([[ -n $added ]] && echo " ($(mib "$added") MiB)") | ${growth:-–}$([[ -n $growth ]] && echo " ($(mib "$growth") MiB)") |"
    done
    echo
    local r1 r2 r3 r4 rss
    r1=$(ratio "${MIBS[dsvault-v1]:-}" "${MIBS[borg-v1]:-}")
    r2=$(ratio "${MIBS[dsvault-v1]:-}" "${MIBS[restic-v1]:-}")
    r3=$(ratio "${WALL[dsvault-v2]:-}" "${WALL[borg-v2]:-}")
    r4=$(ratio "${ADDED[dsvault-v2]:-}" "$IDEAL" 3)
    rss=${RSS[dsvault-v1]:-}
    [[ -z ${RSS[dsvault-v2]:-} ]] || rss=$(awk -v a="${rss:-0}" -v b="${RSS[dsvault-v2]}" 'BEGIN { print (a > b) ? a : b }')
    local rss_mb
    rss_mb=$([[ -n $rss ]] && calc 1 "$rss * 1048576 / 1000000" || echo "–")
    echo "| target | measured | limit | verdict |"
    echo "|---|---:|---:|---|"
    echo "| dsvault v1 throughput / borg v1 | $r1 | ≥ 1.5 | $(verdict "$r1" ">=" 1.5) |"
    echo "| dsvault v1 throughput / restic v1 | $r2 | ≥ 3 | $(verdict "$r2" ">=" 3) |"
    echo "| dsvault v2 wall time / borg v2 | $r3 | ≤ 1.0 | $(verdict "$r3" "<=" 1.0) |"
    echo "| dsvault v2 stored_bytes / ideal new bytes | $r4 | ≤ 1.1 | $(verdict "$r4" "<=" 1.1) |"
    echo "| dsvault peak RSS, MB (v1, v2) | $rss_mb | < 150 | $(verdict "$rss_mb" "<" 150) |"
    if [[ $DOUBLE == 1 ]]; then
        local r5
        r5=$(ratio "${RSS[dsvault-v1x2]:-}" "${RSS[dsvault-v1]:-}")
        echo "| dsvault peak RSS at 2x scale / at 1x | $r5 | ≤ 1.1 (flat) | $(verdict "$r5" "<=" 1.1) |"
    fi
    echo
    echo "For context: v2 added bytes / ideal — borg $(ratio "${GROWTH[borg-v2]:-}" "$IDEAL" 3) (repo growth), restic $(ratio "${ADDED[restic-v2]:-}" "$IDEAL" 3) (data_added), $(ratio "${GROWTH[restic-v2]:-}" "$IDEAL" 3) (repo growth); dsvault v1 throughput / tar $(ratio "${MIBS[dsvault-v1]:-}" "${MIBS[tar]:-}"), / b3sum $(ratio "${MIBS[dsvault-v1]:-}" "${MIBS[b3sum]:-}")."
}

mkdir -p "$REPO/bench/results"
OUT=$REPO/bench/results/ingest-$(date -u +%Y-%m-%d-%H%M%S).md
report | tee "$OUT"
log "written to ${OUT#"$REPO"/}; logs in $LOG"

if [[ $KEEP == 0 ]]; then
    # Everything but the logs.
    rm -rf "$DATA" "$W/vault" "$W/vault-x2" "$W/borg" "$W/borg-home" "$W/restic" "$W/restic-cache"
fi
