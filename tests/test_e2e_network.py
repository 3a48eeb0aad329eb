"""End to end over the network: a Debian 6.1 kernel panics in QEMU and our own
capture image sends the dump to a server on this machine.

`kdump-capture build-initrd` builds the image for ``ssh root@10.0.2.100`` or
``nfs 10.0.2.100:<export>`` (dracut's network module, systemd-networkd, the NIC
drivers, the key and known_hosts, mount.nfs); the lab's first kernel loads it
with ``kexec -p`` and only kdumpctl's capture command line, and panics with
sysrq. The guest's only network is QEMU's user network with ``restrict=on``:
DHCP from slirp, and 10.0.2.100 forwarded to a real sshd on loopback, or to
nfs-ganesha in a network namespace (qemu/kdumplab/network.py). What lands on
the server's side is read by independent tools: makedumpfile 1.7.8 (the log)
and crash 9.0 with the kernel's debug symbols. Three boots (a few minutes of
TCG each: ssh and nfs, and ssh from an image without systemd); the NIC
models and other variants are `crashlab netcapture` runs, recorded in
qemu/README.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests import oracles
from tests.crashcheck import whole_dump_dir
from tests.realcores import REPO

sys.path.insert(0, str(REPO / "qemu"))
from kdumplab.kernels import get_kernel
from kdumplab.network import NetCapture, net_capture

DUMP_NAME = re.compile(r"10\.0\.2\.15-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d")
"""Fedora's <ip>-<date>: the address slirp's DHCP gave the capture kernel."""
TIMEOUT = 1800
"""QEMU's limit for one capture: TCG on a shared, loaded machine."""


def _one_dump(done: NetCapture, kind: str) -> Path:
    """The capture powered off and left one whole dump directory on the server."""
    assert done.result.ended == "power_off", f"final_action poweroff: {done.result.ended}"
    assert len(done.dumps) == 1, done.dumps
    dump = done.dumps[0]
    assert DUMP_NAME.fullmatch(dump.name), dump.name
    manifest = whole_dump_dir(dump)
    assert manifest["target"]["kind"] == kind, manifest["target"]
    return dump


def _network_came_first(done: NetCapture) -> None:
    """The image configured the NIC by DHCP, and the agent ran only once the
    network was online (kdump-capture.service is after network-online.target)."""
    console = done.result.console.read_text(errors="replace")
    capture_kernel = console[console.rfind("elfcorehdr=") :]
    lease = capture_kernel.find("DHCPv4 address 10.0.2.15/24")
    online = capture_kernel.find("Reached target network-online.target")
    agent = capture_kernel.find("kdump-capture: capturing")
    assert -1 < lease < online < agent, (lease, online, agent)


def _without_caller_id(text: str) -> list[str]:
    """makedumpfile 1.7.8 prints the [T123] caller column; compare without it."""
    return [
        re.sub(r"^(\[ *[0-9.]+\]) \[ *[TC]\d+\]", r"\1", line).strip() for line in text.splitlines()
    ]


def _read_by_makedumpfile_and_crash(dump: Path, work: Path) -> None:
    theirs = work / "makedumpfile-dmesg.txt"
    run = oracles.makedumpfile_new("--dump-dmesg", dump / "vmcore", theirs)
    assert run.returncode == 0, run.stderr
    ours = (dump / "vmcore-dmesg.txt").read_text(errors="replace")
    assert "sysrq: Trigger a crash" in ours
    assert _without_caller_id(theirs.read_text(errors="replace")) == _without_caller_id(ours)
    vmlinux = oracles.debug_vmlinux(get_kernel("6.1").release)
    out = oracles.crash_new(vmlinux, dump / "vmcore", ["sys", "bt"])
    assert re.search(r"PANIC:.*sysrq triggered crash", out), out[-3000:]
    assert "sysrq_handle_crash" in out, out[-3000:]
    assert "crashlab-panic" in out


def test_ssh_target_on_6_1(tmp_path: Path) -> None:
    done = net_capture("ssh", "6.1", 2048, "256M", tmp_path / "run", timeout=TIMEOUT)
    dump = _one_dump(done, "ssh")
    _network_came_first(done)
    _read_by_makedumpfile_and_crash(dump, tmp_path)


def test_nfs_target_on_6_1(tmp_path: Path) -> None:
    done = net_capture("nfs", "6.1", 2048, "256M", tmp_path / "run", timeout=TIMEOUT)
    dump = _one_dump(done, "nfs")
    _network_came_first(done)
    _read_by_makedumpfile_and_crash(dump, tmp_path)


def test_ssh_target_from_an_image_without_systemd(tmp_path: Path) -> None:
    """build-initrd --no-systemd: dracut's shell init, network-legacy's
    dhclient for the NIC, the agent run from our pre-mount hook."""
    done = net_capture("ssh", "6.1", 2048, "256M", tmp_path / "run", timeout=TIMEOUT, systemd=False)
    dump = _one_dump(done, "ssh")
    console = done.result.console.read_text(errors="replace")
    capture_kernel = console[console.rfind("elfcorehdr=") :]
    assert "systemd[1]" not in capture_kernel
    dhcp = capture_kernel.find("dhcp: BOUND setting up")
    agent = capture_kernel.find("kdump-capture: capturing")
    assert -1 < dhcp < agent, (dhcp, agent)
    _read_by_makedumpfile_and_crash(dump, tmp_path)
