"""LZO1X-1 (liblzo2) and zlib for kdump pages, a whole batch of pages per call: _lzo.c."""

from collections.abc import Sequence

from capture.dumpfile.codecs import Buffer

def compress_pages(runs: Sequence[Buffer], page_size: int, /) -> tuple[bytes, list[int]]:
    """Each page_size bytes of each run (a buffer of whole pages) compressed
    on its own with LZO1X-1, or stored as it is when that would not be
    smaller: the stored pages back to back, and each one's size."""

def zlib_compress_pages(
    runs: Sequence[Buffer], page_size: int, level: int, /
) -> tuple[bytes, list[int]]:
    """compress_pages with zlib's compress2 at ``level`` (zlib.compress's stream)."""

def decompress(stream: Buffer, size: int, /) -> bytes:
    """One LZO1X stream of at most ``size`` bytes decompressed.

    :raises ValueError: for a corrupt stream, or one longer than ``size``.
    """
