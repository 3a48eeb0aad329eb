"""The kdump-compressed ("diskdump") writer, byte for byte as readers expect.

Layout (docs/formats.md §"File layout"): header block, sub-header and notes, bitmap1,
bitmap2, one 24-byte descriptor per dumpable pfn in pfn order, then page data
(the shared zero page first). Pages are streamed in one pass; descriptors are
written only after the data they point to, so a dump cut short by a full disk
is still readable up to where it stopped, and says INCOMPLETE.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from itertools import accumulate, chain, groupby, islice, repeat
from typing import TYPE_CHECKING, NamedTuple

from capture.dumpfile.codecs import Buffer, Codec, StorePages
from capture.dumpfile.outcome import DumpOutcome, Progress
from capture.dumpfile.sink import NoSpaceError, Sink
from capture.errors import CaptureError
from capture.filter import Bitmap, DumpLevel, FilteredPages, FilterResult
from capture.logs import log
from capture.vmcore import Vmcore
from capture.vmcore.notes import find_vmcoreinfo

if TYPE_CHECKING:
    from concurrent.futures import Future

    from capture.dumpfile.workers import CompressorPool

__all__ = ("KdumpLayout", "write_kdump")


SIGNATURE = b"KDUMP   "
HEADER_VERSION = 6
STATUS_INCOMPLETE = 0x8
HEADER = struct.Struct("<8si390s6xqqIiiIIIIIIi")
SUB_HEADER = struct.Struct("<qiiQQQQQQQQQQQ")
DESCRIPTOR = struct.Struct("<qIIQ")
_FLUSH_BYTES = 256 << 10
"""Stored pages held before they are written; a flush holds them twice (their
join). The agent's heap during the dump is what runs out at crashkernel=128M:
with 2 MiB here, 32768 descriptors and 1 MiB reads the dump's peak heap was
16.9 MiB, with these sizes 11.1 MiB, at the same speed (measured)."""
_FLUSH_DESCRIPTORS = 1 << 13
"""Descriptors held before they are written (~0.5 MB): zero pages at levels
with bit 1 add descriptors but no data, so a data-size bound alone never
flushes them, and a mostly zeroed machine would hold one per page."""
_READ_PAGES = 64
"""Pages read at a time (256 KiB), and without threads compressed at a time:
the read and the batch queued for the codec are both held while the next is
read."""
_WORKER_BATCH_PAGES = 256
"""A worker's batch: handing a batch to a thread and back costs about as much
as compressing 64 pages with zstd, so 64-page batches kept two threads at
0.75x of one (-z -d 0 of a 2 GB vmcore), 256-page ones at 0.70x (both when
the main thread still read the pages)."""
_UTS_FIELD = 65


class KdumpLayout(NamedTuple):
    """Where each part of the file goes, from the page size, notes and bitmaps."""

    block_size: int
    note_size: int
    max_pfn: int
    dumpable: int
    zero_page: bool

    @property
    def sub_header_blocks(self) -> int:
        return _ceil_div(SUB_HEADER.size + self.note_size, self.block_size)

    @property
    def bitmap_blocks(self) -> int:
        """Both bitmaps together, in blocks (each half block aligned)."""
        bitmap_bytes = _ceil_div(self.max_pfn, 8)
        return 2 * _ceil_div(bitmap_bytes, self.block_size)

    @property
    def bitmap1_offset(self) -> int:
        return (1 + self.sub_header_blocks) * self.block_size

    @property
    def bitmap2_offset(self) -> int:
        return self.bitmap1_offset + self.bitmap_blocks // 2 * self.block_size

    @property
    def descriptors_offset(self) -> int:
        return (1 + self.sub_header_blocks + self.bitmap_blocks) * self.block_size

    @property
    def data_offset(self) -> int:
        return self.descriptors_offset + DESCRIPTOR.size * self.dumpable


def _ceil_div(value: int, unit: int) -> int:
    return -(-value // unit)


def _merge_zero_pages(
    descriptors: Iterable[bytes], is_zero: list[bool], zero_descriptor: bytes
) -> list[bytes]:
    """Descriptors in pfn order: the shared zero page's where ``is_zero``."""
    others = iter(descriptors)
    return [zero_descriptor if zero else next(others) for zero in is_zero]


def _zero_pages(runs: list[bytes], zero: bytes) -> list[bool] | None:
    """Which pages of ``runs`` equal ``zero``, or None if none does."""
    size = len(zero)
    is_zero = list(
        chain.from_iterable(
            map(run.startswith, repeat(zero), range(0, len(run), size)) for run in runs
        )
    )
    return is_zero if any(is_zero) else None


def _without_zero_pages(runs: list[bytes], is_zero: list[bool], page_size: int) -> list[Buffer]:
    """The stretches of ``runs`` between their zero pages, as views (no copy)."""
    flags = iter(is_zero)
    kept: list[Buffer] = []
    for run in runs:
        view, at = memoryview(run), 0
        for zero, stretch in groupby(islice(flags, len(run) // page_size)):
            end = at + len(list(stretch)) * page_size
            if not zero:
                kept.append(view[at:end])
            at = end
    return kept


def write_kdump(
    vmcore: Vmcore,
    filtered: FilteredPages,
    codec: Codec,
    store: StorePages,
    sink: Sink,
    progress: Progress | None = None,
    threads: int = 1,
) -> DumpOutcome:
    """Write ``vmcore``'s dumpable pages to ``sink`` in kdump-compressed format,
    each page stored by ``store``, a compressor ``codec`` made (or, with more
    than one of ``threads``, by compressors of its own on worker threads).

    Cycle by cycle, the pages then that cycle's part of both bitmaps are
    written, so only one cycle's bitmaps are ever held. The zero pages found on
    the way are counted in the outcome.
    """
    page_size = vmcore.page_size
    layout = KdumpLayout(
        block_size=page_size,
        note_size=len(vmcore.core.notes),
        max_pfn=filtered.max_pfn,
        dumpable=filtered.dumpable,
        zero_page=bool(filtered.level & DumpLevel.ZERO),
    )
    header = _HeaderFields(vmcore, filtered.level, codec, layout)
    outcome = DumpOutcome()
    if sink.seekable:
        # Space for everything but the page data, so the bitmaps, descriptors
        # and header rewrites cannot fail on a full disk; and an INCOMPLETE
        # header until the end, in case we never get there.
        sink.reserve(0, layout.data_offset)
        sink.write_at(0, header.pack(incomplete=True))
    sink.write_at(page_size, header.sub_header() + vmcore.core.notes)
    pool = None
    if threads > 1 and codec.holds_gil:
        log.info("%s compresses under the GIL: --num-threads %d ignored", codec.name, threads)
    elif threads > 1:
        from capture.dumpfile.workers import CompressorPool  # threads only: imports cost

        pool = CompressorPool(codec, page_size, threads)
    pages = _PageStream(vmcore, filtered, store, pool, codec.flag, layout, sink, outcome, progress)
    try:
        _write_cycles(pages, filtered, sink, layout, outcome)
    finally:
        if pool is not None:
            pool.close()
    _pad_bitmaps(sink, layout)
    outcome.incomplete |= outcome.unreadable > 0  # pages the vmcore lacks: not a whole dump
    sink.write_at(0, header.pack(incomplete=outcome.incomplete))
    outcome.bytes_written = pages.end_offset
    return outcome


def _write_cycles(
    pages: _PageStream,
    filtered: FilteredPages,
    sink: Sink,
    layout: KdumpLayout,
    outcome: DumpOutcome,
) -> None:
    """Each cycle's pages, then its part of the bitmaps; after a full disk,
    only the bitmaps (their space is reserved), so what was written reads."""
    for cycle in filtered.cycles():
        if not outcome.incomplete:
            _until_full(outcome, partial(pages.write_cycle, cycle))
        _write_bitmaps(sink, layout, cycle)
        del cycle  # before the next cycle is made: one cycle's bitmaps at a time
    if not outcome.incomplete:
        _until_full(outcome, pages.finish)


def _until_full(outcome: DumpOutcome, step: Callable[[], None]) -> None:
    """Do ``step``; a full target (or the run's deadline) makes the dump incomplete."""
    try:
        step()
    except NoSpaceError as error:
        log.error("%s; the dump is incomplete", error)
        outcome.incomplete = True


def _write_bitmaps(sink: Sink, layout: KdumpLayout, cycle: FilterResult) -> None:
    """One cycle's part of bitmap1 and bitmap2, where the whole ones go, in
    pieces (a copy of a whole cycle's bitmap would double its memory)."""
    at = cycle.bitmap1.start // 8
    for offset, data in ((layout.bitmap1_offset, cycle.bitmap1.data),
                         (layout.bitmap2_offset, cycle.bitmap2.data)):  # fmt: skip
        for piece in range(0, len(data), _FLUSH_BYTES):
            sink.write_at(offset + at + piece, bytes(data[piece : piece + _FLUSH_BYTES]))


def _pad_bitmaps(sink: Sink, layout: KdumpLayout) -> None:
    """Zeros from each bitmap's last byte to its end block (a stream has no
    holes to leave them in)."""
    used = _ceil_div(layout.max_pfn, 8)
    padding = bytes(layout.bitmap_blocks // 2 * layout.block_size - used)
    for offset in (layout.bitmap1_offset, layout.bitmap2_offset):
        sink.write_at(offset + used, padding)


class _HeaderFields:
    """The disk_dump_header and kdump_sub_header of one dump."""

    def __init__(self, vmcore: Vmcore, level: DumpLevel, codec: Codec, layout: KdumpLayout):
        self._vmcore, self._level, self._codec, self._layout = vmcore, level, codec, layout
        self._uts = _utsname(vmcore)  # once: an unreadable one is warned about once

    def pack(self, incomplete: bool) -> bytes:
        vmcore, layout = self._vmcore, self._layout
        status = self._codec.flag | (STATUS_INCOMPLETE if incomplete else 0)
        return HEADER.pack(
            SIGNATURE, HEADER_VERSION, self._uts,
            _crashtime(vmcore), 0,
            status, layout.block_size, layout.sub_header_blocks, layout.bitmap_blocks,
            min(layout.max_pfn, 2**32 - 1), 0, 0, 0, 0, vmcore.cpus,
        )  # fmt: skip

    def sub_header(self) -> bytes:
        vmcore, layout = self._vmcore, self._layout
        notes_at = layout.block_size + SUB_HEADER.size
        note = find_vmcoreinfo(vmcore.notes)
        info_at, info_size = (notes_at + note.desc_offset, len(note.desc)) if note else (0, 0)
        return SUB_HEADER.pack(
            vmcore.translator.phys_base, int(self._level), 0, 0, 0,
            info_at, info_size, notes_at, layout.note_size, 0, 0, 0, 0, layout.max_pfn,
        )  # fmt: skip


def _utsname(vmcore: Vmcore) -> bytes:
    try:
        return vmcore.utsname.raw
    except CaptureError as error:
        # libkdumpfile needs sysname "Linux" and a machine to know the architecture.
        log.warning("%s: utsname unreadable (%s); building it from VMCOREINFO", vmcore.path, error)
        fields = ["Linux", "", vmcore.info.osrelease or "unknown", "unknown", vmcore.arch.name, ""]
        return b"".join(name.encode()[: _UTS_FIELD - 1].ljust(_UTS_FIELD, b"\0") for name in fields)


def _crashtime(vmcore: Vmcore) -> int:
    try:
        return vmcore.info.crashtime or 0
    except CaptureError:
        return 0


class _Batch:
    """Some dumpable pages, read and stored: what their descriptors need."""

    __slots__ = ("is_zero", "pieces", "sizes", "unreadable", "zero_pages")

    def __init__(self, zero_level: bool) -> None:
        self.pieces: list[bytes] = []
        """The stored pages (zero pages left out where the level excludes them), back to back."""
        self.sizes: list[int] = []
        self.is_zero: list[bool] | None = [] if zero_level else None
        """Per page read, whether the shared zero page stands for it (levels with bit 1)."""
        self.zero_pages = 0
        self.unreadable: list[int] = []
        """Pfns the vmcore lacks after all: dropped from the dump."""

    @property
    def pages(self) -> int:
        """Pages described: every page read."""
        return len(self.is_zero) if self.is_zero is not None else len(self.sizes)


class _BatchReader:
    """Reads the pages of some pfn ranges and stores them.

    With worker threads this runs on a worker, so the core that reads a page
    (the kernel's copy, a third of a zstd dump's time) also compresses it
    while it is in its cache: reading on one thread and compressing on
    another kept two threads at 0.70x of one for -z -d 0 (the workers' zstd
    ran a third slower on pages another core had read).
    """

    def __init__(self, vmcore: Vmcore, zero_level: bool, stored_zero: tuple[bytes, int]):
        self._read = vmcore.read_phys
        self._page_size = vmcore.page_size
        self._zero = bytes(self._page_size)
        self._zero_chunk = bytes(_READ_PAGES * self._page_size)
        self._zero_level = zero_level
        self._stored_zero = stored_zero

    def __call__(self, store: StorePages, ranges: list[tuple[int, int]]) -> _Batch:
        batch = _Batch(self._zero_level)
        runs: list[Buffer] = []
        for first, end in ranges:
            for at in range(first, end, _READ_PAGES):
                self._read_chunk(at, min(end, at + _READ_PAGES), runs, batch, store)
        self._store_runs(store, runs, batch)
        return batch

    def _read_chunk(
        self, first: int, end: int, runs: list[Buffer], batch: _Batch, store: StorePages
    ) -> None:
        page_size = self._page_size
        try:
            chunk = self._read(first * page_size, (end - first) * page_size)
        except CaptureError:
            self._read_salvaged(first, end, runs, batch)
            return
        if chunk == self._zero_chunk:  # whole runs of zeros are common (free, unused RAM)
            self._add_zero_pages(end - first, runs, batch, store)
        else:
            self._add_run(chunk, runs, batch)

    def _read_salvaged(self, first: int, end: int, runs: list[Buffer], batch: _Batch) -> None:
        for pfn in range(first, end):
            try:
                page = self._read(pfn * self._page_size, self._page_size)
            except CaptureError:
                batch.unreadable.append(pfn)
            else:
                self._add_run(page, runs, batch)

    def _add_run(self, run: bytes, runs: list[Buffer], batch: _Batch) -> None:
        if batch.is_zero is None:
            runs.append(run)
            return
        is_zero = _zero_pages([run], self._zero)
        if is_zero is None:
            batch.is_zero.extend(repeat(False, len(run) // self._page_size))
            runs.append(run)
        else:
            batch.is_zero.extend(is_zero)
            batch.zero_pages += is_zero.count(True)
            runs.extend(_without_zero_pages([run], is_zero, self._page_size))

    def _add_zero_pages(
        self, count: int, runs: list[Buffer], batch: _Batch, store: StorePages
    ) -> None:
        """``count`` zero pages: the shared zero page's, or each stored as the
        codec stores a zero page (the runs before them stored first)."""
        if batch.is_zero is not None:
            batch.is_zero.extend(repeat(True, count))
            batch.zero_pages += count
            return
        self._store_runs(store, runs, batch)
        stored, size = self._stored_zero
        batch.pieces.append(stored * count)
        batch.sizes.extend(repeat(size, count))

    @staticmethod
    def _store_runs(store: StorePages, runs: list[Buffer], batch: _Batch) -> None:
        if runs:
            pieces, sizes = store(runs)
            batch.pieces.extend(pieces)
            batch.sizes.extend(sizes)
            runs.clear()


class _PageStream:
    """Reads dumpable pages, compresses them, writes data then descriptors.

    Pages go in batches of pfn ranges. With worker threads, each batch is
    read and compressed on a worker while the next are planned: what is done
    with its result (offsets, descriptors, data) waits in a queue and is
    done in submission order, so the file does not depend on the threads.
    """

    def __init__(
        self,
        vmcore: Vmcore,
        filtered: FilteredPages,
        store: StorePages,
        pool: CompressorPool | None,
        flag: int,
        layout: KdumpLayout,
        sink: Sink,
        outcome: DumpOutcome,
        progress: Progress | None,
    ) -> None:
        self._sink, self._outcome, self._progress = sink, outcome, progress
        self._store, self._pool, self._flag = store, pool, flag
        self._queued: deque[tuple[Future[_Batch], Bitmap]] = deque()
        # One batch (~1 MiB read, then stored) in flight per worker, and two waiting.
        self._queue_depth = self._pool.threads + 2 if self._pool else 0
        self._batch_pages = _WORKER_BATCH_PAGES if self._pool else _READ_PAGES
        self._planned: list[tuple[int, int]] = []
        self._planned_pages = 0
        self._page_size = vmcore.page_size
        self._data: list[bytes] = []
        self._data_size = 0
        self._descriptors: list[bytes] = []
        self._descriptor_at = layout.descriptors_offset
        self.end_offset = layout.data_offset
        self._zero_descriptor = DESCRIPTOR.pack(layout.data_offset, self._page_size, 0, 0)
        zero = bytes(self._page_size)
        pieces, sizes = self._store([zero])
        self._reader = _BatchReader(vmcore, layout.zero_page, (b"".join(pieces), sizes[0]))
        if layout.zero_page:
            self._append_data(zero)

    def write_cycle(self, cycle: FilterResult) -> None:
        """Read, store and write every dumpable page of ``cycle``; a page
        missing from the vmcore is cleared from its bitmap2 before the cycle's
        bitmaps are written."""
        bitmap2 = cycle.bitmap2
        room = self._batch_pages
        for start, end in bitmap2.runs():
            # Short runs (a busy machine's -d 31 is mostly runs of a few pages)
            # share a batch, so the per-batch work is paid once per batch
            # however fragmented the dump is.
            while start < end:
                take = min(end - start, room - self._planned_pages)
                self._planned.append((start, start + take))
                self._planned_pages += take
                start += take
                if self._planned_pages == room:
                    self._submit(bitmap2)
        self._submit(bitmap2)
        while self._queued:
            self._write_next()

    def finish(self) -> None:
        """Write what is still buffered."""
        self._flush()

    def _submit(self, bitmap2: Bitmap) -> None:
        """Read and store the planned ranges: at once without threads, else on a worker."""
        ranges = self._planned
        if not ranges:
            return
        self._planned, self._planned_pages = [], 0
        if self._pool is None:
            self._write_batch(self._reader(self._store, ranges), bitmap2)
            return
        self._queued.append((self._pool.submit(partial(self._reader, ranges=ranges)), bitmap2))
        while len(self._queued) > self._queue_depth:
            self._write_next()

    def _write_next(self) -> None:
        future, bitmap2 = self._queued.popleft()
        self._write_batch(future.result(), bitmap2)

    def _write_batch(self, batch: _Batch, bitmap2: Bitmap) -> None:
        for pfn in batch.unreadable:
            # Not in the vmcore after all: drop it from the dump, keeping
            # bitmap2 and the descriptor ranks consistent.
            bitmap2.clear_range(pfn, pfn + 1)
        self._outcome.unreadable += len(batch.unreadable)
        self._outcome.zero_pages += batch.zero_pages
        self._describe(batch)
        self._data.extend(batch.pieces)
        self._after_pages(batch.pages)

    def _describe(self, batch: _Batch) -> None:
        """The descriptors of ``batch``'s pages, its stored pages placed after
        the data so far."""
        if batch.zero_pages and batch.zero_pages == batch.pages:  # common: unused RAM
            self._descriptors.extend(repeat(self._zero_descriptor, batch.zero_pages))
            return
        sizes = batch.sizes
        offsets = list(accumulate(sizes, initial=self.end_offset))
        end = offsets.pop()
        self._data_size += end - self.end_offset
        self.end_offset = end
        descriptors: Iterable[bytes] = map(
            DESCRIPTOR.pack, offsets, sizes, self._flags(sizes), repeat(0)
        )
        if batch.zero_pages and batch.is_zero is not None:
            descriptors = _merge_zero_pages(descriptors, batch.is_zero, self._zero_descriptor)
        self._descriptors.extend(descriptors)

    def _flags(self, sizes: list[int]) -> Iterable[int]:
        """The descriptor flags: a page stored as it is has none."""
        page_size = self._page_size
        if not sizes or max(sizes) < page_size:
            return repeat(self._flag)
        return [self._flag if size < page_size else 0 for size in sizes]

    def _append_data(self, data: bytes) -> None:
        self._data.append(data)
        self._data_size += len(data)
        self.end_offset += len(data)

    def _after_pages(self, count: int) -> None:
        self._outcome.pages_written += count
        if self._data_size >= _FLUSH_BYTES or len(self._descriptors) >= _FLUSH_DESCRIPTORS:
            self._flush()
        if self._progress is not None:
            self._progress(self._outcome.pages_written, self.end_offset)

    def _flush(self) -> None:
        """Write buffered data, then the descriptors pointing into it."""
        data_at = self.end_offset - self._data_size
        try:
            if self._data:
                self._sink.write_at(data_at, b"".join(self._data))
        except NoSpaceError as error:
            self._keep_descriptors_below(data_at + error.written)
            self._write_descriptors()
            raise
        self._data.clear()
        self._data_size = 0
        self._write_descriptors()

    def _keep_descriptors_below(self, written_end: int) -> None:
        kept = []
        for descriptor in self._descriptors:
            offset, size, _, _ = DESCRIPTOR.unpack(descriptor)
            if offset + size > written_end:
                break
            kept.append(descriptor)
        self._descriptors = kept

    def _write_descriptors(self) -> None:
        if self._descriptors:
            table = b"".join(self._descriptors)
            self._sink.write_at(self._descriptor_at, table)
            self._descriptor_at += len(table)
            self._descriptors.clear()
