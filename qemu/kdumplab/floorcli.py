"""``crashlab drivers`` and ``crashlab floor``: the disk driver matrix and
the crashkernel floor with our image (and the reference image's floor)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from .drivers import format_rows, run_disks
from .floor import (
    GRID_MB,
    Kind,
    default_out,
    local_config,
    measure,
    our_image,
    reference_image,
    with_memwatch,
)
from .kernels import get_kernel
from .vm import DISK_DEVICES


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("drivers", help="capture with our image on every disk controller")
    d.add_argument("--config", help="kdump.conf (default: ext4 LABEL=kdump, -l -d 31)")
    d.add_argument("--initrd", help="our image (default: build-initrd builds one)")
    d.add_argument("--memory", type=int, default=2048)
    d.add_argument("--crashkernel", type=int, default=256, help="MiB")
    d.add_argument("--disks", help="comma list (default all: " + ",".join(DISK_DEVICES) + ")")
    d.add_argument("--out", help="output directory (default under the cache)")
    f = sub.add_parser("floor", help="bisect the smallest crashkernel= that captures")
    f.add_argument("--image", default="ours", help="ours, reference, or an image file (ours)")
    f.add_argument("--kind", choices=["ours", "reference"], help="how an image file is judged")
    f.add_argument("--config", help="kdump.conf for ours (default: ext4 LABEL=kdump, -l -d 31)")
    f.add_argument("--reference-virtio-only", action="store_true",
                   help="the reference with only virtio_blk and fsck helpers, not the generic "
                   "disk drivers and --nofscks of ours")  # fmt: skip
    f.add_argument("--memory", type=int, default=4096)
    f.add_argument("--grid", help="comma list of MiB (default " + ",".join(map(str, GRID_MB)) + ")")
    f.add_argument("--memwatch", action="store_true",
                   help="ours: a kdump_pre hook logs meminfo, RSS and slab to the console "
                   "every 2 s (kdumplab/memwatch.sh)")  # fmt: skip
    f.add_argument("--timeout", type=float, default=600,
                   help="seconds one run may take (default %(default)s)")  # fmt: skip
    f.add_argument("--out", help="output directory (default under the cache)")


def run(a: argparse.Namespace) -> int | None:
    """The subcommand's exit status, or None when it is not one of these."""
    if a.cmd not in ("drivers", "floor"):
        return None
    out = Path(a.out).resolve() if a.out else default_out()
    config = Path(a.config).resolve() if a.config else local_config(out)
    if a.cmd == "floor" and a.memwatch:
        config = with_memwatch(config, out)
    kern = get_kernel("6.1")
    if a.cmd == "drivers":
        image = Path(a.initrd).resolve() if a.initrd else our_image(kern, config, out / "ours.img")
        disks = [x for x in a.disks.split(",") if x] if a.disks else None
        rows = run_disks(image, config, out, a.memory, a.crashkernel, disks)
        print(format_rows(rows))
        return 0 if all(r.ok for r in rows.values()) else 1
    kind: Kind = a.kind or ("reference" if a.image == "reference" else "ours")
    if a.image == "ours":
        image = our_image(kern, config, out / "ours.img")
    elif a.image == "reference":
        image = reference_image(kern, out / "reference.img", not a.reference_virtio_only)
    else:
        image = Path(a.image).resolve()
    grid = tuple(int(x) for x in a.grid.split(",")) if a.grid else GRID_MB
    name = a.image if a.image in ("ours", "reference") else image.stem
    found = measure(name, image, config, a.memory, out, kind, grid, a.timeout)
    print(json.dumps(asdict(found), indent=2))
    return 0 if found.floor_mb is not None else 1
