"""Run a dataset the way a DataLoader worker does, in a child process (fork or spawn):
importable by module name so that spawned children can unpickle the target."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import dsvault.torch as dt


def iterate_as_worker(dataset, worker: int, workers: int, queue) -> None:
    """Iterate `dataset` as DataLoader worker `worker` of `workers` and send back what it saw."""
    dt._get_worker_info = lambda: SimpleNamespace(id=worker, num_workers=workers, seed=0)
    try:
        seen = [(path, hashlib.sha256(data).hexdigest()) for path, data in dataset]
        queue.put((worker, seen))
    except BaseException as e:  # reported to the parent, which fails the test
        queue.put((worker, repr(e)))


def index_as_worker(dataset, worker: int, workers: int, queue) -> None:
    """Fetch the indices a DataLoader would give worker `worker` (round robin)."""
    try:
        seen = []
        for i in range(worker, len(dataset), workers):
            path, data = dataset[i]
            seen.append((path, hashlib.sha256(data).hexdigest()))
        queue.put((worker, seen))
    except BaseException as e:
        queue.put((worker, repr(e)))


def use_inherited(dataset, queue) -> None:
    """Use a native handle inherited through fork: must fail clearly, not hang."""
    try:
        dataset.read_range("README.txt")
        queue.put("no error")
    except BaseException as e:
        queue.put(f"{type(e).__name__}: {e}")
