"""crash's view of a dump cut short: the check the no-space tests share."""

from __future__ import annotations

from pathlib import Path

from tests import oracles


def crash_sees_incomplete(dump: Path, release: str) -> None:
    """crash 9.0.2 opens ``dump`` (of kernel ``release``), says it is
    incomplete, and reads what is there.

    --zero_excluded lets the session start though kernel pages past the cut
    are missing; the log lies in the written part.
    """
    vmlinux = oracles.debug_vmlinux(release)
    run = oracles.run_in_chroot(
        ["crash", "-s", "--zero_excluded", oracles.inside(vmlinux), oracles.inside(dump)],
        files=[vmlinux, dump],
        stdin="sys\nlog\nexit\n",
    )
    output = run.stdout + run.stderr
    assert "This dumpfile is incomplete" in output, output
    assert "sysrq: Trigger a crash" in output, output
