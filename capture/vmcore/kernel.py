"""An opened vmcore: the file, its notes and VMCOREINFO, and kernel memory.

This is the context object the rest of the engine is handed. Each part is
worked out once, when first asked for, so a tool that only needs the notes
never touches the page tables, and a corrupt part fails only what needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import NamedTuple, Protocol, Self

from capture.errors import CorruptError, NoDataError
from capture.logs import log
from capture.vmcore.arch import Architecture, Translator, architecture_for
from capture.vmcore.elfcore import ElfCore, LoadSegment
from capture.vmcore.notes import NT_PRSTATUS, Note, find_vmcoreinfo, parse_notes
from capture.vmcore.vmcoreinfo import VmcoreInfo, parse_vmcoreinfo

__all__ = ("Utsname", "Vmcore")


_UTS_FIELD = 65
_UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
# Before Linux 5.11 uts_namespace began with a 4-byte kref and VMCOREINFO had
# no OFFSET(uts_namespace.name); makedumpfile uses the same fallback.
_UTS_NAME_OFFSET_BEFORE_5_11 = 4


class CoreFile(Protocol):
    """A source of the crashed machine's physical memory and notes.

    :class:`~capture.vmcore.elfcore.ElfCore` is one (/proc/vmcore, ELF
    dumps); readers of other dump formats provide the same surface.
    """

    path: str
    machine: str
    """pyelftools' name of the ELF machine, e.g. ``EM_X86_64``."""
    segments: list[LoadSegment]
    notes: bytes
    note_phdr: tuple[int, int]
    """``(p_flags, p_align)`` of the notes' program header, which ELF dumps copy."""
    size: int

    def read_phys(self, paddr: int, size: int) -> bytes: ...

    def has_phys(self, paddr: int, size: int = 1) -> bool: ...

    def read_header(self, size: int) -> bytes: ...

    def file_span(self, paddr: int, size: int) -> tuple[int, int] | None:
        """``(fd, file offset)`` where ``[paddr, paddr+size)`` lies as is in a
        regular file, so the kernel may copy it; None otherwise."""
        ...

    def close(self) -> None: ...


class Utsname(NamedTuple):
    """``init_uts_ns.name``: what ``uname -a`` printed on the crashed machine."""

    sysname: str
    nodename: str
    release: str
    version: str
    machine: str
    domainname: str
    raw: bytes
    """The 390 bytes as in memory, for the kdump header."""


class Vmcore:
    """A vmcore opened for reading.

    :param path: /proc/vmcore or a saved ELF vmcore.
    :param core: an already opened core (another dump format); by default
        ``path`` is opened as an ELF core.
    :raises CorruptError: if the file is not an ELF core.
    :raises UnsupportedError: for an architecture other than x86_64.
    """

    def __init__(self, path: str, core: CoreFile | None = None) -> None:
        self.path = path
        self.core: CoreFile = core if core is not None else ElfCore(path)
        try:
            self.arch: Architecture = architecture_for(self.core.machine)
        except BaseException:
            self.core.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self.core.close()

    @cached_property
    def notes(self) -> list[Note]:
        """Every ELF note, in file order."""
        return parse_notes(self.core.notes)

    @property
    def cpus(self) -> int:
        """CPUs that saved their registers: the number of NT_PRSTATUS notes."""
        return sum(1 for note in self.notes if note.name == b"CORE" and note.type == NT_PRSTATUS)

    @cached_property
    def info(self) -> VmcoreInfo:
        """The parsed VMCOREINFO note.

        :raises CorruptError: if there is none.
        """
        note = find_vmcoreinfo(self.notes)
        if note is None:
            raise CorruptError("no VMCOREINFO note: this is not a kernel crash dump")
        info = parse_vmcoreinfo(note.desc)
        for problem in info.problems:
            log.warning("%s: %s", self.path, problem)
        return info

    @cached_property
    def page_size(self) -> int:
        """PAGESIZE from VMCOREINFO."""
        return self.info.require_page_size()

    @property
    def page_shift(self) -> int:
        """log2 of the page size."""
        return self.page_size.bit_length() - 1

    @cached_property
    def translator(self) -> Translator:
        """Kernel virtual to physical translation."""
        return self.arch.make_translator(self.info, self.core.segments, self.core.read_phys)

    def read_phys(self, paddr: int, size: int) -> bytes:
        """Read physical memory. :raises NoDataError: for a hole."""
        return self.core.read_phys(paddr, size)

    def read_virt(self, vaddr: int, size: int) -> bytes:
        """Read kernel virtual memory.

        :raises NoDataError: if any byte is unmapped or not in the dump.
        """
        parts = []
        for _, data, _ in self.virt_chunks(vaddr, size):
            if data is None:
                raise NoDataError(f"kernel address {vaddr:#x}+{size:#x} is not in the dump")
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_u64(self, vaddr: int) -> int:
        """Read a little-endian u64 at a kernel virtual address."""
        return int.from_bytes(self.read_virt(vaddr, 8), "little")

    def read_u32(self, vaddr: int) -> int:
        """Read a little-endian u32 at a kernel virtual address."""
        return int.from_bytes(self.read_virt(vaddr, 4), "little")

    def virt_chunks(self, vaddr: int, size: int) -> Iterator[tuple[int, bytes | None, int]]:
        """Split a virtual range into ``(vaddr, data, length)`` pieces.

        ``data`` is None for a piece that cannot be read (unmapped, or its
        memory not in the dump); the caller decides whether that is fatal.
        Readable neighbours of an unreadable page are still returned, one
        page at a time, so corruption costs only what it touches.
        """
        end = vaddr + size
        while vaddr < end:
            try:
                paddr, mapped = self.translator.mapping(vaddr)
            except NoDataError:
                step = min(end, _next_boundary(vaddr, self.page_size)) - vaddr
                yield vaddr, None, step
                vaddr += step
                continue
            step = min(end - vaddr, mapped)
            try:
                yield vaddr, self.core.read_phys(paddr, step), step
            except NoDataError:
                yield from self._salvage(vaddr, paddr, step)
            vaddr += step

    def _salvage(
        self, vaddr: int, paddr: int, size: int
    ) -> Iterator[tuple[int, bytes | None, int]]:
        """Read a physically contiguous range page by page, marking the holes."""
        end = paddr + size
        while paddr < end:
            step = min(end, _next_boundary(paddr, self.page_size)) - paddr
            data = self.core.read_phys(paddr, step) if self.core.has_phys(paddr, step) else None
            yield vaddr, data, step
            vaddr += step
            paddr += step

    @cached_property
    def utsname(self) -> Utsname:
        """The crashed kernel's ``init_uts_ns.name``.

        :raises CorruptError: if VMCOREINFO lacks ``SYMBOL(init_uts_ns)``.
        :raises NoDataError: if the structure is not in the dump.
        """
        base = self.info.symbol("init_uts_ns")
        if base is None:
            raise CorruptError("VMCOREINFO lacks SYMBOL(init_uts_ns)")
        offset = self.info.offset("uts_namespace.name")
        if offset is None:
            offset = _UTS_NAME_OFFSET_BEFORE_5_11
        raw = self.read_virt(base + offset, _UTS_FIELD * len(_UTS_FIELDS))
        fields = {
            name: raw[i * _UTS_FIELD : (i + 1) * _UTS_FIELD]
            .split(b"\0", 1)[0]
            .decode("utf-8", "replace")
            for i, name in enumerate(_UTS_FIELDS)
        }
        return Utsname(**fields, raw=raw)

    def ram_ranges(self) -> list[tuple[int, int]]:
        """RAM as merged ``[start_pfn, end_pfn)`` ranges, each pfn once.

        A partial last page of a PT_LOAD is not counted, as in makedumpfile's
        first bitmap.
        """
        return self._pfn_ranges(partial_last_page=False)

    def segment_pfn_ranges(self) -> list[tuple[int, int]]:
        """Pfns whose first byte lies in a PT_LOAD, merged.

        makedumpfile's mem_map walk tests a page's start address against the
        segments, so here a partial last page counts.
        """
        return self._pfn_ranges(partial_last_page=True)

    def _pfn_ranges(self, partial_last_page: bool) -> list[tuple[int, int]]:
        page_size = self._page_size_or_default()
        ranges: list[tuple[int, int]] = []
        for segment in self.core.segments:
            start = segment.paddr // page_size
            end = -(-segment.end // page_size) if partial_last_page else segment.end // page_size
            if start >= end:
                continue
            if ranges and start <= ranges[-1][1]:
                ranges[-1] = (ranges[-1][0], max(ranges[-1][1], end))
            else:
                ranges.append((start, end))
        return ranges

    @property
    def max_pfn(self) -> int:
        """One past the highest pfn any PT_LOAD covers (makedumpfile's max_mapnr)."""
        page_size = self._page_size_or_default()
        end = max((segment.end for segment in self.core.segments), default=0)
        return -(-end // page_size)

    def _page_size_or_default(self) -> int:
        try:
            return self.page_size
        except CorruptError:
            return self.arch.default_page_size


def _next_boundary(address: int, unit: int) -> int:
    return (address // unit + 1) * unit
