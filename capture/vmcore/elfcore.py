"""The ELF core file: /proc/vmcore itself, or a saved copy of it.

Only the layout is interpreted here (program headers, which physical range
lives where in the file); what the bytes mean is for the other modules.
Headers are parsed with pyelftools, data is read through mmap windows.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from typing import Self

from elftools.elf.elffile import ELFFile

from capture.errors import CorruptError, NoDataError, UnsupportedError
from capture.vmcore.filewindows import FileWindows

__all__ = ("ElfCore", "LoadSegment")

_ET_CORE = "ET_CORE"
_MAX_NOTES_SIZE = 64 << 20
"""No real vmcore has this much note data (a few KiB per CPU); more is corruption."""


@dataclass(frozen=True)
class LoadSegment:
    """One PT_LOAD: a physical range and where its bytes are in the file."""

    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int

    @property
    def end(self) -> int:
        """Physical end address (exclusive) of the memory the segment describes."""
        return self.paddr + self.memsz


@dataclass(frozen=True)
class _Extent:
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
            self._file = FileWindows(self._fd, self.size)
            self.machine, self.segments, note_ranges = _parse_headers(self._fd)
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

    def read_pfn(self, pfn: int, page_size: int) -> bytes:
        """Read one whole page frame."""
        return self.read_phys(pfn * page_size, page_size)

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


def _parse_headers(fd: int) -> tuple[str, list[LoadSegment], list[tuple[int, int]]]:
    """Return the machine, the PT_LOADs sorted by address, and the PT_NOTE ranges."""
    # pyelftools reads through a Python file object; keep our descriptor ours.
    with os.fdopen(os.dup(fd), "rb") as stream:
        try:
            elf = ELFFile(stream)
            if elf.header["e_type"] != _ET_CORE:
                raise CorruptError(f"not a core file (ELF type {elf.header['e_type']})")
            machine = str(elf.header["e_machine"])
            loads, notes = [], []
            for segment in elf.iter_segments():
                header = segment.header
                if header["p_type"] == "PT_LOAD":
                    loads.append(
                        LoadSegment(
                            paddr=header["p_paddr"],
                            vaddr=header["p_vaddr"],
                            offset=header["p_offset"],
                            filesz=header["p_filesz"],
                            memsz=header["p_memsz"],
                        )
                    )
                elif header["p_type"] == "PT_NOTE":
                    notes.append((header["p_offset"], header["p_filesz"]))
        except CorruptError:
            raise
        except Exception as error:  # pyelftools signals bad input with many types
            raise CorruptError(f"not a valid ELF file: {error or type(error).__name__}") from None
    if elf.elfclass != 64 or not elf.little_endian:
        raise UnsupportedError("only little-endian 64-bit ELF cores are supported")
    loads.sort(key=lambda segment: segment.paddr)
    return machine, loads, notes


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
