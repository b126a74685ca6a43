"""Bytes equal the source through every read path, on a local vault and on one in an
object store (moto), with a cold and a warm cache."""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil

import numpy as np

import dsvault


def read_every_way(ds, rel: str, want: bytes) -> None:
    assert ds.read_range(rel) == want, rel
    with ds.open(rel) as f:
        assert isinstance(f, io.BufferedReader)
        assert f.read() == want
    with ds.open(rel, buffering=0) as raw:  # raw reader: readinto into our buffer
        buf = bytearray(len(want) + 5)
        n = raw.readinto(buf)
        assert bytes(buf[:n]) == want[:n]
    buf = bytearray(len(want))
    assert ds.readinto_at(rel, 0, buf) == len(want) and buf == want
    if len(want) > 10:
        mid = len(want) // 3
        assert ds.read_range(rel, mid, mid + 7) == want[mid : mid + 7]
        arr = np.zeros(len(want) - mid, dtype=np.uint8)
        assert ds.readinto_at(rel, mid, arr) == len(want) - mid
        assert arr.tobytes() == want[mid:]
        with ds.open(rel) as f:
            f.seek(-9, os.SEEK_END)
            assert f.read() == want[-9:]
            f.seek(mid)
            assert f.read(11) == want[mid : mid + 11]
            assert f.tell() == mid + 11
    h = ds.open_raw(rel)
    assert h.read_at(0) == want and h.size == len(want)
    h.close()


def check_all(ds, files: dict[str, bytes]) -> None:
    for rel, want in files.items():
        read_every_way(ds, rel, want)


def test_every_path_cold_then_warm(any_vault, source):
    _, files = source
    vault = dsvault.open_vault(any_vault)
    assert vault.datasets() == ["gold/tab@v1"]
    ds = vault.dataset("gold/tab@v1")
    check_all(ds, files)  # cold: a new handle, and (s3) an empty disk cache
    check_all(ds, files)  # warm: the same handle again
    check_all(vault.dataset("tab@v1"), files)  # warm disk cache, new memory cache


def test_text_mode_and_lines(local_vault, source):
    ds = dsvault.open_vault(local_vault).dataset("gold/tab@v1")
    with ds.open("train.csv", "r") as f:
        lines = f.readlines()
    assert "".join(lines).encode() == source[1]["train.csv"]


def test_listing_info_and_files(local_vault, source):
    _, files = source
    ds = dsvault.open_vault(local_vault).dataset("gold/tab@v1")
    assert ds.ls() == sorted(["README.txt", "big.bin", "empty", "link-to-deep", "nested", "shards", "table.parquet", "train.csv"])
    assert ds.ls("nested/deep") == ["nested/deep/er"]
    assert ds.ls("link-to-deep") == ["link-to-deep/er"]  # a symlink inside the dataset is followed
    assert ds.files() == sorted(files)
    assert ds.files("shards") == sorted(p for p in files if p.startswith("shards/"))
    info = ds.info("big.bin")
    assert info["type"] == "file" and info["size"] == len(files["big.bin"])
    import blake3_ref  # the test helper's blake3 (from the `dsvault` catalog, via the CLI)

    assert info["blake3"] == blake3_ref.content_hash(local_vault, "big.bin")
    assert ds.info("nested")["type"] == "directory"
    detail = {e["name"]: e for e in ds.ls(detail=True)}
    assert detail["link-to-deep"]["type"] == "link" and detail["link-to-deep"]["target"] == "nested/deep"
    assert len(ds.root) == 64


def test_pickle_by_value(local_vault, source):
    vault = dsvault.open_vault(local_vault)
    ds = vault.dataset("gold/tab@v1")
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2.name == ds.name and ds2.root == ds.root
    assert ds2.read_range("README.txt") == source[1]["README.txt"]
    v2 = pickle.loads(pickle.dumps(vault))
    assert v2.path == vault.path and v2.datasets() == vault.datasets()


def test_reads_release_the_gil(local_vault, source):
    """Threads reading at once all get the right bytes (reads run without the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    _, files = source
    ds = dsvault.open_vault(local_vault).dataset("gold/tab@v1")
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: ds.read_range(p), list(files) * 3))
    assert got == list(files.values()) * 3


def test_a_warm_cache_reads_no_pack_bytes_from_the_store(tmp_path, source, moto):
    """Object-store vault: a first (cold) pass GETs pack ranges into the vault's disk cache;
    a new handle then reads every file right without GETting any pack bytes again
    (test_cache_dir.py checks that it makes no HEAD either)."""
    from conftest import Moto, run

    server = Moto(tmp_path)
    log = tmp_path / "moto.log"

    def pack_gets() -> int:
        server.log.flush()
        plain = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text())  # the log colours 206 answers
        return sum(1 for line in plain.splitlines() if '"GET /warm/v/packs/' in line)

    try:
        server.create_bucket("warm")
        env = {**os.environ, **server.env}
        vault = tmp_path / "vault"
        run("--vault", vault, "init", "--store", "s3://warm/v", env=env)
        run("--vault", vault, "ingest", source[0], "--name", "tab", "--version", "v1", env=env)
        saved = {k: os.environ[k] for k in server.env}
        os.environ.update(server.env)
        try:
            shutil.rmtree(vault / "cache", ignore_errors=True)
            before = pack_gets()
            cold = dsvault.open_vault(vault).dataset("gold/tab@v1")
            for rel, want in source[1].items():
                assert cold.read_range(rel) == want
            after_cold = pack_gets()
            assert after_cold > before
            warm = dsvault.open_vault(vault).dataset("gold/tab@v1")
            for rel, want in source[1].items():
                assert warm.read_range(rel) == want
            assert pack_gets() == after_cold
        finally:
            os.environ.update(saved)
    finally:
        server.stop()
