"""What scripts/bench and scripts/bench-memory share: the flags that ask each
tool for the same output, and one measured run of a command."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

OUR_FLAGS = {"zlib": ["-c"], "lzo": ["-l"], "snappy": ["-p"], "zstd": ["-z"],
             "none": ["--compress", "none"], "elf": ["-E"]}  # fmt: skip
THEIR_FLAGS = {"zlib": ["-c"], "lzo": ["-l"], "snappy": ["-p"], "zstd": ["-z"],
               "none": [], "elf": ["-E"]}  # fmt: skip


VENV_PYTHON = REPO / ".venv/bin/python"


def in_venv() -> None:
    """Re-run the calling script under the project's venv, whose packages the
    benchmarks import (the shebang finds whatever python3 is first on PATH)."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve() and VENV_PYTHON.exists():
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), *sys.argv])


@dataclass
class Run:
    seconds: float
    max_rss_kb: int
    size: int


class ToolFailed(Exception):
    """The command exited non-zero; the message is the end of its stderr."""


def measure(argv: list[str], output: Path) -> Run:
    """Run ``argv`` (which writes ``output``) and measure it.

    ru_maxrss of a child includes the peak RSS of the process that started it
    (Linux keeps the high-water mark across exec), so callers must stay small.
    """
    output.unlink(missing_ok=True)
    # stderr goes to a file: makedumpfile's progress lines would fill a pipe
    # nobody reads until the end, and block it.
    with tempfile.TemporaryFile() as stderr:
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - started
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            text = stderr.read().decode(errors="replace").replace("\r", "\n")
            raise ToolFailed(f"{' '.join(argv)} failed:\n{text[-2000:]}")
    return Run(seconds, usage.ru_maxrss, output.stat().st_size)


def compile_package() -> None:
    """Byte-compile capture/, so runs time the engine and not the compiler
    (PYTHONDONTWRITEBYTECODE may be set, and then nothing is cached)."""
    compile_all = [str(VENV_PYTHON), "-m", "compileall", "-q", str(REPO / "capture")]
    subprocess.run(compile_all, check=True, stdout=subprocess.DEVNULL)
