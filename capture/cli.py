"""``kdump-capture``: the command-line front of the engine.

This is the only place where errors become exit statuses: 0 success,
1 failure (after one ``error: ...`` line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from capture import __version__
from capture.dumpfile.codecs import CODECS, DEFAULT_CODEC, MAKEDUMPFILE_FLAGS
from capture.errors import CaptureError
from capture.filter.levels import DumpLevel, parse_dump_level
from capture.logs import DEBUG, INFO, WARNING, show_on_stderr

if TYPE_CHECKING:
    from capture.vmcore.summary import Summary

# Each command imports the modules it runs when it runs: start-up is a large
# part of a small dump's time, and `dump` needs none of dmesg's or info's.

__all__ = ("main",)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
EXIT_CLOSED_PIPE = 128 + 13
"""128 + SIGPIPE: what a shell reports for a tool a closed pipe ended."""


class _Failure(Exception):
    """A command failed after doing what it could; the message names the cause."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    return _main(argv)[0]


def console() -> NoReturn:
    """The installed ``kdump-capture``: main, then the exit.

    Python's orderly shutdown (every module and object freed) costs about
    5 ms, as much as all the imports of ``info``. The engine's commands leave
    nothing for it to do (their files are closed, their threads joined, no
    exit hook is theirs), so once their output is flushed they leave with
    ``os._exit``; the other commands exit the usual way."""
    status, engine_command = _main(None)
    if engine_command:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe: said before, or nobody is reading
            pass
        os._exit(status)
    sys.exit(status)


def _main(argv: Sequence[str] | None) -> tuple[int, bool]:
    """The exit status, and whether the command was one of the engine's."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    command: Callable[[argparse.Namespace], int | None] = args.command
    engine_command = command in _ENGINE_COMMANDS
    show_on_stderr(args.log_level, defer=engine_command)
    return _call(command, args), engine_command


def _call(command: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    try:
        status = command(args)
        sys.stdout.flush()  # here, where a closed pipe can still be told from a failure
    except (_Failure, CaptureError) as error:
        print(f"error: {_subject(args)}{error}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return _end_quietly()
    except OSError as error:
        print(f"error: {_os_problem(error, args)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if status is None else status


def _subject(args: argparse.Namespace) -> str:
    name = _input_name(args)
    return f"{name}: " if name else ""


def _input_name(args: argparse.Namespace) -> str | None:
    """The file a command reads, to name in an error that names no other."""
    name: str | None = getattr(args, "vmcore", None) or getattr(args, "input", None)
    return "stdin" if name == "-" else name


def _os_problem(error: OSError, args: argparse.Namespace) -> str:
    """``FILE: problem``, as the README promises: the file the error names,
    else the one the command reads (Python's own form, ``[Errno 2] No such
    file or directory: 'x'``, reads as a traceback's last line)."""
    problem = error.strerror or str(error)
    name = error.filename if error.filename is not None else _input_name(args)
    return f"{name}: {problem}" if name is not None else problem


def _end_quietly() -> int:
    """stdout's reader went away (``| head -1``): stop without a word, as a
    Unix tool that SIGPIPE ends does, with the status a shell shows for it.
    stdout goes to /dev/null first, or Python reports the pipe again when it
    flushes stdout at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # stdout is not a file descriptor (a test's capture): nothing to flush
    return EXIT_CLOSED_PIPE


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser. Given ``argv``, only the command it names
    is added: each parser and argument costs (argparse asks gettext for a
    translation of each of its own strings), and start-up is a large part of
    a small dump's time. With none named (--help, a typo) all are."""
    parser = argparse.ArgumentParser(
        prog="kdump-capture",
        description="Read, filter and save Linux crash dumps.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug",
        dest="log_level",
        action="store_const",
        const=DEBUG,
        default=WARNING,
        help="log what the engine does",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    named = _command_named(argv)
    for name, (summary, add_arguments) in _COMMANDS.items():
        if named in (None, name):
            add_arguments(commands.add_parser(name, help=summary, formatter_class=_HelpFormatter))
    return parser


def _command_named(argv: Sequence[str] | None) -> str | None:
    """The command ``argv`` runs: its first word that is no option (the
    global options take no value); None if that is no command, or if the
    top-level help is asked for first."""
    for word in argv or ():
        if word in ("-h", "--help"):
            return None
        if not word.startswith("-"):
            return word if word in _COMMANDS else None
    return None


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, minus its import of shutil: argparse makes one
    for each add_argument (to check the metavar), and each asks
    shutil.get_terminal_size for the width, which loads shutil with bz2,
    lzma and fnmatch into every start-up (~5 ms) for help that is rarely
    printed. The width is found as shutil finds it."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
        width: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__(prog, indent_increment, max_help_position, width or _columns() - 2)


def _columns() -> int:
    """$COLUMNS, else the terminal's width, else 80 (shutil.get_terminal_size's rule)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _dmesg_arguments(dmesg: argparse.ArgumentParser) -> None:
    dmesg.description = "Write the crashed kernel's log as makedumpfile --dump-dmesg does."
    dmesg.add_argument("vmcore", metavar="VMCORE", help="/proc/vmcore or a saved vmcore")
    dmesg.add_argument(
        "output", metavar="OUTPUT", nargs="?", help="file to write (default: stdout)"
    )
    dmesg.add_argument(
        "--caller-id", action="store_true", help="add the [T<pid>]/[C<cpu>] caller column"
    )
    dmesg.set_defaults(command=_dmesg)


def _info_arguments(info: argparse.ArgumentParser) -> None:
    info.description = "Print the crashed kernel's release, crash time, CPUs and memory layout."
    info.add_argument("vmcore", metavar="VMCORE", help="/proc/vmcore or a saved vmcore")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(command=_info)


def _rebuild_arguments(rebuild: argparse.ArgumentParser) -> None:
    rebuild.description = "Rebuild a flattened (-F) dump into a regular file, like makedumpfile -R."
    rebuild.add_argument("input", metavar="INPUT", help="flattened dump, or - for stdin")
    rebuild.add_argument(
        "output", metavar="OUTPUT", help="regular dump file to write (-: stdout, a file not a pipe)"
    )
    rebuild.set_defaults(command=_rebuild)


def _save_raw_arguments(save_raw: argparse.ArgumentParser) -> None:
    save_raw.description = (
        "Rebuild the flattened dump a raw target holds into PATH/YYYY-MM-DD-HH:MM/"
        "vmcore and clear the device. No dump, or a filesystem on the device: exit 0; "
        "a dump cut short: kept as vmcore-incomplete, exit 3."
    )
    save_raw.add_argument(
        "device", metavar="DEVICE", nargs="?",
        help="/dev/..., LABEL=name or UUID=uuid (default: the raw line of the config)",
    )  # fmt: skip
    save_raw.add_argument(
        "--config", metavar="FILE", default="/etc/kdump.conf",
        help="kdump.conf, for path and raw (default: /etc/kdump.conf)",
    )  # fmt: skip
    save_raw.add_argument("--path", metavar="DIR", help="where dumps go (default: the config's)")
    save_raw.add_argument(
        "--wait", metavar="SECONDS", type=float, default=10.0,
        help="how long the device may take to appear (default: 10)",
    )  # fmt: skip
    save_raw.set_defaults(command=_save_raw)


def _run_arguments(run: argparse.ArgumentParser) -> None:
    run.description = (
        "Save the crashed kernel's log and dump to the target kdump.conf "
        "names, run the hooks, then the final or failure action. Exit status 0: the "
        "dump was saved whole; 3: only part of it (the log, an incomplete or "
        "stepped-down dump); 1: nothing."
    )
    run.add_argument("--config", metavar="FILE", default="/etc/kdump.conf",
                     help="kdump.conf to follow (default: /etc/kdump.conf)")  # fmt: skip
    run.add_argument("--vmcore", metavar="FILE", default="/proc/vmcore",
                     help="the vmcore to capture (default: /proc/vmcore)")  # fmt: skip
    run.add_argument("--sysroot", metavar="DIR", default="/sysroot",
                     help="where the root filesystem is mounted (default: /sysroot)")  # fmt: skip
    run.add_argument(
        "--mount-root",
        metavar="DIR",
        default="/kdumproot",
        help="where to mount a target that is not mounted (default: /kdumproot)",
    )
    _kdump_dir_argument(run)
    run.add_argument("--no-action", action="store_true",
                     help="do everything but the final or failure action; print it")  # fmt: skip
    run.set_defaults(command=_run)


def _kdump_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kdump-dir", metavar="DIR", default="/etc/kdump",
        help="where the pre.d, post.d and emergency.d hooks are (default: /etc/kdump)",
    )  # fmt: skip


def _check_config_arguments(check: argparse.ArgumentParser) -> None:
    check.description = (
        "Check a kdump.conf as strictly as kdumpctl does at start, and check "
        "that only root can change the hooks and extra_bins. Prints one FILE:LINE line "
        "per problem; exit status 1 if there is any."
    )
    check.add_argument(
        "file", metavar="FILE", nargs="?", default="/etc/kdump.conf",
        help="the file to check (default: /etc/kdump.conf)",
    )  # fmt: skip
    _kdump_dir_argument(check)
    check.set_defaults(command=_check_config)


def _dump_arguments(dump: argparse.ArgumentParser) -> None:
    dump.description = (
        "Filter a vmcore's pages by dump level and write a dump file "
        f"(kdump-compressed, {DEFAULT_CODEC} unless a flag names another codec; or ELF). "
        "The flags mean what they mean to makedumpfile. Exit status 0: the dump is whole; "
        "3: it is INCOMPLETE (the disk filled up, or the vmcore lacks pages it lists), "
        "marked so, and readable as far as it goes; 1: failure; 2: usage error."
    )
    dump.add_argument("vmcore", metavar="VMCORE", help="/proc/vmcore or a saved ELF vmcore")
    dump.add_argument("output", metavar="OUTPUT", help="dump file to write (- with -F: stdout)")
    dump.add_argument(
        "-d", dest="level", type=_dump_level, default=DumpLevel(31),
        help="dump level 0-31: 1 zero, 2 cache, 4 private cache, 8 user data, 16 free (default 31)",
    )  # fmt: skip
    codecs = dump.add_mutually_exclusive_group()
    for flag, name in MAKEDUMPFILE_FLAGS.items():
        default = " (the default)" if name == DEFAULT_CODEC else ""
        codecs.add_argument(
            flag, dest="codec", action="store_const", const=name,
            help=f"compress with {name}{default}",
        )  # fmt: skip
    codecs.add_argument(
        "--compress", dest="codec", choices=sorted(CODECS),
        help=f"codec by name (default: {DEFAULT_CODEC}; none stores pages as they are)",
    )  # fmt: skip
    dump.add_argument("-E", dest="elf", action="store_true", help="write an ELF dump")
    dump.add_argument(
        "-F", dest="flattened", action="store_true", help="write the flattened format"
    )
    dump.add_argument(
        "--num-threads", type=_thread_count, default=1, metavar="N",
        help="read and compress on N worker threads while this one writes; 0 (makedumpfile's "
        "default) and 1 mean no extra thread (a crash kernel usually has one CPU: keep 1 there); "
        "snappy ignores it",
    )  # fmt: skip
    cycles = dump.add_mutually_exclusive_group()
    cycles.add_argument(
        "--cyclic-buffer", type=_kilobytes, metavar="KB", dest="cyclic_buffer",
        help="each bitmap's buffer in KiB; a larger machine is filtered in cycles "
        "(default: 40%% of free memory for both, at most 32 MiB)",
    )  # fmt: skip
    cycles.add_argument(
        "--non-cyclic",
        action="store_const",
        const=0,
        dest="cyclic_buffer",
        help="hold both bitmaps whole, however large",
    )
    dump.add_argument("--report", metavar="FILE", help="write the page counts as JSON")
    dump.set_defaults(command=_dump)


def _kilobytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size in KiB, at least 1")
    return value


def _thread_count(text: str) -> int:
    """makedumpfile's --num-threads: 0 (its default) and 1 both mean no extra thread."""
    try:
        count = int(text)
    except ValueError:
        count = -1
    if not 0 <= count <= 64:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of threads from 0 to 64")
    return max(count, 1)


def _bitmap_budget(cyclic_buffer: int | None) -> int | None:
    """Both bitmaps' budget in bytes from --cyclic-buffer (0: --non-cyclic)."""
    if cyclic_buffer is None:
        return None
    return sys.maxsize if cyclic_buffer == 0 else 2 * cyclic_buffer * 1024


def _dump_level(text: str) -> DumpLevel:
    try:
        return parse_dump_level(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _dmesg(args: argparse.Namespace) -> None:
    from capture.dumpfile.reader import open_dump
    from capture.vmcore.printk import format_log, read_kernel_log

    with open_dump(args.vmcore) as vmcore:
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


def _dump(args: argparse.Namespace) -> int:
    from capture.allocator import keep_freed_memory
    from capture.dumpfile.dump import DumpOptions, dump_vmcore
    from capture.progress import ProgressLine, page_summary

    keep_freed_memory()

    if args.elf and args.codec not in (None, "none"):
        print("error: ELF dumps are not compressed: drop -E or the codec flag", file=sys.stderr)
        return EXIT_USAGE
    if args.output == "-" and not args.flattened:
        print("error: only a flattened dump (-F) can go to stdout", file=sys.stderr)
        return EXIT_USAGE
    for path in (args.output, args.report):
        if path is not None and path != "-":
            _check_can_write(path)  # now, not after the whole dump
    options = DumpOptions(
        level=args.level,
        codec=args.codec or DEFAULT_CODEC,
        elf=args.elf,
        flattened=args.flattened,
        threads=args.num_threads,
        bitmap_budget=_bitmap_budget(args.cyclic_buffer),
    )
    progress = ProgressLine.factory(sys.stderr) if sys.stderr.isatty() else None
    # Each problem was logged as it was found, so it comes before the summary.
    report = dump_vmcore(args.vmcore, args.output, options, progress)
    print(page_summary(report), file=sys.stderr)
    if args.report:
        import json

        with open(args.report, "w") as file:
            json.dump(report.as_json(), file, indent=2)
            file.write("\n")
    if report.outcome.incomplete:
        why = "pages are missing from the vmcore" if report.outcome.unreadable else "out of space"
        print(f"error: {args.output}: the dump is INCOMPLETE ({why})", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _check_can_write(path: str) -> None:
    """Raise the error that creating ``path`` would raise, before the work
    it would come at the end of."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        missing = errno.ENOTDIR if os.path.exists(directory) else errno.ENOENT
        raise OSError(missing, os.strerror(missing), path)
    if not os.access(path if os.path.exists(path) else directory, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


def _save_raw(args: argparse.Namespace) -> int:
    from capture.agent.targets.raw import SaveRawStatus, save_raw_from_config

    outcome = save_raw_from_config(args.device, args.config, args.path, args.wait)
    if outcome.status is SaveRawStatus.INCOMPLETE:
        print(f"error: {outcome.message}", file=sys.stderr)
        return EXIT_INCOMPLETE
    stream = sys.stderr if outcome.status is SaveRawStatus.LEFT_ALONE else sys.stdout
    print(f"{'warning: ' if stream is sys.stderr else ''}{outcome.message}", file=stream)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    import logging

    from capture.agent.actions import RecordingActions, SystemActions
    from capture.agent.config import load_config
    from capture.agent.run import RunEnvironment, run_capture

    logging.getLogger("capture").setLevel(min(args.log_level, INFO))  # a line a step
    actions = RecordingActions(sys.stdout, args.sysroot) if args.no_action else SystemActions()
    env = RunEnvironment(
        actions=actions,
        vmcore=args.vmcore,
        sysroot=args.sysroot,
        mount_root=args.mount_root,
        kdump_dir=args.kdump_dir,
        cmdline=_read_text("/proc/cmdline"),
        cpus=len(os.sched_getaffinity(0)),
        console=sys.stderr if sys.stderr.isatty() else None,
    )
    return run_capture(load_config(args.config), env).status


def _read_text(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return ""


def _check_config(args: argparse.Namespace) -> int:
    from capture.agent.checkconfig import check_config

    problems = check_config(args.file, args.kdump_dir)
    for problem in problems:
        # A path in the file may hold bytes that are not UTF-8: show them, never fail on them.
        print(str(problem).encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        print(f"{args.file}: {count}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.file}: no problems")
    return EXIT_OK


def _rebuild(args: argparse.Namespace) -> None:
    from capture.dumpfile.flattened import rebuild

    # "-": stdout, which works when it is a file (> out) and says why not when a pipe.
    output = "/dev/stdout" if args.output == "-" else args.output
    if args.input == "-":
        rebuild(sys.stdin.buffer, output)
    else:
        with open(args.input, "rb") as stream:
            rebuild(stream, output)


def _self_test_arguments(self_test: argparse.ArgumentParser) -> None:
    self_test.description = (
        "Check that this install (or frozen agent) holds everything a capture needs: "
        "every module, each codec round-tripped through a dump, a kdump.conf parsed. "
        "Prints one line; exit status 1 names what is missing."
    )
    self_test.add_argument(
        "--ssh", action="store_true", help="also check what an ssh target needs (paramiko)"
    )
    self_test.set_defaults(command=_self_test)


def _build_initrd_arguments(build: argparse.ArgumentParser) -> None:
    from capture.firstkernel.command import add_arguments

    add_arguments(build)


def _propagate_arguments(propagate: argparse.ArgumentParser) -> None:
    from capture.firstkernel.propagate import add_arguments

    add_arguments(propagate)


def _load_arguments(load: argparse.ArgumentParser) -> None:
    from capture.firstkernel.load import add_load_arguments

    add_load_arguments(load)


def _unload_arguments(unload: argparse.ArgumentParser) -> None:
    from capture.firstkernel.load import add_unload_arguments

    add_unload_arguments(unload)


def _status_arguments(status: argparse.ArgumentParser) -> None:
    from capture.firstkernel.status import add_arguments

    add_arguments(status)


def _estimate_arguments(estimate: argparse.ArgumentParser) -> None:
    from capture.firstkernel.estimate import add_arguments

    add_arguments(estimate)


def _self_test(args: argparse.Namespace) -> int:
    from capture.selftest import run_self_test

    return run_self_test(ssh=args.ssh)


def _info(args: argparse.Namespace) -> None:
    import json

    from capture.dumpfile.reader import open_dump
    from capture.vmcore.summary import summarize

    with open_dump(args.vmcore) as vmcore:
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
    date = summary.crash_date()
    known_date = f" ({date})" if date else ""
    ranges = "\n".join(
        f"  {start:#012x}-{end:#012x}  {(end - start) * page_size >> 20:8d} MiB"
        for start, end in summary.ram_ranges
    )
    lines = [
        f"release:       {known(summary.release)}",
        f"version:       {known(summary.version)}",
        f"machine:       {known(summary.machine)}",
        f"nodename:      {known(summary.nodename)}",
        f"crash time:    {known(summary.crash_time)}{known_date}",
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


_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "dmesg": ("save the crashed kernel's log", _dmesg_arguments),
    "info": ("describe a vmcore", _info_arguments),
    "dump": ("write a filtered dump (kdump-compressed or ELF)", _dump_arguments),
    "rebuild": ("turn a flattened dump into a regular one", _rebuild_arguments),
    "check-config": ("list every problem of a kdump.conf", _check_config_arguments),
    "run": ("capture: what the capture kernel runs", _run_arguments),
    "save-raw": ("extract a dump from a raw target device (next boot)", _save_raw_arguments),
    "self-test": ("check this install has all a capture needs", _self_test_arguments),
    "build-initrd": ("build the capture initramfs (dracut)", _build_initrd_arguments),
    "propagate": ("install the ssh target's key, record its host key", _propagate_arguments),
    "load": ("load the capture kernel (kexec -p), rebuilding a stale image", _load_arguments),
    "unload": ("unload the capture kernel (kexec -p -u)", _unload_arguments),
    "status": ("is a capture kernel loaded, memory reserved, the image current", _status_arguments),
    "estimate": ("the crashkernel= the capture image needs", _estimate_arguments),
}
"""Each command: its line in the top-level help, and what adds its arguments."""

_ENGINE_COMMANDS = (_dmesg, _info, _dump, _rebuild)
"""The quick ones, run on saved vmcores too: logging is imported only if they
have something to say (capture.logs)."""
