#!/usr/bin/env bash
# diff benchmark: two versions of a dataset of N small files (default 100,000), the second
# with 1% of the files rewritten, 0.5% removed, 0.5% added and 0.5% chmodded; then a third
# with every file rewritten (the worst case: every file of B needs its chunk lookup).
# Times `dsvault diff` (JSON and text) against `dsvault ls` in the same run (issue 16:
# 100,000-file datasets in under a second).
# DSVAULT_BIN=PATH runs another binary (with --no-build).
#
# usage: bench/diff.sh [--files N] [--workdir DIR] [--keep] [--no-build]
set -euo pipefail
BENCH=diff.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/diff.sh [options]
  --files N      number of files (1000 per folder, 0-2 KiB each)        [100000]
  --workdir DIR  data, vault and logs                    [/tmp/dsvault-bench-diff]
  --keep         keep the work directory
  --no-build     use the binary already in target/release
EOF
}

FILES=100000
WORKDIR=/tmp/dsvault-bench-diff
KEEP=0
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
    --files) FILES=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "diff.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

DSVAULT=${DSVAULT_BIN:-$DSVAULT}
mkdir -p "$WORKDIR"
W=$(cd "$WORKDIR" && pwd)
LOG=$W/logs
mkdir -p "$LOG"
cleanup() { if [[ $KEEP == 0 ]]; then rm -rf "$W"; fi; }
trap cleanup EXIT

if [[ $BUILD == 1 ]]; then
    build_release "$LOG/build.log" || die "build failed, see $LOG/build.log"
fi

log "generating $FILES files, and the two changed copies"
rm -rf "$W/v1" "$W/v2" "$W/v3" "$W/vault"
python3 - "$W" "$FILES" <<'EOF'
import os, random, shutil, sys
w, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
def write(root, i, data):
    d = os.path.join(root, f"d{i // 1000:04d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % 1000:03d}.bin"), "wb") as f:
        f.write(data)
    return os.path.join(d, f"f{i % 1000:03d}.bin")
for i in range(n):
    write(f"{w}/v1", i, rng.randbytes(rng.randrange(0, 2048)))
shutil.copytree(f"{w}/v1", f"{w}/v2", symlinks=True)
shutil.copytree(f"{w}/v1", f"{w}/v3", symlinks=True)
pick = rng.sample(range(n), n // 40)
q = len(pick) // 5
for i in pick[:2 * q]:
    write(f"{w}/v2", i, rng.randbytes(1000))            # rewritten
for i in pick[2 * q:3 * q]:
    os.remove(write(f"{w}/v2", i, b""))                  # removed
for i in pick[3 * q:4 * q]:
    os.chmod(os.path.join(f"{w}/v2", f"d{i // 1000:04d}", f"f{i % 1000:03d}.bin"), 0o600)  # chmodded
for i in range(q):
    write(f"{w}/v2", n + i, rng.randbytes(500))         # added
for i in range(n):
    write(f"{w}/v3", i, rng.randbytes(100))             # everything rewritten
EOF

for v in v1 v2 v3; do
    "$DSVAULT" --vault "$W/vault" ingest "$W/$v" --name many --version "$v" --quiet
done

# best NAME CMD...: the best wall time of 5 runs of CMD, in seconds.
best() {
    local name=$1; shift
    local best=
    for _ in 1 2 3 4 5; do
        if ! /usr/bin/time -f '%e' -o "$LOG/$name.time" "$@" >"$LOG/$name.out" 2>"$LOG/$name.err"; then
            log "$name failed: $*"; cat "$LOG/$name.err" >&2; exit 1
        fi
        local t; t=$(tail -n 1 "$LOG/$name.time")
        if [[ -z $best ]] || awk "BEGIN { exit !($t < $best) }"; then best=$t; fi
    done
    echo "$best"
}

D=("$DSVAULT" --vault "$W/vault")
ls_s=$(best ls "${D[@]}" --json ls)
same_s=$(best same "${D[@]}" --json diff many@v1 many@v1)
json_s=$(best json "${D[@]}" --json diff many@v1 many@v2)
text_s=$(best text "${D[@]}" diff many@v1 many@v2)
all_s=$(best all "${D[@]}" --json diff many@v1 many@v3)
path_s=$(best path "${D[@]}" --json diff many@v1 many@v3 d0000)
changes=$(python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['totals']; print(t['added'], 'added,', t['removed'], 'removed,', t['modified'], 'modified,', t['mode'], 'mode')" "$LOG/json.out")
all_changes=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['changes']))" "$LOG/all.out")

cat <<EOF

### diff, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO" rev-parse --short HEAD)

Command: \`bench/diff.sh --files $FILES\`; $FILES files of 0-2 KiB in folders of 1000; best of 5.

| command | wall s |
|---|---:|
| \`ls --json\` (baseline: open the catalog, print) | $ls_s |
| \`diff v1 v1\` (nothing changed) | $same_s |
| \`diff --json v1 v2\` ($changes) | $json_s |
| \`diff v1 v2\` (text) | $text_s |
| \`diff --json v1 v3\` (every file rewritten: $all_changes changes) | $all_s |
| \`diff --json v1 v3 d0000\` (one folder of 1000) | $path_s |
EOF
