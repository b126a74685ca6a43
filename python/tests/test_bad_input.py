"""Bad input gets a clear Python exception, never wrong bytes; damage is IntegrityError."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

import dsvault
from conftest import run


@pytest.fixture(scope="module")
def ds(local_vault):
    return dsvault.open_vault(local_vault).dataset("gold/tab@v1")


def test_unknown_vault_dataset_or_version(local_vault, tmp_path):
    vault = dsvault.open_vault(local_vault)
    with pytest.raises(FileNotFoundError, match="no dataset gold/nope@v1"):
        vault.dataset("gold/nope@v1")
    with pytest.raises(FileNotFoundError, match="tab@v2"):
        vault.dataset("tab@v2")
    with pytest.raises(ValueError):
        vault.dataset("gold/../x@v1")
    with pytest.raises(ValueError):
        vault.dataset("no-version")
    with pytest.raises(FileNotFoundError, match="no vault"):
        dsvault.open_vault(tmp_path / "nothing-here")


@pytest.mark.parametrize("path", ["../x", "nested/../../x", "/etc/passwd", "/README.txt", "a\0b"])
def test_paths_leaving_the_dataset_are_refused(ds, path):
    for call in (ds.read_range, ds.info, ds.ls, ds.open, ds.files):
        with pytest.raises(ValueError, match="not a path inside a dataset"):
            call(path)
    with pytest.raises(ValueError):
        ds.readinto_at(path, 0, bytearray(4))


def test_absent_folders_and_wrong_kinds(ds):
    with pytest.raises(FileNotFoundError) as e:
        ds.read_range("nope.txt")
    assert e.value.errno == 2 and "gold/tab@v1:nope.txt" in str(e.value)
    with pytest.raises(FileNotFoundError):
        ds.info("nested/nope")
    with pytest.raises(IsADirectoryError):
        ds.open("nested")
    with pytest.raises(IsADirectoryError):
        ds.read_range("")
    with pytest.raises(NotADirectoryError):
        ds.ls("README.txt")


def test_negative_offsets_and_sizes(ds):
    with pytest.raises(ValueError, match="offset must be >= 0"):
        ds.readinto_at("big.bin", -1, bytearray(4))
    with pytest.raises(ValueError, match="start must be >= 0"):
        ds.read_range("big.bin", -3)
    with pytest.raises(ValueError):
        ds.read_range("big.bin", 0, -1)
    h = ds.open_raw("big.bin")
    with pytest.raises(ValueError):
        h.read_at(-5)
    with pytest.raises(ValueError):
        h.read_at(0, -1)
    with ds.open("big.bin") as f, pytest.raises(ValueError):
        f.seek(-10)
    h.close()


def test_offsets_past_the_end_read_nothing(ds, source):
    size = len(source[1]["big.bin"])
    assert ds.read_range("big.bin", size + 100) == b""
    assert ds.readinto_at("big.bin", size + 1, bytearray(10)) == 0
    assert ds.read_range("big.bin", 5, 3) == b""


def test_read_only_and_non_contiguous_buffers(ds):
    for buf in (b"immutable", memoryview(bytearray(8)).toreadonly(), np.zeros(8, np.uint8)[::1].copy().view()):
        if isinstance(buf, np.ndarray):
            buf.flags.writeable = False
        with pytest.raises(TypeError, match="read-only"):
            ds.readinto_at("README.txt", 0, buf)
    strided = np.zeros(16, np.uint8)[::2]
    with pytest.raises(BufferError, match="C-contiguous"):
        ds.readinto_at("README.txt", 0, strided)
    with pytest.raises(TypeError, match="bytes-like"):
        ds.readinto_at("README.txt", 0, "a str")
    # Any writable contiguous buffer works, whatever its item type.
    floats = np.zeros(2, np.float64)
    assert ds.readinto_at("README.txt", 0, floats) == 16


def test_write_modes_are_refused(ds):
    for mode in ("wb", "w", "ab", "r+b", "xb", "rb+"):
        with pytest.raises(PermissionError) as e:
            ds.open("README.txt", mode)
        assert "read-only" in str(e.value)
    with ds.open("README.txt") as f:
        with pytest.raises(OSError):  # io.UnsupportedOperation
            f.write(b"x")


def test_closed_files(ds):
    f = ds.open("README.txt")
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f.read()
    raw = ds.open_raw("README.txt")
    raw.close()
    raw.close()  # twice is harmless
    assert raw.closed
    with pytest.raises(ValueError, match="closed"):
        raw.read_at(0)
    with pytest.raises(ValueError, match="closed"):
        raw.readinto_at(0, bytearray(3))


def test_a_flipped_pack_byte_is_an_integrity_error(tmp_path, source):
    """A byte flipped in a pack: reads of the damaged file raise IntegrityError (an
    OSError) on every path; other files still read right."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(3_000_000)  # incompressible: stored raw, so a flipped byte is in a chunk
    (src / "victim.bin").write_bytes(data)
    (src / "ok.txt").write_bytes(b"fine\n")
    vault = tmp_path / "vault"
    run("--vault", vault, "ingest", src, "--name", "dmg", "--version", "v1")
    packs = sorted((vault / "store/packs").rglob("*.pack"))
    assert len(packs) == 1
    pack = packs[0]
    pack.chmod(stat.S_IRUSR | stat.S_IWUSR)
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    pack.write_bytes(bytes(raw))
    ds = dsvault.open_vault(vault).dataset("gold/dmg@v1")
    calls = [
        lambda: ds.read_range("victim.bin"),
        lambda: ds.readinto_at("victim.bin", 0, bytearray(len(data))),
        lambda: ds.open("victim.bin").read(),
    ]
    for call in calls:
        with pytest.raises(dsvault.IntegrityError) as e:
            call()
        assert isinstance(e.value, OSError) and "damaged" in str(e.value) and "gold/dmg@v1:victim.bin" in str(e.value)
    import fsspec

    with pytest.raises(dsvault.IntegrityError):
        fsspec.filesystem("dsvault", vault=str(vault)).cat_file("gold/dmg@v1/victim.bin")
    assert ds.read_range("ok.txt") == b"fine\n"
