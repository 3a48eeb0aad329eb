"""ELF note walking."""

from __future__ import annotations

import struct

import pytest

from capture.errors import CorruptError
from capture.vmcore.notes import NT_PRSTATUS, find_vmcoreinfo, parse_notes


def note(name: bytes, note_type: int, desc: bytes) -> bytes:
    def pad(data: bytes) -> bytes:
        return data + b"\0" * (-len(data) % 4)

    return struct.pack("<III", len(name) + 1, len(desc), note_type) + pad(name + b"\0") + pad(desc)


def test_walks_prstatus_and_vmcoreinfo() -> None:
    blob = note(b"CORE", NT_PRSTATUS, bytes(336)) * 3 + note(b"VMCOREINFO", 0, b"PAGESIZE=4096\n")
    notes = parse_notes(blob + bytes(12))
    assert [n.name for n in notes] == [b"CORE"] * 3 + [b"VMCOREINFO"]
    vmcoreinfo = find_vmcoreinfo(notes)
    assert vmcoreinfo is not None and vmcoreinfo.desc == b"PAGESIZE=4096\n"
    assert notes[1].offset == len(note(b"CORE", NT_PRSTATUS, bytes(336)))


def test_empty_header_ends_the_walk() -> None:
    blob = note(b"CORE", 1, b"x") + bytes(12) + note(b"VMCOREINFO", 0, b"A=1\n")
    assert [n.name for n in parse_notes(blob)] == [b"CORE"]


def test_overlong_note_is_corrupt() -> None:
    blob = struct.pack("<III", 5, 1000, 1) + b"CORE\0\0\0\0" + bytes(10)
    with pytest.raises(CorruptError, match="claims 5\\+1000 bytes"):
        parse_notes(blob)


def test_no_vmcoreinfo() -> None:
    assert find_vmcoreinfo(parse_notes(note(b"CORE", 1, b""))) is None
