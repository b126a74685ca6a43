"""``dsvault://`` for fsspec: a read-only filesystem over the vault's datasets.

Paths are ``KIND/NAME@VERSION/path/in/dataset`` (``NAME@VERSION/...`` when the name is
unambiguous); ``""`` lists ``gold`` and ``derived``, ``gold`` lists the ``gold/NAME@VERSION``
datasets. Registered for the ``dsvault`` protocol through the ``fsspec.specs`` entry point::

    pandas.read_csv("dsvault://gold/tab@v1/train.csv", storage_options={"vault": "/data/vault"})
    pyarrow.dataset.dataset("gold/tab@v1", filesystem=fsspec.filesystem("dsvault", vault="/data/vault"))

``vault`` is the vault's folder or an open :class:`dsvault.Vault`. Every process opens the
vault itself (the instance pickles by value), so fork, forkserver and spawn workers work.
``info()`` carries each file's content hash as ``etag`` (and ``blake3``), so caches keyed
on it follow content. Every write raises ``PermissionError``.
"""

from __future__ import annotations

import errno
import os
import threading

from fsspec.spec import AbstractFileSystem

from . import _native

_KINDS = ("gold", "derived")


def _read_only(path) -> PermissionError:
    return PermissionError(errno.EROFS, "dsvault datasets are read-only (write into a workspace instead)", path)


class DsvaultFileSystem(AbstractFileSystem):
    """Read-only fsspec filesystem over a dsvault vault."""

    protocol = "dsvault"
    root_marker = ""

    def __init__(
        self,
        vault=None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int | None = None,
        memory_cache: int | None = None,
        file_cache: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        given = {"cache_dir": cache_dir, "cache_size": cache_size, "memory_cache": memory_cache, "file_cache": file_cache}
        self._open_args = {k: v for k, v in given.items() if v is not None}
        if isinstance(vault, _native.Vault):
            # Reopened in each process with the options it was opened with (unless overridden).
            self._open_args = {**vault.options, **self._open_args}
            vault = vault.path
        if self._open_args.get("cache_dir") is not None:
            self._open_args["cache_dir"] = os.fspath(self._open_args["cache_dir"])
        self._vault_path = os.fspath(vault) if vault is not None else os.environ.get("DSVAULT_DIR")
        if self._vault_path is None:
            raise ValueError("dsvault filesystem: pass vault=<the vault's folder> (or set DSVAULT_DIR)")
        self._lock = threading.Lock()
        self._state = None  # (pid, vault, {dataset name: Dataset})

    # ---- vault and datasets, opened once per process ---------------------------------

    def _handles(self):
        state = self._state
        if state is None or state[0] != os.getpid():
            with self._lock:
                state = self._state
                if state is None or state[0] != os.getpid():
                    vault = _native.open_vault(self._vault_path, **self._open_args)
                    state = self._state = (os.getpid(), vault, {})
        return state

    def _dataset(self, name: str):
        _, vault, datasets = self._handles()
        ds = datasets.get(name)
        if ds is None:
            ds = datasets[name] = vault.dataset(name)
        return ds

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = os.fspath(path)
        if path.startswith("dsvault://"):
            path = path[len("dsvault://") :]
        elif path.startswith("dsvault::"):
            path = path[len("dsvault::") :]
        return path.strip("/")

    def _split(self, path: str):
        """(dataset name or None, path inside it, the parts before a dataset when None)."""
        path = self._strip_protocol(path)
        if path.startswith("/") or path == "..":
            raise ValueError(f"{path!r}: give a path relative to the vault (KIND/NAME@VERSION/...)")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not parts:
            return None, "", parts
        if parts[0] in _KINDS:
            if len(parts) == 1:
                return None, "", parts
            return f"{parts[0]}/{parts[1]}", "/".join(parts[2:]), parts
        if "@" in parts[0]:
            return parts[0], "/".join(parts[1:]), parts
        raise FileNotFoundError(errno.ENOENT, "no such dataset (paths are KIND/NAME@VERSION/...)", path)

    # ---- reading -----------------------------------------------------------------------

    def ls(self, path, detail=True, **kwargs):
        name, inner, parts = self._split(path)
        if name is None:
            entries = self._ls_vault(parts)
        else:
            ds = self._dataset(name)
            entries = [self._with_name(self._follow(ds, e), f"{name}/{e['name']}") for e in ds.ls(inner, detail=True)]
        return entries if detail else [e["name"] for e in entries]

    def _ls_vault(self, parts):
        _, vault, _ = self._handles()
        names = vault.datasets()
        if not parts:
            kinds = sorted({n.split("/")[0] for n in names} | set(_KINDS))
            return [{"name": k, "type": "directory", "size": 0} for k in kinds]
        kind = parts[0]
        return [{"name": n, "type": "directory", "size": 0} for n in names if n.startswith(kind + "/")]

    def info(self, path, **kwargs):
        name, inner, parts = self._split(path)
        if name is None:
            if len(parts) > 1 or (parts and parts[0] not in _KINDS):
                raise FileNotFoundError(errno.ENOENT, "no such file or folder", path)
            return {"name": "/".join(parts), "type": "directory", "size": 0}
        ds = self._dataset(name)
        entry = ds.info(inner)
        full = self._strip_protocol(path)
        out = self._with_name(entry, full)
        if not inner:
            out["etag"] = ds.root
        return out

    @staticmethod
    def _follow(ds, entry):
        """A symlink's entry as its target's (like fsspec's local filesystem), marked
        ``islink``; a link to nothing inside the dataset stays type "other"."""
        if entry["type"] != "link":
            return entry
        try:
            target = ds.info(entry["name"])
        except FileNotFoundError:
            return {**entry, "type": "other", "islink": True, "destination": entry.get("target")}
        return {**target, "name": entry["name"], "islink": True, "destination": entry.get("target")}

    @staticmethod
    def _with_name(entry, name):
        entry = dict(entry)
        entry["name"] = name
        if "blake3" in entry:
            entry["etag"] = entry["blake3"]
        return entry

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if any(c in mode for c in "wax+"):
            raise _read_only(path)
        name, inner, _ = self._split(path)
        if name is None:
            raise IsADirectoryError(errno.EISDIR, "is a folder", path)
        return self._dataset(name).open(inner, "rb")

    def cat_file(self, path, start=None, end=None, **kwargs):
        name, inner, _ = self._split(path)
        if name is None:
            raise IsADirectoryError(errno.EISDIR, "is a folder", path)
        ds = self._dataset(name)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = ds.info(inner)["size"]
            start = max(size + start, 0) if start is not None and start < 0 else start
            end = max(size + end, 0) if end is not None and end < 0 else end
        start = start or 0
        if end is not None and end <= start:
            ds.info(inner)  # still fails for a missing path or a folder
            return b""
        return ds.read_range(inner, start, end)

    def cat_ranges(self, paths, starts, ends, max_gap=None, on_error="return", **kwargs):
        if not (len(paths) == len(starts) == len(ends)):
            raise ValueError("cat_ranges: paths, starts and ends must have the same length")
        out = []
        for p, s, e in zip(paths, starts, ends):
            try:
                out.append(self.cat_file(p, s, e))
            except Exception as exc:
                if on_error != "return":
                    raise
                out.append(exc)
        return out

    def created(self, path):
        return self.modified(path)

    def modified(self, path):
        import datetime

        return datetime.datetime.fromtimestamp(self.info(path).get("mtime", 0), tz=datetime.timezone.utc)

    def ukey(self, path):
        return self.info(path).get("etag") or super().ukey(path)

    # ---- writing: refused ----------------------------------------------------------------

    def _refuse(self, path, *args, **kwargs):
        raise _read_only(path)

    mkdir = makedirs = rmdir = touch = pipe_file = put_file = _refuse
    rm_file = _rm = cp_file = mv = rm = setxattrs = _refuse

    def __reduce__(self):
        return _make, ({"vault": self._vault_path, **self._open_args},)


def _make(storage_options):
    return DsvaultFileSystem(**storage_options)
