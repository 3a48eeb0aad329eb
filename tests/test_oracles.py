"""Self-test of the reference readers in tests/oracles.py on the real vmcores.

The other tests trust these oracles, so this checks that they actually read
the fixtures: makedumpfile 1.7.8 must reproduce the caller-id log that
makedumpfile 1.7.9 wrote, and crash 9.0.x must open each dump with its debug
vmlinux and see the panic. Run scripts/reference-tools first to prepare the
chroot and the debug vmlinux files (the first call would otherwise make them).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests import oracles
from tests.realcores import RealCore


def test_makedumpfile_new_is_178() -> None:
    """The chroot must hold the makedumpfile whose output the references match."""
    proc = oracles.makedumpfile_new("-v")
    assert "version 1.7.8" in proc.stdout + proc.stderr


def test_makedumpfile_new_dump_dmesg(real_core: RealCore, tmp_path: Path) -> None:
    """1.7.8 prints caller ids, so its log must equal the 1.7.9 caller-id reference;
    the output file also proves host paths are translated both ways."""
    out = tmp_path / "dmesg.txt"
    proc = oracles.makedumpfile_new("--dump-dmesg", real_core.vmcore, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = (real_core.reference / "vmcore-dmesg-callerid.txt").read_text()
    assert out.read_text() == expected


def test_crash_new_opens_the_dump(real_core: RealCore) -> None:
    """One crash session per core (each costs seconds): the dump matches its
    vmlinux, the panic is seen, and the task list and log are readable."""
    vmlinux = oracles.debug_vmlinux(real_core.release)
    commands = ["sys", "bt", "ps | tail -n 3", "log | tail -n 2"]
    output = oracles.crash_new(vmlinux, real_core.vmcore, commands)
    assert re.search(rf"^\s+RELEASE: {re.escape(real_core.release)}$", output, re.M), output
    assert re.search(r"^\s+PANIC: \"\S", output, re.M), output
    assert re.search(r"^\s*TASKS: \d+$", output, re.M), output
    assert "WARNING" not in output and "invalid" not in output, output
    last_line = (real_core.reference / "vmcore-dmesg.txt").read_text().splitlines()[-1]
    assert last_line.split("] ", 1)[1].strip() in output


def test_calls_leave_no_mounts() -> None:
    """Mounts live in a per-call namespace: the host must see none in the chroot."""
    root = oracles.sid_chroot()
    oracles.makedumpfile_new("-v", files=[Path.cwd()])
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f" {root}/" not in mounts and f" {root} " not in mounts
