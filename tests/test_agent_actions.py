"""capture.agent.actions: what the run does at its end.

The machine is a fake (reboot(2), systemctl, mount and exec are recorded,
never done: these tests must never reboot the machine they run on); the
shell is a real process on a file standing in for the console.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from capture.agent import config
from capture.agent.actions import (
    ACTIONS,
    FOLLOWED_BY_FINAL_ACTION,
    HAND_OVER,
    RB_AUTOBOOT,
    RB_HALT_SYSTEM,
    RB_POWER_OFF,
    Machine,
    RecordingActions,
    SystemActions,
    action_line,
    real_machine,
)
from capture.agent.config import Action


class Stopped(Exception):
    """What a fake sleep raises to play systemd ending our process."""


class FakeMachine:
    """Records every call in order; commands succeed unless told otherwise."""

    def __init__(
        self,
        *,
        systemd: bool = True,
        pid1: bool = False,
        cmdline: str = "",
        mounted_after: int | None = 0,
        command_status: int | Exception = 0,
        reboot_error: OSError | None = None,
        stopped_by_sleep: bool = False,
        exec_error: OSError | None = None,
    ) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.systemd = systemd
        self.pid1 = pid1
        self.cmdline = cmdline
        self.mounted_after = mounted_after  # sleeps until newroot is mounted; None: never
        self.command_status = command_status
        self.reboot_error = reboot_error
        self.stopped_by_sleep = stopped_by_sleep
        self.exec_error = exec_error
        self.sleeps = 0

    def machine(self, interactive: object = None) -> Machine:
        return Machine(
            systemd=self.systemd,
            pid1=self.pid1,
            cmdline=self.cmdline,
            run=self.run,
            interactive=interactive or self.interactive,  # type: ignore[arg-type]
            reboot=self.reboot,
            sync=lambda: self.calls.append(("sync",)),
            execv=self.execv,
            sleep=self.sleep,
            is_mounted=self.is_mounted,
            is_executable=lambda path: os.path.isfile(path) and os.access(path, os.X_OK),
        )

    def run(self, argv: Sequence[str], seconds: float) -> int:
        self.calls.append(("run", *argv))
        if isinstance(self.command_status, Exception):
            raise self.command_status
        return self.command_status

    def interactive(self, argv: Sequence[str], env: Mapping[str, str], terminal: str | None) -> int:
        self.calls.append(("interactive", *argv))
        return 0

    def reboot(self, command: int) -> None:
        self.calls.append(("reboot", command))
        if self.reboot_error is not None:
            raise self.reboot_error

    def execv(self, path: str, argv: Sequence[str]) -> None:
        self.calls.append(("execv", *argv))
        if self.exec_error is not None:
            raise self.exec_error
        raise Stopped  # exec does not come back

    def sleep(self, seconds: float) -> None:
        self.calls.append(("sleep", seconds))
        self.sleeps += 1
        if self.stopped_by_sleep:
            raise Stopped

    def is_mounted(self, path: str) -> bool:
        return self.mounted_after is not None and self.sleeps >= self.mounted_after


def actions(fake: FakeMachine, newroot: str = "/sysroot", **options: object) -> SystemActions:
    return SystemActions(fake.machine(), newroot=newroot, mount_wait=3, **options)  # type: ignore[arg-type]


# The names ------------------------------------------------------------------


def test_the_actions_are_the_ones_kdump_conf_accepts() -> None:
    assert ACTIONS is config.FAILURE_ACTIONS
    assert {action.value for action in ACTIONS} == {
        "reboot", "halt", "poweroff", "shell", "dump_to_rootfs", "boot",
    }  # fmt: skip
    assert set(config.FINAL_ACTIONS) <= set(ACTIONS)
    assert {Action.SHELL, Action.DUMP_TO_ROOTFS} == FOLLOWED_BY_FINAL_ACTION


def test_the_line_names_the_action() -> None:
    assert action_line(Action.POWEROFF) == "kdump-capture: action: poweroff"


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_ends_in_its_line_and_never_raises(
    action: Action, caplog: pytest.LogCaptureFixture
) -> None:
    # An exec that fails: the one way a fake machine's power-off returns.
    fake = FakeMachine(stopped_by_sleep=False, exec_error=OSError(8, "Exec format error"))
    seen: list[str] = []
    with caplog.at_level(logging.INFO, logger="capture"):
        actions(fake).perform(action, before_acting=lambda: seen.append(caplog.messages[-1]))
    # When the log is saved (before_acting), its last line names the action.
    assert seen == [action_line(action)]


# --no-action ------------------------------------------------------------------


def test_the_recorder_records_and_prints_and_does_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = io.StringIO()
    recorder = RecordingActions(out)
    saved: list[str] = []
    with caplog.at_level(logging.INFO, logger="capture"):
        recorder.perform(Action.SHELL)
        recorder.perform(Action.POWEROFF, before_acting=lambda: saved.append("log"))
    assert recorder.performed == [Action.SHELL, Action.POWEROFF]
    assert out.getvalue() == (
        "kdump-capture: action: shell (not taken: --no-action)\n"
        "kdump-capture: action: poweroff (not taken: --no-action)\n"
    )
    assert caplog.messages[-1] == "kdump-capture: action: poweroff"
    assert saved == ["log"]


def test_the_recorder_takes_the_sysroot_as_it_is(tmp_path: Path) -> None:
    assert RecordingActions(None, str(tmp_path)).mount_root() == str(tmp_path)
    assert RecordingActions(None, str(tmp_path / "none")).mount_root() is None


# reboot, halt, poweroff ----------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "verb", "command"),
    [
        (Action.REBOOT, "reboot", RB_AUTOBOOT),
        (Action.HALT, "halt", RB_HALT_SYSTEM),
        (Action.POWEROFF, "poweroff", RB_POWER_OFF),
    ],
)
def test_under_systemd_sync_then_a_shell_in_our_place(
    action: Action, verb: str, command: int
) -> None:
    """The agent's memory goes with the exec, before systemd's shutdown."""
    fake = FakeMachine()
    with pytest.raises(Stopped):  # the exec does not come back
        actions(fake).perform(action)
    assert fake.calls == [("sync",), ("execv", "sh", "-c", HAND_OVER, "sh", verb, "30")]


@pytest.mark.parametrize(
    ("action", "command"),
    [(Action.REBOOT, 0x01234567), (Action.HALT, 0xCDEF0123), (Action.POWEROFF, 0x4321FEDC)],
)
def test_without_systemd_sync_then_reboot_2_with_its_command(action: Action, command: int) -> None:
    fake = FakeMachine(systemd=False)
    actions(fake).perform(action)
    assert fake.calls == [("sync",), ("reboot", command)]


@pytest.mark.parametrize("forced_status", [0, 1], ids=["systemd-still-up", "systemctl-fails"])
def test_the_shell_forces_harder_when_systemctl_does_not_end_it(
    tmp_path: Path, forced_status: int
) -> None:
    """The hand-over shell run for real, with a systemctl that records its
    arguments: -ff (reboot(2) at once) after the settle time, or at once when
    the forced systemctl fails."""
    calls = tmp_path / "calls"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                         f'[ "$2" = -f ] && exit {forced_status}\nexit 0\n')  # fmt: skip
    systemctl.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    subprocess.run(["/bin/sh", "-c", HAND_OVER, "sh", "poweroff", "0"], env=env, check=True)
    assert calls.read_text() == "poweroff -f\npoweroff -ff\n"


def test_a_shell_that_cannot_be_exec_ed_means_reboot_2_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeMachine(exec_error=OSError(2, "No such file or directory"))
    actions(fake).perform(Action.REBOOT)
    assert fake.calls == [
        ("sync",), ("execv", "sh", "-c", HAND_OVER, "sh", "reboot", "30"), ("reboot", RB_AUTOBOOT),
    ]  # fmt: skip
    assert "exec /bin/sh for systemctl reboot -f failed" in caplog.text


def test_a_failing_reboot_2_is_said_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeMachine(systemd=False, reboot_error=OSError(1, "Operation not permitted"))
    actions(fake).perform(Action.HALT)
    assert "reboot(2) for halt failed" in caplog.text
    assert "the machine stays up" in caplog.text


def test_the_log_is_saved_before_the_sync(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeMachine(systemd=False)

    def save_log() -> None:
        fake.calls.append(("save log",))
        raise OSError(28, "No space left on device")  # and still the machine goes down

    actions(fake).perform(Action.REBOOT, before_acting=save_log)
    assert fake.calls == [("save log",), ("sync",), ("reboot", RB_AUTOBOOT)]
    assert "No space left on device" in caplog.text


# shell -------------------------------------------------------------------------------


def test_shell_runs_on_the_console_and_returns_when_it_exits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    console = tmp_path / "console"
    console.write_text("")
    fake = FakeMachine()
    shell = ("/bin/sh", "-c", 'echo "in the shell"; echo "prompt $PS1"; read line; exit 3')
    runner = SystemActions(
        fake.machine(interactive=real_machine().interactive), console=str(console), shell=shell
    )
    with caplog.at_level(logging.INFO, logger="capture"):
        runner.perform(Action.SHELL)  # returns: the final action is the caller's next step
    assert console.read_text() == "in the shell\nprompt kdump:${PWD}# \n"
    assert "the shell exited with 3; going on to the final action" in caplog.text
    assert fake.calls == []  # no reboot, no sync: that is the final action's


def test_a_shell_that_cannot_start_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    console = tmp_path / "console"
    console.write_text("")
    fake = FakeMachine()
    runner = SystemActions(
        fake.machine(interactive=real_machine().interactive),
        console=str(console),
        shell=(str(tmp_path / "no-such-shell"),),
    )
    runner.perform(Action.SHELL)
    assert "could not be started" in caplog.text


# boot ----------------------------------------------------------------------------------


def test_boot_under_systemd_isolates_the_switch_root_target() -> None:
    fake = FakeMachine(stopped_by_sleep=True)
    with pytest.raises(Stopped):
        actions(fake).perform(Action.BOOT)
    assert fake.calls == [
        ("run", "systemctl", "--no-block", "isolate", "initrd-switch-root.target"),
        ("sleep", 30.0),
    ]


def test_boot_under_systemd_mounts_the_root_first() -> None:
    fake = FakeMachine(mounted_after=2)
    runner = actions(fake)
    assert runner.mount_root() == "/sysroot"
    assert fake.calls == [
        ("run", "systemctl", "start", "--no-block", "sysroot.mount"), ("sleep", 1), ("sleep", 1),
    ]  # fmt: skip


def test_boot_reboots_when_the_root_never_mounts(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeMachine(mounted_after=None)
    with pytest.raises(Stopped):
        actions(fake).perform(Action.BOOT)
    assert fake.calls[-2:] == [("sync",), ("execv", "sh", "-c", HAND_OVER, "sh", "reboot", "30")]
    assert not [call for call in fake.calls if "isolate" in call]
    assert "the root filesystem cannot be mounted; rebooting instead" in caplog.text


def test_boot_reboots_when_systemd_does_not_switch(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeMachine(command_status=1)
    with pytest.raises(Stopped):
        actions(fake).perform(Action.BOOT)
    assert fake.calls == [
        ("run", "systemctl", "--no-block", "isolate", "initrd-switch-root.target"),
        ("sync",), ("execv", "sh", "-c", HAND_OVER, "sh", "reboot", "30"),
    ]  # fmt: skip


def newroot_with_init(tmp_path: Path, init: str = "sbin/init") -> Path:
    newroot = tmp_path / "sysroot"
    path = newroot / init
    path.parent.mkdir(parents=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return newroot


def test_boot_as_pid_1_without_systemd_execs_switch_root(tmp_path: Path) -> None:
    newroot = newroot_with_init(tmp_path)
    fake = FakeMachine(systemd=False, pid1=True)
    with pytest.raises(Stopped):
        actions(fake, str(newroot)).perform(Action.BOOT)
    assert fake.calls == [("execv", "switch_root", str(newroot), "/sbin/init")]


def test_boot_runs_the_init_the_command_line_names(tmp_path: Path) -> None:
    newroot = newroot_with_init(tmp_path, "usr/lib/systemd/systemd")
    fake = FakeMachine(systemd=False, pid1=True, cmdline="ro init=/usr/lib/systemd/systemd quiet")
    with pytest.raises(Stopped):
        actions(fake, str(newroot)).perform(Action.BOOT)
    assert fake.calls == [("execv", "switch_root", str(newroot), "/usr/lib/systemd/systemd")]


def test_an_absolute_init_link_is_followed_inside_the_new_root(tmp_path: Path) -> None:
    newroot = newroot_with_init(tmp_path, "lib/kdump-capture-test/init")
    (newroot / "sbin").mkdir()
    # Outside newroot this link points nowhere: it must be read inside newroot.
    os.symlink("/lib/kdump-capture-test/init", newroot / "sbin" / "init")
    fake = FakeMachine(systemd=False, pid1=True)
    with pytest.raises(Stopped):
        actions(fake, str(newroot)).perform(Action.BOOT)
    assert fake.calls == [("execv", "switch_root", str(newroot), "/sbin/init")]


def test_boot_not_as_pid_1_leaves_the_switch_to_the_initramfs_init(tmp_path: Path) -> None:
    newroot = newroot_with_init(tmp_path)
    fake = FakeMachine(systemd=False, pid1=False)
    actions(fake, str(newroot)).perform(Action.BOOT)
    assert fake.calls == []


def test_boot_without_an_init_reboots(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    newroot = tmp_path / "empty-root"
    newroot.mkdir()
    fake = FakeMachine(systemd=False, pid1=True)
    actions(fake, str(newroot)).perform(Action.BOOT)
    assert fake.calls == [("sync",), ("reboot", RB_AUTOBOOT)]
    assert "no init on" in caplog.text


def test_without_systemd_the_root_is_mounted_from_the_command_line() -> None:
    cmdline = "BOOT_IMAGE=/vmlinuz root=LABEL=root rootfstype=xfs rootflags=noatime,nodev ro\n"
    fake = FakeMachine(systemd=False, cmdline=cmdline, mounted_after=1)
    assert actions(fake).mount_root() == "/sysroot"
    assert fake.calls == [
        ("run", "mount", "-t", "xfs", "-o", "ro,noatime,nodev", "LABEL=root", "/sysroot"),
        ("sleep", 1),
    ]


def test_without_root_on_the_command_line_nothing_is_mounted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeMachine(systemd=False, cmdline="quiet", mounted_after=None)
    assert actions(fake).mount_root() is None
    assert fake.calls == []
    assert "no root= on the kernel command line" in caplog.text


# dump_to_rootfs ------------------------------------------------------------------------


def test_dump_to_rootfs_is_named_and_left_to_the_run() -> None:
    fake = FakeMachine()
    actions(fake).perform(Action.DUMP_TO_ROOTFS)
    assert fake.calls == []
