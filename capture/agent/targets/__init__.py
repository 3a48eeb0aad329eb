"""Where a capture writes: the interface every target implements.

A target is what the capture run writes into, never how: it makes the dump
directory (``<path>/<ip>-<date>/``), creates files there, syncs and renames
them, reports free space, and lists and removes old dumps. The run knows
nothing of mounts, SFTP or block devices; a new kind of target is one new
module here with a class that satisfies :class:`Target`.

Every file is created 0600 and every directory 0700 (the run's umask is 077
from its start): a vmcore holds every secret the machine had in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import NamedTuple, Protocol

from capture.dumpfile.sink import Sink
from capture.errors import CaptureError

__all__ = (
    "LOCAL_ADDRESS",
    "DumpDir",
    "DumpEntry",
    "DumpFile",
    "Target",
    "TargetError",
    "Waiting",
    "new_directory",
    "sha256_of",
)

LOCAL_ADDRESS = "127.0.0.1"


class TargetError(CaptureError):
    """The target cannot be reached or written (the message says which and why)."""


class DumpFile(Sink, Protocol):
    """A file of the dump directory being written: positional writes (a
    stream's are records of the flattened format), then sync and close."""

    def sync(self) -> None:
        """Make what was written durable (fsync, or the server's ack)."""
        ...


class DumpDir(Protocol):
    """One dump directory on a target."""

    where: str
    """Where it is, for people: ``/var/crash/127.0.0.1-2026-12-01-20:10:00``."""

    def create(self, name: str) -> DumpFile:
        """A new file ``name`` (0600); a seekable one when the target is."""
        ...

    def write_file(self, name: str, data: bytes, durable: bool = True) -> None:
        """Write a small file whole (replacing any), made durable unless
        ``durable`` is False (a file rewritten often, made durable last)."""
        ...

    def publish(self, temporary: str, final: str) -> None:
        """Rename ``temporary`` to ``final`` durably (the directory synced):
        only a whole file ever gets its final name."""
        ...

    def sha256(self, name: str) -> tuple[int, str] | None:
        """Size and sha256 of ``name`` as the target holds it, for the
        manifest: read back after the sync, so it also checks what reached
        the disk. None when the target cannot read it back."""
        ...


def sha256_of(read: Callable[[int], bytes]) -> tuple[int, str]:
    """Size and sha256 of what ``read`` returns until it returns nothing."""
    digest, size = hashlib.sha256(), 0
    while chunk := read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


class DumpEntry(NamedTuple):
    """A dump directory already on the target."""

    name: str
    mtime: float
    """Seconds since the epoch."""


def new_directory(path: str) -> str:
    """Create ``path`` (0700), or ``path-2``, ``path-3``, ... if it exists:
    an earlier dump's directory is never written into.

    :raises TargetError: when it cannot be created.
    """
    for suffix in range(1, 1000):
        candidate = path if suffix == 1 else f"{path}-{suffix}"
        try:
            os.mkdir(candidate, 0o700)
        except FileExistsError:
            continue
        except OSError as error:
            raise TargetError(f"{candidate}: cannot create it: {error.strerror}") from None
        return candidate
    raise TargetError(f"{path}: 999 dump directories of this name already exist")


Waiting = Callable[[float], bool]
"""Called between tries with the seconds to wait: False means the run's time is up."""


class Target(Protocol):
    """A place dumps go."""

    kind: str
    """``local``, ``raw``, ``ssh``, ``nfs``: for the manifest and the hooks."""
    where: str
    """The target as the user knows it (``LABEL=kdump``, ``raw /dev/vdb``)."""
    seekable: bool
    """Whether files here take positional writes (else: the flattened format)."""
    keeps_files: bool
    """Whether files besides the dump (the log, the manifest) can be kept."""

    @property
    def address(self) -> str:
        """The capture kernel's address toward the target, Fedora's ``<ip>``
        in the dump directory's name: :data:`LOCAL_ADDRESS` for a disk, the
        source of the route to the server for a network target (once open)."""
        ...

    def open(self, wait: Waiting) -> None:
        """Make the target writable (wait for the device, mount, remount
        read-write, connect), trying again while ``wait`` allows.

        :raises TargetError: when it cannot be.
        """
        ...

    def make_dump_dir(self, name: str) -> DumpDir:
        """Create ``<path>/<name>/`` (0700) and return it.

        :raises TargetError: when it cannot be created.
        """
        ...

    def free_bytes(self) -> int | None:
        """Space left for a dump, or None when unknown."""
        ...

    def dumps(self) -> list[DumpEntry]:
        """The dump directories under ``path``, oldest first."""
        ...

    def remove_dump(self, name: str) -> None:
        """Delete the dump directory ``name`` and everything in it."""
        ...

    def close(self) -> None:
        """Undo what :meth:`open` did that must be undone (unmount)."""
        ...
