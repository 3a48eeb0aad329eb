"""The page codecs on their own: what each page of a batch is stored as.

Whole dumps are compared with makedumpfile's byte for byte in
test_dumpfile.py; here each codec gets the pages real dumps rarely hold: one
that does not shrink (stored as it is, by the rule every kdump writer follows),
all-zero ones, and bad input to our LZO binding.
"""

from __future__ import annotations

import random
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import cramjam
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

import capture.dumpfile
from capture.cli import main
from capture.dumpfile import _lzo
from capture.dumpfile.codecs import CODECS, codec_by_name
from capture.dumpfile.workers import CompressorPool
from capture.errors import UnsupportedError
from tests.realcores import shared_cores
from tests.vmcore_builder import VmcoreBuilder

PAGE = 4096


def _pages() -> list[bytes]:
    noise = random.Random(4096).randbytes(PAGE)  # incompressible: stored as it is
    text = b"".join(b"line %6d of a kernel log\n" % n for n in range(200))[:PAGE]
    return [bytes(PAGE), noise, text, noise[:100] * 40 + bytes(96), bytes(PAGE)]


DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": zlib.decompress,
    "lzo": lambda stream: _lzo.decompress(stream, PAGE),
    "snappy": lambda stream: bytes(cramjam.snappy.decompress_raw(stream)),
    "zstd": lambda stream: zstandard.ZstdDecompressor().decompress(stream, PAGE),
}


def _runs(pages: list[bytes]) -> list[bytes | memoryview]:
    """The pages as the writer hands them over: runs of whole pages, some
    of them views into a bigger read."""
    read = memoryview(b"".join(pages[1:4]))
    return [pages[0], read[:PAGE], read[PAGE:], *pages[4:]]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(CODECS))
def test_each_page_is_stored_on_its_own(name: str, threads: int) -> None:
    """On the caller's thread, or on workers with a compressor each."""
    pages = _pages()
    codec = codec_by_name(name)
    if threads == 1:
        pieces, sizes = codec.make(PAGE)(_runs(pages))
    else:
        pool = CompressorPool(codec, PAGE, threads)
        try:
            futures = [pool.submit(lambda store: store(_runs(pages))) for _ in range(2 * threads)]
            results = [future.result() for future in futures]
        finally:
            pool.close()
        assert all(result == results[0] for result in results)
        pieces, sizes = results[0]
    data = b"".join(pieces)
    assert len(sizes) == len(pages)
    assert sum(sizes) == len(data)
    at = 0
    for page, size in zip(pages, sizes, strict=True):
        stored = data[at : at + size]
        at += size
        if size == PAGE:  # stored as it is: the page itself, whatever the codec
            assert stored == page
        else:
            assert DECOMPRESS[name](stored) == page
    raw = [size == PAGE for size in sizes]
    assert raw[1], "the incompressible page must be stored as it is"
    assert (
        raw == [True] * len(pages) if name == "none" else raw == [False, True, False, False, False]
    )


@pytest.mark.parametrize("name", sorted(CODECS))
def test_an_empty_batch_stores_nothing(name: str) -> None:
    pieces, sizes = codec_by_name(name).make(PAGE)([])
    assert (b"".join(pieces), sizes) == (b"", [])


def test_lzo_refuses_part_of_a_page_and_what_is_no_buffer() -> None:
    with pytest.raises(ValueError, match="not whole pages"):
        _lzo.compress_pages([bytes(PAGE), bytes(PAGE + 1)], PAGE)
    with pytest.raises(ValueError, match="bad page size"):
        _lzo.compress_pages([bytes(PAGE)], 0)
    with pytest.raises(TypeError):
        _lzo.compress_pages([bytes(PAGE), "text"], PAGE)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sequence of buffers"):
        _lzo.compress_pages(None, PAGE)  # type: ignore[arg-type]


def test_lzo_decompress_rejects_corrupt_and_oversized_streams() -> None:
    data, [size] = _lzo.compress_pages([_pages()[2]], PAGE)
    assert _lzo.decompress(data[:size], PAGE) == _pages()[2]
    with pytest.raises(ValueError, match="corrupt LZO1X stream"):
        _lzo.decompress(data[: size // 2], PAGE)
    with pytest.raises(ValueError, match="corrupt LZO1X stream"):
        _lzo.decompress(data[:size], PAGE // 2)  # more data than the page holds
    with pytest.raises(ValueError, match="corrupt LZO1X stream"):
        _lzo.decompress(b"\xff" * 64, PAGE)


def test_lzo_without_the_extension_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "capture.dumpfile._lzo", None)  # import now fails
    monkeypatch.delattr(capture.dumpfile, "_lzo")
    with pytest.raises(UnsupportedError, match="liblzo2-dev"):
        codec_by_name("lzo").make(PAGE)
    # The command fails before it creates the output: no file that looks like a dump.
    VmcoreBuilder().write(tmp_path / "vmcore")
    output = tmp_path / "dump"
    assert main(["dump", "-l", str(tmp_path / "vmcore"), str(output)]) == 1
    assert "liblzo2-dev" in capsys.readouterr().err
    assert not output.exists()


def test_zstd_frames_are_those_of_zstandard_and_makedumpfile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our batch call (capture/dumpfile/_zstd.c) makes the frames
    ZstdCompressor(level=1).compress makes, which the dumps compared with
    makedumpfile's hold; without the extension, zstandard makes them."""
    pages = [*_pages(), *(page for core in shared_cores() for page in _real_pages(core.vmcore))]
    ours, sizes = codec_by_name("zstd").make(PAGE)([b"".join(pages)])
    assert "capture.dumpfile._zstd" in sys.modules  # scripts/setup builds it
    compressor = zstandard.ZstdCompressor(level=1)
    expected = [frame if len(frame) < PAGE else page
                for page in pages for frame in [compressor.compress(page)]]  # fmt: skip
    assert sizes == [len(frame) for frame in expected]
    assert b"".join(ours) == b"".join(expected)
    monkeypatch.setitem(sys.modules, "capture.dumpfile._zstd", None)  # import now fails
    fallback, fallback_sizes = codec_by_name("zstd").make(PAGE)([b"".join(pages)])
    assert (b"".join(fallback), fallback_sizes) == (b"".join(expected), sizes)


def _real_pages(vmcore: Path, count: int = 2000) -> list[bytes]:
    """``count`` pages from the middle of a real vmcore: kernel data, not patterns."""
    with vmcore.open("rb") as file:
        file.seek(file.seek(0, 2) // 2 // PAGE * PAGE)
        data = file.read(count * PAGE)
    return [data[at : at + PAGE] for at in range(0, len(data) - PAGE + 1, PAGE)]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 2 * PAGE))
def test_lzo_decompress_of_garbage_fails_cleanly(stream: bytes, size: int) -> None:
    """A dump file's page data is hostile input: any bytes give a page of at
    most ``size`` bytes or ValueError, never a crash or an overrun."""
    try:
        page = _lzo.decompress(stream, size)
    except ValueError:
        return
    assert len(page) <= size


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(_pages()), max_size=12), st.integers(1, 4))
def test_lzo_pages_round_trip_in_any_runs(pages: list[bytes], cut: int) -> None:
    runs = [b"".join(pages[at : at + cut]) for at in range(0, len(pages), cut)]
    data, sizes = _lzo.compress_pages(runs, PAGE)
    assert len(sizes) == len(pages) and sum(sizes) == len(data)
    at = 0
    for page, size in zip(pages, sizes, strict=True):
        stored = data[at : at + size]
        at += size
        assert (stored if size == PAGE else _lzo.decompress(stored, PAGE)) == page
