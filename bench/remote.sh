#!/usr/bin/env bash
# Remote-store benchmark: ingest and mount-read throughput with the store in moto's S3 server
# on loopback versus the local store, and the bytes fetched from the store to read 1% of the
# dataset through a mount. Small scale by default; prints a markdown table.
# With --gc: instead, gc of a bucket holding 50 datasets of which 25 are removed (two runs:
# condemn, then delete), checking that the bytes freed equal exactly the bytes only the removed
# datasets used, with each run's requests (from moto's log) and time.
#
# usage: bench/remote.sh [--gc] [--scale F] [--seed N] [--workdir DIR] [--keep] [--no-build]
set -euo pipefail
BENCH=remote.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/remote.sh [options]
  --gc           the gc benchmark (50 datasets, 25 removed) instead of ingest/read
  --bin PATH     the dsvault binary to use (with --gc; implies --no-build)
  --scale F      dataset scale (1 = about 2 GB)                                   [0.1]
  --seed N       generator seed                                                   [1]
  --workdir DIR  data, vaults, mount points and logs          [/tmp/dsvault-bench-remote]
  --keep         keep the work directory (data is reused when scale and seed match)
  --no-build     use the binaries already in target/release
EOF
}

SCALE=0.1
SEED=1
WORKDIR=/tmp/dsvault-bench-remote
KEEP=0
BUILD=1
GC=0
BIN=
while [[ $# -gt 0 ]]; do
    case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --gc) GC=1; shift ;;
    --bin) BIN=$2; BUILD=0; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "remote.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

MOTO=$REPO/.venv-moto/bin/moto_server
mkdir -p "$WORKDIR"
W=$(cd "$WORKDIR" && pwd)
LOG=$W/logs
mkdir -p "$LOG"

[[ $GC == 1 ]] || need_root "drop_caches, mounts"
[[ -x $MOTO ]] || die "$MOTO is missing; run scripts/test.sh, or: python3 -m venv .venv-moto && .venv-moto/bin/pip install 'moto[server]'"
if [[ $BUILD == 1 ]]; then
    build_release "$LOG/build.log" || die "build failed, see $LOG/build.log"
fi
# lib.sh names the release binaries; --bin overrides dsvault.
DSVAULT=${BIN:-$DSVAULT}

# --- gc of a shared bucket (--gc) ------------------------------------------------------------

if [[ $GC == 1 ]]; then
    rm -rf "$W/gc"
    mkdir -p "$W/gc"
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$MOTO" -H 127.0.0.1 -p "$PORT" >"$LOG/moto-gc.log" 2>&1 &
    MOTO_PID=$!
    trap 'kill $MOTO_PID 2>/dev/null; wait $MOTO_PID 2>/dev/null; [[ $KEEP == 1 ]] || rm -rf "$W"' EXIT
    export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
    for _ in $(seq 100); do curl -s -o /dev/null "$AWS_ENDPOINT_URL" && break; sleep 0.1; done
    PY=$REPO/.venv-moto/bin/python
    "$PY" -c "import boto3; boto3.client('s3', endpoint_url='$AWS_ENDPOINT_URL').create_bucket(Bucket='bench')"
    # bucket_bytes PREFIX: total size of the objects under bench/gc/PREFIX
    bucket_bytes() {
        "$PY" -c "
import boto3, sys
s3 = boto3.client('s3', endpoint_url='$AWS_ENDPOINT_URL')
n = 0
for page in s3.get_paginator('list_objects_v2').paginate(Bucket='bench', Prefix='gc/' + sys.argv[1]):
    n += sum(o['Size'] for o in page.get('Contents', []))
print(n)" "$1"
    }
    V=$W/gc/vault
    "$DSVAULT" --vault "$V" --quiet init --store s3://bench/gc
    sed -i 's/^target_size = .*/target_size = 1048576/' "$V/vault.toml"
    log "gc: ingesting 50 datasets (each 2 MiB of its own data and a file all share)"
    head -c $((512 << 10)) /dev/urandom >"$W/gc/shared.bin"
    EXPECTED=0
    for i in $(seq 1 50); do
        src=$W/gc/src-$i
        mkdir -p "$src"
        cp "$W/gc/shared.bin" "$src/shared.bin"
        head -c $((2 << 20)) /dev/urandom >"$src/own.bin"
        before=$(bucket_bytes packs/)
        "$DSVAULT" --vault "$V" --quiet ingest "$src" --name "d$i" --version 1
        after=$(bucket_bytes packs/)
        # Even datasets are removed: the packs each introduced (never the first, which holds
        # the shared file) and its manifest are what only it used.
        if ((i % 2 == 0)); then
            root=$("$DSVAULT" --vault "$V" --json show "gold/d$i@1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["root"])')
            EXPECTED=$((EXPECTED + after - before + $(bucket_bytes "manifests/$root.json")))
        fi
    done
    for i in $(seq 2 2 50); do
        "$DSVAULT" --vault "$V" --quiet rm "gold/d$i@1" --force-gold --yes-i-mean-it "gold/d$i@1"
    done
    TOTAL=$(bucket_bytes "")
    # gc_run N: one timed gc run; its --json report in $LOG/gc-N.json, its requests counted in
    # moto's log
    gc_run() {
        local t0 l0
        l0=$(wc -l <"$LOG/moto-gc.log")
        t0=$(now)
        "$DSVAULT" --vault "$V" --json gc --grace-minutes 0 >"$LOG/gc-$1.json"
        GC_SECS[$1]=$(secs "$t0" "$(now)")
        read -r GC_REQS[$1] GC_KINDS[$1] < <(tail -n +$((l0 + 1)) "$LOG/moto-gc.log" | request_kinds)
    }
    # request_kinds < MOTO_LOG: "TOTAL N1 KIND1, N2 KIND2, ..." for the request lines (moto
    # colours the request of a 4xx answer; listings and batch deletes are told apart).
    request_kinds() {
        python3 -c '
import collections, re, sys
kinds = collections.Counter()
for line in sys.stdin:
    m = re.search(r"\"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP", line)
    if m:
        method, path = m.groups()
        if method == "GET" and "list-type=" in path:
            method = "LIST"
        elif method == "POST" and "?delete" in path:
            method = "DELETE-batch"
        kinds[method] += 1
print(sum(kinds.values()), ", ".join(f"{n} {k}" for k, n in kinds.most_common()))'
    }
    now() { date +%s.%N; }
    secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
    declare -A GC_SECS GC_REQS GC_KINDS
    log "gc: first run (condemns)"
    gc_run 1
    sleep 2.2
    log "gc: second run (deletes)"
    gc_run 2
    field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
    FREED=$(field "$LOG/gc-2.json" bytes_freed)
    CONDEMNED=$(field "$LOG/gc-1.json" bytes_condemned)
    LEFT=$(bucket_bytes "")
    "$DSVAULT" --vault "$V" --quiet sync --prune
    "$DSVAULT" --vault "$V" --quiet verify --read-data
    echo
    echo "gc of a bucket with 50 datasets (2.5 MiB each, 0.5 MiB of it shared by all; 1 MiB packs), 25 removed; moto on 127.0.0.1; binary $DSVAULT."
    echo
    echo "| run | time | requests | bytes |"
    echo "| --- | --- | --- | --- |"
    echo "| 1: condemn | ${GC_SECS[1]} s | ${GC_REQS[1]} (${GC_KINDS[1]}) | $CONDEMNED condemned |"
    echo "| 2: delete | ${GC_SECS[2]} s | ${GC_REQS[2]} (${GC_KINDS[2]}) | $FREED freed |"
    echo
    echo "Bucket before: $TOTAL bytes; after: $LEFT bytes. Bytes only the 25 removed datasets used (the packs each introduced, and its manifest): $EXPECTED."
    if [[ $FREED != "$EXPECTED" || $CONDEMNED != "$EXPECTED" ]]; then
        echo "remote.sh: gc freed $FREED and condemned $CONDEMNED bytes, expected exactly $EXPECTED" >&2
        exit 1
    fi
    echo "Freed = expected, exactly; the kept datasets pass verify --read-data."
    exit 0
fi

# --- data ------------------------------------------------------------------------------------

DATA=$W/data
gen_data "$DATA" "$SCALE" "$SEED" 1
DATA_BYTES=$(find "$DATA" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
rm -rf "$W"/vault-* "$W"/mnt-* "$W"/export-*

# --- the server ------------------------------------------------------------------------------

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$MOTO" -H 127.0.0.1 -p "$PORT" >"$LOG/moto.log" 2>&1 &
MOTO_PID=$!
MOUNT_PID=
cleanup() {
    [[ -n $MOUNT_PID ]] && kill "$MOUNT_PID" 2>/dev/null && wait "$MOUNT_PID" 2>/dev/null
    for mp in "$W"/mnt-*; do mountpoint -q "$mp" 2>/dev/null && umount -l "$mp"; done
    kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
    [[ $KEEP == 1 ]] || rm -rf "$W"
}
trap cleanup EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
for _ in $(seq 100); do curl -s -o /dev/null "$AWS_ENDPOINT_URL" && break; sleep 0.1; done
"$REPO/.venv-moto/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='$AWS_ENDPOINT_URL').create_bucket(Bucket='bench')"

# --- helpers ---------------------------------------------------------------------------------

mibps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1048576 / s }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# ingest VAULT: seconds
ingest() {
    local t0 t1
    t0=$(now)
    "$DSVAULT" --vault "$1" --quiet ingest "$DATA" --name bench --version v1 >>"$LOG/ingest.log" 2>&1
    t1=$(now)
    secs "$t0" "$t1"
}

# mount VAULT MP: starts `dsvault mount` in the background (sets MOUNT_PID), waits until ready
mount_vault() {
    mkdir -p "$2"
    DSVAULT_LOG=dsvault=info "$DSVAULT" --vault "$1" mount bench@v1 "$2" >"$LOG/mount-$(basename "$1").out" 2>"$LOG/mount-$(basename "$1").err" &
    MOUNT_PID=$!
    wait_until 100 "$MOUNT_PID" grep -q '^mounted' "$LOG/mount-$(basename "$1").out" || die "mount of $1 did not come up"
}

unmount_vault() {
    kill "$MOUNT_PID"
    wait "$MOUNT_PID" || true
    MOUNT_PID=
}

# read_all MP: seconds to read every file once
read_all() {
    local t0 t1
    drop_caches
    t0=$(now)
    (cd "$1" && find . -type f -print0 | xargs -0 -P 4 -n 64 cat >/dev/null)
    t1=$(now)
    secs "$t0" "$t1"
}

# --- runs ------------------------------------------------------------------------------------

log "local store: ingest, mount, read"
LOCAL_INGEST=$(ingest "$W/vault-local")
mount_vault "$W/vault-local" "$W/mnt-local"
LOCAL_READ=$(read_all "$W/mnt-local")
unmount_vault

log "remote store: ingest"
"$DSVAULT" --vault "$W/vault-a" --quiet init --store s3://bench/v
REMOTE_INGEST=$(ingest "$W/vault-a")

log "remote store: sync into a new vault, mount, read everything (cold cache)"
"$DSVAULT" --vault "$W/vault-b" --quiet init --store s3://bench/v
t0=$(now)
"$DSVAULT" --vault "$W/vault-b" --quiet sync
SYNC_SECS=$(secs "$t0" "$(now)")
mount_vault "$W/vault-b" "$W/mnt-b"
REMOTE_READ=$(read_all "$W/mnt-b")
log "remote store: read everything again (warm cache)"
REMOTE_WARM=$(read_all "$W/mnt-b")
unmount_vault
FULL_STATS=$(grep -o 'get_requests=[0-9]* bytes_fetched=[0-9]*' "$LOG/mount-vault-b.err" | tail -n 1 || true)

log "remote store: read 1% of the dataset through a mount of a fresh vault"
"$DSVAULT" --vault "$W/vault-c" --quiet init --store s3://bench/v
"$DSVAULT" --vault "$W/vault-c" --quiet sync
mount_vault "$W/vault-c" "$W/mnt-c"
WANT=$((DATA_BYTES / 100))
READ_BYTES=0
# Whole files picked at random (seeded) until they add up to 1% of the dataset.
while IFS= read -r -d '' f; do
    size=$(stat -c %s "$DATA/$f")
    ((READ_BYTES + size > WANT * 11 / 10)) && continue
    cat "$W/mnt-c/$f" >/dev/null
    READ_BYTES=$((READ_BYTES + size))
    ((READ_BYTES >= WANT)) && break
done < <(cd "$DATA" && find . -type f -printf '%P\0' | shuf -z --random-source=<(yes "$SEED"))
unmount_vault
FETCHED=$(grep -o 'bytes_fetched=[0-9]*' "$LOG/mount-vault-c.err" | tail -n 1 | cut -d= -f2)
FETCHED=${FETCHED:-0}

log "export every file: local store, and a freshly synced remote vault (cold cache)"
# export VAULT DEST: seconds, with the page cache dropped first; --json output in $LOG
export_all() {
    local t0 t1
    drop_caches
    t0=$(now)
    "$DSVAULT" --vault "$1" --json export bench@v1 "$2" >"$LOG/export-$(basename "$1").json"
    t1=$(now)
    secs "$t0" "$t1"
}
LOCAL_EXPORT=$(export_all "$W/vault-local" "$W/export-local")
"$DSVAULT" --vault "$W/vault-d" --quiet init --store s3://bench/v
"$DSVAULT" --vault "$W/vault-d" --quiet sync
REMOTE_EXPORT=$(export_all "$W/vault-d" "$W/export-d")
EXPORT_GETS=$(json_get "$LOG/export-vault-d.json" remote.get_requests)
diff -r "$DATA" "$W/export-d" >/dev/null || { echo "remote.sh: the remote export differs from the data" >&2; exit 1; }

# --- report ----------------------------------------------------------------------------------

MIB=$(awk -v b="$DATA_BYTES" 'BEGIN { printf "%.0f", b / 1048576 }')
echo
echo "Dataset: dsvault-datagen --scale $SCALE --seed $SEED: $MIB MiB, $(find "$DATA" -type f | wc -l) files; moto $("$REPO/.venv-moto/bin/pip" show moto 2>/dev/null | awk '/^Version/ { print $2 }') on 127.0.0.1."
echo
echo "| | local store | S3 (moto, loopback) |"
echo "| --- | --- | --- |"
echo "| ingest | $LOCAL_INGEST s ($(mibps "$DATA_BYTES" "$LOCAL_INGEST") MiB/s) | $REMOTE_INGEST s ($(mibps "$DATA_BYTES" "$REMOTE_INGEST") MiB/s) |"
echo "| mount, read every file, cold | $LOCAL_READ s ($(mibps "$DATA_BYTES" "$LOCAL_READ") MiB/s) | $REMOTE_READ s ($(mibps "$DATA_BYTES" "$REMOTE_READ") MiB/s); cache warm: $REMOTE_WARM s ($(mibps "$DATA_BYTES" "$REMOTE_WARM") MiB/s) |"
echo "| sync into an empty vault | | $SYNC_SECS s |"
echo "| export every file, cold | $LOCAL_EXPORT s ($(mibps "$DATA_BYTES" "$LOCAL_EXPORT") MiB/s) | $REMOTE_EXPORT s ($(mibps "$DATA_BYTES" "$REMOTE_EXPORT") MiB/s), $EXPORT_GETS GETs for $(find "$DATA" -type f | wc -l) files |"
echo
echo "Cold read of every file (the mount's requests while it ran both reads): ${FULL_STATS:-not logged}."
echo
echo "Reading 1% through a mount of a freshly synced vault: $READ_BYTES bytes of files read, $FETCHED bytes fetched from the store ($(awk -v f="$FETCHED" -v d="$DATA_BYTES" 'BEGIN { printf "%.2f", 100 * f / d }')% of the dataset; $(awk -v f="$FETCHED" -v r="$READ_BYTES" 'BEGIN { printf "%.2f", f / (r > 0 ? r : 1) }')x the bytes read)."
