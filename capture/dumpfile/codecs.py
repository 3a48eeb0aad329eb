"""Per-page compression codecs of the kdump-compressed format.

Each page is compressed on its own, as every reader expects, with exactly the
stream format each reader decodes (spec/formats.md 4.1): zlib with its RFC
1950 wrapper, raw LZO1X-1, raw snappy, one zstd frame. There is no LZ4: no
reader knows a flag for it, and an unknown flag would be read as raw data.

A compressor takes a whole list of pages and returns one output per page: the
per-page work then runs inside C (``map`` or the library's own batch call)
instead of one Python-level call per page, which costs as much as LZO itself.
Every library here releases the GIL while it compresses, so with more than
one thread (makedumpfile's --num-threads) a list is cut into one slice per
thread and the slices are compressed at once.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from itertools import chain, repeat
from typing import NamedTuple, cast

from capture.errors import UnsupportedError

__all__ = ("CODECS", "Codec", "CompressPages", "codec_by_name")

Buffer = bytes | bytearray | memoryview
CompressPages = Callable[[list[bytes]], list[bytes]]
"""Compresses each page of a list on its own, one output per page."""


class Codec(NamedTuple):
    """One compression method and its page-descriptor flag."""

    name: str
    flag: int
    """DUMP_DH_COMPRESSED_* bit: 0 means stored raw."""
    make: Callable[[int], CompressPages | None]
    """A fresh compressor using that many threads, or None for no compression."""


def _zlib(threads: int) -> CompressPages:
    # Level 1, as makedumpfile's Z_BEST_SPEED; zlib.compress keeps the wrapper.
    compress = zlib.compress
    return _on_threads(lambda pages: list(map(compress, pages, repeat(1))), threads)


def _zstd(threads: int) -> CompressPages:
    """One zstd frame per page, all pages of a list in one C call.

    The frames are the ones ``ZstdCompressor.compress`` makes (same
    parameters), a quarter cheaper: the per-call overhead is paid once.
    """
    import zstandard

    compressor = zstandard.ZstdCompressor(level=1)

    def compress(pages: list[bytes]) -> list[bytes]:
        if not pages:
            return []
        # The stub wants list[bytes | bytearray | memoryview]; list is invariant.
        # threads=0 compresses on the calling thread; zstd runs its own pool otherwise.
        frames = compressor.multi_compress_to_buffer(
            cast("list[Buffer]", pages), threads=threads if threads > 1 else 0
        )
        return [frames[index].tobytes() for index in range(len(frames))]

    return compress


def _lzo(threads: int) -> CompressPages:
    try:
        import lzo  # type: ignore[import-not-found]
    except ImportError:
        raise UnsupportedError("the lzo codec needs python-lzo (pip install python-lzo)") from None
    # Level 1 is lzo1x_1; False drops python-lzo's 5-byte header: readers want raw LZO.
    compress = lzo.compress
    return _on_threads(lambda pages: list(map(compress, pages, repeat(1), repeat(False))), threads)


def _snappy(threads: int) -> CompressPages:
    try:
        import cramjam
    except ImportError:
        raise UnsupportedError("the snappy codec needs cramjam (pip install cramjam)") from None
    # The raw snappy format, not the framed one: readers call snappy_uncompress.
    compress = cramjam.snappy.compress_raw
    return _on_threads(lambda pages: list(map(bytes, map(compress, pages))), threads)


def _on_threads(compress: CompressPages, threads: int) -> CompressPages:
    """``compress``, with each list cut into one slice per thread."""
    if threads <= 1:
        return compress
    from concurrent.futures import ThreadPoolExecutor  # only --num-threads pays its import

    pool = ThreadPoolExecutor(threads, thread_name_prefix="compress")

    def compress_on_threads(pages: list[bytes]) -> list[bytes]:
        step = -(-len(pages) // threads)
        slices = [pages[first : first + step] for first in range(0, len(pages), step)]
        return list(chain.from_iterable(pool.map(compress, slices)))

    return compress_on_threads


CODECS: dict[str, Codec] = {
    "zlib": Codec("zlib", 0x1, _zlib),
    "lzo": Codec("lzo", 0x2, _lzo),
    "snappy": Codec("snappy", 0x4, _snappy),
    "zstd": Codec("zstd", 0x20, _zstd),
    "none": Codec("none", 0x0, lambda threads: None),
}


def codec_by_name(name: str) -> Codec:
    """The codec called ``name``.

    :raises UnsupportedError: for an unknown name.
    """
    try:
        return CODECS[name]
    except KeyError:
        raise UnsupportedError(f"unknown codec {name!r}: use one of {', '.join(CODECS)}") from None
