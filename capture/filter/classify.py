"""Classifying a run of struct pages, column by column.

Each test (a flag bit, a page-type value, the anon bit of ``mapping``) turns
one byte column of the run into an ``int`` bitset with ``bytes.translate``:
bit ``i`` stands for the run's ``i``-th page. The decision order of
makedumpfile (spec/formats.md 3.4, first match wins) is then a few bitset
operations. Only pages that start a multi-page range (a free buddy block, a
compound page) are looked at one by one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

from capture.filter.levels import DumpLevel
from capture.filter.rules import CompoundLayout, PageRules
from capture.vmcore.pagecolumns import PageColumns

__all__ = ("Category", "RunVerdict", "classify_run")

_ZERO, _ONE = ord("0"), ord("1")
_BIT_TABLES = [bytes(_ONE if byte >> bit & 1 else _ZERO for byte in range(256)) for bit in range(8)]
_READ_CHUNK = 512
"""makedumpfile reads struct pages 512 at a time and cannot see past a chunk."""


@functools.cache
def _equal_table(value: int) -> bytes:
    """Translation table: ``value`` becomes "1", every other byte "0"."""
    table = bytearray(b"0" * 256)
    table[value] = _ONE
    return bytes(table)


class Category:
    """Names of the exclusion categories, as in :class:`FilterStats`."""

    FREE = "free"
    UNACCEPTED = "unaccepted"
    CACHE = "cache"
    CACHE_PRIVATE = "cache_private"
    USER = "user"
    HWPOISON = "hwpoison"
    OFFLINE = "offline"


@dataclass
class RunVerdict:
    """What to exclude from one run: single pages as bitsets, and ranges."""

    singles: dict[str, int] = field(default_factory=dict)
    """Per category, a bitset relative to the run's first pfn."""
    ranges: list[tuple[str, int, int]] = field(default_factory=list)
    """``(category, first_pfn, end_pfn)``; may reach past the run's end."""


class _Columns:
    """Bitset tests over one run's struct pages."""

    def __init__(self, run: PageColumns) -> None:
        self.run = run
        self.count = run.count
        self._layout = run.layout

    def _bits(self, offset: int, table: bytes) -> int:
        column = self.run.raw[offset :: self._layout.size]
        return int(column.translate(table)[::-1], 2) if column else 0

    def flag(self, bit: int | None) -> int:
        """Pages whose ``flags`` has ``bit`` set; none if the kernel lacks the flag."""
        if bit is None or not 0 <= bit < 64:
            return 0
        return self._bits(self._layout.flags + bit // 8, _BIT_TABLES[bit % 8])

    def flag_mask(self, mask: int) -> int:
        """Pages whose ``flags`` has any bit of ``mask`` set."""
        result = 0
        for bit in range(64):
            if mask >> bit & 1:
                result |= self.flag(bit)
        return result

    def mapcount_is(self, value: int | None) -> int:
        """Pages whose 32-bit ``_mapcount``/``page_type`` equals ``value``."""
        if value is None:
            return 0
        result = (1 << self.count) - 1
        for index in range(4):
            table = _equal_table(value >> (8 * index) & 0xFF)
            result &= self._bits(self._layout.mapcount + index, table)
            if not result:
                break
        return result

    def low_bit(self, offset: int | None) -> int:
        """Pages whose little-endian word at ``offset`` has bit 0 set."""
        return 0 if offset is None else self._bits(offset, _BIT_TABLES[0])


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
    found: dict[str, int] = {}

    def take(category: str, bits: int) -> None:
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
    run: PageColumns, rules: PageRules, found: dict[str, int], head: int
) -> RunVerdict:
    """Turn multi-page heads into ranges, walking them in pfn order.

    A page inside an earlier range is skipped, as makedumpfile's walk jumps
    past every range it excludes.
    """
    verdict = RunVerdict()
    starters: dict[int, str] = {}
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


def _range_pages(run: PageColumns, rules: PageRules, category: str, index: int) -> int | None:
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
    run = columns.run
    found = 0
    for index in _set_bits(heads):
        if index + 1 >= run.count or (run.start_pfn + index) % _READ_CHUNK == _READ_CHUNK - 1:
            continue
        if rules.compound is CompoundLayout.FOLIO_FLAGS and rules.hugetlb_flag is not None:
            hit = bool(run.flags[index + 1] >> rules.hugetlb_flag & 1)
        elif rules.dtor_offset is not None and rules.hugetlb_dtor is not None:
            dtor = _field(run, index, rules.dtor_offset, rules.narrow_compound_fields)
            hit = dtor == rules.hugetlb_dtor
        else:
            hit = False
        if hit:
            found |= 1 << index
    return found


def _field(run: PageColumns, index: int, offset: int, narrow: bool) -> int:
    at = index * run.layout.size + offset
    width = 1 if narrow else 2
    return int.from_bytes(run.raw[at : at + width], "little")


def _set_bits(bits: int) -> Iterator[int]:
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low
