"""Exit statuses and error lines of the command-line front."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from capture.cli import main
from tests.realcores import shared_cores

FLATTENED_HEADER = b"makedumpfile".ljust(4096, b"\0")
END_MARKER = b"\xff" * 16


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capture", *argv], capture_output=True, text=True, check=False
    )


def test_usage_error_is_2() -> None:
    assert run("dmesg").returncode == 2
    assert run("frobnicate").returncode == 2


@pytest.mark.parametrize("command", ["dmesg", "info"])
def test_not_an_elf_file(tmp_path, command: str) -> None:
    path = tmp_path / "notacore"
    path.write_bytes(b"hello, world\n" * 100)
    result = run(command, str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {path}: not a valid ELF file: Magic number does not match"
    ]


def test_missing_file(tmp_path) -> None:
    result = run("info", str(tmp_path / "nothere"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "nothere" in result.stderr
    assert "Traceback" not in result.stderr


def test_empty_file(tmp_path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    result = run("info", str(path))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1


def test_version_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "kdump-capture" in capsys.readouterr().out


def test_start_up_loads_only_what_the_parser_needs() -> None:
    """The package ``__init__``s re-export lazily: importing the CLI must not
    load the classifier or the printk reader, which only some commands run."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, capture.cli; print(*sorted(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert "capture.cli" in loaded
    assert "capture.vmcore.printk" not in loaded
    assert "capture.filter.classify" not in loaded


def test_a_dump_that_goes_well_loads_no_logging(tmp_path: Path) -> None:
    """capture.logs: logging and what it brings (5 ms of start-up) are
    imported only when the engine has something to say."""
    [core] = [core for core in shared_cores() if core.release.startswith("6.1.")]
    argv = ["dump", "-l", "-d", "31", str(core.vmcore), str(tmp_path / "dump")]
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "capture", *argv],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    imported = {
        line.rpartition("|")[2].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "capture.dumpfile.kdump" in imported  # the list holds the dump's imports
    assert "logging" not in imported


def test_parsing_a_command_line_loads_no_shutil() -> None:
    """argparse's own formatter imports shutil (with bz2 and lzma) for the
    terminal width at every add_argument; ours does not."""
    parse = (
        "import sys; from capture.cli import _parser; "
        "argv = ['dump', '-l', 'vmcore', 'out']; _parser(argv).parse_args(argv); "
        "print('shutil' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", parse], capture_output=True, text=True)
    assert result.stdout == "False\n", result.stderr


@pytest.mark.parametrize("argv", [["--help"], ["-h", "dump"]])
def test_the_top_level_help_lists_every_command(argv: list[str]) -> None:
    result = run(*argv)
    assert result.returncode == 0
    for command in ("dmesg", "info", "dump", "rebuild", "check-config", "run", "save-raw"):
        assert f"    {command}" in result.stdout


def vmcore_61() -> str:
    [core] = [core for core in shared_cores() if core.release.startswith("6.1.")]
    return str(core.vmcore)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line on stderr; a failure with more is not what the README promises."""
    [line] = result.stderr.splitlines()
    return line


def test_a_missing_input_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nothere"
    for argv in (["info", str(missing)], ["dmesg", str(missing)],
                 ["rebuild", str(missing), str(tmp_path / "out")]):  # fmt: skip
        result = run(*argv)
        assert result.returncode == 1
        assert error_line(result) == f"error: {missing}: No such file or directory"


def test_rebuild_names_the_file_at_fault(tmp_path: Path) -> None:
    stream = tmp_path / "flat"
    stream.write_bytes(FLATTENED_HEADER + END_MARKER)
    result = run("rebuild", str(stream), str(tmp_path / "nodir" / "out"))
    assert (result.returncode, error_line(result)) == (
        1, f"error: {tmp_path / 'nodir' / 'out'}: No such file or directory"
    )  # fmt: skip
    result = run("rebuild", str(stream), str(tmp_path))
    assert (result.returncode, error_line(result)) == (1, f"error: {tmp_path}: Is a directory")
    stream.write_bytes(FLATTENED_HEADER + b"\0" * 8)
    result = run("rebuild", str(stream), str(tmp_path / "out"))
    assert error_line(result) == (
        f"error: {stream}: the stream ends inside a record header: it was cut short"
    )
    empty = subprocess.run(
        [sys.executable, "-m", "capture", "rebuild", "-", str(tmp_path / "out")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert error_line(empty) == (
        "error: stdin: the stream ends inside the flattened header: it was cut short"
    )


def test_rebuild_into_a_pipe_says_it_needs_a_seekable_file(tmp_path: Path) -> None:
    stream = tmp_path / "flat"
    stream.write_bytes(FLATTENED_HEADER + (8).to_bytes(8, "big") + (3).to_bytes(8, "big")
                       + b"abc" + END_MARKER)  # fmt: skip
    for output in ("-", "/dev/stdout"):
        result = run("rebuild", str(stream), output)  # stdout is a pipe
        assert result.returncode == 1
        assert error_line(result) == (
            "error: /dev/stdout: rebuild needs a seekable file (a regular file or a device), "
            "not a pipe"
        )
    with (tmp_path / "out").open("wb") as out:  # "-" into a file works
        subprocess.run([sys.executable, "-m", "capture", "rebuild", str(stream), "-"],
                       stdout=out, check=True)  # fmt: skip
    assert (tmp_path / "out").read_bytes() == bytes(8) + b"abc"


def closed_pipe_run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe nobody reads any more (``| head -1`` once it exits)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run([sys.executable, "-m", "capture", *argv], stdout=writer,
                              stderr=subprocess.PIPE, text=True, check=False)  # fmt: skip
    finally:
        os.close(writer)


@pytest.mark.parametrize(
    "argv", [["info"], ["dmesg"], ["dump", "-F", "-d", "31"]], ids=["info", "dmesg", "dump-F"]
)
def test_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    vmcore = vmcore_61()
    command = [*argv, vmcore, "-"] if argv[0] == "dump" else [*argv, vmcore]
    result = closed_pipe_run(*command)
    assert (result.returncode, result.stderr) == (128 + 13, "")  # as a shell shows SIGPIPE


def test_info_gives_the_crash_time_as_a_date() -> None:
    # The kernel's own record, found without our parser: CRASHTIME= in VMCOREINFO.
    with open(vmcore_61(), "rb") as file:
        found = re.search(rb"CRASHTIME=(\d+)\n", file.read(1 << 20))
    assert found, "no CRASHTIME in the vmcore's first MiB"
    epoch = int(found[1])
    date = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    result = run("info", vmcore_61())
    [line] = [line for line in result.stdout.splitlines() if line.startswith("crash time:")]
    assert line == f"crash time:    {epoch} ({date:%Y-%m-%d %H:%M:%S} UTC)"
    result = run("info", "--json", vmcore_61())
    assert f'"crash_time": {epoch},' in result.stdout
    assert f'"crash_date": "{date:%Y-%m-%dT%H:%M:%S}Z"' in result.stdout


def test_dump_help_names_the_default_codec_exit_3_and_thread_count_0() -> None:
    text = " ".join(run("dump", "--help").stdout.split())
    assert "zstd unless a flag names another codec" in text
    assert "-z compress with zstd (the default)" in text
    assert "3: it is INCOMPLETE" in text
    assert "0 (makedumpfile's default) and 1 mean no extra thread" in text


def readme_usage() -> dict[str, str]:
    """The README's usage block: each command's lines, joined."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text.split("## Commands\n\n```\n", 1)[1].split("```", 1)[0]
    usage: dict[str, str] = {}
    command = ""
    for line in block.splitlines():
        if line.startswith("kdump-capture "):
            command = line.split()[1]
        usage[command] = f"{usage.get(command, '')} {line}"
    return usage


def test_the_readme_usage_has_every_argument_of_every_command() -> None:
    import argparse

    from capture.cli import _parser

    usage = readme_usage()
    [commands] = [
        action for action in _parser()._actions if isinstance(action, argparse._SubParsersAction)
    ]
    for name, parser in commands.choices.items():
        assert name in usage, f"{name} is not in the README's usage"
        words = set(usage[name].replace("[", " ").replace("]", " ").replace("|", " ").split())
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                names = action.option_strings or [str(action.metavar)]
                assert words & set(names), f"{name} {names[0]}: not in the README's usage"
