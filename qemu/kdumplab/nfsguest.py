"""An NFS client guest against a real NFS server (nfs-ganesha), for the NFS target's tests.

This machine's kernel has no NFS client, so the client is a QEMU guest (TCG)
that runs the host's own userland: the host's root filesystem over 9p,
read-only, with the test's work folder over 9p read-write at the same path,
so a script in the work folder runs this machine's Python, the project's
virtualenv and the host's mount.nfs as they are. The guest's initramfs
(busybox) carries only the kernel modules: virtio, 9p, NFS v3 and v4.

The server is nfs-ganesha (with rpcbind, which it needs to start), run with
QEMU in a network namespace of its own holding only a loopback: nothing
listens anywhere else, and the guest reaches the server only through
slirp's ``guestfwd`` (``restrict=on``, TCP only) at 10.0.2.100: 2049 (NFS),
20048 (mountd) and 111 (rpcbind), for v3, each guest connection piped by
``busybox nc`` to the same port on 127.0.0.1 in the namespace.

Run as ``unshare --net --mount --fork -- python3 -m kdumplab.nfsguest
--work DIR --export DIR`` (:func:`command`): the work folder's
``guest.sh`` runs in the guest; ``ganesha.pid`` there lets the test stop
the server mid-run; ``console.log``, ``guest.out`` and ``ganesha.log`` say
what happened. Exit status 0 when the guest's script ran and the guest
powered off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .cpio import Cpio
from .initramfs import SCRIPTS, _busybox
from .kernels import Kernel, get_kernel, module_bytes, resolve_modules
from .util import LabError, cache_dir, digest, file_digest
from .vm import VmSpec, console_tail, run_vm

__all__ = ("GUEST_MODULES", "SERVER_IP", "command", "guest_initramfs", "main")

SERVER_IP = "10.0.2.100"
"""Where the guest finds the NFS server (slirp's guestfwd)."""
NFS_PORT, MOUNT_PORT, RPCBIND_PORT = 2049, 20048, 111
"""The server's ports, on the namespace's loopback and as the guest sees them
at 10.0.2.100 (the same, so what rpcbind answers holds for the guest)."""
GUEST_MODULES = ["virtio_pci", "virtio_net", "9p", "9pnet_virtio", "nfs", "nfsv3", "nfsv4",
                 "af_packet", "virtio_blk", "ext4", "crc32c_generic"]  # fmt: skip
"""With virtio_blk and ext4 for a local disk (``--disk``), a fallback target."""
_INIT = SCRIPTS / "nfs-guest-init.sh"


def command(
    work: Path, export: Path, kernel: str = "6.1", timeout: float = 900, disk: Path | None = None
) -> list[str]:
    """The command line that serves ``export`` and boots the guest on ``work``
    (with ``disk``, a raw image, as its virtio disk). The kernel and the
    guest's initramfs are fetched and built here first: inside the
    namespace there is no network to fetch them with."""
    guest_initramfs(get_kernel(kernel))
    qemu_dir = Path(__file__).resolve().parent.parent
    argv = ["unshare", "--net", "--mount", "--fork", "--", "env", f"PYTHONPATH={qemu_dir}",
            sys.executable, "-m", "kdumplab.nfsguest", "--work", str(work), "--export",
            str(export), "--kernel", kernel, "--timeout", str(timeout)]  # fmt: skip
    return argv + (["--disk", str(disk)] if disk else [])


def guest_initramfs(kern: Kernel) -> Path:
    """Busybox, the init and the modules, cached by what goes in."""
    key = digest([kern.package, kern.version, file_digest(_INIT),
                  file_digest(SCRIPTS / "common.sh"), GUEST_MODULES])  # fmt: skip
    out = cache_dir() / "initramfs" / f"nfsguest-{kern.release}-{key}.img"
    if out.exists():
        return out
    cpio = Cpio()
    cpio.add_host_file("bin/busybox", _busybox(), 0o755)
    cpio.add_symlink("bin/sh", "busybox")
    for folder in ("proc", "sys", "dev", "tmp", "mnt", "run", "sbin", "etc", "root"):
        cpio.add_dir(folder)
    cpio.add_chardev("dev/console", 5, 1)
    cpio.add_chardev("dev/null", 1, 3, 0o666)
    cpio.add_file("etc/crashlab/common.sh", (SCRIPTS / "common.sh").read_bytes())
    cpio.add_file("init", _INIT.read_bytes(), 0o755)
    order, _builtin, missing = resolve_modules(kern, GUEST_MODULES)
    if {"nfs", "nfsv4", "9p"} & set(missing):
        raise LabError(f"{kern.release} has no module for {', '.join(missing)}")
    names = []
    for relpath in order:
        name = re.sub(r"\.(xz|zst|gz)$", "", relpath.rsplit("/", 1)[-1])
        cpio.add_file(f"lib/modules/crashlab/{name}", module_bytes(kern, relpath))
        names.append(name)
    cpio.add_file("etc/crashlab/modules", ("\n".join(names) + "\n").encode())
    out.parent.mkdir(parents=True, exist_ok=True)
    cpio.write(out, compress=True)
    return out


def _ganesha_config(export: Path, work: Path) -> Path:
    """NFSv3 and v4 over TCP on the namespace's loopback; the export by its own path."""
    config = work / "ganesha.conf"
    config.write_text(f"""
NFS_CORE_PARAM {{
    NFS_Port = {NFS_PORT}; MNT_Port = {MOUNT_PORT};
    Enable_NLM = false; Enable_RQUOTA = false; Protocols = 3, 4;
}}
NFSV4 {{ Graceless = true; }}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1; Path = {export}; Pseudo = {export};
    Protocols = 3, 4; Transports = TCP; Access_Type = RW;
    Squash = No_Root_Squash; SecType = sys;
    FSAL {{ Name = VFS; }}
}}
""")
    return config


def _serve(export: Path, work: Path) -> subprocess.Popen[bytes]:
    """rpcbind (returned, to be ended), then ganesha (its pid in
    work/ganesha.pid), in this namespace."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)  # this namespace's
    for folder in ("/run/rpcbind", "/run/ganesha"):
        os.makedirs(folder, exist_ok=True)
    rpcbind = subprocess.Popen(["rpcbind", "-f", "-w"])
    config = _ganesha_config(export, work)
    subprocess.run(["ganesha.nfsd", "-f", str(config), "-L", str(work / "ganesha.log"),
                    "-p", str(work / "ganesha.pid"), "-N", "NIV_EVENT"], check=True)  # fmt: skip
    for _ in range(100):  # until it listens
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{NFS_PORT}"], check=False,
                                   capture_output=True, text=True).stdout  # fmt: skip
        if listening.strip():
            return rpcbind
        time.sleep(0.1)
    rpcbind.kill()
    raise LabError(f"ganesha did not start: {(work / 'ganesha.log').read_text()[-2000:]}")


def _guest_network() -> list[str]:
    """restrict=on user networking; each guest connection to the server piped to it."""
    nc = f"{_busybox()} nc 127.0.0.1"
    forwards = [f"guestfwd=tcp:{SERVER_IP}:{port}-cmd:{nc} {port}"
                for port in (NFS_PORT, MOUNT_PORT, RPCBIND_PORT)]  # fmt: skip
    return ["-netdev", ",".join(["user,id=n0,restrict=on", *forwards]),
            "-device", "virtio-net-pci,netdev=n0"]  # fmt: skip


def boot(work: Path, kernel: str, timeout: float, disk: Path | None) -> dict[str, object]:
    """Boot the guest on ``work`` (its guest.sh), until it powers off."""
    kern = get_kernel(kernel)
    drive = ["-drive", f"file={disk},if=none,id=local,format=raw",
             "-device", "virtio-blk-pci,drive=local"] if disk else []  # fmt: skip
    extra = [*_guest_network(), *drive,
             "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on",
             "-virtfs", f"local,path={work},mount_tag=work,security_model=none"]  # fmt: skip
    spec = VmSpec(kernel=kern.vmlinuz, initrd=guest_initramfs(kern), memory_mb=1024,
                  cmdline=f"console=ttyS0 panic=-1 quiet NFSGUEST_WORK={work}",
                  console=work / "console.log", extra=extra)  # fmt: skip
    # After its script the guest syncs and powers off; once (rarely, under load)
    # its NFS client spun in softirq after the killed server, a soft lockup
    # until the 900 s timeout: what the host reads was written by then.
    result = run_vm(spec, timeout, done=("NFSGUEST-DONE", 60))
    console = spec.console.read_text(errors="replace") if spec.console.exists() else ""
    done = re.search(r"NFSGUEST-DONE (\d+)", console)
    return {"kernel": kern.release, "seconds": round(result.seconds, 1),
            "timed_out": result.timed_out, "script_status": int(done[1]) if done else None,
            "console_tail": console_tail(spec.console)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdumplab.nfsguest", description=__doc__)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--disk", type=Path, help="a raw image: the guest's virtio disk")
    args = parser.parse_args(argv)
    if not shutil.which("ganesha.nfsd"):
        raise LabError("ganesha.nfsd not found: apt-get install nfs-ganesha nfs-ganesha-vfs")
    rpcbind = _serve(args.export.resolve(), args.work.resolve())
    try:
        outcome = boot(args.work.resolve(), args.kernel, args.timeout, args.disk)
    finally:
        _stop(args.work / "ganesha.pid")
        rpcbind.kill()
        rpcbind.wait()
    print(json.dumps(outcome))
    return 0 if outcome["script_status"] is not None and not outcome["timed_out"] else 1


def _stop(pidfile: Path) -> None:
    """The server, if the test has not stopped it already."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text()), 9)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LabError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        sys.exit(1)
