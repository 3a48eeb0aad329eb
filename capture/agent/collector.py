"""core_collector -> what writes the dump: our engine in-process, or the user's command.

A ``makedumpfile ...`` line becomes engine options (:class:`EngineCollector`)
with the meaning makedumpfile gives its flags, so makedumpfile is never
needed: ``-c``/``-l``/``-p``/``-z`` pick zlib, lzo, snappy or zstd (none of
them: pages stored as they are, as makedumpfile does), ``-E`` an ELF dump,
``-d N`` the dump level (0 when absent, as makedumpfile), ``--num-threads N``
the compression threads, ``--cyclic-buffer``/``--non-cyclic`` the bitmaps'
memory. Flags that only tune makedumpfile itself (``--message-level``,
``-D``, ...) are accepted and ignored. Flags our engine cannot honour are
problems: :func:`map_collector` returns them, check-config reports them, and
the capture run logs them and honours the rest of the line, so a dump is
still written.

Fedora's rewriting (docs/capture.md §"Collector rewriting") is applied: every ``-F``
is dropped and the stream format chosen by the target (ssh and raw stream,
everything else holds a seekable file); with several CPUs and neither ``-F``
nor ``-E``, one compression thread per CPU. One deliberate difference: a
``--num-threads`` the user wrote is kept, where Fedora appends its own after
it (which makedumpfile then takes); in a crash kernel each thread costs
memory, and the user's number says how much they can spare.

Any other command (``cp``, ``cat``, ``scp``, ...) runs as Fedora runs it
(:class:`ExternalCollector`): split on blanks, with two arguments (the vmcore
and the file to write) for a filesystem target, and with the vmcore alone,
writing to stdout, for a streaming one. ``scp`` to an ssh target is
Fedora's whole, unfiltered copy of the vmcore, named ``vmcore``: here the
engine writes it over the target's own SFTP connection (no scp binary, no
second login) as an ELF dump of every page (level 0, nothing compressed),
which holds what the copy holds; its headers are the engine's, so it is not
byte for byte the source file.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from capture.agent.config import Config, NfsTarget, RawTarget, SshTarget, Target
from capture.dumpfile.codecs import MAKEDUMPFILE_FLAGS
from capture.filter.levels import DumpLevel, parse_dump_level

if TYPE_CHECKING:
    from capture.dumpfile.dump import DumpOptions

__all__ = (
    "Collector",
    "CollectorChoice",
    "EngineCollector",
    "ExternalCollector",
    "collector_for",
    "copies_whole_vmcore",
    "default_collector",
    "map_collector",
)

log = logging.getLogger(__name__)

MAX_THREADS = 64
"""More compression threads than this only cost memory."""
_FALLBACK_LEVEL = DumpLevel(31)
"""The level used when ``-d`` cannot be read: Fedora's default, the smallest dump."""

# makedumpfile's own options, as its getopt knows them (flag -> takes a value),
# so that a flag we do not honour still consumes its value.
_SHORT = {
    **dict.fromkeys("bdgiLx", True),
    **dict.fromkeys("cDeEFfhlpRvXz", False),
}
_LONG = {
    **dict.fromkeys(
        ("split", "reassemble", "dump-dmesg", "partial-dmesg", "help", "non-mmap", "mem-usage",
         "check-params", "dry-run", "show-stats", "non-cyclic"),
        False,
    ),
    **dict.fromkeys(
        ("xen-syms", "xen-vmcoreinfo", "xen_phys_start", "message-level", "vtop", "config",
         "diskset", "cyclic-buffer", "eppic", "splitblock-size", "work-dir", "num-threads",
         "extension"),
        True,
    ),
}  # fmt: skip
_IGNORED = {
    "-D", "-f", "-b", "--non-mmap", "--work-dir", "--show-stats", "--splitblock-size",
}  # fmt: skip
"""They tune how makedumpfile works (debug output, overwrite, cache size,
mmap, scratch files, statistics), not what the dump holds."""
_NOT_A_DUMP = "makes makedumpfile do something else than write a dump"
_UNSUPPORTED = {
    "--split": "writes the dump as several files, and kdump saves one vmcore; remove it "
    "(more CPUs are used without it)",
    "--reassemble": f"{_NOT_A_DUMP}; remove it",
    "-R": f"{_NOT_A_DUMP}; remove it",
    "--dump-dmesg": f"{_NOT_A_DUMP} (the log is saved anyway, as vmcore-dmesg.txt); remove it",
    "--partial-dmesg": f"{_NOT_A_DUMP}; remove it",
    "--mem-usage": f"{_NOT_A_DUMP}; remove it",
    "--dry-run": f"{_NOT_A_DUMP}; remove it",
    "--check-params": f"{_NOT_A_DUMP}; remove it",
    "-g": f"{_NOT_A_DUMP}; remove it",
    "--vtop": f"{_NOT_A_DUMP}; remove it",
    "-h": f"{_NOT_A_DUMP}; remove it",
    "--help": f"{_NOT_A_DUMP}; remove it",
    "-v": f"{_NOT_A_DUMP}; remove it",
    "-x": "filters with debug information, which the engine does not use "
    "(it finds page types from VMCOREINFO); remove it",
    "-i": "reads VMCOREINFO from a file; the engine reads it from the vmcore; remove it",
    "--config": "erases data by a filter config, which the engine cannot do: "
    "nothing would be erased; remove it",
    "--eppic": "erases data by an eppic script, which the engine cannot do: "
    "nothing would be erased; remove it",
    "--extension": "runs makedumpfile extensions, which the engine does not have; remove it",
    "-e": "excludes unused vmemmap pages, which the engine does not do; remove it",
    "-X": "is for Xen dumps, which the engine does not write; remove it",
    "--xen-syms": "is for Xen dumps, which the engine does not write; remove it",
    "--xen-vmcoreinfo": "is for Xen dumps, which the engine does not write; remove it",
    "--xen_phys_start": "is for Xen dumps, which the engine does not write; remove it",
    "--diskset": "is for sadump disks, which the engine does not read; remove it",
    "-L": "limits the dump's size, which the engine does not do (the capture checks free "
    "space itself); remove it",
}
_NOT_STREAMING = {"cp", "mv", "rsync", "install", "ln"}
"""Commands that need a file to write, so they cannot feed a streaming target."""
_STDOUT_ONLY = {"cat", "dd", "pv"}
"""Commands that write to stdout, so they cannot take a file as a second argument."""


class EngineCollector(NamedTuple):
    """Our engine writes the dump, in-process."""

    options: DumpOptions
    command: str
    """The collector as it runs after Fedora's rewriting, for the log."""


class ExternalCollector(NamedTuple):
    """The user's command writes the dump, as Fedora runs it."""

    argv: tuple[str, ...]
    to_stdout: bool
    """True: give it the vmcore alone and send its stdout to the target."""

    def arguments(self, vmcore: str, output: str) -> list[str]:
        """The command to run: ``output`` is the file to write (for scp, the
        remote ``user@host:dir/file``); a streaming command does not get it."""
        if self.to_stdout:
            return [*self.argv, vmcore]
        return [*self.argv, vmcore, output]


Collector = EngineCollector | ExternalCollector


class CollectorChoice(NamedTuple):
    """The collector, and what in its line could not be honoured (empty: all of it)."""

    collector: Collector
    problems: list[str]
    """Each "what is wrong; what to write instead"."""


def default_collector(machine: str | None = None) -> str:
    """Fedora's default: lzo, level 31; zlib on s390x (whose hardware speeds it up)."""
    machine = machine or os.uname().machine
    codec = "-c" if machine == "s390x" else "-l"
    return f"makedumpfile {codec} --message-level 7 -d 31"


def collector_for(config: Config, cpus: int, machine: str | None = None) -> Collector:
    """The capture run's collector: what cannot be honoured is logged, never fatal."""
    setting = config.core_collector
    target = config.target.value if config.target else None
    choice = map_collector(setting.value if setting else None, target, cpus, machine,
                           ssh_flat=config.ssh_format.value == "flat")  # fmt: skip
    where = setting.origin if setting else config.file
    for problem in choice.problems:
        log.warning("%s: %s (the rest of the line is used)", where, problem)
    return choice.collector


def map_collector(
    line: str | None,
    target: Target | None,
    cpus: int,
    machine: str | None = None,
    *,
    ssh_flat: bool = False,
) -> CollectorChoice:
    """What ``core_collector <line>`` does for this target on ``cpus`` CPUs.

    ``line`` None: the default collector. ``target`` None: the root filesystem.
    ``ssh_flat``: ``kdump_capture_ssh_format flat`` (else an ssh target takes
    the regular, seekable format over SFTP).
    """
    words = tuple((line or "").split()) or tuple(default_collector(machine).split())
    if os.path.basename(words[0]) == "makedumpfile":
        flattened = isinstance(target, RawTarget) or (isinstance(target, SshTarget) and ssh_flat)
        return _engine(words, flattened, cpus)
    if os.path.basename(words[0]) == "scp" and isinstance(target, SshTarget):
        return _whole_copy(words)
    return _external(words, target)


def copies_whole_vmcore(config: Config) -> bool:
    """Whether the collector is ``scp`` to an ssh target: the whole vmcore."""
    line = config.core_collector.value if config.core_collector else ""
    first = line.split()[0] if line.split() else ""
    target = config.target.value if config.target else None
    return os.path.basename(first) == "scp" and isinstance(target, SshTarget)


def _whole_copy(words: tuple[str, ...]) -> CollectorChoice:
    """``scp`` to an ssh target: every page, as an ELF file at its offsets."""
    from capture.dumpfile.dump import DumpOptions

    problems = []
    if len(words) > 1:
        problems.append(f"core_collector scp: its options ({' '.join(words[1:])}) are not "
                        "used; the target's ssh settings are (ssh_config, sshkey)")  # fmt: skip
    options = DumpOptions(level=DumpLevel(0), codec="none", elf=True, flattened=False)
    return CollectorChoice(EngineCollector(options, "scp (the whole vmcore, over SFTP)"), problems)


def _external(words: tuple[str, ...], target: Target | None) -> CollectorChoice:
    name = os.path.basename(words[0])
    over_scp = name == "scp" and isinstance(target, SshTarget)
    to_stdout = target is not None and target.streams and not over_scp
    problems = []
    if to_stdout and name in {*_NOT_STREAMING, "scp"}:
        problems.append(
            f"core_collector {name} cannot write to stdout, and a {_kind(target)} target "
            "takes the dump from the collector's stdout; use makedumpfile (e.g. "
            "'core_collector makedumpfile -l --message-level 7 -d 31') or cat"
        )
    if not to_stdout and not over_scp and name in _STDOUT_ONLY:
        problems.append(
            f"core_collector {name} writes to stdout, but a {_kind(target)} target gives the "
            "collector the file to write as its second argument; use makedumpfile or "
            "'cp --sparse=always'"
        )
    return CollectorChoice(ExternalCollector(words, to_stdout), problems)


def _kind(target: Target | None) -> str:
    if isinstance(target, SshTarget):
        return "ssh"
    if isinstance(target, RawTarget):
        return "raw"
    return "NFS" if isinstance(target, NfsTarget) else "filesystem"


class _Flags:
    """What the flags of one makedumpfile line ask for, before the rewriting."""

    def __init__(self) -> None:
        self.codec = "none"
        self.level = DumpLevel(0)
        self.elf = False
        self.threads: int | None = None
        self.bitmap_budget: int | None = None
        self.problems: list[str] = []


def _engine(words: tuple[str, ...], streaming: bool, cpus: int) -> CollectorChoice:
    from capture.dumpfile.dump import DumpOptions  # the engine: only a capture needs it

    flags = _Flags()
    for flag, value in _options(words[1:], flags.problems):
        _apply(flag, value, flags)
    if flags.elf and flags.codec != "none":
        flags.problems.append(
            f"makedumpfile -E writes an ELF dump, which is never compressed, so "
            f"{_codec_flag(flags.codec)} cannot go with it; remove one of the two "
            "(the ELF dump is written)"
        )
        flags.codec = "none"
    threads = _threads(flags, streaming, cpus)
    options = DumpOptions(
        level=flags.level,
        codec=flags.codec,
        elf=flags.elf,
        flattened=streaming,
        threads=threads,
        bitmap_budget=flags.bitmap_budget,
    )
    command = _rewritten(words, streaming, threads if flags.threads is None else None)
    return CollectorChoice(EngineCollector(options, command), flags.problems)


def _threads(flags: _Flags, streaming: bool, cpus: int) -> int:
    if flags.threads is not None:
        if flags.elf and flags.threads > 1:
            flags.problems.append(
                "makedumpfile --num-threads cannot go with -E (ELF dumps are not compressed); "
                "remove --num-threads"
            )
            return 1
        return flags.threads
    if cpus > 1 and not streaming and not flags.elf:
        return min(cpus, MAX_THREADS)
    return 1


def _rewritten(words: tuple[str, ...], streaming: bool, auto_threads: int | None) -> str:
    """The line as Fedora's kdump.sh would run it: -F dropped, then added back for
    a streaming target; its --num-threads when it adds one."""
    kept = [word.replace("-F", "") if word.startswith("-") else word for word in words]
    kept = [word for word in kept if word not in ("", "-")]
    if streaming:
        kept.append("-F")
    if auto_threads is not None and auto_threads > 1:
        kept.append(f"--num-threads={auto_threads}")
    return " ".join(kept)


def _codec_flag(codec: str) -> str:
    return next(flag for flag, name in MAKEDUMPFILE_FLAGS.items() if name == codec)


def _options(args: tuple[str, ...], problems: list[str]) -> Iterator[tuple[str, str | None]]:
    """makedumpfile's options as its getopt_long reads them: (flag, value) pairs.

    Short flags bundle (``-ld31``), a value follows its flag or is the next
    word, long options take ``=value`` or the next word and may be shortened
    to any unambiguous prefix.
    """
    index = 0
    while index < len(args):
        word = args[index]
        index += 1
        if word == "--":
            problems.extend(_positional(rest) for rest in args[index:])
            return
        if word.startswith("--"):
            name, has_value, inline = word[2:].partition("=")
            option = _long_option(name, problems)
            if option is None:
                continue
            if not _LONG[option]:
                if has_value:
                    problems.append(f"makedumpfile --{option} takes no value; write --{option}")
                yield f"--{option}", None
                continue
            if has_value:
                yield f"--{option}", inline
            elif index < len(args):
                yield f"--{option}", args[index]
                index += 1
            else:
                problems.append(f"makedumpfile --{option} needs a value; give one or remove it")
        elif word.startswith("-") and word != "-":
            for position, letter in enumerate(word[1:], 2):
                takes_value = _SHORT.get(letter)
                if takes_value is None:
                    problems.append(_unknown(f"-{letter}"))
                elif not takes_value:
                    yield f"-{letter}", None
                elif position < len(word):
                    yield f"-{letter}", word[position:]
                    break
                elif index < len(args):
                    yield f"-{letter}", args[index]
                    index += 1
                else:
                    problems.append(f"makedumpfile -{letter} needs a value; give one or remove it")
        else:
            problems.append(_positional(word))


def _long_option(name: str, problems: list[str]) -> str | None:
    if name in _LONG:
        return name
    matches = [option for option in _LONG if option.startswith(name)] if name else []
    if len(matches) == 1:
        return matches[0]
    if name == "compress" or name.startswith("compress"):
        problems.append(
            "makedumpfile has no --compress; write -c (zlib), -l (lzo), -p (snappy) or -z (zstd)"
        )
    elif matches:
        problems.append(f"makedumpfile --{name} is ambiguous ({', '.join(matches)}); spell it out")
    else:
        problems.append(_unknown(f"--{name}"))
    return None


def _unknown(flag: str) -> str:
    return f"makedumpfile has no flag {flag}; remove it"


def _positional(word: str) -> str:
    return f"'{word}' in core_collector: kdump adds the vmcore and the output itself; remove it"


def _apply(flag: str, value: str | None, flags: _Flags) -> None:
    """What one flag means to the engine."""
    if flag in MAKEDUMPFILE_FLAGS:
        flags.codec = MAKEDUMPFILE_FLAGS[flag]  # makedumpfile too: the last codec flag wins
    elif flag == "-E":
        flags.elf = True
    elif flag == "-F":
        pass  # the target decides (Fedora strips it and adds it back for ssh and raw)
    elif flag == "-d":
        flags.level = _level(value or "", flags.problems)
    elif flag == "--num-threads":
        flags.threads = _thread_count(value or "", flags.problems)
    elif flag == "--message-level":
        _check_message_level(value or "", flags.problems)
    elif flag == "--cyclic-buffer":  # KiB for each of the two bitmaps, as makedumpfile
        flags.bitmap_budget = _cyclic_buffer(value or "", flags.problems)
    elif flag == "--non-cyclic":
        flags.bitmap_budget = sys.maxsize
    elif flag in _UNSUPPORTED:
        flags.problems.append(f"makedumpfile {flag} {_UNSUPPORTED[flag]}")
    elif flag not in _IGNORED:
        flags.problems.append(_unknown(flag))


def _cyclic_buffer(text: str, problems: list[str]) -> int | None:
    """Both bitmaps' budget in bytes from makedumpfile's --cyclic-buffer KiB."""
    if text.isdigit() and int(text) > 0:
        return 2 * int(text) * 1024
    problems.append(
        f"makedumpfile --cyclic-buffer {text!r} is not a size in KiB; write a whole number, "
        "e.g. --cyclic-buffer 8192 (the default, from the free memory, is used)"
    )
    return None


def _level(text: str, problems: list[str]) -> DumpLevel:
    first, comma, _ = text.partition(",")
    try:
        level = parse_dump_level(first)
    except ValueError as error:
        problems.append(f"makedumpfile -d: {error} (level {int(_FALLBACK_LEVEL)} is used)")
        return _FALLBACK_LEVEL
    if comma:
        problems.append(
            f"makedumpfile -d {text}: a list of levels is not supported; give one "
            f"(-d {int(level)} is used)"
        )
    return level


def _thread_count(text: str, problems: list[str]) -> int | None:
    """makedumpfile's --num-threads: 0 (its default) and 1 both mean no extra thread."""
    if not text.isdigit():
        problems.append(
            f"makedumpfile --num-threads '{text}' is not a number; write --num-threads=N"
        )
        return None
    count = int(text)
    if count > MAX_THREADS:
        problems.append(
            f"makedumpfile --num-threads {count}: at most {MAX_THREADS} "
            f"({MAX_THREADS} are used); write a smaller number"
        )
    return max(1, min(count, MAX_THREADS))


def _check_message_level(text: str, problems: list[str]) -> None:
    # The engine has no message levels; makedumpfile refuses a bad one, so do we.
    if not text.isdigit() or int(text) > 31:
        problems.append(
            f"makedumpfile --message-level '{text}' is not 0 to 31; write e.g. --message-level 7"
        )
