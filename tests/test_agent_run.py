"""`kdump-capture run`: the whole capture, on real filesystems and real vmcores.

Each test builds a real ext4 or xfs filesystem on a loop device, found by
its LABEL or UUID as the capture kernel finds it, runs the capture with
--no-action (or the run itself with a recording of the actions), and checks
what a user would: Fedora's names, modes, the dump against makedumpfile's,
the log against `kdump-capture dmesg`, the manifest against the files.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from capture.agent.actions import RecordingActions
from capture.agent.config import Action, load_config
from capture.agent.run import RunEnvironment, run_capture
from capture.cli import main
from tests.agentrun import (
    DIR_NAME,
    capture,
    check_files_against_references,
    hook,
    loop_filesystem,
    makedumpfile,
    mounted,
    only_dump_dir,
    write_config,
)
from tests.realcores import RealCore, core_61, shared_cores


@pytest.mark.parametrize(("fstype", "by"), [("ext4", "LABEL"), ("xfs", "UUID")])
def test_fedora_style_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              fstype: str, by: str) -> None:  # fmt: skip
    """The issue's check: Fedora's names to the character, 0600 files in a 0700
    directory, the log as `dmesg` writes it, the dump as makedumpfile writes
    it (crash opens it), the hook's $1, the manifest, the action."""
    core: RealCore = core_61()
    seen = tmp_path / "hook-saw"
    post = hook(tmp_path, "post.sh", f'echo "$1 $KDUMP_CAPTURE_STATUS" > {seen}\n')
    with loop_filesystem(tmp_path, fstype, 320) as (device, label, fs_uuid):
        name = label if by == "LABEL" else fs_uuid
        config = write_config(tmp_path, (
            f"{fstype} {by}={name}\n"
            "path /var/crash\n"
            "core_collector makedumpfile -l --message-level 7 -d 31\n"
            f"kdump_post {post}\n"
            "final_action poweroff\n"
        ))  # fmt: skip
        status = main(["run", "--no-action", "--config", str(config), "--vmcore",
                       str(core.vmcore), "--mount-root", str(tmp_path / "kdumproot"),
                       "--kdump-dir", str(tmp_path / "none")])  # fmt: skip
        assert status == 0
        assert "kdump-capture: action: poweroff (not taken: --no-action)" in capsys.readouterr().out
        assert seen.read_text() == "0 0\n"
        with mounted(device, tmp_path) as root:
            crash_dir = root / "var/crash"
            directory = only_dump_dir(crash_dir)
            assert DIR_NAME.match(directory.name), directory.name
            names = sorted(path.name for path in directory.iterdir())
            assert names == ["kexec-dmesg.log", "manifest.json", "vmcore", "vmcore-dmesg.txt"]
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
            assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in directory.iterdir())
            check_files_against_references(tmp_path, core, directory)
            manifest = json.loads((directory / "manifest.json").read_text())
            assert manifest["action"] == "poweroff" and manifest["status"] == "complete"
            run_log = (directory / "kexec-dmesg.log").read_text().splitlines()
            assert run_log[-1].endswith("kdump-capture: action: poweroff")


def test_root_filesystem_target_on_both_kernels(tmp_path: Path) -> None:
    """No target line: `path` under the sysroot; every real vmcore."""
    for index, core in enumerate(shared_cores()):
        sysroot = tmp_path / f"sysroot{index}"
        sysroot.mkdir()
        config = write_config(tmp_path, "path /var/crash\ncore_collector makedumpfile -z -d 31\n")
        result = capture(tmp_path, config, core.vmcore, sysroot=str(sysroot))
        assert (result.status, result.action) == (0, Action.REBOOT)
        directory = only_dump_dir(sysroot / "var/crash")
        assert (directory / "vmcore").stat().st_size > 1 << 20
        assert not list(directory.glob("*incomplete*"))


def test_target_too_small_saves_the_log_and_says_why(tmp_path: Path) -> None:
    core = core_61()
    with loop_filesystem(tmp_path, "ext4", 8) as (device, label, _uuid):
        lines = (f"ext4 LABEL={label}\ncore_collector makedumpfile -l -d 31\n"
                 "final_action halt\nfailure_action poweroff\n")  # fmt: skip
        config = write_config(tmp_path, lines)
        result = capture(tmp_path, config, core.vmcore)
        # The log saved, the dump not: a failure, as Fedora's (exit 3 says what was saved).
        assert (result.status, result.action) == (3, Action.POWEROFF)
        with mounted(device, tmp_path) as root:
            directory = only_dump_dir(root / "var/crash")
            names = sorted(path.name for path in directory.iterdir())
            manifest = json.loads((directory / "manifest.json").read_text())
    assert names == ["kexec-dmesg.log", "manifest.json", "vmcore-dmesg.txt"]
    assert manifest["status"] == "incomplete"
    assert any(note.startswith("step-down:") and "the log only" in note
               for note in manifest["notes"])  # fmt: skip


def test_target_that_fills_up_while_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free space unknown (as on some network filesystems): the disk fills,
    the dump stays vmcore-incomplete, marked INCOMPLETE, the log is whole."""
    from capture.agent.targets.local import LocalTarget

    monkeypatch.setattr(LocalTarget, "free_bytes", lambda self: None)
    with loop_filesystem(tmp_path, "ext4", 20) as (device, label, _uuid):
        config = write_config(
            tmp_path, f"ext4 LABEL={label}\ncore_collector makedumpfile -c -d 31\n"
        )
        result = capture(tmp_path, config, core_61().vmcore)
        with mounted(device, tmp_path) as root:
            directory = only_dump_dir(root / "var/crash")
            names = sorted(path.name for path in directory.iterdir())
            header = (directory / "vmcore-incomplete").read_bytes()[:512]
            manifest = json.loads((directory / "manifest.json").read_text())
    assert (result.status, result.action) == (3, Action.REBOOT)
    assert "vmcore" not in names and "vmcore-incomplete" in names
    assert int.from_bytes(header[424:428], "little") & 0x8  # status: INCOMPLETE
    assert manifest["files"]["vmcore-incomplete"]["status"] == "incomplete"


def test_device_that_never_appears(tmp_path: Path) -> None:
    config = write_config(tmp_path, "ext4 LABEL=no-such-label-kdc\nfailure_action poweroff\n"
                          "final_action halt\n")  # fmt: skip
    waits: list[float] = []
    result = capture(tmp_path, config, core_61().vmcore, sleep=waits.append)
    assert (result.status, result.action, result.dump_dir) == (1, Action.POWEROFF, None)
    assert 80 <= sum(waits) <= 95  # the bounded wait, then no more


def test_failing_kdump_pre_takes_the_final_action(tmp_path: Path) -> None:
    pre = hook(tmp_path, "pre.sh", "exit 7\n")
    config = write_config(
        tmp_path, f"kdump_pre {pre}\nfailure_action poweroff\nfinal_action halt\n"
    )
    result = capture(tmp_path, config, core_61().vmcore)
    assert (result.status, result.action, result.dump_dir) == (1, Action.HALT, None)
    assert not (tmp_path / "sysroot/var").exists()


def test_hung_and_broken_hooks_do_not_stop_the_capture(tmp_path: Path) -> None:
    post_d = tmp_path / "kdump.d" / "post.d"
    post_d.mkdir(parents=True)
    hook(post_d, "10-hang", "sleep 100\n")
    (post_d / "20-not-executable").write_text("#!/bin/sh\nexit 0\n")
    marker = tmp_path / "ran"
    hook(post_d, "30-after", f"touch {marker}\n")
    config = write_config(
        tmp_path, "kdump_capture_hook_timeout 1\ncore_collector makedumpfile -l -d 31\n"
    )
    result = capture(tmp_path, config, core_61().vmcore)
    assert (result.status, result.action) == (0, Action.REBOOT)
    assert marker.exists()
    run_log = (Path(result.dump_dir or "") / "kexec-dmesg.log").read_text()
    assert "10-hang" in run_log and "20-not-executable" in run_log


def test_corrupt_vmcore_ends_in_the_failure_action(tmp_path: Path) -> None:
    vmcore = tmp_path / "garbage"
    vmcore.write_bytes(os.urandom(1 << 16))
    config = write_config(tmp_path, "failure_action poweroff\n")
    result = capture(tmp_path, config, vmcore)
    assert (result.status, result.action) == (1, Action.POWEROFF)
    manifest = json.loads((Path(result.dump_dir or "") / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "vmcore" not in manifest["files"]


def test_an_exception_inside_our_own_run_still_ends_in_the_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug in kdump-capture")

    monkeypatch.setattr("capture.agent.run.estimate_dump", broken)
    config = write_config(tmp_path, "final_action halt\nfailure_action poweroff\n")
    result = capture(tmp_path, config, core_61().vmcore)
    directory = Path(result.dump_dir or "")
    # The log was saved first (exit 3), the dump not: the failure action.
    assert (result.status, result.action) == (3, Action.POWEROFF)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert any("a bug in kdump-capture" in note for note in manifest["notes"])
    assert (directory / "vmcore-dmesg.txt").exists()
    assert (directory / "kexec-dmesg.log").read_text().splitlines()[-1].endswith("action: poweroff")


def test_crash_loop_saves_the_log_only(tmp_path: Path) -> None:
    """Two dumps from the last hour already there: the third run saves the log."""
    config = write_config(
        tmp_path, "kdump_capture_crash_loop 2\ncore_collector makedumpfile -l -d 31\n"
    )
    results = [capture(tmp_path, config, core_61().vmcore) for _ in range(3)]
    assert [result.status for result in results] == [0, 0, 3]
    directory = Path(results[2].dump_dir or "")
    assert not (directory / "vmcore").exists() and (directory / "vmcore-dmesg.txt").exists()
    manifest = json.loads((directory / "manifest.json").read_text())
    assert any("crash loop" in note for note in manifest["notes"])


def test_retention_keeps_the_newest(tmp_path: Path) -> None:
    config = write_config(tmp_path, "kdump_capture_keep_dumps 2\nkdump_capture_crash_loop 0\n"
                          "core_collector makedumpfile -l -d 31\n")  # fmt: skip
    made = []
    for second in range(3):
        result = capture(tmp_path, config, core_61().vmcore, clock=lambda s=second: 1.7e9 + s)
        made.append(os.path.basename(result.dump_dir or ""))
        os.utime(result.dump_dir or "", (1.7e9 + second, 1.7e9 + second))
    left = sorted(path.name for path in (tmp_path / "sysroot/var/crash").iterdir())
    assert left == sorted(made[1:])


def test_shell_then_the_final_action(tmp_path: Path) -> None:
    """failure_action shell: a shell, then (when it exits) the final action."""
    actions = RecordingActions(out=None, newroot=str(tmp_path / "sysroot"))
    config = write_config(tmp_path, "ext4 LABEL=no-such-label-kdc\nfailure_action shell\n"
                          "final_action poweroff\n")  # fmt: skip
    env = RunEnvironment(actions=actions, vmcore=str(core_61().vmcore),
                         mount_root=str(tmp_path / "mnt"), sleep=lambda seconds: None)  # fmt: skip
    result = run_capture(load_config(str(config)), env)
    assert actions.performed == [Action.SHELL, Action.POWEROFF]
    assert (result.status, result.action) == (1, Action.POWEROFF)


def test_dump_to_rootfs_is_named_then_the_final_action(tmp_path: Path) -> None:
    """failure_action dump_to_rootfs: named in the run's log as every action
    is, the dump saved onto the root filesystem, then the final action."""
    actions = RecordingActions(out=None, newroot=str(tmp_path / "sysroot"))
    (tmp_path / "sysroot").mkdir()
    config = write_config(tmp_path, "ext4 LABEL=no-such-label-kdc\n"
                          "failure_action dump_to_rootfs\nfinal_action poweroff\n"
                          "core_collector makedumpfile -l -d 31\n")  # fmt: skip
    env = RunEnvironment(actions=actions, vmcore=str(core_61().vmcore),
                         mount_root=str(tmp_path / "mnt"), sleep=lambda seconds: None)  # fmt: skip
    result = run_capture(load_config(str(config)), env)
    assert actions.performed == [Action.POWEROFF]
    assert (result.status, result.action) == (0, Action.POWEROFF)
    [directory] = (tmp_path / "sysroot/var/crash").iterdir()
    assert (directory / "vmcore").exists()
    lines = (directory / "kexec-dmesg.log").read_text().splitlines()
    named = [at for at, line in enumerate(lines) if "kdump-capture: action: " in line]
    assert [lines[at].rpartition(" ")[2] for at in named] == ["dump_to_rootfs", "poweroff"]
    assert named[-1] == len(lines) - 1


def test_raw_target_then_save_raw(tmp_path: Path) -> None:
    """raw: the flattened stream on the device, then save-raw on the next boot
    gives makedumpfile's file; a second save-raw extracts nothing."""
    core = core_61()
    image = tmp_path / "raw.img"
    with image.open("wb") as file:
        file.truncate(64 << 20)
    device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    try:
        config = write_config(tmp_path, f"raw {device}\ncore_collector makedumpfile -l -d 31\n")
        result = capture(tmp_path, config, core.vmcore)
        assert (result.status, result.action) == (0, Action.REBOOT)
        saved = tmp_path / "saved"
        assert main(["save-raw", device, "--config", str(config), "--path", str(saved)]) == 0
        assert main(["save-raw", device, "--config", str(config), "--path", str(saved)]) == 0
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
    [extracted] = list(saved.glob("*/vmcore"))
    makedumpfile(core, tmp_path / "theirs", "-l", "-d", "31")
    assert extracted.read_bytes() == (tmp_path / "theirs").read_bytes()
    assert len(list(saved.iterdir())) == 1
