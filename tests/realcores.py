"""Real vmcores for the tests, with makedumpfile's reference outputs.

The shared fixtures (../shared/fixtures, or $KDUMP_CAPTURE_FIXTURES) hold two
real vmcores, decompressed once into the cache. Where they are absent (or
with KDUMP_CAPTURE_FIXTURES=lab), the QEMU lab makes the same two vmcores
(Debian 6.1 and 6.12, 512 MiB, the fixtures' workload) and the references
are made from them by the same makedumpfile versions: 1.7.2 for the log,
1.7.8 (sid chroot, tests/oracles.py) for the caller-id log and the page report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

if TYPE_CHECKING:
    from capture.vmcore import Vmcore

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
    """The real vmcores: the shared fixtures', or the lab's where there are none."""
    if os.environ.get("KDUMP_CAPTURE_FIXTURES") == "lab":
        return lab_cores()
    root = fixtures_dir()
    if root is None:
        return lab_cores()
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


def core_61() -> RealCore:
    """The Debian 6.1 vmcore, which Debian 12's makedumpfile 1.7.2 classifies
    exactly as 1.7.9 does: its outputs are the reference byte for byte."""
    [core] = [core for core in shared_cores() if core.release.startswith("6.1.")]
    return core


LABELS = {
    "cache": "Non-private cache pages",
    "cache_private": "Private cache pages",
    "user": "User process data pages",
    "free": "Free pages",
    "hwpoison": "Hwpoison pages",
    "offline": "Offline pages",
}
"""The filter's categories and the line of makedumpfile's report counting each."""


def makedumpfile_counts(core: RealCore, level: int) -> dict[str, int]:
    """Pages per category (and "zero", "remaining") in the reference report
    (``report.txt``: makedumpfile's counts in hex) for dump level ``level``."""
    report = (core.reference / "report.txt").read_text()
    section = report.split(f"-d {level}\n", 1)[1].split("###", 1)[0]
    counts = {}
    for key, label in {**LABELS, "zero": "Pages filled with zero"}.items():
        match = re.search(rf"{label}\s*: 0x([0-9a-f]+)", section)
        assert match, label
        counts[key] = int(match.group(1), 16)
    remaining = re.search(r"Remaining pages\s*: 0x([0-9a-f]+)", section)
    assert remaining
    counts["remaining"] = int(remaining.group(1), 16)
    return counts


def kernel_segment_pages(vmcore: Vmcore) -> int:
    """Pages of the kernel-image PT_LOAD, which makedumpfile counts twice."""
    image = next(s for s in vmcore.core.segments if s.vaddr >= 0xFFFFFFFF80000000)
    return image.memsz // vmcore.page_size


LEVELS = (0, 1, 2, 4, 8, 16, 31)


def lab_cores() -> list[RealCore]:
    """Vmcores the QEMU lab makes (cached), with their reference outputs."""
    sys.path.insert(0, str(REPO / "qemu"))
    from kdumplab import make_vmcore

    cores = []
    for kernel in ("6.1", "6.12"):
        result = make_vmcore(kernel=kernel, memory_mb=512)
        reference = result.cache_entry / "reference"
        if not (reference / "report.txt").is_file():
            _make_references(result.vmcore, result.kernel_release, reference)
        cores.append(RealCore(f"lab-{kernel}-512M", result.vmcore, reference))
    return cores


def _make_references(vmcore: Path, release: str, reference: Path) -> None:
    from tests import oracles

    partial = reference.with_name("reference.partial")
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "kernel-version").write_text(release + "\n")
    log = partial / "vmcore-dmesg.txt"
    log.unlink(missing_ok=True)
    subprocess.run(["makedumpfile", "--dump-dmesg", str(vmcore), str(log)], check=True)
    callerid = partial / "vmcore-dmesg-callerid.txt"
    callerid.unlink(missing_ok=True)
    _checked(oracles.makedumpfile_new("--dump-dmesg", vmcore, callerid))
    sections = []
    for level in LEVELS:
        out = partial / "dump"
        out.unlink(missing_ok=True)
        run = _checked(
            oracles.makedumpfile_new("-l", "-d", str(level), "--message-level", "23", vmcore, out)
        )
        report = re.search(
            r"^Original pages.*?^Total pages.*?$", run.stdout, re.MULTILINE | re.DOTALL
        )
        assert report, run.stdout
        sections.append(f"### makedumpfile 1.7.8 -l -d {level}\n{report.group(0)}\n")
        out.unlink()
    (partial / "report.txt").write_text("".join(sections))
    partial.replace(reference)


def _checked(run: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if run.returncode:
        raise RuntimeError(f"makedumpfile failed: {run.stdout}{run.stderr}")
    return run


def main() -> None:
    """Print the path of one real vmcore (used by scripts/quickstart)."""
    print(shared_cores()[0].vmcore)


if __name__ == "__main__":
    main()
