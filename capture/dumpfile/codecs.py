"""Per-page compression codecs of the kdump-compressed format.

Each page is compressed on its own, as every reader expects, with exactly the
stream format each reader decodes (spec/formats.md 4.1): zlib with its RFC
1950 wrapper, raw LZO1X-1, raw snappy, one zstd frame. There is no LZ4: no
reader knows a flag for it, and an unknown flag would be read as raw data.

A compressor takes runs of whole pages, as they were read, and returns their
stored forms with each one's size: the per-page work runs inside C (our own
LZO binding, zstd's batch call, or ``map``) instead of one Python-level call
per page, which costs as much as LZO itself. A page whose compressed form
would not be smaller is stored as it is, as makedumpfile does; its
descriptor then has no codec flag. Every library here releases the GIL while
it compresses, so with more than one thread (makedumpfile's --num-threads) a
batch is cut into one share per thread and the shares are compressed at once.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from itertools import chain, repeat
from typing import NamedTuple, cast

from capture.errors import UnsupportedError

__all__ = ("CODECS", "Buffer", "Codec", "StorePages", "codec_by_name")

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
    make: Callable[[int, int], StorePages]
    """A fresh compressor for pages of that size using that many threads."""


def _zlib(page_size: int, threads: int) -> StorePages:
    # Level 1, as makedumpfile's Z_BEST_SPEED; zlib.compress keeps the wrapper.
    compress = zlib.compress
    each: _CompressEach = lambda pages: list(map(compress, pages, repeat(1)))  # noqa: E731
    return _on_threads(_store_each(each, page_size), page_size, threads)


def _zstd(page_size: int, threads: int) -> StorePages:
    """One zstd frame per page, all pages of a batch in one C call.

    The frames are the ones ``ZstdCompressor.compress`` makes (same
    parameters), a quarter cheaper: the per-call overhead is paid once.
    """
    import zstandard

    compressor = zstandard.ZstdCompressor(level=1)

    def each(pages: list[memoryview]) -> list[bytes]:
        if not pages:
            return []  # zstandard refuses an empty list
        # The stub wants list[bytes | bytearray | memoryview]; list is invariant.
        # threads=0 compresses on the calling thread; zstd runs its own pool otherwise.
        frames = compressor.multi_compress_to_buffer(
            cast("list[Buffer]", pages), threads=threads if threads > 1 else 0
        )
        return [frames[index].tobytes() for index in range(len(frames))]

    return _store_each(each, page_size)


def _lzo(page_size: int, threads: int) -> StorePages:
    try:
        from capture.dumpfile import _lzo
    except ImportError:
        raise UnsupportedError(
            "the lzo codec needs capture's _lzo extension, built with liblzo2-dev "
            "(apt install gcc liblzo2-dev, then reinstall kdump-capture)"
        ) from None
    compress_pages = _lzo.compress_pages

    def store(runs: Sequence[Buffer]) -> tuple[list[bytes], list[int]]:
        data, sizes = compress_pages(runs, page_size)
        return [data], sizes

    return _on_threads(store, page_size, threads)


def _snappy(page_size: int, threads: int) -> StorePages:
    try:
        import cramjam
    except ImportError:
        raise UnsupportedError("the snappy codec needs cramjam (pip install cramjam)") from None
    # The raw snappy format, not the framed one: readers call snappy_uncompress.
    compress = cramjam.snappy.compress_raw
    each: _CompressEach = lambda pages: list(map(bytes, map(compress, pages)))  # noqa: E731
    return _on_threads(_store_each(each, page_size), page_size, threads)


def _none(page_size: int, threads: int) -> StorePages:
    # bytes() copies a memoryview, so a page kept does not pin the whole read it came from.
    return lambda runs: (list(map(bytes, runs)), [page_size] * (sum(map(len, runs)) // page_size))


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


def _on_threads(store: StorePages, page_size: int, threads: int) -> StorePages:
    """``store``, with each batch cut into one share of whole pages per thread."""
    if threads <= 1:
        return store
    from concurrent.futures import ThreadPoolExecutor  # only --num-threads pays its import

    pool = ThreadPoolExecutor(threads, thread_name_prefix="compress")

    def store_on_threads(runs: Sequence[Buffer]) -> tuple[list[bytes], list[int]]:
        parts = list(pool.map(store, _shares(runs, page_size, threads)))
        pieces = list(chain.from_iterable(pieces for pieces, _ in parts))
        return pieces, list(chain.from_iterable(sizes for _, sizes in parts))

    return store_on_threads


def _shares(runs: Sequence[Buffer], page_size: int, count: int) -> list[list[Buffer]]:
    """``runs`` cut into at most ``count`` lists of about as many pages."""
    share = -(-sum(map(len, runs)) // page_size // count) * page_size
    shares: list[list[Buffer]] = []
    current: list[Buffer] = []
    room = share
    for buffer in runs:
        run = memoryview(buffer)
        while run:
            if not room:
                shares.append(current)
                current, room = [], share
            piece, run = run[:room], run[room:]
            current.append(piece)
            room -= len(piece)
    if current:
        shares.append(current)
    return shares


CODECS: dict[str, Codec] = {
    "zlib": Codec("zlib", 0x1, _zlib),
    "lzo": Codec("lzo", 0x2, _lzo),
    "snappy": Codec("snappy", 0x4, _snappy),
    "zstd": Codec("zstd", 0x20, _zstd),
    "none": Codec("none", 0x0, _none),
}


def codec_by_name(name: str) -> Codec:
    """The codec called ``name``.

    :raises UnsupportedError: for an unknown name.
    """
    try:
        return CODECS[name]
    except KeyError:
        raise UnsupportedError(f"unknown codec {name!r}: use one of {', '.join(CODECS)}") from None
