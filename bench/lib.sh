# bench/lib.sh: what the bench scripts share. Source it from a bench script after setting
# BENCH (the script's name, for messages):
#
#     BENCH=mount.sh
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It sets REPO (the checkout), TARGET (its release folder), DSVAULT and DATAGEN (the two
# binaries), and defines: log, die, have, need_root, build_release, gen_data, drop_caches,
# wait_until, now and json_get. It runs nothing by itself.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}/release
DSVAULT=$TARGET/dsvault
DATAGEN=$TARGET/dsvault-datagen

log() { printf '[%s] %s\n' "$BENCH" "$*" >&2; }
die() { echo "$BENCH: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
need_root() { [[ $(id -u) == 0 ]] || die "needs root ($1)"; }

# build_release LOGFILE: `cargo build --release` of the command and the data generator, output
# into LOGFILE. Returns cargo's status.
build_release() {
    log "cargo build --release -p dsvault-cli -p dsvault-datagen"
    (cd "$REPO" && cargo build --release -p dsvault-cli -p dsvault-datagen) >"$1" 2>&1
}

# gen_data DIR SCALE SEED VERSION: generate the bench dataset into DIR with dsvault-datagen
# (which also writes DIR.datagen.json), unless DIR.stamp says the same scale, seed, version
# and generator binary made what is there. Sets GENERATED=1 when it generated, 0 when it
# reused the data (callers drop what they built from older data).
gen_data() {
    local dir=$1 scale=$2 seed=$3 version=$4 stamp
    stamp="$scale $seed $version $(sha256sum "$DATAGEN" | cut -c1-16)"
    if [[ -d $dir && -f $dir.stamp && $(cat "$dir.stamp") == "$stamp" && -f $dir.datagen.json ]]; then
        log "reusing $dir"
        GENERATED=0
        return
    fi
    rm -f "$dir.stamp"
    log "generating $dir (scale $scale, version $version)"
    "$DATAGEN" "$dir" --scale "$scale" --seed "$seed" --version "$version" --force >&2
    echo "$stamp" >"$dir.stamp"
    GENERATED=1
}

# drop_caches: write dirty pages back, then drop the page cache, dentries and inodes (root).
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# wait_until TENTHS PID CMD...: run CMD every 0.1 s until it succeeds (status 0), at most
# TENTHS times; fails at once when PID (unless empty) has exited, e.g. a mount that died.
wait_until() {
    local tenths=$1 pid=$2 _
    shift 2
    for _ in $(seq "$tenths"); do
        "$@" 2>/dev/null && return 0
        [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

now() { date +%s.%N; }

# json_get FILE PATH: the value at PATH (dot-separated keys) of the last JSON value in FILE
# that has it (FILE may hold several values, one per line or not); empty when none has it.
json_get() {
    if have jq; then
        jq -rs --arg p "$2" '[.[] | (getpath($p | split(".")))? // empty] | last // empty' "$1" 2>/dev/null || true
    else
        python3 - "$1" "$2" <<'PY' 2>/dev/null || true
import json, sys
text, path = open(sys.argv[1]).read(), sys.argv[2].split(".")
dec, i, found = json.JSONDecoder(), 0, None
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    try:
        v, i = dec.raw_decode(text, i)
    except ValueError:
        i = text.find("\n", i) + 1 or len(text)
        continue
    for k in path:
        v = v.get(k) if isinstance(v, dict) else None
    if v is not None:
        found = v
if found is not None:
    print(found)
PY
    fi
}
