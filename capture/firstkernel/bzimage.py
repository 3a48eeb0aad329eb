"""What an x86 bzImage (a vmlinuz) says about itself: its release and how
much memory the kernel takes once it runs.

The setup header (Linux's Documentation/arch/x86/boot.rst) gives the release
string (``kernel_version``, a pointer at 0x20e), ``init_size`` at 0x260 and the
compressed vmlinux (``payload_offset``/``payload_length`` at 0x248, protocol
2.08 and later). ``init_size`` is the memory the kernel needs *to start*,
in-place decompression included: an upper bound. What stays reserved once it
runs is vmlinux's ``_text`` to ``_end``, the span of its PT_LOAD segments, so
that is read from the payload when Python can decompress it
(docs/firstkernel.md §"The kernel's size").
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from capture.errors import CaptureError
from capture.firstkernel.archives import bz2, lzma

__all__ = ("BzImage", "read_bzimage")

_HEADER_MAGIC = b"HdrS"
_PAYLOAD_PROTOCOL = 0x208
_ELF_MAGIC = b"\x7fELF"
_PT_LOAD = 1


@dataclass(frozen=True)
class BzImage:
    """The facts of one vmlinuz."""

    path: Path
    release: str
    """``uname -r`` of this kernel, e.g. ``6.1.0-57-amd64``."""
    init_size: int
    """Bytes the kernel needs to decompress and start (the header's init_size)."""
    span: int | None
    """vmlinux's _text to _end in bytes, None when the payload cannot be read here."""


def read_bzimage(path: str | Path, with_span: bool = True) -> BzImage:
    """Read a bzImage's setup header and, when it can (and ``with_span``:
    it decompresses the kernel), its vmlinux's span.

    :raises CaptureError: the file is not an x86 bzImage.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 0x270 or data[0x202:0x206] != _HEADER_MAGIC:
        raise CaptureError(f"{path}: not an x86 bzImage (no HdrS setup header); give a vmlinuz")
    (protocol,) = struct.unpack_from("<H", data, 0x206)
    (init_size,) = struct.unpack_from("<I", data, 0x260)
    readable = with_span and protocol >= _PAYLOAD_PROTOCOL
    span = _vmlinux_span(_payload(data)) if readable else None
    return BzImage(path, _release(data, path), init_size, span)


def _release(data: bytes, path: Path) -> str:
    """The first word of the header's kernel_version string (offset + 0x200)."""
    (pointer,) = struct.unpack_from("<H", data, 0x20E)
    start = pointer + 0x200
    end = data.find(b"\0", start, start + 512)
    words = data[start:end].split() if pointer and end > start else []
    if not words:
        raise CaptureError(f"{path}: the bzImage names no kernel version")
    return words[0].decode("ascii", "replace")


def _payload(data: bytes) -> bytes:
    setup_sectors = data[0x1F1] or 4  # 0 means 4, as the boot protocol says
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    return data[start : start + length]


def _decompress(payload: bytes) -> bytes | None:
    """vmlinux, for the compressions the standard library or zstandard read
    (trailing bytes, such as the size the kernel's build appends, are ignored);
    None for lz4 and lzo, a payload that does not decompress, or a Python
    without the module (the frozen agent has no lzma): init_size stands in."""
    try:
        decompress = _decompressor(payload)
        return None if decompress is None else decompress(payload)
    except ImportError:
        return None
    except Exception:  # each library raises its own error for bad data
        return None


def _decompressor(payload: bytes) -> Callable[[bytes], bytes] | None:
    if payload.startswith(b"\xfd7zXZ\x00"):
        return cast(Callable[[bytes], bytes], lzma.LZMADecompressor().decompress)
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress
    if payload.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(wbits=31).decompress
    if payload.startswith(b"BZh"):
        return cast(Callable[[bytes], bytes], bz2.BZ2Decompressor().decompress)
    if payload.startswith(b"\x5d\x00\x00"):
        return cast(Callable[[bytes], bytes], lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress)
    return None


def _vmlinux_span(payload: bytes) -> int | None:
    """From the lowest PT_LOAD's physical address to the end of the highest."""
    vmlinux = _decompress(payload)
    if vmlinux is None or not vmlinux.startswith(_ELF_MAGIC) or vmlinux[4] != 2:
        return None
    (phoff,) = struct.unpack_from("<Q", vmlinux, 0x20)
    (phentsize, phnum) = struct.unpack_from("<HH", vmlinux, 0x36)
    loads = []
    for index in range(phnum):
        kind, _flags, _offset, _vaddr, paddr, _filesz, memsz = struct.unpack_from(
            "<IIQQQQQ", vmlinux, phoff + index * phentsize
        )
        if kind == _PT_LOAD and memsz:
            loads.append((paddr, paddr + memsz))
    if not loads:
        return None
    return int(max(end for _start, end in loads) - min(start for start, _end in loads))
