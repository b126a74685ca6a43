"""Fixtures: a source tree, and vaults made from it with the real `dsvault` command, one
on the local disk and one on moto's S3 server (from the repository's .venv-moto, as the
Rust remote tests use; started here on 127.0.0.1 and stopped at the end)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET = "dsvault-test-secret-Z9q"
sys.path.insert(0, str(Path(__file__).parent))


def dsvault_bin() -> str:
    for candidate in (os.environ.get("DSVAULT_BIN"), REPO / "target/debug/dsvault", REPO / "target/release/dsvault"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise RuntimeError("no dsvault binary: run `cargo build -p dsvault-cli` (scripts/test.sh does) or set DSVAULT_BIN")


def run(*args, env=None) -> str:
    out = subprocess.run([dsvault_bin(), *map(str, args)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, f"dsvault {' '.join(map(str, args))}: {out.stderr}"
    return out.stdout


def make_source(root: Path) -> dict[str, bytes]:
    """A tree with small and multi-chunk files, nesting, an empty file, CSV and Parquet."""
    import pandas as pd

    rng = __import__("random").Random(7)
    files: dict[str, bytes] = {
        "README.txt": b"a small dataset\n",
        "empty": b"",
        "big.bin": rng.randbytes(6_000_000),
        "nested/deep/er/blob.bin": rng.randbytes(300_000),
    }
    for i in range(40):
        files[f"shards/s{i:02d}.txt"] = f"shard {i}\n".encode() * (i * 37 + 1)
    table = pd.DataFrame({"id": range(500), "label": [f"class-{i % 7}" for i in range(500)], "x": [i / 3 for i in range(500)]})
    files["train.csv"] = table.to_csv(index=False).encode()
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    table.to_parquet(root / "table.parquet", index=False)
    files["table.parquet"] = (root / "table.parquet").read_bytes()
    os.symlink("nested/deep", root / "link-to-deep")
    return files


@pytest.fixture(scope="session")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    return root, make_source(root)


@pytest.fixture(scope="session")
def local_vault(tmp_path_factory, source):
    vault = tmp_path_factory.mktemp("vault")
    run("--vault", vault, "ingest", source[0], "--name", "tab", "--version", "v1")
    return vault


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """moto's S3 server on loopback, with the environment a vault on it needs."""

    def __init__(self, logdir: Path):
        venv = REPO / ".venv-moto"
        server = venv / "bin/moto_server"
        assert server.exists(), (
            f"{server} is missing: the object-store tests need moto. Run scripts/test.sh, or "
            "python3 -m venv .venv-moto && .venv-moto/bin/pip install 'moto[server]'"
        )
        self.venv = venv
        self.port = free_port()
        self.log = open(logdir / "moto.log", "w")
        self.proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None, "moto_server exited"
                assert time.time() < deadline, "moto_server did not start"
                time.sleep(0.05)
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_ACCESS_KEY_ID": "dsvault-test-access",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1",
        }

    def create_bucket(self, name: str) -> None:
        code = (
            "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', "
            f"aws_access_key_id='x', aws_secret_access_key='y').create_bucket(Bucket={name!r})"
        )
        subprocess.run([self.venv / "bin/python", "-c", code, self.env["AWS_ENDPOINT_URL"]], check=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    server = Moto(tmp_path_factory.mktemp("moto"))
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)  # the native module's store client reads them
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def remote_vault(tmp_path_factory, source, moto):
    moto.create_bucket("pyvault")
    vault = tmp_path_factory.mktemp("remote-vault")
    env = {**os.environ, **moto.env}
    run("--vault", vault, "init", "--store", "s3://pyvault/v", env=env)
    run("--vault", vault, "ingest", source[0], "--name", "tab", "--version", "v1", env=env)
    return vault


@pytest.fixture(params=["local", "s3"])
def any_vault(request):
    """Each test using it runs on the local vault and on the moto one (its cache emptied)."""
    if request.param == "local":
        return request.getfixturevalue("local_vault")
    vault = request.getfixturevalue("remote_vault")
    shutil.rmtree(vault / "cache", ignore_errors=True)
    return vault
