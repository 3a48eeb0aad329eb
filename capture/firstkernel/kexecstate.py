"""What the running kernel says about kdump: the memory ``crashkernel=``
reserved, whether a capture kernel is loaded into it, its own size.

Every path is read under ``root`` (``/`` on a real system), so tests and
``--root`` point at a tree of their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = (
    "CrashState",
    "boot_cpu_apicid",
    "iomem_ranges",
    "kernel_span",
    "proc_cmdline",
    "read_crash_state",
)

CRASH_SIZE = "sys/kernel/kexec_crash_size"
CRASH_LOADED = "sys/kernel/kexec_crash_loaded"
IOMEM = "proc/iomem"
CMDLINE = "proc/cmdline"
CPUINFO = "proc/cpuinfo"


@dataclass(frozen=True)
class CrashState:
    """The reservation and what is loaded in it."""

    reserved: int | None
    """Bytes reserved for a capture kernel; None if this kernel has no kexec."""
    loaded: bool
    regions: tuple[tuple[int, int], ...]
    """Each "Crash kernel" range of /proc/iomem, [start, end)."""


def read_crash_state(root: str = "/") -> CrashState:
    """The crash reservation as /sys/kernel and /proc/iomem give it."""
    size = _read(root, CRASH_SIZE)
    loaded = _read(root, CRASH_LOADED)
    iomem = _read(root, IOMEM) or ""
    return CrashState(
        reserved=int(size) if size is not None and size.strip().isdigit() else None,
        loaded=loaded is not None and loaded.strip() == "1",
        regions=tuple(iomem_ranges(iomem, "Crash kernel")),
    )


def iomem_ranges(iomem: str, name: str) -> list[tuple[int, int]]:
    """The ranges /proc/iomem names ``name``, at any depth, as [start, end)."""
    ranges = []
    for line in iomem.splitlines():
        span, _, label = line.strip().partition(" : ")
        start, dash, end = span.partition("-")
        if label.strip() == name and dash:
            try:
                ranges.append((int(start, 16), int(end, 16) + 1))
            except ValueError:
                continue
    return ranges


def kernel_span(root: str = "/") -> int | None:
    """The running kernel's _text to the end of its bss, from /proc/iomem
    (None if it shows no Kernel ranges, or only zeros, as it does to a user
    who is not root)."""
    iomem = _read(root, IOMEM) or ""
    ranges = [
        r for n in ("code", "rodata", "data", "bss") for r in iomem_ranges(iomem, f"Kernel {n}")
    ]
    if not ranges or max(end for _start, end in ranges) <= 1:
        return None
    return max(end for _start, end in ranges) - min(start for start, _end in ranges)


def proc_cmdline(root: str = "/") -> str:
    """This kernel's command line ("" if it cannot be read)."""
    return (_read(root, CMDLINE) or "").strip()


def boot_cpu_apicid(root: str = "/") -> int | None:
    """The APIC id of CPU 0, from /proc/cpuinfo (x86 only; None elsewhere)."""
    processor = None
    for line in (_read(root, CPUINFO) or "").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            processor = value
        elif key == "apicid" and processor == "0" and value.isdigit():
            return int(value)
    return None


def _read(root: str, relative: str) -> str | None:
    try:
        with open(os.path.join(root, relative)) as file:
            return file.read()
    except OSError:
        return None
