"""``kdump-capture build-initrd``'s arguments and what it prints."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add build-initrd's options; the command runs :func:`build`."""
    parser.description = (
        "Build the capture initramfs with dracut: the frozen agent, kdump.conf (with "
        "persistent device names), its hooks and what its target needs. Not host-only: "
        "with --kmoddir it boots on machines other than this one."
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default="/etc/kdump.conf",
        help="kdump.conf (default: /etc/kdump.conf)",
    )
    parser.add_argument(
        "--kver",
        metavar="VERSION",
        default=os.uname().release,
        help="the capture kernel's release (default: this kernel's)",
    )
    parser.add_argument(
        "--kmoddir",
        metavar="DIR",
        help="its modules, lib/modules/VERSION (default: /lib/modules/VERSION)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="the image (default: /boot/initrd-VERSION-kdump-capture.img)",
    )
    parser.add_argument(
        "--agent", metavar="DIR", help="the frozen agent's tree (default: scripts/build-agent's)"
    )
    parser.add_argument(
        "--kdump-dir",
        metavar="DIR",
        default="/etc/kdump",
        help="where pre.d, post.d and emergency.d are (default: /etc/kdump)",
    )
    squash = parser.add_mutually_exclusive_group()
    squash.add_argument(
        "--squash",
        dest="squash",
        action="store_true",
        default=None,
        help="squashfs image (the default when dracut has it)",
    )
    squash.add_argument(
        "--no-squash", dest="squash", action="store_false", help="a plain zstd cpio"
    )
    parser.add_argument(
        "--no-systemd",
        dest="systemd",
        action="store_false",
        help="dracut's shell init; the agent runs from a pre-pivot hook (no squash)",
    )
    parser.set_defaults(command=build)


def build(args: argparse.Namespace) -> int:
    """Build the image and say what it is."""
    from capture.firstkernel.initrd import build_initrd

    output = args.output or f"/boot/initrd-{args.kver}-kdump-capture.img"
    image = build_initrd(
        args.config,
        args.kver,
        args.kmoddir,
        output,
        agent=args.agent,
        kdump_dir=args.kdump_dir,
        squash=args.squash,
        systemd=args.systemd,
    )
    kind = "squashfs" if image.squash else "zstd cpio"
    print(f"{image.path}: {image.size} bytes ({kind}), agent {image.agent}")
    return 0
