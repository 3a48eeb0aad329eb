"""Minimal writer for the newc cpio format the kernel unpacks as initramfs.

Writing the archive in Python lets the lab create device nodes and root-owned
files without fakeroot, and keeps the build deterministic (fixed mtimes).
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class _Entry:
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


@dataclass
class Cpio:
    """An in-memory initramfs: add entries, then write it out."""

    entries: dict[str, _Entry] = field(default_factory=dict)

    def _parents(self, path: str) -> None:
        """Create missing parent directories so the kernel can unpack in order."""
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.entries[d] = _Entry(stat.S_IFDIR | 0o755)

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        """Add a directory (and its parents)."""
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = _Entry(stat.S_IFDIR | mode)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file with the given content."""
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = _Entry(stat.S_IFREG | mode, data)

    def add_host_file(self, path: str, host: Path, mode: int | None = None) -> None:
        """Copy a host file in, keeping its permission bits unless told otherwise."""
        real = host.resolve()
        perm = stat.S_IMODE(real.stat().st_mode) if mode is None else mode
        self.add_file(path, real.read_bytes(), perm)

    def add_symlink(self, path: str, target: str) -> None:
        """Add a symbolic link."""
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = _Entry(stat.S_IFLNK | 0o777, target.encode())

    def add_chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        """Add a character device such as /dev/console (needed before devtmpfs)."""
        path = path.strip("/")
        self._parents(path)
        self.entries[path] = _Entry(stat.S_IFCHR | mode, b"", (major, minor))

    def to_bytes(self) -> bytes:
        """Serialise in newc format, directories first (sorted paths do that)."""
        out = bytearray()
        ino = 1
        for name in sorted(self.entries):
            out += _record(name, self.entries[name], ino)
            ino += 1
        out += _record("TRAILER!!!", _Entry(0), 0)
        return bytes(out)

    def write(self, dest: Path, compress: bool = False) -> None:
        """Write the archive, gzip-compressed if asked (the kernel inflates it)."""
        data = self.to_bytes()
        if compress:
            data = gzip.compress(data, compresslevel=6, mtime=0)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(dest)


def _pad4(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def _record(name: str, ent: _Entry, ino: int) -> bytes:
    """One newc header + name + data, each padded to 4 bytes."""
    bname = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(ent.mode) else 1
    fields = [
        ino,
        ent.mode,
        0,
        0,
        nlink,
        0,
        len(ent.data),
        0,
        0,
        ent.rdev[0],
        ent.rdev[1],
        len(bname),
        0,
    ]
    hdr = b"070701" + b"".join(f"{f:08x}".encode() for f in fields)
    rec = hdr + bname + _pad4(len(hdr) + len(bname)) + ent.data + _pad4(len(ent.data))
    return rec
