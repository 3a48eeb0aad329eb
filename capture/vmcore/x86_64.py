"""x86_64 virtual-to-physical translation without debug info.

Everything comes from VMCOREINFO and the PT_LOADs (docs/formats.md
§"Address translation (x86_64)").
Memory is reached only through an injected ``read_phys(paddr, size)``, so this
module is tested on plain byte arrays and knows nothing of file formats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from capture.errors import NoDataError
from capture.vmcore.elfcore import LoadSegment
from capture.vmcore.vmcoreinfo import VmcoreInfo

__all__ = ("START_KERNEL_MAP", "X86_64Layout", "X86_64Translator", "layout_from_vmcore")

ReadPhys = Callable[[int, int], bytes]

START_KERNEL_MAP = 0xFFFFFFFF80000000
"""``__START_KERNEL_map``: where the kernel image is mapped (before KASLR)."""

_PAGE_OFFSET_4LEVEL = 0xFFFF888000000000
_PAGE_OFFSET_5LEVEL = 0xFF11000000000000
_DEFAULT_KERNEL_IMAGE_SIZE = 1 << 30
_ENTRY_ADDRESS_MASK = 0x000FFFFFFFFFF000
_PRESENT = 1 << 0
_PSE = 1 << 7
_CACHE_LIMIT = 1 << 16
_PAGE_SHIFTS = (30, 21, 12)


class X86_64Layout(NamedTuple):
    """The facts translation needs, derived once when a vmcore is opened."""

    page_offset: int
    """Base of the direct map (``page_offset_base``, randomised by KASLR)."""
    phys_base: int
    """Physical offset of the kernel image; negative when loaded below 16 MiB."""
    kernel_image_size: int
    levels: int
    """4 or 5 (``NUMBER(pgtable_l5_enabled)``)."""
    sme_mask: int
    """AMD memory-encryption bit, cleared from every page-table entry."""
    top_table: int | None
    """Physical address of ``init_top_pgt``; None when VMCOREINFO lacks it."""
    direct_map_size: int
    """Bytes of the direct map the fast path trusts: the RAM the PT_LOADs cover.

    Not 2^MAX_PHYSMEM_BITS: with KASLR the vmalloc and vmemmap regions may
    start well within 64 TiB of ``page_offset``, but never below the end of RAM.
    """


def layout_from_vmcore(info: VmcoreInfo, segments: Iterable[LoadSegment]) -> X86_64Layout:
    """Derive the layout from VMCOREINFO and the PT_LOADs (docs/formats.md §"Derived values")."""
    segments = list(segments)
    levels = 5 if info.number("pgtable_l5_enabled") == 1 else 4
    phys_base = info.number("phys_base")
    if phys_base is None:
        phys_base = _phys_base_from_segments(segments)
    image_size = info.number("KERNEL_IMAGE_SIZE") or _DEFAULT_KERNEL_IMAGE_SIZE
    top_symbol = next(
        (
            address
            for name in ("init_top_pgt", "swapper_pg_dir", "init_level4_pgt")
            if (address := info.symbol(name)) is not None
        ),
        None,
    )
    page_offset = _page_offset_from_segments(segments)
    ram_end = max((segment.end for segment in segments), default=0)
    top_table = None
    if top_symbol is not None and START_KERNEL_MAP <= top_symbol < START_KERNEL_MAP + image_size:
        top_table = top_symbol - START_KERNEL_MAP + phys_base
    return X86_64Layout(
        page_offset=page_offset if page_offset is not None else _default_page_offset(levels),
        phys_base=phys_base,
        kernel_image_size=image_size,
        levels=levels,
        sme_mask=info.number("sme_mask") or 0,
        top_table=top_table,
        # Without a PT_LOAD that shows page_offset (KASLR moves it), trust no
        # fast path for the direct map: the page tables translate it correctly.
        direct_map_size=0 if page_offset is None else _round_up(ram_end, 1 << 30),
    )


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _phys_base_from_segments(segments: list[LoadSegment]) -> int:
    for segment in segments:
        if segment.vaddr >= START_KERNEL_MAP:
            return segment.paddr - (segment.vaddr - START_KERNEL_MAP)
    return 0


def _page_offset_from_segments(segments: list[LoadSegment]) -> int | None:
    # makedumpfile takes the last direct-map segment; they all agree anyway.
    candidates = [
        segment.vaddr - segment.paddr
        for segment in segments
        if 0xFF00000000000000 <= segment.vaddr < START_KERNEL_MAP
    ]
    return candidates[-1] if candidates else None


def _default_page_offset(levels: int) -> int:
    return _PAGE_OFFSET_5LEVEL if levels == 5 else _PAGE_OFFSET_4LEVEL


class X86_64Translator:
    """Translates kernel virtual addresses: direct map, kernel image, page tables.

    Page-table results are cached per mapping (1 GiB, 2 MiB or 4 KiB), so a
    walk over vmemmap costs one walk per 2 MiB.
    """

    def __init__(self, layout: X86_64Layout, read_phys: ReadPhys) -> None:
        self.layout = layout
        self._read_phys = read_phys
        self._entry_mask = _ENTRY_ADDRESS_MASK & ~layout.sme_mask
        self._cache: dict[int, dict[int, int]] = {shift: {} for shift in _PAGE_SHIFTS}

    def translate(self, vaddr: int) -> int:
        """Return the physical address of ``vaddr``.

        :raises NoDataError: if the address is not mapped or a table is unreadable.
        """
        return self.mapping(vaddr)[0]

    @property
    def phys_base(self) -> int:
        """Physical load offset of the kernel image."""
        return self.layout.phys_base

    def in_direct_map(self, vaddr: int) -> bool:
        """Whether ``vaddr`` lies in the direct map of RAM."""
        return 0 <= vaddr - self.layout.page_offset < self.layout.direct_map_size

    def mapping(self, vaddr: int) -> tuple[int, int]:
        """Return ``(paddr, length)``: ``length`` bytes from ``vaddr`` map contiguously."""
        layout = self.layout
        offset = vaddr - layout.page_offset
        if 0 <= offset < layout.direct_map_size:
            return offset, layout.direct_map_size - offset
        offset = vaddr - START_KERNEL_MAP
        if 0 <= offset < layout.kernel_image_size:
            return offset + layout.phys_base, layout.kernel_image_size - offset
        for shift, cache in self._cache.items():
            base = cache.get(vaddr >> shift)
            if base is not None:
                within = vaddr & ((1 << shift) - 1)
                return base + within, (1 << shift) - within
        return self._walk(vaddr)

    def _walk(self, vaddr: int) -> tuple[int, int]:
        layout = self.layout
        if layout.top_table is None:
            raise NoDataError(f"cannot translate {vaddr:#x}: no page-table root in VMCOREINFO")
        if not _canonical(vaddr, layout.levels):
            raise NoDataError(f"{vaddr:#x} is not a canonical address")
        table = layout.top_table
        shifts = (48, 39, 30, 21, 12) if layout.levels == 5 else (39, 30, 21, 12)
        for shift in shifts:
            entry = self._entry(table, (vaddr >> shift) & 0x1FF, vaddr)
            large = shift in (30, 21) and entry & _PSE
            if shift == 12 or large:
                base = entry & self._entry_mask & ~((1 << shift) - 1)
                return self._remember(vaddr, shift, base)
            table = entry & self._entry_mask
        raise AssertionError("unreachable")

    def _entry(self, table: int, index: int, vaddr: int) -> int:
        entry = int.from_bytes(self._read_phys(table + index * 8, 8), "little")
        if not entry & _PRESENT:
            raise NoDataError(f"{vaddr:#x} is not mapped")
        return entry

    def _remember(self, vaddr: int, shift: int, base: int) -> tuple[int, int]:
        cache = self._cache[shift]
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[vaddr >> shift] = base
        within = vaddr & ((1 << shift) - 1)
        return base + within, (1 << shift) - within


def _canonical(vaddr: int, levels: int) -> bool:
    bits = 57 if levels == 5 else 48
    top = vaddr >> (bits - 1)
    return top == 0 or top == (1 << (65 - bits)) - 1
