"""VMCOREINFO: the crashed kernel's description of itself.

The kernel writes ``KEY=VALUE`` lines at boot (``kernel/vmcore_info.c``) and
appends ``CRASHTIME`` at panic. The key's form says how its value was printed
(see the table in docs/formats.md §"VMCOREINFO"); this module turns the text into typed
lookups. Unknown keys are kept, and the first occurrence of a key wins, as in
makedumpfile, which scans from the top.
"""

from __future__ import annotations

import re

from capture.errors import CorruptError

__all__ = ("VmcoreInfo", "parse_vmcoreinfo")

_KEY = re.compile(r"(SYMBOL|SIZE|OFFSET|LENGTH|NUMBER)\((.+)\)\Z")


class VmcoreInfo:
    """Parsed VMCOREINFO. Every field is optional: a missing key is ``None``.

    ``symbols`` are runtime (KASLR-shifted) virtual addresses; ``offsets`` are
    keyed ``"struct.member"``; ``numbers`` may be negative.
    """

    def __init__(self, text: bytes = b"") -> None:
        self.text = text
        """The raw note text, for writers that copy it."""
        self.osrelease: str | None = None
        self.build_id: str | None = None
        self.page_size: int | None = None
        self.kernel_offset: int | None = None
        self.crashtime: int | None = None
        self.symbols: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.offsets: dict[str, int] = {}
        self.lengths: dict[str, int] = {}
        self.numbers: dict[str, int] = {}
        self.configs: dict[str, str] = {}
        self.other: dict[str, str] = {}
        """Keys this module does not interpret, kept as text."""
        self.problems: list[str] = []
        """Lines that could not be parsed (values of the wrong form)."""

    def symbol(self, name: str) -> int | None:
        """``SYMBOL(name)``."""
        return self.symbols.get(name)

    def size(self, name: str) -> int | None:
        """``SIZE(name)``."""
        return self.sizes.get(name)

    def offset(self, name: str) -> int | None:
        """``OFFSET(name)``, e.g. ``offset("page.flags")``."""
        return self.offsets.get(name)

    def length(self, name: str) -> int | None:
        """``LENGTH(name)``."""
        return self.lengths.get(name)

    def number(self, name: str) -> int | None:
        """``NUMBER(name)``."""
        return self.numbers.get(name)

    def require_page_size(self) -> int:
        """PAGESIZE, which every reader needs.

        :raises CorruptError: if it is missing or not a power of two.
        """
        size = self.page_size
        if size is None:
            raise CorruptError("VMCOREINFO has no PAGESIZE")
        if size < 512 or size & (size - 1):
            raise CorruptError(f"VMCOREINFO PAGESIZE={size} is not a page size")
        return size


def parse_vmcoreinfo(text: bytes) -> VmcoreInfo:
    """Parse the VMCOREINFO note's text.

    Never raises on content: lines without ``=`` are ignored and values of
    the wrong form are recorded in ``problems``.
    """
    info = VmcoreInfo(text=text)
    seen: set[str] = set()
    for raw_line in text.split(b"\n"):
        line = raw_line.rstrip(b"\0").decode("ascii", "replace")
        key, sep, value = line.partition("=")
        if not sep or not key or key in seen:
            continue
        seen.add(key)
        try:
            _store(info, key, value)
        except ValueError:
            info.problems.append(f"bad value in VMCOREINFO line {line!r}")
    return info


def _store(info: VmcoreInfo, key: str, value: str) -> None:
    """Store one line; raises ValueError when the value has the wrong form."""
    match = _KEY.match(key)
    if match:
        kind, name = match.groups()
        if kind == "SYMBOL":
            info.symbols[name] = _hex(value)
        elif kind == "NUMBER":
            # Mostly %ld, but some lines print 0x%lx (VMALLOC_START, arm64 keys).
            info.numbers[name] = int(value, 0) if "0x" in value.lower() else int(value, 10)
        else:
            table = {"SIZE": info.sizes, "OFFSET": info.offsets, "LENGTH": info.lengths}[kind]
            table[name] = int(value, 10)
    elif key == "OSRELEASE":
        info.osrelease = value
    elif key == "BUILD-ID":
        info.build_id = value
    elif key == "PAGESIZE":
        info.page_size = int(value, 10)
    elif key == "KERNELOFFSET":
        info.kernel_offset = _hex(value)
    elif key == "CRASHTIME":
        info.crashtime = int(value, 10)
    elif key.startswith("CONFIG_"):
        info.configs[key] = value
    else:
        info.other[key] = value


def _hex(value: str) -> int:
    """Hex printed with ``%lx``: no ``0x``, though we accept one."""
    if not value or value.strip() != value:
        raise ValueError(value)
    return int(value, 16)
