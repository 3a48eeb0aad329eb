"""Exit statuses and error lines of the command-line front."""

from __future__ import annotations

import subprocess
import sys

import pytest

from capture.cli import main


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
