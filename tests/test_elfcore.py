"""The ELF core parser against pyelftools, on real and hand-made cores."""

from __future__ import annotations

import struct
from pathlib import Path

from elftools.elf.elffile import ELFFile

from capture.vmcore.elfcore import ElfCore
from tests.realcores import RealCore
from tests.smallcore import SMALL_CORE


def pyelftools_view(
    path: Path,
) -> tuple[str, list[tuple[int, int, int, int, int]], list[tuple[int, int]]]:
    with path.open("rb") as stream:
        elf = ELFFile(stream)
        loads = sorted(
            (s["p_paddr"], s["p_vaddr"], s["p_offset"], s["p_filesz"], s["p_memsz"])
            for s in elf.iter_segments("PT_LOAD")
        )
        notes = [(s["p_offset"], s["p_filesz"]) for s in elf.iter_segments("PT_NOTE")]
        return elf.header["e_machine"], loads, notes


def our_view(path: Path) -> tuple[str, list[tuple[int, int, int, int, int]], int]:
    with ElfCore(str(path)) as core:
        loads = sorted((s.paddr, s.vaddr, s.offset, s.filesz, s.memsz) for s in core.segments)
        return core.machine, loads, len(core.notes)


def test_real_core_headers(real_core: RealCore) -> None:
    machine, loads, notes = pyelftools_view(real_core.vmcore)
    assert our_view(real_core.vmcore) == (machine, loads, sum(size for _, size in notes))


def test_extended_program_header_count(tmp_path: Path) -> None:
    """e_phnum = PN_XNUM: the real count is in section header 0 (sh_info)."""
    image = bytearray(SMALL_CORE)
    phnum = struct.unpack_from("<H", image, 56)[0]
    shoff = len(image)
    image += struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, phnum, 0, 0)
    struct.pack_into("<Q", image, 40, shoff)  # e_shoff
    struct.pack_into(
        "<HHHH", image, 56, 0xFFFF, 64, 1, 0
    )  # e_phnum, e_shentsize, e_shnum, e_shstrndx
    path = tmp_path / "xnum"
    path.write_bytes(image)
    machine, loads, notes = pyelftools_view(path)
    assert len(loads) == 2
    assert our_view(path) == (machine, loads, sum(size for _, size in notes))
