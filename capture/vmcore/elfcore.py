"""The ELF core file: /proc/vmcore itself, or a saved copy of it.

Only the layout is interpreted here (program headers, which physical range
lives where in the file); what the bytes mean is for the other modules.
Headers are parsed with :mod:`struct`, data is read through mmap windows.
"""

from __future__ import annotations

import bisect
import os
from typing import NamedTuple, Self

from capture.errors import CorruptError, NoDataError, UnsupportedError
from capture.vmcore.elf64 import EHDR, ET_CORE, PHDR, PN_XNUM, PT_LOAD, PT_NOTE, SHDR
from capture.vmcore.filewindows import FileWindows

__all__ = ("ElfCore", "LoadSegment")

_MACHINES = {62: "EM_X86_64", 183: "EM_AARCH64"}
"""ELF machine numbers, named as the architecture table names them."""
_MAX_NOTES_SIZE = 64 << 20
"""No real vmcore has this much note data (a few KiB per CPU); more is corruption."""


class LoadSegment(NamedTuple):
    """One PT_LOAD: a physical range and where its bytes are in the file."""

    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int = 7
    """p_flags (PF_R|PF_W|PF_X in every vmcore); ELF dumps copy it."""
    align: int = 0

    @property
    def end(self) -> int:
        """Physical end address (exclusive) of the memory the segment describes."""
        return self.paddr + self.memsz


class _Extent(NamedTuple):
    """A physical range with file data, disjoint from every other extent."""

    start: int
    end: int
    offset: int


class ElfCore:
    """An open ELF core file with bounds-checked physical reads.

    :param path: /proc/vmcore or a saved vmcore.
    :raises CorruptError: if the file is not an ELF core or its headers are bad.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.size = os.fstat(self._fd).st_size
            # /proc/vmcore reads fastest through mmap; a saved file through pread.
            self._on_procfs = os.path.realpath(path).startswith("/proc/")
            self._file = FileWindows(self._fd, self.size, use_mmap=self._on_procfs)
            self.machine, self.segments, note_ranges, self.note_phdr = _parse_headers(self._fd)
            self.notes = self._read_notes(note_ranges)
        except BaseException:
            self.close()
            raise
        self._extents = _extents(self.segments, self.size)
        self._extent_starts = [extent.start for extent in self._extents]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the windows and the file descriptor."""
        if self._fd >= 0:
            if hasattr(self, "_file"):
                self._file.close()
            os.close(self._fd)
            self._fd = -1

    def read_phys(self, paddr: int, size: int) -> bytes:
        """Read ``size`` bytes of the crashed machine's physical memory.

        :raises NoDataError: if any byte lies in a hole, an excluded range or
            past the end of a truncated file.
        """
        parts = []
        while size > 0:
            extent = self._extent_at(paddr)
            take = min(size, extent.end - paddr)
            parts.append(self._file.read(extent.offset + paddr - extent.start, take))
            paddr += take
            size -= take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_header(self, size: int) -> bytes:
        """The first ``size`` bytes of the file (the ELF header, for writers that copy it)."""
        return self._file.read(0, size)

    def file_span(self, paddr: int, size: int) -> tuple[int, int] | None:
        """``(fd, file offset)`` of ``[paddr, paddr+size)`` if it lies in one
        stretch of a saved file (not /proc/vmcore), for ``copy_file_range``."""
        if self._on_procfs:
            return None
        try:
            extent = self._extent_at(paddr)
        except NoDataError:
            return None
        if paddr + size > extent.end:
            return None
        return self._fd, extent.offset + paddr - extent.start

    def has_phys(self, paddr: int, size: int = 1) -> bool:
        """Whether every byte of ``[paddr, paddr+size)`` can be read."""
        while size > 0:
            try:
                extent = self._extent_at(paddr)
            except NoDataError:
                return False
            take = min(size, extent.end - paddr)
            paddr += take
            size -= take
        return True

    def _extent_at(self, paddr: int) -> _Extent:
        index = bisect.bisect_right(self._extent_starts, paddr) - 1
        if index >= 0:
            extent = self._extents[index]
            if paddr < extent.end:
                return extent
        raise NoDataError(f"physical address {paddr:#x} is not in the dump")

    def _read_notes(self, ranges: list[tuple[int, int]]) -> bytes:
        if sum(size for _, size in ranges) > _MAX_NOTES_SIZE:
            raise CorruptError("PT_NOTE segments are implausibly large")
        try:
            return b"".join(self._file.read(offset, size) for offset, size in ranges)
        except NoDataError as error:
            raise CorruptError(f"the notes lie outside the file: {error}") from None


def _parse_headers(
    fd: int,
) -> tuple[str, list[LoadSegment], list[tuple[int, int]], tuple[int, int]]:
    """Return the machine, the PT_LOADs sorted by address, the PT_NOTE ranges
    and the first PT_NOTE's ``(p_flags, p_align)``.

    Parsed with :mod:`struct` rather than pyelftools: importing pyelftools
    costs 0.13 s and several MB, twice the whole fixed cost of a small dump
    in the crash kernel. The tests check this parser against pyelftools.
    """
    size = os.fstat(fd).st_size
    header = os.pread(fd, EHDR.size, 0)
    if len(header) < 4 or header[:4] != b"\x7fELF":
        raise CorruptError("not a valid ELF file: Magic number does not match")
    if len(header) < EHDR.size:
        raise CorruptError("not a valid ELF file: the header is truncated")
    if header[4] != 2 or header[5] != 1:
        raise UnsupportedError("only little-endian 64-bit ELF cores are supported")
    fields = EHDR.unpack(header)
    e_type, e_machine, phoff, shoff, phentsize, phnum = (
        fields[1], fields[2], fields[5], fields[6], fields[9], fields[10]
    )  # fmt: skip
    if e_type != ET_CORE:
        raise CorruptError(f"not a core file (ELF type {e_type})")
    if phnum == PN_XNUM:
        phnum = _extended_phnum(fd, shoff)
    if phentsize != PHDR.size or phnum == 0 or phoff + phnum * PHDR.size > size:
        raise CorruptError(
            f"bad program header table ({phnum} entries of {phentsize} at {phoff:#x})"
        )
    table = os.pread(fd, phnum * PHDR.size, phoff)
    loads, notes, note_phdr = [], [], None
    for p_type, flags, offset, vaddr, paddr, filesz, memsz, align in PHDR.iter_unpack(table):
        if p_type == PT_LOAD:
            loads.append(LoadSegment(paddr, vaddr, offset, filesz, memsz, flags, align))
        elif p_type == PT_NOTE:
            notes.append((offset, filesz))
            note_phdr = note_phdr or (flags, align)
    loads.sort(key=lambda segment: segment.paddr)
    machine = _MACHINES.get(e_machine, f"EM_{e_machine}")
    return machine, loads, notes, note_phdr or (0, 0)


def _extended_phnum(fd: int, shoff: int) -> int:
    """More than 65534 segments: the count is in section header 0's sh_info."""
    section = os.pread(fd, SHDR.size, shoff)
    if len(section) < SHDR.size:
        raise CorruptError("e_phnum is PN_XNUM but there is no section header 0")
    return int(SHDR.unpack(section)[7])


def _extents(segments: list[LoadSegment], file_size: int) -> list[_Extent]:
    """Disjoint physical ranges backed by file data.

    The kernel-image PT_LOAD overlaps a RAM PT_LOAD (both hold the same
    bytes), so the first segment to cover an address wins. Bytes past
    ``p_filesz`` (excluded pages in an ELF dump) or past the end of a
    truncated file are left out.
    """
    extents: list[_Extent] = []
    covered = 0
    for segment in segments:
        data_end = segment.paddr + min(segment.filesz, max(0, file_size - segment.offset))
        start = max(segment.paddr, covered)
        if start < data_end:
            extents.append(_Extent(start, data_end, segment.offset + start - segment.paddr))
        covered = max(covered, data_end)
    return extents
