"""Run QEMU bounded in time and never leave a process behind.

QEMU is started in its own process group; a timeout, an exception, Ctrl-C
or interpreter exit (atexit) kills the whole group.  TCG is always used:
KVM guests hang on the lab machines.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .util import LabError

_LIVE: set[int] = set()

# Dump-disk attachments: name -> (qemu -device args, modules the guest needs)
DISK_DEVICES: dict[str, list[str]] = {
    "virtio-blk": ["-device", "virtio-blk-pci,drive=dump"],
    "virtio-scsi": ["-device", "virtio-scsi-pci,id=hba", "-device", "scsi-hd,drive=dump,bus=hba.0"],
    "ahci": ["-device", "ahci,id=hba", "-device", "ide-hd,drive=dump,bus=hba.0"],
    "lsi53c895a": ["-device", "lsi53c895a,id=hba", "-device", "scsi-hd,drive=dump,bus=hba.0"],
    "megasas": ["-device", "megasas,id=hba", "-device", "scsi-hd,drive=dump,bus=hba.0"],
    "mptsas1068": ["-device", "mptsas1068,id=hba", "-device", "scsi-hd,drive=dump,bus=hba.0"],
    "nvme": ["-device", "nvme,drive=dump,serial=crashlabdump"],
}

NIC_MODELS: dict[str, str] = {
    "virtio-net": "virtio-net-pci",
    "e1000": "e1000",
    "e1000e": "e1000e",
    "rtl8139": "rtl8139",
}

GUESTFWD_IP = "10.0.2.100"
GUESTFWD_PORT = 4321


def _kill_group(pid: int) -> None:
    """SIGKILL a process group we started; ignore it if already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _LIVE.discard(pid)


def _pdeathsig_prefix() -> list[str]:
    """setpriv (util-linux) makes the kernel SIGKILL QEMU if Python dies, even by SIGKILL."""
    return ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


def _sigterm(signum: int, _frame: object) -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so finally/atexit kill QEMU."""
    raise SystemExit(128 + signum)


@atexit.register
def _kill_all() -> None:
    """Last line of defence: no QEMU survives the Python process."""
    for pid in list(_LIVE):
        _kill_group(pid)


@dataclass
class VmSpec:
    """Everything needed to boot one guest."""

    kernel: Path
    initrd: Path
    cmdline: str
    memory_mb: int
    console: Path
    work_disk: Path | None = None
    dump_disk: Path | None = None
    dump_device: str = "virtio-blk"
    nic: str | None = None
    host_port: int | None = None
    netdev: str | None = None  # a whole -netdev value, instead of the one host_port makes
    extra: list[str] = field(default_factory=list)


def qemu_argv(spec: VmSpec) -> list[str]:
    """The QEMU command line: TCG, no defaults, serial to a file, no reboot."""
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-cpu",
        "max",
        "-smp",
        "1",
        "-m",
        str(spec.memory_mb),
        "-serial",
        f"file:{spec.console}",
        "-kernel",
        str(spec.kernel),
        "-initrd",
        str(spec.initrd),
        "-append",
        spec.cmdline,
    ]
    if spec.work_disk:
        argv += [
            "-drive",
            f"file={spec.work_disk},if=none,id=work,format=raw",
            "-device",
            "virtio-blk-pci,drive=work",
        ]
    if spec.dump_disk:
        if spec.dump_device not in DISK_DEVICES:
            raise LabError(
                f"unknown dump device {spec.dump_device!r}; choose from {', '.join(DISK_DEVICES)}"
            )
        argv += ["-drive", f"file={spec.dump_disk},if=none,id=dump,format=raw"]
        argv += DISK_DEVICES[spec.dump_device]
    if spec.nic:
        argv += _nic_args(spec)
    return argv + spec.extra


def _nic_args(spec: VmSpec) -> list[str]:
    """User networking with restrict=on: only a guestfwd to 127.0.0.1."""
    if spec.nic not in NIC_MODELS:
        raise LabError(f"unknown NIC {spec.nic!r}; choose from {', '.join(NIC_MODELS)}")
    netdev = spec.netdev or "user,id=n0,restrict=on"
    if spec.host_port and not spec.netdev:
        netdev += f",guestfwd=tcp:{GUESTFWD_IP}:{GUESTFWD_PORT}-tcp:127.0.0.1:{spec.host_port}"
    return ["-netdev", netdev, "-device", f"{NIC_MODELS[spec.nic]},netdev=n0"]


@dataclass
class VmResult:
    """How a QEMU run ended."""

    returncode: int | None
    timed_out: bool
    seconds: float
    stderr: str


def run_vm(spec: VmSpec, timeout: float, done: tuple[str, float] | None = None) -> VmResult:
    """Boot the guest and wait for QEMU to exit (poweroff/reboot) or time out.

    ``done`` = (marker, grace): once the console shows ``marker``, the guest
    has done its work, and it is stopped if it has not exited ``grace``
    seconds later (not counted as a time-out)."""
    spec.console.unlink(missing_ok=True)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _sigterm)
    errfile = spec.console.with_suffix(".qemu-stderr")
    start = time.monotonic()
    with errfile.open("wb") as err:
        try:
            proc = subprocess.Popen(
                _pdeathsig_prefix() + qemu_argv(spec),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise LabError("qemu-system-x86_64 not found: apt-get install qemu-system-x86") from exc
        _LIVE.add(proc.pid)
        timed_out = False
        try:
            _wait(proc, spec.console, timeout, done)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # also reaps anything QEMU forked; safe if it already exited
            _kill_group(proc.pid)
            proc.wait()
    return VmResult(
        None if timed_out else proc.returncode,
        timed_out,
        time.monotonic() - start,
        errfile.read_text(errors="replace"),
    )


def _wait(proc: subprocess.Popen[bytes], console: Path, timeout: float,
          done: tuple[str, float] | None) -> None:  # fmt: skip
    """proc.wait(timeout), ending early ``done``'s grace after its marker."""
    if done is None:
        proc.wait(timeout=timeout)
        return
    marker, grace = done
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        if console.exists() and marker in console.read_text(errors="replace"):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(grace, max(0.0, deadline - time.monotonic())))
            return
        time.sleep(1)


def console_tail(console: Path, lines: int = 20) -> str:
    """The last console lines, for failure messages."""
    try:
        text = console.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])
