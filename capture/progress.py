"""What a person watching a dump sees: a progress line and the page summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from capture.dumpfile.dump import DumpReport

__all__ = ("ProgressLine", "page_summary")

_INTERVAL = 0.5


class ProgressLine:
    """``Copying data : [ 42.0 %]  123.4 MB/s  ETA 12s``, redrawn in place."""

    def __init__(self, stream: TextIO, total_pages: int) -> None:
        self._stream = stream
        self._total = max(1, total_pages)
        self._started = time.monotonic()
        self._shown = 0.0

    @classmethod
    def factory(cls, stream: TextIO) -> Callable[[int], Callable[[int, int], None]]:
        """For :func:`dump_vmcore`: a progress callback once the page count is known."""
        return lambda total: cls(stream, total).update

    def update(self, pages: int, written: int) -> None:
        """Redraw, at most twice a second and once at the end."""
        now = time.monotonic()
        if now - self._shown < _INTERVAL and pages < self._total:
            return
        self._shown = now
        elapsed = max(now - self._started, 1e-6)
        fraction = min(1.0, pages / self._total)
        eta = elapsed * (1 - fraction) / fraction if fraction else 0.0
        rate = written / elapsed / 1e6
        line = f"Copying data : [{fraction * 100:5.1f} %] {rate:8.1f} MB/s  ETA {eta:4.0f}s"
        end = "\n" if pages >= self._total else ""
        self._stream.write(f"\r{line}{end}")
        self._stream.flush()


def page_summary(report: DumpReport) -> str:
    """The page counts in makedumpfile's words (``Original pages`` counts RAM once)."""
    stats = report.stats
    rows = [
        ("Pages filled with zero", stats.zero),
        ("Non-private cache pages", stats.cache),
        ("Private cache pages", stats.cache_private),
        ("User process data pages", stats.user),
        ("Free pages", stats.free + stats.unaccepted),
        ("Hwpoison pages", stats.hwpoison),
        ("Offline pages", stats.offline),
    ]
    percent = 100 * stats.dumped // stats.ram if stats.ram else 0
    lines = [
        f"Original pages  : {stats.ram:#018x}",
        f"  Excluded pages   : {stats.excluded:#018x}",
        *(f"    {label:<24}: {count:#018x}" for label, count in rows),
        f"  Remaining pages  : {stats.dumped:#018x}",
        f"  (The number of pages is reduced to {percent}%.)",
        f"Memory Hole     : {report.max_pfn - stats.ram:#018x}",
        "-" * 50,
        f"Total pages     : {report.max_pfn:#018x}",
        f"Write bytes     : {report.outcome.bytes_written}",
    ]
    return "\n".join(lines)
