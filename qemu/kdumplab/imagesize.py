"""What a capture image costs in memory: its file, what the kernel unpacks
into rootfs, and, for a squash image, what the squashfs holds.

The crashkernel floor follows these sizes (the kernel holds the file and
the unpacked rootfs at the same time while it unpacks), so the floor table
shows them next to each image. Only uncompressed newc archives are read
here (what dracut's squash images are: the outer cpio stays uncompressed);
for any other the file size alone is given.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

NEWC_MAGIC = b"070701"
NEWC_HEADER = 110
SQUASH_NAME = "squash-root.img"


@dataclass
class ImageSize:
    """Bytes: the file; the files unpacked into rootfs; the squashfs image in
    it and the files inside that; the biggest files inside, by path."""

    file: int
    rootfs: int | None = None
    squash: int | None = None
    squash_files: int | None = None
    largest: list[tuple[int, str]] = field(default_factory=list)


def image_size(image: Path, largest: int = 15) -> ImageSize:
    """Measure ``image`` (see the module's docstring)."""
    data = image.read_bytes()
    size = ImageSize(len(data))
    if not data.startswith(NEWC_MAGIC):
        return size
    members = dict(_newc_members(data))
    size.rootfs = sum(len(body) for body in members.values())
    squash = members.get(SQUASH_NAME)
    if squash is not None:
        size.squash = len(squash)
        files = _squash_listing(squash)
        size.squash_files = sum(n for n, _ in files)
        size.largest = sorted(files, reverse=True)[:largest]
    return size


def _newc_members(data: bytes) -> list[tuple[str, bytes]]:
    """(name, contents) of each regular file of the concatenated newc archives."""
    members: list[tuple[str, bytes]] = []
    at = 0
    while data.startswith(NEWC_MAGIC, at):
        fields = [int(data[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        name_at = at + NEWC_HEADER
        name = data[name_at : name_at + namesize - 1].decode(errors="replace")
        body_at = _align4(name_at + namesize)
        if name == "TRAILER!!!":
            at = body_at
            while at < len(data) and data[at] == 0:  # padding before the next archive
                at += 1
            continue
        if mode & 0o170000 == 0o100000:
            members.append((name, data[body_at : body_at + filesize]))
        at = _align4(body_at + filesize)
    return members


def _align4(offset: int) -> int:
    return (offset + 3) & ~3


def _squash_listing(squash: bytes) -> list[tuple[int, str]]:
    """(size, path) of each regular file in the squashfs (``unsquashfs -lls``)."""
    with tempfile.NamedTemporaryFile(suffix=".squashfs") as tmp:
        tmp.write(squash)
        tmp.flush()
        out = subprocess.run(["unsquashfs", "-lls", tmp.name], capture_output=True, text=True,
                             errors="replace", check=True).stdout  # fmt: skip
    files: list[tuple[int, str]] = []
    for line in out.splitlines():
        words = line.split(None, 5)
        if len(words) == 6 and words[0].startswith("-"):
            files.append((int(words[2]), words[5].removeprefix("squashfs-root")))
    return files


def mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:.1f} MiB"
