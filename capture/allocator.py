"""Keep freed heap memory for reuse while a dump streams.

glibc gives freed memory back to the kernel eagerly: a block above the mmap
threshold is unmapped when freed, and a free top of the heap above the trim
threshold is cut off. A dump allocates and frees the same few sizes (reads of
up to 1 MiB, batches of stored pages, 2 MiB flushes) thousands of times, so
each round faulted fresh pages in again: 20,600 page faults for a -d 31 dump
of a busy 4 GB vmcore, against makedumpfile's 5,900. Fixed thresholds keep
that memory mapped for the next round; the peak stays what it was.
"""

from __future__ import annotations

__all__ = ("keep_freed_memory",)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 4 << 20
"""Blocks below this come from the heap (the largest a dump allocates again
and again is 2 MiB). A cycle's bitmaps (up to 16 MiB each, made once per cycle
and per pass) are mapped and unmapped whole: from the heap, the counting
pass's freed bitmaps left holes the dump pass could not reuse, and a 1 TB
dump peaked at 63.5 MB instead of 54 MB."""
_TRIM_THRESHOLD = 64 << 20
"""The free top of the heap is given back only beyond this."""


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above; False where there is no glibc to tune."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False
    # mallopt returns 1 on success; musl's is a stub that returns 0.
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
