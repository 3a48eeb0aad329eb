"""``crashlab capture``: one real capture with the project's own image.

The first kernel (the lab's busybox initramfs) arms ``kexec -p`` with our
capture initramfs (``kdump-capture build-initrd``, or one given) and the
capture command line Fedora's kdumpctl would use, then panics with
``echo c > /proc/sysrq-trigger``. The capture kernel runs the frozen agent,
which writes to a real filesystem image on the dump disk and powers off.
The host then copies the dump directory off that image and leaves it, the
console log and the timings in the output directory.

A capture kernel that halts (``final_action halt``) stays up in QEMU: the
console's "System halted" ends QEMU through its QMP socket. With a
``conversation`` the capture kernel's console is a second serial port
(ttyS1: one 8250 driver serves one console) on a socket the host types into
(the ``shell`` action), logged to console-ttyS1.log and, once QEMU is gone,
appended to console.log, which then reads as one console.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .initramfs import first_initramfs
from .kernels import get_kernel
from .lab import first_cmdline, normalise_workload
from .util import LabError, cache_dir, log, run
from .vm import VmSpec, console_tail, run_vm

REPO = Path(__file__).resolve().parents[2]
CAPTURE_CMDLINE = "console=ttyS0 irqpoll nr_cpus=1 reset_devices panic=10 udev.children-max=2"
"""Only what kdumpctl adds (b.4): the image carries everything else."""
SMALL_WORKLOAD = {
    "CACHE_MB": "0",
    "SHM_MB": "8",
    "ANON_MB": "32",
    "ZERO_MB": "8",
    "SLAB_FILES": "0",
}

# console markers, in the order they appear: name -> regular expression
MARKERS = {
    "capture_kernel": r"Command line:.*elfcorehdr=",
    "agent_start": r"kdump-capture: capturing",
    "dump_dir": r"saving to ",
    "log_saved": r"core_collector: ",  # the agent's next line once vmcore-dmesg.txt is published
    "dump_done": r"kdump-capture: (the dump was saved|only part was saved|nothing could be saved)",
    "agent_end": r"kdump-capture: action: ",
    "power_off": r"reboot: Power down",
    "restart": r"reboot: Restarting system",
    "halted": r"reboot: System halted",
}
SHELL_CONSOLE = "console-ttyS1.log"
"""The interactive console's log (ttyS1: the capture kernel's /dev/console)."""


@dataclass(frozen=True)
class Disk:
    """The dump disk: a filesystem image the capture writes onto."""

    fstype: str = "ext4"
    label: str | None = "kdump"
    uuid: str | None = None
    size_mb: int = 0  # 0: guest memory + 256 MiB
    populate: Path | None = None
    """A directory the new ext4 gets as its tree (mkfs.ext4 -d): a lab root filesystem."""


@dataclass(frozen=True)
class CaptureResult:
    """What a capture left behind (under out_dir)."""

    out_dir: Path
    dumps: list[Path]  # the dump directories copied off the disk
    console: Path
    timings: dict[str, float]
    ended: str  # power_off, restart, halt or timeout
    shell_console: Path | None = None  # with a conversation: ttyS1's log


def build_image(config: Path, kver: str, kmoddir: Path, output: Path,
                kdump_dir: Path | None = None, agent: Path | None = None,
                systemd: bool = True) -> Path:  # fmt: skip
    """``kdump-capture build-initrd`` from this tree's venv (``kdump_dir``: where
    the hooks and propagate's known_hosts are, instead of /etc/kdump; ``agent``:
    a frozen agent's tree instead of scripts/build-agent's; ``systemd`` False:
    dracut's shell init, the agent run from its hook)."""
    cli = REPO / ".venv" / "bin" / "kdump-capture"
    argv = [str(cli) if cli.exists() else "kdump-capture", "build-initrd", "--config", str(config),
            "--kver", kver, "--kmoddir", str(kmoddir), "--output", str(output)]  # fmt: skip
    argv += ["--kdump-dir", str(kdump_dir)] if kdump_dir else []
    argv += [] if systemd else ["--no-systemd"]
    # $CRASHLAB_AGENT: the same for every image of a run (e.g. the tests')
    agent_tree = agent or os.environ.get("CRASHLAB_AGENT")
    argv += ["--agent", str(agent_tree)] if agent_tree else []
    log("building the capture image: " + " ".join(argv))
    result = subprocess.run(argv, check=False)
    if result.returncode != 0:
        raise LabError(f"build-initrd failed ({result.returncode})")
    return output


def make_disk(path: Path, disk: Disk, memory_mb: int) -> None:
    """A sparse filesystem image with the label/UUID the config names."""
    with path.open("wb") as fh:
        fh.truncate((disk.size_mb or memory_mb + 256) << 20)
    if disk.fstype == "ext4":
        argv = ["mkfs.ext4", "-q", "-F"] + (["-L", disk.label] if disk.label else [])
        argv += ["-U", disk.uuid] if disk.uuid else []
        argv += ["-d", str(disk.populate)] if disk.populate else []
    elif disk.fstype == "xfs" and disk.populate is None:
        argv = ["mkfs.xfs", "-q", "-f"] + (["-L", disk.label] if disk.label else [])
        argv += ["-m", f"uuid={disk.uuid}"] if disk.uuid else []
    else:
        raise LabError(f"dump disk filesystem {disk.fstype!r}: ext4 or xfs (populate: ext4)")
    run([*argv, str(path)])


def config_path_value(config: Path) -> str:
    """kdump.conf's ``path`` (default /var/crash)."""
    for line in config.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "path":
            return words[1]
    return "/var/crash"


def copy_dumps(image: Path, fstype: str, path: str, out: Path) -> list[Path]:
    """Copy ``path``'s dump directories off the image into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    if fstype == "ext4":
        listing = run(["debugfs", "-R", f"ls -p {path}", str(image)])
        names = [f.split("/")[5] for f in listing.splitlines() if f.count("/") >= 6]
        names = [n for n in names if n not in (".", "..", "")]
        for name in names:
            run(["debugfs", "-R", f"rdump {path}/{name} {out}", str(image)])
        return sorted(out / n for n in names)
    mnt = Path(os.environ.get("TMPDIR", "/tmp")) / f"crashlab-mnt-{os.getpid()}"
    mnt.mkdir(exist_ok=True)
    run(["mount", "-o", "loop,ro", str(image), str(mnt)])
    try:
        src = mnt / path.lstrip("/")
        names = sorted(p.name for p in src.iterdir()) if src.is_dir() else []
        for name in names:
            shutil.copytree(src / name, out / name)
    finally:
        run(["umount", str(mnt)])
        mnt.rmdir()
    return sorted(out / n for n in names)


class _ConsoleWatch(threading.Thread):
    """Notes when each marker first shows up on the console (host clock), and
    ends QEMU (``qmp``) once the capture kernel has halted: a halted guest
    never exits by itself."""

    def __init__(self, console: Path, qmp: Path | None = None, also: Path | None = None) -> None:
        super().__init__(daemon=True)
        self.consoles = [console] + ([also] if also else [])
        self.qmp = qmp
        self.seen: dict[str, float] = {}
        self.done = False
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.done:
            self.scan()
            time.sleep(0.2)
        self.scan()  # what the last lines before QEMU exited said

    def scan(self) -> None:
        text = "".join(c.read_text(errors="replace") for c in self.consoles if c.exists())
        for name, pattern in MARKERS.items():
            if name not in self.seen and re.search(pattern, text):
                self.seen[name] = round(time.monotonic() - self.start_time, 1)
        if "halted" in self.seen and "capture_kernel" in self.seen and self.qmp is not None:
            _qmp_quit(self.qmp)
            self.qmp = None


def _on_ttys1(cmdline: str) -> str:
    """The capture command line with its console on ttyS1 instead of ttyS0."""
    words = [w for w in cmdline.split() if w != "console=ttyS0"]
    return " ".join([*words, "console=ttyS1"])


def _qmp_quit(path: Path) -> None:
    """Ask QEMU to exit through its QMP socket (best effort: the timeout stays)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            sock.recv(4096)  # the greeting
            sock.sendall(b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n')
            time.sleep(0.5)
    except OSError as error:
        log(f"QMP quit failed ({error}); the timeout will end QEMU")


class _Conversation(threading.Thread):
    """Types into the interactive console: for each (regular expression, text),
    waits until the console has printed a match after the previous one, then
    sends the text. What was said and answered is in the console's log."""

    def __init__(self, path: Path, steps: Sequence[tuple[str, str]]) -> None:
        super().__init__(daemon=True)
        self.path, self.steps = path, list(steps)
        self.done = False
        self.answered = 0  # steps whose text was sent

    def run(self) -> None:
        sock = self._connect()
        if sock is None:
            return
        with sock:
            heard = ""
            for pattern, text in self.steps:
                while not (found := re.search(pattern, heard)):
                    chunk = self._read(sock)
                    if chunk is None:
                        return
                    heard += chunk
                heard = heard[found.end() :]
                sock.sendall(text.encode())
                self.answered += 1

    def _connect(self) -> socket.socket | None:
        while not self.done:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                sock.settimeout(0.5)
                return sock
            except OSError:
                sock.close()
                time.sleep(0.2)
        return None

    def _read(self, sock: socket.socket) -> str | None:
        """What the console printed next; None once QEMU is gone."""
        while not self.done:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return None
            return data.decode(errors="replace") if data else None
        return None


@dataclass(frozen=True)
class Machine:
    """What else the guest has: a NIC on a user network, more QEMU arguments,
    another capture command line (the lab's default is kdumpctl's)."""

    nic: str | None = None  # a vm.NIC_MODELS name
    netdev: str | None = None  # the whole -netdev value (id=n0), e.g. with guestfwd
    extra: tuple[str, ...] = ()
    capture_cmdline: str = CAPTURE_CMDLINE


def capture(kernel: str, memory_mb: int, crashkernel: str, config: Path, out_dir: Path,
            disk: Disk | None, initrd: Path | None = None, timeout: float = 600,
            dump_device: str = "virtio-blk", machine: Machine = Machine(),
            conversation: Sequence[tuple[str, str]] = ()) -> CaptureResult:  # fmt: skip
    """Boot, panic, capture with our image; copy the dumps off the disk.

    ``conversation``: (expected, typed) pairs said over the capture kernel's
    interactive console (see the module's text), e.g. to the ``shell`` action.
    """
    kern = get_kernel(kernel)
    out_dir.mkdir(parents=True, exist_ok=True)
    if initrd is None:
        initrd = build_image(config, kern.release, kern.moddir, out_dir / "capture.img")
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"crashlab-capture-{os.getpid()}"
    work.mkdir(exist_ok=True)
    console = out_dir / "console.log"
    image = work / "dump.img"
    qmp = work / "qmp.sock"
    extra = [*machine.extra, "-qmp", f"unix:{qmp},server=on,wait=off"]
    capture_cmdline = machine.capture_cmdline
    shell_console = out_dir / SHELL_CONSOLE if conversation else None
    if shell_console is not None:
        shell_console.unlink(missing_ok=True)
        extra += ["-chardev", f"socket,id=shell,path={work / 'shell.sock'},server=on,wait=off,"
                  f"logfile={shell_console}", "-serial", "chardev:shell"]  # fmt: skip
        capture_cmdline = _on_ttys1(capture_cmdline)
    first = first_initramfs(kern, initrd, capture_cmdline)
    talk = _Conversation(work / "shell.sock", conversation) if conversation else None
    try:
        if disk is not None:
            make_disk(image, disk, memory_mb)
        wl = normalise_workload(SMALL_WORKLOAD)
        spec = VmSpec(kern.vmlinuz, first, first_cmdline(crashkernel, wl), memory_mb, console,
                      None, image if disk else None, dump_device, machine.nic,
                      netdev=machine.netdev, extra=extra)  # fmt: skip
        log(f"capture: {kern.release}, {memory_mb} MiB, crashkernel={crashkernel}")
        watch = _ConsoleWatch(console, qmp, shell_console)
        watch.start()
        if talk is not None:
            talk.start()
        vm = run_vm(spec, timeout)
        watch.done = True
        watch.join()
        if talk is not None:
            talk.done = True
            talk.join()
        if shell_console is not None and shell_console.exists():
            with console.open("ab") as whole:
                whole.write(shell_console.read_bytes())
        ended = "timeout" if vm.timed_out else _ending(console)
        dumps = (
            copy_dumps(image, disk.fstype, config_path_value(config), out_dir / "dumps")
            if disk
            else []
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    timings = _timings(watch.seen, vm.seconds)
    _write_summary(out_dir, kern.release, memory_mb, crashkernel, initrd, timings, ended, dumps,
                   capture_cmdline)  # fmt: skip
    if vm.timed_out:
        raise LabError(f"QEMU timed out after {timeout:.0f}s\n{console_tail(console)}")
    return CaptureResult(out_dir, dumps, console, timings, ended, shell_console)


def _ending(console: Path) -> str:
    text = console.read_text(errors="replace")
    tail = text[text.rfind("elfcorehdr=") :] if "elfcorehdr=" in text else text
    if "reboot: Power down" in tail:
        return "power_off"
    if "reboot: Restarting system" in tail or "Rebooting in" in tail:
        return "restart"
    if "reboot: System halted" in tail:
        return "halt"
    return "exited"


def _timings(seen: dict[str, float], total: float) -> dict[str, float]:
    """Seconds from the capture kernel's start to each later marker."""
    out: dict[str, float] = {"qemu_total": round(total, 1)}
    start = seen.get("capture_kernel")
    for name, at in seen.items():
        out[f"{name}_at"] = at
        if start is not None and name != "capture_kernel":
            out[f"capture_kernel_to_{name}"] = round(at - start, 1)
    return out


def _write_summary(out: Path, release: str, memory_mb: int, crashkernel: str, initrd: Path,
                   timings: dict[str, float], ended: str, dumps: list[Path],
                   capture_cmdline: str) -> None:  # fmt: skip
    summary: dict[str, Any] = {
        "kernel_release": release,
        "memory_mb": memory_mb,
        "crashkernel": crashkernel,
        "capture_cmdline": capture_cmdline,
        "initrd": str(initrd),
        "initrd_bytes": initrd.stat().st_size,
        "ended": ended,
        "timings": timings,
        "dumps": [str(d) for d in dumps],
    }
    (out / "capture.json").write_text(json.dumps(summary, indent=2) + "\n")


def default_out() -> Path:
    return cache_dir() / "captures" / time.strftime("%Y%m%d-%H%M%S")
