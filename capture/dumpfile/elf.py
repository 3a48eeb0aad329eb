"""The ELF dump writer (makedumpfile ``-E``), following makedumpfile's rules.

Each input PT_LOAD becomes one or more output PT_LOADs (docs/formats.md §"The ELF dump"):
runs of fewer than 256 excluded pages are written anyway (with their real
contents), a longer run ends the segment (its pages become the
``p_memsz - p_filesz`` tail) and a new one starts at the next dumpable page;
excluded pages at the end of a segment are always trimmed. Zero pages can only
be excluded once the headers are known, so with dump level bit 1 every
dumpable page is read once beforehand.
"""

from __future__ import annotations

import struct
from itertools import compress

from capture.dumpfile.outcome import DumpOutcome, Progress
from capture.dumpfile.sink import NoSpaceError, Sink
from capture.errors import CaptureError
from capture.filter.bitmap import Bitmap
from capture.filter.levels import DumpLevel
from capture.filter.pagefilter import FilterResult
from capture.logs import log
from capture.vmcore.elf64 import EHDR, PHDR, PN_XNUM, PT_LOAD, PT_NOTE, SHDR
from capture.vmcore.elfcore import LoadSegment
from capture.vmcore.kernel import Vmcore

__all__ = ("ELF_INCOMPLETE", "plan_loads", "write_elf")


ELF_INCOMPLETE = 0x1
"""e_flags bit makedumpfile sets on a dump cut short (DUMP_ELF_INCOMPLETE)."""
EXCLUDED_RUN = 256
"""Excluded runs shorter than this stay in the file (makedumpfile's PFN_EXCLUDED)."""
_COPY_BYTES = 1 << 20
_ZERO_SCAN_PAGES = 256


class OutputLoad:
    """One output PT_LOAD: ``filesz`` bytes of data from ``paddr`` on."""

    __slots__ = ("align", "filesz", "flags", "memsz", "offset", "paddr", "vaddr")

    def __init__(self, paddr: int, vaddr: int, memsz: int, filesz: int, flags: int, align: int):
        self.paddr, self.vaddr, self.memsz, self.filesz = paddr, vaddr, memsz, filesz
        self.flags, self.align = flags, align
        self.offset = 0


def write_elf(
    vmcore: Vmcore, filtered: FilterResult, sink: Sink, progress: Progress | None = None
) -> DumpOutcome:
    """Write ``vmcore``'s dumpable pages to ``sink`` as an ELF core."""
    outcome = DumpOutcome()
    if filtered.level & DumpLevel.ZERO:
        outcome.zero_pages = _exclude_zero_pages(vmcore, filtered.bitmap2)
    page_size = vmcore.page_size
    loads = [load for seg in _input_loads(vmcore) for load in plan_loads(seg, filtered, page_size)]
    notes = vmcore.core.notes
    phnum = 1 + len(loads)
    extended = phnum >= PN_XNUM
    headers_end = EHDR.size + PHDR.size * phnum + (SHDR.size if extended else 0)
    offset = headers_end + len(notes)
    for load in loads:
        load.offset = offset if load.filesz else 0
        offset += load.filesz
    headers = _headers(vmcore, loads, headers_end, len(notes), extended)
    if sink.seekable:
        sink.write_at(0, _with_incomplete(headers, True))
    sink.write_at(headers_end, notes)
    end = offset
    try:
        for load in loads:
            _copy(vmcore, load, sink, outcome, progress)
    except NoSpaceError as error:
        log.error("%s; the dump is incomplete", error)
        outcome.incomplete = True
    outcome.incomplete |= outcome.unreadable > 0  # pages the vmcore lacks: not a whole dump
    sink.write_at(0, _with_incomplete(headers, outcome.incomplete))
    outcome.bytes_written = end
    return outcome


def plan_loads(segment: LoadSegment, filtered: FilterResult, page_size: int) -> list[OutputLoad]:
    """Split one input PT_LOAD by the dumpable bitmap, as makedumpfile does.

    Walked run by run, not page by page: a gap of excluded pages shorter
    than EXCLUDED_RUN joins the file data, a longer one ends the load.
    """
    start, end = segment.paddr, segment.end
    if end <= start:
        return [OutputLoad(start, segment.vaddr, 0, 0, segment.flags, segment.align)]

    def page_start(pfn: int) -> int:
        return max(start, pfn * page_size)

    def page_end(pfn: int) -> int:
        return min(end, (pfn + 1) * page_size)

    first_pfn, end_pfn = start // page_size, -(-end // page_size)
    loads: list[OutputLoad] = []
    current = OutputLoad(start, segment.vaddr, 0, 0, segment.flags, segment.align)
    after_last = first_pfn  # the pfn after the last dumpable page seen
    for run_start, run_end in filtered.bitmap2.runs(first_pfn, end_pfn):
        if run_start - after_last >= EXCLUDED_RUN:
            current.memsz = page_start(run_start) - current.paddr  # the tail
            loads.append(current)
            current = _next_load(current, run_start, page_size)
        current.memsz = current.filesz = page_end(run_end - 1) - current.paddr
        after_last = run_end
    current.memsz = end - current.paddr
    loads.append(current)
    return loads


def _next_load(previous: OutputLoad, pfn: int, page_size: int) -> OutputLoad:
    paddr = pfn * page_size
    vaddr = previous.vaddr + (paddr - previous.paddr)
    return OutputLoad(paddr, vaddr, 0, 0, previous.flags, previous.align)


def _input_loads(vmcore: Vmcore) -> list[LoadSegment]:
    # In file order, as makedumpfile walks them: the kernel-text PT_LOAD first.
    return sorted(vmcore.core.segments, key=lambda segment: segment.offset)


def _exclude_zero_pages(vmcore: Vmcore, bitmap2: Bitmap) -> int:
    """Clear the zero pages from ``bitmap2``, the filter's own: an ELF dump's
    segments are cut from it, so every zero page must be known before the
    headers are written. Returns how many there were."""
    page_size = vmcore.page_size
    zero, zero_chunk = bytes(page_size), bytes(_ZERO_SCAN_PAGES * page_size)
    found = 0
    for start, end in bitmap2.runs():
        for first in range(start, end, _ZERO_SCAN_PAGES):
            last = min(end, first + _ZERO_SCAN_PAGES)
            try:
                chunk = vmcore.read_phys(first * page_size, (last - first) * page_size)
            except CaptureError:
                continue  # unreadable pages are not known to be zero: keep them
            if chunk == zero_chunk:
                bitmap2.clear_range(first, last)
                found += last - first
                continue
            pages = (chunk[at : at + page_size] for at in range(0, len(chunk), page_size))
            for pfn in compress(range(first, last), map(zero.__eq__, pages)):
                bitmap2.clear_range(pfn, pfn + 1)
                found += 1
    return found


def _headers(
    vmcore: Vmcore, loads: list[OutputLoad], notes_at: int, notes_size: int, extended: bool
) -> bytes:
    original = vmcore.core.read_header(EHDR.size)
    fields = list(EHDR.unpack(original))
    phnum = 1 + len(loads)
    # ident, type, machine, version, entry, phoff, shoff, flags, ehsize,
    # phentsize, phnum, shentsize, shnum, shstrndx
    fields[5] = EHDR.size
    fields[6] = EHDR.size + PHDR.size * phnum if extended else 0
    fields[7] &= ~ELF_INCOMPLETE
    fields[8], fields[9] = EHDR.size, PHDR.size
    fields[10] = PN_XNUM if extended else phnum
    if extended:
        fields[11] = SHDR.size
    fields[12] = 1 if extended else 0
    fields[13] = 0
    note_flags, note_align = vmcore.core.note_phdr
    note = PHDR.pack(PT_NOTE, note_flags, notes_at, 0, 0, notes_size, notes_size, note_align)
    parts = [EHDR.pack(*fields), note]
    parts += [_load_phdr(load) for load in loads]
    if extended:  # more than 65534 segments: the real count lives in section 0
        parts.append(SHDR.pack(0, 0, 0, 0, 0, 1, 0, phnum, 0, 0))
    return b"".join(parts)


def _load_phdr(load: OutputLoad) -> bytes:
    return PHDR.pack(
        PT_LOAD,
        load.flags,
        load.offset,
        load.vaddr,
        load.paddr,
        load.filesz,
        load.memsz,
        load.align,
    )


def _with_incomplete(headers: bytes, incomplete: bool) -> bytes:
    if not incomplete:
        return headers
    flags = struct.unpack_from("<I", headers, 48)[0] | ELF_INCOMPLETE
    return headers[:48] + struct.pack("<I", flags) + headers[52:]


def _copy(
    vmcore: Vmcore, load: OutputLoad, sink: Sink, outcome: DumpOutcome, progress: Progress | None
) -> None:
    page_size = vmcore.page_size
    for done in range(0, load.filesz, _COPY_BYTES):
        size = min(_COPY_BYTES, load.filesz - done)
        if not _copy_in_kernel(vmcore, load.paddr + done, size, sink, load.offset + done):
            try:
                data = vmcore.read_phys(load.paddr + done, size)
            except CaptureError:
                data = _salvage(vmcore, load.paddr + done, size, outcome)
            sink.write_at(load.offset + done, data)
        outcome.pages_written += -(-size // page_size)
        if progress is not None:
            progress(outcome.pages_written, load.offset + done + size)


def _copy_in_kernel(vmcore: Vmcore, paddr: int, size: int, sink: Sink, offset: int) -> bool:
    span = vmcore.core.file_span(paddr, size)
    return span is not None and sink.copy_from(*span, size, offset)


def _salvage(vmcore: Vmcore, paddr: int, size: int, outcome: DumpOutcome) -> bytes:
    """Read what exists page by page; a missing page reads as zeros."""
    page_size = vmcore.page_size
    parts = []
    for at in range(paddr, paddr + size, page_size):
        length = min(page_size - at % page_size, paddr + size - at)
        try:
            parts.append(vmcore.read_phys(at, length))
        except CaptureError:
            outcome.unreadable += 1
            parts.append(bytes(length))
    return b"".join(parts)
