"""Memory on the dump path does not grow with the number of zero pages.

A zero page at a level with bit 1 adds a descriptor but no data. A writer
that flushed only by data size held one descriptor per zero page (4.1
million, ~450 MB, on a zero-heavy 16 GB machine) until the end. These tests
count what the writer holds, and the peak RSS of a real `dump` in a child.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture.dumpfile.codecs import codec_by_name
from capture.dumpfile.dump import DumpOptions, DumpPlan
from capture.dumpfile.kdump import DESCRIPTOR, KdumpLayout, write_kdump
from capture.dumpfile.sink import FileSink
from capture.filter import DumpLevel, FilteredPages
from capture.filter.stats import Category, FilterStats
from capture.vmcore import Vmcore
from tests.vmcore_builder import VmcoreBuilder

GIB = 1 << 30
DATA_EVERY = 1024
PATTERN = bytes(range(256)) + bytes(4096 - 256)


def zero_heavy_vmcore(path: Path, gib: int) -> Path:
    """A data page every 1024 pages, the rest zero pages (holes on disk)."""
    low = min(gib, 2) * GIB
    ram = [(0x1000, 0x9F000), (0x100000, low)]
    if gib > 2:
        ram.append((4 * GIB, 4 * GIB + (gib - 2) * GIB))
    builder = VmcoreBuilder(ram=ram)
    builder.fill_pages(range(0, builder.max_pfn, DATA_EVERY), PATTERN)
    builder.write_sparse(path)
    return path


class _LargestWrites(FileSink):
    """A file sink that remembers its largest write into the descriptor table."""

    def __init__(self, path: str, table: tuple[int, int]) -> None:
        super().__init__(path)
        self.table, self.largest = table, 0

    def write_at(self, offset: int, data: bytes) -> None:
        if self.table[0] <= offset < self.table[1]:
            self.largest = max(self.largest, len(data))
        super().write_at(offset, data)


@pytest.mark.parametrize("level", [1, 31])
def test_descriptors_are_written_in_bounded_pieces(tmp_path: Path, level: int) -> None:
    vmcore_path = zero_heavy_vmcore(tmp_path / "vmcore", 1)
    with Vmcore(str(vmcore_path)) as vmcore:
        filtered = FilteredPages(vmcore, DumpLevel(level), budget=None)
        layout = KdumpLayout(
            4096, len(vmcore.core.notes), filtered.max_pfn, filtered.dumpable, True
        )
        table = (layout.descriptors_offset, layout.data_offset)
        sink = _LargestWrites(str(tmp_path / "dump"), table)
        codec = codec_by_name("zlib")
        outcome = write_kdump(vmcore, filtered, codec, codec.make(4096), sink)
        sink.close()
    assert filtered.dumpable > 200_000  # a table of ~5 MB, if written at once
    assert outcome.zero_pages > 150_000
    assert 0 < sink.largest <= ((1 << 15) + 1024) * DESCRIPTOR.size  # plus one batch


def test_peak_rss_of_a_zero_heavy_dump(tmp_path: Path) -> None:
    """4 GiB, a million zero pages: about 110 MB more when every descriptor
    was held. VmHWM is read in the child itself (a child's ru_maxrss starts
    from its parent's peak, and pytest's is large)."""
    vmcore = zero_heavy_vmcore(tmp_path / "vmcore", 4)
    script = (
        "import sys\n"
        "from capture.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(int(hwm.split()[1]) // 1024, status)\n"
    )
    for level in ("1", "31"):
        output = tmp_path / f"dump-{level}"
        run = subprocess.run(
            [sys.executable, "-c", script, "dump", "-l", "-d", level, str(vmcore), str(output)],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
        peak_mb, status = map(int, run.stdout.split()[-2:])
        assert status == 0, run.stderr
        assert peak_mb < 60, f"-d {level}: peak RSS {peak_mb} MB"  # 133 MB at -d 1 before
        output.unlink()


@pytest.mark.parametrize("elf", [False, True])
def test_the_writer_counts_zero_pages_in_its_report_not_in_the_filters_stats(
    tmp_path: Path, elf: bool
) -> None:
    vmcore_path = zero_heavy_vmcore(tmp_path / "vmcore", 1)
    with Vmcore(str(vmcore_path)) as vmcore:
        plan = DumpPlan(vmcore, DumpOptions(level=DumpLevel(1), elf=elf))
        sink = FileSink(str(tmp_path / "dump"))
        report = plan.write(sink)
        sink.close()
    assert plan.filtered.stats.zero == 0
    assert report.stats.zero == report.outcome.zero_pages > 250_000
    assert report.stats.dumped == report.stats.ram - report.stats.zero


def test_a_count_changes_only_through_add() -> None:
    stats = FilterStats()
    stats.add(Category.CACHE, 3)
    with pytest.raises(AttributeError, match=r"FilterStats.add\(Category.ZERO"):
        stats.zero = 5  # type: ignore[assignment]
    assert (stats.cache, stats.zero, stats.excluded) == (3, 0, 3)
