"""The raw target and the capture kernel's actions, end to end with our own image.

A Debian kernel panics in QEMU (``echo c > /proc/sysrq-trigger``) and the
image `kdump-capture build-initrd` built captures it; what the guest leaves
is read afterwards by independent tools (makedumpfile 1.7.8, crash 9.0 with
the debug symbols) and what its console says. The scenarios are the lab's
(qemu/kdumplab/actions.py, which also runs the ones CI leaves out). CI's
three boots, two images:

* ``raw /dev/disk/by-id/...-part1``, ``final_action halt``; then
  ``kdump-capture save-raw`` on the host extracts the dump from the partition;
* the same image, its partition holding ext4 (refused): ``failure_action
  shell`` driven over the serial console, then ``final_action halt``;
* a target that fails (that refused partition again, at once; a missing one
  waits 90 s, which test_e2e_qemu.py and the lab's rootfs-boot pay):
  ``kdump_post`` sees status 1, ``failure_action dump_to_rootfs`` onto the
  ``root=`` disk, ``final_action boot`` into that disk's own init.

Two fast tests (no QEMU) pin the agent's rules the third boot showed
broken: kdump_post runs when the target never came, and ``boot`` is not
undone by the failure unit.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from capture.agent.actions import ACTING_MARKER, Machine, SystemActions
from capture.agent.config import Action
from tests import oracles
from tests.agentrun import capture as agent_capture
from tests.agentrun import hook, write_config
from tests.crashcheck import whole_dump_dir
from tests.realcores import REPO, core_61

sys.path.insert(0, str(REPO / "qemu"))
from kdumplab import actions as lab
from kdumplab.capture import CaptureResult, build_image
from kdumplab.kernels import get_kernel

KERNEL = "6.1"
MEMORY_MB = 2048


def test_kdump_post_sees_the_status_when_the_target_never_appears(tmp_path: Path) -> None:
    """Fedora runs kdump_post after every dump attempt with its status as $1,
    also when the target never came; before, ours ran it only once a dump
    directory existed, so a missing disk was never reported to the hook."""
    seen = tmp_path / "post-saw"
    post = hook(tmp_path, "post.sh", f'echo "$1 $KDUMP_CAPTURE_STATUS" > {seen}\n')
    config = write_config(tmp_path, (
        "ext4 LABEL=kdc-no-such-disk\n"
        "path /var/crash\n"
        "core_collector makedumpfile -l -d 31\n"
        f"kdump_post {post}\n"
        "kdump_capture_deadline 3\n"  # the device is waited for until then, not 90 s
        "failure_action reboot\n"
    ))  # fmt: skip
    result = agent_capture(tmp_path, config, core_61().vmcore)
    assert result.action.value == "reboot"
    assert seen.read_text() == "1 1\n"


def test_boot_marks_the_agent_acting_so_the_failure_unit_does_not_reboot(tmp_path: Path) -> None:
    """``boot`` under systemd isolates initrd-switch-root.target, which stops the
    agent's unit with SIGTERM. Before, that "failure" started
    kdump-capture-failure.service, whose failure action rebooted the machine in
    the middle of the switch (seen in the lab). The agent now marks that it
    acts itself, and the failure unit does not start once the mark exists."""
    calls: list[tuple[str, ...]] = []

    def record(*call: str) -> int:
        calls.append(call)
        return 0

    machine = Machine(
        systemd=True, pid1=False, cmdline="",
        run=lambda argv, seconds: record(*argv),
        interactive=lambda argv, env, terminal: record("shell"),
        reboot=lambda command: None, sync=lambda: None, execv=lambda path, argv: None,
        sleep=lambda seconds: None, is_mounted=lambda path: True,
        is_executable=lambda path: True, mark_acting=lambda: calls.append(("acting",)),
    )  # fmt: skip
    actions = SystemActions(machine, settle=0)
    actions.perform(Action.SHELL)  # the run goes on after a shell: no mark
    assert ("acting",) not in calls
    actions.perform(Action.BOOT)
    isolate = ("systemctl", "--no-block", "isolate", "initrd-switch-root.target")
    assert calls.index(("acting",)) < calls.index(isolate)
    unit = REPO / "dracut-module" / "99kdump-capture" / "kdump-capture-failure.service"
    assert f"ConditionPathExists=!{ACTING_MARKER}\n" in unit.read_text()


def _image(directory: Path, config: Path) -> tuple[Path, Path]:
    kern = get_kernel(KERNEL)
    return config, build_image(config, kern.release, kern.moddir, directory / "capture.img")


@pytest.fixture(scope="module")
def raw_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One image for the raw capture and the shell: raw by-id, shell on failure, halt."""
    directory = tmp_path_factory.mktemp("raw-image")
    return _image(directory, lab.raw_config(directory))


def _crash_shows_the_sysrq_panic(vmcore: Path) -> None:
    release = get_kernel(KERNEL).release
    out = oracles.crash_new(oracles.debug_vmlinux(release), vmcore, ["sys", "bt", "log"])
    assert re.search(r"PANIC:.*sysrq triggered crash", out), out[-3000:]
    assert "sysrq_handle_crash" in out, out[-3000:]
    assert "crashlab-panic" in out


def _log_as_makedumpfile_reads_it(vmcore: Path, ours: Path, caller_id: bool) -> None:
    """``ours`` is makedumpfile 1.7.8's --dump-dmesg of the same vmcore: to the
    byte with the caller column (``kdump-capture dmesg --caller-id``), else
    line by line without it (vmcore-dmesg.txt, as Fedora's has none)."""
    theirs = ours.with_name(f"{ours.name}.makedumpfile")
    run = oracles.makedumpfile_new("--dump-dmesg", vmcore, theirs)
    assert run.returncode == 0, run.stderr
    assert "sysrq: Trigger a crash" in ours.read_text(errors="replace")
    if caller_id:
        assert theirs.read_bytes() == ours.read_bytes()
    else:
        theirs_text, ours_text = (f.read_text(errors="replace") for f in (theirs, ours))
        assert _without_caller_id(theirs_text) == _without_caller_id(ours_text)


def _without_caller_id(text: str) -> list[str]:
    """The lines without makedumpfile 1.7.8's [T123] column (which also shifts
    the indentation of continuation lines)."""
    return [
        re.sub(r"^(\[ *[0-9.]+\]) \[ *[TC]\d+\]", r"\1", line).strip() for line in text.splitlines()
    ]


def test_raw_partition_by_id_then_save_raw(raw_image: tuple[Path, Path], tmp_path: Path) -> None:
    """The capture kernel finds the partition by udev's by-id link and writes the
    flattened stream; halts (QEMU stays up, the lab ends it); on the host
    save-raw rebuilds <path>/YYYY-MM-DD-HH:MM/vmcore and clears the partition."""
    config, image = raw_image
    scenario = lab.raw_scenario(config, tmp_path / "disks", MEMORY_MB, filesystem=False)
    result = lab.run_scenario(scenario, KERNEL, MEMORY_MB, image, tmp_path / "run")
    part = lab.capture_part(result.console)
    assert result.ended == "halt", f"final_action halt: {result.ended}"
    assert "reboot: System halted" in part
    assert f"{lab.RAW_BY_ID}: the dump stream is complete" in part
    assert "kdump-capture: action: halt" in part
    assert scenario.raw_image is not None
    saved = lab.save_raw(scenario.raw_image, *scenario.raw_partition, config, tmp_path / "crash")
    assert saved.returncode == 0, saved.output
    assert [p.relative_to(tmp_path / "crash").parts[1] for p in saved.vmcores] == ["vmcore"]
    vmcore = saved.vmcores[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d-\d\d:\d\d", vmcore.parent.name), vmcore
    assert "holds no dump" in saved.again, saved.again  # cleared: not extracted twice
    ours = tmp_path / "dmesg.txt"
    cli = REPO / ".venv" / "bin" / "kdump-capture"
    subprocess.run([str(cli), "dmesg", "--caller-id", str(vmcore), str(ours)], check=True)
    _log_as_makedumpfile_reads_it(vmcore, ours, caller_id=True)
    _crash_shows_the_sysrq_panic(vmcore)


def test_shell_over_the_serial_console_then_the_final_action(
    raw_image: tuple[Path, Path], tmp_path: Path
) -> None:
    """The raw partition holds ext4, which the raw target will not write over:
    failure_action shell on the console, a command typed and answered, exit,
    then final_action halt."""
    config, image = raw_image
    scenario = lab.raw_scenario(config, tmp_path / "disks", MEMORY_MB, filesystem=True)
    result = lab.run_scenario(scenario, KERNEL, MEMORY_MB, image, tmp_path / "run")
    assert result.shell_console is not None
    shell = result.shell_console.read_text(errors="replace").replace("\r", "")
    assert result.ended == "halt", f"final_action halt after the shell: {result.ended}"
    assert "ext4" in shell and "kdump-capture: action: shell" in shell, shell[-3000:]
    # the answer, on a line of its own: the typed line itself says $((6*7))
    assert re.search(rf"^{lab.SHELL_ANSWER}$", shell, re.M), shell[-3000:]
    after = shell[shell.index("kdump-capture: action: shell") :]
    typed_exit = re.search(rf"{lab.PROMPT}exit$", after, re.M)
    assert typed_exit is not None, after[-2000:]
    assert typed_exit.start() < after.index("kdump-capture: action: halt")
    assert "reboot: System halted" in lab.capture_part(result.console)


def test_failed_target_post_hook_dump_to_rootfs_then_boot(tmp_path: Path) -> None:
    """The target fails (the raw partition holds ext4: at once, where a missing
    one costs its 90 s wait; the lab's rootfs-boot runs that): kdump_post gets
    1; failure_action dump_to_rootfs saves onto the disk root= names (the log
    of the run included); final_action boot switches to it, and its own
    /sbin/init runs."""
    config, image = _image(tmp_path, lab.rootfs_config(tmp_path / "config", lab.REFUSED_TARGET))
    scenario = lab.rootfs_scenario(config, tmp_path / "disks", refused_raw=True)
    result = lab.run_scenario(scenario, KERNEL, MEMORY_MB, image, tmp_path / "run")
    part = lab.capture_part(result.console)
    assert f"{lab.POST_MARKER} 1 (KDUMP_CAPTURE_STATUS=1)" in part, part[-3000:]
    assert "dump_to_rootfs: saving onto the root filesystem at /sysroot" in part
    assert "kdump-capture: action: boot" in part
    assert f"{lab.ROOTFS_INIT_MARKER} as PID 1" in part, part[-3000:]
    assert result.ended == "power_off", result.ended  # the root's init powers off
    dump = _one_complete_dump(result)
    assert f"crashlab-rootfs-init: found /var/crash/{dump.name}/vmcore" in part
    # kexec-dmesg.log: the agent's log (the failed target first), then the capture kernel's
    run_log = (dump / "kexec-dmesg.log").read_text(errors="replace")
    agent_log, _, kernel_log = run_log.partition("--- the capture kernel's log ---")
    assert f"{lab.RAW_BY_ID}: holds a signature (ext4)" in agent_log, agent_log[:2000]
    assert agent_log.rstrip().endswith("kdump-capture: action: boot"), agent_log[-500:]
    assert f"{lab.POST_MARKER} 1" in kernel_log
    _log_as_makedumpfile_reads_it(dump / "vmcore", dump / "vmcore-dmesg.txt", caller_id=False)
    _crash_shows_the_sysrq_panic(dump / "vmcore")


def _one_complete_dump(result: CaptureResult) -> Path:
    assert len(result.dumps) == 1, result.dumps
    dump = result.dumps[0]
    assert re.fullmatch(r"127\.0\.0\.1-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d", dump.name), dump.name
    whole_dump_dir(dump)
    return dump
