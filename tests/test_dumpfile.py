"""Engine II's dump files, checked against makedumpfile and read back.

Debian 12's makedumpfile 1.7.2 classifies 6.1 kernels exactly as 1.7.9 does,
so on the 6.1 vmcore its output is the reference byte for byte. Every file is
also read back page by page and compared with the vmcore.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from capture.cli import main
from capture.dumpfile.reader import open_dump
from capture.errors import NoDataError
from capture.filter import DumpLevel, filter_pages
from capture.vmcore import Vmcore
from tests.realcores import (
    LABELS,
    RealCore,
    core_61,
    kernel_segment_pages,
    makedumpfile_counts,
)


def makedumpfile(*args: str) -> None:
    subprocess.run(["makedumpfile", *args], check=True, capture_output=True)


def dump(*args: str) -> int:
    return main(["dump", *args])


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (["-c", "-d", "31"], ["-c", "-d", "31"]),
        (["-l", "-d", "31"], ["-l", "-d", "31"]),
        (["-l", "-d", "1"], ["-l", "-d", "1"]),
        (["--compress", "none", "-d", "16"], ["-d", "16"]),
        (["-E", "-d", "31"], ["-E", "-d", "31"]),
        (["-E", "-d", "1"], ["-E", "-d", "1"]),
    ],
    ids=["zlib-31", "lzo-31", "lzo-1", "none-16", "elf-31", "elf-1"],
)
def test_identical_to_makedumpfile(tmp_path: Path, ours: list[str], theirs: list[str]) -> None:
    vmcore = str(core_61().vmcore)
    makedumpfile(*theirs, vmcore, str(tmp_path / "theirs"))
    assert dump(*ours, vmcore, str(tmp_path / "ours")) == 0
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "theirs").read_bytes()


@pytest.mark.parametrize("codec", ["-l", "-c", "-z", "-p"])
def test_threads_write_the_same_file(tmp_path: Path, codec: str) -> None:
    """Slices compressed at once on other threads land in pfn order, as on one."""
    vmcore = str(core_61().vmcore)
    assert dump(codec, "-d", "1", vmcore, str(tmp_path / "one")) == 0
    assert dump(codec, "--num-threads", "3", "-d", "1", vmcore, str(tmp_path / "three")) == 0
    assert (tmp_path / "three").read_bytes() == (tmp_path / "one").read_bytes()


@pytest.mark.parametrize(("codec", "pooled"), [("-p", False), ("-z", True)])
def test_threads_only_for_codecs_that_release_the_gil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codec: str, pooled: bool
) -> None:
    """cramjam's snappy holds the GIL page by page: workers would only wait
    on each other, so a snappy dump asked for threads runs on one."""
    from capture.dumpfile import workers

    made: list[int] = []

    class CountedPool(workers.CompressorPool):
        def __init__(self, *args: object, **kwargs: object) -> None:
            made.append(1)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(workers, "CompressorPool", CountedPool)
    vmcore = str(core_61().vmcore)
    assert dump(codec, "--num-threads", "2", "-d", "31", vmcore, str(tmp_path / "out")) == 0
    assert bool(made) == pooled


@pytest.mark.parametrize("form", [["-l"], ["-E"]], ids=["kdump", "elf"])
def test_makedumpfile_rebuilds_our_flattened_stream(tmp_path: Path, form: list[str]) -> None:
    vmcore = str(core_61().vmcore)
    assert dump(*form, "-d", "31", vmcore, str(tmp_path / "regular")) == 0
    assert dump(*form, "-F", "-d", "31", vmcore, str(tmp_path / "flat")) == 0
    with (tmp_path / "flat").open("rb") as stream:
        subprocess.run(
            ["makedumpfile", "-R", str(tmp_path / "rebuilt")], stdin=stream, check=True,
            capture_output=True,
        )  # fmt: skip
    assert (tmp_path / "rebuilt").read_bytes() == (tmp_path / "regular").read_bytes()


def test_we_rebuild_makedumpfile_flattened_stream(tmp_path: Path) -> None:
    vmcore = str(core_61().vmcore)
    makedumpfile("-l", "-d", "31", vmcore, str(tmp_path / "regular"))
    with (tmp_path / "flat").open("wb") as stream:
        subprocess.run(["makedumpfile", "-F", "-l", "-d", "31", vmcore], stdout=stream, check=True)
    assert main(["rebuild", str(tmp_path / "flat"), str(tmp_path / "rebuilt")]) == 0
    assert (tmp_path / "rebuilt").read_bytes() == (tmp_path / "regular").read_bytes()


def _assert_pages_match(dump_path: Path, vmcore_path: Path, level: DumpLevel) -> int:
    """Every page the dump holds equals the vmcore's; returns how many there are."""
    checked = 0
    with Vmcore(str(vmcore_path)) as source, open_dump(str(dump_path)) as dumped:
        expected = filter_pages(source, level).bitmap2
        for start, end in expected.runs():
            for pfn in range(start, end):
                try:
                    page = dumped.read_phys(pfn * 4096, 4096)
                except NoDataError:
                    # Only zero pages may be missing (ELF drops them).
                    assert level & DumpLevel.ZERO
                    assert source.read_phys(pfn * 4096, 4096) == bytes(4096)
                    continue
                assert page == source.read_phys(pfn * 4096, 4096), hex(pfn)
                checked += 1
    return checked


@pytest.mark.parametrize("codec", ["zstd", "zlib", "lzo", "snappy", "none"])
def test_every_codec_reads_back(real_core: RealCore, tmp_path: Path, codec: str) -> None:
    output = tmp_path / "dump"
    assert dump("--compress", codec, "-d", "31", str(real_core.vmcore), str(output)) == 0
    assert _assert_pages_match(output, real_core.vmcore, DumpLevel(31)) > 10_000
    status = struct.unpack_from("<I", output.read_bytes(), 424)[0]
    assert status == {"zlib": 1, "lzo": 2, "snappy": 4, "zstd": 0x20, "none": 0}[codec]


@pytest.mark.parametrize("form", [["-E"], ["-F", "-z"]], ids=["elf", "flattened"])
def test_other_forms_read_back(real_core: RealCore, tmp_path: Path, form: list[str]) -> None:
    output = tmp_path / "dump"
    assert dump(*form, "-d", "31", str(real_core.vmcore), str(output)) == 0
    assert _assert_pages_match(output, real_core.vmcore, DumpLevel(31)) > 10_000


def test_info_and_dmesg_read_our_dumps(real_core: RealCore, tmp_path: Path, capfdbinary) -> None:
    output = tmp_path / "dump"
    assert dump("-d", "31", str(real_core.vmcore), str(output)) == 0
    capfdbinary.readouterr()
    assert main(["dmesg", str(output)]) == 0
    expected = (real_core.reference / "vmcore-dmesg.txt").read_bytes()
    assert capfdbinary.readouterr().out == expected
    assert main(["info", "--json", str(output)]) == 0
    facts = json.loads(capfdbinary.readouterr().out)
    assert facts["release"] == real_core.release
    assert facts["memory_model"] == "sparsemem_vmemmap"


@pytest.mark.parametrize("level", [1, 31])
def test_report_json(real_core: RealCore, tmp_path: Path, level: int) -> None:
    report = tmp_path / "report.json"
    output = tmp_path / "dump"
    assert dump("-d", str(level), "--report", str(report), str(real_core.vmcore), str(output)) == 0
    facts = json.loads(report.read_text())
    expected = makedumpfile_counts(real_core, level)
    pages = facts["pages"]
    assert {key: pages[key] for key in LABELS} == {key: expected[key] for key in LABELS}
    assert pages["zero"] == expected["zero"]
    with Vmcore(str(real_core.vmcore)) as vmcore:
        double_counted = kernel_segment_pages(vmcore)
        assert pages["ram"] == sum(end - start for start, end in vmcore.ram_ranges())
    assert pages["dumped"] == expected["remaining"] - double_counted
    assert facts["dump_level"] == level
    assert (facts["format"], facts["flattened"], facts["codec"]) == ("kdump", False, "zstd")
    assert facts["bytes_written"] == output.stat().st_size
    assert facts["seconds"] > 0


def test_flattened_to_stdout(tmp_path: Path) -> None:
    vmcore = str(core_61().vmcore)
    with (tmp_path / "flat").open("wb") as stream:
        result = subprocess.run(
            [sys.executable, "-m", "capture", "dump", "-F", "-l", vmcore, "-"],
            stdout=stream, stderr=subprocess.PIPE, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert dump("-l", vmcore, str(tmp_path / "regular")) == 0
    assert main(["rebuild", str(tmp_path / "flat"), str(tmp_path / "rebuilt")]) == 0
    assert (tmp_path / "rebuilt").read_bytes() == (tmp_path / "regular").read_bytes()


@pytest.mark.parametrize(
    "argv",
    [
        ["-E", "-c"],
        ["-c", "-l"],
        ["-d", "32"],
        ["-d", "x"],
        ["--compress", "lz4"],
        ["--num-threads", "-1"],
        ["--num-threads", "x"],
    ],
)
def test_usage_errors(tmp_path: Path, argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "capture", "dump", *argv, "vmcore", str(tmp_path / "out")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def run_dump(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "capture", "dump", *argv],
                          capture_output=True, text=True, check=False)  # fmt: skip


@pytest.mark.parametrize("form", [["-l"], ["-E"]], ids=["kdump", "elf"])
def test_a_vmcore_with_pages_missing_gives_an_incomplete_dump(
    tmp_path: Path, form: list[str]
) -> None:
    """Its first MiB only: exit 3, INCOMPLETE in the header, the warning
    once and before the summary, the reason last."""
    truncated, output = tmp_path / "first-mib", tmp_path / "dump"
    with core_61().vmcore.open("rb") as full:
        truncated.write_bytes(full.read(1 << 20))
    result = run_dump(*form, "-d", "31", str(truncated), str(output))
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    [missing] = [at for at, line in enumerate(lines) if "are not in the file" in line]
    assert lines[missing].startswith("WARNING: ")  # shown as ever, logging imported for it
    assert missing < lines.index(next(line for line in lines if line.startswith("Original pages")))
    assert sum("no page is classified" in line for line in lines) == 1
    assert lines[-1] == (
        f"error: {output}: the dump is INCOMPLETE (pages are missing from the vmcore)"
    )
    header = output.read_bytes()[:4096]
    if form == ["-E"]:
        assert struct.unpack_from("<I", header, 48)[0] & 1  # e_flags: DUMP_ELF_INCOMPLETE
    else:
        assert struct.unpack_from("<I", header, 424)[0] & 0x8  # status: INCOMPLETE


@pytest.mark.parametrize("where", ["missing-dir", "a-directory"])
def test_outputs_are_checked_before_the_dump(tmp_path: Path, where: str) -> None:
    vmcore, output = str(core_61().vmcore), tmp_path / "dump"
    bad = tmp_path / "nodir" / "file" if where == "missing-dir" else tmp_path
    problem = "No such file or directory" if where == "missing-dir" else "Is a directory"
    result = run_dump("-l", str(vmcore), str(bad))
    assert (result.returncode, result.stderr) == (1, f"error: {bad}: {problem}\n")
    result = run_dump("-l", "--report", str(bad), str(vmcore), str(output))
    assert (result.returncode, result.stderr) == (1, f"error: {bad}: {problem}\n")
    assert not output.exists()  # failed before the work, not after it


def test_dump_of_a_kdump_file_says_it_needs_an_elf_vmcore(tmp_path: Path) -> None:
    vmcore, kdump, flat = str(core_61().vmcore), tmp_path / "kdump", tmp_path / "flat"
    makedumpfile("-l", "-d", "31", vmcore, str(kdump))
    assert dump("-F", "-l", "-d", "31", vmcore, str(flat)) == 0
    for path, form in ((kdump, "a kdump-compressed dump"), (flat, "a flattened dump")):
        result = run_dump("-l", str(path), str(tmp_path / "out"))
        assert result.returncode == 1
        assert result.stderr.startswith(f"error: {path}: {form}, not an ELF vmcore: ")
        assert len(result.stderr.splitlines()) == 1
        assert not (tmp_path / "out").exists()


def test_truncated_vmcore_dumps_what_exists(tmp_path: Path) -> None:
    source = core_61().vmcore
    truncated = tmp_path / "truncated"
    with source.open("rb") as full, truncated.open("wb") as cut:
        shutil.copyfileobj(full, cut)
        cut.truncate(source.stat().st_size * 3 // 4)
    output = tmp_path / "dump"
    report = tmp_path / "report.json"
    assert dump("-d", "31", "--report", str(report), str(truncated), str(output)) == 3
    facts = json.loads(report.read_text())
    assert facts["incomplete"] and "are not in the file" in facts["problems"][-1]
    with open_dump(str(output)) as dumped, Vmcore(str(truncated)) as vmcore:
        kept = list(dumped.core.bitmap2.runs())  # type: ignore[attr-defined]
        assert kept
        for start, _end in kept[:50]:
            assert dumped.read_phys(start * 4096, 4096) == vmcore.read_phys(start * 4096, 4096)


@pytest.mark.parametrize("level", ["1", "31"])
def test_threads_salvage_a_truncated_vmcore_as_one_thread_does(tmp_path: Path, level: str) -> None:
    """With threads the workers read the pages, and a read that fails falls
    back to page by page there: the pages missing are dropped from bitmap2 in
    order, so the file is the one-thread file."""
    source = core_61().vmcore
    truncated = tmp_path / "truncated"
    with source.open("rb") as full, truncated.open("wb") as cut:
        shutil.copyfileobj(full, cut)
        cut.truncate(source.stat().st_size * 3 // 4 + 4096 * 3 + 100)  # mid-page
    one, two = tmp_path / "one", tmp_path / "two"
    assert dump("-z", "-d", level, str(truncated), str(one)) == 3
    assert dump("-z", "-d", level, "--num-threads", "2", str(truncated), str(two)) == 3
    assert two.read_bytes() == one.read_bytes()


def test_truncated_vmcore_elf_dump_keeps_what_exists(tmp_path: Path) -> None:
    """The ELF writer copies in the kernel where it can; where the file ends
    early it falls back to reading, and the missing pages become zeros."""
    source = core_61().vmcore
    truncated = tmp_path / "truncated"
    with source.open("rb") as full, truncated.open("wb") as cut:
        shutil.copyfileobj(full, cut)
        cut.truncate(source.stat().st_size * 3 // 4)
    output, report = tmp_path / "dump", tmp_path / "report.json"
    assert dump("-E", "-d", "31", "--report", str(report), str(truncated), str(output)) == 3
    facts = json.loads(report.read_text())
    assert facts["incomplete"] and "are not in the file" in facts["problems"][-1]
    with open_dump(str(output)) as dumped, Vmcore(str(truncated)) as vmcore:
        present = missing = 0
        for segment in dumped.core.segments:
            for paddr in range(segment.paddr, segment.paddr + segment.filesz, 4096 * 97):
                page = dumped.read_phys(paddr, 4096)
                if vmcore.core.has_phys(paddr, 4096):
                    assert page == vmcore.read_phys(paddr, 4096)
                    present += 1
                else:
                    assert page == bytes(4096)
                    missing += 1
        assert present and missing


@pytest.mark.parametrize(
    "form", [["-l"], ["-l", "--num-threads", "2"], ["-E"]], ids=["kdump", "threads", "elf"]
)
def test_mmap_windows_read_the_same_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: list[str]
) -> None:
    """/proc/vmcore is read through mmap windows and a saved file with pread:
    the windows, which only a crash kernel uses, must give the same file."""
    from capture.vmcore import elfcore, filewindows

    vmcore = str(core_61().vmcore)
    assert dump(*form, "-d", "1", vmcore, str(tmp_path / "pread")) == 0

    mapped_windows = []

    class Mapped(filewindows.FileWindows):
        def __init__(self, fd: int, size: int, use_mmap: bool = False) -> None:
            super().__init__(fd, size, use_mmap=True)

        def _window(self, base: int) -> mmap.mmap | None:
            window = super()._window(base)
            mapped_windows.append(window is not None)
            return window

    monkeypatch.setattr(elfcore, "FileWindows", Mapped)
    monkeypatch.setattr(elfcore.ElfCore, "file_span", lambda self, paddr, size: None)
    assert dump(*form, "-d", "1", vmcore, str(tmp_path / "mapped")) == 0
    assert mapped_windows and all(mapped_windows)
    assert (tmp_path / "mapped").read_bytes() == (tmp_path / "pread").read_bytes()


def test_each_thread_reads_through_windows_of_its_own(tmp_path: Path) -> None:
    """The dump's workers read at once: another thread's reads must never
    unmap the window this one is copying from."""
    from capture.vmcore.filewindows import WINDOWS_KEPT, FileWindows

    window_size = mmap.ALLOCATIONGRANULARITY
    data = bytes(range(256)) * (window_size * (WINDOWS_KEPT + 2) // 256)
    path = tmp_path / "file"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    windows = FileWindows(fd, len(data), window_size=window_size)
    try:
        assert windows.read(10, 20) == data[10:30]
        mine = windows._window(0)
        assert mine is not None

        read_there = []

        def read_every_window() -> None:
            for at in range(0, len(data), window_size):
                read_there.append(windows.read(at, 7) == data[at : at + 7])

        other = threading.Thread(target=read_every_window)
        other.start()
        other.join()
        assert read_there == [True] * (WINDOWS_KEPT + 2)
        assert not mine.closed
        assert windows._window(0) is mine
        assert windows.read(5, 3) == data[5:8]
    finally:
        windows.close()
        os.close(fd)
    assert mine.closed
