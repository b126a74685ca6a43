"""`open_vault(..., file_cache=N)`: whole files, verified once, served from memory after;
bounded by N bytes; off by default."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest

import dsvault


@pytest.fixture()
def vault(tmp_path, source):
    """A vault of its own: the tests take its packs away."""
    from conftest import run

    v = tmp_path / "vault"
    run("--vault", v, "ingest", source[0], "--name", "tab", "--version", "v1")
    return v


@contextlib.contextmanager
def packs_zeroed(vault: Path):
    """Every pack's bytes overwritten with zeros in place (so open descriptors see it too),
    then put back: nothing can be read from the store meanwhile."""
    saved = {}
    for pack in (vault / "store/packs").rglob("*.pack"):
        saved[pack] = pack.read_bytes()
        pack.chmod(stat.S_IRUSR | stat.S_IWUSR)
        with open(pack, "r+b") as f:
            f.write(bytes(len(saved[pack])))
            os.fsync(f.fileno())
    assert saved, "no packs"
    try:
        yield
    finally:
        for pack, data in saved.items():
            with open(pack, "r+b") as f:
                f.write(data)


def small(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if 0 < len(v) < 1_000_000}


def test_files_read_whole_are_served_from_memory(vault, source):
    files = small(source[1])
    ds = dsvault.open_vault(vault, file_cache=64 << 20).dataset("gold/tab@v1")
    assert ds.cache_info()["file_cache"] == 0
    for rel, want in files.items():
        assert ds.read_range(rel) == want
    assert ds.cache_info()["file_cache"] == sum(map(len, files.values()))
    # Without its packs the vault can serve nothing, but the files kept in memory still
    # read right by every path (no pack read, no second hash).
    with packs_zeroed(vault):
        for rel, want in files.items():
            assert ds.read_range(rel) == want
            assert ds.read_range(rel, 3, 11) == want[3:11]
            with ds.open(rel) as f:
                assert f.read() == want
            buf = bytearray(len(want))
            assert ds.readinto_at(rel, 0, buf) == len(want) and buf == want
        with pytest.raises(dsvault.IntegrityError):
            ds.read_range("big.bin")  # never read whole: not kept
        plain = dsvault.open_vault(vault).dataset("gold/tab@v1")  # file_cache off (default)
        with pytest.raises(dsvault.IntegrityError):
            plain.read_range(next(iter(files)))


def test_the_file_cache_is_bounded_and_keeps_the_most_recent(vault, source):
    files = small(source[1])
    bound = 400_000
    ds = dsvault.open_vault(vault, file_cache=bound).dataset("gold/tab@v1")
    for _ in range(2):
        for rel, want in files.items():
            assert ds.read_range(rel) == want
            assert ds.cache_info()["file_cache"] <= bound
    assert ds.read_range("big.bin") == source[1]["big.bin"]  # larger than the bound: not kept
    assert 0 < ds.cache_info()["file_cache"] <= bound
    last = list(files)[-1]
    with packs_zeroed(vault):
        assert ds.read_range(last) == files[last]  # the most recently read is still there


def test_partial_reads_do_not_fill_it_and_options_travel(vault, source):
    import pickle

    ds = dsvault.open_vault(vault, file_cache=8 << 20).dataset("gold/tab@v1")
    assert ds.read_range("train.csv", 0, 100) == source[1]["train.csv"][:100]
    assert ds.cache_info()["file_cache"] == 0
    again = pickle.loads(pickle.dumps(ds))
    assert again.read_range("train.csv") == source[1]["train.csv"]
    assert again.cache_info()["file_cache"] == len(source[1]["train.csv"])
    v = pickle.loads(pickle.dumps(dsvault.open_vault(vault, file_cache=123)))
    assert v.options["file_cache"] == 123
