"""Per-page compression codecs of the kdump-compressed format.

Each page is compressed on its own, as every reader expects, with exactly the
stream format each reader decodes (spec/formats.md 4.1): zlib with its RFC
1950 wrapper, raw LZO1X-1, raw snappy, one zstd frame. There is no LZ4: no
reader knows a flag for it, and an unknown flag would be read as raw data.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

from capture.errors import UnsupportedError

__all__ = ("CODECS", "Codec", "codec_by_name")

Compress = Callable[[bytes], bytes]
CompressPages = Callable[[bytes], list[bytes]]
"""Compresses each page of a run of pages, one output per page, in one call."""


@dataclass(frozen=True)
class Codec:
    """One compression method and its page-descriptor flag."""

    name: str
    flag: int
    """DUMP_DH_COMPRESSED_* bit: 0 means stored raw."""
    make: Callable[[], Compress | None]
    """A fresh compressor (one per thread), or None for no compression."""
    make_batch: Callable[[int], CompressPages] | None = None
    """Given the page size, a compressor for whole runs of pages, where the
    library can do that faster than one call per page."""


def _zlib() -> Compress:
    # Level 1, as makedumpfile's Z_BEST_SPEED; zlib.compress keeps the wrapper.
    return lambda page: zlib.compress(page, 1)


def _zstd() -> Compress:
    return zstandard.ZstdCompressor(level=1).compress


def _zstd_pages(page_size: int) -> CompressPages:
    """One zstd frame per page, all pages of a run in one C call.

    The frames are the ones ``compress`` makes (same parameters), a quarter
    cheaper: the per-call overhead is paid once per run.
    """
    compressor = zstandard.ZstdCompressor(level=1)
    tables: dict[int, bytes] = {}

    def compress(run: bytes) -> list[bytes]:
        count = len(run) // page_size
        table = tables.get(count)
        if table is None:
            table = b"".join(
                (i * page_size).to_bytes(8, "little") + page_size.to_bytes(8, "little")
                for i in range(count)
            )
            tables[count] = table
        frames = compressor.multi_compress_to_buffer(zstandard.BufferWithSegments(run, table))
        return [frames[index].tobytes() for index in range(len(frames))]

    return compress


def _lzo() -> Compress:
    try:
        import lzo  # type: ignore[import-not-found]
    except ImportError:
        raise UnsupportedError("the lzo codec needs python-lzo (pip install python-lzo)") from None
    # Level 1 is lzo1x_1; False drops python-lzo's 5-byte header: readers want raw LZO.
    compress = lzo.compress
    return lambda page: compress(page, 1, False)


def _snappy() -> Compress:
    try:
        import cramjam
    except ImportError:
        raise UnsupportedError("the snappy codec needs cramjam (pip install cramjam)") from None
    # The raw snappy format, not the framed one: readers call snappy_uncompress.
    return lambda page: bytes(cramjam.snappy.compress_raw(page))


CODECS: dict[str, Codec] = {
    "zlib": Codec("zlib", 0x1, _zlib),
    "lzo": Codec("lzo", 0x2, _lzo),
    "snappy": Codec("snappy", 0x4, _snappy),
    "zstd": Codec("zstd", 0x20, _zstd, _zstd_pages),
    "none": Codec("none", 0x0, lambda: None),
}


def codec_by_name(name: str) -> Codec:
    """The codec called ``name``.

    :raises UnsupportedError: for an unknown name.
    """
    try:
        return CODECS[name]
    except KeyError:
        raise UnsupportedError(f"unknown codec {name!r}: use one of {', '.join(CODECS)}") from None
