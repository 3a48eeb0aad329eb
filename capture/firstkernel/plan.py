"""What the capture initramfs must hold, decided from kdump.conf.

``build-initrd`` writes this plan into a directory that the dracut module
(dracut-module/99kdump-capture) installs from, so the module stays a list of
installs and the configuration has one reader, the agent's own.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from capture.agent.config import (
    KDUMP_DIR,
    Config,
    DeviceBy,
    FilesystemTarget,
    HookStage,
    NfsTarget,
    RawTarget,
    SshTarget,
    read_config,
)
from capture.errors import CaptureError

GENERIC_DRIVERS = (
    # disks of a machine other than the one that built the image
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ahci",
    "ata_piix",
    "nvme",
    "megaraid_sas",
    "mpt3sas",
    "mptsas",
    "sym53c8xx",
    "vmw_pvscsi",
    "hv_storvsc",
    "xen-blkfront",
    "dm_mod",
)
NIC_BUS_DRIVERS = ("virtio_pci",)
"""Of GENERIC_DRIVERS, what a NIC needs too (virtio-net sits on virtio_pci)."""
NETWORK_DRIVERS = (
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "8139cp",
    "8139too",
    "r8169",
    "vmxnet3",
    "hv_netvsc",
    "xen-netfront",
    "af_packet",
)
FILESYSTEMS = ("ext4", "xfs")
"""Kernel modules for the root filesystem, only when it is mounted (no target,
dump_to_rootfs, boot): xfs alone is 4 MiB unpacked."""

ACTION_TOOLS = (
    "sh",
    "mount",
    "umount",
    "blkid",
    "sync",
    "dmesg",
    "reboot",
    "poweroff",
    "halt",
    "switch_root",
    "systemctl",
    "sleep",
)
NETWORK_TOOLS = ("ip",)
NFS_TOOLS = ("mount.nfs", "mount.nfs4")
SSH_FILES = (
    "/root/.ssh/known_hosts",
    "/etc/ssh/ssh_known_hosts",
    "/root/.ssh/config",
    "/etc/ssh/ssh_config",
)


@dataclass
class Plan:
    """Everything the module installs besides the agent."""

    config_text: str
    files: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=lambda: list(ACTION_TOOLS))
    dirs: list[str] = field(default_factory=list)
    drivers: list[str] = field(default_factory=lambda: list(GENERIC_DRIVERS))
    depends: list[str] = field(default_factory=lambda: ["base", "fs-lib"])
    cmdline: list[str] = field(default_factory=list)
    ssh: bool = False
    snappy: bool = False
    switch_root: bool = False
    network: bool = False
    root_mounted: bool = False
    """No target, dump_to_rootfs or boot: the root filesystem is mounted (its
    modules and fsck helpers go in)."""
    known_hosts: str | None = None
    """``<kdump dir>/known_hosts`` (what propagate recorded), for an ssh target:
    the image carries it as /etc/kdump/known_hosts, where the agent reads it."""


def make_plan(config_path: str, kdump_dir: str = KDUMP_DIR) -> Plan:
    """Read kdump.conf as check-config does and decide what the image needs.

    :raises CaptureError: for a line the capture kernel would skip.
    """
    parsed = read_config(config_path)
    if parsed.skipped:
        problems = "\n".join(str(p) for p in parsed.skipped)
        raise CaptureError(f"fix these lines first (kdump-capture check-config):\n{problems}")
    config = parsed.config
    plan = Plan(config_text=persistent_config(config, _read(config_path)))
    _hooks(plan, config, kdump_dir)
    for target in [config.target, *config.fallback]:
        if target is not None:
            _target(plan, target.value)
    if config.extra_bins:
        plan.files += config.extra_bins.value
    if config.extra_modules:
        plan.drivers += config.extra_modules.value
    if plan.ssh:
        plan.files.append(config.sshkey.value)
        recorded = os.path.join(kdump_dir, "known_hosts")
        if os.path.isfile(recorded):
            plan.known_hosts = recorded
            plan.files.append(recorded)  # also listed: a change to it makes the image stale
    collector = config.core_collector.value.split() if config.core_collector else []
    plan.snappy = (
        bool(collector)
        and os.path.basename(collector[0]) == "makedumpfile"
        and ("-p" in collector[1:])
    )
    actions = {config.failure_action.value.value, config.final_action.value.value}
    plan.switch_root = "boot" in actions
    plan.root_mounted = config.target is None or bool(actions & {"boot", "dump_to_rootfs"})
    if plan.root_mounted:
        plan.drivers += FILESYSTEMS
    targets = [setting.value for setting in [config.target, *config.fallback] if setting]
    if targets and all(isinstance(t, SshTarget) for t in targets) and not plan.root_mounted:
        # Nothing is written to a disk: the disk drivers (5.3 MiB of modules,
        # which udev would load for the machine's controllers and the crash
        # kernel hold) stay out, unless extra_modules asks for them.
        asked = set(config.extra_modules.value) if config.extra_modules else set()
        disks = set(GENERIC_DRIVERS) - set(NIC_BUS_DRIVERS) - asked
        plan.drivers = [driver for driver in plan.drivers if driver not in disks]
    return plan


def _read(path: str) -> str:
    return Path(path).read_bytes().decode("utf-8", "surrogateescape")


def _hooks(plan: Plan, config: Config, kdump_dir: str) -> None:
    """kdump_pre/post/emergency and every file of pre.d/post.d/emergency.d."""
    for stage in HookStage:
        setting = getattr(config, stage.directive)
        if setting is not None:
            plan.files.append(setting.value)
        directory = stage.directory(kdump_dir)
        plan.dirs.append(directory)
        if os.path.isdir(directory):
            plan.files += sorted(
                os.path.join(directory, name)
                for name in os.listdir(directory)
                if os.path.isfile(os.path.join(directory, name))
            )


def _target(plan: Plan, target: object) -> None:
    if isinstance(target, FilesystemTarget):
        plan.drivers.append(target.fstype)
    elif isinstance(target, NfsTarget):
        _network(plan)
        plan.drivers += ["nfs", "nfsv3", "nfsv4", "sunrpc"]
        plan.tools += NFS_TOOLS
    elif isinstance(target, SshTarget):
        _network(plan)
        plan.ssh = True
        plan.files += [f for f in SSH_FILES if os.path.exists(f)]
    elif isinstance(target, RawTarget):
        pass


def _network(plan: Plan) -> None:
    if not plan.network:
        plan.network = True
        # systemd-networkd whatever else the build host has (dracut would take
        # NetworkManager where it is installed), so the image is the same kind
        # everywhere; our module gives it its DHCP setting (module-setup.sh)
        plan.depends += ["systemd-networkd", "network"]
        plan.drivers += NETWORK_DRIVERS
        plan.tools += NETWORK_TOOLS
        plan.cmdline += ["rd.neednet=1", "ip=dhcp"]


# Persistent names ------------------------------------------------------------


def persistent_config(config: Config, text: str) -> str:
    """kdump.conf with each target's /dev node replaced by a name that survives
    a reboot: ``UUID=`` for a filesystem, a /dev/disk/by-id link for a raw
    device (which keeps no filesystem UUID once a dump is written on it).
    Names already persistent (LABEL=, UUID=, /dev/disk/...) and lines that
    are no target stay as written."""
    lines = text.splitlines(keepends=True)
    for setting in [config.target, *config.fallback]:
        if setting is None:
            continue
        target = setting.value
        if (
            not isinstance(target, FilesystemTarget | RawTarget)
            or target.device.by != DeviceBy.NODE
        ):
            continue
        node = target.device.name
        if node.startswith("/dev/disk/") or not node.startswith("/dev/"):
            continue
        name = _by_id(node) if isinstance(target, RawTarget) else _uuid(node)
        if name is None:
            continue
        index = setting.origin.line - 1
        lines[index] = lines[index].replace(node, name, 1)
    return "".join(lines)


def _uuid(node: str) -> str | None:
    """``UUID=...`` of the filesystem on ``node``, per blkid."""
    try:
        out = subprocess.run(
            ["blkid", "-o", "value", "-s", "UUID", node],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except FileNotFoundError:
        return None
    return f"UUID={out}" if out else None


def _by_id(node: str, by_id: str = "/dev/disk/by-id") -> str | None:
    """A /dev/disk/by-id link to ``node`` (wwn- first: it names the disk itself)."""
    try:
        names = sorted(os.listdir(by_id), key=lambda n: (not n.startswith("wwn-"), n))
    except OSError:
        return None
    real = os.path.realpath(node)
    for name in names:
        if os.path.realpath(os.path.join(by_id, name)) == real:
            return os.path.join(by_id, name)
    return None
