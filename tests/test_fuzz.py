"""Hostile input: the parsers let nothing but the project's own errors escape."""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.errors import CaptureError
from capture.vmcore import Vmcore, read_kernel_log
from capture.vmcore.elfcore import ElfCore
from capture.vmcore.notes import parse_notes
from capture.vmcore.summary import summarize
from capture.vmcore.vmcoreinfo import parse_vmcoreinfo

VMCOREINFO = (
    b"OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(prb)=ffffffff81000000\n"
    b"SYMBOL(init_uts_ns)=ffffffff81001000\nSYMBOL(mem_section)=ffff888000001000\n"
    b"SIZE(mem_section)=32\nNUMBER(phys_base)=0\nCRASHTIME=1\n"
)


def _note(name: bytes, note_type: int, desc: bytes) -> bytes:
    def pad(data: bytes) -> bytes:
        return data + b"\0" * (-len(data) % 4)

    return struct.pack("<III", len(name) + 1, len(desc), note_type) + pad(name + b"\0") + pad(desc)


def _small_core() -> bytes:
    """A valid ELF core: two notes and one 8 KiB PT_LOAD."""
    notes = _note(b"CORE", 1, bytes(336)) + _note(b"VMCOREINFO", 0, VMCOREINFO)
    phnum, notes_at = 3, 0x1000
    load_at = notes_at + 0x1000
    ehdr = (
        b"\x7fELF\x02\x01\x01"
        + bytes(9)
        + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    )
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, notes_at, 0, 0, len(notes), len(notes), 0)
    phdrs += struct.pack("<IIQQQQQQ", 1, 7, load_at, 0xFFFF888000000000, 0, 0x2000, 0x2000, 0)
    phdrs += struct.pack("<IIQQQQQQ", 1, 7, load_at, 0xFFFFFFFF81000000, 0, 0x2000, 0x2000, 0)
    image = bytearray(load_at + 0x2000)
    image[: len(ehdr) + len(phdrs)] = ehdr + phdrs
    image[notes_at : notes_at + len(notes)] = notes
    image[load_at : load_at + 0x2000] = os.urandom(0x2000)
    return bytes(image)


SMALL_CORE = _small_core()


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
