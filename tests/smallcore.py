"""A small valid ELF core (two notes, one 8 KiB PT_LOAD mapped twice), built
by hand for the parser tests: the fuzz tests mutate it, the ELF tests check
what it holds. It never imports ``capture``."""

from __future__ import annotations

import os
import struct

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
