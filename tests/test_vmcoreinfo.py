"""VMCOREINFO parsing: every key form of docs/formats.md §"VMCOREINFO"."""

from __future__ import annotations

import pytest

from capture.errors import CorruptError
from capture.vmcore.vmcoreinfo import parse_vmcoreinfo

SAMPLE = b"""OSRELEASE=6.2.15-100.fc36.x86_64
BUILD-ID=eb4fbcd037e7253717950bf2b93bd5566f47c56f
PAGESIZE=4096
SYMBOL(swapper_pg_dir)=ffffffffb7010000
SIZE(mem_section)=32
OFFSET(page._refcount)=52
LENGTH(zone.free_area)=11
NUMBER(phys_base)=31541166080
NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129
NUMBER(VMALLOC_START)=0xffffd31640000000
NUMBER(kimage_voffset)=-0x7fff800000
KERNELOFFSET=34000000
CONFIG_X86_PAE=y
CRASHTIME=1795674799
SOMETHING_NEW=whatever
"""


def test_every_key_form() -> None:
    info = parse_vmcoreinfo(SAMPLE)
    assert info.osrelease == "6.2.15-100.fc36.x86_64"
    assert info.build_id == "eb4fbcd037e7253717950bf2b93bd5566f47c56f"
    assert info.page_size == 4096
    assert info.symbol("swapper_pg_dir") == 0xFFFFFFFFB7010000
    assert info.size("mem_section") == 32
    assert info.offset("page._refcount") == 52
    assert info.length("zone.free_area") == 11
    assert info.number("phys_base") == 31541166080
    assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
    assert info.number("VMALLOC_START") == 0xFFFFD31640000000
    assert info.number("kimage_voffset") == -0x7FFF800000
    assert info.kernel_offset == 0x34000000
    assert info.configs == {"CONFIG_X86_PAE": "y"}
    assert info.crashtime == 1795674799
    assert info.other == {"SOMETHING_NEW": "whatever"}
    assert info.problems == []


def test_symbols_are_hex_even_without_letters() -> None:
    # %lx prints no 0x: "10" is sixteen, not ten.
    assert parse_vmcoreinfo(b"SYMBOL(x)=10\n").symbol("x") == 16


def test_first_occurrence_wins() -> None:
    info = parse_vmcoreinfo(b"PAGESIZE=4096\nPAGESIZE=65536\nSYMBOL(a)=1\nSYMBOL(a)=2\n")
    assert info.page_size == 4096
    assert info.symbol("a") == 1


def test_garbage_is_reported_not_raised() -> None:
    info = parse_vmcoreinfo(b"no equals sign\nPAGESIZE=lots\nSYMBOL(x)=0xzz\n\x00\xff=\xfe\n=5\n")
    assert info.page_size is None
    assert info.symbol("x") is None
    assert len(info.problems) == 2
    assert "PAGESIZE=lots" in info.problems[0]


def test_note_padding_nuls_are_ignored() -> None:
    assert parse_vmcoreinfo(b"CRASHTIME=5\n\x00\x00\x00").crashtime == 5


@pytest.mark.parametrize("text", [b"", b"PAGESIZE=4095\n", b"PAGESIZE=0\n"])
def test_require_page_size_rejects_missing_or_odd_sizes(text: bytes) -> None:
    with pytest.raises(CorruptError, match="PAGESIZE"):
        parse_vmcoreinfo(text).require_page_size()
