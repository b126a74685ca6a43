"""PyTorch datasets over the files of a dsvault dataset (torch is optional and imported
only when this module is).

- :class:`FileDataset` (map-style): item ``i`` is the ``i``-th file under ``prefix`` in
  path order, as ``(path, bytes)`` or ``transform(path, bytes)``.
- :class:`ShardedFiles` (iterable): each epoch, the files in an order shuffled with
  ``seed + epoch``, split by rank (``rank``/``world_size``) and then by DataLoader worker,
  so that every file is seen exactly once per epoch across all ranks and workers.

Both pickle by value (vault folder, dataset name, root hash, options) and open the vault
lazily in each process, so DataLoader workers work under fork, forkserver and spawn; a
handle inherited through fork is never used in the child.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from typing import Any

from . import _native

try:  # optional: without torch the classes still work as plain Python datasets
    import torch.utils.data as _tud

    _MapBase: type = _tud.Dataset
    _IterBase: type = _tud.IterableDataset
except ImportError:  # pragma: no cover - exercised where torch is not installed
    _tud = None
    _MapBase = object
    _IterBase = object


def _get_worker_info():
    """``torch.utils.data.get_worker_info()``, or None without torch (tests replace this)."""
    return _tud.get_worker_info() if _tud is not None else None


class _Source:
    """What a dataset needs to reopen itself in any process, and the handle of this one."""

    def __init__(self, vault, dataset: str, open_args: dict[str, Any]):
        if isinstance(vault, _native.Vault):
            # Reopened elsewhere with the options it was opened with (unless overridden).
            open_args = {**vault.options, **open_args}
            vault = vault.path
        self.vault_path = os.fspath(vault)
        self.open_args = open_args
        ds = self._open(dataset)
        self.name = ds.name
        self.root = ds.root
        self._handle = (os.getpid(), ds)

    def _open(self, name: str):
        return _native.open_vault(self.vault_path, **self.open_args).dataset(name)

    def dataset(self):
        """This process's handle (opened on first use in each process)."""
        handle = self._handle
        if handle is None or handle[0] != os.getpid():
            ds = self._open(self.name)
            if ds.root != self.root:
                raise RuntimeError(f"{self.name} now has root {ds.root}, not {self.root}")
            handle = self._handle = (os.getpid(), ds)
        return handle[1]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = None
        return state


class FileDataset(_MapBase):
    """Map-style dataset: the files of ``dataset`` under ``prefix``, in path order."""

    def __init__(
        self,
        vault,
        dataset: str,
        prefix: str = "",
        transform: Callable[[str, bytes], Any] | None = None,
        **open_args: Any,
    ):
        self._source = _Source(vault, dataset, open_args)
        self.prefix = prefix
        self.transform = transform
        self.files: list[str] = self._source.dataset().files(prefix)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        data = self._source.dataset().read_range(path)
        return self.transform(path, data) if self.transform else (path, data)


class ShardedFiles(_IterBase):
    """Iterable dataset: each epoch, every file under ``prefix`` once across all ranks and
    DataLoader workers, in an order shuffled with ``seed + epoch`` (``shuffle=False``: path
    order). Call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``."""

    def __init__(
        self,
        vault,
        dataset: str,
        prefix: str = "",
        transform: Callable[[str, bytes], Any] | None = None,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        **open_args: Any,
    ):
        self._source = _Source(vault, dataset, open_args)
        self.prefix = prefix
        self.transform = transform
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in 0..{self.world_size - 1}")
        self.files: list[str] = self._source.dataset().files(prefix)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self) -> list[str]:
        """The files this rank and worker read this epoch, in reading order."""
        order = list(self.files)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        info = _get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return order[self.rank :: self.world_size][worker::workers]

    def __iter__(self) -> Iterator[Any]:
        ds = self._source.dataset()
        for path in self.shard():
            data = ds.read_range(path)
            yield self.transform(path, data) if self.transform else (path, data)

    def __len__(self) -> int:
        """Files this rank reads per epoch (over all its workers)."""
        return len(range(self.rank, len(self.files), self.world_size))
