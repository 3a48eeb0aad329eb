"""Command line: `qemu/crashlab vmcore|matrix|kernels|count|check|capture|netcapture ...`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import actions, floorcli, network
from .kernels import KERNELS, get_kernel
from .lab import DEFAULT_WORKLOAD, make_vmcore
from .matrix import format_table, run_matrix
from .util import LabError
from .vm import DISK_DEVICES, NIC_MODELS
from .vmcore import check_dump, count_patterns


def _kv(text: str) -> tuple[str, str]:
    """Parse one key=value workload argument."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crashlab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("vmcore", help="boot, panic, capture one vmcore")
    v.add_argument("--kernel", choices=list(KERNELS), default="6.1")
    v.add_argument("--memory", type=int, default=512, help="guest MiB")
    v.add_argument("--crashkernel", help="e.g. 160M (default 160M <1G, 256M >=1G)")
    defaults = " ".join(f"{k}={x}" for k, x in DEFAULT_WORKLOAD.items())
    v.add_argument(
        "--workload",
        type=_kv,
        nargs="*",
        default=[],
        help=f"KEY=VALUE; defaults {defaults}; also THP=always|madvise|never, PANIC_COMM=name",
    )
    v.add_argument("--capture-initrd", help="capture initramfs to use instead of the reference one")
    v.add_argument("--dump-device", choices=list(DISK_DEVICES), default="virtio-blk")
    v.add_argument("--nic", choices=list(NIC_MODELS))
    v.add_argument("--timeout", type=float, default=600)
    v.add_argument("--no-cache", action="store_true")
    v.add_argument("--out", required=True, help="output directory")
    m = sub.add_parser("matrix", help="reference capture on every disk/NIC model")
    m.add_argument("--kernel", choices=list(KERNELS), default="6.1")
    m.add_argument("--memory", type=int, default=384)
    m.add_argument("--timeout", type=float, default=300)
    m.add_argument("--disks", help="comma list (default all: " + ",".join(DISK_DEVICES) + ")")
    m.add_argument("--nics", help="comma list (default all: " + ",".join(NIC_MODELS) + ")")
    k = sub.add_parser("kernels", help="download/resolve kernels and print them")
    k.add_argument("aliases", nargs="*", default=list(KERNELS))
    k.add_argument("--refresh", action="store_true", help="re-resolve meta-packages")
    c = sub.add_parser("count", help="count CRASHLAB pattern pages in a vmcore")
    c.add_argument("vmcore")
    ck = sub.add_parser("check", help="compare DIR/vmcore with DIR/workload.json")
    ck.add_argument("dir")
    _capture_parser(sub)
    floorcli.add_subcommands(sub)
    actions.add_parser(sub)
    network.add_parser(sub)
    return p


def _capture_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cp = sub.add_parser("capture", help="a real capture with kdump-capture's own image")
    cp.add_argument("--kernel", choices=list(KERNELS), default="6.1")
    cp.add_argument("--memory", type=int, default=2048, help="guest MiB")
    cp.add_argument("--crashkernel", default="256M")
    cp.add_argument("--config", required=True, help="kdump.conf for the image")
    cp.add_argument("--initrd", help="a capture image (default: build-initrd builds one)")
    cp.add_argument(
        "--disk",
        default="LABEL=kdump",
        help="the dump disk's filesystem: LABEL=x, UUID=u, or none (no disk)",
    )
    cp.add_argument("--fstype", choices=["ext4", "xfs"], default="ext4")
    cp.add_argument("--dump-device", choices=list(DISK_DEVICES), default="virtio-blk")
    cp.add_argument("--timeout", type=float, default=600)
    cp.add_argument("--out", required=True, help="output directory")


def _cmd_capture(a: argparse.Namespace) -> int:
    from .capture import Disk, capture

    disk = None
    if a.disk != "none":
        kind, _, value = a.disk.partition("=")
        if kind not in ("LABEL", "UUID") or not value:
            raise LabError(f"--disk {a.disk!r}: LABEL=name, UUID=uuid or none")
        disk = Disk(a.fstype, value if kind == "LABEL" else None, value if kind == "UUID" else None)
    res = capture(
        a.kernel,
        a.memory,
        a.crashkernel,
        Path(a.config).resolve(),
        Path(a.out).resolve(),
        disk,
        Path(a.initrd).resolve() if a.initrd else None,
        a.timeout,
        a.dump_device,
    )
    print(
        json.dumps(
            {"ended": res.ended, "dumps": [str(d) for d in res.dumps], "timings": res.timings},
            indent=2,
        )
    )
    return 0


def _cmd_vmcore(a: argparse.Namespace) -> int:
    start = time.monotonic()
    res = make_vmcore(
        a.kernel,
        a.memory,
        dict(a.workload),
        out_dir=a.out,
        crashkernel=a.crashkernel,
        capture_initrd=a.capture_initrd,
        dump_device=a.dump_device,
        nic=a.nic,
        timeout=a.timeout,
        use_cache=not a.no_cache,
    )
    print(
        f"OK {res.kernel_release}: {res.vmcore} ({res.info['vmcore_size']} bytes) "
        f"in {time.monotonic() - start:.1f}s{' (cached)' if res.cached else ''}"
    )
    return 0


def _split(text: str | None) -> list[str] | None:
    return [x for x in text.split(",") if x] if text is not None else None


def _cmd_matrix(a: argparse.Namespace) -> int:
    rows = run_matrix(a.kernel, a.memory, a.timeout, _split(a.disks), _split(a.nics))
    print(format_table(a.kernel, rows))
    return 0 if all(r.ok for r in rows) else 1


def _cmd_kernels(a: argparse.Namespace) -> int:
    for alias in a.aliases:
        kern = get_kernel(alias, refresh=a.refresh)
        print(f"{alias}\t{kern.release}\t{kern.package}\t{kern.version}\t{kern.vmlinuz}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; LabError becomes a clear message and exit status 1."""
    a = _parser().parse_args(argv)
    try:
        if a.cmd == "vmcore":
            return _cmd_vmcore(a)
        if a.cmd == "matrix":
            return _cmd_matrix(a)
        if a.cmd == "kernels":
            return _cmd_kernels(a)
        if a.cmd == "capture":
            return _cmd_capture(a)
        status = floorcli.run(a)
        if status is not None:
            return status
        if a.cmd == "actions":
            return actions.command(a)
        if a.cmd == "netcapture":
            return network.command(a)
        if a.cmd == "check":
            res = check_dump(Path(a.dir))
            print(json.dumps(res, indent=2))
            return 0 if res["ok"] else 1
        print(json.dumps(count_patterns(Path(a.vmcore)), indent=2))
        return 0
    except LabError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (QEMU killed)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
