"""What installing asks for: pyproject's dependencies and scripts/setup."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_only_what_is_imported_is_required() -> None:
    """lz4 is imported by nothing (no kdump reader knows it); paramiko (with
    cryptography, bcrypt, pynacl, cffi) only by an ssh target: an extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = [requirement.split(">")[0] for requirement in project["dependencies"]]
    assert required == ["zstandard"]
    assert project["optional-dependencies"]["ssh"] == ["paramiko>=3.0"]


def _stub(path: Path, script: str) -> None:
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_setup_says_what_it_installs_before_apt_runs(tmp_path: Path) -> None:
    """A copy of scripts/setup in a tree of stubs: apt-get, dpkg-query (every
    package missing), id (root) and the virtualenv's python."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup", tmp_path / "scripts" / "setup")
    stubs, venv = tmp_path / "stubs", tmp_path / ".venv" / "bin"
    stubs.mkdir()
    venv.mkdir(parents=True)
    _stub(stubs / "apt-get", 'echo "apt-get $1 ran" >&2')
    _stub(stubs / "dpkg-query", "exit 1")
    _stub(stubs / "id", "echo 0")
    _stub(venv / "python", "exit 0")
    result = subprocess.run(
        [str(tmp_path / "scripts" / "setup")], capture_output=True, text=True, check=True,
        env={**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"},
    )  # fmt: skip
    lines = result.stderr.splitlines()
    install = next(at for at, line in enumerate(lines) if line.startswith("setup: apt-get install"))
    assert "binutils" in lines[install] and "makedumpfile" in lines[install]
    assert install < lines.index("apt-get install ran")
    assert lines.index("setup: apt-get update (the package lists)") < lines.index(
        "apt-get update ran"
    )
