"""``crashlab netcapture``: one capture over the network with our own image.

The capture of :mod:`kdumplab.capture` (our image, ``kexec -p``, a sysrq
panic), with no dump disk and a NIC on QEMU's user network (``restrict=on``:
the guest reaches nothing but what is forwarded). The server is on this
machine, reached only through slirp's ``guestfwd`` at 10.0.2.100, each guest
connection piped by ``busybox nc`` to a port on 127.0.0.1:

* ``ssh``: a real sshd on loopback (tests/sshd.py, its own host key and an
  authorized key for root); kdump.conf says ``ssh root@10.0.2.100`` with
  that key and a ``path`` on this machine, guest port 22 goes to the sshd's
  port, and the server's key is what ``propagate`` would have recorded in
  ``<kdump dir>/known_hosts``, so the image carries it;
* ``nfs``: nfs-ganesha, as :mod:`kdumplab.nfsguest` runs it: in a network
  namespace of its own with QEMU (this module runs itself there under
  ``unshare``), NFS, mountd and rpcbind forwarded; kdump.conf says
  ``nfs 10.0.2.100:<export>``.

The output directory keeps the config, the image, the console log,
``capture.json`` (timings from the capture kernel's start), the server's
side (``server/`` for ssh, ``export/`` for nfs) and ``netcapture.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .capture import REPO, CaptureResult, Machine, build_image, capture
from .initramfs import _busybox
from .kernels import KERNELS, get_kernel
from .util import LabError
from .vm import NIC_MODELS

__all__ = ("SERVER_IP", "TARGETS", "NetCapture", "add_parser", "command", "net_capture")

SERVER_IP = "10.0.2.100"
"""The server as the guest sees it (slirp's guestfwd address)."""
TARGETS = ("ssh", "nfs")
NFS_PORTS = (2049, 20048, 111)
"""NFS, mountd, rpcbind: the same port on both sides, so rpcbind's answers hold."""
CONFIG = """\
{target}
path {path}
core_collector makedumpfile -l -d 31
final_action poweroff
failure_action reboot
"""


@dataclass(frozen=True)
class NetCapture:
    """What one network capture left: the run, and the server's side of it."""

    result: CaptureResult
    server: Path  # where the server keeps the dumps
    dumps: list[Path]  # the dump directories there


def net_capture(target: str, kernel: str, memory_mb: int, crashkernel: str, out_dir: Path,
                nic: str = "virtio-net", timeout: float = 900, initrd: Path | None = None,
                agent: Path | None = None, systemd: bool = True) -> NetCapture:  # fmt: skip
    """Build (or take) the image for ``target`` (``agent``: a frozen agent's
    tree for build-initrd; ``systemd`` False: an image without systemd, its
    network dracut's network-legacy), panic, capture over the network."""
    if target not in TARGETS:
        raise LabError(f"target {target!r}: one of {', '.join(TARGETS)}")
    if nic not in NIC_MODELS:
        raise LabError(f"NIC {nic!r}: one of {', '.join(NIC_MODELS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _ssh if target == "ssh" else _nfs
    done = run(_Run(kernel, memory_mb, crashkernel, out_dir, nic, timeout, systemd), initrd, agent)
    _write_summary(target, nic, done)
    return done


def _forward(guest_port: int, host_port: int) -> str:
    """One guest connection to SERVER_IP:guest_port becomes one ``nc`` to 127.0.0.1."""
    return f"guestfwd=tcp:{SERVER_IP}:{guest_port}-cmd:{_busybox()} nc 127.0.0.1 {host_port}"


def _config(out_dir: Path, target: str, path: str) -> Path:
    config = out_dir / "kdump.conf"
    config.write_text(CONFIG.format(target=target, path=path))
    return config


def _dump_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


@dataclass(frozen=True)
class _Run:
    """One capture's parameters."""

    kernel: str
    memory_mb: int
    crashkernel: str
    out_dir: Path
    nic: str
    timeout: float
    systemd: bool

    def image(self, config: Path, initrd: Path | None, agent: Path | None,
              kdump_dir: Path | None = None) -> Path:  # fmt: skip
        """The image given, else build-initrd's for ``config``."""
        if initrd is not None:
            return initrd
        kern = get_kernel(self.kernel)
        return build_image(config, kern.release, kern.moddir, self.out_dir / "capture.img",
                           kdump_dir, agent, self.systemd)  # fmt: skip

    def capture(self, config: Path, image: Path, forwards: list[str]) -> CaptureResult:
        machine = Machine(nic=self.nic, netdev=",".join(["user,id=n0,restrict=on", *forwards]))
        return capture(self.kernel, self.memory_mb, self.crashkernel, config, self.out_dir,
                       None, image, self.timeout, machine=machine)  # fmt: skip


def _ssh(run: _Run, initrd: Path | None, agent: Path | None) -> NetCapture:
    # the project's test sshd: the lab runs from the source tree
    sys.path.insert(0, str(REPO))
    from tests.sshd import sshd

    served = run.out_dir / "server"  # kdump.conf's path, on this machine
    served.mkdir(exist_ok=True)
    kdump_dir = run.out_dir / "kdump"
    kdump_dir.mkdir(exist_ok=True)
    with sshd(run.out_dir / "sshd") as server:
        # what propagate would record: the server's key under the name the guest uses
        kind, key = server.host_key_line.split()[1:3]
        (kdump_dir / "known_hosts").write_text(f"{SERVER_IP} {kind} {key}\n")
        config = _config(run.out_dir, f"ssh root@{SERVER_IP}\nsshkey {server.key}", str(served))
        image = run.image(config, initrd, agent, kdump_dir)
        result = run.capture(config, image, [_forward(22, server.port)])
    return NetCapture(result, served, _dump_dirs(served))


def _nfs(run: _Run, initrd: Path | None, agent: Path | None) -> NetCapture:
    export = run.out_dir / "export"
    export.mkdir(exist_ok=True)
    config = _config(run.out_dir, f"nfs {SERVER_IP}:{export}", "/var/crash")
    image = run.image(config, initrd, agent)
    spec = {"run": {**vars(run), "out_dir": str(run.out_dir)}, "config": str(config),
            "image": str(image), "export": str(export)}  # fmt: skip
    spec_file = run.out_dir / "nfs-run.json"
    spec_file.write_text(json.dumps(spec, indent=2) + "\n")
    argv = ["unshare", "--net", "--mount", "--fork", "--", "env",
            f"PYTHONPATH={Path(__file__).resolve().parent.parent}", sys.executable,
            "-m", "kdumplab.network", "--serve-nfs", str(spec_file)]  # fmt: skip
    inner = subprocess.run(argv, check=False, capture_output=True, text=True, errors="replace")
    (run.out_dir / "nfs-run.log").write_text(inner.stdout + inner.stderr)
    if inner.returncode != 0:
        raise LabError(f"the NFS capture failed ({inner.returncode}):\n{inner.stderr[-3000:]}")
    dumps = export / "var" / "crash"
    return NetCapture(_result_of(run.out_dir), dumps, _dump_dirs(dumps))


def _serve_nfs_and_capture(spec_file: Path) -> None:
    """In the namespace: ganesha on its loopback, then the capture."""
    from .nfsguest import _serve, _stop  # the server exactly as the NFS target's test runs it

    spec: dict[str, Any] = json.loads(spec_file.read_text())
    run = _Run(**{**spec["run"], "out_dir": Path(spec["run"]["out_dir"])})
    work = run.out_dir / "ganesha"
    work.mkdir(exist_ok=True)
    rpcbind = _serve(Path(spec["export"]), work)
    try:
        forwards = [_forward(port, port) for port in NFS_PORTS]
        run.capture(Path(spec["config"]), Path(spec["image"]), forwards)
    finally:
        _stop(work / "ganesha.pid")
        rpcbind.kill()
        rpcbind.wait()


def _result_of(out_dir: Path) -> CaptureResult:
    """The capture the namespace ran, from its capture.json."""
    summary = json.loads((out_dir / "capture.json").read_text())
    return CaptureResult(out_dir, [], out_dir / "console.log", summary["timings"], summary["ended"])


def _write_summary(target: str, nic: str, done: NetCapture) -> None:
    manifests = {}
    for dump in done.dumps:
        manifest = dump / "manifest.json"
        if manifest.exists():
            manifests[dump.name] = json.loads(manifest.read_text()).get("status")
    summary = {"target": target, "nic": nic, "ended": done.result.ended,
               "server": str(done.server), "dumps": [str(d) for d in done.dumps],
               "manifest_status": manifests, "timings": done.result.timings}  # fmt: skip
    (done.result.out_dir / "netcapture.json").write_text(json.dumps(summary, indent=2) + "\n")


# Command line ---------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``crashlab netcapture``."""
    p = sub.add_parser("netcapture", help="a capture over the network (ssh or nfs) with our image")
    p.add_argument("--target", choices=TARGETS, required=True)
    p.add_argument("--kernel", choices=list(KERNELS), default="6.1")
    p.add_argument("--memory", type=int, default=2048, help="guest MiB")
    p.add_argument("--crashkernel", default="256M")
    p.add_argument("--nic", choices=list(NIC_MODELS), default="virtio-net")
    p.add_argument("--initrd", help="a capture image (default: build-initrd builds one)")
    p.add_argument("--agent", help="the frozen agent's tree for build-initrd")
    p.add_argument("--no-systemd", dest="systemd", action="store_false",
                   help="build-initrd --no-systemd: dracut's shell init and network-legacy")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", required=True, help="output directory")


def command(a: argparse.Namespace) -> int:
    done = net_capture(a.target, a.kernel, a.memory, a.crashkernel, Path(a.out).resolve(), a.nic,
                       a.timeout, Path(a.initrd).resolve() if a.initrd else None,
                       Path(a.agent).resolve() if a.agent else None, a.systemd)  # fmt: skip
    print((done.result.out_dir / "netcapture.json").read_text(), end="")
    complete = [s for s in json.loads((done.result.out_dir / "netcapture.json").read_text())
                ["manifest_status"].values() if s == "complete"]  # fmt: skip
    return 0 if done.result.ended == "power_off" and complete else 1


if __name__ == "__main__":  # the NFS run, inside its namespace
    if sys.argv[1:2] != ["--serve-nfs"] or len(sys.argv) != 3:
        sys.exit("usage: python -m kdumplab.network --serve-nfs RUN.json")
    try:
        _serve_nfs_and_capture(Path(sys.argv[2]))
    except LabError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        sys.exit(1)
