"""PyTorch datasets: splitting by rank and worker, seeded shuffles, and two-worker loading
under fork and spawn, each file exactly once.

torch cannot be installed on the test machines (only PyPI is reachable, whose torch pulls
gigabytes of CUDA libraries), so the workers here are processes started the way a
DataLoader starts them, with `dsvault.torch._get_worker_info` standing in for
`torch.utils.data.get_worker_info`."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import pickle
import time
from types import SimpleNamespace

import pytest

import dsvault
import dsvault.torch as dt
import loader_helpers


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_workers(ctx_name: str, target, dataset, workers: int = 2):
    ctx = mp.get_context(ctx_name)
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(dataset, w, workers, queue)) for w in range(workers)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for w, seen in results.items():
        assert isinstance(seen, list), f"worker {w} failed: {seen}"
    return results


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_two_workers_see_every_file_once(any_vault, source, method):
    _, files = source
    want = {p: digest(d) for p, d in files.items()}
    ds = dt.ShardedFiles(any_vault, "gold/tab@v1", seed=3)
    ds.set_epoch(1)
    results = run_workers(method, loader_helpers.iterate_as_worker, ds)
    seen = [item for w in sorted(results) for item in results[w]]
    assert sorted(p for p, _ in seen) == sorted(want)  # every file, exactly once
    assert dict(seen) == want  # with its bytes
    assert set(p for p, _ in results[0]).isdisjoint(p for p, _ in results[1])

    m = dt.FileDataset(any_vault, "gold/tab@v1")
    results = run_workers(method, loader_helpers.index_as_worker, m)
    seen = [item for w in sorted(results) for item in results[w]]
    assert len(seen) == len(want) and dict(seen) == want


def test_prefix_and_transform(local_vault, source):
    _, files = source
    m = dt.FileDataset(local_vault, "gold/tab@v1", prefix="shards", transform=lambda p, d: (p, len(d)))
    assert len(m) == 40
    assert m[3] == ("shards/s03.txt", len(files["shards/s03.txt"]))
    assert m[-1][0] == "shards/s39.txt"
    with pytest.raises(IndexError):
        m[40]
    it = dt.ShardedFiles(local_vault, "gold/tab@v1", prefix="nested", shuffle=False)
    assert [p for p, _ in it] == ["nested/deep/er/blob.bin"]


def test_shuffle_is_seeded_per_epoch_and_split_by_rank_and_worker(local_vault, monkeypatch):
    def shards(rank, world, worker, workers, epoch, seed=5):
        monkeypatch.setattr(dt, "_get_worker_info", lambda: SimpleNamespace(id=worker, num_workers=workers))
        d = dt.ShardedFiles(local_vault, "gold/tab@v1", seed=seed, rank=rank, world_size=world)
        d.set_epoch(epoch)
        return d.shard()

    all_files = dt.FileDataset(local_vault, "gold/tab@v1").files
    parts = [shards(r, 2, w, 3, epoch=0) for r in range(2) for w in range(3)]
    flat = [p for part in parts for p in part]
    assert sorted(flat) == sorted(all_files) and len(flat) == len(set(flat))
    assert shards(1, 2, 2, 3, epoch=0) == shards(1, 2, 2, 3, epoch=0)  # same seed and epoch, same order
    assert shards(0, 1, 0, 1, epoch=0) != shards(0, 1, 0, 1, epoch=1)  # a new epoch reshuffles
    assert shards(0, 1, 0, 1, epoch=0) != shards(0, 1, 0, 1, epoch=0, seed=6)
    assert sorted(shards(0, 1, 0, 1, epoch=7)) == sorted(all_files)
    d = dt.ShardedFiles(local_vault, "gold/tab@v1", rank=1, world_size=2)
    assert len(d) == len(all_files) // 2
    with pytest.raises(ValueError):
        dt.ShardedFiles(local_vault, "gold/tab@v1", rank=2, world_size=2)


def test_datasets_pickle_without_their_handle(local_vault):
    d = dt.FileDataset(local_vault, "gold/tab@v1")
    blob = pickle.dumps(d)
    assert len(blob) < 10_000  # names and options, not a handle or data
    d2 = pickle.loads(blob)
    assert d2[0] == d[0]


def test_a_handle_used_in_a_forked_child_fails_clearly(local_vault):
    ds = dsvault.open_vault(local_vault).dataset("gold/tab@v1")
    ds.read_range("README.txt")  # the parent's threads and connections are in use
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=loader_helpers.use_inherited, args=(ds, queue))
    start = time.time()
    p.start()
    msg = queue.get(timeout=60)
    p.join(timeout=60)
    assert time.time() - start < 30
    assert msg.startswith("ForkedHandleError:"), msg
    assert f"opened in process {os.getpid()}" in msg and "open it again in the child" in msg
    assert issubclass(dsvault.ForkedHandleError, RuntimeError)
    # The parent's handle still works.
    assert ds.read_range("README.txt") == b"a small dataset\n"


def test_os_fork_child_can_open_its_own(local_vault):
    ds = dsvault.open_vault(local_vault).dataset("gold/tab@v1")
    ds.read_range("big.bin", 0, 10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            try:
                ds.info("README.txt")
            except dsvault.ForkedHandleError:
                mine = dsvault.open_vault(ds.vault_path).dataset(ds.name)
                code = 0 if mine.read_range("README.txt") == b"a small dataset\n" else 2
        finally:
            del ds  # dropping the inherited handle must not hang the child either
            os._exit(code)
    deadline = time.time() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        assert time.time() < deadline, "the forked child hung"
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
