"""ELF notes of a vmcore: the per-CPU register notes and VMCOREINFO.

The whole PT_NOTE blob is kept verbatim for the dump writers (crash takes the
registers from it); this module only walks it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from capture.errors import CorruptError

__all__ = ("NT_PRSTATUS", "Note", "find_vmcoreinfo", "parse_notes")

NT_PRSTATUS = 1
_NOTE_HEADER = struct.Struct("<III")


class Note(NamedTuple):
    """One ELF note: name without its NUL, type, descriptor bytes."""

    name: bytes
    type: int
    desc: bytes
    offset: int
    """Offset of the note header within the blob."""
    desc_offset: int
    """Offset of the descriptor bytes within the blob."""


def parse_notes(blob: bytes) -> list[Note]:
    """Walk a PT_NOTE blob (4-byte aligned Elf64_Nhdr entries).

    A header with ``n_namesz == 0`` ends the walk, as in the kernel's
    vmcore.c; so does the end of the blob.

    :raises CorruptError: if a note claims more bytes than the blob holds.
    """
    notes = []
    offset = 0
    while offset + _NOTE_HEADER.size <= len(blob):
        namesz, descsz, note_type = _NOTE_HEADER.unpack_from(blob, offset)
        if namesz == 0:
            break
        name_at = offset + _NOTE_HEADER.size
        desc_at = name_at + _align4(namesz)
        end = desc_at + _align4(descsz)
        if desc_at + descsz > len(blob):
            raise CorruptError(
                f"ELF note at offset {offset:#x} claims {namesz}+{descsz} bytes; "
                f"only {len(blob) - name_at} remain"
            )
        name = blob[name_at : name_at + namesz].rstrip(b"\0")
        notes.append(Note(name, note_type, blob[desc_at : desc_at + descsz], offset, desc_at))
        offset = end
    return notes


def find_vmcoreinfo(notes: list[Note]) -> Note | None:
    """Return the VMCOREINFO note (found by name, like makedumpfile and drgn)."""
    for note in notes:
        if note.name == b"VMCOREINFO":
            return note
    return None


def _align4(size: int) -> int:
    return (size + 3) & ~3
