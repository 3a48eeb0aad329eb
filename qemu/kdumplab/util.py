"""Shared helpers: cache location, subprocess wrappers, error type.

Every download and build output lives under the cache directory so that the
repository stays clean and repeated runs are cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


class LabError(RuntimeError):
    """A lab step failed; the message is meant to be shown to a human as is."""


def cache_dir() -> Path:
    """Return (and create) the cache root; $KDUMP_CAPTURE_CACHE overrides it."""
    root = os.environ.get("KDUMP_CAPTURE_CACHE") or str(Path.home() / ".cache" / "kdump-capture")
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def log(msg: str) -> None:
    """Progress goes to stderr so stdout stays machine-readable."""
    print(f"[crashlab] {msg}", file=sys.stderr, flush=True)


def run(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    timeout: float = 600,
    input_bytes: bytes | None = None,
) -> str:
    """Run a host command, raising LabError with its stderr on failure."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            input=input_bytes,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"command not found: {cmd[0]} (install it with apt)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timeout after {timeout}s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {err}")
    return proc.stdout.decode(errors="replace")


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-able object, used as a cache key."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """Hash a file's content so caches notice a changed input file."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file so an interrupted run never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
