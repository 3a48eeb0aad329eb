"""``kdump-capture estimate``: the ``crashkernel=`` an image needs, from its
measured footprint, next to what is reserved now.

The model (docs/firstkernel.md §"The crashkernel model") was fitted to 71
capture runs of Debian's 6.1 kernel in QEMU (TCG, one CPU, a virtio disk, a
local target): the capture kernel's floor is set while it unpacks the
initramfs, when the reservation holds

    the kernel (vmlinux's _text to _end) + early reservations
    + the image file (kexec places it inside the reservation)
    + everything it unpacks to (rootfs is ramfs: no cap; a squash image is
      thus held twice, as the file and as squash-root.img in rootfs)
    + ~29 MiB of boot-time allocations (slab, stacks, driver init, zstd's window)

rounded up to a 16M step.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.errors import CaptureError
from capture.firstkernel.bootfiles import default_image
from capture.firstkernel.bzimage import read_bzimage
from capture.firstkernel.footprint import InitrdFootprint, measure_initrd
from capture.firstkernel.kexecstate import kernel_span, read_crash_state

__all__ = ("EARLY", "MARGIN", "STEP", "Estimate", "KernelSize", "add_arguments", "estimate")

_MIB = 1 << 20
CALIBRATION_FIXED = 61.5 * _MIB
"""What the capture kernel had reserved at mem_init before the image, Debian 6.1.0-56."""
CALIBRATION_SPAN = 58 * _MIB
"""That kernel's vmlinux _text to _end (6.1.0-57's, the same build of 6.1.192, measured)."""
EARLY = int(CALIBRATION_FIXED - CALIBRATION_SPAN)
"""Struct pages of the reservation, boot parameters, ELF headers and the like: 3.5 MiB."""
MARGIN = 29 * _MIB
"""Boot-time allocations the unpack must leave room for (27.1 MiB passed, 28.2 failed with zstd)."""
STEP = 16 * _MIB
MODEL = (
    "kernel + early reservations + image + unpacked image + boot-time margin, "
    "rounded up to 16M; calibrated on Debian's 6.1 kernel in QEMU (TCG, 1 CPU, virtio disk, "
    "local target): real disk and network drivers, and network targets, need more"
)


@dataclass(frozen=True)
class KernelSize:
    """The capture kernel's in-memory size and where it was read."""

    path: str
    release: str | None
    bytes: int
    source: str
    """vmlinux-span (the payload's PT_LOADs), init_size (the header's upper
    bound) or iomem (the running kernel's Kernel code..bss)."""


@dataclass(frozen=True)
class Estimate:
    """The arithmetic, each term in bytes."""

    kernel: KernelSize
    initrd: InitrdFootprint
    reserved: int | None

    @property
    def needed(self) -> int:
        return self.kernel.bytes + EARLY + self.initrd.compressed + self.initrd.unpacked + MARGIN

    @property
    def crashkernel(self) -> int:
        return -(-self.needed // STEP) * STEP

    @property
    def enough(self) -> bool | None:
        return None if not self.reserved else self.reserved >= self.crashkernel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Estimate the crashkernel= the capture image needs from its measured footprint "
        "(the kernel's size, the image's compressed and unpacked sizes, a margin), next "
        "to what is reserved now. The model was calibrated on Debian's 6.1 kernel in QEMU."
    )
    parser.add_argument(
        "--initrd", metavar="FILE",
        help="the capture image (default: build-initrd's, /boot/initrd-RELEASE-kdump-capture.img)",
    )  # fmt: skip
    parser.add_argument(
        "--kernel", metavar="FILE",
        help="the capture kernel (default: /boot/vmlinuz-$(uname -r), else the running kernel)",
    )  # fmt: skip
    parser.add_argument(
        "--root", metavar="DIR", default="/",
        help="read /proc and /sys under DIR (default: /)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(command=run)


def estimate(kernel: str | None, initrd: str | None, root: str = "/") -> Estimate:
    """Measure the kernel and the image and read the reservation.

    :raises CaptureError: no image, or no kernel size from any source.
    """
    size = _kernel_size(kernel, root)
    if initrd is None:
        initrd = str(default_image(size.release or os.uname().release))
    if not Path(initrd).is_file():
        raise CaptureError(
            f"{initrd}: no such image: build it (kdump-capture build-initrd) or give --initrd"
        )
    return Estimate(size, measure_initrd(initrd), read_crash_state(root).reserved)


def _kernel_size(kernel: str | None, root: str) -> KernelSize:
    path = kernel or f"/boot/vmlinuz-{os.uname().release}"
    if kernel is not None or Path(path).is_file():
        image = read_bzimage(path)
        if image.span is not None:
            return KernelSize(path, image.release, image.span, "vmlinux-span")
        return KernelSize(path, image.release, image.init_size, "init_size")
    running = kernel_span(root)
    if running is None:
        raise CaptureError(
            f"{path}: no such kernel, and /proc/iomem shows no Kernel ranges: give --kernel"
        )
    return KernelSize("/proc/iomem", os.uname().release, running, "iomem")


def run(args: argparse.Namespace) -> int:
    result = estimate(args.kernel, args.initrd, args.root)
    print(json.dumps(as_json(result), indent=2) if args.json else describe(result))
    return 0


def as_json(result: Estimate) -> dict[str, Any]:
    footprint = result.initrd
    return {
        "crashkernel": f"{result.crashkernel // _MIB}M",
        "crashkernel_bytes": result.crashkernel,
        "needed_bytes": result.needed,
        "reserved_bytes": result.reserved,
        "enough": result.enough,
        "kernel": {
            "path": result.kernel.path,
            "release": result.kernel.release,
            "bytes": result.kernel.bytes,
            "source": result.kernel.source,
        },
        "early_bytes": EARLY,
        "initrd": {
            "path": str(footprint.path),
            "compressed_bytes": footprint.compressed,
            "unpacked_bytes": footprint.unpacked,
            "squash_image_bytes": footprint.squash_image,
            "files": footprint.files,
            "file_bytes": footprint.file_bytes,
            "rootfs_bytes": footprint.rootfs_bytes,
            "compressions": footprint.compressions,
        },
        "margin_bytes": MARGIN,
        "step_bytes": STEP,
        "model": MODEL,
    }


def describe(result: Estimate) -> str:
    footprint, kernel = result.initrd, result.kernel
    squash = (
        f"; squash-root.img {_mib(footprint.squash_image)} of it"
        if footprint.squash_image is not None
        else ""
    )
    rows = [
        ("kernel in memory", kernel.bytes, f"{kernel.source}, {kernel.path}"),
        ("early reservations", EARLY, "struct pages, boot data"),
        (
            "image file",
            footprint.compressed,
            f"inside the reservation ({'+'.join(footprint.compressions)})",
        ),
        ("image unpacked", footprint.unpacked, f"rootfs holds it whole{squash}"),
        ("boot-time margin", MARGIN, "slab, stacks, driver init, zstd window"),
        ("total", result.needed, "rounded up to a 16M step"),
    ]
    lines = [f"crashkernel={result.crashkernel // _MIB}M for {footprint.path}"]
    lines += [f"  {name:<19} {_mib(value):>10}  {why}" for name, value, why in rows]
    lines.append(f"reserved now: {_reserved(result)}")
    lines.append(f"model: {MODEL} (docs/firstkernel.md)")
    return "\n".join(lines)


def _mib(value: int) -> str:
    return f"{value / _MIB:.1f} MiB"


def _reserved(result: Estimate) -> str:
    if result.reserved is None:
        return "unknown (no /sys/kernel/kexec_crash_size: this kernel has no kexec)"
    if result.reserved == 0:
        return f"none: add crashkernel={result.crashkernel // _MIB}M to the kernel command line"
    have = f"{result.reserved // _MIB}M"
    if result.enough:
        return f"{have}: enough, {(result.reserved - result.crashkernel) // _MIB}M to spare"
    return f"{have}: too little, set crashkernel={result.crashkernel // _MIB}M and reboot"
