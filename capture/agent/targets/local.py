"""Local filesystem targets: the root filesystem, or a device kdump.conf names.

No target line means the root filesystem: ``path`` under the sysroot, where
the initramfs mounted it (``/sysroot``). ``ext4 LABEL=kdump`` and the like
name a filesystem on a device (a node, ``LABEL=``, ``UUID=``; a virtiofs
tag): used where it is already mounted, else mounted at ``/kdumproot``
(``dracut_args --mount``: where that says), as Fedora's initramfs does. A
device still being probed is waited for; a read-only mount is remounted
read-write.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess

from capture.agent.config import DeviceBy, FilesystemTarget
from capture.agent.targets import (
    LOCAL_ADDRESS,
    DumpEntry,
    TargetError,
    Waiting,
    new_directory,
    sha256_of,
)
from capture.agent.targets.devices import wait_for_device
from capture.dumpfile.sink import FileSink

__all__ = (
    "DirectoryTarget",
    "LocalDumpDir",
    "LocalDumpFile",
    "LocalTarget",
    "find_device",
    "mount_of",
)

log = logging.getLogger("capture")

DEFAULT_MOUNT_ROOT = "/kdumproot"
_MOUNT_SECONDS = 60


class LocalDumpFile(FileSink):
    """A dump directory's file: a regular file taking positional writes."""

    def sync(self) -> None:
        os.fsync(self._fd)


class LocalDumpDir:
    """``<mount>/<path>/<name>/`` on a local filesystem."""

    def __init__(self, path: str) -> None:
        self.where = path
        self._path = path

    def create(self, name: str) -> LocalDumpFile:
        return LocalDumpFile(os.path.join(self._path, name))

    def write_file(self, name: str, data: bytes, durable: bool = True) -> None:
        path = os.path.join(self._path, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def publish(self, temporary: str, final: str) -> None:
        os.rename(os.path.join(self._path, temporary), os.path.join(self._path, final))
        _sync_directory(self._path)

    def sha256(self, name: str) -> tuple[int, str] | None:
        with open(os.path.join(self._path, name), "rb") as file:
            return sha256_of(file.read)


class DirectoryTarget:
    """A target that is a directory tree once mounted: ``<mount>/<path>/``.

    What a local filesystem and an NFS export share once mounted: the dump
    directories, free space (statvfs) and retention (a listing). A subclass
    mounts in :meth:`open` and sets :attr:`mount_point`.
    """

    seekable = True
    keeps_files = True
    address = LOCAL_ADDRESS

    def __init__(self, path: str) -> None:
        self._path = path
        self.mount_point: str | None = None

    @property
    def dump_root(self) -> str:
        """``<mount>/<path>``: where the dump directories are."""
        if self.mount_point is None:
            raise TargetError("the target is not open")
        return os.path.join(self.mount_point, self._path.lstrip("/"))

    def make_dump_root(self) -> None:
        """``<mount>/<path>``, writable (remounted read-write if need be).

        :raises TargetError: when it cannot be.
        """
        assert self.mount_point is not None
        _ensure_writable(self.mount_point)
        root = self.dump_root
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
        except OSError as error:
            raise TargetError(f"{root}: cannot create it: {error.strerror}") from None

    def make_dump_dir(self, name: str) -> LocalDumpDir:
        """A new directory: a second capture in the same second gets ``-2``,
        never the first one's files."""
        return LocalDumpDir(new_directory(os.path.join(self.dump_root, name)))

    def free_bytes(self) -> int | None:
        try:
            stat = os.statvfs(self.dump_root)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def dumps(self) -> list[DumpEntry]:
        entries = []
        try:
            with os.scandir(self.dump_root) as found:
                for entry in found:
                    if entry.is_dir(follow_symlinks=False) and _looks_like_dump(entry.path):
                        entries.append(DumpEntry(entry.name, entry.stat().st_mtime))
        except OSError:
            return []
        return sorted(entries, key=lambda entry: (entry.mtime, entry.name))

    def remove_dump(self, name: str) -> None:
        shutil.rmtree(os.path.join(self.dump_root, name))


class LocalTarget(DirectoryTarget):
    """A local filesystem: the root one (``target`` None) or a device's."""

    kind = "local"

    def __init__(
        self,
        target: FilesystemTarget | None,
        path: str,
        sysroot: str = "/sysroot",
        mount_root: str = DEFAULT_MOUNT_ROOT,
    ) -> None:
        super().__init__(path)
        self._target = target
        self._sysroot, self._mount_root = sysroot, mount_root
        self.where = f"{target} at {path}" if target else f"root filesystem: {path}"
        self._mounted_here = False

    def open(self, wait: Waiting) -> None:
        if self._target is None:
            self.mount_point = self._sysroot
        else:
            self.mount_point = self._mount(self._target, wait)
        self.make_dump_root()

    def close(self) -> None:
        if self._mounted_here and self.mount_point:
            os.sync()
            subprocess.run(["umount", self.mount_point], check=False, capture_output=True)
            self._mounted_here = False

    def _mount(self, target: FilesystemTarget, wait: Waiting) -> str:
        device = find_device(target, wait)
        mounted = mount_of(device)
        if mounted is not None:
            log.info("%s is mounted at %s", target.device, mounted)
            return mounted
        point = target.mount_point or self._mount_root
        os.makedirs(point, mode=0o700, exist_ok=True)
        command = ["mount", "-t", target.fstype, "-o", target.mount_options, device, point]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True,
                           timeout=_MOUNT_SECONDS)  # fmt: skip
        except subprocess.CalledProcessError as error:
            raise TargetError(
                f"mount {device} on {point} failed: {error.stderr.strip() or error.returncode}"
            ) from None
        except (OSError, subprocess.TimeoutExpired) as error:
            raise TargetError(f"mount {device} on {point} failed: {error}") from None
        self._mounted_here = True
        log.info("mounted %s (%s) at %s", target.device, device, point)
        return point


def find_device(target: FilesystemTarget, wait: Waiting) -> str:
    """The device node (or virtiofs tag) of ``target``, waited for.

    :raises TargetError: when it did not appear while ``wait`` allowed.
    """
    if target.device.by is DeviceBy.TAG:
        return target.device.name
    return wait_for_device(target.device, wait, partitions=False)


def mount_of(device: str) -> str | None:
    """Where ``device`` is mounted now, if it is (matched by device number)."""
    try:
        wanted = os.stat(device).st_rdev
    except OSError:
        return None
    try:
        with open("/proc/self/mountinfo") as mounts:
            for line in mounts:
                fields = line.split()
                major, minor = fields[2].split(":")
                if os.makedev(int(major), int(minor)) == wanted and fields[3] == "/":
                    return fields[4].replace("\\040", " ")
    except OSError:
        return None
    return None


def _ensure_writable(mount_point: str) -> None:
    """Remount read-write a filesystem mounted read-only (the initramfs may)."""
    try:
        read_only = os.statvfs(mount_point).f_flag & os.ST_RDONLY
    except OSError as error:
        raise TargetError(f"{mount_point}: {error.strerror}") from None
    if not read_only:
        return
    log.info("%s is read-only: remounting it read-write", mount_point)
    done = subprocess.run(["mount", "-o", "remount,rw", mount_point],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise TargetError(f"{mount_point} is read-only and remount failed: {done.stderr.strip()}")


def _looks_like_dump(path: str) -> bool:
    """A dump directory holds a vmcore or its log, whole or not."""
    try:
        names = set(os.listdir(path))
    except OSError:
        return False
    return bool(names & {"vmcore", "vmcore-incomplete", "vmcore-dmesg.txt", "vmcore.flat"})


def _sync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno != errno.EINVAL:  # a filesystem that cannot sync directories
            raise
    finally:
        os.close(fd)
