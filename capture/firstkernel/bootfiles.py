"""Which kernel and which image ``load``, ``status`` and ``estimate`` mean
when they are not told: this kernel's vmlinuz, and the image build-initrd
writes for it (docs/firstkernel.md §"Files").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from capture.errors import CaptureError
from capture.firstkernel.bzimage import read_bzimage

__all__ = ("BootFiles", "boot_files", "default_image")

STATE_DIR = "/var/lib/kdump-capture"
"""The image's home when /boot cannot be written (as Fedora's /var/lib/kdump)."""


@dataclass(frozen=True)
class BootFiles:
    """The capture kernel and its image."""

    kernel: Path
    release: str
    image: Path
    image_given: bool
    """The image was named (--initrd): it is used as it is, never rebuilt."""


def default_image(release: str, boot: str = "/boot") -> Path:
    """build-initrd's default, /boot/initrd-RELEASE-kdump-capture.img, unless
    there is none there and /boot cannot be written: then under /var/lib."""
    in_boot = Path(boot) / f"initrd-{release}-kdump-capture.img"
    if in_boot.exists() or os.access(boot, os.W_OK):
        return in_boot
    return Path(STATE_DIR) / in_boot.name


def boot_files(kernel: str | None, image: str | None, boot: str = "/boot") -> BootFiles:
    """The kernel (default: /boot/vmlinuz-$(uname -r)), its release (read from
    the file) and the image.

    :raises CaptureError: the kernel is missing or no bzImage.
    """
    path = Path(kernel) if kernel else Path(boot) / f"vmlinuz-{os.uname().release}"
    if not path.is_file():
        fix = "give --kernel FILE" if kernel is None else "check the path"
        raise CaptureError(f"{path}: no such kernel: {fix}")
    release = read_bzimage(path, with_span=False).release
    chosen = Path(image) if image else default_image(release, boot)
    return BootFiles(path, release, chosen, image_given=image is not None)
