"""Engine I on real vmcores, checked against independent references.

References: makedumpfile's own outputs shipped with each vmcore (the log,
the free-page count), binutils' readelf, and values recomputed here from the
ELF headers with pyelftools.
"""

from __future__ import annotations

import json
import re

from capture.cli import main
from capture.vmcore import MemMap, Vmcore
from capture.vmcore.x86_64 import X86_64Translator
from tests.elfreference import ram_pfns_from_headers, readelf_prstatus_count
from tests.realcores import RealCore


def test_dmesg_matches_makedumpfile(real_core: RealCore, tmp_path) -> None:
    output = tmp_path / "vmcore-dmesg.txt"
    assert main(["dmesg", str(real_core.vmcore), str(output)]) == 0
    assert output.read_bytes() == (real_core.reference / "vmcore-dmesg.txt").read_bytes()


def test_dmesg_caller_id_matches_makedumpfile(real_core: RealCore, capfdbinary) -> None:
    assert main(["dmesg", "--caller-id", str(real_core.vmcore)]) == 0
    expected = (real_core.reference / "vmcore-dmesg-callerid.txt").read_bytes()
    assert capfdbinary.readouterr().out == expected


def test_dmesg_shows_the_sysrq_panic(real_core: RealCore, capfdbinary) -> None:
    assert main(["dmesg", str(real_core.vmcore)]) == 0
    assert b"sysrq: Trigger a crash" in capfdbinary.readouterr().out


def test_info_json(real_core: RealCore, capsys) -> None:
    assert main(["info", "--json", str(real_core.vmcore)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["release"] == real_core.release
    assert facts["cpus"] == readelf_prstatus_count(real_core.vmcore)
    assert facts["page_size"] == 4096
    ram = ram_pfns_from_headers(real_core.vmcore, 4096)
    assert facts["ram_pages"] == len(ram)
    assert sum(end - start for start, end in facts["ram_ranges"]) == len(ram)
    assert all(pfn in ram for start, end in facts["ram_ranges"] for pfn in (start, end - 1))
    assert facts["memory_model"] == "sparsemem_vmemmap"
    assert isinstance(facts["crash_time"], int) and facts["crash_time"] > 1_600_000_000


def test_info_text_names_the_release(real_core: RealCore, capsys) -> None:
    assert main(["info", str(real_core.vmcore)]) == 0
    assert real_core.release in capsys.readouterr().out


def test_phys_base_agrees_with_kernel_segment(real_core: RealCore) -> None:
    with Vmcore(str(real_core.vmcore)) as vmcore:
        image = next(s for s in vmcore.core.segments if s.vaddr >= 0xFFFFFFFF80000000)
        assert vmcore.translator.phys_base == image.paddr - (image.vaddr - 0xFFFFFFFF80000000)
        assert vmcore.translator.phys_base == vmcore.info.number("phys_base")


def test_page_table_walk_agrees_with_fast_paths(real_core: RealCore) -> None:
    """Walk the real page tables for addresses the fast paths also translate."""
    with Vmcore(str(real_core.vmcore)) as vmcore:
        fast = vmcore.translator
        assert isinstance(fast, X86_64Translator)
        layout = fast.layout._replace(kernel_image_size=0, direct_map_size=0)
        walker = X86_64Translator(layout, vmcore.read_phys)
        stext = vmcore.info.symbol("_stext")
        samples = [stext, stext + 0x1234, vmcore.info.symbol("init_uts_ns")]
        samples += [fast.layout.page_offset + paddr for paddr in (0x100000, 0x5000000, 0x13005000)]
        for vaddr in samples:
            assert walker.translate(vaddr) == fast.translate(vaddr), hex(vaddr)


def test_vmemmap_matches_exported_symbol(real_core: RealCore) -> None:
    with Vmcore(str(real_core.vmcore)) as vmcore:
        memmap = MemMap(vmcore)
        exported = vmcore.info.symbol("vmemmap")
        if exported is not None:  # exported from Linux 6.9 on
            assert memmap.vmemmap == exported
        assert memmap.vmemmap is not None and memmap.vmemmap % (1 << 30) == 0
        assert memmap.problems == []


def _report_count(real_core: RealCore, level: int, label: str) -> int:
    report = (real_core.reference / "report.txt").read_text()
    section = report.split(f"-d {level}\n", 1)[1]
    match = re.search(rf"{label}\s*: 0x([0-9a-f]+)", section)
    assert match, label
    return int(match.group(1), 16)


def test_buddy_pages_from_columns_match_makedumpfile(real_core: RealCore) -> None:
    """Free pages found through struct page columns equal makedumpfile's count."""
    with Vmcore(str(real_core.vmcore)) as vmcore:
        memmap = MemMap(vmcore)
        buddy = (vmcore.info.number("PAGE_BUDDY_MAPCOUNT_VALUE") or 0) & 0xFFFFFFFF
        free = 0
        for start, end in vmcore.ram_ranges():
            for run in memmap.columns(start, end):
                private = run.private
                free += sum(
                    1 << private[index]
                    for index, mapcount in enumerate(run.mapcount)
                    if mapcount == buddy
                )
    assert free == _report_count(real_core, 16, "Free pages")


def test_columns_equal_single_struct_page_reads(real_core: RealCore) -> None:
    with Vmcore(str(real_core.vmcore)) as vmcore:
        memmap = MemMap(vmcore)
        layout = memmap.layout
        start, end = vmcore.ram_ranges()[-1]
        runs = list(memmap.columns(start, end))
        assert sum(run.count for run in runs) == end - start
        for run in runs[:2]:
            for index in (0, 1, run.count // 2, run.count - 1):
                address = memmap.page_address(run.start_pfn + index)
                assert address is not None
                raw = vmcore.read_virt(address, layout.size)
                assert run.flags[index] == int.from_bytes(raw[0:8], "little")
                mapping = int.from_bytes(raw[layout.mapping : layout.mapping + 8], "little")
                assert run.mapping[index] == mapping
                mapcount = raw[layout.mapcount : layout.mapcount + 4]
                assert run.mapcount[index] == int.from_bytes(mapcount, "little")
