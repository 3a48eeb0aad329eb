"""Engine I on synthetic vmcores: what the real fixtures cannot reach.

tests/vmcore_builder.py lays out memory from the spec on its own (it shares no
code with capture/), so these tests compare two independent readings of the
same layout: 5-level paging, 1 GiB/2 MiB/4 KiB mappings, SME, FLATMEM and
classic SPARSEMEM, the older log formats, and corrupt input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from capture.cli import main
from capture.errors import NoDataError
from capture.vmcore import MemMap, Vmcore, format_log, read_kernel_log
from tests.vmcore_builder import LogRecord, StructPage, VmcoreBuilder

RECORDS = [
    LogRecord(b"Linux version 6.1.0-test", 0, caller_id=0),
    LogRecord(b"first line\nsecond line", 1_500_000_000, caller_id=1),
    LogRecord(b"tab\there \x01 and \xc3\xa9", 12_345_678_901, caller_id=0x80000001),
]
EXPECTED_LOG = (
    b"[    0.000000] Linux version 6.1.0-test\n"
    b"[    1.500000] first line\n"
    b"               second line\n"
    b"[   12.345678] tab\there \\x01 and \\xffffffc3\\xffffffa9\n"
)
EXPECTED_LOG_CALLER = (
    b"[    0.000000] [      T0] Linux version 6.1.0-test\n"
    b"[    1.500000] [      T1] first line\n"
    b"                          second line\n"
    b"[   12.345678] [      C1] tab\there \\x01 and \\xffffffc3\\xffffffa9\n"
)


def build(tmp_path: Path, builder: VmcoreBuilder, name: str = "vmcore") -> str:
    path = tmp_path / name
    builder.write(path)
    return str(path)


def run_cli(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "capture", *argv], capture_output=True, check=False
    )


PAGING = [
    pytest.param(dict(levels=4, direct_map_page="2M", vmemmap_page="2M"), id="4level-2M"),
    pytest.param(dict(levels=4, direct_map_page="1G", vmemmap_page="4K"), id="4level-1G-4K"),
    pytest.param(dict(levels=5, direct_map_page="4K", vmemmap_page="2M"), id="5level-4K"),
    pytest.param(dict(levels=5, direct_map_page="1G", vmemmap_page="1G"), id="5level-1G"),
    pytest.param(dict(levels=4, sme_mask=1 << 47), id="sme"),
    pytest.param(dict(levels=5, sme_mask=1 << 51, vmemmap_page="4K"), id="5level-sme-4K"),
]


@pytest.mark.parametrize("paging", PAGING)
def test_translation_matches_builder(tmp_path, paging) -> None:
    builder = VmcoreBuilder(**paging)
    path = build(tmp_path, builder)
    with Vmcore(path) as vmcore:
        samples = [builder.symbols["init_uts_ns"], builder.symbols["prb"]]
        samples += [builder.page_offset + 0x100000 + i * 0x3_2001 for i in range(8)]
        if builder.vmemmap is not None:
            samples += [builder.vmemmap + pfn * 64 for pfn in (1, 300, 4097, 16000)]
        for vaddr in samples:
            assert vmcore.translator.mapping(vaddr)[0] == builder.virt_to_phys(vaddr), hex(vaddr)
        assert vmcore.utsname.release == "6.1.0-test"
        assert vmcore.utsname.machine == "x86_64"


@pytest.mark.parametrize("paging", PAGING)
def test_struct_page_columns(tmp_path, paging) -> None:
    builder = VmcoreBuilder(**paging)
    pages = {
        300: StructPage(flags=1 << 4, mapping=0xFFFF888000123001, private=7, mapcount=-129),
        301: StructPage(flags=1 << 9, compound_head=0xFFFFEA0000000001),
        4000: StructPage(flags=(1 << 63) | 5, mapcount=-257, refcount=3),
    }
    for pfn, page in pages.items():
        builder.set_page(pfn, page)
    path = build(tmp_path, builder)
    with Vmcore(path) as vmcore:
        memmap = MemMap(vmcore)
        assert memmap.model == "sparsemem_vmemmap"
        assert memmap.vmemmap == builder.vmemmap
        runs = list(memmap.columns(256, 4096))
        assert sum(run.count for run in runs) == 4096 - 256
        seen = {}
        for run in runs:
            for index in range(run.count):
                seen[run.start_pfn + index] = (
                    run.flags[index],
                    run.mapping[index],
                    run.private[index],
                    run.mapcount[index],
                )
        assert seen[300] == (1 << 4, 0xFFFF888000123001, 7, (-129) & 0xFFFFFFFF)
        assert seen[4000] == ((1 << 63) | 5, 0, 0, (-257) & 0xFFFFFFFF)
        assert seen[1000] == (0, 0, 0, 0xFFFFFFFF)
        compound = next(run for run in runs if run.start_pfn <= 301 < run.end_pfn)
        assert compound.compound_head is not None
        assert compound.compound_head[301 - compound.start_pfn] == 0xFFFFEA0000000001


@pytest.mark.parametrize("model", ["flatmem", "sparsemem"])
def test_other_memory_models(tmp_path, model: str) -> None:
    builder = VmcoreBuilder(memory_model=model)
    builder.set_page(5000, StructPage(flags=0xABC, private=3))
    path = build(tmp_path, builder)
    with Vmcore(path) as vmcore:
        memmap = MemMap(vmcore)
        assert memmap.model == model
        assert memmap.vmemmap is None
        assert memmap.page_address(5000) == builder.struct_page_addr(5000)
        [run] = list(memmap.columns(5000, 5001))
        assert (run.flags[0], run.private[0]) == (0xABC, 3)


def test_info_json_on_synthetic(tmp_path, capsys) -> None:
    builder = VmcoreBuilder(ram=[(0x1000, 0x9F000), (0x100000, 32 << 20)], cpus=3)
    path = build(tmp_path, builder)
    assert main(["info", "--json", path]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["cpus"] == 3
    assert facts["crash_time"] == 1700000000
    assert facts["ram_ranges"] == [[1, 0x9F], [0x100, (32 << 20) >> 12]]
    assert facts["ram_pages"] == (0x9F - 1) + ((32 << 20) >> 12) - 0x100
    assert facts["phys_base"] == builder.phys_base
    assert facts["vmemmap"] == builder.vmemmap


@pytest.mark.parametrize("log", ["lockless", "legacy"])
def test_log_formatting(tmp_path, log: str) -> None:
    builder = VmcoreBuilder(log=log)
    builder.add_log(RECORDS)
    path = build(tmp_path, builder)
    with Vmcore(path) as vmcore:
        kernel_log = read_kernel_log(vmcore)
    assert kernel_log.error is None
    assert format_log(kernel_log) == EXPECTED_LOG
    assert format_log(kernel_log, caller_id=True) == EXPECTED_LOG_CALLER


def test_lockless_ring_that_wrapped(tmp_path) -> None:
    builder = VmcoreBuilder(log="lockless")
    records = [LogRecord(b"message %d " % i + b"x" * (i % 50), i * 1000) for i in range(400)]
    builder.add_log(records)
    path = build(tmp_path, builder)
    with Vmcore(path) as vmcore:
        kernel_log = read_kernel_log(vmcore)
    # The ring keeps only the newest records, oldest first.
    assert kernel_log.error is None
    assert [r.text for r in kernel_log.records] == [r.text for r in builder.expected_log]
    assert [r.ts_nsec for r in kernel_log.records] == [r.ts_nsec for r in builder.expected_log]
    assert 0 < len(kernel_log.records) < len(records)
    assert kernel_log.records[-1].text == records[-1].text


@pytest.mark.parametrize("records", [20, 2000], ids=["unwrapped", "wrapped"])
def test_plain_ring(tmp_path, records: int) -> None:
    builder = VmcoreBuilder(log="plain", log_buf_len=1 << 12)
    builder.add_log([LogRecord(b"line %d" % i, i * 1000) for i in range(records)])
    path = build(tmp_path, builder)
    with Vmcore(path) as vmcore:
        text = format_log(read_kernel_log(vmcore))
    assert text == builder.expected_plain_log
    assert text.endswith(b"line %d\n" % (records - 1))


def test_legacy_log_loop_keeps_what_was_read(tmp_path) -> None:
    builder = VmcoreBuilder(log="legacy")
    builder.add_log(RECORDS)
    builder.make_log_loop()
    path = build(tmp_path, builder)
    output = tmp_path / "dmesg.txt"
    result = run_cli("dmesg", path, str(output))
    assert result.returncode == 1
    [line] = result.stderr.decode().splitlines()
    assert line.startswith(f"error: {path}: ") and "loop" in line
    assert output.read_bytes().startswith(EXPECTED_LOG.split(b"\n")[0])


def test_prb_pointing_outside_memory(tmp_path) -> None:
    builder = VmcoreBuilder(log="lockless")
    builder.add_log(RECORDS)
    builder.point_prb_outside_memory()
    path = build(tmp_path, builder)
    result = run_cli("dmesg", path)
    assert result.returncode == 1
    [line] = result.stderr.decode().splitlines()
    assert line.startswith(f"error: {path}: kernel log is not readable")


def test_garbled_vmcoreinfo(tmp_path) -> None:
    builder = VmcoreBuilder()
    builder.garble_vmcoreinfo()
    path = build(tmp_path, builder)
    result = run_cli("info", "--json", path)
    assert result.returncode == 1
    assert len(result.stderr.decode().splitlines()) == 1
    facts = json.loads(result.stdout)
    assert facts["cpus"] == 2  # the notes themselves are fine
    assert facts["ram_pages"] > 0


def test_truncated_vmcore_still_reads_what_exists(tmp_path) -> None:
    builder = VmcoreBuilder()
    builder.add_log(RECORDS)
    image = builder.build()
    path = tmp_path / "truncated"
    path.write_bytes(image[: len(image) // 2])
    with Vmcore(str(path)) as vmcore:
        assert vmcore.info.osrelease == "6.1.0-test"
        top = max(segment.end for segment in vmcore.core.segments)
        with pytest.raises(NoDataError):
            vmcore.read_phys(top - 4096, 4096)
        assert len(vmcore.read_phys(0x100000, 4096)) == 4096  # the first half is still there
    result = run_cli("info", str(path))
    assert b"6.1.0-test" in result.stdout


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(dict(log="lockless"), id="lockless"),
        pytest.param(dict(log="lockless", levels=5, sme_mask=1 << 51), id="lockless-5level-sme"),
        pytest.param(dict(log="legacy"), id="legacy"),
        pytest.param(dict(log="legacy", log_caller_id=False, log_align=4), id="legacy-4.x"),
        pytest.param(dict(log="plain", log_buf_len=1 << 12), id="plain"),
    ],
)
def test_dmesg_equals_real_makedumpfile(tmp_path, options) -> None:
    """makedumpfile --dump-dmesg (a real reader) writes the same bytes as we do."""
    builder = VmcoreBuilder(**options)
    builder.add_log([*RECORDS, *(LogRecord(b"filler %d" % i, i) for i in range(300))])
    path = build(tmp_path, builder)
    reference = tmp_path / "makedumpfile.txt"
    subprocess.run(
        ["makedumpfile", "--dump-dmesg", path, str(reference)], check=True, capture_output=True
    )
    ours = tmp_path / "ours.txt"
    assert main(["dmesg", path, str(ours)]) == 0
    assert ours.read_bytes() == reference.read_bytes()


def test_six_section_flag_bits_are_masked(tmp_path) -> None:
    # Linux 6.15 (SECTION_IS_VMEMMAP_PREINIT) uses bit 5; makedumpfile masks only 5 bits.
    builder = VmcoreBuilder(section_flags=0x3F)
    builder.set_page(777, StructPage(flags=0x1234))
    path = build(tmp_path, builder)
    with Vmcore(path) as vmcore:
        memmap = MemMap(vmcore)
        assert memmap.vmemmap == builder.vmemmap
        [run] = list(memmap.columns(777, 778))
        assert run.flags[0] == 0x1234


def test_unmapped_vmemmap_page_costs_only_its_pfns(tmp_path) -> None:
    builder = VmcoreBuilder(vmemmap_page="4K")
    builder.set_page(1100, StructPage(flags=0x55))
    builder.build()
    builder.unmap(builder.struct_page_addr(1000) or 0)  # pfns 960-1023 lose their struct pages
    builder.build()
    path = build(tmp_path, builder)
    with Vmcore(path) as vmcore:
        runs = list(MemMap(vmcore).columns(900, 1200))
    covered = [pfn for run in runs for pfn in range(run.start_pfn, run.end_pfn)]
    assert covered == [*range(900, 960), *range(1024, 1200)]
    after = next(run for run in runs if run.start_pfn == 1024)
    assert after.flags[1100 - 1024] == 0x55


def test_section_disagreeing_with_vmemmap_is_dropped(tmp_path) -> None:
    ram = [(0x1000, 0x9F000), (0x100000, 32 << 20), (0x10000000, 0x10000000 + (16 << 20))]
    builder = VmcoreBuilder(ram=ram)
    path = build(tmp_path, builder)
    with Vmcore(path) as vmcore:
        root = vmcore.read_u64(vmcore.info.symbol("mem_section") or 0)
    section2 = builder.virt_to_phys(root + 2 * 32)
    assert section2 is not None
    builder.write_phys(section2, (0xFFFF888012340000 | 3).to_bytes(8, "little"))
    builder.build()
    builder.write(path)
    with Vmcore(path) as vmcore:
        memmap = MemMap(vmcore)
        assert memmap.vmemmap == builder.vmemmap
        assert len(memmap.problems) == 1 and "mem_section 2" in memmap.problems[0]
        assert memmap.page_address(0x10000) is None  # section 2's pages stay unfiltered
        # Section 0 whole (vmemmap backs all of it); section 1 absent; section 2 dropped.
        assert sum(run.count for run in memmap.columns(0, memmap.max_pfn)) == 32768


def test_no_vmcoreinfo_note(tmp_path) -> None:
    image = VmcoreBuilder().build().replace(b"VMCOREINFO\0", b"VMCOREINFX\0", 1)
    path = tmp_path / "novmcoreinfo"
    path.write_bytes(image)
    result = run_cli("dmesg", str(path))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"error: {path}: no VMCOREINFO note: this is not a kernel crash dump"
    ]


def test_ram_segments_without_virtual_addresses(tmp_path) -> None:
    """kexec-tools may leave p_vaddr 0: the direct map is then walked, not guessed."""
    builder = VmcoreBuilder(page_offset=0xFFFF9ABC00000000)
    builder.add_log(RECORDS)
    image = bytearray(builder.build())
    phnum = int.from_bytes(image[56:58], "little")
    for index in range(phnum):
        vaddr_at = 64 + 56 * index + 16
        if int.from_bytes(image[vaddr_at : vaddr_at + 8], "little") < 0xFFFFFFFF80000000:
            image[vaddr_at : vaddr_at + 8] = bytes(8)
    path = tmp_path / "novaddr"
    path.write_bytes(image)
    with Vmcore(str(path)) as vmcore:
        vaddr = builder.page_offset + 0x123456
        assert vmcore.translator.mapping(vaddr)[0] == 0x123456
        assert format_log(read_kernel_log(vmcore)) == EXPECTED_LOG
        assert MemMap(vmcore).vmemmap == builder.vmemmap
