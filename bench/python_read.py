"""Reading the bench dataset from Python, side by side in one run: dsvault's Python API,
open() on the FUSE mount, open() on the native tree, and (large files) `dsvault cat`.
Called by bench/python.sh, which builds, generates, ingests and mounts; prints a markdown
table. Run as root for the page-cache-dropped passes."""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import dsvault

BIG = ["tables/metadata.csv", "tables/annotations.jsonl", "blobs/features.bin", "blobs/shard-0000.bin"]
STEP = 8 << 20
# The file cache of the "file_cache" row: room for every small file of the bench (877 MB at
# scale 1), as the page cache has room for them in the mount's warm pass.
FILE_CACHE = 1 << 30


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def read_small_open(root: Path, files: list[str]) -> None:
    for p in files:
        with open(root / p, "rb") as f:
            f.read()


def read_big_open(root: Path, buf: bytearray) -> None:
    for p in BIG:
        with open(root / p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def read_small_api(ds, files: list[str]) -> None:
    for p in files:
        ds.read_range(p)


def read_big_api(ds, buf: bytearray) -> None:
    for p in BIG:
        with ds.open(p, buffering=0) as f:
            while f.readinto(buf):
                pass


def read_big_cat(dsvault_bin: str, vault: str) -> None:
    for p in BIG:
        subprocess.run([dsvault_bin, "--vault", vault, "cat", "gold/bench@v1", p], stdout=subprocess.DEVNULL, check=True)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--mount", required=True, type=Path)
    ap.add_argument("--vault", required=True)
    ap.add_argument("--dsvault", required=True)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()

    small = sorted(str(p.relative_to(a.data)) for p in (a.data / "images").rglob("*") if p.is_file())
    big_bytes = sum((a.data / p).stat().st_size for p in BIG)
    mib = big_bytes / 1048576
    buf = bytearray(STEP)

    def api_small():
        ds = dsvault.open_vault(a.vault).dataset("gold/bench@v1")
        read_small_api(ds, small)

    def api_big():
        ds = dsvault.open_vault(a.vault).dataset("gold/bench@v1")
        read_big_api(ds, buf)

    # One Dataset with a file cache, reused by every pass of the row (epochs of a training
    # loop): "dropped" is its first pass (cache empty), "warm" a later one (cache full).
    cached = {}

    def api_small_file_cache(mode):
        if mode == "dropped" or "ds" not in cached:
            cached["ds"] = dsvault.open_vault(a.vault, file_cache=FILE_CACHE).dataset("gold/bench@v1")
        read_small_api(cached["ds"], small)

    tools = {
        "native open()": (lambda: read_small_open(a.data, small), lambda: read_big_open(a.data, buf)),
        "mount open()": (lambda: read_small_open(a.mount, small), lambda: read_big_open(a.mount, buf)),
        "dsvault Python API": (api_small, api_big),
        f"dsvault Python API, file_cache={FILE_CACHE >> 20} MiB": ("file_cache", None),
        "dsvault cat": (None, lambda: read_big_cat(a.dsvault, a.vault)),
    }
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(a.repeat):
        for mode in ("dropped", "warm"):
            for name, (small_fn, big_fn) in tools.items():
                if small_fn == "file_cache":
                    small_fn = lambda mode=mode: api_small_file_cache(mode)  # noqa: E731
                for kind, fn in (("small", small_fn), ("big", big_fn)):
                    if fn is None:
                        continue
                    if mode == "dropped":
                        drop_caches()
                    else:
                        fn()  # warm the page cache (and the mount's) first
                    results.setdefault((name, mode, kind), []).append(timed(fn))

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    def rate(name, mode, kind):
        t = results.get((name, mode, kind))
        if not t:
            return None
        return (len(small) if kind == "small" else mib) / median(t)

    print(f"Dataset: bench scale as generated: {len(small)} small files, large files {mib:.0f} MiB (4 files); "
          f"one Python thread; median of {a.repeat} run(s).\n")
    print("| reader | cache | small files/s | large MiB/s |")
    print("|---|---|---|---|")
    for mode in ("dropped", "warm"):
        for name in tools:
            s, b = rate(name, mode, "small"), rate(name, mode, "big")
            print(f"| {name} | {mode} | {'' if s is None else f'{s:.0f}'} | {'' if b is None else f'{b:.0f}'} |")
    print("\n| target | cache | ratio | goal |")
    print("|---|---|---|---|")
    fc = f"dsvault Python API, file_cache={FILE_CACHE >> 20} MiB"
    for mode in ("dropped", "warm"):
        r1 = rate("dsvault Python API", mode, "small") / rate("mount open()", mode, "small")
        r3 = rate(fc, mode, "small") / rate("mount open()", mode, "small")
        r2 = rate("dsvault Python API", mode, "big") / rate("dsvault cat", mode, "big")
        print(f"| small files, Python API / mount open() | {mode} | {r1:.2f} | ≥ 1.5 {'met' if r1 >= 1.5 else 'NOT met'} |")
        print(f"| small files, Python API with file_cache / mount open() | {mode} | {r3:.2f} | ≥ 1.5 {'met' if r3 >= 1.5 else 'NOT met'} |")
        print(f"| large files, Python API / dsvault cat | {mode} | {r2:.2f} | ≥ 0.9 {'met' if r2 >= 0.9 else 'NOT met'} |")


if __name__ == "__main__":
    main()
