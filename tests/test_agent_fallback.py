"""Ordered fallback (``kdump_capture_fallback``) on real targets and real vmcores.

Real ext4 filesystems on loop devices, found by LABEL as the capture kernel
finds them: a LABEL that no device has (unreachable), a 20 MB one that fills
up in the middle of the dump, a 320 MB one that takes it whole. The checks
are a user's: which target holds Fedora's files, that nothing partial is
named complete, that the dump is makedumpfile's, what the manifest says
about each attempt, what the hooks were told.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capture.agent.config import Action
from capture.agent.targets.local import LocalTarget
from capture.cli import main
from tests.agentrun import (
    DIR_NAME,
    capture,
    check_files_against_references,
    hook,
    loop_filesystem,
    mounted,
    only_dump_dir,
    write_config,
)
from tests.realcores import RealCore, core_61, shared_cores

COLLECTOR = "core_collector makedumpfile -l --message-level 7 -d 31\n"


def manifest_of(directory: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((directory / "manifest.json").read_text())
    return manifest


def place(tmp_path: Path, name: str) -> Path:
    """A folder of its own for a loop filesystem's image (named after its type)."""
    folder = tmp_path / name
    folder.mkdir()
    return folder


@contextlib.contextmanager
def dump_dir_on(device: str, tmp_path: Path) -> Iterator[Path]:
    with mounted(device, tmp_path) as root:
        yield only_dump_dir(root / "var/crash")


def test_unreachable_target_then_the_next_takes_the_dump(tmp_path: Path) -> None:
    """A LABEL no device has: waited for (bounded), recorded as unreachable
    with why, and the dump lands whole on the next target; the hooks are told
    which target got it."""
    core = core_61()
    seen = tmp_path / "hook-saw"
    post = hook(tmp_path, "post.sh", f'echo "$1 $KDUMP_CAPTURE_TARGET" > {seen}\n')
    with loop_filesystem(tmp_path, "ext4", 320) as (device, label, _uuid):
        config = write_config(tmp_path, (
            "ext4 LABEL=kdc-no-such-label\n"
            f"kdump_capture_fallback ext4 LABEL={label}\n"
            f"{COLLECTOR}kdump_post {post}\nfailure_action poweroff\nfinal_action halt\n"
        ))  # fmt: skip
        waits: list[float] = []
        result = capture(tmp_path, config, core.vmcore, sleep=waits.append)
        assert (result.status, result.action) == (0, Action.HALT)
        assert 80 <= sum(waits) <= 95  # the missing device's bounded wait, once
        assert seen.read_text() == f"0 local:ext4 LABEL={label} at /var/crash\n"
        with dump_dir_on(device, tmp_path) as directory:
            assert DIR_NAME.match(directory.name)
            names = sorted(path.name for path in directory.iterdir())
            assert names == ["kexec-dmesg.log", "manifest.json", "vmcore", "vmcore-dmesg.txt"]
            check_files_against_references(tmp_path, core, directory)
            manifest = manifest_of(directory)
    first, second = manifest["attempts"]
    assert first["target"] == {
        "kind": "local",
        "where": "ext4 LABEL=kdc-no-such-label at /var/crash",
    }
    assert (first["outcome"], first["dump_dir"]) == ("unreachable", None)
    assert "no such block device" in first["why"]
    assert second["outcome"] == "dump saved" and second["why"] is None
    assert second["dump_dir"].endswith(directory.name)
    assert manifest["status"] == "complete"
    assert manifest["target"] == {"kind": "local", "where": f"ext4 LABEL={label} at /var/crash"}


def test_target_that_fills_up_mid_dump_then_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kdump-capture run --no-action`: the first filesystem (20 MB, free
    space unknown as on some network filesystems) fills up during the dump;
    it keeps the log and vmcore-incomplete (marked INCOMPLETE, never named
    vmcore), and the dump is written again, whole, on the second."""
    core = core_61()
    monkeypatch.setattr(LocalTarget, "free_bytes", lambda self: None)
    with loop_filesystem(place(tmp_path, "a"), "ext4", 20) as (small, small_label, _1), \
            loop_filesystem(place(tmp_path, "b"), "ext4", 320) as (big, big_label, _2):  # fmt: skip
        config = write_config(tmp_path, (
            f"ext4 LABEL={small_label}\nkdump_capture_fallback ext4 LABEL={big_label}\n"
            f"{COLLECTOR}failure_action poweroff\nfinal_action halt\n"
        ))  # fmt: skip
        status = main(["run", "--no-action", "--config", str(config), "--vmcore",
                       str(core.vmcore), "--mount-root", str(tmp_path / "kdumproot"),
                       "--kdump-dir", str(tmp_path / "none")])  # fmt: skip
        assert status == 0
        assert "action: halt (not taken: --no-action)" in capsys.readouterr().out
        with dump_dir_on(small, tmp_path) as directory:
            names = sorted(path.name for path in directory.iterdir())
            on_small = manifest_of(directory)
            header = (directory / "vmcore-incomplete").read_bytes()[:512]
        with dump_dir_on(big, tmp_path) as directory:
            check_files_against_references(tmp_path, core, directory)
            on_big = manifest_of(directory)
    assert names == ["kexec-dmesg.log", "manifest.json", "vmcore-dmesg.txt", "vmcore-incomplete"]
    assert int.from_bytes(header[424:428], "little") & 0x8  # the header says INCOMPLETE
    assert on_small["files"]["vmcore-incomplete"]["status"] == "incomplete"
    assert "vmcore" not in on_small["files"]
    for manifest in (on_small, on_big):  # the same run, told in both places
        assert manifest["status"] == "complete" and manifest["action"] == "halt"
        outcomes = [(attempt["outcome"], attempt["why"]) for attempt in manifest["attempts"]]
        assert outcomes == [("dump failed", "the target ran out of space"), ("dump saved", None)]


def test_the_log_goes_to_every_target_reached(tmp_path: Path) -> None:
    """The dump on the first target; the second gets the log (and the
    manifest saying where the dump is); a third, unreachable, is tried once
    without waiting."""
    core = core_61()
    with loop_filesystem(tmp_path, "ext4", 320) as (first, first_label, _u1), \
            loop_filesystem(tmp_path, "xfs", 320) as (second, second_label, _u2):  # fmt: skip
        config = write_config(tmp_path, (
            f"ext4 LABEL={first_label}\nkdump_capture_fallback xfs LABEL={second_label}\n"
            "kdump_capture_fallback ext4 LABEL=kdc-no-such-label\n"
            f"{COLLECTOR}"
        ))  # fmt: skip
        waits: list[float] = []
        result = capture(tmp_path, config, core.vmcore, sleep=waits.append)
        assert (result.status, result.action) == (0, Action.REBOOT)
        assert waits == []  # nothing was waited for: the dump was saved first
        with dump_dir_on(first, tmp_path) as directory:
            check_files_against_references(tmp_path, core, directory)
            dump_dir = directory.name
        with dump_dir_on(second, tmp_path) as directory:
            names = sorted(path.name for path in directory.iterdir())
            log_only = manifest_of(directory)
            kernel_log = (directory / "vmcore-dmesg.txt").read_bytes()
    assert names == ["kexec-dmesg.log", "manifest.json", "vmcore-dmesg.txt"]
    assert kernel_log == (tmp_path / "dmesg.txt").read_bytes()  # makedumpfile's, made above
    assert set(log_only["files"]) == {"vmcore-dmesg.txt"}
    saved, logged, missing = log_only["attempts"]
    assert saved["outcome"] == "dump saved" and saved["dump_dir"].endswith(dump_dir)
    assert logged["outcome"] == "log saved"
    assert missing["outcome"] == "unreachable" and "no such block device" in missing["why"]


def test_nothing_reachable_ends_in_the_failure_action(tmp_path: Path) -> None:
    config = write_config(tmp_path, (
        "ext4 LABEL=kdc-no-such-label\nkdump_capture_fallback xfs LABEL=kdc-no-such-either\n"
        "failure_action poweroff\nfinal_action halt\n"
    ))  # fmt: skip
    waits: list[float] = []
    result = capture(tmp_path, config, core_61().vmcore, sleep=waits.append)
    assert (result.status, result.action, result.dump_dir) == (1, Action.POWEROFF, None)
    assert 160 <= sum(waits) <= 190  # each target waited for, once


def test_every_real_vmcore_falls_back(tmp_path: Path) -> None:
    """Every real vmcore: the first target unreachable, the dump on the next."""
    cores: list[RealCore] = shared_cores()
    with loop_filesystem(tmp_path, "ext4", 320) as (device, label, _uuid):
        for core in cores:
            config = write_config(tmp_path, (
                f"ext4 LABEL=kdc-no-such-label\nkdump_capture_fallback ext4 LABEL={label}\n"
                "core_collector makedumpfile -z -d 31\nkdump_capture_keep_dumps 1\n"
            ))  # fmt: skip
            result = capture(tmp_path, config, core.vmcore, sleep=lambda seconds: None)
            assert result.status == 0, core.name
            with dump_dir_on(device, tmp_path) as directory:
                manifest = manifest_of(directory)
                assert manifest["kernel"] == core.release
                assert [a["outcome"] for a in manifest["attempts"]] == ["unreachable", "dump saved"]
                assert (directory / "vmcore").stat().st_size > 1 << 20
