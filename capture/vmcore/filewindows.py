"""Reading a large file through a few memory-mapped windows.

/proc/vmcore is read far faster through ``mmap`` than through ``read()``
(the kernel ioremaps every 4 KiB page for ``read()``; with mmap it maps large
ranges at once). A saved vmcore is the other way round: ``pread`` copies 1 MiB
from the page cache at ~0.4 us a page where a populated mapping costs ~1.4 us
a page, and a 4 KiB read in a new window populates all 4 MiB of it; so saved
files are read with ``pread`` alone. Windows are released as reading moves
on, so mapped pages never pile up in the crash kernel's small memory.

Each thread has windows of its own (the dump's workers read at once): a
window shared between threads could be unmapped by one while another copies
from it.
"""

from __future__ import annotations

import mmap
import os
from _thread import get_ident
from collections import OrderedDict

from capture.errors import NoDataError

__all__ = ("FileWindows",)

WINDOW_SIZE = 4 << 20
"""Bytes per window: makedumpfile's MAP_REGION, big enough that mapping cost vanishes."""

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)

WINDOWS_KEPT = 4
"""Windows kept mapped at once by a thread; its least recently used one is unmapped first."""

_Windows = OrderedDict[int, mmap.mmap]


class FileWindows:
    """Byte ranges of one open file, read through LRU mmap windows.

    Falls back to ``os.pread`` where the file cannot be mapped (some
    filesystems, or a kernel before 3.11 for /proc/vmcore).
    """

    def __init__(
        self, fd: int, size: int, window_size: int = WINDOW_SIZE, use_mmap: bool = True
    ) -> None:
        if window_size % mmap.ALLOCATIONGRANULARITY:
            raise ValueError("window size must be a multiple of the mmap granularity")
        self._fd = fd
        self.size = size
        self._window_size = window_size
        self._threads_windows: dict[int, _Windows] = {}
        self._use_mmap = use_mmap

    def read(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes at ``offset``.

        :raises NoDataError: if the range reaches past the end of the file
            (a truncated vmcore).
        """
        if offset < 0 or length < 0 or offset + length > self.size:
            raise NoDataError(
                f"file offset {offset:#x}+{length:#x} is past the end of the file ({self.size:#x})"
            )
        if not self._use_mmap:
            return self._pread(offset, length)
        parts = []
        while length:
            base = offset - offset % self._window_size
            window = self._window(base)
            if window is None:
                parts.append(self._pread(offset, length))
                break
            start = offset - base
            take = min(length, len(window) - start)
            parts.append(window[start : start + take])
            offset += take
            length -= take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Unmap every thread's windows."""
        for windows in self._threads_windows.values():
            for window in windows.values():
                window.close()
        self._threads_windows.clear()

    def _window(self, base: int) -> mmap.mmap | None:
        thread = get_ident()
        windows = self._threads_windows.get(thread)
        if windows is None:
            windows = self._threads_windows[thread] = OrderedDict()
        window = windows.get(base)
        if window is not None:
            windows.move_to_end(base)
            return window
        # Never map past the end of the file: touching such a page is SIGBUS.
        length = min(self._window_size, self.size - base)
        try:
            # MAP_POPULATE maps the whole window at once: one fault instead
            # of one per 64 KiB, which halves the cost of streaming a file.
            window = mmap.mmap(
                self._fd,
                length,
                flags=mmap.MAP_SHARED | _POPULATE,
                prot=mmap.PROT_READ,
                offset=base,
            )
        except (OSError, ValueError):
            self._use_mmap = False  # every thread reads with pread from now on
            return None
        windows[base] = window
        if len(windows) > WINDOWS_KEPT:
            _, oldest = windows.popitem(last=False)
            oldest.close()
        return window

    def _pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise NoDataError(f"short read at file offset {offset:#x}: the file shrank")
        return data
