"""A dump onto a filesystem that fills up: exit 3, marked INCOMPLETE, nothing
written before the end is lost. Uses a real ext4 on a loop device."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.dumpfile.reader import open_dump
from capture.errors import NoDataError
from capture.vmcore import Vmcore
from tests.crashcheck import crash_sees_incomplete, cut_between
from tests.realcores import core_61


@contextlib.contextmanager
def small_ext4(tmp_path: Path, megabytes: int, free: int | None = None) -> Iterator[Path]:
    """A fresh ext4 of ``megabytes`` MiB, mounted; with ``free``, a filler file
    leaves that many bytes for what is written next."""
    image, mountpoint = tmp_path / "fs.img", tmp_path / "mnt"
    mountpoint.mkdir()
    with image.open("wb") as file:
        file.truncate(megabytes << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        if free is not None:
            fs = os.statvfs(mountpoint)
            spare = fs.f_bfree * fs.f_frsize - free  # bfree: root may use the reserve
            with (mountpoint / "filler").open("wb") as filler:
                os.posix_fallocate(filler.fileno(), 0, spare)
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


def room_for_most(tmp_path: Path, form: list[str]) -> int | None:
    """For a kdump dump, the free space that cuts it after the pages crash
    needs to start (wherever boot placed them); None for ELF, and where no
    such cut exists (then a fixed size, known to cut the shared fixture's
    dump in its last descriptors)."""
    if form == ["-E"]:
        return None
    whole = tmp_path / "whole"
    assert run_dump(*form, "-d", "31", str(core_61().vmcore), str(whole)).returncode == 0
    room = cut_between(whole, core_61().vmcore)
    whole.unlink()
    return room


@pytest.mark.parametrize(
    "form", [["-z"], ["-z", "--cyclic-buffer", "4"], ["-E"]], ids=["kdump", "kdump-cyclic", "elf"]
)
def test_full_filesystem(tmp_path: Path, form: list[str]) -> None:
    """The kdump case fills up near the end, as a nearly full disk would;
    crash must still open what was written."""
    vmcore = core_61().vmcore
    room = room_for_most(tmp_path, form)
    megabytes = (12 if form == ["-E"] else 20) if room is None else (room >> 20) + 32
    with small_ext4(tmp_path, megabytes, room) as mountpoint:
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
