"""Where a dump's bytes go: a seekable file, or a flattened stream.

Writers only ever say "put these bytes at this offset". A seekable file does
exactly that; a flattened stream (for ssh, pipes and raw devices) wraps each
write as a record that ``makedumpfile -R`` or ``kdump-capture rebuild`` puts
back in place (:mod:`capture.dumpfile.flatformat`). So two writers times two sinks need no
special cases.
"""

from __future__ import annotations

import errno
import os
from typing import BinaryIO, Protocol

from capture.dumpfile import flatformat
from capture.errors import CaptureError

__all__ = ("FileSink", "FlattenedSink", "NoSpaceError", "Sink")

_NO_COPY_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF)


class NoSpaceError(CaptureError):
    """The target ran out of space; ``written`` bytes of the last write made it."""

    def __init__(self, message: str, written: int) -> None:
        super().__init__(message)
        self.written = written


class Sink(Protocol):
    """Positional writes, in any order."""

    seekable: bool
    """Whether earlier bytes may be rewritten (a flattened stream may not)."""

    def write_at(self, offset: int, data: bytes) -> None:
        """Put ``data`` at ``offset``. :raises NoSpaceError: when space runs out."""
        ...

    def reserve(self, offset: int, length: int) -> None:
        """Allocate space now, so later rewrites there cannot fail for lack of it."""
        ...

    def copy_from(self, fd: int, source_offset: int, length: int, offset: int) -> bool:
        """Copy ``length`` bytes of file ``fd`` to ``offset`` inside the kernel.

        :returns: False if this sink or the kernel cannot; then write the data.
        :raises NoSpaceError: when space runs out.
        """
        ...

    def close(self) -> None:
        """Finish the output."""
        ...


class FileSink:
    """A regular file written with ``pwrite``."""

    seekable = True

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def write_at(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                done += os.pwrite(self._fd, view[done:], offset + done)
            except OSError as error:
                if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise NoSpaceError(f"{self.path}: {os.strerror(error.errno)}", done) from None
                raise

    def copy_from(self, fd: int, source_offset: int, length: int, offset: int) -> bool:
        # copy_file_range moves the bytes inside the kernel: no copy to user
        # space and back, and on reflink filesystems no copy at all.
        done = 0
        while done < length:
            try:
                copied = os.copy_file_range(
                    fd, self._fd, length - done, source_offset + done, offset + done
                )
            except OSError as error:
                if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise NoSpaceError(f"{self.path}: {os.strerror(error.errno)}", done) from None
                if done == 0 and error.errno in _NO_COPY_RANGE:
                    return False
                raise
            if copied == 0:  # the source ended early: let the caller read what is there
                return False
            done += copied
        return True

    def reserve(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        try:
            os.posix_fallocate(self._fd, offset, length)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise NoSpaceError(f"{self.path}: {os.strerror(error.errno)}", 0) from None
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise

    def close(self) -> None:
        # No fsync, as makedumpfile: durability is the capture step's
        # (Fedora's kdump runs `sync -f` before renaming vmcore-incomplete).
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FlattenedSink:
    """makedumpfile's flattened format on a stream: header, records, end marker."""

    seekable = False

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        stream.write(flatformat.HEADER)

    def write_at(self, offset: int, data: bytes) -> None:
        if not data:
            return  # a zero-length record ends makedumpfile -R and libkdumpfile early
        try:
            self._stream.write(flatformat.RECORD.pack(offset, len(data)))
            self._stream.write(data)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise NoSpaceError(f"output stream: {os.strerror(error.errno)}", 0) from None
            raise

    def reserve(self, offset: int, length: int) -> None:
        """Nothing to reserve on a stream."""

    def copy_from(self, fd: int, source_offset: int, length: int, offset: int) -> bool:
        """A stream's records carry the data itself: never."""
        return False

    def close(self) -> None:
        self._stream.write(flatformat.END_MARKER)
        self._stream.flush()
