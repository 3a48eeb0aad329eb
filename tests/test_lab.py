"""Real panics: a Debian kernel crashes in QEMU, and the engine reads what it left.

Each kernel is booted, filled with recognisable memory (qemu/kdumplab),
panicked with sysrq, and captured; this is never served from the cache, so
every run of the suite proves the whole chain again. The checks then use
only what the guest itself reported and independent readers.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from capture.cli import main
from capture.filter import DumpLevel, filter_pages
from capture.vmcore import Vmcore
from tests import oracles
from tests.elfreference import ram_pfns_from_headers, readelf_prstatus_count
from tests.realcores import REPO

sys.path.insert(0, str(REPO / "qemu"))
from kdumplab import LabError, VmcoreResult, make_vmcore

PATTERN = re.compile(rb"CRASHLAB-(ANON|CACHE|SHM)-\d{8}\|")
WORKLOAD = {"CACHE_MB": 32, "SHM_MB": 8, "ANON_MB": 48, "ZERO_MB": 8, "SLAB_FILES": 5000}


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def capture(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> VmcoreResult:
    out = tmp_path_factory.mktemp(f"lab-{request.param}")
    result = make_vmcore(
        kernel=request.param, memory_mb=512, workload=WORKLOAD, out_dir=out, use_cache=False
    )
    assert not result.cached
    return result


def test_the_log_shows_this_panic(capture: VmcoreResult, capfdbinary) -> None:
    assert main(["dmesg", "--caller-id", str(capture.vmcore)]) == 0
    log = capfdbinary.readouterr().out
    assert b"sysrq: Trigger a crash" in log
    assert b"Comm: crashlab-panic" in log  # the task the lab named before panicking
    reference = capture.out_dir / "makedumpfile-dmesg.txt"
    result = oracles.makedumpfile_new("--dump-dmesg", capture.vmcore, reference)
    assert result.returncode == 0, result.stdout + result.stderr
    assert log == reference.read_bytes()


def test_info_describes_the_guest(capture: VmcoreResult, capsys) -> None:
    assert main(["info", "--json", str(capture.vmcore)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["release"] == capture.kernel_release
    assert facts["cpus"] == readelf_prstatus_count(capture.vmcore)
    assert facts["page_size"] == 4096
    assert facts["ram_pages"] == len(ram_pfns_from_headers(capture.vmcore, 4096))
    assert 300 << 8 < facts["ram_pages"] < 512 << 8  # 512 MiB less the crashkernel area


def _patterns_kept(vmcore: Vmcore, level: DumpLevel) -> Counter[str]:
    kept: Counter[str] = Counter()
    for start, end in filter_pages(vmcore, level).bitmap2.runs():
        for first in range(start, end, 256):
            last = min(end, first + 256)
            chunk = vmcore.read_phys(first * 4096, (last - first) * 4096)
            for offset in range(0, len(chunk), 4096):
                match = PATTERN.match(chunk, offset)
                if match:
                    kept[match.group(1).decode()] += 1
    return kept


def test_the_filter_drops_the_workload(capture: VmcoreResult) -> None:
    """Dump level 0 keeps every patterned page the guest made; 31 keeps none.

    Anonymous memory is user data, tmpfs and ext4 pages are page cache, and
    stale copies of either lie in free pages: nothing of it may stay.
    """
    contents = json.loads(capture.workload_json.read_text())["contents"]
    with Vmcore(str(capture.vmcore)) as vmcore:
        everything = _patterns_kept(vmcore, DumpLevel(0))
        assert everything["ANON"] >= contents["anon"]["pages"]
        assert everything["CACHE"] >= contents["page_cache"]["pages"]
        assert everything["SHM"] >= contents["shmem"]["pages"]
        assert _patterns_kept(vmcore, DumpLevel(31)) == Counter()
        user_only = _patterns_kept(vmcore, DumpLevel.USER)
        assert user_only["CACHE"] >= contents["page_cache"]["pages"]
        assert user_only["ANON"] < everything["ANON"] - contents["anon"]["pages"] + 64


SPECIAL = {"HUGETLB_PAGES": 8, "HWPOISON_PAGES": 16, "THP": "always", "SLAB_FILES": 30000}


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_hugetlb_hwpoison_and_slab_as_makedumpfile(kernel: str, tmp_path) -> None:
    """Hugetlb and transparent huge pages, poisoned pages, heavy slab: the
    dump is byte for byte makedumpfile 1.7.8's at the levels that touch them."""
    result = make_vmcore(kernel=kernel, memory_mb=768, workload=SPECIAL)
    contents = json.loads(result.workload_json.read_text())["contents"]
    assert contents["hwpoison"]["pages"] == 16 and contents["hugetlb"]["pages"] > 0
    for level in ("0", "8", "31"):
        theirs, mine = tmp_path / f"theirs-{level}", tmp_path / f"ours-{level}"
        run = oracles.makedumpfile_new("-l", "-d", level, result.vmcore, theirs)
        assert run.returncode == 0, run.stdout + run.stderr
        assert main(["dump", "-l", "-d", level, str(result.vmcore), str(mine)]) == 0
        assert mine.read_bytes() == theirs.read_bytes(), f"-d {level}"


def test_a_hanging_run_ends_at_its_timeout(tmp_path) -> None:
    """No guest finishes in 5 s: the lab says where it stopped and leaves no QEMU."""
    before = _qemu_processes()
    with pytest.raises(LabError, match=r"timed out after 5s"):
        make_vmcore(
            kernel="6.1",
            memory_mb=512,
            workload=WORKLOAD,
            out_dir=tmp_path,
            timeout=5,
            use_cache=False,
        )
    assert _qemu_processes() <= before


def _qemu_processes() -> set[int]:
    found = set()
    for status in Path("/proc").glob("[0-9]*/comm"):
        try:
            if status.read_text().startswith("qemu-system"):
                found.add(int(status.parent.name))
        except OSError:
            continue
    return found
