"""The ELF64 little-endian structures a core file is made of, defined once for
the vmcore reader (elfcore.py) and the ELF dump writer (dumpfile/elf.py).

Field order as in the kernel's include/uapi/linux/elf.h (Elf64_Ehdr,
Elf64_Phdr, Elf64_Shdr).
"""

from __future__ import annotations

import struct

__all__ = ("EHDR", "ET_CORE", "PHDR", "PN_XNUM", "PT_LOAD", "PT_NOTE", "SHDR")

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
ET_CORE = 4
PT_LOAD, PT_NOTE = 1, 4
PN_XNUM = 0xFFFF
"""e_phnum saying "too many: the count is section header 0's sh_info"."""
