"""A dump onto a filesystem that fills up: exit 3, marked INCOMPLETE, nothing
written before the end is lost. Uses a real ext4 on a loop device."""

from __future__ import annotations

import contextlib
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.dumpfile.reader import open_dump
from capture.errors import NoDataError
from capture.vmcore import Vmcore
from tests.crashcheck import crash_sees_incomplete
from tests.realcores import core_61


@contextlib.contextmanager
def small_ext4(tmp_path: Path, megabytes: int) -> Iterator[Path]:
    image, mountpoint = tmp_path / "fs.img", tmp_path / "mnt"
    mountpoint.mkdir()
    with image.open("wb") as file:
        file.truncate(megabytes << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def run_dump(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capture", "dump", *argv],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("form", "megabytes"),
    [(["-z"], 20), (["-z", "--cyclic-buffer", "4"], 20), (["-E"], 12)],
    ids=["kdump", "kdump-cyclic", "elf"],
)
def test_full_filesystem(tmp_path: Path, form: list[str], megabytes: int) -> None:
    """The kdump case fills up near the end (an 18.5 MB dump on a 20 MB ext4),
    as a nearly full disk would; crash must still open what was written."""
    vmcore = core_61().vmcore
    with small_ext4(tmp_path, megabytes) as mountpoint:
        output = mountpoint / "vmcore"
        result = run_dump(*form, "-d", "31", str(vmcore), str(output))
        assert result.returncode == 3, result.stderr
        assert "INCOMPLETE" in result.stderr and "Traceback" not in result.stderr
        header = output.read_bytes()[:512]
        if form == ["-E"]:
            assert struct.unpack_from("<I", header, 48)[0] & 1  # e_flags: DUMP_ELF_INCOMPLETE
            return
        assert struct.unpack_from("<I", header, 424)[0] & 0x8  # status: INCOMPLETE
        intact = missing = 0
        with Vmcore(str(vmcore)) as source, open_dump(str(output)) as dumped:
            for start, end in dumped.core.bitmap2.runs():  # type: ignore[attr-defined]
                for pfn in range(start, end):
                    try:
                        page = dumped.read_phys(pfn * 4096, 4096)
                    except NoDataError as error:
                        assert "never written" in str(error)
                        missing += 1
                        continue
                    assert missing == 0, "a page after the cut was readable"
                    assert page == source.read_phys(pfn * 4096, 4096)
                    intact += 1
        assert intact > 10_000 and missing > 100
        crash_sees_incomplete(output, core_61().release)
