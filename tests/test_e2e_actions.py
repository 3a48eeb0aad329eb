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
* a missing target: ``kdump_post`` sees status 1, ``failure_action
  dump_to_rootfs`` onto the ``root=`` disk, ``final_action boot`` into that
  disk's own init.

One fast test (no QEMU) pins the kdump_post rule the third boot relies on.
"""

from __future__ import annotations

from pathlib import Path

from tests.agentrun import capture as agent_capture
from tests.agentrun import hook, write_config
from tests.realcores import core_61

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
