"""The page filter: a dump level in, the two kdump bitmaps and counts out.

bitmap1 marks RAM (every pfn inside a PT_LOAD); bitmap2 starts as its copy
and loses each excluded page. Memory is one bit per pfn for each bitmap
(32 MiB per TiB of RAM).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from capture.errors import CaptureError
from capture.filter.bitmap import Bitmap
from capture.filter.classify import classify_run
from capture.filter.levels import DumpLevel
from capture.filter.rules import PageRules
from capture.filter.stats import FilterStats
from capture.vmcore import MemMap, Vmcore

__all__ = ("FilterResult", "filter_pages")

log = logging.getLogger("capture")


class FilterResult(NamedTuple):
    """The bitmaps and counts of one filtering pass."""

    level: DumpLevel
    bitmap1: Bitmap
    """RAM: pfns inside a PT_LOAD."""
    bitmap2: Bitmap
    """Dumpable: RAM less every excluded page (zero pages are decided by the writer)."""
    stats: FilterStats
    problems: list[str]
    """Why some pages could not be classified (they were kept)."""


def filter_pages(vmcore: Vmcore, level: DumpLevel) -> FilterResult:
    """Classify every RAM page of ``vmcore`` for ``level``.

    Pages whose struct page cannot be read are kept, never dropped: a
    corrupt mem_map costs dump size, not data.
    """
    bitmap1 = Bitmap(vmcore.max_pfn)
    for start, end in vmcore.ram_ranges():
        bitmap1.set_range(start, end)
    result = FilterResult(level, bitmap1, bitmap1.copy(), FilterStats(ram=bitmap1.count()), [])
    try:
        memmap = MemMap(vmcore)
        rules = PageRules.from_vmcoreinfo(vmcore.info, memmap.layout.size)
    except CaptureError as error:
        if level & ~DumpLevel.ZERO:
            result.problems.append(f"no page is classified, all are kept: {error}")
            log.warning("%s: %s", vmcore.path, result.problems[-1])
        return result
    result.problems.extend(memmap.problems)
    if rules.walk_needed(level):
        _walk(vmcore, memmap, rules, result)
    return result


def _walk(vmcore: Vmcore, memmap: MemMap, rules: PageRules, result: FilterResult) -> None:
    stats, bitmap2, max_pfn = result.stats, result.bitmap2, result.bitmap2.size
    skip_until = 0
    for start, end in vmcore.segment_pfn_ranges():
        for run in memmap.columns(start, end):
            candidates = (1 << run.count) - 1
            verdict = classify_run(run, rules, result.level, candidates, skip_until)
            for category, bits in verdict.singles.items():
                bitmap2.clear_bits(run.start_pfn, bits)
                stats.add(category, bits.bit_count())
            for category, first, last in verdict.ranges:
                bitmap2.clear_range(first, last)
                stats.add(category, min(last, max_pfn) - first)
                skip_until = max(skip_until, last)
