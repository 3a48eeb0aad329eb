"""``nfs host:/export``: an NFS export mounted at capture time, then a directory target.

Mounted as Fedora's initramfs mounts it (docs/capture.md §"NFS target"):
with the options of the export's fstab entry when there is one (``ro``
becomes ``rw``; ``noauto``, ``nofail``, ``nobootwait`` and ``addr=``,
``proto=``, ``clientaddr=`` dropped; an ``nfs4`` entry means ``vers=4``),
at ``/kdumproot`` (``/kdumproot/<its mount point>`` with an entry). Once
mounted it holds the same files as a local filesystem
(:class:`~capture.agent.targets.local.DirectoryTarget`), under
``<mnt>/<path>/<ip>-<date>/`` where ``<ip>`` is the capture kernel's
source address toward the server.

Beyond Fedora, whose ``hard`` default lets a dead server hang the capture
kernel forever (rhkdump/kdump-utils #52):

* the mount is always ``soft``, with ``timeo``/``retrans`` (defaults
  :data:`DEFAULT_TIMEO`, :data:`DEFAULT_RETRANS`: a request the server never
  answers fails with EIO after about 30 s) and ``retry=0`` (our own loop
  tries again, with backoff, within the run's time);
* ``nolock`` unless the entry says ``lock``: no rpc.statd runs in the
  capture kernel, and nothing else uses the files;
* the dump file is synced every :data:`SYNC_BYTES`, so a server that dies
  mid-dump is noticed within a timeout, not at the end of gigabytes written
  into the page cache and silently dropped;
* a request that has not come back after ``kdump_capture_stall_timeout``
  (a write waiting in the kernel, where no signal reaches it: soft
  timeouts run per request, and a dead server's queue of them can take
  minutes) is ended by ``umount -f``, which fails every request in flight;
* after the server has failed one request, every later one fails at once
  (:class:`_Server`), and the export is unmounted with ``umount -f -l``:
  the run reaches its action without paying the timeout again per file.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple, TypeVar

from capture.agent.config import NfsTarget
from capture.agent.targets import TargetError, Waiting
from capture.agent.targets.local import (
    DEFAULT_MOUNT_ROOT,
    DirectoryTarget,
    LocalDumpDir,
    LocalDumpFile,
)
from capture.agent.targets.retry import with_backoff

__all__ = (
    "DEFAULT_RETRANS",
    "DEFAULT_TIMEO",
    "MOUNT_WAIT",
    "SYNC_BYTES",
    "FstabEntry",
    "NfsDumpDir",
    "NfsDumpFile",
    "NfsExportTarget",
    "fstab_entry",
    "mount_options",
    "source_address",
)

log = logging.getLogger("capture")
T = TypeVar("T")

DEFAULT_TIMEO = 50
"""Tenths of a second before the first retransmission (TCP backs off
linearly: 5 + 10 + 15 s with :data:`DEFAULT_RETRANS` 2, then EIO)."""
DEFAULT_RETRANS = 2
MOUNT_WAIT = 180.0
"""Seconds the mount is tried again (the network may come up late), within the run's deadline."""
SYNC_BYTES = 16 << 20
"""The dump file is synced after each this many bytes: a dead server shows at once."""
_MOUNT_SECONDS = 60
"""One mount.nfs at most (soft, timeo: it ends sooner against a dead server)."""
_UMOUNT_SECONDS = 30
_NFS_PORT = 2049
_DROPPED = {"defaults", "noauto", "auto", "nofail", "nobootwait", "_netdev", "user",
            "users", "owner", "nouser", "hard", "soft", "intr", "nointr"}  # fmt: skip
_DROPPED_KEYS = {"addr", "proto", "clientaddr", "retry", "comment"}
_GONE = (errno.EIO, errno.ETIMEDOUT, errno.ESTALE, errno.ENOTCONN, errno.ECONNREFUSED,
         errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET)  # fmt: skip
"""What a dead or unreachable server looks like to a file operation."""


class FstabEntry(NamedTuple):
    """The fstab line for the export."""

    mount_point: str
    fstype: str
    options: tuple[str, ...]


def fstab_entry(target: NfsTarget, fstab: str = "/etc/fstab") -> FstabEntry | None:
    """The export's entry in ``fstab`` (type nfs or nfs4), if it has one."""
    try:
        with open(fstab) as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    wanted = _source(target).rstrip("/")
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3 and fields[2] in ("nfs", "nfs4") and fields[0].rstrip("/") == wanted:
            options = tuple(fields[3].split(",")) if len(fields) > 3 else ()
            return FstabEntry(fields[1], fields[2], options)
    return None


def mount_options(entry: FstabEntry | None) -> str:
    """The ``-o`` of mount.nfs: Fedora's massaging of the entry's options, then ours."""
    kept: list[str] = []
    keys: set[str] = set()
    for option in entry.options if entry else ():
        key = option.partition("=")[0]
        if option in _DROPPED or key in _DROPPED_KEYS or option.startswith("x-"):
            continue
        option = "rw" if option == "ro" else option
        kept.append(option)
        keys.add(option.partition("=")[0])
    if entry is not None and entry.fstype == "nfs4" and not keys & {"vers", "nfsvers"}:
        kept.append("vers=4")
    ours = ["soft", "retry=0"]
    ours += [] if "timeo" in keys else [f"timeo={DEFAULT_TIMEO}"]
    ours += [] if "retrans" in keys else [f"retrans={DEFAULT_RETRANS}"]
    ours += [] if keys & {"lock", "nolock"} else ["nolock"]
    if "rw" not in keys:
        ours.append("rw")
    return ",".join(kept + ours)


def source_address(host: str) -> str:
    """The capture kernel's address on the route to ``host`` (Fedora's ``<ip>``).

    :raises OSError: when ``host`` cannot be resolved or there is no route.
    """
    family, _, _, _, address = socket.getaddrinfo(host, _NFS_PORT, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(address)  # a UDP connect sends nothing: the route is looked up
        local: str = probe.getsockname()[0]
    return local


class _Server:
    """Whether the server has failed a request: then every later one fails
    at once; and a watch on the request in flight (:meth:`watch`)."""

    def __init__(self, where: str, stall_seconds: float) -> None:
        self.where = where
        self.failure: str | None = None
        self._stall = stall_seconds
        self._busy_since: float | None = None
        self._watching = False

    def watch(self, mount_point: str) -> None:
        """From now on, a request out longer than the stall time is ended
        with ``umount -f`` (the kernel fails every request in flight)."""
        if self._stall <= 0 or self._watching:
            return
        self._watching = True
        threading.Thread(target=self._watch, args=(mount_point,), daemon=True,
                         name="nfs-watch").start()  # fmt: skip

    def stop(self) -> None:
        self._watching = False

    def _watch(self, mount_point: str) -> None:
        while self._watching and self.failure is None:
            time.sleep(1.0)
            since = self._busy_since
            if since is not None and time.monotonic() - since > self._stall:
                self.failure = (f"the server did not answer for {self._stall:g} s "
                                "(kdump_capture_stall_timeout)")  # fmt: skip
                log.error("%s: %s: failing its requests (umount -f)", self.where, self.failure)
                _force_unmount(mount_point, lazy=False)

    def check(self) -> None:
        if self.failure is not None:
            raise TargetError(f"{self.where}: {self.failure} (earlier); not tried again")

    def guard(self, what: str, operation: Callable[[], T]) -> T:
        """``operation``, with a dead server's error turned into a TargetError."""
        self.check()
        self._busy_since = time.monotonic()
        try:
            done = operation()
        except OSError as error:
            if error.errno not in _GONE:
                raise
            self.failure = self.failure or f"the server did not answer ({what}: {error.strerror})"
            raise TargetError(f"{self.where}: {self.failure}") from None
        finally:
            self._busy_since = None
        self.check()  # the watch gave up on the server while this waited
        return done


class NfsDumpFile(LocalDumpFile):
    """A dump file on the export, synced every :data:`SYNC_BYTES`."""

    def __init__(self, path: str, server: _Server) -> None:
        self._server = server
        server.guard("create", partial(LocalDumpFile.__init__, self, path))
        self._unsynced = 0

    def write_at(self, offset: int, data: bytes) -> None:
        self._server.guard("write", partial(LocalDumpFile.write_at, self, offset, data))
        self._written(len(data))

    def copy_from(self, fd: int, source_offset: int, length: int, offset: int) -> bool:
        copy = partial(LocalDumpFile.copy_from, self, fd, source_offset, length, offset)
        copied = self._server.guard("write", copy)
        if copied:
            self._written(length)
        return copied

    def reserve(self, offset: int, length: int) -> None:
        self._server.guard("reserve", partial(LocalDumpFile.reserve, self, offset, length))

    def sync(self) -> None:
        self._server.guard("sync", lambda: os.fdatasync(self._fd))

    def close(self) -> None:
        if self._server.failure is not None:
            # close() flushes what is still dirty, and would wait on the dead
            # server again: the descriptor is left open, the run ends soon.
            self._fd = -1
            return
        self._server.guard("close", super().close)

    def _written(self, count: int) -> None:
        self._unsynced += count
        if self._unsynced >= SYNC_BYTES:
            self._unsynced = 0
            self.sync()


class NfsDumpDir(LocalDumpDir):
    """A dump directory on the export: a local one whose server may die."""

    def __init__(self, path: str, server: _Server) -> None:
        super().__init__(path)
        self._server = server

    def create(self, name: str) -> NfsDumpFile:
        return NfsDumpFile(os.path.join(self._path, name), self._server)

    def write_file(self, name: str, data: bytes, durable: bool = True) -> None:
        write = partial(LocalDumpDir.write_file, self, name, data, durable)
        self._server.guard(f"write {name}", write)

    def publish(self, temporary: str, final: str) -> None:
        rename = partial(LocalDumpDir.publish, self, temporary, final)
        self._server.guard(f"rename {temporary}", rename)

    def sha256(self, name: str) -> tuple[int, str] | None:
        self._server.check()
        return super().sha256(name)


class NfsExportTarget(DirectoryTarget):
    """``nfs host:/export``, mounted here (or where it already is)."""

    kind = "nfs"

    def __init__(
        self,
        target: NfsTarget,
        path: str,
        mount_root: str = DEFAULT_MOUNT_ROOT,
        fstab: str = "/etc/fstab",
        mount_wait: float = MOUNT_WAIT,
        stall_seconds: float = 300,
    ) -> None:
        super().__init__(path)
        self._target, self._mount_root, self._fstab = target, mount_root, fstab
        self._mount_wait = mount_wait
        self.where = f"{target} at {path}"
        self._server = _Server(str(target), stall_seconds)
        self._mounted_here = False

    def open(self, wait: Waiting) -> None:
        entry = fstab_entry(self._target, self._fstab)
        self.address = self._route(wait)
        mounted = _mounted_export(_source(self._target))
        if mounted is not None:
            log.info("%s is mounted at %s", self._target, mounted)
            self.mount_point = mounted
        else:
            self.mount_point = self._mount(entry, wait)
        self._server.watch(self.mount_point)
        self._server.guard("mkdir", self.make_dump_root)

    def make_dump_dir(self, name: str) -> NfsDumpDir:
        made = self._server.guard("mkdir", partial(DirectoryTarget.make_dump_dir, self, name))
        return NfsDumpDir(made.where, self._server)

    def free_bytes(self) -> int | None:
        return None if self._server.failure else super().free_bytes()

    def close(self) -> None:
        self._server.stop()
        if not self._mounted_here or self.mount_point is None:
            return
        if self._server.failure:
            _force_unmount(self.mount_point, lazy=True)
        else:
            _unmount(self.mount_point)
        self._mounted_here = False

    def _route(self, wait: Waiting) -> str:
        """Our address toward the server, waited for (the network may be late)."""

        def attempt(seconds: float) -> str:
            return source_address(self._target.host)

        address = with_backoff(attempt, wait, self._mount_wait, f"{self._target}: no route")
        log.info("%s: reached from %s", self._target, address)
        return address

    def _mount(self, entry: FstabEntry | None, wait: Waiting) -> str:
        point = self._mount_root
        if entry is not None:
            point = os.path.join(self._mount_root, entry.mount_point.lstrip("/"))
        os.makedirs(point, mode=0o700, exist_ok=True)
        options = mount_options(entry)
        command = ["mount", "-t", "nfs", "-o", options, _source(self._target), point]
        log.info("mounting: %s", " ".join(command))
        with_backoff(lambda seconds: _run_mount(command, seconds), wait, self._mount_wait,
                      f"mount {_source(self._target)}")  # fmt: skip
        self._mounted_here = True
        log.info("mounted %s at %s (%s)", self._target, point, options)
        return point


def _unmount(mount_point: str, *flags: str) -> None:
    try:
        subprocess.run(["umount", *flags, mount_point], check=False, capture_output=True,
                       timeout=_UMOUNT_SECONDS)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("umount %s: %s", mount_point, error)


def _force_unmount(mount_point: str, lazy: bool) -> None:
    """``umount -f``: every request in flight fails (EIO) at once, even while
    the export is busy; ``-l`` also detaches it."""
    _unmount(mount_point, "-f", *(["-l"] if lazy else []))


def _run_mount(command: list[str], seconds: float) -> None:
    limit = min(_MOUNT_SECONDS, seconds)
    try:
        subprocess.run(command, check=True, capture_output=True, text=True,
                       timeout=limit)  # fmt: skip
    except subprocess.CalledProcessError as error:
        raise OSError(error.stderr.strip() or f"exit status {error.returncode}") from None
    except subprocess.TimeoutExpired:
        raise OSError(f"no answer in {limit:.0f} s") from None


def _source(target: NfsTarget) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.export}"


def _mounted_export(source: str) -> str | None:
    """Where the export is mounted now, if it is."""
    try:
        with open("/proc/self/mountinfo") as mounts:
            for line in mounts:
                fields = line.split()
                after = line.split(" - ", 1)[1].split() if " - " in line else []
                nfs = len(after) >= 2 and after[0] in ("nfs", "nfs4")
                if nfs and after[1].rstrip("/") == source.rstrip("/"):
                    return fields[4].replace("\\040", " ")
    except OSError:
        return None
    return None
