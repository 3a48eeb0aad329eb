"""Finding a target's block device by node, ``LABEL=`` or ``UUID=``, waited for.

Shared by the local and the raw targets: the capture initramfs may have no
udev links yet (or none at all), so blkid probes afresh where they are
missing, and a device still being probed is waited for, within bounds.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time

from capture.agent.config import Device, DeviceBy
from capture.agent.targets import TargetError, Waiting

__all__ = ("APPEAR_TIMEOUT", "DISK_DIR", "resolve_device", "wait_for_device")

DISK_DIR = "/dev/disk"
APPEAR_TIMEOUT = 90.0
"""Seconds a device may take to appear: systemd's default device timeout."""
_RETRY_SECONDS = 1.0


def resolve_device(
    device: Device, disk_dir: str = DISK_DIR, blkid: str = "blkid", partitions: bool = True
) -> str | None:
    """The device node ``device`` names now, or None if it is not there (yet).

    udev's links first, then blkid's own probe where udev has none (the
    capture initramfs, containers). A raw device rarely keeps a filesystem
    label (the first dump overwrites it), so with ``partitions``
    ``LABEL=``/``UUID=`` also match a GPT partition's name and UUID; a
    filesystem target names its filesystem only.
    """
    if device.by is DeviceBy.NODE:
        return device.name if _is_block_device(device.name) else None
    tag = device.by.value
    tags = (tag, f"PART{tag}") if partitions else (tag,)
    for tag in tags:
        link = os.path.join(disk_dir, f"by-{tag.lower()}", device.name)
        if _is_block_device(link):
            return os.path.realpath(link)
    for tag in tags:
        found = _blkid_lookup(blkid, tag, device.name)
        if found is not None:
            return found
    return None


def _blkid_lookup(blkid: str, tag: str, value: str) -> str | None:
    """``blkid -t TAG=value``, probing afresh (a cache may name a device that
    has been written over since)."""
    try:
        found = subprocess.run(
            [blkid, "-c", "/dev/null", "-l", "-o", "device", "-t", f"{tag}={value}"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    node = found.stdout.strip()
    return node if found.returncode == 0 and _is_block_device(node) else None


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def wait_for_device(
    device: Device,
    wait: Waiting,
    timeout: float = APPEAR_TIMEOUT,
    disk_dir: str = DISK_DIR,
    partitions: bool = True,
) -> str:
    """Resolve ``device``, trying again while ``wait`` allows, at most ``timeout`` s.

    The time is the clock's as well as the pauses': on a loaded machine each
    blkid takes seconds, and counting only the pauses made 90 s last 173.

    :raises TargetError: when it has not appeared by then.
    """
    waited, started = 0.0, time.monotonic()
    while True:
        node = resolve_device(device, disk_dir, partitions=partitions)
        if node is not None:
            return node
        waited = max(waited, time.monotonic() - started)
        if waited >= timeout or not wait(_RETRY_SECONDS):
            raise TargetError(
                f"{device}: no such block device (waited {waited:.0f} s); check the name "
                "in kdump.conf with blkid (a /dev/disk/by-id/... name survives a reboot) "
                "and that the capture kernel has its disk driver (extra_modules)"
            )
        waited += _RETRY_SECONDS
