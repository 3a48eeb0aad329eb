"""Finding the crashed kernel's struct pages (its mem_map) without debug info.

x86_64 kernels use SPARSEMEM_VMEMMAP: ``mem_section`` describes memory in
128 MiB sections, and each present section's encoded ``section_mem_map``
yields the address of its struct pages (docs/formats.md §"Finding struct pages"). With vmemmap
every section encodes the same base, so one value describes all of memory;
decoding every section anyway cross-checks that value against corruption.
FLATMEM (one ``mem_map`` array) and classic SPARSEMEM are handled too.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import NamedTuple

from capture.errors import CorruptError, NoDataError
from capture.logs import log
from capture.vmcore.kernel import Vmcore
from capture.vmcore.pagecolumns import PageColumns, StructPageLayout

__all__ = ("MemMap",)


SECTION_MARKED_PRESENT = 1 << 0
SECTION_FLAG_MASK = (1 << 6) - 1
"""Low flag bits of ``section_mem_map``. Six, not makedumpfile's five: Linux
6.15 added SECTION_IS_VMEMMAP_PREINIT below SECTION_MAP_LAST_BIT."""

_DEFAULT_SECTION_SIZE_BITS = 27
_RUN_PAGES = 32768
"""struct pages read per run: 2 MiB of vmemmap, one large-page translation."""


class _Sparse(NamedTuple):
    pfn_shift: int
    """log2 of pfns per section."""
    bases: dict[int, int]
    """Section number to its decoded base: struct page of pfn = base + pfn * SIZE(page)."""


class MemMap:
    """Where each pfn's struct page is, and struct pages read as columns.

    :raises CorruptError: if VMCOREINFO describes no usable memory model, or
        mem_section decodes to nothing plausible.
    """

    def __init__(self, vmcore: Vmcore) -> None:
        self._vmcore = vmcore
        info = vmcore.info
        self.layout = StructPageLayout.from_vmcoreinfo(info)
        self.max_pfn = vmcore.max_pfn
        self.vmemmap: int | None = None
        self._flat_base: int | None = None
        self._sparse: _Sparse | None = None
        self.problems: list[str] = []
        if info.symbol("mem_section") is not None and info.size("mem_section"):
            self._sparse = self._decode_sparse()
            self.vmemmap = self._find_vmemmap(self._sparse)
            self.model = "sparsemem_vmemmap" if self.vmemmap is not None else "sparsemem"
        elif (mem_map := info.symbol("mem_map")) is not None:
            self._flat_base = vmcore.read_u64(mem_map)
            self.model = "flatmem"
        else:
            raise CorruptError("VMCOREINFO describes no memory model (no mem_section, no mem_map)")

    def page_address(self, pfn: int) -> int | None:
        """Virtual address of ``pfn``'s struct page, or None if it has none."""
        base = self._base_for(pfn)
        return None if base is None else base + pfn * self.layout.size

    def columns(self, start_pfn: int, end_pfn: int) -> Iterator[PageColumns]:
        """Read the struct pages of ``[start_pfn, end_pfn)`` as columns.

        Yields runs in pfn order. Pfns without a struct page in the dump
        (no section, unmapped or missing vmemmap) are simply not yielded:
        a filter must keep such pages, since it cannot classify them.
        """
        for run_start, run_end, base in self._contiguous_runs(start_pfn, end_pfn):
            for chunk in range(run_start, run_end, _RUN_PAGES):
                yield from self._read_run(chunk, min(run_end, chunk + _RUN_PAGES), base)

    def _read_run(self, start_pfn: int, end_pfn: int, base: int) -> Iterator[PageColumns]:
        size = self.layout.size
        first = base + start_pfn * size
        pending: list[bytes] = []
        pending_at = first
        for vaddr, data, length in self._vmcore.virt_chunks(first, (end_pfn - start_pfn) * size):
            if data is not None:
                pending.append(data)
                continue
            yield from self._whole_pages(pending_at, b"".join(pending), base)
            pending, pending_at = [], vaddr + length
            log.debug("struct pages at %#x+%#x are not in the dump", vaddr, length)
        yield from self._whole_pages(pending_at, b"".join(pending), base)

    def _whole_pages(self, vaddr: int, data: bytes, base: int) -> Iterator[PageColumns]:
        """The struct pages lying wholly inside ``data`` (read from ``vaddr``)."""
        size = self.layout.size
        skip = -(vaddr - base) % size
        count = (len(data) - skip) // size
        if count > 0:
            pfn = (vaddr + skip - base) // size
            yield PageColumns(pfn, data[skip : skip + count * size], self.layout)

    def _contiguous_runs(self, start_pfn: int, end_pfn: int) -> Iterator[tuple[int, int, int]]:
        """``(start, end, base)`` runs whose struct pages are virtually contiguous."""
        end_pfn = min(end_pfn, self.max_pfn)
        if self._sparse is None:
            if self._flat_base is not None and start_pfn < end_pfn:
                yield start_pfn, end_pfn, self._flat_base
            return
        shift = self._sparse.pfn_shift
        pfn = start_pfn
        while pfn < end_pfn:
            section_end = min(end_pfn, ((pfn >> shift) + 1) << shift)
            base = self._base_for(pfn)
            if base is not None:
                yield pfn, section_end, base
            pfn = section_end

    def _base_for(self, pfn: int) -> int | None:
        if pfn < 0 or pfn >= self.max_pfn:
            return None
        if self._sparse is None:
            return self._flat_base
        base = self._sparse.bases.get(pfn >> self._sparse.pfn_shift)
        if base is None:
            return None
        return self.vmemmap if self.vmemmap is not None else base

    def _decode_sparse(self) -> _Sparse:
        """Decode mem_section into per-section bases (docs/formats.md §"Finding struct pages")."""
        vmcore, info = self._vmcore, self._vmcore.info
        section_bits = info.number("SECTION_SIZE_BITS") or _DEFAULT_SECTION_SIZE_BITS
        pfn_shift = section_bits - vmcore.page_shift
        if not 0 < pfn_shift < 40:
            raise CorruptError(f"NUMBER(SECTION_SIZE_BITS)={section_bits} is implausible")
        nr_sections = -(-self.max_pfn // (1 << pfn_shift))
        symbol = info.symbol("mem_section")
        assert symbol is not None
        # VMCOREINFO exports the root array's address; a vmlinux-style value is
        # the address of the pointer to it. Try the first, then dereference once.
        attempts = [symbol]
        with contextlib.suppress(NoDataError):
            attempts.append(vmcore.read_u64(symbol))
        reasons = []
        for root_array in attempts:
            try:
                bases = self._decode_sections(root_array, nr_sections, pfn_shift)
            except (CorruptError, NoDataError) as error:
                reasons.append(str(error))
                continue
            if bases:
                return _Sparse(pfn_shift, bases)
            reasons.append("no present section")
        raise CorruptError(f"mem_section cannot be decoded: {'; '.join(reasons)}")

    def _decode_sections(self, root_array: int, nr_sections: int, pfn_shift: int) -> dict[int, int]:
        vmcore, info = self._vmcore, self._vmcore.info
        section_size = info.size("mem_section") or 0
        map_offset = info.offset("mem_section.section_mem_map") or 0
        if not 0 < section_size <= vmcore.page_size or map_offset + 8 > section_size:
            raise CorruptError(f"SIZE(mem_section)={section_size} is implausible")
        per_root = vmcore.page_size // section_size if self._is_extreme(section_size) else 1
        nr_roots = -(-nr_sections // per_root)
        roots = _u64s(vmcore.read_virt(root_array, 8 * nr_roots)) if per_root > 1 else None
        bases: dict[int, int] = {}
        for nr in range(nr_sections):
            if roots is None:
                section = root_array + nr * section_size
            elif roots[nr // per_root]:
                section = roots[nr // per_root] + (nr % per_root) * section_size
            else:
                continue
            encoded = vmcore.read_u64(section + map_offset)
            coded = encoded & ~SECTION_FLAG_MASK
            if not encoded & SECTION_MARKED_PRESENT or not coded:
                continue
            mem_map = (coded + (nr << pfn_shift) * self.layout.size) & (2**64 - 1)
            if mem_map < vmcore.arch.kernel_half:
                raise CorruptError(f"section {nr} decodes to {mem_map:#x}, not a kernel address")
            bases[nr] = coded
        return bases

    def _is_extreme(self, section_size: int) -> bool:
        info = self._vmcore.info
        length = info.length("mem_section")
        if length is None:
            return True
        levels5 = info.number("pgtable_l5_enabled") == 1
        physmem_bits = info.number("MAX_PHYSMEM_BITS") or (52 if levels5 else 46)
        section_bits = info.number("SECTION_SIZE_BITS") or _DEFAULT_SECTION_SIZE_BITS
        nr_mem_sections = 1 << max(0, physmem_bits - section_bits)
        per_root = self._vmcore.page_size // section_size
        return length == -(-nr_mem_sections // per_root)

    def _find_vmemmap(self, sparse: _Sparse) -> int | None:
        """The vmemmap base, or None for classic SPARSEMEM.

        Classic SPARSEMEM sections point at arrays allocated in the direct
        map; vmemmap sections all encode ``vmemmap_base`` and point outside
        it. A majority decides (a tie goes to vmemmap, which every x86_64
        distribution kernel uses), ``SYMBOL(vmemmap)`` (Linux 6.9+) settles
        it outright. Sections that disagree are corrupt: they are dropped,
        so their pages stay unfiltered, and reported.
        """
        translator, size = self._vmcore.translator, self.layout.size
        outside = [
            base
            for nr, base in sparse.bases.items()
            if not translator.in_direct_map(base + (nr << sparse.pfn_shift) * size)
        ]
        exported = self._vmcore.info.symbol("vmemmap")
        if exported is not None and exported in sparse.bases.values():
            best = exported
        elif outside and len(outside) * 2 >= len(sparse.bases):
            counts = Counter(outside)
            best = max(counts, key=counts.__getitem__)  # as most_common(1), without heapq
        else:
            return None
        for nr, base in list(sparse.bases.items()):
            if base != best:
                del sparse.bases[nr]
                message = f"mem_section {nr} encodes {base:#x}, not vmemmap {best:#x}; ignored"
                self.problems.append(message)
                log.warning("%s: %s", self._vmcore.path, message)
        return best


def _u64s(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data), 8)]
