"""What the capture says about the crash: kernel, time, panic line, its log.

Read once at the start, each fact on its own: a corrupt part of the vmcore
costs only the facts that depend on it, never the capture.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from capture.errors import CaptureError

__all__ = ("CrashFacts", "panic_line", "read_crash_facts")

_PANIC_MARKS = (b"Kernel panic - not syncing", b"sysrq: Trigger a crash", b"BUG: ", b"Oops")


class CrashFacts(NamedTuple):
    kernel: str
    """The crashed kernel's release ("" if unreadable)."""
    crash_time: str
    """ISO 8601, UTC ("" if unknown)."""
    panic: str
    """The line that says why it crashed ("" if none is found)."""
    log: bytes | None
    """The kernel log as ``vmcore-dmesg.txt`` holds it; None if unreadable."""
    problem: str = ""


def read_crash_facts(vmcore_path: str) -> CrashFacts:
    """Never raises for the vmcore's sake: what cannot be read is left empty."""
    from capture.vmcore import Vmcore
    from capture.vmcore.printk import format_log, read_kernel_log

    problems = []
    kernel = crash_time = panic = ""
    text: bytes | None = None
    try:
        with Vmcore(vmcore_path) as vmcore:
            try:
                kernel = vmcore.info.osrelease or ""
                seconds = vmcore.info.crashtime
                if seconds:
                    crash_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
            except CaptureError as error:
                problems.append(str(error))
            try:
                kernel_log = read_kernel_log(vmcore)
            except CaptureError as error:
                problems.append(f"no kernel log: {error}")
            else:
                text = format_log(kernel_log, caller_id=False)
                panic = panic_line(text)
                if kernel_log.error is not None:
                    problems.append(f"the kernel log is cut short: {kernel_log.error}")
    except (CaptureError, OSError) as error:
        problems.append(str(error))
    return CrashFacts(kernel, crash_time, panic, text, "; ".join(problems))


def panic_line(log: bytes) -> str:
    """The last line naming the crash (a panic first, else a sysrq, BUG or Oops),
    without its timestamp; printable text only (it goes into JSON and hooks)."""
    lines = log.splitlines()
    for mark in _PANIC_MARKS:
        for line in reversed(lines):
            at = line.find(mark)
            if at >= 0:
                text = line[at:].decode("utf-8", "replace")
                return "".join(c for c in text if c.isprintable())[:300]
    return ""
