"""Dumping a vmcore: filter, write in the chosen format, count.

This is the one place that puts the engine's pieces together; the command
line and the capture agent both call :func:`dump_vmcore`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, BinaryIO, NamedTuple

from capture.dumpfile.codecs import DEFAULT_CODEC, codec_by_name
from capture.dumpfile.kdump import write_kdump
from capture.dumpfile.outcome import DumpOutcome
from capture.dumpfile.sink import FileSink, FlattenedSink, Sink
from capture.errors import CorruptError, UnsupportedError
from capture.filter.levels import DumpLevel
from capture.filter.pagefilter import FilteredPages, default_bitmap_budget
from capture.filter.stats import FilterStats
from capture.logs import log
from capture.vmcore.kernel import Vmcore

__all__ = ("DumpOptions", "DumpPlan", "DumpReport", "dump_vmcore")


_STREAM_BUFFER = 1 << 20


class DumpOptions(NamedTuple):
    """What kind of dump to write."""

    level: DumpLevel = DumpLevel(31)
    codec: str = DEFAULT_CODEC
    """For a kdump-compressed dump: an ELF dump stores pages as they are."""
    elf: bool = False
    flattened: bool = False
    threads: int = 1
    """Compression threads (makedumpfile's --num-threads)."""
    bitmap_budget: int | None = None
    """Bytes the two bitmaps may take before the filter works in cycles
    (makedumpfile's --cyclic-buffer, for both); None: 40% of the memory
    available, at most 32 MiB. An ELF dump always holds them whole."""

    @property
    def stored_codec(self) -> str:
        """The codec pages are stored with: ``none`` for any ELF dump."""
        return "none" if self.elf else self.codec


class DumpReport(NamedTuple):
    """What was written, for ``--report`` and the page summary."""

    options: DumpOptions
    stats: FilterStats
    outcome: DumpOutcome
    seconds: float
    max_pfn: int
    problems: list[str]

    def as_json(self) -> dict[str, Any]:
        """The ``--report`` object."""
        options = self.options
        return {
            "dump_level": int(options.level),
            "format": "elf" if options.elf else "kdump",
            "flattened": options.flattened,
            "codec": options.stored_codec,
            "pages": self.stats.report(),
            "bytes_written": self.outcome.bytes_written,
            "seconds": round(self.seconds, 3),
            "incomplete": self.outcome.incomplete,
            "problems": self.problems,
        }


ProgressFactory = Callable[[int], Callable[[int, int], None] | None]
"""Given the number of pages to write, returns a progress callback (or None)."""


def dump_vmcore(
    vmcore_path: str,
    output: str,
    options: DumpOptions,
    progress: ProgressFactory | None = None,
) -> DumpReport:
    """Write a filtered dump of ``vmcore_path`` to ``output`` (``-``: stdout).

    :raises CaptureError: if the vmcore cannot be read at all.
    """
    with _open_vmcore(vmcore_path) as vmcore:
        # Before the output exists: a codec this install lacks leaves no file behind.
        plan = DumpPlan(vmcore, options)
        sink, closer = _open_sink(output, options.flattened)
        try:
            report = plan.write(sink, progress)
        except BaseException:
            closer(False)
            raise
        closer(True)
    return report


def _open_vmcore(path: str) -> Vmcore:
    """The ELF vmcore to dump; a dump file is named as such, not as a bad ELF file."""
    try:
        return Vmcore(path)
    except CorruptError:
        from capture.dumpfile.reader import KDUMP_COMPRESSED, dump_format  # the error path only

        form = dump_format(path)
        if form is None:
            raise
        readers = " (info and dmesg read this one)" if form == KDUMP_COMPRESSED else ""
        raise UnsupportedError(
            f"a {form} dump, not an ELF vmcore: dump reads /proc/vmcore or a saved copy "
            f"of it{readers}"
        ) from None


class DumpPlan:
    """A vmcore filtered and a compressor made, before any byte is written:
    how many pages the dump holds is known, so a caller can check the space
    first (the capture agent does)."""

    def __init__(self, vmcore: Vmcore, options: DumpOptions) -> None:
        self.started = time.monotonic()
        self.vmcore, self.options = vmcore, options
        self.codec = codec_by_name(options.stored_codec)
        self.store = self.codec.make(vmcore.page_size)
        budget = options.bitmap_budget
        if options.elf:
            budget = None  # its program headers need every segment's runs first
        elif budget is None:
            budget = default_bitmap_budget()
        self.filtered = FilteredPages(vmcore, options.level, budget)

    def with_codec(self, name: str) -> DumpPlan:
        """The same filtered pages, stored by another codec (not for ELF)."""
        import copy  # here: only the agent's step-down needs it

        other = copy.copy(self)
        other.options = self.options._replace(codec=name)
        other.codec = codec_by_name(name)
        other.store = other.codec.make(self.vmcore.page_size)
        return other

    def write(self, sink: Sink, progress: ProgressFactory | None = None) -> DumpReport:
        """Write the dump to ``sink``; once only (the counts are updated)."""
        vmcore, options, filtered = self.vmcore, self.options, self.filtered
        callback = progress(filtered.dumpable) if progress else None
        if options.elf:
            from capture.dumpfile.elf import write_elf  # only -E needs it: imports cost

            outcome = write_elf(vmcore, filtered.whole(), sink, callback)
        else:
            outcome = write_kdump(
                vmcore, filtered, self.codec, self.store, sink, callback, options.threads
            )
        problems = list(filtered.problems)
        if outcome.unreadable:
            # The writer marked the dump INCOMPLETE; logged here, as the
            # filter logs its problems, so it is said once and in order.
            problems.append(
                f"{outcome.unreadable} pages its headers list are not in the file "
                "(truncated, or filtered before); the dump is incomplete"
            )
            log.warning("%s: %s", vmcore.path, problems[-1])
        return DumpReport(
            options=options,
            stats=filtered.stats.with_zero_pages(outcome.zero_pages),
            outcome=outcome,
            seconds=time.monotonic() - self.started,
            max_pfn=filtered.max_pfn,
            problems=problems,
        )


def _open_sink(output: str, flattened: bool) -> tuple[Sink, Callable[[bool], None]]:
    """The sink, and how to close it: ``closer(finished)``.

    A stream that did not finish gets no end marker, so no reader takes it
    for a whole dump.
    """
    if not flattened:
        file_sink = FileSink(output)
        return file_sink, lambda finished: file_sink.close()
    stream: BinaryIO
    if output == "-":
        stream = sys.stdout.buffer
        owned = False
    else:
        stream = open(output, "wb", buffering=_STREAM_BUFFER)  # noqa: SIM115 - closed by closer
        owned = True
    flat_sink = FlattenedSink(stream)

    def close(finished: bool) -> None:
        if finished:
            flat_sink.close()
        if owned:
            stream.close()

    return flat_sink, close
