"""Per-architecture facts, as one frozen descriptor per architecture.

Code elsewhere asks the descriptor instead of testing the architecture's name,
so a new architecture is one new entry here and one translation module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from capture.errors import UnsupportedError
from capture.vmcore import x86_64
from capture.vmcore.elfcore import LoadSegment
from capture.vmcore.vmcoreinfo import VmcoreInfo

__all__ = ("ARCHITECTURES", "Architecture", "Translator", "architecture_for")

ReadPhys = Callable[[int, int], bytes]


class Translator(Protocol):
    """Kernel virtual to physical translation."""

    @property
    def phys_base(self) -> int:
        """Physical load offset of the kernel image (the kdump sub-header's phys_base)."""
        ...

    def mapping(self, vaddr: int) -> tuple[int, int]:
        """``(paddr, length)``: ``length`` bytes from ``vaddr`` map contiguously."""
        ...

    def in_direct_map(self, vaddr: int) -> bool:
        """Whether ``vaddr`` lies in the direct map of RAM."""
        ...


class Architecture(NamedTuple):
    """What the reader needs to know about one architecture."""

    name: str
    """As ``uname -m`` prints it."""
    elf_machine: str
    """pyelftools' name for ``e_machine``."""
    default_page_size: int
    """Used only when VMCOREINFO is missing or has no PAGESIZE."""
    kernel_half: int
    """Lowest kernel virtual address; a struct page address must lie above it."""
    make_translator: Callable[[VmcoreInfo, Iterable[LoadSegment], ReadPhys], Translator]


def _x86_64_translator(
    info: VmcoreInfo, segments: Iterable[LoadSegment], read_phys: ReadPhys
) -> Translator:
    return x86_64.X86_64Translator(x86_64.layout_from_vmcore(info, segments), read_phys)


ARCHITECTURES: dict[str, Architecture] = {
    "EM_X86_64": Architecture(
        name="x86_64",
        elf_machine="EM_X86_64",
        default_page_size=4096,
        kernel_half=0xFF00000000000000,
        make_translator=_x86_64_translator,
    ),
}


def architecture_for(elf_machine: str) -> Architecture:
    """Return the descriptor for an ELF ``e_machine``.

    :raises UnsupportedError: for an architecture this version cannot read.
    """
    try:
        return ARCHITECTURES[elf_machine]
    except KeyError:
        raise UnsupportedError(f"architecture {elf_machine} is not supported") from None
