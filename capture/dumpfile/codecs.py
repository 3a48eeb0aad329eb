"""Per-page compression codecs of the kdump-compressed format.

Each page is compressed on its own, as every reader expects, with exactly the
stream format each reader decodes (docs/formats.md §"Page data and codecs"): zlib with its RFC
1950 wrapper, raw LZO1X-1, raw snappy, one zstd frame. There is no LZ4: no
reader knows a flag for it, and an unknown flag would be read as raw data.

A compressor takes runs of whole pages, as they were read, and returns their
stored forms with each one's size: the per-page work runs inside C (our own
LZO binding, zstd's batch call, or ``map``) instead of one Python-level call
per page, which costs as much as LZO itself. A page whose compressed form
would not be smaller is stored as it is, as makedumpfile does; its
descriptor then has no codec flag. Every library here releases the GIL while
it compresses, so more threads (makedumpfile's --num-threads) compress
batches at once: capture/dumpfile/workers.py.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import NamedTuple, cast

from capture.errors import UnsupportedError

__all__ = (
    "CODECS", "DEFAULT_CODEC", "FLAG_LZO", "FLAG_SNAPPY", "FLAG_ZLIB", "FLAG_ZSTD",
    "MAKEDUMPFILE_FLAGS", "Buffer", "Codec", "StorePages", "codec_by_name",
)  # fmt: skip

# A page descriptor's DUMP_DH_COMPRESSED_* bits (makedumpfile's diskdump_mod.h);
# none set: the page is stored as it is.
FLAG_ZLIB = 0x1
FLAG_LZO = 0x2
FLAG_SNAPPY = 0x4
FLAG_ZSTD = 0x20

DEFAULT_CODEC = "zstd"
"""The codec when no flag names one: every current reader knows it, and it is
both faster and smaller than zlib (makedumpfile's default is no codec)."""

MAKEDUMPFILE_FLAGS = {"-c": "zlib", "-l": "lzo", "-p": "snappy", "-z": "zstd"}
"""makedumpfile's codec options, which ``dump`` and core_collector share."""

Buffer = bytes | bytearray | memoryview
StorePages = Callable[[Sequence[Buffer]], tuple[list[bytes], list[int]]]
"""Stores each page of some runs of whole pages: the stored pages, in pieces
to be written back to back, and the size of each page as stored (the page
size for a page stored as it is)."""
_CompressEach = Callable[[list[memoryview]], list[bytes]]


class Codec(NamedTuple):
    """One compression method and its page-descriptor flag."""

    name: str
    flag: int
    """DUMP_DH_COMPRESSED_* bit: 0 means stored raw."""
    make: Callable[[int], StorePages]
    """A fresh compressor for pages of that size, for one thread at a time
    (a zstd context must not be shared)."""
    holds_gil: bool = False
    """Compresses page by page with the GIL held (cramjam's snappy): worker
    threads only wait on each other (2 took 1.2-1.3x the time of one)."""


def _zlib(page_size: int) -> StorePages:
    # Level 1, as makedumpfile's Z_BEST_SPEED; the RFC 1950 wrapper kept.
    try:
        from capture.dumpfile._lzo import zlib_compress_pages
    except ImportError:  # without the extension: one zlib.compress call per page
        compress = zlib.compress
        each: _CompressEach = lambda pages: list(map(compress, pages, repeat(1)))  # noqa: E731
        return _store_each(each, page_size)

    return _batched(zlib_compress_pages, page_size, 1)


def _zstd(page_size: int) -> StorePages:
    """One zstd frame per page at level 1 (makedumpfile's), a batch of pages
    in one C call that returns them as one buffer (capture/dumpfile/_zstd.c)."""
    try:
        from capture.dumpfile._zstd import compress_pages
    except ImportError:  # built without libzstd-dev: zstandard's batch call
        return _zstandard(page_size)

    return _batched(compress_pages, page_size, 1)


def _zstandard(page_size: int) -> StorePages:
    """The same frames from zstandard's batch call (those ``ZstdCompressor.compress``
    makes), a Python object each."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=1)

    def each(pages: list[memoryview]) -> list[bytes]:
        if not pages:
            return []  # zstandard refuses an empty list
        # The stub wants list[bytes | bytearray | memoryview]; list is invariant.
        # threads=0: on the calling thread, the GIL released.
        frames = compressor.multi_compress_to_buffer(cast("list[Buffer]", pages), threads=0)
        return [frames[index].tobytes() for index in range(len(frames))]

    return _store_each(each, page_size)


def _lzo(page_size: int) -> StorePages:
    try:
        from capture.dumpfile import _lzo
    except ImportError:
        raise UnsupportedError(
            "the lzo codec needs capture's _lzo extension, built with liblzo2-dev "
            "(apt install gcc liblzo2-dev, then reinstall kdump-capture)"
        ) from None
    return _batched(_lzo.compress_pages, page_size)


def _snappy(page_size: int) -> StorePages:
    try:
        import cramjam
    except ImportError:
        raise UnsupportedError("the snappy codec needs cramjam (pip install cramjam)") from None
    # The raw snappy format, not the framed one: readers call snappy_uncompress.
    compress = cramjam.snappy.compress_raw
    each: _CompressEach = lambda pages: list(map(bytes, map(compress, pages)))  # noqa: E731
    return _store_each(each, page_size)


def _none(page_size: int) -> StorePages:
    # bytes() copies a memoryview, so a page kept does not pin the whole read it came from.
    return lambda runs: (list(map(bytes, runs)), [page_size] * (sum(map(len, runs)) // page_size))


def _batched(compress: Callable[..., tuple[bytes, list[int]]], *arguments: int) -> StorePages:
    """A StorePages from one of our C batch calls (``compress(runs, *arguments)``),
    which returns a batch's stored pages as one buffer and their sizes."""

    def store(runs: Sequence[Buffer]) -> tuple[list[bytes], list[int]]:
        data, sizes = compress(runs, *arguments)
        return [data], sizes

    return store


def _store_each(compress: _CompressEach, page_size: int) -> StorePages:
    """A StorePages from a codec that compresses a list of pages, one by one."""

    def store(runs: Sequence[Buffer]) -> tuple[list[bytes], list[int]]:
        views = [memoryview(run) for run in runs]
        pages = [
            view[at : at + page_size] for view in views for at in range(0, len(view), page_size)
        ]
        packed = compress(pages)
        sizes = list(map(len, packed))
        if sizes and max(sizes) >= page_size:
            packed = [
                out if len(out) < page_size else bytes(page)
                for out, page in zip(packed, pages, strict=True)
            ]
            sizes = [min(size, page_size) for size in sizes]
        return packed, sizes

    return store


CODECS: dict[str, Codec] = {
    "zlib": Codec("zlib", FLAG_ZLIB, _zlib),
    "lzo": Codec("lzo", FLAG_LZO, _lzo),
    "snappy": Codec("snappy", FLAG_SNAPPY, _snappy, holds_gil=True),
    "zstd": Codec("zstd", FLAG_ZSTD, _zstd),
    "none": Codec("none", 0, _none),
}


def codec_by_name(name: str) -> Codec:
    """The codec called ``name``.

    :raises UnsupportedError: for an unknown name.
    """
    try:
        return CODECS[name]
    except KeyError:
        raise UnsupportedError(f"unknown codec {name!r}: use one of {', '.join(CODECS)}") from None
