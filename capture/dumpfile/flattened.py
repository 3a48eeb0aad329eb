"""Reading makedumpfile's flattened format back (``makedumpfile -R``).

The stream's layout is :mod:`capture.dumpfile.flatformat`'s; rebuilding
writes each record's bytes at its offset.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

from capture.dumpfile import flatformat
from capture.errors import CorruptError

__all__ = ("rebuild",)

_COPY = 1 << 20


def rebuild(stream: BinaryIO, output: str) -> int:
    """Write the regular file a flattened ``stream`` describes; return its size.

    :raises CorruptError: if the stream is not flattened, or ends before its
        end marker (a transfer cut short).
    :raises OSError: naming ``output`` when it cannot be written, or is a
        pipe (records go back to their offsets, so it must be seekable).
    """
    header = _read_exactly(stream, flatformat.HEADER_SIZE, "the flattened header")
    if header[:16] != flatformat.SIGNATURE:
        raise CorruptError("not a flattened dump (no makedumpfile signature)")
    fd = _open_seekable(output)
    try:
        size = _write_records(stream, fd, output)
        _named(output, os.ftruncate, fd, size)
    finally:
        os.close(fd)
    return size


def _open_seekable(output: str) -> int:
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.lseek(fd, 0, os.SEEK_CUR)
    except OSError as error:
        os.close(fd)
        raise OSError(
            error.errno, "rebuild needs a seekable file (a regular file or a device), not a pipe",
            output,
        ) from None  # fmt: skip
    return fd


def _write_records(stream: BinaryIO, fd: int, output: str) -> int:
    """Each record's bytes at its offset, up to the end marker; the size they make."""
    size = 0
    for offset, length in flatformat.records(stream.read):
        for done in range(0, length, _COPY):
            chunk = _read_exactly(stream, min(_COPY, length - done), "record data")
            _named(output, os.pwrite, fd, chunk, offset + done)
        size = max(size, offset + length)
    return size


def _named(output: str, call: Callable[..., object], *args: object) -> None:
    """``call(*args)``, an OSError of it naming ``output`` (os's own name none)."""
    try:
        call(*args)
    except OSError as error:
        raise OSError(error.errno, error.strerror, output) from None


def _read_exactly(stream: BinaryIO, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise CorruptError(f"the stream ends inside {what}: it was cut short")
    return data
