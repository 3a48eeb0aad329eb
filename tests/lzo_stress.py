"""Exercises every path of the _lzo and _zstd bindings; run by
test_lzo_sanitized.py under AddressSanitizer and UBSan, with the instrumented
builds first on sys.path.

    python tests/lzo_stress.py BUILD_DIR
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import zlib
from collections.abc import Callable

sys.path.insert(0, sys.argv[1])
import _lzo  # type: ignore[import-not-found]
import _zstd  # type: ignore[import-not-found]
import zstandard

PAGE = 4096


def _round_trips(rng: random.Random, pages: list[bytes]) -> None:
    for _ in range(2000):
        chosen = [rng.choice(pages) for _ in range(rng.randint(0, 20))]
        cut = rng.randint(1, 5)
        runs = [memoryview(b"".join(chosen[at : at + cut])) for at in range(0, len(chosen), cut)]
        stored_by = {
            (lambda stored: _lzo.decompress(stored, PAGE)): _lzo.compress_pages(runs, PAGE),
            zlib.decompress: _lzo.zlib_compress_pages(runs, PAGE, rng.randint(0, 9)),
            zstandard.decompress: _zstd.compress_pages(runs, PAGE, rng.randint(1, 19)),
        }
        for decompress, (data, sizes) in stored_by.items():
            _check_stored(chosen, data, sizes, decompress)
    # Small pages: there the worst-case output exceeds the page the most.
    for page_size in (1, 2, 16, 64, 65536):
        for _ in range(50):
            for compress in (_lzo.compress_pages, _zlib_level_1, _zstd_level_1):
                data, sizes = compress([rng.randbytes(page_size * rng.randint(0, 8))], page_size)
                assert sum(sizes) == len(data)


def _check_stored(
    pages: list[bytes], data: bytes, sizes: list[int], decompress: Callable[[bytes], bytes]
) -> None:
    """Each page is back: stored as it is, or its stream decompressed."""
    at = 0
    for page, size in zip(pages, sizes, strict=True):
        stored = data[at : at + size]
        at += size
        assert (stored if size == PAGE else decompress(stored)) == page


def _zlib_level_1(runs: list[bytes], page_size: int) -> tuple[bytes, list[int]]:
    return _lzo.zlib_compress_pages(runs, page_size, 1)  # type: ignore[no-any-return]


def _zstd_level_1(runs: list[bytes], page_size: int) -> tuple[bytes, list[int]]:
    return _zstd.compress_pages(runs, page_size, 1)  # type: ignore[no-any-return]


def _hostile_streams(rng: random.Random, pages: list[bytes]) -> None:
    for _ in range(20000):
        if rng.random() < 0.5:
            stream = rng.randbytes(rng.randint(0, 300))
        else:  # a real stream with a few bytes changed
            data, (size,) = _lzo.compress_pages([rng.choice(pages)], PAGE)
            damaged = bytearray(data[:size])
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            stream = bytes(damaged)
        with contextlib.suppress(ValueError):  # what a corrupt stream must give
            assert len(_lzo.decompress(stream, rng.randint(0, 2 * PAGE))) <= 2 * PAGE


def _threads(pages: list[bytes]) -> None:
    def work() -> None:
        for _ in range(200):
            _lzo.compress_pages([b"".join(pages)] * 4, PAGE)
            _lzo.zlib_compress_pages([b"".join(pages)] * 4, PAGE, 1)
            _zstd.compress_pages([b"".join(pages)] * 4, PAGE, 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _bad_arguments() -> None:
    for runs in ([b"x" * 5], [b"", None], [1], "text"):
        for compress in (_lzo.compress_pages, _zlib_level_1, _zstd_level_1):
            try:
                compress(runs, PAGE)
            except (ValueError, TypeError):
                continue
            raise AssertionError(f"{runs!r} was accepted")
    for level in (-1, 10):
        try:
            _lzo.zlib_compress_pages([bytes(PAGE)], PAGE, level)
        except ValueError:
            continue
        raise AssertionError(f"zlib level {level} was accepted")
    for level in (-(1 << 30), 1 << 30):
        try:
            _zstd.compress_pages([bytes(PAGE)], PAGE, level)
        except ValueError:
            continue
        raise AssertionError(f"zstd level {level} was accepted")


def main() -> None:
    rng = random.Random(1)
    pages = [
        bytes(PAGE),
        rng.randbytes(PAGE),
        b"abc" * 1365 + b"d",
        rng.randbytes(100) * 40 + bytes(96),
    ]
    _round_trips(rng, pages)
    _hostile_streams(rng, pages)
    _threads(pages)
    _bad_arguments()
    print("clean")


if __name__ == "__main__":
    main()
