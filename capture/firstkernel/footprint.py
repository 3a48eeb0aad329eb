"""An initramfs's footprint, measured by walking it as the kernel unpacks it.

The file is one or more newc cpio archives, each stored as it is or
compressed (dracut's squash images are an uncompressed cpio holding
squash-root.img; the others a zstd cpio), one after the other with zero
padding between them. The kernel keeps the file in the crash reservation
until it has unpacked every archive into rootfs, so both sizes count
(docs/firstkernel.md §"The crashkernel model").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from capture.errors import CaptureError
from capture.firstkernel.archives import bz2, lzma

__all__ = ("InitrdFootprint", "measure_initrd")

SQUASH_IMAGE = "squash-root.img"
"""What dracut's squash module names the squashfs inside the image."""

_NEWC = (b"070701", b"070702")
_HEADER = 110
_TRAILER = "TRAILER!!!"
_PAGE = 4096
_CHUNK = 1 << 20
_S_IFMT, _S_IFREG = 0o170000, 0o100000


@dataclass
class InitrdFootprint:
    """What one image costs in the capture kernel."""

    path: Path
    compressed: int
    """The file's size: the bytes kexec places inside the reservation."""
    unpacked: int = 0
    """Every archive's length once decompressed, to its trailer."""
    files: int = 0
    file_bytes: int = 0
    rootfs_bytes: int = 0
    """The files' data in whole pages, as rootfs (ramfs) holds them."""
    squash_image: int | None = None
    """squash-root.img's size when this is a squash image."""
    compressions: list[str] = field(default_factory=list)
    """Each archive's compression, in order ("none" for a plain cpio)."""


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes) -> bytes: ...


def measure_initrd(path: str | Path) -> InitrdFootprint:
    """Walk every archive of the image and add up what it unpacks to.

    :raises CaptureError: the file is no cpio image, or is cut short.
    """
    path = Path(path)
    footprint = InitrdFootprint(path, path.stat().st_size)
    with path.open("rb") as file:
        raw = _Raw(file)
        while raw.skip_zeros():
            head = raw.peek(6)
            name, decompressor = _compression(head)
            if decompressor is None and head not in _NEWC:
                raise CaptureError(
                    f"{path}: at byte {raw.offset}: neither a cpio archive nor a compression "
                    "this reads (zstd, gzip, xz, lzma, bzip2); is it an initramfs?"
                )
            footprint.compressions.append(name)
            stream: _Reader = raw if decompressor is None else _Decompressed(raw, decompressor)
            _walk_archive(stream, footprint)
    if not footprint.compressions:
        raise CaptureError(f"{path}: empty file; rebuild the image (kdump-capture build-initrd)")
    return footprint


def _compression(head: bytes) -> tuple[str, _Decompressor | None]:
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        return "zstd", zstandard.ZstdDecompressor().decompressobj()
    if head.startswith(b"\x1f\x8b"):
        return "gzip", zlib.decompressobj(wbits=31)
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz", lzma.LZMADecompressor()
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma", lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    if head.startswith(b"BZh"):
        return "bzip2", bz2.BZ2Decompressor()
    return "none", None


class _Reader(Protocol):
    offset: int

    def read(self, size: int) -> bytes: ...


class _Raw:
    """The file read forward, with what a decompressor did not use put back."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.pending = b""
        self.offset = 0

    def read(self, size: int) -> bytes:
        data = self.pending[:size]
        self.pending = self.pending[size:]
        if len(data) < size:
            data += self.file.read(size - len(data))
        self.offset += len(data)
        return data

    def unread(self, data: bytes) -> None:
        self.pending = data + self.pending
        self.offset -= len(data)

    def peek(self, size: int) -> bytes:
        data = self.read(size)
        self.unread(data)
        return data

    def skip_zeros(self) -> bool:
        """Past the padding between archives; False at the end of the file."""
        while True:
            block = self.read(_PAGE)
            if not block:
                return False
            rest = block.lstrip(b"\0")
            if rest:
                self.unread(rest)
                return True


class _Decompressed:
    """One compressed archive, decompressed as it is read; its end gives the
    bytes after it back to the file."""

    def __init__(self, raw: _Raw, decompressor: _Decompressor) -> None:
        self.raw = raw
        self.decompressor = decompressor
        self.buffer = b""
        self.position = 0  # in buffer: slicing small reads off a large buffer would copy it
        self.offset = 0

    def read(self, size: int) -> bytes:
        while len(self.buffer) - self.position < size and not self.decompressor.eof:
            chunk = self.raw.read(_CHUNK)
            if not chunk:
                break
            self.buffer = self.buffer[self.position :] + self.decompressor.decompress(chunk)
            self.position = 0
            if self.decompressor.eof:
                self.raw.unread(self.decompressor.unused_data)
        data = self.buffer[self.position : self.position + size]
        self.position += len(data)
        self.offset += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _walk_archive(stream: _Reader, footprint: InitrdFootprint) -> None:
    start = stream.offset
    while True:
        header = _exactly(stream, _HEADER, footprint)
        if header[:6] not in _NEWC:
            raise CaptureError(
                f"{footprint.path}: a cpio header without the newc magic; rebuild the image"
            )
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = _exactly(stream, _pad(_HEADER + namesize) - _HEADER, footprint)[: namesize - 1]
        if name.decode("utf-8", "replace") == _TRAILER:
            break
        _skip(stream, _pad(size), footprint)
        if mode & _S_IFMT == _S_IFREG:
            footprint.files += 1
            footprint.file_bytes += size
            footprint.rootfs_bytes += -(-size // _PAGE) * _PAGE
            if name.rsplit(b"/", 1)[-1] == SQUASH_IMAGE.encode():
                footprint.squash_image = size
    footprint.unpacked += stream.offset - start  # to the trailer: the padding after it is not kept
    if isinstance(stream, _Decompressed):
        stream.drain()  # past the padding, to where the next archive may start


def _exactly(stream: _Reader, size: int, footprint: InitrdFootprint) -> bytes:
    data = b""
    while len(data) < size:
        part = stream.read(min(size - len(data), _CHUNK))
        if not part:
            raise CaptureError(f"{footprint.path}: the image is cut short; rebuild it")
        data += part
    return data


def _skip(stream: _Reader, size: int, footprint: InitrdFootprint) -> None:
    while size:
        part = stream.read(min(size, _CHUNK))
        if not part:
            raise CaptureError(f"{footprint.path}: the image is cut short; rebuild it")
        size -= len(part)


def _pad(length: int) -> int:
    return (length + 3) & ~3
