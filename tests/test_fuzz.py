"""Hostile input: the parsers let nothing but the project's own errors escape."""

from __future__ import annotations

import contextlib
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.errors import CaptureError
from capture.vmcore import Vmcore, read_kernel_log
from capture.vmcore.elfcore import ElfCore
from capture.vmcore.notes import parse_notes
from capture.vmcore.summary import summarize
from capture.vmcore.vmcoreinfo import parse_vmcoreinfo
from tests.smallcore import SMALL_CORE


def _exercise(image: bytes) -> None:
    with tempfile.NamedTemporaryFile() as file:
        file.write(image)
        file.flush()
        try:
            with Vmcore(file.name) as vmcore:
                summarize(vmcore)
                read_kernel_log(vmcore)
        except CaptureError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_notes_parser_on_random_bytes(blob: bytes) -> None:
    with contextlib.suppress(CaptureError):
        parse_notes(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_vmcoreinfo_parser_never_raises(text: bytes) -> None:
    parse_vmcoreinfo(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0x1FFF), st.integers(0, 255)), max_size=8))
def test_mutated_elf_core(mutations: list[tuple[int, int]]) -> None:
    image = bytearray(SMALL_CORE)
    for position, value in mutations:
        image[position] = value
    _exercise(bytes(image))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_file(data: bytes) -> None:
    _exercise(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(SMALL_CORE)))
def test_truncated_core(length: int) -> None:
    _exercise(SMALL_CORE[:length])


def test_small_core_opens() -> None:
    """The fuzzers' seed is itself valid, so mutations start from a real path."""
    with tempfile.NamedTemporaryFile() as file:
        file.write(SMALL_CORE)
        file.flush()
        with ElfCore(file.name) as core:
            assert len(core.segments) == 2
            assert core.read_phys(0x1FF0, 16) == SMALL_CORE[-16:]
