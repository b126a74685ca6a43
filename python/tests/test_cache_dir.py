"""`open_vault(path, cache_dir=...)`: an object-store vault's disk cache kept in a folder of
the caller's choosing, also by a user who may only read the vault (a real account, run with
`runuser`), and a warm cache read by a new process without asking the store anything."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import dsvault

READER = "dsvault-pyreader"


def store_requests(server, method: str) -> int:
    """Requests for pack objects moto has logged so far (GET or HEAD)."""
    server.log.flush()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", Path(server.log.name).read_text())  # 206 answers are coloured
    return sum(1 for line in plain.splitlines() if f'"{method} /' in line and "/packs/" in line)


@pytest.fixture()
def fresh_remote(tmp_path, source):
    """A vault on a moto server of its own (so its log counts only this test's requests)."""
    from conftest import Moto, run

    server = Moto(tmp_path)
    saved = {k: os.environ.get(k) for k in server.env}
    try:
        server.create_bucket("cachedir")
        # World-readable (pytest's tmp_path is 0700): the read-only user must reach it.
        vault = Path(tempfile.mkdtemp(prefix="dsvault-py-cachedir-"))
        vault.chmod(0o755)
        env = {**os.environ, **server.env}
        run("--vault", vault / "v", "init", "--store", "s3://cachedir/v", env=env)
        run("--vault", vault / "v", "ingest", source[0], "--name", "tab", "--version", "v1", env=env)
        shutil.rmtree(vault / "v/cache", ignore_errors=True)
        os.environ.update(server.env)
        yield server, vault / "v"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
        shutil.rmtree(vault, ignore_errors=True)


def test_cache_dir_holds_the_cache_and_a_warm_one_asks_the_store_nothing(tmp_path, source, fresh_remote):
    server, vault = fresh_remote
    cache = tmp_path / "my-cache" / "nested"  # created when missing
    cold = dsvault.open_vault(vault, cache_dir=cache).dataset("gold/tab@v1")
    for rel, want in source[1].items():
        assert cold.read_range(rel) == want
    assert list((cache / "extents").iterdir()), "nothing cached in cache_dir"
    assert not (vault / "cache").exists(), "the vault's own cache/ was used"
    gets, heads = store_requests(server, "GET"), store_requests(server, "HEAD")
    assert gets > 0 and heads > 0  # the cold pass asked for each pack's size
    # A new handle (its own store client) through the warm cache: no GET, and no HEAD either.
    v = dsvault.open_vault(vault, cache_dir=cache)
    assert v.options["cache_dir"] == str(cache)
    warm = v.dataset("gold/tab@v1")
    for rel, want in source[1].items():
        assert warm.read_range(rel) == want
    assert (store_requests(server, "GET"), store_requests(server, "HEAD")) == (gets, heads)
    # Pickles and the fsspec filesystem keep the cache folder.
    import pickle

    import fsspec

    again = pickle.loads(pickle.dumps(warm))
    assert again.read_range("README.txt") == source[1]["README.txt"]
    fs = fsspec.filesystem("dsvault", vault=v, skip_instance_cache=True)
    assert pickle.loads(pickle.dumps(fs)).cat_file("gold/tab@v1/train.csv") == source[1]["train.csv"]
    assert (store_requests(server, "GET"), store_requests(server, "HEAD")) == (gets, heads)


def test_a_cache_dir_that_cannot_be_made_is_a_clear_error(tmp_path, fresh_remote):
    _, vault = fresh_remote
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a folder")
    with pytest.raises(OSError, match="cache folder"):
        dsvault.open_vault(vault, cache_dir=blocker / "cache")


def ensure_user(name: str) -> None:
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], capture_output=True)
        assert made.returncode == 0 or subprocess.run(["id", name], capture_output=True).returncode == 0, made.stderr


def python_for(user: str) -> str:
    """A CPython >= 3.11 that `user` may run (this one may sit in root's private folders)."""
    check = "import sys; assert sys.version_info >= (3, 11)"
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"):
        if subprocess.run(["runuser", "-u", user, "--", candidate, "-c", check], capture_output=True).returncode == 0:
            return candidate
    raise AssertionError(f"no CPython >= 3.11 that {user} may run (tried this one, /usr/bin/python3, /usr/local/bin/python3)")


def test_a_user_who_may_only_read_the_vault_caches_in_their_own_cache_dir(source, fresh_remote):
    """The vault (root's, 0755) is read by another account: with cache_dir it reads every
    file right, fills its own cache and writes nothing into the vault; a cache_dir it may
    not write (root's, 0755) is refused with a PermissionError naming it."""
    assert os.geteuid() == 0, "this test runs as root: it creates an account and runs as it"
    server, vault = fresh_remote
    ensure_user(READER)
    shared = Path(tempfile.mkdtemp(prefix="dsvault-py-reader-"))
    try:
        shared.chmod(0o755)
        # The package, where the reader can import it (the venv may sit in a private folder).
        shutil.copytree(Path(dsvault.__file__).parent, shared / "pkg" / "dsvault", ignore=shutil.ignore_patterns("__pycache__"))
        (shared / "files.json").write_text(json.dumps({k: v.hex() for k, v in source[1].items()}))
        home = shared / "home"
        home.mkdir()
        subprocess.run(["chown", READER, str(home)], check=True)
        before = sorted(str(p.relative_to(vault)) for p in vault.rglob("*"))
        script = (
            "import json, os, sys, dsvault\n"
            "files = {k: bytes.fromhex(v) for k, v in json.load(open(sys.argv[1])).items()}\n"
            "assert not os.access(sys.argv[2], os.W_OK), 'the reader may write the vault'\n"
            "ds = dsvault.open_vault(sys.argv[2], cache_dir=sys.argv[3]).dataset('gold/tab@v1')\n"
            "for rel, want in files.items():\n"
            "    assert ds.read_range(rel) == want, rel\n"
            "print(len(os.listdir(os.path.join(sys.argv[3], 'extents'))))\n"
            # A cache folder that exists but this user may not write: refused, named.
            "try:\n"
            "    dsvault.open_vault(sys.argv[2], cache_dir=sys.argv[4])\n"
            "except PermissionError as e:\n"
            "    assert sys.argv[4] in str(e) and 'cache folder' in str(e), e\n"
            "else:\n"
            "    raise AssertionError('a cache_dir the user may not write was accepted')\n"
        )
        env = [f"{k}={v}" for k, v in server.env.items()] + [f"PYTHONPATH={shared / 'pkg'}", f"HOME={home}"]
        python = python_for(READER)
        out = subprocess.run(
            [
                "runuser", "-u", READER, "--", "env", *env, python, "-c", script,
                str(shared / "files.json"), str(vault), str(home / "cache"), str(shared),
            ],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert int(out.stdout.strip()) > 0, "nothing cached in the reader's cache_dir"
        assert sorted(str(p.relative_to(vault)) for p in vault.rglob("*")) == before, "the reader wrote into the vault"
    finally:
        shutil.rmtree(shared, ignore_errors=True)
