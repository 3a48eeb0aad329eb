"""core_collector lines -> engine options or an external command, with Fedora's rewriting."""

from __future__ import annotations

import logging
import sys

import pytest

from capture.agent.collector import (
    EngineCollector,
    ExternalCollector,
    collector_for,
    default_collector,
    map_collector,
)
from capture.agent.config import (
    Device,
    DeviceBy,
    FilesystemTarget,
    NfsTarget,
    RawTarget,
    SshTarget,
    Target,
    parse_config,
)
from capture.dumpfile.dump import DumpOptions
from capture.filter.levels import DumpLevel

FEDORA_DEFAULT = "makedumpfile -l --message-level 7 -d 31"
RAW = RawTarget(Device(DeviceBy.NODE, "/dev/disk/by-id/wwn-0x5000-part3"))
SSH = SshTarget("kdump", "backup.example.com")
EXT4 = FilesystemTarget("ext4", Device(DeviceBy.LABEL, "dumps"))
NFS = NfsTarget("nfs.example.com", "/export/dumps")


def engine(line: str | None, target: Target | None = None, cpus: int = 1) -> EngineCollector:
    """The engine for ``line``; an ssh target as ``kdump_capture_ssh_format
    flat`` has it (the seekable default is tested on its own below)."""
    choice = map_collector(line, target, cpus, ssh_flat=True)
    assert choice.problems == []
    assert isinstance(choice.collector, EngineCollector)
    return choice.collector


def options(line: str | None, target: Target | None = None, cpus: int = 1) -> DumpOptions:
    return engine(line, target, cpus).options


def problems_of(line: str, target: Target | None = None) -> tuple[DumpOptions, list[str]]:
    choice = map_collector(line, target, cpus=1, ssh_flat=True)
    assert isinstance(choice.collector, EngineCollector)
    return choice.collector.options, choice.problems


# The default, and the flags as users write them --------------------------------


def test_default_collector_is_fedoras() -> None:
    assert default_collector("x86_64") == FEDORA_DEFAULT
    assert default_collector("aarch64") == FEDORA_DEFAULT
    assert default_collector("s390x") == "makedumpfile -c --message-level 7 -d 31"


@pytest.mark.parametrize("target", [None, EXT4, NFS])
def test_no_collector_line_means_the_default_for_a_file(target: Target | None) -> None:
    assert options(None, target) == DumpOptions(level=DumpLevel(31), codec="lzo")
    assert options("   ", target) == DumpOptions(level=DumpLevel(31), codec="lzo")


@pytest.mark.parametrize("target", [RAW, SSH])
def test_no_collector_line_means_the_default_for_a_stream(target: Target) -> None:
    collector = engine(None, target)
    assert collector.options == DumpOptions(level=DumpLevel(31), codec="lzo", flattened=True)
    assert collector.command == f"{FEDORA_DEFAULT} -F"


def test_s390x_default() -> None:
    choice = map_collector(None, None, 1, machine="s390x")
    assert isinstance(choice.collector, EngineCollector)
    assert choice.collector.options.codec == "zlib"


@pytest.mark.parametrize(
    ("flag", "codec"),
    [("-c", "zlib"), ("-l", "lzo"), ("-p", "snappy"), ("-z", "zstd"), ("", "none")],
)
def test_codec_flags(flag: str, codec: str) -> None:
    assert options(f"makedumpfile {flag} -d 31").codec == codec


def test_the_last_codec_flag_wins_as_in_makedumpfile() -> None:
    assert options("makedumpfile -c -z -d 31").codec == "zstd"
    assert options("makedumpfile -z -l").codec == "lzo"


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("makedumpfile -l -d 31", 31),
        ("makedumpfile -l -d31", 31),
        ("makedumpfile -ld31", 31),
        ("makedumpfile -ld 17", 17),
        ("makedumpfile -d 0 -l", 0),
        ("makedumpfile -d 1 -d 8", 8),
        ("makedumpfile -l", 0),  # makedumpfile's own default: keep every page
    ],
)
def test_dump_level(line: str, level: int) -> None:
    assert options(line).level == DumpLevel(level)


def test_elf() -> None:
    assert options("makedumpfile -E -d 31") == DumpOptions(
        level=DumpLevel(31), codec="none", elf=True
    )


@pytest.mark.parametrize(
    "line",
    [
        "makedumpfile -l -d 31 --num-threads=3",
        "makedumpfile -l -d 31 --num-threads 3",
        "makedumpfile -l --num-t 3 -d 31",  # getopt_long takes an unambiguous prefix
        "makedumpfile -l --num-threads=3 --num-threads=3 -d 31",
    ],
)
def test_num_threads(line: str) -> None:
    assert options(line).threads == 3


@pytest.mark.parametrize("count", ["0", "1"])
def test_num_threads_zero_and_one_mean_no_extra_thread(count: str) -> None:
    assert options(f"makedumpfile -l --num-threads={count}", cpus=8).threads == 1


@pytest.mark.parametrize(
    "flags",
    [
        "--message-level 7",
        "--message-level=31",
        "--message-level 0",
        "-D",
        "-f",
        "-b 8",
        "-b8",
        "--non-mmap",
        "--work-dir /tmp",
        "--show-stats",
        "--splitblock-size 1048576",
        "-F",
        "-lF",
    ],
)
def test_harmless_flags_are_accepted_and_change_nothing(flags: str) -> None:
    assert options(f"makedumpfile -l {flags} -d 31") == DumpOptions(
        level=DumpLevel(31), codec="lzo"
    )


@pytest.mark.parametrize(
    ("flags", "budget"),
    [("--cyclic-buffer 1024", 2 << 20), ("--cyclic-buffer=4", 8192), ("--non-cyclic", sys.maxsize)],
)
def test_cyclic_buffer_sets_the_bitmap_budget(flags: str, budget: int) -> None:
    """makedumpfile's KiB for each bitmap: the engine's budget is for both."""
    assert options(f"makedumpfile -l {flags} -d 31").bitmap_budget == budget


def test_makedumpfile_by_its_path() -> None:
    assert options("/usr/sbin/makedumpfile -z -d 31").codec == "zstd"


# Fedora's rewriting -------------------------------------------------------------


@pytest.mark.parametrize("target", [RAW, SSH])
def test_streaming_targets_always_get_the_flattened_format(target: Target) -> None:
    for line in (FEDORA_DEFAULT, "makedumpfile -F -l --message-level 7 -d 31"):
        collector = engine(line, target, cpus=4)
        assert collector.options.flattened
        assert collector.options.threads == 1  # Fedora adds no threads with -F
        assert collector.command == f"{FEDORA_DEFAULT} -F"


@pytest.mark.parametrize("target", [None, EXT4, NFS])
def test_filesystem_targets_drop_f(target: Target | None) -> None:
    collector = engine("makedumpfile -F -l --message-level 7 -d 31", target)
    assert not collector.options.flattened
    assert collector.command == FEDORA_DEFAULT


def test_several_cpus_add_threads() -> None:
    collector = engine(FEDORA_DEFAULT, EXT4, cpus=4)
    assert collector.options.threads == 4
    assert collector.command == f"{FEDORA_DEFAULT} --num-threads=4"
    assert engine(FEDORA_DEFAULT, EXT4, cpus=1).options.threads == 1
    assert engine(FEDORA_DEFAULT, EXT4, cpus=1).command == FEDORA_DEFAULT


def test_no_threads_added_for_elf_or_a_stream() -> None:
    assert options("makedumpfile -E -d 31", EXT4, cpus=8).threads == 1
    assert options(FEDORA_DEFAULT, RAW, cpus=8).threads == 1
    assert options(FEDORA_DEFAULT, SSH, cpus=8).threads == 1


def test_added_threads_are_capped() -> None:
    assert options(FEDORA_DEFAULT, cpus=512).threads == 64


def test_threads_the_user_wrote_are_kept() -> None:
    collector = engine(f"{FEDORA_DEFAULT} --num-threads=2", EXT4, cpus=16)
    assert collector.options.threads == 2
    assert collector.command == f"{FEDORA_DEFAULT} --num-threads=2"
    assert options(f"{FEDORA_DEFAULT} --num-threads=2", SSH, cpus=16).threads == 2


# What the engine cannot honour: a problem each, the rest still honoured ----------


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ("--split", "makedumpfile --split writes the dump as several files, and kdump saves one "
                    "vmcore; remove it (more CPUs are used without it)"),
        ("--compress=zstd", "makedumpfile has no --compress; write -c (zlib), -l (lzo), "
                            "-p (snappy) or -z (zstd)"),
        ("-x /usr/lib/debug/vmlinux", "makedumpfile -x filters with debug information, which "
                                      "the engine does not use (it finds page types from "
                                      "VMCOREINFO); remove it"),
        ("--config /etc/makedumpfile.conf", "makedumpfile --config erases data by a filter "
                                            "config, which the engine cannot do: nothing would "
                                            "be erased; remove it"),
        ("--dump-dmesg", "makedumpfile --dump-dmesg makes makedumpfile do something else than "
                         "write a dump (the log is saved anyway, as vmcore-dmesg.txt); remove it"),
        ("-e", "makedumpfile -e excludes unused vmemmap pages, which the engine does not do; "
               "remove it"),
        ("-L 1G", "makedumpfile -L limits the dump's size, which the engine does not do (the "
                  "capture checks free space itself); remove it"),
        ("--xen-syms=/boot/xen-syms", "makedumpfile --xen-syms is for Xen dumps, which the "
                                      "engine does not write; remove it"),
        ("-Q", "makedumpfile has no flag -Q; remove it"),
        ("--frobnicate", "makedumpfile has no flag --frobnicate; remove it"),
        ("--s", "makedumpfile --s is ambiguous (split, show-stats, splitblock-size); spell it out"),
        ("--non-mmap=1", "makedumpfile --non-mmap takes no value; write --non-mmap"),
        ("--message-level 99", "makedumpfile --message-level '99' is not 0 to 31; "
                               "write e.g. --message-level 7"),
        ("--num-threads=many", "makedumpfile --num-threads 'many' is not a number; "
                               "write --num-threads=N"),
        ("/proc/vmcore", "'/proc/vmcore' in core_collector: kdump adds the vmcore and the "
                         "output itself; remove it"),
    ],
)  # fmt: skip
def test_flags_the_engine_cannot_honour(flags: str, problem: str) -> None:
    dump, problems = problems_of(f"makedumpfile -z {flags} -d 17")
    assert problems == [problem]
    assert (dump.codec, dump.level) == ("zstd", DumpLevel(17))  # the rest of the line counts


def test_a_bad_dump_level_falls_back_to_31() -> None:
    dump, problems = problems_of("makedumpfile -l -d 32")
    assert dump.level == DumpLevel(31)
    assert problems == [
        "makedumpfile -d: dump level 32 is out of range: use 0 to 31 (level 31 is used)"
    ]
    dump, problems = problems_of("makedumpfile -l -d all")
    assert dump.level == DumpLevel(31) and "is not a number from 0 to 31" in problems[0]


def test_a_list_of_dump_levels_uses_the_first() -> None:
    dump, problems = problems_of("makedumpfile -l -d 1,31")
    assert dump.level == DumpLevel(1)
    assert problems == [
        "makedumpfile -d 1,31: a list of levels is not supported; give one (-d 1 is used)"
    ]


def test_a_flag_without_its_value() -> None:
    dump, problems = problems_of("makedumpfile -l -d")
    assert problems == ["makedumpfile -d needs a value; give one or remove it"]
    assert dump.level == DumpLevel(0)
    _, problems = problems_of("makedumpfile -l --num-threads")
    assert problems == ["makedumpfile --num-threads needs a value; give one or remove it"]


def test_too_many_threads() -> None:
    dump, problems = problems_of("makedumpfile -l --num-threads=1000")
    assert dump.threads == 64
    assert problems == [
        "makedumpfile --num-threads 1000: at most 64 (64 are used); write a smaller number"
    ]


def test_elf_with_a_codec_writes_the_elf_dump() -> None:
    dump, problems = problems_of("makedumpfile -E -c -d 31")
    assert (dump.elf, dump.codec) == (True, "none")
    assert problems == [
        "makedumpfile -E writes an ELF dump, which is never compressed, so -c cannot go with "
        "it; remove one of the two (the ELF dump is written)"
    ]


def test_elf_with_threads() -> None:
    dump, problems = problems_of("makedumpfile -E -d 31 --num-threads=4")
    assert (dump.elf, dump.threads) == (True, 1)
    assert problems == [
        "makedumpfile --num-threads cannot go with -E (ELF dumps are not compressed); "
        "remove --num-threads"
    ]


def test_every_problem_of_one_line() -> None:
    dump, problems = problems_of("makedumpfile -l --split -x vmlinux -Q -d 31")
    assert [problem.split()[1] for problem in problems] == ["--split", "-x", "has"]
    assert dump == DumpOptions(level=DumpLevel(31), codec="lzo")


# Other commands, run as Fedora runs them -------------------------------------------


def test_cp_to_a_filesystem_gets_two_arguments() -> None:
    choice = map_collector("cp --sparse=always", EXT4, cpus=4)
    assert choice.problems == []
    assert choice.collector == ExternalCollector(("cp", "--sparse=always"), to_stdout=False)
    assert choice.collector.arguments("/proc/vmcore", "/mnt/d/vmcore-incomplete") == [
        "cp", "--sparse=always", "/proc/vmcore", "/mnt/d/vmcore-incomplete",
    ]  # fmt: skip


@pytest.mark.parametrize("target", [RAW, SSH])
def test_cat_to_a_stream_gets_the_vmcore_alone(target: Target) -> None:
    choice = map_collector("cat", target, cpus=4)
    assert choice.problems == []
    assert choice.collector == ExternalCollector(("cat",), to_stdout=True)
    assert choice.collector.arguments("/proc/vmcore", "ignored") == ["cat", "/proc/vmcore"]


def test_scp_to_ssh_is_the_whole_vmcore_over_the_targets_sftp() -> None:
    """Fedora's scp copies the vmcore unfiltered: here every page as ELF,
    written by the engine through the target's own connection."""
    choice = map_collector("scp", SSH, cpus=4)
    assert choice.problems == []
    assert isinstance(choice.collector, EngineCollector)
    options = choice.collector.options
    facts = (int(options.level), options.elf, options.codec, options.flattened)
    assert facts == (0, True, "none", False)


def test_any_other_command_runs_as_written() -> None:
    choice = map_collector("/usr/local/bin/savecore --fast  --quiet", NFS, cpus=2)
    assert choice.problems == []
    assert choice.collector == ExternalCollector(
        ("/usr/local/bin/savecore", "--fast", "--quiet"), to_stdout=False
    )


@pytest.mark.parametrize(
    ("line", "target", "problem"),
    [
        ("cp --sparse=always", RAW, "core_collector cp cannot write to stdout, and a raw target "
         "takes the dump from the collector's stdout; use makedumpfile (e.g. 'core_collector "
         "makedumpfile -l --message-level 7 -d 31') or cat"),
        ("cp", SSH, "core_collector cp cannot write to stdout, and a ssh target takes the dump "
         "from the collector's stdout; use makedumpfile (e.g. 'core_collector makedumpfile -l "
         "--message-level 7 -d 31') or cat"),
        ("scp", RAW, "core_collector scp cannot write to stdout, and a raw target takes the dump "
         "from the collector's stdout; use makedumpfile (e.g. 'core_collector makedumpfile -l "
         "--message-level 7 -d 31') or cat"),
        ("cat", None, "core_collector cat writes to stdout, but a filesystem target gives the "
         "collector the file to write as its second argument; use makedumpfile or "
         "'cp --sparse=always'"),
        ("cat", NFS, "core_collector cat writes to stdout, but a NFS target gives the collector "
         "the file to write as its second argument; use makedumpfile or 'cp --sparse=always'"),
    ],
)  # fmt: skip
def test_a_collector_that_cannot_feed_its_target(
    line: str, target: Target | None, problem: str
) -> None:
    assert map_collector(line, target, cpus=1).problems == [problem]


# At capture time ------------------------------------------------------------------


def test_capture_time_logs_what_it_cannot_honour_and_dumps_anyway(caplog) -> None:
    config = parse_config(
        "raw /dev/sdb1\ncore_collector makedumpfile -c --split -d 31\n", "kdump.conf"
    ).config
    with caplog.at_level(logging.WARNING, logger="capture.agent.collector"):
        collector = collector_for(config, cpus=4)
    assert collector == EngineCollector(
        DumpOptions(level=DumpLevel(31), codec="zlib", flattened=True),
        "makedumpfile -c --split -d 31 -F",
    )
    assert [record.getMessage() for record in caplog.records] == [
        "kdump.conf:2: makedumpfile --split writes the dump as several files, and kdump saves "
        "one vmcore; remove it (more CPUs are used without it) (the rest of the line is used)"
    ]


@pytest.mark.parametrize("ssh_format", ["", "kdump_capture_ssh_format vmcore\n"])
def test_an_ssh_target_takes_the_seekable_format_by_default(ssh_format: str) -> None:
    """Over SFTP the dump is written at its offsets: no -F, and threads as on a disk."""
    config = parse_config(f"ssh kdump@backup\n{ssh_format}", "kdump.conf").config
    collector = collector_for(config, cpus=2, machine="x86_64")
    assert collector == EngineCollector(
        DumpOptions(level=DumpLevel(31), codec="lzo", threads=2),
        f"{FEDORA_DEFAULT} --num-threads=2",
    )


def test_an_ssh_target_streams_when_told_to() -> None:
    config = parse_config("ssh kdump@backup\nkdump_capture_ssh_format flat\n", "k.conf").config
    collector = collector_for(config, cpus=2, machine="x86_64")
    assert collector == EngineCollector(
        DumpOptions(level=DumpLevel(31), codec="lzo", flattened=True), f"{FEDORA_DEFAULT} -F"
    )


def test_capture_time_default_collector(caplog) -> None:
    config = parse_config("path /var/crash\n", "kdump.conf").config
    with caplog.at_level(logging.WARNING):
        collector = collector_for(config, cpus=2, machine="x86_64")
    assert collector == EngineCollector(
        DumpOptions(level=DumpLevel(31), codec="lzo", threads=2),
        f"{FEDORA_DEFAULT} --num-threads=2",
    )
    assert caplog.records == []
