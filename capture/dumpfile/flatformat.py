"""makedumpfile's flattened format, defined once: the facts and the record loop.

A flattened stream is what a seekable dump becomes on a pipe: a 4096-byte
header (the signature, then type 1 and version 1 as big-endian 64-bit
integers, zeros to the end), records of ``(offset, size)`` in big-endian
followed by ``size`` bytes that belong at ``offset``, and an end marker of
sixteen 0xff bytes (makedumpfile's ``makedumpfile_header`` and
``makedumpfile_data_header``, in makedumpfile.h). ``makedumpfile -R`` puts
each record's bytes back at its offset.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from capture.errors import CorruptError

__all__ = ("END_MARKER", "HEADER", "HEADER_SIZE", "RECORD", "SIGNATURE", "records")

SIGNATURE = b"makedumpfile\0\0\0\0"
HEADER_SIZE = 4096
HEADER = (SIGNATURE + struct.pack(">qq", 1, 1)).ljust(HEADER_SIZE, b"\0")
RECORD = struct.Struct(">qq")
END_MARKER = b"\xff" * 16


def records(read: Callable[[int], bytes]) -> Iterator[tuple[int, int]]:
    """``(offset, size)`` of each record after the header, up to the end marker.

    ``read(n)`` reads the stream's next bytes (past the header); the caller
    reads or skips each record's ``size`` bytes before asking for the next.

    :raises CorruptError: at a bad record header, or when the stream ends
        before its end marker (a transfer cut short).
    """
    while True:
        header = read(RECORD.size)
        if len(header) != RECORD.size:
            raise CorruptError("the stream ends inside a record header: it was cut short")
        offset, size = RECORD.unpack(header)
        if offset == -1 and size == -1:
            return
        if offset < 0 or size <= 0:
            raise CorruptError(f"bad flattened record: offset {offset}, size {size}")
        yield offset, size
