"""Facts about an ELF vmcore from tools that share no code with ``capture``:
binutils' readelf and pyelftools. The tests compare ``info`` with them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from elftools.elf.elffile import ELFFile


def readelf_prstatus_count(path: Path | str) -> int:
    """NT_PRSTATUS notes (CPUs that saved their registers), as readelf lists them."""
    notes = subprocess.run(
        ["readelf", "-nW", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return len(re.findall(r"^\s+CORE\s+0x[0-9a-f]+\s+NT_PRSTATUS", notes, re.MULTILINE))


def ram_pfns_from_headers(path: Path | str, page_size: int) -> set[int]:
    """Pfns wholly inside a PT_LOAD, read with pyelftools."""
    with open(path, "rb") as stream:
        pfns: set[int] = set()
        for segment in ELFFile(stream).iter_segments("PT_LOAD"):
            start = segment["p_paddr"] // page_size
            end = (segment["p_paddr"] + segment["p_memsz"]) // page_size
            pfns.update(range(start, end))
    return pfns
