"""Our dumps in the hands of the real readers, on both kernels.

* makedumpfile 1.7.8 (Debian sid, in a chroot: tests/oracles.py) writes the
  same bytes we write, and its second bitmap equals ours at every level;
* crash 9.0.2 with the kernel's debug symbols runs sys, bt, ps, kmem -i and
  log on our dumps without an excluded page or a read error, and sees every
  task it sees on the full vmcore;
* drgn 0.3.0, through libkdumpfile for kdump files, walks the crashed
  thread's stack, every task's stack and the whole log; every page it reads
  equals the vmcore's.
"""

from __future__ import annotations

import re
from pathlib import Path

import drgn
import pytest
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.printk import get_dmesg

from capture.cli import main
from capture.dumpfile.reader import open_dump
from capture.filter import DumpLevel, filter_pages
from capture.vmcore import Vmcore
from tests import oracles
from tests.realcores import RealCore

CRASH_COMMANDS = ["sys", "bt", "ps", "kmem -i", "log"]
READ_ERRORS = re.compile(r"page excluded|read error|invalid|cannot|WARNING", re.IGNORECASE)
LOG_LINE = re.compile(r"^\[\s*\d+\.\d+\]")


def crash_complaints(output: str) -> list[str]:
    """crash's own error lines (the kernel log it prints may say anything)."""
    return [
        line
        for line in output.splitlines()
        if READ_ERRORS.search(line) and not LOG_LINE.match(line)
    ]


def ours(real_core: RealCore, path: Path, *flags: str) -> Path:
    assert main(["dump", *flags, str(real_core.vmcore), str(path)]) == 0
    return path


@pytest.mark.parametrize(
    "flags", [["-z"], ["-l"], ["-c"], ["-E"]], ids=["zstd", "lzo", "zlib", "elf"]
)
def test_identical_to_makedumpfile_178(
    real_core: RealCore, tmp_path: Path, flags: list[str]
) -> None:
    theirs = tmp_path / "theirs"
    result = oracles.makedumpfile_new(*flags, "-d", "31", real_core.vmcore, theirs)
    assert result.returncode == 0, result.stdout + result.stderr
    mine = ours(real_core, tmp_path / "ours", *flags, "-d", "31")
    assert mine.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("level", [1, 2, 4, 8, 16])
def test_second_bitmap_equals_makedumpfile_178(
    real_core: RealCore, tmp_path: Path, level: int
) -> None:
    theirs = tmp_path / "theirs"
    result = oracles.makedumpfile_new("-l", "-d", str(level), real_core.vmcore, theirs)
    assert result.returncode == 0, result.stdout + result.stderr
    mine = ours(real_core, tmp_path / "ours", "-l", "-d", str(level))
    with open_dump(str(theirs)) as reference, open_dump(str(mine)) as dumped:
        assert dumped.core.bitmap2.data == reference.core.bitmap2.data  # type: ignore[attr-defined]


def test_makedumpfile_178_reads_our_zstd_log(real_core: RealCore, tmp_path: Path) -> None:
    mine = ours(real_core, tmp_path / "ours", "-z", "-d", "31")
    log = tmp_path / "dmesg.txt"
    result = oracles.makedumpfile_new("--dump-dmesg", mine, log)
    assert result.returncode == 0, result.stdout + result.stderr
    assert log.read_bytes() == (real_core.reference / "vmcore-dmesg-callerid.txt").read_bytes()


def _crash(real_core: RealCore, dump: Path) -> str:
    return oracles.crash_new(oracles.debug_vmlinux(real_core.release), dump, CRASH_COMMANDS)


def _tasks(output: str) -> int:
    match = re.search(r"^\s*TASKS: (\d+)$", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


@pytest.fixture(scope="module")
def full_vmcore_tasks() -> dict[str, int]:
    """Tasks crash sees on each full vmcore, filled on first use."""
    return {}


@pytest.mark.parametrize(
    "flags", [["-z"], ["-E"], ["-F", "-l"]], ids=["kdump-zstd", "elf", "flattened-lzo"]
)
def test_crash_reads_our_dump(
    real_core: RealCore, tmp_path: Path, flags: list[str], full_vmcore_tasks: dict[str, int]
) -> None:
    if real_core.name not in full_vmcore_tasks:
        full_vmcore_tasks[real_core.name] = _tasks(_crash(real_core, real_core.vmcore))
    output = _crash(real_core, ours(real_core, tmp_path / "ours", *flags, "-d", "31"))
    assert crash_complaints(output) == []
    assert re.search(rf"RELEASE: {re.escape(real_core.release)}$", output, re.MULTILINE)
    assert "sysrq_handle_crash" in output  # bt of the panicking task
    assert re.search(r"TOTAL MEM", output)  # kmem -i
    assert "sysrq: Trigger a crash" in output  # log
    assert _tasks(output) == full_vmcore_tasks[real_core.name]


@pytest.mark.parametrize(
    "flags",
    [["-z"], ["-l"], ["-c"], ["-p"], ["--compress", "none"], ["-E"]],
    ids=["zstd", "lzo", "zlib", "snappy", "none", "elf"],
)
def test_drgn_reads_our_dump(real_core: RealCore, tmp_path: Path, flags: list[str]) -> None:
    dump = ours(real_core, tmp_path / "ours", *flags, "-d", "31")
    program = oracles.drgn_program(dump, real_core.release)
    trace = str(program.crashed_thread().stack_trace())
    assert "sysrq_handle_crash" in trace
    tasks = [program.stack_trace(task) for task in for_each_task(program)]
    assert len(tasks) > 40
    log = get_dmesg(program).decode()
    expected = (real_core.reference / "vmcore-dmesg.txt").read_text().splitlines()
    assert log.splitlines()[-1] == expected[-1]
    assert len(log.splitlines()) == len(expected)


@pytest.mark.parametrize("flags", [["-z"], ["-F", "-z"]], ids=["kdump", "flattened"])
def test_libkdumpfile_reads_every_page(
    real_core: RealCore, tmp_path: Path, flags: list[str]
) -> None:
    """drgn hands kdump files to libkdumpfile: every dumped page is the vmcore's."""
    dump = ours(real_core, tmp_path / "ours", *flags, "-d", "31")
    program = drgn.Program()
    program.set_core_dump(str(dump))
    checked = 0
    with Vmcore(str(real_core.vmcore)) as vmcore:
        bitmap2 = filter_pages(vmcore, DumpLevel(31)).bitmap2
        for start, end in bitmap2.runs():
            data = program.read(start * 4096, (end - start) * 4096, True)
            assert data == vmcore.read_phys(start * 4096, (end - start) * 4096), hex(start)
            checked += end - start
    assert checked == bitmap2.count()
