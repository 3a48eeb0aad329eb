"""Room on the target: the dump's size before writing it, crash loops, retention.

Fedora checks space only when the image is built; a disk that fills up
mid-dump leaves ``vmcore-incomplete`` and nothing else. Here the filter's
page count (known before the first page is written) and the compressed size
of a sample of those pages estimate the dump first, so the run can choose a
stronger codec, or the log alone, instead of failing halfway.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import NamedTuple

from capture.agent.targets import DumpEntry, Target
from capture.dumpfile.dump import DumpPlan
from capture.dumpfile.kdump import KdumpLayout
from capture.errors import CaptureError
from capture.filter import DumpLevel

__all__ = ("SizeEstimate", "crash_loop", "estimate_dump", "old_dumps")

log = logging.getLogger("capture")

_SAMPLES = 512
_MARGIN = 1.1
"""Pages compress unevenly across RAM: estimates are raised by a tenth."""
_STRONGER = "zstd"
_HOUR = 3600.0


class SizeEstimate(NamedTuple):
    """How big the dump will be, and how that was found."""

    bytes: int
    pages: int
    sampled: int
    """Pages compressed to find the ratio (0: none, the estimate is uncompressed)."""


def estimate_dump(plan: DumpPlan, samples: int = _SAMPLES) -> SizeEstimate:
    """The dump's size: its metadata, and its pages at the compression ratio
    of ``samples`` of them spread over the first cycle's dumpable pages."""
    vmcore, filtered = plan.vmcore, plan.filtered
    page_size = vmcore.page_size
    if plan.options.elf:
        return SizeEstimate(filtered.dumpable * page_size + (1 << 20), filtered.dumpable, 0)
    zero_page = bool(filtered.level & DumpLevel.ZERO)
    layout = KdumpLayout(page_size, len(vmcore.core.notes), filtered.max_pfn,
                         filtered.dumpable, zero_page)  # fmt: skip
    pages = list(_sample_pages(plan, samples))
    ratio = 1.0
    if pages:
        stored = 0
        for page in pages:
            if zero_page and page == bytes(page_size):
                continue  # described by the shared zero page
            stored += sum(plan.store([page])[1])
        ratio = stored / (len(pages) * page_size)
    data = int(filtered.dumpable * page_size * ratio * _MARGIN)
    return SizeEstimate(layout.data_offset + data, filtered.dumpable, len(pages))


def _sample_pages(plan: DumpPlan, samples: int) -> list[bytes]:
    """Up to ``samples`` dumpable pages, evenly spread (first cycle only)."""
    first = next(plan.filtered.cycles(), None)
    if first is None:
        return []
    bitmap2 = first.bitmap2
    count = bitmap2.count()
    if count == 0:
        return []
    step = max(1, count // samples)
    pfns = islice(
        (pfn for start, end in bitmap2.runs() for pfn in range(start, end)), 0, None, step
    )
    page_size = plan.vmcore.page_size
    pages = []
    for pfn in islice(pfns, samples):
        try:
            pages.append(plan.vmcore.read_phys(pfn * page_size, page_size))
        except CaptureError:
            continue
    return pages


def stronger_codec(plan: DumpPlan) -> DumpPlan | None:
    """The same dump with the strongest codec, if it is not already."""
    if plan.options.elf or plan.options.codec == _STRONGER:
        return None
    return plan.with_codec(_STRONGER)


def crash_loop(dumps: list[DumpEntry], now: float, limit: int) -> int | None:
    """How many dumps the last hour holds, if that is ``limit`` or more."""
    recent = sum(1 for entry in dumps if now - entry.mtime < _HOUR)
    return recent if limit and recent >= limit else None


def old_dumps(dumps: list[DumpEntry], keep: int, current: str) -> list[str]:
    """Which dump directories to remove so ``keep`` remain, never ``current``."""
    if keep <= 0:
        return []
    others = [entry.name for entry in dumps if entry.name != current]
    return others[: max(0, len(others) - (keep - 1))]


def remove_old_dumps(target: Target, keep: int, current: str) -> list[str]:
    """Apply :func:`old_dumps`; a dump that cannot be removed is logged."""
    removed = []
    for name in old_dumps(target.dumps(), keep, current):
        try:
            target.remove_dump(name)
        except OSError as error:
            log.warning("retention: cannot remove %s: %s", name, error)
            continue
        removed.append(name)
    return removed
