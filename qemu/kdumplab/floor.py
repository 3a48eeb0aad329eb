"""The crashkernel floor: the smallest ``crashkernel=`` at which an image
captures a guest, found by bisecting a grid of sizes, both boundary points
then run again (every run a real panic and a real capture).

Two images are measured in the same way: ours (``kdump-capture build-initrd``)
and a reference dracut image of the same kind (systemd + squash) whose only
job is Debian's makedumpfile (``reference-module/99mkdf``). A run passes when
the capture kernel powered off by itself, left one dump directory with a
``vmcore`` and no ``-incomplete`` file, the kdump-compressed header is not
flagged incomplete, and the host's makedumpfile gets the crashed kernel's log
out of it (``sysrq: Trigger a crash``); for our image the manifest must also
say ``complete``. Below the floor the runs fail before any userspace: the
kernel runs out of memory while it unpacks the initramfs.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from .capture import Disk, Machine, build_image, capture
from .kernels import Kernel
from .util import LabError, cache_dir, log

GRID_MB = tuple(range(96, 257, 16))
"""96..256M on a 16M grid."""
REPO = Path(__file__).resolve().parents[2]
REFERENCE_MODULE = Path(__file__).resolve().parent / "reference-module" / "99mkdf"
REFERENCE_DRACUT_MODULES = (
    "bash systemd systemd-initrd dracut-systemd rootfs-block udev-rules shutdown "
    "base fs-lib squash mkdf"
)
"""Our image's dracut modules (capture/firstkernel/initrd.py) with mkdf in
place of kdump-capture."""
LOCAL_CONFIG = """\
ext4 LABEL=kdump
path /var/crash
core_collector makedumpfile -l -d 31
final_action poweroff
failure_action reboot
"""
KDUMP_STATUS_OFFSET = 424  # disk_dump_header.status, after signature, version, utsname, timestamp
KDUMP_STATUS_INCOMPLETE = 0x8


@dataclass
class Trial:
    """One capture at one crashkernel= size."""

    crashkernel_mb: int
    ok: bool
    why: str  # "captured" or what went wrong
    timings: dict[str, float] = field(default_factory=dict)
    capture_memtotal_kb: int | None = None
    out_dir: str = ""
    guest_seconds: dict[str, float] = field(default_factory=dict)
    """The capture kernel's uptime at the log saved and at the dump done
    (its console timestamps, which journald's console lines carry too)."""


@dataclass
class Floor:
    """A bisection's outcome: the floor and every run that shows it."""

    image: str
    memory_mb: int
    floor_mb: int | None  # None: even the top of the grid failed
    trials: list[Trial]


# Images ------------------------------------------------------------------------


def our_image(kern: Kernel, config: Path, output: Path) -> Path:
    """``kdump-capture build-initrd`` for ``config``."""
    return build_image(config, kern.release, kern.moddir, output)


def reference_image(kern: Kernel, output: Path, same_kind: bool = True) -> Path:
    """The reference: dracut with the same modules as ours, 99mkdf instead of
    the agent, squash with zstd. It runs from the same private dracut base
    build-initrd makes, so squash accepts the lab kernel's modules.

    ``same_kind`` (the default) also gives it what build-initrd gives a local
    target's image: the generic disk drivers (plan.py's GENERIC_DRIVERS, so it
    would boot on another machine too) and no fsck helpers; without it the
    image has only 99mkdf's virtio_blk and dracut's fsck helpers."""
    sys.path.insert(0, str(REPO))
    from capture.firstkernel.initrd import _dracut_base, _kmod_root
    from capture.firstkernel.plan import GENERIC_DRIVERS

    with tempfile.TemporaryDirectory(prefix="kdumplab-reference.") as work:
        workdir = Path(work)
        base = _dracut_base(workdir / "dracut")
        (base / "modules.d" / REFERENCE_MODULE.name).symlink_to(REFERENCE_MODULE)
        kmodroot = _kmod_root(workdir / "kmodroot", kern.moddir, kern.release)
        (workdir / "conf.d").mkdir()
        (workdir / "dracut.conf").write_text("")
        argv = ["dracut", "--force", "--quiet", "--no-hostonly", "--no-hostonly-cmdline",
                "--no-early-microcode", "--reproducible", "--conf", str(workdir / "dracut.conf"),
                "--confdir", str(workdir / "conf.d"), "--tmpdir", str(workdir),
                "--kver", kern.release, "--kmoddir", str(kern.moddir),
                "-m", REFERENCE_DRACUT_MODULES, "--squash-compressor", "zstd"]  # fmt: skip
        if same_kind:
            argv += ["--add-drivers", " ".join(GENERIC_DRIVERS), "--nofscks"]
        argv += [str(output), kern.release]
        env = {"dracutbasedir": str(base), "KDUMP_CAPTURE_KMODROOT": str(kmodroot)}
        log("building the reference image: " + " ".join(argv))
        result = subprocess.run(argv, env={**os.environ, **env}, check=False)
        if result.returncode != 0:
            raise LabError(f"dracut failed for the reference image ({result.returncode})")
    return output


# One run -----------------------------------------------------------------------


Kind = Literal["ours", "reference", "agent-start"]
"""What a run must show: ours, a complete dump with our manifest; the
reference, a complete dump; agent-start (an ssh image with no server to
reach), that the agent started and ran to its action line."""


def trial(image: Path, config: Path, crashkernel_mb: int, memory_mb: int, out_dir: Path,
          kind: Kind, timeout: float = 600, dump_device: str = "virtio-blk") -> Trial:  # fmt: skip
    """Capture once at ``crashkernel_mb`` and judge the run by ``kind``."""
    size = crashkernel_mb
    disk = None if kind == "agent-start" else Disk("ext4", "kdump")
    machine = Machine(nic="virtio-net") if kind == "agent-start" else Machine()
    try:
        result = capture("6.1", memory_mb, f"{size}M", config, out_dir, disk, image, timeout,
                         dump_device, machine)  # fmt: skip
        ended, dumps = result.ended, result.dumps
    except LabError as exc:
        ended, dumps = f"lab: {str(exc).splitlines()[0]}", []
    console_file = out_dir / "console.log"
    console = console_file.read_text(errors="replace") if console_file.exists() else ""
    capture_part = console[console.rfind("elfcorehdr=") :] if "elfcorehdr=" in console else ""
    why = _judge(kind, ended, dumps, capture_part) if capture_part else "no capture kernel"
    if why != "captured":
        why = _failure_cause(capture_part) or why
    summary = out_dir / "capture.json"
    timings = json.loads(summary.read_text())["timings"] if summary.exists() else {}
    return Trial(size, why == "captured", why, timings, _capture_memtotal_kb(capture_part),
                 str(out_dir), guest_seconds(capture_part, kind))  # fmt: skip


GUEST_MARKERS: dict[Kind, dict[str, str]] = {
    "ours": {
        "log_saved": r"INFO: core_collector: ",
        "dump_done": r"kdump-capture: the dump was saved",
    },
    "reference": {"log_saved": r"mkdf: log saved", "dump_done": r"mkdf: dump done"},
    "agent-start": {
        "agent_start": r"kdump-capture: capturing",
        "agent_end": r"kdump-capture: action: ",
    },
}
"""Ours prints its core_collector line once vmcore-dmesg.txt is written."""


def _judge(kind: Kind, ended: str, dumps: list[Path], capture_console: str) -> str:
    """'captured', or the first check that fails."""
    killed = re.search(r"Out of memory: Killed process \d+ \(([^)]+)\)", capture_console)
    if killed:
        return f"the OOM killer killed {killed.group(1)}"
    if kind == "agent-start":
        markers = GUEST_MARKERS[kind].values()
        missing = [m for m in markers if not re.search(m, capture_console)]
        return f"agent: no {missing[0]!r} line" if missing else "captured"
    if ended != "power_off":
        return f"ended: {ended}"
    if len(dumps) != 1:
        return f"{len(dumps)} dump directories"
    return _dump_check(dumps[0], kind == "ours")


def guest_seconds(capture_console: str, kind: Kind) -> dict[str, float]:
    """The capture kernel's uptime at each marker line, from its timestamp."""
    found: dict[str, float] = {}
    for name, pattern in GUEST_MARKERS[kind].items():
        match = re.search(r"^\[\s*(\d+\.\d+)\][^\n]*" + pattern, capture_console, re.M)
        if match:
            found[name] = round(float(match.group(1)), 1)
    return found


def _dump_check(dump: Path, ours: bool) -> str:
    """The dump directory holds a whole dump whose log the host can read."""
    names = {p.name for p in dump.iterdir()}
    if "vmcore" not in names or any("incomplete" in n for n in names):
        return f"files: {sorted(names)}"
    with (dump / "vmcore").open("rb") as fh:
        head = fh.read(KDUMP_STATUS_OFFSET + 4)
    if not head.startswith(b"KDUMP   ") or len(head) < KDUMP_STATUS_OFFSET + 4:
        return "vmcore: not kdump-compressed"
    (status,) = struct.unpack_from("<i", head, KDUMP_STATUS_OFFSET)
    if status & KDUMP_STATUS_INCOMPLETE:
        return "vmcore: header says incomplete"
    if ours:
        manifest = json.loads((dump / "manifest.json").read_text())
        if manifest.get("status") != "complete":
            return f"manifest: {manifest.get('status')}"
    return _log_check(dump)


def _log_check(dump: Path) -> str:
    """The host's makedumpfile reads the crashed kernel's log out of the dump."""
    out = dump.parent / f"{dump.name}.host-dmesg"
    proc = subprocess.run(["makedumpfile", "--dump-dmesg", str(dump / "vmcore"), str(out)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        return f"host makedumpfile --dump-dmesg: exit {proc.returncode}"
    if "sysrq: Trigger a crash" not in out.read_text(errors="replace"):
        return "the log in the dump has no sysrq crash"
    return "captured"


FAILURE_CAUSES = (
    (r"System is deadlocked on memory", "OOM panic (initramfs unpack)"),
    (r"Initramfs unpacking failed", "initramfs unpacking failed"),
    (r"Out of memory: Killed process \d+ \(([^)]+)\)", "OOM killer killed {0}"),
    (r"Kernel panic - not syncing: ([^\n]*)", "panic: {0}"),
)


def _failure_cause(capture_console: str) -> str | None:
    for pattern, text in FAILURE_CAUSES:
        match = re.search(pattern, capture_console)
        if match:
            return text.format(*(g.strip() for g in match.groups()))
    return None


def _capture_memtotal_kb(capture_console: str) -> int | None:
    """The capture kernel's 'Memory: X/Y available' at mem_init (the X)."""
    match = re.search(r"Memory: (\d+)K/(\d+)K available", capture_console)
    return int(match.group(1)) if match else None


# The search --------------------------------------------------------------------


def bisect_floor(run_at: Callable[[int], Trial], grid: tuple[int, ...] = GRID_MB) -> tuple[
    int | None, list[Trial]]:  # fmt: skip
    """The smallest grid size that passes twice, assuming more memory never
    hurts: bisect, then run the smallest pass and the largest fail again. A
    pass whose repeat fails counts as a fail and the search goes on above it;
    a fail whose repeat passes stays a fail (the floor must pass every time)."""
    trials: list[Trial] = []
    low, high = -1, len(grid)  # grid[low] failed, grid[high] passed (virtual ends)
    confirmed = False
    while not confirmed:
        while high - low > 1:
            middle = (low + high) // 2
            trials.append(run_at(grid[middle]))
            low, high = (low, middle) if trials[-1].ok else (middle, high)
        if high == len(grid):
            break  # even the top of the grid failed
        trials.append(run_at(grid[high]))
        confirmed = trials[-1].ok
        if not confirmed:
            log(f"{grid[high]}M passed, then failed ({trials[-1].why}): searching above it")
            low, high = high, _next_pass(trials, grid, high)
    if confirmed and low >= 0:
        trials.append(run_at(grid[low]))
        if trials[-1].ok:
            log(f"{grid[low]}M failed, then passed: still counted as a fail")
    return (grid[high] if confirmed else None), trials


def _next_pass(trials: list[Trial], grid: tuple[int, ...], above: int) -> int:
    """The index of the smallest size above ``above`` that passed, else the end."""
    passed = {t.crashkernel_mb for t in trials if t.ok}
    return next((i for i in range(above + 1, len(grid)) if grid[i] in passed), len(grid))


def measure(name: str, image: Path, config: Path, memory_mb: int, out_root: Path, kind: Kind,
            grid: tuple[int, ...] = GRID_MB, timeout: float = 600) -> Floor:  # fmt: skip
    """Bisect ``image``'s floor; every run's directory stays under out_root
    (``timeout``: seconds a run may take; one that thrashes takes them all)."""
    counter = iter(range(1, 100))

    def run_at(size: int) -> Trial:
        out = out_root / name / f"{next(counter):02d}-{size}M"
        log(f"{name}: crashkernel={size}M, {memory_mb} MiB guest")
        result = trial(image, config, size, memory_mb, out, kind, timeout)
        log(f"{name}: {size}M -> {'pass' if result.ok else 'FAIL'} ({result.why})")
        return result

    floor, trials = bisect_floor(run_at, grid)
    found = Floor(name, memory_mb, floor, trials)
    (out_root / f"{name}.json").write_text(json.dumps(asdict(found), indent=2) + "\n")
    return found


def default_out() -> Path:
    return cache_dir() / "floor" / time.strftime("%Y%m%d-%H%M%S")


MEMWATCH = Path(__file__).resolve().parent / "memwatch.sh"


def with_memwatch(config: Path, directory: Path) -> Path:
    """``config`` plus a kdump_pre hook that logs the capture kernel's memory
    to the console (memwatch.sh): where the memory goes at a size that fails."""
    directory.mkdir(parents=True, exist_ok=True)
    watched = directory / f"{config.stem}-memwatch.conf"
    watched.write_text(config.read_text() + f"kdump_pre {MEMWATCH}\n")
    return watched


def local_config(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "local.conf"
    config.write_text(LOCAL_CONFIG)
    return config
