"""Real vmcores for the tests, decompressed once into the cache.

The shared fixtures (../shared/fixtures, or $KDUMP_CAPTURE_FIXTURES) hold two
real vmcores with makedumpfile's reference outputs. Outside the workplace that
provides them, the QEMU lab makes vmcores instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KDUMP_CAPTURE_CACHE", Path.home() / ".cache" / "kdump-capture"))


@dataclass(frozen=True)
class RealCore:
    """A real vmcore and the reference files made from it."""

    name: str
    vmcore: Path
    reference: Path
    """Folder with kernel-version, vmcore-dmesg.txt, report.txt, ..."""

    @property
    def release(self) -> str:
        return (self.reference / "kernel-version").read_text().strip()


def fixtures_dir() -> Path | None:
    """The shared fixtures folder, if this machine has one."""
    configured = os.environ.get("KDUMP_CAPTURE_FIXTURES")
    candidates = [Path(configured)] if configured else []
    candidates.append(REPO.parent / "shared" / "fixtures")
    return next((path for path in candidates if (path / "README.md").is_file()), None)


def shared_cores() -> list[RealCore]:
    """The shared fixtures' vmcores, decompressed into the cache on first use."""
    root = fixtures_dir()
    if root is None:
        return []
    cores = []
    for folder in sorted(root.glob("vmcore-*")):
        compressed = folder / "vmcore.elf.zst"
        if compressed.is_file():
            cores.append(RealCore(folder.name, _decompressed(compressed, folder.name), folder))
    return cores


def _decompressed(source: Path, name: str) -> Path:
    target = CACHE / "fixtures" / name / "vmcore"
    stamp = target.with_suffix(".source-size")
    if target.is_file() and stamp.is_file() and stamp.read_text() == str(source.stat().st_size):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    # The fixtures were made with `zstd --long=27`: allow that window.
    decompressor = zstandard.ZstdDecompressor(max_window_size=1 << 27)
    with source.open("rb") as compressed, partial.open("wb") as plain:
        decompressor.copy_stream(compressed, plain)
    partial.replace(target)
    stamp.write_text(str(source.stat().st_size))
    return target


def main() -> None:
    """Print the path of one real vmcore (used by scripts/quickstart)."""
    cores = shared_cores()
    if not cores:
        raise SystemExit("no real vmcore: set KDUMP_CAPTURE_FIXTURES to the shared fixtures folder")
    print(cores[0].vmcore)


if __name__ == "__main__":
    main()
