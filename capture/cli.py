"""``kdump-capture``: the command-line front of the engine.

This is the only place where errors become exit statuses: 0 success,
1 failure (after one ``error: ...`` line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from capture import __version__
from capture.errors import CaptureError
from capture.vmcore import Vmcore, format_log, read_kernel_log
from capture.vmcore.summary import Summary, summarize

__all__ = ("main",)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("capture")


class _Failure(Exception):
    """A command failed after doing what it could; the message names the cause."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=args.log_level)
    command: Callable[[argparse.Namespace], None] = args.command
    try:
        command(args)
    except (_Failure, CaptureError) as error:
        print(f"error: {_subject(args)}{error}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _subject(args: argparse.Namespace) -> str:
    vmcore = getattr(args, "vmcore", None)
    return f"{vmcore}: " if vmcore else ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdump-capture",
        description="Read, filter and save Linux crash dumps.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug",
        dest="log_level",
        action="store_const",
        const=logging.DEBUG,
        default=logging.WARNING,
        help="log what the engine does",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    dmesg = commands.add_parser(
        "dmesg",
        help="save the crashed kernel's log",
        description="Write the crashed kernel's log as makedumpfile --dump-dmesg does.",
    )
    dmesg.add_argument("vmcore", metavar="VMCORE", help="/proc/vmcore or a saved vmcore")
    dmesg.add_argument(
        "output", metavar="OUTPUT", nargs="?", help="file to write (default: stdout)"
    )
    dmesg.add_argument(
        "--caller-id", action="store_true", help="add the [T<pid>]/[C<cpu>] caller column"
    )
    dmesg.set_defaults(command=_dmesg)

    info = commands.add_parser(
        "info",
        help="describe a vmcore",
        description="Print the crashed kernel's release, crash time, CPUs and memory layout.",
    )
    info.add_argument("vmcore", metavar="VMCORE", help="/proc/vmcore or a saved vmcore")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(command=_info)
    return parser


def _dmesg(args: argparse.Namespace) -> None:
    with Vmcore(args.vmcore) as vmcore:
        kernel_log = read_kernel_log(vmcore)
    text = format_log(kernel_log, caller_id=args.caller_id)
    if args.output is None:
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
    else:
        with open(args.output, "wb") as output:
            output.write(text)
    if kernel_log.error is not None:
        kept = len(kernel_log.records)
        raise _Failure(f"{kernel_log.error} ({kept} records before it were saved)")


def _info(args: argparse.Namespace) -> None:
    with Vmcore(args.vmcore) as vmcore:
        summary = summarize(vmcore)
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    else:
        print(_describe(summary))
    if summary.problems:
        raise _Failure("; ".join(summary.problems))


def _describe(summary: Summary) -> str:
    def known(value: object, form: str = "{}") -> str:
        return "unknown" if value is None else form.format(value)

    page_size = summary.page_size or 4096
    ranges = "\n".join(
        f"  {start:#012x}-{end:#012x}  {(end - start) * page_size >> 20:8d} MiB"
        for start, end in summary.ram_ranges
    )
    lines = [
        f"release:       {known(summary.release)}",
        f"version:       {known(summary.version)}",
        f"machine:       {known(summary.machine)}",
        f"nodename:      {known(summary.nodename)}",
        f"crash time:    {known(summary.crash_time)}",
        f"cpus:          {known(summary.cpus)}",
        f"page size:     {known(summary.page_size)}",
        f"RAM pages:     {known(summary.ram_pages)}"
        f" ({(summary.ram_pages or 0) * page_size >> 20} MiB)",
        f"memory model:  {known(summary.memory_model)}",
        f"vmemmap:       {known(summary.vmemmap, '{:#x}')}",
        f"phys_base:     {known(summary.phys_base, '{:#x}')}",
        "RAM (pfn ranges):",
        ranges,
    ]
    return "\n".join(lines)
