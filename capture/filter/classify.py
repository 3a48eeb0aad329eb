"""Classifying a run of struct pages, column by column.

Each test (a flag bit, a page-type value, the anon bit of ``mapping``) turns
byte columns of the run into an ``int`` bitset with whole-int operations:
bit ``i`` stands for the run's ``i``-th page. The decision order of
makedumpfile (docs/formats.md §"Decision order", first match wins) is then a few bitset
operations. Only pages that start a multi-page range (a free buddy block, a
compound page) are looked at one by one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import NamedTuple

from capture.filter.levels import DumpLevel
from capture.filter.rules import CompoundLayout, PageRules
from capture.filter.stats import Category
from capture.vmcore.pagecolumns import PageColumns

__all__ = ("RunVerdict", "classify_run")

_READ_CHUNK = 512
"""makedumpfile reads struct pages 512 at a time and cannot see past a chunk."""


class RunVerdict(NamedTuple):
    """What to exclude from one run: single pages as bitsets, and ranges."""

    singles: dict[Category, int]
    """Per category, a bitset relative to the run's first pfn."""
    ranges: list[tuple[Category, int, int]]
    """``(category, first_pfn, end_pfn)``; may reach past the run's end."""


class _Columns:
    """Bitset tests over one run's struct pages.

    A byte column (one field byte of every struct page) is read once into an
    int of 8-bit lanes, page ``i`` in bits ``8i..8i+7``; each test is then a
    few whole-int operations (SWAR: all lanes at once) and one compaction of
    the lanes' result bits into a plain bitset.
    """

    def __init__(self, run: PageColumns) -> None:
        self.run = run
        self.count = run.count
        self._layout = run.layout
        self._masks = _lane_masks(run.count)
        self._lanes: dict[int, int] = {}

    def _column(self, offset: int) -> int:
        lanes = self._lanes.get(offset)
        if lanes is None:
            column = self.run.raw[offset :: self._layout.size]
            lanes = self._lanes[offset] = int.from_bytes(column, "little")
        return lanes

    def flag(self, bit: int | None) -> int:
        """Pages whose ``flags`` has ``bit`` set; none if the kernel lacks the flag."""
        if bit is None or not 0 <= bit < 64:
            return 0
        lanes = self._column(self._layout.flags + bit // 8)
        return _compact(lanes >> (bit % 8) & self._masks.ones)

    def flag_mask(self, mask: int) -> int:
        """Pages whose ``flags`` has any bit of ``mask`` set."""
        result = 0
        for bit in range(64):
            if mask >> bit & 1:
                result |= self.flag(bit)
        return result

    def mapcount_is(self, value: int | None) -> int:
        """Pages whose 32-bit ``_mapcount``/``page_type`` equals ``value``."""
        return 0 if value is None else self.field_is(self._layout.mapcount, value, 4)

    def field_is(self, offset: int, value: int, width: int) -> int:
        """Pages whose little-endian ``width``-byte field at ``offset`` equals
        ``value`` (``offset`` may reach into the next struct page: then the
        last page has no such field and never matches)."""
        masks = self._masks
        equal = masks.high  # bit 7 of a lane: that page's bytes matched so far
        for index in range(width):
            wanted = masks.ones * (value >> (8 * index) & 0xFF)
            diff = self._column(offset + index) ^ wanted
            # A lane is zero iff adding 0x7f to its low 7 bits, or-ed with
            # itself, leaves bit 7 clear; no lane carries into the next.
            equal &= ~(((diff & masks.low) + masks.low) | diff)
            if not equal:
                return 0
        pages = max(0, -(-(len(self.run.raw) - offset - width + 1) // self._layout.size))
        return _compact(equal >> 7) & ((1 << pages) - 1)

    def low_bit(self, offset: int | None) -> int:
        """Pages whose little-endian word at ``offset`` has bit 0 set."""
        return 0 if offset is None else _compact(self._column(offset) & self._masks.ones)


class _LaneMasks(NamedTuple):
    ones: int
    """0x01 in every lane."""
    low: int
    """0x7f in every lane."""
    high: int
    """0x80 in every lane."""


@functools.cache
def _lane_masks(count: int) -> _LaneMasks:
    ones = int.from_bytes(b"\x01" * count, "little")
    return _LaneMasks(ones, ones * 0x7F, ones * 0x80)


_GATHER = 0x0102040810204080
"""Times a 64-bit word of eight 0/1 bytes, puts them as eight bits in its top
byte; lanes never carry into the next word's top byte."""


def _compact(lanes: int) -> int:
    """The bitset whose bit ``i`` is lane ``i`` of ``lanes`` (each lane 0 or 1)."""
    if not lanes:
        return 0
    product = lanes * _GATHER
    top_bytes = product.to_bytes((product.bit_length() + 71) // 8, "little")[7::8]
    return int.from_bytes(top_bytes, "little")


def classify_run(
    run: PageColumns, rules: PageRules, level: DumpLevel, candidates: int, skip_until: int
) -> RunVerdict:
    """Decide which pages of ``run`` to exclude.

    :param candidates: bitset of the run's pages that may start an exclusion
        (pages inside a PT_LOAD; makedumpfile skips the others).
    :param skip_until: pfns below this are inside a range an earlier run
        already excluded, and are not looked at.
    """
    columns = _Columns(run)
    everything = (1 << run.count) - 1
    layout = run.layout
    if skip_until > run.start_pfn:
        candidates &= ~((1 << min(run.count, skip_until - run.start_pfn)) - 1)
    candidates &= ~columns.low_bit(layout.compound_head)  # tails go with their head
    flags = columns.flag
    slab = columns.mapcount_is(rules.slab_type) | flags(rules.slab_flag)
    anon = columns.low_bit(layout.mapping) & ~slab
    swapbacked = everything if rules.swapbacked is None else flags(rules.swapbacked)
    cache = flags(rules.lru) | (flags(rules.swapcache) & swapbacked)
    head = columns.flag_mask(rules.head_mask)

    remaining = candidates
    found: dict[Category, int] = {}

    def take(category: Category, bits: int) -> None:
        nonlocal remaining
        bits &= remaining
        if bits:
            found[category] = found.get(category, 0) | bits
            remaining &= ~bits

    if level & DumpLevel.FREE:
        if rules.buddy_type is not None:
            take(Category.FREE, columns.mapcount_is(rules.buddy_type) & ~slab)
        elif rules.buddy_flag is not None:
            take(Category.FREE, flags(rules.buddy_flag))
        take(Category.UNACCEPTED, columns.mapcount_is(rules.unaccepted_type))
    private = flags(rules.private)
    if level & DumpLevel.CACHE:
        take(Category.CACHE, cache & ~private & ~anon)
    if level & DumpLevel.CACHE_PRIVATE:
        take(Category.CACHE_PRIVATE, cache & private & ~anon)
        take(Category.CACHE, cache & ~anon)
    if level & DumpLevel.USER:
        hugetlb = _hugetlb_heads(columns, rules, head & remaining & ~anon)
        take(Category.USER, anon | hugetlb)
    take(Category.HWPOISON, flags(rules.hwpoison))
    take(Category.OFFLINE, columns.mapcount_is(rules.offline_type) & ~slab)
    return _resolve_ranges(run, rules, found, head)


def _resolve_ranges(
    run: PageColumns, rules: PageRules, found: dict[Category, int], head: int
) -> RunVerdict:
    """Turn multi-page heads into ranges, walking them in pfn order.

    A page inside an earlier range is skipped, as makedumpfile's walk jumps
    past every range it excludes.
    """
    verdict = RunVerdict({}, [])
    starters: dict[int, Category] = {}
    for category, bits in found.items():
        multi = bits if category in (Category.FREE, Category.UNACCEPTED) else bits & head
        for index in _set_bits(multi):
            starters[index] = category
    covered = 0
    covered_until = 0
    for index in sorted(starters):
        if index < covered_until:
            covered |= 1 << index
            continue
        category = starters[index]
        pages = _range_pages(run, rules, category, index)
        if pages is None:  # a garbage buddy order: keep the page
            covered |= 1 << index
            continue
        if pages > 1:
            pfn = run.start_pfn + index
            verdict.ranges.append((category, pfn, pfn + pages))
            covered_until = index + pages
            covered |= ((1 << min(pages, run.count - index)) - 1) << index
    for category, bits in found.items():
        singles = bits & ~covered
        if singles:
            verdict.singles[category] = singles
    return verdict


def _range_pages(run: PageColumns, rules: PageRules, category: Category, index: int) -> int | None:
    if category == Category.FREE:
        order = run.private[index]
        return None if order >= rules.max_order else 1 << order
    if category == Category.UNACCEPTED:
        return 1 << (rules.max_order - 1)
    return 1 << _compound_order(run, rules, index)


def _compound_order(run: PageColumns, rules: PageRules, index: int) -> int:
    """The order of the compound page headed at ``index`` (0 if unknowable)."""
    pfn = run.start_pfn + index
    if index + 1 >= run.count or pfn % _READ_CHUNK == _READ_CHUNK - 1:
        return 0
    if rules.compound is CompoundLayout.FOLIO_FLAGS:
        order = run.flags[index + 1] & 0xFF
    elif rules.compound is CompoundLayout.NONE:
        return 0
    else:
        order = _field(run, index, rules.order_offset, rules.narrow_compound_fields)
    if order >= 64 or pfn % (1 << order):
        return 0
    return order


def _hugetlb_heads(columns: _Columns, rules: PageRules, heads: int) -> int:
    """Heads (among ``heads``) of hugetlbfs pages."""
    if rules.hugetlb_type is not None:
        return columns.mapcount_is(rules.hugetlb_type) & heads
    if rules.compound is CompoundLayout.FOLIO_FLAGS and rules.hugetlb_flag is not None:
        hits = columns.flag(rules.hugetlb_flag) >> 1  # the flag is on the first tail page
    elif rules.dtor_offset is not None and rules.hugetlb_dtor is not None:
        width = 1 if rules.narrow_compound_fields else 2
        hits = columns.field_is(rules.dtor_offset, rules.hugetlb_dtor, width)
    else:
        return 0
    run = columns.run
    return hits & heads & ~_last_of_read_chunk(run.start_pfn % _READ_CHUNK, run.count)


@functools.cache
def _last_of_read_chunk(phase: int, count: int) -> int:
    """Pages (of a run starting ``phase`` pages into a read chunk) whose first
    tail page makedumpfile cannot see: the last of each chunk, and of the run."""
    bits = 1 << (count - 1)
    for index in range(_READ_CHUNK - 1 - phase, count, _READ_CHUNK):
        bits |= 1 << index
    return bits


def _field(run: PageColumns, index: int, offset: int, narrow: bool) -> int:
    at = index * run.layout.size + offset
    width = 1 if narrow else 2
    return int.from_bytes(run.raw[at : at + width], "little")


def _set_bits(bits: int) -> Iterator[int]:
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low
