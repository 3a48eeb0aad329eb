"""estimate and load against real files: the lab's Debian kernels and a
capture image that load's own rebuild builds with the real dracut.

The oracles are other tools: the kernel's release as its Debian package
names it, the vmlinux span as readelf reads the payload that xz -d finds by its magic (as
the kernel's scripts/extract-vmlinux does), the image's length in GNU
cpio's blocks and its files in cpio -tv's listing, synthetic images written
by GNU cpio and compressed by zstd, xz and gzip. The model's constants are
checked against the floors measured for it (docs/firstkernel.md §"The
crashkernel model").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from capture.errors import CaptureError
from capture.firstkernel.bzimage import read_bzimage
from capture.firstkernel.estimate import EARLY, MARGIN, Estimate, KernelSize, estimate
from capture.firstkernel.footprint import InitrdFootprint, measure_initrd
from capture.firstkernel.initrd import find_agent
from capture.firstkernel.load import _rebuild_if_stale, prepare
from tests.realcores import REPO

sys.path.insert(0, str(REPO / "qemu"))
from kdumplab.kernels import get_kernel

MIB = 1 << 20


def _readelf_span(vmlinuz: Path, magic: bytes, decompress: list[str], work: Path) -> int:
    """vmlinux's _text.._end by other tools: the payload found by its magic,
    decompressed, its program headers read by readelf."""
    data = vmlinuz.read_bytes()
    start = data.index(magic)
    vmlinux = subprocess.run(
        decompress, input=data[start:], capture_output=True, check=False
    ).stdout  # trailing bytes after the stream make the tools complain, not fail the output
    assert vmlinux[:4] == b"\x7fELF"
    (work / "vmlinux").write_bytes(vmlinux)
    headers = subprocess.run(
        ["readelf", "-lW", str(work / "vmlinux")], capture_output=True, text=True, check=True
    ).stdout
    loads = [line.split() for line in headers.splitlines() if line.strip().startswith("LOAD")]
    spans = [(int(words[3], 16), int(words[3], 16) + int(words[5], 16)) for words in loads]
    return max(end for _s, end in spans) - min(start for start, _e in spans)


@pytest.mark.parametrize(
    ("alias", "magic", "decompress"),
    [
        ("6.1", b"\xfd7zXZ\x00", ["xz", "-dc", "--single-stream"]),
        ("6.12", b"\x28\xb5\x2f\xfd", ["zstd", "-dc"]),
    ],
)
def test_a_real_vmlinuz_gives_its_release_and_span(
    alias: str, magic: bytes, decompress: list[str], tmp_path: Path
) -> None:
    kern = get_kernel(alias)
    image = read_bzimage(kern.vmlinuz)
    assert image.release == kern.release  # the Debian package's name for it
    assert image.span == _readelf_span(kern.vmlinuz, magic, decompress, tmp_path)
    assert image.init_size > image.span  # the header's is an upper bound: decompression room


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> argparse.Namespace:
    """load's rebuild of a missing image: a squash image for the lab's 6.1 kernel."""
    kern = get_kernel("6.1")
    work = tmp_path_factory.mktemp("image")
    hook = work / "kdump" / "post.d" / "50-note"
    hook.parent.mkdir(parents=True)
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    config = work / "kdump.conf"
    config.write_text("ext4 LABEL=kdump\nfinal_action poweroff\n")
    args = argparse.Namespace(
        config=str(config), kernel=str(kern.vmlinuz), initrd=str(work / "initrd.img"),
        kmoddir=str(kern.moddir), agent=str(find_agent(None)), kdump_dir=str(work / "kdump"),
        root=str(work / "root"), sysconfig=None, dry_run=False,
    )  # fmt: skip
    prepared = prepare(args, Path(args.agent))
    assert prepared.freshness.reasons == (f"{args.initrd} does not exist",)
    # as load does for its default image (the default is in /boot, not for a test)
    ours = dataclasses.replace(prepared.files, image_given=False)
    _rebuild_if_stale(dataclasses.replace(prepared, files=ours), args)
    return args


def test_the_rebuilt_image_is_current_until_a_hook_changes(built: argparse.Namespace) -> None:
    assert prepare(built, Path(built.agent)).freshness.current
    hooks = Path(built.kdump_dir) / "post.d"
    built_at = Path(built.initrd).stat().st_mtime
    try:
        (hooks / "60-new").write_text("#!/bin/sh\n")
        reasons = prepare(built, Path(built.agent)).freshness.reasons
        assert reasons == (
            f"{hooks / '60-new'} changed after the image was built",
            f"{hooks} changed after the image was built",  # a hook added: its directory changed
        )
        os.utime(hooks, (built_at - 1, built_at - 1))
        os.utime(hooks / "50-note", (built_at + 1, built_at + 1))
        reasons = prepare(built, Path(built.agent)).freshness.reasons
        assert reasons == (
            f"{hooks / '50-note'} changed after the image was built",
            f"{hooks / '60-new'} changed after the image was built",
        )
    finally:
        (hooks / "60-new").unlink()
        for path in (hooks, hooks / "50-note"):
            os.utime(path, (built_at - 1, built_at - 1))
    assert prepare(built, Path(built.agent)).freshness.current


def _cpio_listing(image: Path) -> tuple[int, dict[str, int]]:
    """GNU cpio's block count (512 bytes) and each regular file's size."""
    with image.open("rb") as stream:
        listing = subprocess.run(
            ["cpio", "-itv", "--quiet"], stdin=stream, capture_output=True, text=True, check=True
        )
    with image.open("rb") as stream:
        blocks = subprocess.run(["cpio", "-it"], stdin=stream, capture_output=True, text=True)
    [count] = re.findall(r"^(\d+) blocks?$", blocks.stderr, re.M)
    files = {
        words[-1]: int(words[4])
        for words in (line.split() for line in listing.stdout.splitlines())
        if words[0].startswith("-")
    }
    return int(count), files


def test_estimate_of_the_real_squash_image(built: argparse.Namespace) -> None:
    image = Path(built.initrd)
    root = Path(built.root)
    (root / "sys" / "kernel").mkdir(parents=True, exist_ok=True)
    (root / "sys" / "kernel" / "kexec_crash_size").write_text(f"{256 << 20}\n")
    result = estimate(built.kernel, built.initrd, built.root)
    footprint = result.initrd
    blocks, files = _cpio_listing(image)
    assert footprint.compressions == ["none"]  # dracut's squash: an uncompressed outer cpio
    assert -(-footprint.unpacked // 512) == blocks
    assert footprint.squash_image == files["squash-root.img"] > 10 * MIB
    assert (footprint.files, footprint.file_bytes) == (len(files), sum(files.values()))
    assert footprint.compressed == image.stat().st_size
    span = read_bzimage(built.kernel).span
    assert span is not None
    needed = span + EARLY + image.stat().st_size + footprint.unpacked + MARGIN
    assert result.needed == needed
    assert result.crashkernel == -(-needed // (16 * MIB)) * 16 * MIB
    assert result.reserved == 256 << 20 and result.enough
    printed = subprocess.run(
        [sys.executable, "-m", "capture", "estimate", "--kernel", built.kernel,
         "--initrd", built.initrd, "--root", built.root, "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    report = json.loads(printed)
    assert report["crashkernel"] == f"{result.crashkernel // MIB}M"
    assert report["kernel"]["source"] == "vmlinux-span"
    assert report["initrd"]["unpacked_bytes"] == footprint.unpacked
    assert "Debian's 6.1 kernel in QEMU" in report["model"]


def test_load_dry_run_with_the_real_files(built: argparse.Namespace) -> None:
    root = Path(built.root)
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cmdline").write_text("root=/dev/vda ro crashkernel=256M console=ttyS0\n")
    (root / "sys" / "kernel").mkdir(parents=True, exist_ok=True)
    (root / "sys" / "kernel" / "kexec_crash_size").write_text(f"{256 << 20}\n")
    result = subprocess.run(
        [sys.executable, "-m", "capture", "load", "--dry-run", "--config", built.config,
         "--kernel", built.kernel, "--initrd", built.initrd, "--kmoddir", built.kmoddir,
         "--agent", built.agent, "--kdump-dir", built.kdump_dir, "--root", built.root],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"kexec -s -p {built.kernel} --initrd={built.initrd} '--command-line=root=/dev/vda ro "
        "console=ttyS0 novmcoredd hugetlb_cma=0 kfence.sample_interval=0 "
        "initramfs_options=size=90% irqpoll nr_cpus=1 reset_devices cgroup_disable=memory "
        "mce=off numa=off udev.children-max=2 panic=10 acpi_no_memhotplug "
        "transparent_hugepage=never nokaslr hest_disable cma=0 pcie_ports=compat "
        "rd.systemd.gpt_auto=no'\n"
    )


def _to_trailer(archive: bytes) -> int:
    """A newc archive's length to its trailer record (GNU cpio pads to 512 bytes after it)."""
    end = archive.rindex(b"TRAILER!!!\0") + len(b"TRAILER!!!\0")
    return end + (-end % 4)


def _gnu_cpio(directory: Path) -> bytes:
    names = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*"))
    return subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"], input="\n".join(names).encode(),
        cwd=directory, capture_output=True, check=True,
    ).stdout  # fmt: skip


@pytest.mark.parametrize(
    ("name", "compress"),
    [("zstd", ["zstd", "-q", "-19", "-c"]), ("xz", ["xz", "-c", "--check=crc32"]),
     ("gzip", ["gzip", "-n", "-c"])],
)  # fmt: skip
def test_an_early_cpio_then_a_compressed_one(
    tmp_path: Path, name: str, compress: list[str]
) -> None:
    """As dracut lays out an image with early microcode: a plain cpio, padding, a compressed one."""
    early_dir, main_dir = tmp_path / "early", tmp_path / "main"
    (early_dir / "kernel" / "x86").mkdir(parents=True)
    (early_dir / "kernel" / "x86" / "microcode.bin").write_bytes(os.urandom(5000))
    (main_dir / "usr" / "bin").mkdir(parents=True)
    (main_dir / "usr" / "bin" / "agent").write_bytes(os.urandom(300_000))
    (main_dir / "init").write_bytes(b"#!/bin/sh\n" * 1000)
    (main_dir / "empty").write_bytes(b"")
    os.symlink("usr/bin/agent", main_dir / "link")
    early, main = _gnu_cpio(early_dir), _gnu_cpio(main_dir)
    packed = subprocess.run(compress, input=main, capture_output=True, check=True).stdout
    image = tmp_path / "initrd.img"
    image.write_bytes(early + b"\0" * (-len(early) % 512) + packed)
    footprint = measure_initrd(image)
    assert footprint.compressions == ["none", name]
    assert footprint.unpacked == _to_trailer(early) + _to_trailer(main)
    assert footprint.files == 4 and footprint.squash_image is None
    assert footprint.file_bytes == 5000 + 300_000 + 10_000
    assert footprint.rootfs_bytes == (2 + 74 + 3) * 4096
    assert footprint.compressed == image.stat().st_size


def test_a_file_that_is_no_image_is_named(tmp_path: Path) -> None:
    image = tmp_path / "initrd.img"
    image.write_bytes(b"PK\x03\x04 not a cpio")
    with pytest.raises(CaptureError, match=r"initrd.img: at byte 0: neither a cpio archive"):
        measure_initrd(image)
    image.write_bytes(_gnu_cpio(_one_file_dir(tmp_path))[:300])
    with pytest.raises(CaptureError, match="cut short"):
        measure_initrd(image)


def _one_file_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "one"
    directory.mkdir()
    (directory / "file").write_bytes(os.urandom(4000))
    return directory


@pytest.mark.parametrize(
    ("name", "compressed", "unpacked", "floor", "probe"),
    [
        ("busybox + makedumpfile", 2.7, 8.3, 112, (104, "passed")),
        ("dracut, systemd, zstd", 11.4, 32.3, 144, (136, "passed")),
        ("dracut squash", 14.5, 14.5, 128, (120, "passed")),
        ("dracut + the frozen agent", 20.7, 57.3, 176, (168, "failed")),
        ("dracut squash + the frozen agent", 23.6, 23.6, 144, None),
    ],
)
def test_the_model_gives_the_measured_floors(
    name: str, compressed: float, unpacked: float, floor: int, probe: tuple[int, str] | None
) -> None:
    """Debian 6.1.0-56 (58.0 MiB span, as -57's) on the 16M grid, and the one 8M
    probe each had between its floor and the failure below (the agent's squash
    image passed 136M with 27.1 MiB left, under the 29 MiB margin: no zstd window
    to make room for; the model calls that one a fail)."""
    kernel = KernelSize("vmlinuz", "6.1.0-56-amd64", 58 * MIB, "vmlinux-span")
    footprint = InitrdFootprint(Path(name), int(compressed * MIB), int(unpacked * MIB))
    result = Estimate(kernel, footprint, None)
    assert result.crashkernel == floor * MIB
    if probe is not None:
        size, outcome = probe
        assert (result.needed <= size * MIB) == (outcome == "passed")


def test_a_payload_that_cannot_be_read_leaves_init_size(tmp_path: Path) -> None:
    """As for an lz4 or lzo kernel, or a Python without lzma (the frozen agent)."""
    kern = get_kernel("6.1")
    data = bytearray(kern.vmlinuz.read_bytes())
    start = data.index(b"\xfd7zXZ\x00")
    data[start + 64 : start + 4096] = bytes(4096 - 64)  # the stream no longer decodes
    broken = tmp_path / "vmlinuz"
    broken.write_bytes(bytes(data))
    image = read_bzimage(broken)
    assert image.span is None and image.release == kern.release
    assert image.init_size == int.from_bytes(data[0x260:0x264], "little")
    ramdisk = tmp_path / "initrd.img"
    ramdisk.write_bytes(_gnu_cpio(_one_file_dir(tmp_path)))
    result = estimate(str(broken), str(ramdisk), str(tmp_path))
    assert (result.kernel.source, result.kernel.bytes) == ("init_size", image.init_size)
    assert result.reserved is None and result.enough is None
    (tmp_path / "not-a-kernel").write_bytes(b"\0" * 4096)
    with pytest.raises(CaptureError, match="not an x86 bzImage"):
        read_bzimage(tmp_path / "not-a-kernel")
