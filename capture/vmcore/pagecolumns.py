"""struct page fields for a run of pfns, as columns.

A page filter asks the same question of millions of struct pages. Looping
over them in Python costs about a microsecond each; instead, a run of struct
pages is read as one buffer and each field becomes a strided ``memoryview``
(one element per page) that C-speed operations such as ``bytes.translate``,
slicing and ``int`` bitsets can consume (docs/formats.md
§"Reading struct pages as columns").
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import Literal, NamedTuple

from capture.errors import CorruptError
from capture.vmcore.vmcoreinfo import VmcoreInfo

__all__ = ("PageColumns", "StructPageLayout")


class StructPageLayout(NamedTuple):
    """Size of ``struct page`` and the offsets of the fields the filter reads."""

    size: int
    flags: int
    mapping: int
    private: int
    mapcount: int
    """``_mapcount``, which is also ``page_type`` since Linux 4.18."""
    refcount: int | None
    compound_head: int | None
    """``compound_head`` (``compound_info`` from Linux 7.1); None on old kernels."""

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo) -> StructPageLayout:
        """Read the layout from ``SIZE(page)`` and ``OFFSET(page.*)``.

        :raises CorruptError: if a field the filter cannot do without is missing.
        """
        size = info.size("page")
        fields = {name: info.offset(f"page.{name}") for name in ("flags", "mapping", "private")}
        mapcount = info.offset("page._mapcount")
        missing = [name for name, value in fields.items() if value is None]
        if size is None or mapcount is None or missing:
            raise CorruptError("VMCOREINFO lacks SIZE(page) or an OFFSET(page.*) the filter needs")
        # Linux 4.6 renamed _count to _refcount; 7.1 renamed compound_head.
        refcount = info.offset("page._refcount")
        if refcount is None:
            refcount = info.offset("page._count")
        compound = info.offset("page.compound_head")
        if compound is None:
            compound = info.offset("page.compound_info")
        return cls(
            size=size,
            flags=fields["flags"] or 0,
            mapping=fields["mapping"] or 0,
            private=fields["private"] or 0,
            mapcount=mapcount,
            refcount=refcount,
            compound_head=compound,
        )


class PageColumns:
    """The struct pages of pfns ``[start_pfn, start_pfn + count)``.

    Each field is a sequence with one element per page. When the layout is
    aligned (it always is on x86_64) the sequences are zero-copy strided
    memoryviews; otherwise they are decoded lists.
    """

    def __init__(self, start_pfn: int, raw: bytes, layout: StructPageLayout) -> None:
        if len(raw) % layout.size:
            raise ValueError("raw struct page data must hold whole struct pages")
        self.start_pfn = start_pfn
        self.count = len(raw) // layout.size
        self.raw = raw
        self.layout = layout

    @property
    def end_pfn(self) -> int:
        """The first pfn after this run."""
        return self.start_pfn + self.count

    @property
    def flags(self) -> Sequence[int]:
        """``page.flags`` (u64)."""
        return self.u64(self.layout.flags)

    @property
    def mapping(self) -> Sequence[int]:
        """``page.mapping`` (u64)."""
        return self.u64(self.layout.mapping)

    @property
    def private(self) -> Sequence[int]:
        """``page.private`` (u64)."""
        return self.u64(self.layout.private)

    @property
    def mapcount(self) -> Sequence[int]:
        """``page._mapcount`` / ``page_type`` as an unsigned 32-bit value."""
        return self.u32(self.layout.mapcount)

    @property
    def compound_head(self) -> Sequence[int] | None:
        """``page.compound_head`` (u64; bit 0 set on tail pages), if the kernel has it."""
        offset = self.layout.compound_head
        return None if offset is None else self.u64(offset)

    def u64(self, offset: int) -> Sequence[int]:
        """The little-endian u64 at ``offset`` in every struct page."""
        return self._column(offset, 8, "Q")

    def u32(self, offset: int) -> Sequence[int]:
        """The little-endian u32 at ``offset`` in every struct page."""
        return self._column(offset, 4, "I")

    def _column(self, offset: int, width: int, code: Literal["Q", "I"]) -> Sequence[int]:
        size = self.layout.size
        if offset < 0 or offset + width > size:
            raise ValueError(f"field at {offset}+{width} lies outside struct page")
        if sys.byteorder == "little" and size % width == 0 and offset % width == 0:
            view: memoryview[int] = memoryview(self.raw).cast(code)
            return view[offset // width :: size // width]
        # Slow path for layouts no x86_64 kernel has; kept for other architectures.
        unpack = struct.Struct("<" + code).unpack_from
        return [unpack(self.raw, index * size + offset)[0] for index in range(self.count)]
