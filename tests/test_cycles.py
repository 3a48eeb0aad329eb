"""Cyclic filtering: bitmaps and dumps identical with and without cycles.

Beyond its memory budget the filter works in cycles of pfns, as
makedumpfile's cyclic mode does. The cycles' bitmaps must join into exactly
the whole-machine ones, including where a run of struct pages or an
excluded range (a 1 GiB compound page) crosses a cycle's end, and a dump
written in cycles must be the same file, byte for byte, as makedumpfile's
with the same --cyclic-buffer.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from capture.cli import main
from capture.dumpfile.flattened import rebuild
from capture.filter import DumpLevel, FilteredPages, filter_cycles, filter_pages
from capture.filter.pagefilter import CYCLE_ALIGN, cycle_pages_for, default_bitmap_budget
from capture.vmcore import Vmcore
from tests.realcores import core_61, shared_cores
from tests.vmcore_builder import StructPage, VmcoreBuilder

GIB = 1 << 30
BUDDY = -129
ANON_MAPPING = 0xFFFF888000100001
PG_HEAD = 1 << 16


def flatmem_vmcore(tmp_path: Path) -> Path:
    """FLATMEM: struct pages are read in runs from each segment's start (pfn
    256), so runs cross every cycle boundary; anon and buddy pages sit on
    both sides of the first one."""
    builder = VmcoreBuilder(ram=((0x1000, 0x9F000), (0x100000, 320 << 20)), memory_model="flatmem")
    for pfn in (
        CYCLE_ALIGN - 3,
        CYCLE_ALIGN - 1,
        CYCLE_ALIGN,
        CYCLE_ALIGN + 5,
        2 * CYCLE_ALIGN + 100,
    ):
        builder.set_page(pfn, StructPage(mapping=ANON_MAPPING))
    builder.set_page(2 * CYCLE_ALIGN - 8, StructPage(mapcount=BUDDY, private=3))
    path = tmp_path / "flatmem.vmcore"
    builder.write(path)
    return path


def giant_page_vmcore(tmp_path: Path) -> Path:
    """An anonymous 1 GiB compound page (order 18) spanning eight cycles."""
    builder = VmcoreBuilder(ram=((0x1000, 0x9F000), (0x100000, 2 * GIB + (64 << 20))))
    head = GIB // 4096
    builder.set_page(head, StructPage(flags=PG_HEAD, mapping=ANON_MAPPING))
    builder.set_page(head + 1, StructPage(compound_head=0xFFFFEA0000000001))
    builder.set_page(head + (1 << 18) + 7, StructPage(mapping=ANON_MAPPING))
    builder.vmcoreinfo_lines()  # lays out the mem_map, so the tail's address is known
    address = builder.virt_to_phys((builder.vmemmap or 0) + (head + 1) * 64 + 17)
    assert address is not None
    builder.write_phys(address, bytes([18]))  # compound_order of the first tail (6.1)
    path = tmp_path / "giant.vmcore"
    builder.write_sparse(path)
    return path


def assert_cycles_join_into_whole(path: Path, level: DumpLevel, cycle: int) -> int:
    """Returns the number of cycles."""
    with Vmcore(str(path)) as vmcore:
        whole = filter_pages(vmcore, level)
        cycles = list(filter_cycles(vmcore, level, cycle))
    assert b"".join(bytes(c.bitmap1.data) for c in cycles) == bytes(whole.bitmap1.data)
    assert b"".join(bytes(c.bitmap2.data) for c in cycles) == bytes(whole.bitmap2.data)
    for name, pages in whole.stats.counts().items():
        assert sum(getattr(c.stats, name) for c in cycles) == pages, name
    assert [p for c in cycles for p in c.problems] == whole.problems
    return len(cycles)


def test_runs_crossing_cycles_carry_their_bits(tmp_path: Path) -> None:
    path = flatmem_vmcore(tmp_path)
    assert assert_cycles_join_into_whole(path, DumpLevel(31), CYCLE_ALIGN) == 3
    with Vmcore(str(path)) as vmcore:
        whole = filter_pages(vmcore, DumpLevel(31))
    # The test means something only if the pages at the cut are excluded.
    assert not whole.bitmap2.is_set(CYCLE_ALIGN - 1) and not whole.bitmap2.is_set(CYCLE_ALIGN)
    assert whole.stats.user == 5 and whole.stats.free == 8


def test_a_range_over_many_cycles_is_cleared_in_each(tmp_path: Path) -> None:
    path = giant_page_vmcore(tmp_path)
    assert assert_cycles_join_into_whole(path, DumpLevel.USER, 2 * CYCLE_ALIGN) > 8
    with Vmcore(str(path)) as vmcore:
        whole = filter_pages(vmcore, DumpLevel.USER)
    head = GIB // 4096
    assert whole.stats.user == (1 << 18) + 1
    assert whole.bitmap2.count(head, head + (1 << 18)) == 0
    assert whole.bitmap2.is_set(head + (1 << 18))


@pytest.mark.parametrize("level", [31, 8, 1], ids=["d31", "d8", "d1"])
def test_real_vmcores_in_cycles(level: int) -> None:
    for core in shared_cores():
        assert assert_cycles_join_into_whole(core.vmcore, DumpLevel(level), CYCLE_ALIGN) >= 4


def makedumpfile(*args: str) -> None:
    subprocess.run(["makedumpfile", *args], check=True, capture_output=True)


def test_cyclic_dump_is_makedumpfiles_cyclic_dump(tmp_path: Path) -> None:
    """makedumpfile 1.7.2 with a 4 KiB cyclic buffer (4 cycles on 512 MiB)
    writes the same file as without one; so must we."""
    vmcore = str(core_61().vmcore)
    makedumpfile("-l", "-d", "31", "--cyclic-buffer", "4", vmcore, str(tmp_path / "theirs"))
    assert main(["dump", "-l", "-d", "31", "--cyclic-buffer", "4", vmcore,
                 str(tmp_path / "ours")]) == 0  # fmt: skip
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "theirs").read_bytes()


@pytest.mark.parametrize("flags", [["-z", "-d", "1"], ["-l", "-d", "31", "-F"]], ids=str)
def test_cyclic_dump_equals_whole_dump(tmp_path: Path, flags: list[str]) -> None:
    vmcores = [core.vmcore for core in shared_cores()]
    vmcores += [flatmem_vmcore(tmp_path), giant_page_vmcore(tmp_path)]
    for vmcore in vmcores:
        outputs = []
        for cycles in (["--cyclic-buffer", "4"], ["--non-cyclic"]):
            output = tmp_path / f"dump{len(outputs)}"
            assert main(["dump", *flags, *cycles, str(vmcore), str(output)]) == 0
            if "-F" in flags:
                with output.open("rb") as stream:
                    rebuild(stream, str(output.with_suffix(".rebuilt")))
                output = output.with_suffix(".rebuilt")
            outputs.append(output.read_bytes())
        assert outputs[0] == outputs[1], vmcore


def test_counting_pass_knows_the_dumpable_pages_before_writing() -> None:
    with Vmcore(str(core_61().vmcore)) as vmcore:
        whole = filter_pages(vmcore, DumpLevel(31))
        cyclic = FilteredPages(vmcore, DumpLevel(31), budget=8192)
        held = FilteredPages(vmcore, DumpLevel(31), budget=None)
    assert cyclic.cyclic and not held.cyclic
    assert cyclic.dumpable == held.dumpable == whole.bitmap2.count()
    assert cyclic.stats.counts() == held.stats.counts() == whole.stats.counts()
    with pytest.raises(ValueError, match="cycles"):
        cyclic.whole()


def test_cycle_size_from_the_budget() -> None:
    tebibyte = (1 << 40) // 4096
    assert cycle_pages_for(tebibyte, None) is None
    assert cycle_pages_for(tebibyte, 64 << 20) is None  # both bitmaps: exactly 64 MiB
    assert cycle_pages_for(tebibyte, 32 << 20) == tebibyte // 2
    assert cycle_pages_for(tebibyte, 1000) == CYCLE_ALIGN  # never below one block
    assert cycle_pages_for(tebibyte, (32 << 20) + 8191) == tebibyte // 2
    assert cycle_pages_for(tebibyte, (32 << 20) + 8192) == tebibyte // 2 + CYCLE_ALIGN


def test_default_budget_is_a_share_of_available_memory(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  262144 kB\nMemAvailable:   40960 kB\n")
    assert default_bitmap_budget(str(meminfo)) == int(40960 * 1024 * 0.4)
    meminfo.write_text("MemAvailable: 24000000 kB\n")
    assert default_bitmap_budget(str(meminfo)) == 32 << 20
    meminfo.write_text("MemAvailable: 1000 kB\n")
    assert default_bitmap_budget(str(meminfo)) == 1 << 20
    assert default_bitmap_budget(str(tmp_path / "missing")) == 32 << 20
