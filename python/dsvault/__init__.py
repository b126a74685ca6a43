"""Read dsvault datasets from Python, without a FUSE mount.

The same verified, cached reads as ``dsvault mount``: every byte is checked against its
blake3 hash before it is returned, and damage raises :class:`IntegrityError` instead of
returning wrong bytes. Datasets are read-only.

>>> import dsvault
>>> vault = dsvault.open_vault("/data/vault")
>>> ds = vault.dataset("gold/mnist@v1")
>>> with ds.open("train/labels.csv") as f:
...     header = f.readline()

``dsvault://KIND/NAME@VERSION/path`` URLs work with fsspec, pandas and pyarrow
(see :mod:`dsvault.fs`); :mod:`dsvault.torch` has PyTorch datasets.
"""

from ._native import (
    Dataset,
    File,
    ForkedHandleError,
    IntegrityError,
    Vault,
    open_vault,
)

__all__ = ["Dataset", "File", "ForkedHandleError", "IntegrityError", "Vault", "open_vault"]
