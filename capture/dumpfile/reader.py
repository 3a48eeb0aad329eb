"""Reading dump files back: kdump-compressed, plain or flattened.

:func:`open_dump` probes a file and returns a :class:`~capture.vmcore.Vmcore`
over it, so ``info``, ``dmesg`` and the tests read our own outputs (and
makedumpfile's) exactly as they read /proc/vmcore.
"""

from __future__ import annotations

import bisect
import os
import zlib
from collections import OrderedDict
from typing import Protocol

from capture.dumpfile import flatformat
from capture.dumpfile.codecs import FLAG_LZO, FLAG_SNAPPY, FLAG_ZLIB, FLAG_ZSTD
from capture.dumpfile.kdump import DESCRIPTOR, HEADER, SIGNATURE, STATUS_INCOMPLETE, SUB_HEADER
from capture.errors import CorruptError, NoDataError, UnsupportedError
from capture.filter.bitmap import Bitmap
from capture.vmcore.arch import ARCHITECTURES
from capture.vmcore.elfcore import ElfCore, LoadSegment
from capture.vmcore.filewindows import FileWindows
from capture.vmcore.kernel import Vmcore

__all__ = ("FlattenedFile", "KdumpCore", "dump_format", "open_dump")

_RANK_BLOCK = 4096
_PAGES_CACHED = 64


def open_dump(path: str) -> Vmcore:
    """Open /proc/vmcore, an ELF dump or a kdump-compressed dump (plain or flattened).

    :raises CorruptError: if the file is none of these.
    """
    form = dump_format(path)
    if form == KDUMP_COMPRESSED:
        return Vmcore(path, core=KdumpCore(path, _Windows(path)))
    if form == FLATTENED:
        flat = FlattenedFile(path)
        if flat.read(0, 8) == SIGNATURE:
            return Vmcore(path, core=KdumpCore(path, flat))
        raise UnsupportedError("a flattened ELF dump: run 'kdump-capture rebuild' on it first")
    if form == DISKDUMP:
        raise UnsupportedError("an old diskdump file: not supported")
    return Vmcore(path, core=ElfCore(path))


KDUMP_COMPRESSED, FLATTENED, DISKDUMP = "kdump-compressed", "flattened", "diskdump"


def dump_format(path: str) -> str | None:
    """Which dump format ``path`` has by its signature, in words; None for
    anything else (an ELF file, or no dump at all)."""
    with open(path, "rb") as file:
        magic = file.read(16)
    if magic.startswith(SIGNATURE):
        return KDUMP_COMPRESSED
    if magic == flatformat.SIGNATURE:
        return FLATTENED
    if magic.startswith(b"DISKDUMP"):
        return DISKDUMP
    return None


class _Source(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class _Windows:
    """A plain file read through mmap windows."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.size = os.fstat(self._fd).st_size
        self._windows = FileWindows(self._fd, self.size)

    def read(self, offset: int, length: int) -> bytes:
        return self._windows.read(offset, length)

    def close(self) -> None:
        self._windows.close()
        os.close(self._fd)


class FlattenedFile:
    """Random access to the file a flattened stream describes, without rebuilding it.

    Bytes no record covers read as zeros, as crash reads them.
    """

    def __init__(self, path: str) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._starts: list[int] = []
        self._records: list[tuple[int, int, int]] = []
        self._index()
        self.size = max((offset + length for offset, length, _ in self._records), default=0)

    def _index(self) -> None:
        file = self._file
        file.seek(flatformat.HEADER_SIZE)
        records = []
        for offset, length in flatformat.records(file.read):
            records.append((offset, length, file.tell()))
            file.seek(length, os.SEEK_CUR)
        records.sort()
        self._records = records
        self._starts = [offset for offset, _, _ in records]

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        index = max(0, bisect.bisect_right(self._starts, offset) - 1)
        end = offset + length
        for start, size, position in self._records[index:]:
            if start >= end:
                break
            low, high = max(start, offset), min(start + size, end)
            if low < high:
                self._file.seek(position + low - start)
                out[low - offset : high - offset] = self._file.read(high - low)
        return bytes(out)

    def close(self) -> None:
        self._file.close()


class KdumpCore:
    """A kdump-compressed dump seen as a core file: physical reads by page."""

    def file_span(self, paddr: int, size: int) -> tuple[int, int] | None:
        """Never: pages are compressed one by one."""
        return None

    def __init__(self, path: str, source: _Source) -> None:
        self.path = path
        self._source = source
        try:
            self._parse()
        except BaseException:
            source.close()
            raise
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def _parse(self) -> None:
        header = HEADER.unpack(self._source.read(0, HEADER.size))
        uts = header[2]
        self.incomplete = bool(header[5] & STATUS_INCOMPLETE)
        self.block_size = block = header[6]
        if block < 512 or block & (block - 1):
            raise CorruptError(f"kdump header block size {block} is not a page size")
        sub_blocks, bitmap_blocks = header[7], header[8]
        sub = SUB_HEADER.unpack(self._source.read(block, SUB_HEADER.size))
        self.phys_base, self.dump_level = sub[0], sub[1]
        note_at, note_size, max_pfn = sub[7], sub[8], sub[13] or header[9]
        self.notes = self._source.read(note_at, note_size)
        self.note_phdr = (0, 4)
        self.machine = _machine(uts[4 * 65 : 5 * 65].split(b"\0", 1)[0].decode("ascii", "replace"))
        half = bitmap_blocks // 2 * block
        bitmaps_at = (1 + sub_blocks) * block
        self.bitmap1 = _bitmap(self._source.read(bitmaps_at, half), max_pfn)
        self.bitmap2 = _bitmap(self._source.read(bitmaps_at + half, half), max_pfn)
        self.descriptors_at = (1 + sub_blocks + bitmap_blocks) * block
        self._ranks = [0]
        for start in range(0, max_pfn, _RANK_BLOCK):
            self._ranks.append(self._ranks[-1] + self.bitmap2.count(start, start + _RANK_BLOCK))
        self.segments = [
            LoadSegment(start * block, 0, 0, (end - start) * block, (end - start) * block)
            for start, end in self.bitmap1.runs()
        ]
        self.size = self._source.size

    def close(self) -> None:
        self._source.close()

    def read_header(self, size: int) -> bytes:
        raise UnsupportedError("a kdump-compressed dump has no ELF header to copy")

    def has_phys(self, paddr: int, size: int = 1) -> bool:
        block = self.block_size
        return all(
            self.bitmap2.is_set(pfn) for pfn in range(paddr // block, -(-(paddr + size) // block))
        )

    def read_phys(self, paddr: int, size: int) -> bytes:
        parts = []
        block = self.block_size
        while size > 0:
            within = paddr % block
            take = min(size, block - within)
            parts.append(self._page(paddr // block)[within : within + take])
            paddr += take
            size -= take
        return b"".join(parts)

    def _page(self, pfn: int) -> bytes:
        page = self._cache.get(pfn)
        if page is None:
            page = self._load(pfn)
            self._cache[pfn] = page
            if len(self._cache) > _PAGES_CACHED:
                self._cache.popitem(last=False)
        return page

    def _load(self, pfn: int) -> bytes:
        if not self.bitmap2.is_set(pfn):
            raise NoDataError(f"page {pfn:#x} is excluded from the dump")
        block = _RANK_BLOCK * (pfn // _RANK_BLOCK)
        rank = self._ranks[pfn // _RANK_BLOCK] + self.bitmap2.count(block, pfn)
        raw = self._source.read(self.descriptors_at + rank * DESCRIPTOR.size, DESCRIPTOR.size)
        offset, size, flags, _ = DESCRIPTOR.unpack(raw)
        if offset == 0:
            raise NoDataError(f"page {pfn:#x} was never written (the dump is incomplete)")
        if size > self.block_size or offset < 0:
            raise CorruptError(f"page {pfn:#x} has a bad descriptor ({offset:#x}, {size})")
        return _decompress(self._source.read(offset, size), flags, self.block_size, pfn)


def _bitmap(data: bytes, size: int) -> Bitmap:
    bitmap = Bitmap(size)
    bitmap.data[:] = data[: len(bitmap.data)].ljust(len(bitmap.data), b"\0")
    return bitmap


def _machine(uname_machine: str) -> str:
    for elf_machine, arch in ARCHITECTURES.items():
        if arch.name == uname_machine:
            return elf_machine
    raise UnsupportedError(f"architecture {uname_machine or '(empty utsname)'} is not supported")


def _decompress(data: bytes, flags: int, page_size: int, pfn: int) -> bytes:
    try:
        if flags == 0:
            page = data
        elif flags & FLAG_ZSTD:
            page = _unzstd(data, page_size)
        elif flags & FLAG_ZLIB:
            page = zlib.decompress(data)
        elif flags & FLAG_LZO:
            from capture.dumpfile import _lzo

            page = _lzo.decompress(data, page_size)
        elif flags & FLAG_SNAPPY:
            import cramjam

            page = bytes(cramjam.snappy.decompress_raw(data))
        else:
            raise CorruptError(f"page {pfn:#x} has unknown compression flags {flags:#x}")
    except (zlib.error, ImportError, ValueError, RuntimeError) as error:
        raise CorruptError(f"page {pfn:#x} does not decompress: {error}") from None
    if len(page) != page_size:
        raise CorruptError(f"page {pfn:#x} decompresses to {len(page)} bytes, not {page_size}")
    return page


def _unzstd(data: bytes, page_size: int) -> bytes:
    import zstandard  # only zstd dumps need it: imported here, it costs no other command

    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=page_size)
    except zstandard.ZstdError as error:
        raise ValueError(str(error)) from None
