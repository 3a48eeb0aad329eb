"""A vmcore described in a few facts: what ``kdump-capture info`` prints.

Each fact is gathered on its own, so a corrupt part of the dump costs only the
facts that depend on it; the failures are returned beside what was found.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from capture.errors import CaptureError
from capture.vmcore.kernel import Vmcore
from capture.vmcore.memmap import MemMap

__all__ = ("Summary", "summarize")

T = TypeVar("T")


class Summary:
    """Facts about a vmcore; a fact that could not be read is None."""

    def __init__(self) -> None:
        self.release: str | None = None
        self.crash_time: int | None = None
        self.cpus: int | None = None
        self.page_size: int | None = None
        self.ram_pages: int | None = None
        self.ram_ranges: list[list[int]] = []
        self.memory_model: str | None = None
        self.vmemmap: int | None = None
        self.phys_base: int | None = None
        self.machine: str | None = None
        self.nodename: str | None = None
        self.version: str | None = None
        self.problems: list[str] = []
        """What could not be read, one line each."""

    def crash_date(self, form: str = "%Y-%m-%d %H:%M:%S UTC") -> str | None:
        """The crash time as a UTC date, None if unknown or not a date
        (VMCOREINFO's CRASHTIME is seconds since the epoch)."""
        if self.crash_time is None:
            return None
        try:
            return time.strftime(form, time.gmtime(self.crash_time))
        except (OverflowError, OSError, ValueError):
            return None  # a corrupt value, too large for a date

    def as_json(self) -> dict[str, Any]:
        """The JSON object of ``info --json``: the facts, and ``crash_date``
        (ISO 8601) beside the epoch ``crash_time``."""
        facts = dict(self.__dict__)
        del facts["problems"]
        facts["crash_date"] = self.crash_date("%Y-%m-%dT%H:%M:%SZ")
        return facts


def summarize(vmcore: Vmcore) -> Summary:
    """Gather every fact that can be read from ``vmcore``."""
    summary = Summary()
    summary.page_size = _try(summary, lambda: vmcore.page_size)
    summary.cpus = _try(summary, lambda: vmcore.cpus)
    ranges = vmcore.ram_ranges()
    summary.ram_ranges = [[start, end] for start, end in ranges]
    summary.ram_pages = sum(end - start for start, end in ranges)
    summary.release = _try(summary, lambda: vmcore.info.osrelease)
    summary.crash_time = _try(summary, lambda: vmcore.info.crashtime)
    summary.phys_base = _try(summary, lambda: vmcore.translator.phys_base)
    uts = _try(summary, lambda: vmcore.utsname)
    if uts is not None:
        summary.release = summary.release or uts.release
        summary.machine, summary.nodename, summary.version = uts.machine, uts.nodename, uts.version
    memmap = _try(summary, lambda: MemMap(vmcore))
    if memmap is not None:
        summary.memory_model, summary.vmemmap = memmap.model, memmap.vmemmap
        summary.problems.extend(memmap.problems)
    return summary


def _try(summary: Summary, read: Callable[[], T]) -> T | None:
    try:
        return read()
    except CaptureError as error:
        message = str(error)
        if message not in summary.problems:
            summary.problems.append(message)
        return None
