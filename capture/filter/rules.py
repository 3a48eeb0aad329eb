"""How this kernel marks each kind of page, decided once from VMCOREINFO.

Kernel versions are told apart by which keys VMCOREINFO has, never by
OSRELEASE (distributions backport), except for two field widths that left no
trace in VMCOREINFO (see :attr:`PageRules.narrow_compound_fields`).
Each branch names the kernel change that made it necessary.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from capture.filter.levels import DumpLevel
from capture.vmcore.vmcoreinfo import VmcoreInfo

__all__ = ("CompoundLayout", "PageRules")


class CompoundLayout(enum.Enum):
    """Where the first tail page keeps a compound page's order (and dtor)."""

    FOLIO_FLAGS = "folio_flags"
    """Linux 6.6+, commit ebc1baf5c9b4 ("mm: free up a slot in the first tail
    page"): the order is the low byte of the first tail's flags."""
    FOLIO_FIELDS = "folio_fields"
    """Linux 6.3-6.5: ``folio._folio_order`` and ``folio._folio_dtor``."""
    PAGE_FIELDS = "page_fields"
    """Linux 4.4-6.2: ``page.compound_order`` and ``page.compound_dtor``."""
    LRU = "lru"
    """Before 4.4: the order in ``lru.prev``, the dtor a function pointer in ``lru.next``."""
    NONE = "none"
    """No way to tell: every compound page counts as order 0."""


def _u32(value: int | None) -> int | None:
    # Page types are compared as 32-bit quantities (makedumpfile casts to int).
    return None if value is None else value & 0xFFFFFFFF


class PageRules(NamedTuple):
    """Flag bits and page-type values of the crashed kernel."""

    lru: int | None
    private: int | None
    swapcache: int | None
    swapbacked: int | None
    head_mask: int
    hwpoison: int | None
    slab_flag: int | None
    """PG_slab; gone since Linux 6.10, commit 46df8e73a4a3 (slab became a page type)."""
    buddy_flag: int | None
    """PG_buddy, for kernels before 2.6.38."""
    slab_type: int | None
    buddy_type: int | None
    offline_type: int | None
    hugetlb_type: int | None
    """Linux 6.9+, commit d99e3140a4d3 ("mm: turn folio_test_hugetlb into a PageType")."""
    unaccepted_type: int | None
    hugetlb_flag: int | None
    """PG_hugetlb in the first tail's flags: Linux 6.6 to 6.8."""
    hugetlb_dtor: int | None
    max_order: int
    """LENGTH(zone.free_area): buddy orders must be below it."""
    compound: CompoundLayout
    order_offset: int
    """Offset of the order from the *head* struct page (FOLIO_FIELDS, PAGE_FIELDS, LRU)."""
    dtor_offset: int | None
    narrow_compound_fields: bool
    """Order and dtor are u8 from Linux 4.16 (u16 before); only OSRELEASE tells."""

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo, struct_page_size: int) -> PageRules:
        """Read the rules; absent keys disable the test that needs them."""
        number = info.number
        compound, order_offset, dtor_offset = _compound_layout(info, struct_page_size)
        return cls(
            lru=number("PG_lru"),
            private=number("PG_private"),
            swapcache=number("PG_swapcache"),
            swapbacked=number("PG_swapbacked"),
            head_mask=number("PG_head_mask") or 0,
            hwpoison=number("PG_hwpoison"),
            slab_flag=number("PG_slab"),
            buddy_flag=number("PG_buddy"),
            slab_type=_u32(number("PAGE_SLAB_MAPCOUNT_VALUE")),
            buddy_type=_u32(number("PAGE_BUDDY_MAPCOUNT_VALUE")),
            offline_type=_u32(number("PAGE_OFFLINE_MAPCOUNT_VALUE")),
            hugetlb_type=_u32(number("PAGE_HUGETLB_MAPCOUNT_VALUE")),
            unaccepted_type=_u32(number("PAGE_UNACCEPTED_MAPCOUNT_VALUE")),
            hugetlb_flag=number("PG_hugetlb"),
            hugetlb_dtor=number("HUGETLB_PAGE_DTOR"),
            max_order=info.length("zone.free_area") or 11,
            compound=compound,
            order_offset=order_offset,
            dtor_offset=dtor_offset,
            narrow_compound_fields=_kernel_version(info.osrelease) >= (4, 16),
        )

    @property
    def has_buddy_test(self) -> bool:
        """Whether free pages can be recognised from their struct page."""
        # The page-type test comes first: with a vmlinux, 6.10+ kernels still
        # have a PG_buddy enum value that means nothing (makedumpfile 306eddf).
        return self.buddy_type is not None or self.buddy_flag is not None

    def walk_needed(self, level: DumpLevel) -> bool:
        """Whether struct pages must be read at this level.

        Even at level 0 they are, when the kernel can mark hardware-poisoned
        pages: reading those would fault the capture kernel.
        """
        wanted = DumpLevel.CACHE | DumpLevel.CACHE_PRIVATE | DumpLevel.USER
        return bool(
            level & wanted
            or self.hwpoison is not None
            or (level & DumpLevel.FREE and self.has_buddy_test)
        )


def _compound_layout(info: VmcoreInfo, page_size: int) -> tuple[CompoundLayout, int, int | None]:
    if (
        info.number("PAGE_HUGETLB_MAPCOUNT_VALUE") is not None
        or info.number("PG_hugetlb") is not None
    ):
        return CompoundLayout.FOLIO_FLAGS, 0, None
    folio_order = info.offset("folio._folio_order")
    if folio_order is not None:
        # Folio offsets count from the head; the fields live in the first tail.
        folio_dtor = info.offset("folio._folio_dtor")
        return CompoundLayout.FOLIO_FIELDS, folio_order, folio_dtor
    page_order = info.offset("page.compound_order")
    if page_order is not None:
        page_dtor = info.offset("page.compound_dtor")
        return (
            CompoundLayout.PAGE_FIELDS,
            page_size + page_order,
            None if page_dtor is None else page_size + page_dtor,
        )
    lru, prev, next_ = (
        info.offset("page.lru"),
        info.offset("list_head.prev"),
        info.offset("list_head.next"),
    )
    if lru is not None and prev is not None and next_ is not None:
        return CompoundLayout.LRU, page_size + lru + prev, page_size + lru + next_
    return CompoundLayout.NONE, 0, None


def _kernel_version(release: str | None) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(match.group(1)), int(match.group(2))) if match else (99, 0)
