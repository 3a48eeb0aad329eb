"""zstd (libzstd) for kdump pages, a whole batch of pages per call: _zstd.c."""

from collections.abc import Sequence

from capture.dumpfile.codecs import Buffer

def compress_pages(
    runs: Sequence[Buffer], page_size: int, level: int, /
) -> tuple[bytes, list[int]]:
    """Each page_size bytes of each run (a buffer of whole pages) as a zstd
    frame of its own at ``level``, or stored as it is when the frame would not
    be smaller: the stored pages back to back, and each one's size."""
