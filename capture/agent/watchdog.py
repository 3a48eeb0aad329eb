"""Bounded time for the dump: a global deadline and a stall watchdog.

Both end the dump the way a full disk does (a :class:`NoSpaceError`), so the
engine finishes what it can (bitmaps, header: their space is reserved),
marks the file INCOMPLETE, and the run goes on to its hooks and its action.
A write that blocks (a dead NFS server) is interrupted by SIGALRM, whose
handler raises in the writing thread; a write stuck in the kernel beyond
signals cannot be, and is the one case this cannot bound.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from capture.dumpfile.sink import NoSpaceError

__all__ = ("Deadline", "TimeUp", "WatchedFile")


class TimeUp(NoSpaceError):
    """The run's deadline passed, or a write made no progress for too long."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0)


class Deadline:
    """The run's end, if it has one; ``seconds`` 0 means none."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + seconds if seconds > 0 else None

    def left(self) -> float | None:
        """Seconds left (never below 0), or None without a deadline."""
        return None if self._end is None else max(0.0, self._end - self._clock())

    def passed(self) -> bool:
        left = self.left()
        return left is not None and left <= 0


class WatchedFile:
    """A dump file whose writes end at the deadline or when one stalls.

    After it has raised once, writes pass unwatched: the engine then writes
    only the metadata whose space it reserved, so the file stays readable.
    """

    def __init__(self, file: Any, deadline: Deadline, stall_seconds: float) -> None:
        self._file, self._deadline, self._stall = file, deadline, stall_seconds
        self.seekable: bool = file.seekable
        self.ended: str | None = None
        """Why the dump was ended, once it was."""

    def write_at(self, offset: int, data: bytes) -> None:
        if self.ended is not None:
            self._file.write_at(offset, data)
            return
        if self._deadline.passed():
            self._end("the run's deadline (kdump_capture_deadline) passed")
        limit = self._limit()
        if limit is None:
            self._file.write_at(offset, data)
            return
        previous = signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            self._file.write_at(offset, data)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def reserve(self, offset: int, length: int) -> None:
        self._file.reserve(offset, length)

    def copy_from(self, fd: int, source_offset: int, length: int, offset: int) -> bool:
        copied: bool = self._file.copy_from(fd, source_offset, length, offset)
        return copied

    def sync(self) -> None:
        self._file.sync()

    def close(self) -> None:
        self._file.close()

    def _limit(self) -> float | None:
        left = self._deadline.left()
        stall = self._stall if self._stall > 0 else None
        if left is None:
            return stall
        return max(0.001, left if stall is None else min(left, stall))

    def _alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._deadline.passed():
            self._end("the run's deadline (kdump_capture_deadline) passed during a write")
        self._end(f"a write made no progress for {self._stall:g} s (kdump_capture_stall_timeout)")

    def _end(self, why: str) -> None:
        self.ended = why
        raise TimeUp(f"{why}; the dump is ended")
