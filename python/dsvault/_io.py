"""File objects over a native :class:`dsvault.File`: a seekable raw reader whose
``readinto`` fills the caller's buffer directly, under ``io.BufferedReader``."""

from __future__ import annotations

import io
import os

# Buffer of a BufferedReader: the file's size, within these bounds (reads of large
# buffers bypass it and go straight into the caller's memory).
_MIN_BUFFER = 8 << 10
_MAX_BUFFER = 1 << 20


class RawFile(io.RawIOBase):
    """A read-only, seekable raw file of a dataset."""

    def __init__(self, handle):
        super().__init__()
        self._h = handle
        self._pos = 0
        self.name = handle.name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._check_closed()
        n = self._h.readinto_at(self._pos, buffer)
        self._pos += n
        return n

    def readall(self) -> bytes:
        self._check_closed()
        data = self._h.read_at(self._pos)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_closed()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self._h.size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._check_closed()
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._h.close()
        super().close()

    def _check_closed(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed file {self.name}")

    @property
    def size(self) -> int:
        return self._h.size

    @property
    def blake3(self) -> str:
        return self._h.blake3


def wrap(handle, mode: str = "rb", buffering: int = -1, encoding: str | None = None):
    """The file object ``Dataset.open`` returns for ``handle``."""
    if set(mode) - set("rbt") or mode.count("r") != 1 or ("b" in mode and "t" in mode):
        handle.close()
        raise ValueError(f"invalid mode {mode!r}: datasets open for reading only ('rb' or 'r')")
    raw = RawFile(handle)
    if "b" in mode and buffering == 0:
        return raw
    size = buffering if buffering > 1 else min(max(handle.size, _MIN_BUFFER), _MAX_BUFFER)
    buffered = io.BufferedReader(raw, buffer_size=size)
    if "b" in mode:
        return buffered
    return io.TextIOWrapper(buffered, encoding=encoding or "utf-8")
