"""The page filter: a dump level in, the two kdump bitmaps and counts out.

bitmap1 marks RAM (every pfn inside a PT_LOAD); bitmap2 starts as its copy
and loses each excluded page. Each bitmap takes one bit per pfn (32 MiB per
TiB of RAM), so beyond a memory budget the filter works in cycles, as
makedumpfile's cyclic mode does: pfn ranges filtered one after another, each
with bitmaps of its own range only. The walk over struct pages is the same
with or without cycles (a run or a range that crosses a cycle's end carries
its remaining bits into the next cycle), so the bitmaps are too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from capture.errors import CaptureError
from capture.filter.bitmap import Bitmap
from capture.filter.classify import classify_run
from capture.filter.levels import DumpLevel
from capture.filter.rules import PageRules
from capture.filter.stats import FilterStats
from capture.logs import log
from capture.vmcore.kernel import Vmcore
from capture.vmcore.memmap import MemMap
from capture.vmcore.pagecolumns import PageColumns

__all__ = (
    "CYCLE_ALIGN",
    "FilterResult",
    "FilteredPages",
    "default_bitmap_budget",
    "filter_cycles",
    "filter_pages",
)


CYCLE_ALIGN = 32768
"""Cycles are whole multiples of this many pfns: 4 KiB of each bitmap."""
_MAX_BITMAP_BUDGET = 32 << 20
_MIN_BITMAP_BUDGET = 1 << 20
_BUDGET_SHARE_OF_FREE = 0.4


class FilterResult(NamedTuple):
    """The bitmaps and counts of one filtering pass over ``[bitmap1.start, bitmap1.end)``."""

    level: DumpLevel
    bitmap1: Bitmap
    """RAM: pfns inside a PT_LOAD."""
    bitmap2: Bitmap
    """Dumpable: RAM less every excluded page. The writers clear from it what
    only reading tells: pages the vmcore cannot give, and for an ELF dump the
    zero pages (its segments are cut from this bitmap). The counts of what
    they find are theirs (:class:`~capture.dumpfile.outcome.DumpOutcome`)."""
    stats: FilterStats
    """The filter's counts only; zero pages are found and counted by the writer."""
    problems: list[str]
    """Why some pages could not be classified (they were kept)."""


def filter_pages(vmcore: Vmcore, level: DumpLevel) -> FilterResult:
    """Classify every RAM page of ``vmcore`` for ``level``, in one cycle.

    Pages whose struct page cannot be read are kept, never dropped: a
    corrupt mem_map costs dump size, not data.
    """
    return next(filter_cycles(vmcore, level, None))


def filter_cycles(
    vmcore: Vmcore, level: DumpLevel, cycle_pages: int | None
) -> Iterator[FilterResult]:
    """:func:`filter_pages` in cycles of ``cycle_pages`` pfns (a multiple of
    :data:`CYCLE_ALIGN`; None: one cycle), in pfn order. A result's
    counts are those of the pages classified in its cycle."""
    max_pfn = vmcore.max_pfn
    cycle = max(max_pfn, 1) if cycle_pages is None else cycle_pages
    if cycle_pages is not None and (cycle <= 0 or cycle % CYCLE_ALIGN):
        raise ValueError(f"a cycle must be a positive multiple of {CYCLE_ALIGN} pfns")
    problems: list[str] = []
    walk = _walk_for(vmcore, level, problems)
    ram = vmcore.ram_ranges()
    for start in range(0, max(max_pfn, 1), cycle):
        bitmap1 = Bitmap(min(start + cycle, max_pfn), start)
        for first, end in ram:
            bitmap1.set_range(first, end)
        result = FilterResult(
            level, bitmap1, bitmap1.copy(), FilterStats(ram=bitmap1.count()), problems
        )
        if walk is not None:
            walk.fill(result)
        yield result
        # Not held while the next cycle is made: two cycles' bitmaps at once
        # would be twice the budget.
        del result, bitmap1
        problems = []


def _walk_for(vmcore: Vmcore, level: DumpLevel, problems: list[str]) -> _Walk | None:
    """The struct-page walk ``level`` needs, or None (nothing to classify, or
    nothing classifiable: then every page is kept and ``problems`` says why)."""
    try:
        memmap = MemMap(vmcore)
        rules = PageRules.from_vmcoreinfo(vmcore.info, memmap.layout.size)
    except CaptureError as error:
        if level & ~DumpLevel.ZERO:
            problems.append(f"no page is classified, all are kept: {error}")
            log.warning("%s: %s", vmcore.path, problems[-1])
        return None
    problems.extend(memmap.problems)
    return _Walk(vmcore, memmap, rules, level) if rules.walk_needed(level) else None


class _Walk:
    """One pass over every struct page in pfn order, cycle after cycle."""

    def __init__(self, vmcore: Vmcore, memmap: MemMap, rules: PageRules, level: DumpLevel):
        self._rules, self._level, self._max_pfn = rules, level, vmcore.max_pfn
        self._runs = (
            run for start, end in vmcore.segment_pfn_ranges() for run in memmap.columns(start, end)
        )
        self._next: PageColumns | None = next(self._runs, None)
        self._skip_until = 0
        self._carried_bits: list[tuple[int, int]] = []
        """``(start_pfn, bits)`` to clear beyond the last cycle's end."""
        self._carried_ranges: list[tuple[int, int]] = []
        """``[first, end)`` pfn ranges to clear beyond the last cycle's end."""

    def fill(self, result: FilterResult) -> None:
        """Clear ``result.bitmap2``'s excluded pages: those carried from the
        cycle before, then those of every run that starts in this cycle."""
        bitmap2, stats = result.bitmap2, result.stats
        bits, ranges = self._carried_bits, self._carried_ranges
        self._carried_bits, self._carried_ranges = [], []
        for start, carried in bits:
            self._clear_bits(bitmap2, start, carried)
        for first, end in ranges:
            self._clear_range(bitmap2, first, end)
        while self._next is not None and self._next.start_pfn < bitmap2.end:
            run = self._next
            candidates = (1 << run.count) - 1
            verdict = classify_run(run, self._rules, self._level, candidates, self._skip_until)
            for category, singles in verdict.singles.items():
                self._clear_bits(bitmap2, run.start_pfn, singles)
                stats.add(category, singles.bit_count())
            for category, first, last in verdict.ranges:
                self._clear_range(bitmap2, first, last)
                stats.add(category, min(last, self._max_pfn) - first)
                self._skip_until = max(self._skip_until, last)
            self._next = next(self._runs, None)

    def _clear_bits(self, bitmap2: Bitmap, start: int, bits: int) -> None:
        bitmap2.clear_bits(start, bits)
        beyond = bits >> (bitmap2.end - start)
        if beyond:
            self._carried_bits.append((bitmap2.end, beyond))

    def _clear_range(self, bitmap2: Bitmap, first: int, end: int) -> None:
        bitmap2.clear_range(first, end)
        end = min(end, self._max_pfn)
        if end > bitmap2.end:
            self._carried_ranges.append((max(first, bitmap2.end), end))


class FilteredPages:
    """A whole machine's filter verdict, walked cycle by cycle in pfn order.

    Writers must know how many pages they will write before the first one
    (the kdump descriptor table comes first), so the constructor runs a
    counting pass. When the machine's two bitmaps fit ``budget`` bytes, that
    pass is one cycle and is kept for :meth:`cycles`; beyond it each walk
    filters again, one cycle at a time, and memory stays at the budget.
    """

    def __init__(self, vmcore: Vmcore, level: DumpLevel, budget: int | None) -> None:
        self.level = level
        self.max_pfn = vmcore.max_pfn
        self.cycle_pages = cycle_pages_for(self.max_pfn, budget)
        self._vmcore = vmcore
        self._kept: FilterResult | None = None
        self.dumpable = 0
        """Pages the filter keeps (the writers may still find some missing)."""
        self.problems: list[str] = []
        results = filter_cycles(vmcore, level, self.cycle_pages)
        if self.cycle_pages is None:
            self._kept = next(results)
            self.stats = self._kept.stats
            self._count(self._kept)
            return
        self.stats = FilterStats()
        for result in results:
            self._count(result)
            self.stats.add_all(result.stats)
            del result  # before the next cycle is made (see filter_cycles)

    def _count(self, result: FilterResult) -> None:
        self.dumpable += result.bitmap2.count()
        self.problems.extend(result.problems)

    @property
    def cyclic(self) -> bool:
        """Whether the machine is filtered in more than one cycle."""
        return self.cycle_pages is not None

    def cycles(self) -> Iterator[FilterResult]:
        """Every cycle's bitmaps, in pfn order. Counts go to :attr:`stats`
        (the writers add zero pages there), not to the cycles'."""
        if self._kept is not None:
            yield self._kept
            return
        yield from filter_cycles(self._vmcore, self.level, self.cycle_pages)

    def whole(self) -> FilterResult:
        """The one cycle of a machine that fits the budget."""
        if self._kept is None:
            raise ValueError("the bitmaps were filtered in cycles; there is no whole one")
        return self._kept


def cycle_pages_for(max_pfn: int, budget: int | None) -> int | None:
    """Pfns per cycle for two bitmaps in ``budget`` bytes (None: no limit);
    None when the whole machine fits in one."""
    if budget is None or 2 * -(-max_pfn // 8) <= budget:
        return None
    return max(CYCLE_ALIGN, budget * 4 // CYCLE_ALIGN * CYCLE_ALIGN)


def default_bitmap_budget(meminfo: str = "/proc/meminfo") -> int:
    """Bytes for the two bitmaps: 40% of the memory available now, at most
    32 MiB (a 512 GiB machine in one cycle; a crash kernel has a few hundred
    MB in all). makedumpfile's cyclic buffer is at most 4 MiB (docs/formats.md
    §"Bitmaps"): larger cycles mean fewer passes over the struct pages."""
    try:
        with open(meminfo) as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    share = int(int(line.split()[1]) * 1024 * _BUDGET_SHARE_OF_FREE)
                    return max(_MIN_BITMAP_BUDGET, min(_MAX_BITMAP_BUDGET, share))
    except (OSError, ValueError, IndexError):
        pass
    return _MAX_BITMAP_BUDGET
