"""``crashlab actions``: the raw target and the capture kernel's actions, with our image.

Each scenario is one real capture (:func:`kdumplab.capture.capture`): the
config the image is built from, the disks the guest gets, what is typed on
its console, and what is looked at afterwards.

* ``raw``: ``raw /dev/disk/by-id/virtio-kdumpraw-part1`` (a GPT partition of a
  disk with a serial, found through udev's link), ``final_action halt``; then
  ``kdump-capture save-raw`` on the host against the partition (a loop device
  over the image) extracts the vmcore.
* ``raw-partlabel``: the same target named ``raw LABEL=kdumpraw`` (the GPT
  partition's name: a raw device keeps no filesystem label).
* ``shell``: the raw image again, its partition holding an ext4 filesystem,
  which the raw target refuses to write over: ``failure_action shell`` on the
  interactive console, where ``echo SHELL-OK-$((6*7))`` and ``exit`` are typed,
  then ``final_action halt``.
* ``rootfs-boot``: a target that is missing, a ``kdump_post`` hook (it writes
  its ``$1`` to /dev/kmsg), ``failure_action dump_to_rootfs`` onto the disk
  the capture command line's ``root=`` names, then ``final_action boot``:
  that disk's own /sbin/init (a busybox script) says it runs and powers off.
* ``reboot``, ``poweroff``, ``halt``: a LABEL target and that final action.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import subprocess
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .capture import CAPTURE_CMDLINE, REPO, CaptureResult, Disk, Machine, build_image, capture
from .initramfs import _busybox
from .kernels import KERNELS, get_kernel
from .util import LabError, log, run

RAW_SERIAL = "kdumpraw"
RAW_BY_ID = f"/dev/disk/by-id/virtio-{RAW_SERIAL}-part1"
RAW_PARTLABEL = "kdumpraw"
ROOT_LABEL = "labroot"
MISSING_LABEL = "crashlab-missing"
ROOTFS_INIT_MARKER = "crashlab-rootfs-init: running from the root filesystem"
POST_MARKER = "crashlab-kdump-post: status"
SHELL_ANSWER = "SHELL-OK-42"
PROMPT = r"kdump:\S*# "
SHELL_CONVERSATION = (
    (PROMPT, "echo SHELL-OK-$((6*7))\n"),
    (rf"(?s){SHELL_ANSWER}.*{PROMPT}", "exit\n"),
)
"""What is typed into the shell action: the answer proves the shell ran it."""

SECTOR = 512
_PART_START = 2048  # 1 MiB in: where partitioning tools put the first partition
_LINUX_DATA = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")

COLLECTOR = "core_collector makedumpfile -l -d 31"
RAW_CONFIG = """\
raw {device}
core_collector makedumpfile -F -l -d 31
failure_action shell
final_action halt
"""
MISSING_TARGET = f"ext4 LABEL={MISSING_LABEL}"
REFUSED_TARGET = f"raw {RAW_BY_ID}"
"""A target that fails at once: the raw partition holds ext4 (CI's cheaper failure)."""
ROOTFS_CONFIG = f"""\
{{target}}
path /var/crash
{COLLECTOR}
kdump_post {{post}}
failure_action dump_to_rootfs
final_action boot
"""
FINAL_CONFIG = f"""\
ext4 LABEL=kdump
path /var/crash
{COLLECTOR}
failure_action shell
final_action {{action}}
"""
POST_HOOK = f"""\
#!/bin/sh
# kdump_post: what status the capture reached, on the console (and so in kexec-dmesg.log)
echo "{POST_MARKER} $1 (KDUMP_CAPTURE_STATUS=$KDUMP_CAPTURE_STATUS)" > /dev/kmsg
"""
ROOTFS_INIT = f"""\
#!/bin/busybox sh
# The lab root filesystem's init: say so, show the dump that landed here, power off.
/bin/busybox mount -t proc proc /proc 2>/dev/null
echo "{ROOTFS_INIT_MARKER} as PID $$" > /dev/kmsg
for f in /var/crash/*/*; do echo "crashlab-rootfs-init: found $f" > /dev/kmsg; done
/bin/busybox sync
/bin/busybox poweroff -f
"""


# Disks ------------------------------------------------------------------------


def gpt_disk(path: Path, size_mb: int, name: str) -> tuple[int, int]:
    """A sparse disk image with a GPT of one Linux partition named ``name``
    (a protective MBR, both headers): its (offset, size) in bytes."""
    sectors = size_mb << 11
    last_usable = sectors - 34
    entry = struct.pack(
        "<16s16sQQQ72s",
        _LINUX_DATA.bytes_le,
        uuid.uuid4().bytes_le,
        _PART_START,
        last_usable,
        0,
        name.encode("utf-16-le"),
    )
    entries = entry.ljust(128 * 128, b"\0")
    disk_guid = uuid.uuid4().bytes_le
    with path.open("wb") as disk:
        disk.truncate(sectors * SECTOR)
        disk.write(_protective_mbr(sectors))
        for current, backup, table in ((1, sectors - 1, 2), (sectors - 1, 1, sectors - 33)):
            header = _gpt_header(current, backup, table, last_usable, disk_guid, entries)
            disk.seek(current * SECTOR)
            disk.write(header)
            disk.seek(table * SECTOR)
            disk.write(entries)
    return _PART_START * SECTOR, (last_usable - _PART_START + 1) * SECTOR


def _protective_mbr(sectors: int) -> bytes:
    mbr = bytearray(SECTOR)
    size = min(sectors - 1, 0xFFFFFFFF)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def _gpt_header(current: int, backup: int, table: int, last_usable: int, disk_guid: bytes,
                entries: bytes) -> bytes:  # fmt: skip
    def pack(crc: int) -> bytes:
        return struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x00010000, 92, crc, 0, current,
                           backup, 34, last_usable, disk_guid, table, 128, 128,
                           zlib.crc32(entries))  # fmt: skip

    return pack(zlib.crc32(pack(0))).ljust(SECTOR, b"\0")


def raw_machine(image: Path, capture_cmdline: str = CAPTURE_CMDLINE) -> Machine:
    """The raw disk on virtio-blk with a serial, so udev gives it a by-id link."""
    return Machine(
        extra=("-drive", f"file={image},if=none,id=raw,format=raw",
               "-device", f"virtio-blk-pci,drive=raw,serial={RAW_SERIAL}"),
        capture_cmdline=capture_cmdline,
    )  # fmt: skip


def ext4_on_partition(image: Path, offset: int, size: int) -> None:
    """An ext4 filesystem inside the image's partition (mke2fs -E offset)."""
    run(["mkfs.ext4", "-q", "-F", "-E", f"offset={offset}", str(image), f"{size >> 10}k"])


def root_tree(directory: Path) -> Path:
    """A tiny root filesystem: busybox, /sbin/init, /etc/os-release, the mount
    points switch-root moves."""
    for sub in ("bin", "sbin", "etc", "dev", "proc", "sys", "run", "tmp", "var/crash"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    # systemd switches only into "an OS tree", one with an os-release
    (directory / "etc" / "os-release").write_text('ID=crashlab\nNAME="crashlab root"\n')
    shutil.copy2(_busybox(), directory / "bin" / "busybox")
    (directory / "bin" / "sh").symlink_to("busybox")
    init = directory / "sbin" / "init"
    init.write_text(ROOTFS_INIT)
    init.chmod(0o755)
    return directory


# save-raw on the host -------------------------------------------------------


@dataclass
class SaveRaw:
    """What ``kdump-capture save-raw`` did with the raw partition."""

    returncode: int
    output: str
    vmcores: list[Path] = field(default_factory=list)
    again: str = ""  # a second save-raw: the device was cleared


def save_raw(image: Path, offset: int, size: int, config: Path, crash_dir: Path) -> SaveRaw:
    """``kdump-capture save-raw`` on a loop device over the partition, twice."""
    loop = run(["losetup", "-f", "--show", "--offset", str(offset), "--sizelimit", str(size),
                str(image)]).strip()  # fmt: skip
    cli = REPO / ".venv" / "bin" / "kdump-capture"
    argv = [str(cli), "save-raw", loop, "--config", str(config), "--path", str(crash_dir)]
    try:
        first = subprocess.run(argv, capture_output=True, text=True, check=False)
        second = subprocess.run(argv, capture_output=True, text=True, check=False)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    vmcores = sorted(crash_dir.glob("*/vmcore*")) if crash_dir.is_dir() else []
    return SaveRaw(first.returncode, first.stdout + first.stderr, vmcores,
                   second.stdout + second.stderr)  # fmt: skip


# The scenarios ----------------------------------------------------------------


@dataclass
class Scenario:
    """One run's inputs, ready for :func:`capture`."""

    config: Path
    disk: Disk | None
    machine: Machine
    conversation: Sequence[tuple[str, str]] = ()
    raw_image: Path | None = None
    raw_partition: tuple[int, int] = (0, 0)


def raw_config(directory: Path, device: str = RAW_BY_ID) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "kdump.conf"
    config.write_text(RAW_CONFIG.format(device=device))
    return config


def rootfs_config(directory: Path, target: str = MISSING_TARGET) -> Path:
    """A failing target (missing by default), the kdump_post hook, dump_to_rootfs, then boot."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # the hook's directory: nobody else may write it
    post = directory / "post.sh"
    post.write_text(POST_HOOK)
    post.chmod(0o755)
    config = directory / "kdump.conf"
    config.write_text(ROOTFS_CONFIG.format(target=target, post=post))
    return config


def final_config(directory: Path, action: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "kdump.conf"
    config.write_text(FINAL_CONFIG.format(action=action))
    return config


def raw_scenario(config: Path, work: Path, memory_mb: int, filesystem: bool) -> Scenario:
    """The raw disk: its partition blank (a dump is written) or holding ext4 (refused)."""
    work.mkdir(parents=True, exist_ok=True)
    image = work / "raw.img"
    offset, size = gpt_disk(image, memory_mb + 256, RAW_PARTLABEL)
    if filesystem:
        ext4_on_partition(image, offset, size)
    conversation = SHELL_CONVERSATION if filesystem else ()
    return Scenario(config, None, raw_machine(image), conversation, image, (offset, size))


def rootfs_scenario(config: Path, work: Path, refused_raw: bool = False) -> Scenario:
    """The root disk on the dump disk's place, named by root= as Fedora's kdumpctl
    passes it; with ``refused_raw`` also the raw disk, its partition holding ext4."""
    tree = root_tree(work / "rootfs")
    cmdline = f"{CAPTURE_CMDLINE} root=LABEL={ROOT_LABEL}"
    machine = Machine(capture_cmdline=cmdline)
    if refused_raw:
        image = work / "raw.img"
        offset, size = gpt_disk(image, 512, RAW_PARTLABEL)
        ext4_on_partition(image, offset, size)
        machine = raw_machine(image, cmdline)
    return Scenario(config, Disk("ext4", ROOT_LABEL, populate=tree), machine)


def final_scenario(config: Path) -> Scenario:
    return Scenario(config, Disk("ext4", "kdump"), Machine())


def run_scenario(scenario: Scenario, kernel: str, memory_mb: int, image: Path, out: Path,
                 timeout: float = 900) -> CaptureResult:  # fmt: skip
    """One capture with ``image`` (built from ``scenario.config``)."""
    return capture(kernel, memory_mb, "256M", scenario.config, out, scenario.disk, image,
                   timeout, machine=scenario.machine,
                   conversation=scenario.conversation)  # fmt: skip


def capture_part(console: Path) -> str:
    """The console from the capture kernel's start on."""
    text = console.read_text(errors="replace").replace("\r", "")
    at = text.rfind("elfcorehdr=")
    return text[at:] if at >= 0 else ""


# The lab command --------------------------------------------------------------

SCENARIOS = ("raw", "raw-partlabel", "shell", "rootfs-boot", "reboot", "poweroff", "halt")
EXPECTED_END = {"raw": "halt", "raw-partlabel": "halt", "shell": "halt",
                "rootfs-boot": "power_off", "reboot": "restart", "poweroff": "power_off",
                "halt": "halt"}  # fmt: skip


def lab_run(name: str, kernel: str, memory_mb: int, out: Path, timeout: float) -> dict[str, object]:
    """Build the image, run the scenario, check what a user would look at."""
    started = time.monotonic()
    kern = get_kernel(kernel)
    build = out / "build"
    if name in ("raw", "raw-partlabel", "shell"):
        config = raw_config(
            build, RAW_BY_ID if name != "raw-partlabel" else f"LABEL={RAW_PARTLABEL}"
        )
        scenario = raw_scenario(config, out / "disks", memory_mb, filesystem=name == "shell")
    elif name == "rootfs-boot":
        scenario = rootfs_scenario(rootfs_config(build), out / "disks")
    else:
        scenario = final_scenario(final_config(build, name))
    image = build_image(scenario.config, kern.release, kern.moddir, build / "capture.img")
    built = time.monotonic()
    result = run_scenario(scenario, kernel, memory_mb, image, out / "run", timeout)
    checks = _checks(name, scenario, result, out)
    summary: dict[str, object] = {
        "scenario": name, "kernel": kern.release, "ended": result.ended,
        "passed": all(checks.values()), "checks": checks,
        "build_seconds": round(built - started, 1),
        "run_seconds": round(time.monotonic() - built, 1), "timings": result.timings,
    }  # fmt: skip
    (out / "actions.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _checks(name: str, scenario: Scenario, result: CaptureResult, out: Path) -> dict[str, bool]:
    part = capture_part(result.console)
    checks = {f"ended {EXPECTED_END[name]}": result.ended == EXPECTED_END[name]}
    if name in ("raw", "raw-partlabel"):
        assert scenario.raw_image is not None
        saved = save_raw(scenario.raw_image, *scenario.raw_partition, scenario.config,
                         out / "saved")  # fmt: skip
        checks["save-raw extracted a vmcore"] = saved.returncode == 0 and [
            p.name for p in saved.vmcores] == ["vmcore"]  # fmt: skip
        checks["the device was cleared"] = "holds no dump" in saved.again
    elif name == "shell":
        shell = result.shell_console.read_text(errors="replace") if result.shell_console else ""
        checks["the shell answered"] = re.search(rf"^{SHELL_ANSWER}\r?$", shell, re.M) is not None
        checks["the final action after the shell"] = "action: halt" in shell
    elif name == "rootfs-boot":
        checks["kdump_post saw status 1"] = f"{POST_MARKER} 1 " in part
        checks["the root filesystem's init ran"] = ROOTFS_INIT_MARKER in part
        checks["the dump is on the root filesystem"] = any(
            (d / "vmcore").exists() and (d / "kexec-dmesg.log").exists() for d in result.dumps
        )
    else:
        checks["one complete dump"] = len(result.dumps) == 1 and all(
            json.loads((d / "manifest.json").read_text())["status"] == "complete"
            for d in result.dumps
        )
    return checks


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``crashlab actions``."""
    p = sub.add_parser("actions", help="the raw target and the actions with our image")
    p.add_argument("--scenario", choices=SCENARIOS, action="append", required=True)
    p.add_argument("--kernel", choices=list(KERNELS), default="6.1")
    p.add_argument("--memory", type=int, default=2048, help="guest MiB")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", required=True, help="output directory (one subdirectory a scenario)")


def command(a: argparse.Namespace) -> int:
    results = []
    for name in a.scenario:
        out = Path(a.out).resolve() / name
        if out.exists():
            raise LabError(f"{out} exists: give another --out")
        log(f"actions: {name} on {a.kernel}")
        try:
            results.append(lab_run(name, a.kernel, a.memory, out, a.timeout))
        except LabError as error:
            results.append({"scenario": name, "passed": False, "error": str(error)[-2000:]})
    print(json.dumps(results, indent=2))
    return 0 if all(r["passed"] for r in results) else 1


__all__ = ("SCENARIOS", "add_parser", "command", "lab_run")
