"""The run's deadline and the stall watchdog: a dump is ended, marked
INCOMPLETE, and the run goes on to its action."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from capture.agent.config import Action
from capture.agent.targets.local import LocalDumpFile
from capture.agent.watchdog import Deadline, TimeUp, WatchedFile
from tests.agentrun import capture, only_dump_dir, write_config
from tests.realcores import core_61


class _SlowFile:
    seekable = True

    def __init__(self, seconds: float) -> None:
        self.seconds, self.writes = seconds, 0

    def write_at(self, offset: int, data: bytes) -> None:
        time.sleep(self.seconds)  # interrupted by SIGALRM: the handler raises
        self.writes += 1


def test_a_stalled_write_is_ended() -> None:
    file = _SlowFile(5)
    watched = WatchedFile(file, Deadline(0), stall_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(TimeUp, match=r"no progress for 0\.2 s"):
        watched.write_at(0, b"x")
    assert time.monotonic() - started < 2
    file.seconds = 0
    watched.write_at(0, b"x")  # after the end, writes pass (the metadata)
    assert file.writes == 1 and watched.ended


def test_the_deadline_ends_the_next_write() -> None:
    now = [100.0]
    watched = WatchedFile(_SlowFile(0), Deadline(10, clock=lambda: now[0]), stall_seconds=0)
    watched.write_at(0, b"x")
    now[0] = 111.0
    with pytest.raises(TimeUp, match="deadline"):
        watched.write_at(0, b"x")


def test_a_run_past_its_deadline_keeps_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kdump_capture_deadline 2 on a disk that takes 0.1 s a write: the dump
    stops, stays vmcore-incomplete with an INCOMPLETE header, and the failure
    action follows, as Fedora's after a failed makedumpfile (the log was saved)."""
    write = LocalDumpFile.write_at

    def slow(self: LocalDumpFile, offset: int, data: bytes) -> None:
        time.sleep(0.1)
        write(self, offset, data)

    monkeypatch.setattr(LocalDumpFile, "write_at", slow)
    lines = ("kdump_capture_deadline 2\nfinal_action halt\nfailure_action poweroff\n"
             "core_collector makedumpfile -c -d 0\n")  # fmt: skip
    config = write_config(tmp_path, lines)
    started = time.monotonic()
    result = capture(tmp_path, config, core_61().vmcore)
    assert time.monotonic() - started < 20
    assert (result.status, result.action) == (3, Action.POWEROFF)
    directory = only_dump_dir(tmp_path / "sysroot/var/crash")
    header = (directory / "vmcore-incomplete").read_bytes()[:512]
    assert int.from_bytes(header[424:428], "little") & 0x8
    manifest = json.loads((directory / "manifest.json").read_text())
    assert any("deadline" in note for note in manifest["notes"])
    assert not (directory / "vmcore").exists()


def test_test_mode_directory_and_status(tmp_path: Path) -> None:
    """kdump_test_id= on the command line: kdump-test-<id>, and its status file."""
    config = write_config(tmp_path, "core_collector makedumpfile -l -d 31\n")
    result = capture(tmp_path, config, core_61().vmcore,
                     cmdline="quiet kdump_test_id=1733080000-42/../x")  # fmt: skip
    directory = Path(result.dump_dir or "")
    assert directory.name == "kdump-test-1733080000-42..x"
    assert (directory / "vmcore-creation.status").read_text() == "success 1733080000-42..x\n"
    assert (directory / "vmcore").exists()
