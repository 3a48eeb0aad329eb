"""Synthetic x86_64 ELF vmcores (the /proc/vmcore layout) for unit tests.

It follows docs/formats.md (§"The input: /proc/vmcore", §"Address translation
(x86_64)", §"Finding struct pages", §"The kernel log") and, where that is
silent, the kernel sources it names. It never imports `capture`: it is the
independent half of every cross-check.

Memory is sparse while building (a dict of page buffers, plus ranges of one
shared page for the mem_map) and only becomes a flat file in build(), so tests
can use large-page layouts cheaply. For machines too big for one bytes object
(64 GiB to 1 TiB of RAM), write_sparse() streams the same image into a sparse
file instead: only the pages that exist take disk (the mem_map is 1/64 of RAM:
16 GiB at 1 TiB), the rest are holes; on a filesystem that shares blocks
(XFS with reflink, btrfs) a page repeated from one buffer is written once and
cloned after (the mem_map's runs too), so 1 TiB with 64 GiB of one data
page takes about 1 GB. Layout:

* The kernel image [kernel_paddr, +kernel_size) holds init_top_pgt (the top
  page table), init_uts_ns and the small variables (prb, log_buf, mem_map ...).
* A "reserved" bump area lies in the largest RAM range: from the first 2 MiB
  boundary after the image if the image is in that range, else from the
  range's first 2 MiB boundary. It holds every lower-level page table, the
  vmemmap backing, mem_section roots, mem_map arrays and the log buffers.
* The builder writes its own structures first, then set_page() contents, then
  the caller's write_phys() bytes, then the corruption hooks. Building twice
  gives the same layout, so a test may build, look up an address, poke it with
  write_phys() and build again.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MASK64 = (1 << 64) - 1
ID_MASK = MASK64 & ~(3 << 62)  # printk descriptor ids: the top 2 bits are the state
START_KERNEL_MAP = 0xFFFFFFFF80000000
START_KERNEL = 0xFFFFFFFF81000000
KERNEL_IMAGE_SIZE = 1 << 30
SECTION_SIZE_BITS = 27
STRUCT_PAGE_SIZE = 64
MEM_SECTION_SIZE = 32

PAGE_SIZES = {"4K": 1 << 12, "2M": 1 << 21, "1G": 1 << 30}
_SHIFT_OF = {1 << 12: 12, 1 << 21: 21, 1 << 30: 30}

# Page-table entry bits. Accessed/dirty and NX are set like a real kernel does,
# so readers that forget to mask bits 0-11 and 52-63 fail here too.
PTE_PRESENT = 1 << 0
PTE_RW = 1 << 1
PTE_ACCESSED = 1 << 5
PTE_DIRTY = 1 << 6
PTE_PSE = 1 << 7
PTE_NX = 1 << 63
PTE_ADDR_MASK = 0x000FFFFFFFFFF000
_TABLE_FLAGS = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY

# struct page offsets (6.1 kernel)
PAGE_OFF = {"flags": 0, "lru": 8, "compound_head": 8, "mapping": 24, "private": 40,
            "_mapcount": 48, "_refcount": 52, "compound_dtor": 16, "compound_order": 17}

# mem_section flag bits (include/linux/mmzone.h)
SECTION_MARKED_PRESENT = 1 << 0
SECTION_HAS_MEM_MAP = 1 << 1
SECTION_IS_ONLINE = 1 << 2
SECTION_IS_EARLY = 1 << 3

# printk_info / prb_* layout of a 6.1 kernel
PRB_SIZE, DESC_RING_SIZE, DESC_SIZE, INFO_SIZE = 88, 48, 24, 88
DESC_FINALIZED, DESC_COMMITTED, DESC_REUSABLE = 2, 1, 3
NO_LPOS = 0x3  # lpos of a record without text
LOG_FLAGS_LEVEL = (6 << 5) | 2  # level 6 (info) in the top 3 bits, LOG_NEWLINE in flags


@dataclass
class LogRecord:
    text: bytes
    ts_nsec: int
    caller_id: int = 0  # bit 31 set = CPU id, else thread id
    state: int = DESC_FINALIZED  # lockless only: descriptor state (1 committed, 2 finalized)


@dataclass
class StructPage:  # fields of one struct page (x86_64, SIZE(page)=64)
    flags: int = 0
    compound_head: int = 0
    mapping: int = 0
    private: int = 0
    mapcount: int = -1  # u32 field _mapcount / page_type, stored as 32-bit
    refcount: int = 0

    def pack(self) -> bytes:
        buf = bytearray(STRUCT_PAGE_SIZE)
        struct.pack_into("<Q", buf, PAGE_OFF["flags"], self.flags & MASK64)
        struct.pack_into("<Q", buf, PAGE_OFF["compound_head"], self.compound_head & MASK64)
        struct.pack_into("<Q", buf, PAGE_OFF["mapping"], self.mapping & MASK64)
        struct.pack_into("<Q", buf, PAGE_OFF["private"], self.private & MASK64)
        struct.pack_into("<I", buf, PAGE_OFF["_mapcount"], self.mapcount & 0xFFFFFFFF)
        struct.pack_into("<I", buf, PAGE_OFF["_refcount"], self.refcount & 0xFFFFFFFF)
        return bytes(buf)


@dataclass(frozen=True)
class Mapping:
    """One contiguous virtual → physical range of the builder's page tables."""

    vaddr: int
    paddr: int
    size: int
    page_size: int


def _roundup(v: int, a: int) -> int:
    return (v + a - 1) // a * a


def _rounddown(v: int, a: int) -> int:
    return v // a * a


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


class PhysMem:
    """Sparse physical memory: only pages that were written exist.

    A page may also be a shared, read-only `bytes` (see share()), copied into
    its own bytearray on its first write. Long runs of one shared page (the
    default struct pages: 4 Mi pages of them at 1 TiB) are kept as a range
    (see share_run()), not as a dict entry per page, and are written out with
    one system call per 4 MiB."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.pages: dict[int, bytearray | bytes] = {}
        self.runs: list[tuple[int, int, bytes]] = []  # [start, end) pfns of one page, sorted
        self._run_starts: list[int] = []

    def copy(self) -> PhysMem:
        other = PhysMem(self.page_size)
        other.pages = {pfn: buf if isinstance(buf, bytes) else bytearray(buf)
                       for pfn, buf in self.pages.items()}
        other.runs, other._run_starts = list(self.runs), list(self._run_starts)
        return other

    def share(self, pfns: Iterable[int], page: bytes) -> None:
        """Make every page of `pfns` exactly `page` (one buffer for all of them)."""
        page = self._checked(page)
        for pfn in pfns:
            self.pages[pfn] = page

    def share_run(self, start: int, end: int, page: bytes) -> None:
        """Make every page of pfns [start, end) exactly `page`, at the cost of one
        list entry. The range must not overlap an earlier run."""
        page = self._checked(page)
        if start >= end:
            return
        i = bisect.bisect(self._run_starts, start)
        if (i and self.runs[i - 1][1] > start) or (i < len(self.runs) and self.runs[i][0] < end):
            raise ValueError(f"shared run {start:#x}-{end:#x} overlaps another")
        stale = ([pfn for pfn in self.pages if start <= pfn < end] if len(self.pages) < end - start
                 else [pfn for pfn in range(start, end) if pfn in self.pages])
        for pfn in stale:
            del self.pages[pfn]
        self.runs.insert(i, (start, end, page))
        self._run_starts.insert(i, start)

    def _checked(self, page: bytes) -> bytes:
        if len(page) != self.page_size:
            raise ValueError(f"a shared page must be {self.page_size} bytes")
        return bytes(page)

    def get(self, pfn: int) -> bytearray | bytes | None:
        """The page of `pfn`, None if it was never written."""
        page = self.pages.get(pfn)
        return page if page is not None else self._run_page(pfn)

    def _run_page(self, pfn: int) -> bytes | None:
        i = bisect.bisect(self._run_starts, pfn) - 1
        return self.runs[i][2] if i >= 0 and pfn < self.runs[i][1] else None

    def write(self, paddr: int, data: bytes) -> None:
        view, pos, ps = memoryview(data), 0, self.page_size
        while pos < len(view):
            pfn, off = divmod(paddr + pos, ps)
            n = min(ps - off, len(view) - pos)
            page = self.pages.get(pfn)
            if not isinstance(page, bytearray):  # absent, or shared: copy on write
                page = self.get(pfn)
                page = self.pages[pfn] = bytearray(page if page is not None else ps)
            page[off:off + n] = view[pos:pos + n]
            pos += n

    def read(self, paddr: int, size: int) -> bytes:
        out, pos, ps = bytearray(), 0, self.page_size
        while pos < size:
            pfn, off = divmod(paddr + pos, ps)
            n = min(ps - off, size - pos)
            page = self.get(pfn)
            out += page[off:off + n] if page is not None else bytes(n)
            pos += n
        return bytes(out)

    def write_u64(self, paddr: int, value: int) -> None:
        self.write(paddr, struct.pack("<Q", value & MASK64))

    def read_u64(self, paddr: int) -> int:
        return int(struct.unpack("<Q", self.read(paddr, 8))[0])

    def extents(self, start: int, end: int) -> Iterator[tuple[int, list[bytes | bytearray]]]:
        """(first pfn, pages) of every stretch of consecutive pages that exist in
        pfns [start, end), at most _EXTENT_PAGES each. The shared runs come first,
        then the single pages, which may lie inside a run and must win over it:
        write them in this order. Pages of zeros are left out (a hole reads as zeros)."""
        zero = bytes(self.page_size)
        for run_start, run_end, page in self.runs:
            lo, hi = max(run_start, start), min(run_end, end)
            if page != zero:
                for first in range(lo, hi, _EXTENT_PAGES):
                    yield first, [page] * min(_EXTENT_PAGES, hi - first)
        group: list[bytes | bytearray] = []
        first = prev = -2
        for pfn in sorted(pfn for pfn in self.pages if start <= pfn < end):
            page = self.pages[pfn]
            if page == zero and self._run_page(pfn) is None:
                continue
            if pfn != prev + 1 or len(group) == _EXTENT_PAGES:
                if group:
                    yield first, group
                first, group = pfn, []
            group.append(page)
            prev = pfn
        if group:
            yield first, group


class Bump:
    """Bump allocator over one physical range; allocations are never freed."""

    def __init__(self, start: int, end: int, what: str) -> None:
        self.cur, self.end, self.what = start, end, what

    def alloc(self, size: int, align: int) -> int:
        addr = _roundup(self.cur, align)
        if addr + size > self.end:
            raise ValueError(f"{self.what} too small: need {size:#x} bytes at {addr:#x}, "
                             f"ends at {self.end:#x}; give the builder more RAM")
        self.cur = addr + size
        return addr


class VmcoreBuilder:
    def __init__(self, *,
                 ram: Sequence[tuple[int, int]] = ((0x1000, 0x9F000), (0x100000, 64 << 20)),
                 kernel_paddr: int = 0x1000000,
                 kernel_size: int = 0x400000,
                 kaslr_offset: int = 0x14000000,
                 page_offset: int | None = None,
                 levels: int = 4,
                 sme_mask: int = 0,
                 direct_map_page: str = "2M",
                 vmemmap_page: str = "2M",
                 memory_model: str = "sparsemem_vmemmap",
                 vmemmap_base: int | None = None,
                 log: str = "lockless",
                 release: str | None = None,
                 cpus: int = 2,
                 crashtime: int | None = 1700000000,
                 page_size: int = 4096,
                 section_flags: int = (SECTION_MARKED_PRESENT | SECTION_HAS_MEM_MAP
                                       | SECTION_IS_ONLINE | SECTION_IS_EARLY),
                 prb_count_bits: int = 5,
                 prb_size_bits: int = 12,
                 prb_initial_id: int | None = None,
                 log_buf_len: int = 1 << 14,
                 log_align: int = 8,
                 log_caller_id: bool = True,
                 uts_name_offset: int | None = 0) -> None:
        self.ram = sorted((int(s), int(e)) for s, e in ram)
        self.kernel_paddr, self.kernel_size = kernel_paddr, kernel_size
        self.kaslr_offset, self.levels, self.sme_mask = kaslr_offset, levels, sme_mask
        self.direct_map_page, self.vmemmap_page = direct_map_page, vmemmap_page
        self.memory_model, self.log = memory_model, log
        # Readers (and makedumpfile) pick the printk format partly by version,
        # so the default release matches the era of the chosen log format.
        self.release = release if release is not None else _DEFAULT_RELEASE.get(log, "6.1.0-test")
        self.uts_name_offset = uts_name_offset
        self.cpus, self.crashtime, self.page_size = cpus, crashtime, page_size
        self.section_flags = section_flags
        self.prb_count_bits, self.prb_size_bits = prb_count_bits, prb_size_bits
        self.prb_initial_id = prb_initial_id
        self.log_buf_len, self.log_align, self.log_caller_id = log_buf_len, log_align, log_caller_id
        self.page_offset = page_offset if page_offset is not None else (
            0xFF11000000000000 if levels == 5 else 0xFFFF888000000000)
        self._vmemmap_base_arg = vmemmap_base
        self.text = START_KERNEL + kaslr_offset  # _text
        # __pa(_text) = _text - __START_KERNEL_map + phys_base
        self.phys_base = kernel_paddr - (self.text - START_KERNEL_MAP)
        self.max_pfn = _roundup(max(e for _, e in self.ram), page_size) // page_size
        self.vmcoreinfo_overrides: dict[str, str | None] = {}
        self.vmcoreinfo_extra: list[str] = []
        self._user_writes: list[tuple[int, bytes]] = []
        self._user_pages: dict[int, StructPage] = {}
        self._fills: list[tuple[Iterable[int], bytes]] = []
        self._records: list[LogRecord] = []
        self._hooks: list[Callable[[], None]] = []
        self._garble = False
        self._holes: list[tuple[int, int]] = []
        self.image: bytes | None = None
        self._check_args()
        self._reset_facts()

    # ---------------------------------------------------------------- checks

    def _check_args(self) -> None:
        if self.page_size != 4096:
            raise ValueError("x86_64 page tables need page_size 4096 (override PAGESIZE instead)")
        if self.levels not in (4, 5):
            raise ValueError("levels must be 4 or 5")
        for name in (self.direct_map_page, self.vmemmap_page):
            if name not in PAGE_SIZES:
                raise ValueError(f"page size {name!r} not in {sorted(PAGE_SIZES)}")
        if self.memory_model not in ("sparsemem_vmemmap", "sparsemem", "flatmem"):
            raise ValueError(f"unknown memory_model {self.memory_model!r}")
        if self.log not in ("lockless", "legacy", "plain", "none"):
            raise ValueError(f"unknown log {self.log!r}")
        self._check_ram()
        self._check_kernel()
        if self.page_offset % (1 << 30):
            raise ValueError("page_offset must be 1 GiB aligned (direct map may use 1G pages)")
        max_paddr = self.max_pfn * self.page_size
        if self.sme_mask & ~PTE_ADDR_MASK or (self.sme_mask and self.sme_mask < max_paddr):
            raise ValueError("sme_mask must be address bits 12..51 above all RAM")

    def _check_ram(self) -> None:
        prev_end = 0
        for start, end in self.ram:
            if not 0 <= start < end or start < prev_end:
                raise ValueError(f"bad or overlapping RAM range {start:#x}-{end:#x}")
            if start % self.page_size or end % self.page_size:
                raise ValueError("RAM ranges must be page aligned")
            prev_end = end

    def _check_kernel(self) -> None:
        end = self.kernel_paddr + self.kernel_size
        if self._ram_range_of(self.kernel_paddr, end) is None:
            raise ValueError("the kernel image must lie inside one RAM range")
        if self.kernel_paddr % self.page_size or self.kaslr_offset % self.page_size:
            raise ValueError("kernel_paddr and kaslr_offset must be page aligned")
        if self.kernel_size < 0x10000:
            raise ValueError("kernel_size must be at least 64 KiB")
        if self.text + self.kernel_size > START_KERNEL_MAP + KERNEL_IMAGE_SIZE:
            raise ValueError("_text + kernel_size is beyond KERNEL_IMAGE_SIZE")

    def _ram_range_of(self, start: int, end: int) -> tuple[int, int] | None:
        for rs, re_ in self.ram:
            if rs <= start and end <= re_:
                return rs, re_
        return None

    # ------------------------------------------------------------ public API

    def write_phys(self, paddr: int, data: bytes) -> None:
        """Arbitrary physical content; applied after the builder's own structures."""
        self._user_writes.append((paddr, bytes(data)))

    def set_page(self, pfn: int, page: StructPage) -> None:
        if not 0 <= pfn < self.max_pfn:
            raise ValueError(f"pfn {pfn:#x} beyond max_pfn {self.max_pfn:#x}")
        self._user_pages[pfn] = page

    def fill_pages(self, pfns: Iterable[int], page: bytes) -> None:
        """Whole-page content for every pfn of `pfns` (e.g. a range) that the
        builder's own structures leave empty; applied before set_page() and
        write_phys(). One buffer is shared by all, so a million pages are cheap."""
        self._fills.append((pfns, bytes(page)))

    def add_log(self, records: list[LogRecord]) -> None:
        self._records.extend(records)

    def vmcoreinfo_lines(self) -> list[str]:
        self._assemble()
        return self._final_vmcoreinfo_lines()

    def vmcoreinfo_text(self) -> bytes:
        self._assemble()
        return self._vmcoreinfo_bytes()

    def build(self) -> bytes:
        mem = self._assemble()
        self.image = self._serialize(mem)
        return self.image

    def write(self, path: str | Path) -> None:
        """Write the last built (or truncated) image; builds first if there is none."""
        Path(path).write_bytes(self.image if self.image is not None else self.build())

    def write_sparse(self, path: str | Path) -> int:
        """Build straight into `path` as a sparse file, byte for byte what build()
        returns: only pages that exist are written, the rest stay holes that read
        as zeros and use no disk. For machines too big for build(). Returns the
        file size. self.image is left alone."""
        mem = self._assemble()
        size, headers, placed = self._file_layout()
        with open(path, "w+b") as f:  # read and write: a clone's source is read
            fd = f.fileno()
            for pos, blob in headers:
                os.pwrite(fd, blob, pos)
            extents = _ExtentWriter(fd)
            for placement in placed:
                for pos, pages in _placed_extents(mem, *placement):
                    extents.write(pos, pages)
            f.truncate(size)  # the tail may be a hole: truncate sets the size
        return size

    def virt_to_phys(self, vaddr: int) -> int | None:
        """The builder's model of its own mappings (not a walk of the tables)."""
        if any(s <= vaddr < s + n for s, n in self._holes):
            return None
        for m in self.mappings:
            if m.vaddr <= vaddr < m.vaddr + m.size:
                return m.paddr + (vaddr - m.vaddr)
        return None

    def struct_page_addr(self, pfn: int) -> int | None:
        """Virtual address of the struct page of `pfn`, None if it has none."""
        if self.memory_model == "flatmem":
            return self.mem_map + pfn * STRUCT_PAGE_SIZE if pfn < self.max_pfn else None
        if self.memory_model == "sparsemem_vmemmap":
            return self._vmemmap + pfn * STRUCT_PAGE_SIZE if pfn < self.max_pfn else None
        base = self.section_mem_maps.get(pfn >> (SECTION_SIZE_BITS - 12))
        return None if base is None else base + (pfn % self._pfns_per_section) * STRUCT_PAGE_SIZE

    @property
    def vmemmap(self) -> int | None:
        return self._vmemmap if self.memory_model == "sparsemem_vmemmap" else None

    # ------------------------------------------------------- corruption hooks

    def set_pointer(self, symbol: str, value: int) -> None:
        """After layout, overwrite the u64 at symbols[symbol] with `value`."""
        self._hooks.append(lambda: self._mem.write_u64(self._kpa(self.symbols[symbol]), value))

    def point_prb_outside_memory(self) -> None:
        """Make `prb` point into the direct map far beyond RAM (not in any PT_LOAD)."""
        beyond = _roundup(self.max_pfn * self.page_size, 1 << 30) + (1 << 39)
        self.set_pointer("prb", self.page_offset + beyond)

    def make_log_loop(self) -> None:
        """Legacy log: give the newest record len 0 ("wrap to 0"), so a walk from
        log_first_idx returns to that record forever and never reaches log_next_idx."""
        def hook() -> None:
            if self.log != "legacy" or not self.legacy_positions:
                raise ValueError("make_log_loop needs log='legacy' with records")
            self._mem.write(self.log_buf_paddr + self.legacy_positions[-1] + 8, b"\0\0")
        self._hooks.append(hook)

    def unmap(self, vaddr: int) -> None:
        """Clear the present bit of the leaf entry that maps `vaddr` (a page-table hole)."""
        self._hooks.append(lambda: self._clear_leaf(vaddr))

    def garble_vmcoreinfo(self) -> None:
        """No line of the VMCOREINFO note has a usable KEY=VALUE any more."""
        self._garble = True

    def truncate(self, nbytes: int) -> bytes:
        """Cut the built image (building first if needed) to `nbytes`."""
        image = self.image if self.image is not None else self.build()
        self.image = image[:nbytes]
        return self.image

    # ---------------------------------------------------------------- layout

    def _reset_facts(self) -> None:
        self.symbols: dict[str, int] = {}
        self.mappings: list[Mapping] = []
        self.section_mem_maps: dict[int, int] = {}  # section nr -> VA of its first struct page
        self.expected_log: list[LogRecord] = []
        self.expected_plain_log = b""
        self.legacy_positions: list[int] = []
        self.log_buf_paddr = 0
        self.mem_map = 0
        self.memmap_paddr = 0
        self.top_table_paddr = 0
        self.table_paddrs: list[int] = []  # every page-table page below the top one
        self.reserved: tuple[int, int] = (0, 0)  # [start, end) of what the builder allocated
        self._vmemmap = 0
        self._holes = []
        self._pfns_per_section = 1 << (SECTION_SIZE_BITS - 12)

    def _assemble(self) -> PhysMem:
        self._reset_facts()
        self._mem = PhysMem(self.page_size)
        kend = self.kernel_paddr + self.kernel_size
        self._kalloc = Bump(self.kernel_paddr + self.page_size, kend, "kernel image")
        rstart, rend = self._reserved_range()
        self._ralloc = Bump(rstart, rend, "reserved RAM area")
        self.top_table_paddr = self._kalloc.alloc(self.page_size, self.page_size)
        self._map_all()
        self._layout_memmap()
        self._write_uts()
        self._write_log()
        self.reserved = (rstart, self._ralloc.cur)
        for pfns, data in self._fills:
            self._fill(pfns, data)
        for pfn, page in sorted(self._user_pages.items()):
            self._write_struct_page(pfn, page)
        # Only the bytes written, not whole pages: a poke must not wipe its neighbours.
        for paddr, data in self._user_writes:
            self._mem.write(paddr, data)
        for hook in self._hooks:
            hook()
        return self._mem

    def _reserved_range(self) -> tuple[int, int]:
        """Where the bump area goes: in the largest RAM range, as early boot
        memory (memblock) takes what it needs where there is room; right after
        the kernel image if the image is in that range (a small machine: the
        layout every test knows), else from the range's first 2 MiB boundary (a
        PC with more than 4 GiB: the range above the PCI hole, whose mem_map is
        1/64 of RAM and does not fit below 4 GiB beyond ~200 GB)."""
        kernel = self._ram_range_of(self.kernel_paddr, self.kernel_paddr + self.kernel_size)
        start, end = max(self.ram, key=lambda r: (r[1] - r[0], r == kernel))
        first = self.kernel_paddr + self.kernel_size if (start, end) == kernel else start
        rstart = _roundup(first, 1 << 21)
        if rstart + self.page_size > end:
            raise ValueError(f"no RAM for the reserved area after {first:#x} "
                             f"(largest RAM range {start:#x}-{end:#x})")
        return rstart, end

    def _fill(self, pfns: Iterable[int], data: bytes) -> None:
        mem = self._mem
        mem.share((pfn for pfn in pfns if mem.get(pfn) is None), data)

    def _kva(self, paddr: int) -> int:
        """Kernel-image virtual address of a physical address inside the image."""
        return paddr - self.kernel_paddr + self.text

    def _kpa(self, vaddr: int) -> int:
        pa = self.virt_to_phys(vaddr)
        if pa is None:
            raise ValueError(f"{vaddr:#x} is not mapped")
        return pa

    def _dva(self, paddr: int) -> int:
        return self.page_offset + paddr

    def _kvar(self, name: str, size: int, align: int = 8) -> int:
        """Allocate a kernel-image variable; returns its physical address."""
        pa = self._kalloc.alloc(size, align)
        self.symbols[name] = self._kva(pa)
        return pa

    # ----------------------------------------------------------- page tables

    def _shifts(self) -> list[int]:
        return [48, 39, 30, 21, 12] if self.levels == 5 else [39, 30, 21, 12]

    def _slot(self, vaddr: int, leaf_shift: int) -> int:
        """Physical address of the entry for `vaddr` at level `leaf_shift`,
        creating intermediate tables on the way."""
        table = self.top_table_paddr
        for shift in self._shifts():
            entry_pa = table + ((vaddr >> shift) & 511) * 8
            if shift == leaf_shift:
                return entry_pa
            entry = self._mem.read_u64(entry_pa)
            if not entry & PTE_PRESENT:
                table = self._ralloc.alloc(self.page_size, self.page_size)
                self.table_paddrs.append(table)
                self._mem.write_u64(entry_pa, table | self.sme_mask | _TABLE_FLAGS)
            elif entry & PTE_PSE:
                raise ValueError(f"mapping of {vaddr:#x} overlaps a large page")
            else:
                table = entry & PTE_ADDR_MASK & ~self.sme_mask
        raise AssertionError("unreachable")

    def _map(self, vaddr: int, paddr: int, size: int, page: int, nx: bool = True) -> None:
        if vaddr % page or paddr % page or size % page:
            raise ValueError(f"unaligned {page:#x} mapping {vaddr:#x} -> {paddr:#x}")
        shift = _SHIFT_OF[page]
        flags = _TABLE_FLAGS | (PTE_PSE if page > self.page_size else 0) | (PTE_NX if nx else 0)
        off = 0
        while off < size:  # one table at a time: its entries are consecutive u64s
            n = min(512 - ((vaddr + off) >> shift) % 512, (size - off) // page)
            entries = [(paddr + off + i * page) | self.sme_mask | flags for i in range(n)]
            self._mem.write(self._slot(vaddr + off, shift), struct.pack(f"<{n}Q", *entries))
            off += n * page
        self.mappings.append(Mapping(vaddr, paddr, size, page))

    def _map_all(self) -> None:
        self._map_direct()
        self._map_kernel()

    def _map_direct(self) -> None:
        page = PAGE_SIZES[self.direct_map_page]
        blocks = sorted({b for s, e in self.ram
                         for b in range(_rounddown(s, page), _roundup(e, page), page)})
        # Merge adjacent blocks so the model has one Mapping per run.
        runs: list[list[int]] = []
        for b in blocks:
            if runs and runs[-1][1] == b:
                runs[-1][1] = b + page
            else:
                runs.append([b, b + page])
        for start, end in runs:
            self._map(self._dva(start), start, end - start, page)

    def _map_kernel(self) -> None:
        # Real kernels map the image with 2 MiB pages; fall back to 4 KiB when
        # _text and its physical address are not congruent modulo 2 MiB.
        page = 1 << 21 if (self.text - self.kernel_paddr) % (1 << 21) == 0 else self.page_size
        vstart = _rounddown(self.text, page)
        vend = _roundup(self.text + self.kernel_size, page)
        self._map(vstart, self.kernel_paddr - (self.text - vstart), vend - vstart, page, nx=False)

    def _clear_leaf(self, vaddr: int) -> None:
        table = self.top_table_paddr
        for shift in self._shifts():
            entry_pa = table + ((vaddr >> shift) & 511) * 8
            entry = self._mem.read_u64(entry_pa)
            if not entry & PTE_PRESENT:
                raise ValueError(f"{vaddr:#x} is not mapped")
            if shift == 12 or entry & PTE_PSE:
                self._mem.write_u64(entry_pa, entry & ~PTE_PRESENT)
                self._holes.append((_rounddown(vaddr, 1 << shift), 1 << shift))
                return
            table = entry & PTE_ADDR_MASK & ~self.sme_mask

    # ---------------------------------------------------------------- memmap

    def _present_sections(self) -> list[int]:
        pps = self._pfns_per_section
        return sorted({nr for s, e in self.ram
                       for nr in range(s // self.page_size // pps,
                                       (e // self.page_size - 1) // pps + 1)})

    def _default_pages(self, count: int) -> bytes:
        return StructPage().pack() * count

    def _write_default_pages(self, paddr: int, count: int) -> None:
        """`count` default struct pages at `paddr`. Whole pages share one buffer:
        a 64 GiB machine has 1 GiB of them, and they are not zero (_mapcount -1)."""
        ps = self.page_size
        per_page = ps // STRUCT_PAGE_SIZE
        whole = count // per_page if paddr % ps == 0 else 0
        self._mem.share_run(paddr // ps, paddr // ps + whole, self._default_pages(per_page))
        self._mem.write(paddr + whole * ps, self._default_pages(count - whole * per_page))

    def _layout_memmap(self) -> None:
        if self.memory_model == "flatmem":
            self._layout_flatmem()
            return
        if self.memory_model == "sparsemem_vmemmap":
            self._layout_vmemmap()
        else:
            self._layout_section_arrays()
        self._write_mem_section()

    def _layout_flatmem(self) -> None:
        size = self.max_pfn * STRUCT_PAGE_SIZE
        self.memmap_paddr = self._ralloc.alloc(size, self.page_size)
        self._write_default_pages(self.memmap_paddr, self.max_pfn)
        self.mem_map = self._dva(self.memmap_paddr)
        self._mem.write_u64(self._kvar("mem_map", 8), self.mem_map)

    def _layout_vmemmap(self) -> None:
        page = PAGE_SIZES[self.vmemmap_page]
        size = self.max_pfn * STRUCT_PAGE_SIZE
        default = 0xFFD4000000000000 if self.levels == 5 else 0xFFFFEA0000000000
        if page < (1 << 30):
            self.memmap_paddr = self._ralloc.alloc(_roundup(size, page), page)
            base = self._vmemmap_base_arg if self._vmemmap_base_arg is not None else default
            self._map(base, self.memmap_paddr, _roundup(size, page), page)
        else:
            base = self._layout_vmemmap_1g(size, default)
        self._vmemmap = base
        self._write_default_pages(self.memmap_paddr, self.max_pfn)

    def _layout_vmemmap_1g(self, size: int, default: int) -> int:
        # A 1 GiB page needs a 1 GiB aligned physical block, and small test RAM
        # has none to spare. So the array lives at a 2 MiB aligned reserved
        # address B and vmemmap_base is chosen congruent to B modulo 1 GiB: the
        # PUD maps the surrounding 1 GiB block and the rest of it aliases RAM.
        gig = 1 << 30
        self.memmap_paddr = self._ralloc.alloc(size, 1 << 21)
        base = self._vmemmap_base_arg
        if base is None:
            base = default + self.memmap_paddr % gig
        elif base % gig != self.memmap_paddr % gig:
            raise ValueError(f"with 1G vmemmap pages vmemmap_base must be congruent to "
                             f"{self.memmap_paddr % gig:#x} modulo 1 GiB")
        vstart = _rounddown(base, gig)
        vend = _roundup(base + size, gig)
        self._map(vstart, self.memmap_paddr - (base - vstart), vend - vstart, gig)
        return base

    def _layout_section_arrays(self) -> None:
        # SPARSEMEM without vmemmap: one mem_map array per present section, in the direct map.
        pps = self._pfns_per_section
        for nr in self._present_sections():
            pa = self._ralloc.alloc(pps * STRUCT_PAGE_SIZE, self.page_size)
            self._write_default_pages(pa, pps)
            self.section_mem_maps[nr] = self._dva(pa)

    def _section_mem_map_va(self, nr: int) -> int:
        if self.memory_model == "sparsemem_vmemmap":
            return self._vmemmap + nr * self._pfns_per_section * STRUCT_PAGE_SIZE
        return self.section_mem_maps[nr]

    def _max_physmem_bits(self) -> int:
        return 52 if self.levels == 5 else 46

    def _nr_section_roots(self) -> int:
        nr_sections = 1 << (self._max_physmem_bits() - SECTION_SIZE_BITS)
        return nr_sections // (self.page_size // MEM_SECTION_SIZE)

    def _write_mem_section(self) -> None:
        per_root = self.page_size // MEM_SECTION_SIZE
        roots_pa = self._ralloc.alloc(self._nr_section_roots() * 8, self.page_size)
        self.symbols["mem_section"] = self._dva(roots_pa)  # the array, as VMCOREINFO_SYMBOL_ARRAY
        roots: dict[int, int] = {}
        for nr in self._present_sections():
            if nr // per_root not in roots:
                roots[nr // per_root] = self._ralloc.alloc(self.page_size, self.page_size)
                self._mem.write_u64(roots_pa + nr // per_root * 8,
                                    self._dva(roots[nr // per_root]))
            start_pfn = nr * self._pfns_per_section
            # The kernel encodes mem_map - section_start_pfn (pointer arithmetic on struct page).
            coded = (self._section_mem_map_va(nr) - start_pfn * STRUCT_PAGE_SIZE) & MASK64
            sec_pa = roots[nr // per_root] + nr % per_root * MEM_SECTION_SIZE
            self._mem.write_u64(sec_pa, coded | self.section_flags)

    def _write_struct_page(self, pfn: int, page: StructPage) -> None:
        va = self.struct_page_addr(pfn)
        if va is None:
            raise ValueError(f"pfn {pfn:#x} has no struct page (section not present)")
        self._mem.write(self._kpa(va), page.pack())

    # -------------------------------------------------------------- utsname

    def _write_uts(self) -> None:
        fields = ["Linux", "synthetic", self.release, "#1 SMP", "x86_64", "(none)"]
        blob = b"".join(f.encode()[:64].ljust(65, b"\0") for f in fields)
        # None = before 5.11: no OFFSET key, name right after a 4-byte kref.
        pad = 4 if self.uts_name_offset is None else self.uts_name_offset
        blob = struct.pack("<I", 3)[:pad].ljust(pad, b"\0") + blob
        self._mem.write(self._kvar("init_uts_ns", len(blob)), blob)
        self.symbols["init_top_pgt"] = self._kva(self.top_table_paddr)
        self.symbols["swapper_pg_dir"] = self.symbols["init_top_pgt"]
        self.symbols["_text"] = self.text
        self.symbols["_end"] = self.text + self.kernel_size

    # ------------------------------------------------------------------ logs

    def _write_log(self) -> None:
        if self.log == "lockless":
            self._write_lockless()
        elif self.log == "legacy":
            self._write_legacy()
        elif self.log == "plain":
            self._write_plain()

    def _lockless_blocks(self, size: int) -> list[tuple[int, int]]:
        """lpos (begin, next) of every record, following the kernel's get_next_lpos()."""
        lpos = (-size) & MASK64  # BLK0_LPOS: the data ring starts one wrap "before" 0
        out: list[tuple[int, int]] = []
        for rec in self._records:
            if not rec.text:
                out.append((NO_LPOS, NO_LPOS))
                continue
            blk = _roundup(8 + len(rec.text), 8)
            if blk > size // 2:
                raise ValueError(f"record of {len(rec.text)} bytes too big for the data ring")
            nxt = (lpos + blk) & MASK64
            if lpos // size != nxt // size:  # DATA_WRAPS differ: data goes to index 0
                nxt = (_rounddown(nxt, size) + blk) & MASK64
            out.append((lpos, nxt))
            lpos = nxt
        return out

    def _write_lockless(self) -> None:
        count, size = 1 << self.prb_count_bits, 1 << self.prb_size_bits
        first_id = self.prb_initial_id if self.prb_initial_id is not None else (-count) & ID_MASK
        descs = self._ralloc.alloc(count * DESC_SIZE, 64)
        infos = self._ralloc.alloc(count * INFO_SIZE, 64)
        data = self._ralloc.alloc(size, self.page_size)
        blocks = self._lockless_blocks(size)
        n = len(self._records)
        head_lpos = next((b[1] for b in reversed(blocks) if b[0] != NO_LPOS), (-size) & MASK64)
        # A record survives if its descriptor was not reused and its data not overwritten.
        keep_from = max(0, n - count)
        valid = [i >= keep_from and (blocks[i][0] == NO_LPOS
                                     or (head_lpos - blocks[i][0]) & MASK64 <= size)
                 for i in range(n)]
        for i, rec in enumerate(self._records):
            rid = (first_id + i) & ID_MASK
            self._write_prb_data(data, size, rid, blocks[i], rec.text)
            state = rec.state if valid[i] else DESC_REUSABLE
            self._write_prb_desc(descs, infos, count, rid, state, blocks[i], rec, i)
        # What a correct reader prints: surviving records in committed/finalized state.
        self.expected_log = [r for r, ok in zip(self._records, valid, strict=True)
                             if ok and r.state in (DESC_COMMITTED, DESC_FINALIZED)]
        head_id, tail_id = self._prb_head_tail(descs, infos, count, first_id, keep_from)
        tail_lpos = next((blocks[i][0] for i in range(n) if valid[i]
                          and blocks[i][0] != NO_LPOS), head_lpos)
        self._write_prb_struct(descs, infos, data, (head_id, tail_id), (head_lpos, tail_lpos))

    def _prb_head_tail(self, descs: int, infos: int, count: int, first_id: int,
                       keep_from: int) -> tuple[int, int]:
        n = len(self._records)
        head_id = (first_id + n - 1) & ID_MASK
        if n >= count:
            return head_id, (first_id + keep_from) & ID_MASK
        # Not full yet: like the kernel, the tail is still the bootstrap descriptor
        # (id first_id - 1, state reusable) in the slot before the first record's.
        boot = (first_id - 1) & ID_MASK
        self._mem.write_u64(self._desc_pa(descs, count, boot), (DESC_REUSABLE << 62) | boot)
        self._mem.write_u64(self._info_pa(infos, count, boot), (-count) & MASK64)
        return (head_id if n else boot), boot

    def _desc_pa(self, descs: int, count: int, rid: int) -> int:
        return descs + (rid % count) * DESC_SIZE

    def _info_pa(self, infos: int, count: int, rid: int) -> int:
        return infos + (rid % count) * INFO_SIZE

    def _write_prb_data(self, data: int, size: int, rid: int, blk: tuple[int, int],
                        text: bytes) -> None:
        begin, nxt = blk
        if begin == NO_LPOS:
            return
        self._mem.write_u64(data + begin % size, rid)
        pos = begin % size
        if begin // size != nxt // size:  # wrapped block: id also at 0, text after it
            self._mem.write_u64(data, rid)
            pos = 0
        self._mem.write(data + pos + 8, text)

    def _write_prb_desc(self, descs: int, infos: int, count: int, rid: int, state: int,
                        blk: tuple[int, int], rec: LogRecord, seq: int) -> None:
        self._mem.write(self._desc_pa(descs, count, rid),
                        struct.pack("<QQQ", (state << 62) | rid, blk[0], blk[1]))
        info = struct.pack("<QQHBBI", seq, rec.ts_nsec, len(rec.text) & 0xFFFF, 0,
                           LOG_FLAGS_LEVEL, rec.caller_id & 0xFFFFFFFF).ljust(INFO_SIZE, b"\0")
        self._mem.write(self._info_pa(infos, count, rid), info)

    def _write_prb_struct(self, descs: int, infos: int, data: int, ids: tuple[int, int],
                          lpos: tuple[int, int]) -> None:
        ring = struct.pack("<I4xQQQQQ", self.prb_count_bits, self._dva(descs),
                           self._dva(infos), ids[0], ids[1], ids[0])  # last_finalized_id
        text_ring = struct.pack("<I4xQQQ", self.prb_size_bits, self._dva(data), lpos[0], lpos[1])
        blob = ring + text_ring + struct.pack("<Q", 0)  # fail
        assert len(blob) == PRB_SIZE
        self._mem.write(self._kvar("printk_rb_static", PRB_SIZE), blob)
        self._mem.write_u64(self._kvar("prb", 8), self.symbols["printk_rb_static"])
        self._kvar("clear_seq", 8)
        self.symbols.update(prb_descs=self._dva(descs), prb_infos=self._dva(infos),
                            prb_data=self._dva(data))

    def _legacy_hdr_size(self) -> int:
        # struct printk_log is __packed __aligned(4) on x86_64: 16 bytes, 20 with caller_id.
        return 20 if self.log_caller_id else 16

    def _legacy_record(self, rec: LogRecord) -> bytes:
        hdr = self._legacy_hdr_size()
        size = _roundup(hdr + len(rec.text), self.log_align)
        head = struct.pack("<QHHHBB", rec.ts_nsec, size, len(rec.text), 0, 0, LOG_FLAGS_LEVEL)
        if self.log_caller_id:
            head += struct.pack("<I", rec.caller_id & 0xFFFFFFFF)
        return (head + rec.text).ljust(size, b"\0")

    def _write_legacy(self) -> None:
        buf, first, nxt, positions = self._legacy_ring()
        self.log_buf_paddr = self._ralloc.alloc(self.log_buf_len, self.page_size)
        self._mem.write(self.log_buf_paddr, bytes(buf))
        self._mem.write_u64(self._kvar("log_buf", 8), self._dva(self.log_buf_paddr))
        self._mem.write(self._kvar("log_buf_len", 4, 4), struct.pack("<i", self.log_buf_len))
        self._mem.write(self._kvar("log_first_idx", 4, 4), struct.pack("<I", first))
        self._mem.write(self._kvar("log_next_idx", 4, 4), struct.pack("<I", nxt))
        self.legacy_positions = positions

    def _legacy_ring(self) -> tuple[bytearray, int, int, list[int]]:
        """Replays kernel/printk/printk.c log_store() of 3.5-5.9, wrap and all."""
        blen, hdr = self.log_buf_len, self._legacy_hdr_size()
        buf = bytearray(blen)
        first_idx = next_idx = first_seq = next_seq = 0
        pos_of_seq: list[int] = []

        def has_space(size: int, empty: bool) -> bool:
            if next_idx > first_idx or empty:
                free = max(blen - next_idx, first_idx)
            else:
                free = first_idx - next_idx
            return free >= size + hdr

        def log_next(idx: int) -> int:
            length = int.from_bytes(buf[idx + 8:idx + 10], "little")
            return int.from_bytes(buf[8:10], "little") if length == 0 else idx + length

        for rec in self._records:
            blob = self._legacy_record(rec)
            while first_seq < next_seq and not has_space(len(blob), False):
                first_idx, first_seq = log_next(first_idx), first_seq + 1
            if not has_space(len(blob), first_seq == next_seq):
                raise ValueError(f"record of {len(rec.text)} bytes does not fit log_buf")
            if next_idx + len(blob) + hdr > blen:
                buf[next_idx:next_idx + hdr] = bytes(hdr)  # len 0: "wrap to index 0"
                next_idx = 0
            buf[next_idx:next_idx + len(blob)] = blob
            pos_of_seq.append(next_idx)
            next_idx, next_seq = next_idx + len(blob), next_seq + 1
        self.expected_log = self._records[first_seq:]
        return buf, first_idx, next_idx, pos_of_seq[first_seq:]

    def _write_plain(self) -> None:
        if self.log_buf_len & (self.log_buf_len - 1):
            raise ValueError("plain log_buf_len must be a power of two")
        text = b"".join(b"<6>[%5d.%06d] " % divmod(r.ts_nsec // 1000, 1000000) + r.text + b"\n"
                        for r in self._records)
        ring = bytearray(self.log_buf_len)
        for i, ch in enumerate(text):
            ring[i & (self.log_buf_len - 1)] = ch
        self.log_buf_paddr = self._ralloc.alloc(self.log_buf_len, self.page_size)
        self._mem.write(self.log_buf_paddr, bytes(ring))
        self._mem.write_u64(self._kvar("log_buf", 8), self._dva(self.log_buf_paddr))
        self._mem.write(self._kvar("log_buf_len", 4, 4), struct.pack("<i", self.log_buf_len))
        self._mem.write(self._kvar("log_end", 4, 4), struct.pack("<I", len(text) & 0xFFFFFFFF))
        self._mem.write(self._kvar("logged_chars", 4, 4),
                        struct.pack("<I", min(len(text), self.log_buf_len)))
        self.expected_plain_log = text[-self.log_buf_len:]

    # ------------------------------------------------------------ vmcoreinfo

    def _base_vmcoreinfo(self) -> list[str]:
        sym = self.symbols
        lines = [f"OSRELEASE={self.release}", f"PAGESIZE={self.page_size}",
                 f"SYMBOL(init_uts_ns)={sym['init_uts_ns']:x}"]
        if self.uts_name_offset is not None:
            lines.append(f"OFFSET(uts_namespace.name)={self.uts_name_offset}")
        lines.append(f"SYMBOL(swapper_pg_dir)={sym['swapper_pg_dir']:x}")
        lines += self._memmap_vmcoreinfo()
        lines += [f"SIZE(page)={STRUCT_PAGE_SIZE}"]
        lines += [f"OFFSET(page.{k})={v}" for k, v in PAGE_OFF.items()]
        lines += ["LENGTH(zone.free_area)=11", "NUMBER(PG_lru)=4", "NUMBER(PG_private)=13",
                  "NUMBER(PG_swapcache)=10", "NUMBER(PG_swapbacked)=19", "NUMBER(PG_slab)=9",
                  "NUMBER(PG_hwpoison)=23", "NUMBER(PG_head_mask)=65536",
                  "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129", "NUMBER(HUGETLB_PAGE_DTOR)=2",
                  "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257"]
        lines += self._log_vmcoreinfo()
        lines += [f"NUMBER(phys_base)={self.phys_base}",
                  f"SYMBOL(init_top_pgt)={sym['init_top_pgt']:x}",
                  f"NUMBER(pgtable_l5_enabled)={int(self.levels == 5)}",
                  f"KERNELOFFSET={self.kaslr_offset:x}",
                  f"NUMBER(KERNEL_IMAGE_SIZE)={KERNEL_IMAGE_SIZE}",
                  f"NUMBER(sme_mask)={self.sme_mask}"]
        if self.crashtime is not None:
            lines.append(f"CRASHTIME={self.crashtime}")
        return lines

    def _memmap_vmcoreinfo(self) -> list[str]:
        if self.memory_model == "flatmem":
            return [f"SYMBOL(mem_map)={self.symbols['mem_map']:x}"]
        return [f"SYMBOL(mem_section)={self.symbols['mem_section']:x}",
                f"LENGTH(mem_section)={self._nr_section_roots()}",
                f"SIZE(mem_section)={MEM_SECTION_SIZE}", "OFFSET(mem_section.section_mem_map)=0",
                f"NUMBER(SECTION_SIZE_BITS)={SECTION_SIZE_BITS}",
                f"NUMBER(MAX_PHYSMEM_BITS)={self._max_physmem_bits()}"]

    def _log_vmcoreinfo(self) -> list[str]:
        sym = self.symbols
        if self.log == "legacy":
            lines = [f"SYMBOL({n})={sym[n]:x}"
                     for n in ("log_buf", "log_buf_len", "log_first_idx", "log_next_idx")]
            lines += [f"SIZE(printk_log)={self._legacy_hdr_size()}",
                      "OFFSET(printk_log.ts_nsec)=0", "OFFSET(printk_log.len)=8",
                      "OFFSET(printk_log.text_len)=10"]
            return lines + (["OFFSET(printk_log.caller_id)=16"] if self.log_caller_id else [])
        if self.log == "plain":
            return [f"SYMBOL({n})={sym[n]:x}"
                    for n in ("log_buf", "log_end", "log_buf_len", "logged_chars")]
        if self.log == "lockless":
            return [f"SYMBOL({n})={sym[n]:x}" for n in ("prb", "printk_rb_static", "clear_seq")
                    ] + _PRB_LINES
        return []

    def _final_vmcoreinfo_lines(self) -> list[str]:
        lines = self._base_vmcoreinfo()
        keys = [ln.split("=", 1)[0] for ln in lines]
        for key, value in self.vmcoreinfo_overrides.items():
            if key in keys:
                i = keys.index(key)
                lines[i] = "" if value is None else f"{key}={value}"
            elif value is not None:
                lines.append(f"{key}={value}")
        return [ln for ln in lines if ln] + list(self.vmcoreinfo_extra)

    def _vmcoreinfo_bytes(self) -> bytes:
        text = "".join(ln + "\n" for ln in self._final_vmcoreinfo_lines()).encode()
        if not self._garble:
            return text
        # Every '=' becomes 0xff and binary junk is mixed in: nothing parses.
        return b"\xff\xfe\x00junk\n" + text.replace(b"=", b"\xff")[::-1] + b"\x00\x80"

    # ------------------------------------------------------------- ELF file

    def _notes(self) -> bytes:
        out = b""
        for cpu in range(self.cpus):
            desc = bytearray(336)
            struct.pack_into("<i", desc, 32, cpu + 1)  # pr_pid
            out += _note(b"CORE\0", 1, bytes(desc))
        return out + _note(b"VMCOREINFO\0", 0, self._vmcoreinfo_bytes())

    def _loads(self) -> list[tuple[int, int, int]]:
        """(vaddr, paddr, size) of the kernel-text segment, then one per RAM range."""
        loads = [(self.text, self.kernel_paddr, self.kernel_size)]
        return loads + [(self._dva(s), s, e - s) for s, e in self.ram]

    def _file_layout(self) -> tuple[int, list[tuple[int, bytes]],
                                    list[tuple[int, int, int]]]:
        """The file both build() and write_sparse() write: its size, the
        (file offset, bytes) of the headers and notes, and where every load
        goes as (file offset of its region, region paddr, region length)."""
        ps, loads = self.page_size, self._loads()
        notes = self._notes()
        note_off = _roundup(64 + 56 * (1 + len(loads)), ps)
        off = _roundup(note_off + len(notes), ps)
        phdrs = [_phdr(4, note_off, 0, 0, len(notes), 4)]
        placed: list[tuple[int, int, int]] = []
        for vaddr, paddr, size in loads:
            region = _rounddown(paddr, ps)
            region_len = _roundup(paddr + size, ps) - region
            phdrs.append(_phdr(1, off + paddr - region, vaddr, paddr, size, 0))
            placed.append((off, region, region_len))
            off += region_len
        headers = [(0, _ehdr(len(phdrs)) + b"".join(phdrs)), (note_off, notes)]
        return off, headers, placed

    def _serialize(self, mem: PhysMem) -> bytes:
        size, headers, placed = self._file_layout()
        image = bytearray(size)
        for pos, blob in headers:
            image[pos:pos + len(blob)] = blob
        for placement in placed:
            for pos, pages in _placed_extents(mem, *placement):
                image[pos:pos + len(pages) * mem.page_size] = b"".join(pages)
        return bytes(image)


def _placed_extents(mem: PhysMem, file_off: int, region: int,
                    length: int) -> Iterator[tuple[int, list[bytes | bytearray]]]:
    """(file offset, consecutive pages) of the existing pages of one placed
    region, in PhysMem.extents() order (later ones win)."""
    ps = mem.page_size
    for pfn, pages in mem.extents(region // ps, (region + length) // ps):
        yield file_off + pfn * ps - region, pages


_FICLONERANGE = 0x4020940D  # _IOW(0x94, 13, struct file_clone_range), linux/fs.h


class _ExtentWriter:
    """Writes extents of pages into a sparse file. An extent that is one shared
    page over and over (a fill, a run of the mem_map), already in the file at
    least as long, is cloned from there (FICLONERANGE) where the filesystem
    shares blocks: 1 TiB data-heavy's 16 Mi data pages take one page of disk.
    Elsewhere (ext4, tmpfs) the first clone fails and every extent is written."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._can_clone = True
        # id() of a shared page (alive in PhysMem while writing) -> the file
        # offset and byte length of its longest written run.
        self._sources: dict[int, tuple[int, int]] = {}

    def write(self, pos: int, pages: list[bytes | bytearray]) -> None:
        if not self._can_clone:  # no bookkeeping once the filesystem said no
            _pwritev_all(self._fd, pages, pos)
            return
        first = pages[0]
        length = len(pages) * len(first)
        shared = isinstance(first, bytes) and all(page is first for page in pages)
        source = self._sources.get(id(first)) if shared else None
        self._forget_overlapping(pos, length)  # later pages win over earlier runs
        if source is not None and source[1] >= length and self._clone(source[0], pos, length):
            return
        _pwritev_all(self._fd, pages, pos)
        if shared:
            self._sources[id(first)] = (pos, length)

    def _clone(self, source: int, pos: int, length: int) -> bool:
        arg = struct.pack("qQQQ", self._fd, source, length, pos)
        try:
            fcntl.ioctl(self._fd, _FICLONERANGE, arg)
        except OSError:  # EOPNOTSUPP (ext4, tmpfs), EINVAL (blocks larger than a page)
            self._can_clone = False
            return False
        return True

    def _forget_overlapping(self, pos: int, length: int) -> None:
        """A source written over no longer holds its page: never clone from it."""
        for key, (start, size) in list(self._sources.items()):
            if start < pos + length and pos < start + size:
                del self._sources[key]


def _pwritev_all(fd: int, buffers: list[bytes | bytearray], pos: int) -> None:
    total = sum(len(b) for b in buffers)
    done = os.pwritev(fd, buffers, pos)
    if done != total:  # a short write (signal, odd filesystem): finish it plainly
        os.pwrite(fd, b"".join(buffers)[done:], pos + done)


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    return struct.pack("<III", len(name), len(desc), ntype) + _pad4(name) + _pad4(desc)


def _phdr(ptype: int, offset: int, vaddr: int, paddr: int, size: int, align: int) -> bytes:
    flags = 7 if ptype == 1 else 0  # PF_R|PF_W|PF_X on loads, as the kernel does
    return struct.pack("<IIQQQQQQ", ptype, flags, offset, vaddr & MASK64, paddr & MASK64,
                       size, size, align)


def _ehdr(phnum: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)


_EXTENT_PAGES = 1024  # pages per pwritev (IOV_MAX): 4 MiB per system call

_DEFAULT_RELEASE = {"lockless": "6.1.0-test", "legacy": "5.4.0-test", "plain": "2.6.32-test"}

# SIZE/OFFSET lines of the lockless ring, exactly as a 6.1 kernel's
# log_buf_vmcoreinfo_setup() emits them.
_PRB_LINES = [
    "SIZE(printk_ringbuffer)=88", "OFFSET(printk_ringbuffer.desc_ring)=0",
    "OFFSET(printk_ringbuffer.text_data_ring)=48", "OFFSET(printk_ringbuffer.fail)=80",
    "SIZE(prb_desc_ring)=48", "OFFSET(prb_desc_ring.count_bits)=0",
    "OFFSET(prb_desc_ring.descs)=8", "OFFSET(prb_desc_ring.infos)=16",
    "OFFSET(prb_desc_ring.head_id)=24", "OFFSET(prb_desc_ring.tail_id)=32",
    "SIZE(prb_desc)=24", "OFFSET(prb_desc.state_var)=0", "OFFSET(prb_desc.text_blk_lpos)=8",
    "SIZE(prb_data_blk_lpos)=16", "OFFSET(prb_data_blk_lpos.begin)=0",
    "OFFSET(prb_data_blk_lpos.next)=8",
    "SIZE(printk_info)=88", "OFFSET(printk_info.seq)=0", "OFFSET(printk_info.ts_nsec)=8",
    "OFFSET(printk_info.text_len)=16", "OFFSET(printk_info.caller_id)=20",
    "OFFSET(printk_info.dev_info)=24",
    "SIZE(dev_printk_info)=64", "OFFSET(dev_printk_info.subsystem)=0",
    "LENGTH(printk_info_subsystem)=16", "OFFSET(dev_printk_info.device)=16",
    "LENGTH(printk_info_device)=48",
    "SIZE(prb_data_ring)=32", "OFFSET(prb_data_ring.size_bits)=0",
    "OFFSET(prb_data_ring.data)=8", "OFFSET(prb_data_ring.head_lpos)=16",
    "OFFSET(prb_data_ring.tail_lpos)=24",
    "SIZE(atomic_long_t)=8", "OFFSET(atomic_long_t.counter)=0",
]


__all__ = ["LogRecord", "Mapping", "StructPage", "VmcoreBuilder"]
