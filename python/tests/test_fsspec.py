"""dsvault:// through fsspec, pandas and pyarrow."""

from __future__ import annotations

import pickle

import fsspec
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import dsvault
from dsvault.fs import DsvaultFileSystem


def test_protocol_is_registered_by_entry_point():
    assert fsspec.get_filesystem_class("dsvault") is DsvaultFileSystem


def test_bytes_equal_source(any_vault, source):
    _, files = source
    fs = fsspec.filesystem("dsvault", vault=str(any_vault), skip_instance_cache=True)
    for rel, want in files.items():
        url = f"dsvault://gold/tab@v1/{rel}"
        assert fs.cat_file(url) == want
        with fs.open(url, "rb") as f:
            assert f.read() == want
        with fsspec.open(url, "rb", vault=str(any_vault)) as f:
            assert f.read() == want
    big = files["big.bin"]
    assert fs.cat_file("gold/tab@v1/big.bin", 10, 20) == big[10:20]
    assert fs.cat_file("gold/tab@v1/big.bin", -5) == big[-5:]
    assert fs.cat_ranges(["gold/tab@v1/big.bin"] * 2 + ["tab@v1/README.txt"], [0, 4_000_000, 2], [3, 4_000_010, None]) == [
        big[:3],
        big[4_000_000:4_000_010],
        files["README.txt"][2:],
    ]


def test_listing_and_info(local_vault, source):
    _, files = source
    vault = dsvault.open_vault(local_vault)
    fs = fsspec.filesystem("dsvault", vault=vault)  # an open Vault works as well as its folder
    assert fs.ls("", detail=False) == ["derived", "gold"]
    assert fs.ls("gold", detail=False) == ["gold/tab@v1"]
    assert fs.ls("dsvault://gold/tab@v1/nested", detail=False) == ["gold/tab@v1/nested/deep"]
    # A symlinked folder is walked like on a local file system.
    want = sorted([f"gold/tab@v1/{p}" for p in files] + ["gold/tab@v1/link-to-deep/er/blob.bin"])
    assert sorted(fs.find("gold/tab@v1")) == want
    link = fs.info("gold/tab@v1/link-to-deep")
    assert link["type"] == "directory"
    assert [e for e in fs.ls("gold/tab@v1") if e["name"].endswith("link-to-deep")][0]["islink"]
    info = fs.info("gold/tab@v1/big.bin")
    assert info["type"] == "file" and info["size"] == len(files["big.bin"])
    assert info["etag"] == info["blake3"] and len(info["etag"]) == 64
    assert fs.info("gold/tab@v1")["type"] == "directory"
    assert fs.isdir("gold") and fs.isfile("gold/tab@v1/train.csv") and not fs.exists("gold/tab@v1/nope")
    assert fs.ukey("gold/tab@v1/big.bin") == info["etag"]


def test_pandas_and_pyarrow(any_vault, source):
    root, _ = source
    opts = {"vault": str(any_vault)}
    want = pd.read_csv(root / "train.csv")
    pd.testing.assert_frame_equal(pd.read_csv("dsvault://gold/tab@v1/train.csv", storage_options=opts), want)
    pd.testing.assert_frame_equal(pd.read_parquet("dsvault://gold/tab@v1/table.parquet", storage_options=opts), want)
    fs = fsspec.filesystem("dsvault", vault=str(any_vault))
    table = pq.read_table("gold/tab@v1/table.parquet", filesystem=fs)
    assert table.to_pandas().equals(want)
    ds = pads.dataset("gold/tab@v1/table.parquet", filesystem=fs, format="parquet")
    assert ds.to_table().to_pandas().equals(want)
    csvs = pads.dataset("gold/tab@v1", filesystem=fs, format="csv", exclude_invalid_files=False,
                        partitioning=None, ignore_prefixes=["big", "empty", "README", "nested", "shards", "table", "link"])
    assert csvs.to_table().to_pandas().equals(want)


def test_pyarrow_dataset_of_a_whole_dataset(tmp_path):
    """The issue's form: `pyarrow.dataset.dataset("gold/NAME@VERSION", filesystem=...)` over a
    dataset of Parquet files (hive-partitioned folders)."""
    from conftest import run

    src = tmp_path / "pq"
    want = pd.DataFrame({"id": range(100), "v": [i * 2 for i in range(100)]})
    for part in (0, 1):
        folder = src / f"part={part}"
        folder.mkdir(parents=True)
        want[want.id % 2 == part].to_parquet(folder / "data.parquet", index=False)
    vault = tmp_path / "vault"
    run("--vault", vault, "ingest", src, "--name", "pq", "--version", "v1")
    fs = fsspec.filesystem("dsvault", vault=str(vault))
    got = pads.dataset("gold/pq@v1", filesystem=fs, partitioning="hive").to_table().to_pandas()
    got = got.sort_values("id").reset_index(drop=True)
    assert got[["id", "v"]].equals(want)
    assert sorted(got["part"].astype(int).unique()) == [0, 1]


def test_pickles_by_value(local_vault, source):
    fs = fsspec.filesystem("dsvault", vault=str(local_vault))
    fs2 = pickle.loads(pickle.dumps(fs))
    assert fs2.cat_file("gold/tab@v1/README.txt") == source[1]["README.txt"]


def test_writes_are_refused(local_vault):
    fs = fsspec.filesystem("dsvault", vault=str(local_vault))
    for call in (
        lambda: fs.open("gold/tab@v1/new.txt", "wb"),
        lambda: fs.open("gold/tab@v1/README.txt", "ab"),
        lambda: fs.pipe_file("gold/tab@v1/x", b"x"),
        lambda: fs.rm("gold/tab@v1/README.txt"),
        lambda: fs.mkdir("gold/tab@v1/d"),
        lambda: fs.touch("gold/tab@v1/t"),
        lambda: fs.mv("gold/tab@v1/README.txt", "gold/tab@v1/R"),
        lambda: pd.DataFrame({"a": [1]}).to_csv("dsvault://gold/tab@v1/out.csv", storage_options={"vault": str(local_vault)}),
    ):
        with pytest.raises(PermissionError):
            call()


def test_errors(local_vault):
    fs = fsspec.filesystem("dsvault", vault=str(local_vault))
    with pytest.raises(FileNotFoundError):
        fs.cat_file("gold/tab@v1/nope.txt")
    with pytest.raises(FileNotFoundError):
        fs.cat_file("gold/tab@v9/README.txt")
    with pytest.raises(IsADirectoryError):
        fs.cat_file("gold/tab@v1/nested")
    with pytest.raises(ValueError):
        fs.cat_file("gold/tab@v1/../tab@v1/README.txt")
    with pytest.raises(FileNotFoundError):
        pd.read_csv("dsvault://gold/tab@v1/missing.csv", storage_options={"vault": str(local_vault)})
