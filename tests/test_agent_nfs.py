"""The NFS target against a real NFS server, from a real NFS client.

This machine's kernel has no NFS client, so the client is a QEMU guest
(qemu/kdumplab/nfsguest.py): it runs this machine's Python, the project's
virtualenv and mount.nfs from the host's root filesystem, shared read-only
over 9p, and `kdump-capture run --no-action --vmcore` on a real vmcore
shared in the same way. The server is nfs-ganesha, in a network namespace
of its own with QEMU, reached by the guest only through slirp's guestfwd.

One boot, four runs: NFSv4 with no fstab entry; NFSv3 from an fstab entry
whose options Fedora's massaging rewrites (``hard``, ``noauto``, ``proto=``
dropped; ours added); a server that does not answer (an address slirp
forwards nowhere), so the dump falls back to the guest's local disk; and a
server killed in the middle of the dump, which must end the run (nothing
partial named complete) rather than hang it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.agentrun import check_files_against_references, makedumpfile, mounted
from tests.realcores import REPO, core_61

sys.path.insert(0, str(REPO / "qemu"))
from kdumplab.nfsguest import SERVER_IP, command

DIR_NAME = re.compile(r"^10\.0\.2\.15-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d$")
KILL_AFTER = 24 << 20
"""Bytes of the dump on the server before the server is killed."""

GUEST_SCRIPT = """\
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
run() {{
    {kdump_capture} run --no-action --config {work}/$1.conf --vmcore {vmcore} \\
        --mount-root /run/kdumproot-$1 --kdump-dir {work}/none > {work}/$1.out 2>&1
    echo $? > {work}/$1.status
}}
run v4
mount --bind {work}/fstab /etc/fstab  # over the host's, read-only in the guest
run v3
umount /etc/fstab
run fallback
touch {work}/dead.started
run dead &
# A real capture reboots once the action is named; --no-action's process
# then still closes its file on the dead server, which is not waited for.
until grep -q "not taken: --no-action" {work}/dead.out; do sleep 1; done
sleep 2
"""


def config(export: Path, name: str, extra: str = "") -> str:
    return (f"nfs {SERVER_IP}:{export}\npath /{name}\n"
            "failure_action poweroff\nfinal_action halt\n" + extra)  # fmt: skip


def kill_server_mid_dump(
    guest: subprocess.Popen[str], work: Path, export: Path, killed: dict[str, float]
) -> None:
    """Once the third run's dump has KILL_AFTER bytes on the server: SIGKILL ganesha."""
    while guest.poll() is None and "at" not in killed:
        if (work / "dead.started").exists():
            for partial in (export / "dead").glob("*/vmcore-incomplete"):
                if partial.stat().st_size >= KILL_AFTER:
                    os.kill(int((work / "ganesha.pid").read_text()), signal.SIGKILL)
                    killed["at"] = time.monotonic()
        time.sleep(0.1)


def wait_for_action(output: Path, seconds: float) -> float:
    """When the run's output names its action (a real capture reboots there;
    --no-action's process then still waits to close its file on the dead server)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if output.exists() and "not taken: --no-action" in output.read_text(errors="replace"):
            break
        time.sleep(0.1)
    return time.monotonic()


def only_dump_dir(root: Path) -> Path:
    [directory] = [path for path in root.iterdir() if path.is_dir()]
    assert DIR_NAME.match(directory.name), directory.name
    return directory


def manifest_of(directory: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((directory / "manifest.json").read_text())
    return manifest


def test_nfs_v4_v3_and_a_server_that_dies(tmp_path: Path) -> None:
    core = core_61()
    work, export = tmp_path / "work", tmp_path / "export"
    work.mkdir()
    export.mkdir()
    (work / "v4.conf").write_text(config(export, "v4", "core_collector makedumpfile -l -d 31\n"))
    (work / "v3.conf").write_text(config(export, "v3", (
        "core_collector makedumpfile -l -d 31\n"
        f"kdump_post {work}/post-v3.sh\n"
    )))  # fmt: skip
    post = work / "post-v3.sh"  # what was mounted, while it still is
    post.write_text(f"#!/bin/sh\ngrep ' nfs' /proc/mounts > {work}/v3.mounts\n")
    post.chmod(0o755)
    (work / "fstab").write_text(
        f"{SERVER_IP}:{export}/ /mnt/crash nfs vers=3,hard,noauto,proto=tcp,mountproto=tcp 0 0\n"
    )
    (work / "dead.conf").write_text(config(export, "dead", (
        "core_collector makedumpfile -d 0\nkdump_capture_stall_timeout 60\n"
    )))  # fmt: skip
    down = config(export, "fallback").replace(SERVER_IP, "10.0.2.101")  # nothing there
    (work / "fallback.conf").write_text(
        down + "core_collector makedumpfile -l -d 31\nkdump_capture_network_timeout 10\n"
        "kdump_capture_fallback ext4 LABEL=kdcnfsfallback\n"
    )
    disk = tmp_path / "local.img"
    with disk.open("wb") as image:
        image.truncate(128 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "kdcnfsfallback", str(disk)], check=True)
    kdump_capture = REPO / ".venv" / "bin" / "kdump-capture"
    (work / "guest.sh").write_text(
        GUEST_SCRIPT.format(kdump_capture=kdump_capture, work=work, vmcore=core.vmcore)
    )
    killed: dict[str, float] = {}
    guest = subprocess.Popen(command(work, export, timeout=900, disk=disk), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    killer = threading.Thread(target=kill_server_mid_dump, args=(guest, work, export, killed))
    killer.start()
    ended = None
    try:
        killer.join(timeout=960)
        if "at" in killed:
            ended = wait_for_action(work / "dead.out", 600)
        out, err = guest.communicate(timeout=960)
    finally:
        guest.kill()  # its QEMU dies with it (setpriv --pdeathsig)
        killed.setdefault("at", 0.0)  # the killer thread stops
    diagnosis = f"{out}\n{err}\n{(work / 'console.log').read_text(errors='replace')[-3000:]}"
    assert guest.returncode == 0, diagnosis
    outputs = {name: (work / f"{name}.out").read_text()
               for name in ("v4", "v3", "dead", "fallback")}  # fmt: skip
    statuses = {name: (work / f"{name}.status").read_text().strip()
                for name in ("v4", "v3", "fallback")}  # fmt: skip

    # NFSv4, no fstab entry: Fedora's files on the server, the dump makedumpfile's.
    assert statuses["v4"] == "0", outputs["v4"]
    directory = only_dump_dir(export / "v4")
    names = sorted(path.name for path in directory.iterdir())
    assert names == ["kexec-dmesg.log", "manifest.json", "vmcore", "vmcore-dmesg.txt"]
    check_files_against_references(tmp_path, core, directory)
    manifest = manifest_of(directory)
    assert manifest["status"] == "complete" and manifest["target"]["kind"] == "nfs"
    assert "soft" in outputs["v4"] and "timeo=50" in outputs["v4"]

    # NFSv3 from the fstab entry, its options massaged as Fedora's, ours added.
    assert statuses["v3"] == "0", outputs["v3"]
    mounts = (work / "v3.mounts").read_text()
    assert "vers=3" in mounts and "soft" in mounts and "nolock" in mounts, mounts
    assert "/run/kdumproot-v3/mnt/crash" in mounts
    directory = only_dump_dir(export / "v3")
    makedumpfile(core, tmp_path / "v3-reference", "-l", "-d", "31")
    assert (directory / "vmcore").read_bytes() == (tmp_path / "v3-reference").read_bytes()
    assert (directory / "vmcore-dmesg.txt").read_bytes() == (tmp_path / "dmesg.txt").read_bytes()
    assert manifest_of(directory)["files"]["vmcore"]["status"] == "complete"

    # The server killed mid-dump: the run ends, says why, nothing named complete.
    assert killed["at"] > 0, "the dump ended before the server could be killed"
    assert ended is not None
    print(f"NFS server killed mid-dump: the run took its action {ended - killed['at']:.1f} s later")
    assert "the server did not answer" in outputs["dead"], outputs["dead"]
    assert "only part was saved" in outputs["dead"]  # status 3: the log was saved first
    # The dump failed, whatever log was saved first: the failure action, as Fedora's.
    assert "action: poweroff (not taken: --no-action)" in outputs["dead"]
    directory = only_dump_dir(export / "dead")
    names = sorted(path.name for path in directory.iterdir())
    assert "vmcore" not in names and "vmcore-incomplete" in names and "vmcore-dmesg.txt" in names
    left = manifest_of(directory)  # as the server last had it
    assert left["status"] != "complete" and "vmcore" not in left["files"]

    # No server answering: the mount fails within kdump_capture_network_timeout,
    # and the dump lands on the local disk, the manifest saying why.
    assert statuses["fallback"] == "0", outputs["fallback"]
    assert not (export / "fallback").exists()
    with mounted(str(disk), tmp_path) as root:
        [directory] = list((root / "fallback").iterdir())
        assert directory.name.startswith("127.0.0.1-")
        names = sorted(path.name for path in directory.iterdir())
        same = (directory / "vmcore").read_bytes() == (tmp_path / "v3-reference").read_bytes()
        manifest = manifest_of(directory)
    assert names == ["kexec-dmesg.log", "manifest.json", "vmcore", "vmcore-dmesg.txt"]
    assert same
    unreachable, saved = manifest["attempts"]
    assert unreachable["target"]["kind"] == "nfs" and unreachable["outcome"] == "unreachable"
    assert "mount" in unreachable["why"]
    assert saved["target"]["where"] == "ext4 LABEL=kdcnfsfallback at /fallback"
    assert saved["outcome"] == "dump saved"


def test_fstab_entry_and_fedoras_option_massaging(tmp_path: Path) -> None:
    """Read by what a user's fstab holds: the entry matched with or without
    a trailing slash, nfs4 meaning v4, Fedora's drops, ours added once."""
    from capture.agent.config import NfsTarget
    from capture.agent.targets.nfs import fstab_entry, mount_options

    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# a comment\nUUID=1234 / ext4 defaults 0 1\n"
        "filer:/export/crash/ /var/crash nfs4 ro,hard,noauto,nofail,proto=tcp,"
        "clientaddr=192.0.2.1,x-systemd.automount,rsize=65536 0 0\n"
        "[2001:db8::1]:/dumps /mnt/v6 nfs vers=3,timeo=30,retrans=5,lock 0 0\n"
    )
    entry = fstab_entry(NfsTarget("filer", "/export/crash"), str(fstab))
    assert entry is not None and entry.mount_point == "/var/crash"
    options = mount_options(entry).split(",")
    assert options == ["rw", "rsize=65536", "vers=4", "soft", "retry=0", "timeo=50",
                       "retrans=2", "nolock"]  # fmt: skip
    v6 = fstab_entry(NfsTarget("2001:db8::1", "/dumps"), str(fstab))
    assert v6 is not None
    assert mount_options(v6).split(",") == ["vers=3", "timeo=30", "retrans=5", "lock", "soft",
                                            "retry=0", "rw"]  # fmt: skip
    assert fstab_entry(NfsTarget("filer", "/other"), str(fstab)) is None
    assert mount_options(None) == "soft,retry=0,timeo=50,retrans=2,nolock,rw"
