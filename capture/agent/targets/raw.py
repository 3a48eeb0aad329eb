"""``raw <device>``: the dump as a flattened stream on a bare block device,
and ``save-raw``, which takes it off again on the next boot.

A raw device holds no filesystem, so it can hold one thing only: the
flattened stream (docs/formats.md §"The flattened format") from the device's first byte on, as
Fedora's ``makedumpfile -F | dd of=<dev>`` writes it. The log and the
manifest have nowhere to go (:attr:`RawDeviceTarget.keeps_files` is False). On the
next boot :func:`save_raw` rebuilds the stream into
``<path>/<YYYY>-<MM>-<DD>-<HH>:<MM>/vmcore`` (Fedora's name,
docs/capture.md §"Raw target") and clears the device, so the same dump
is not extracted twice.

Two things tell a whole dump from one cut short, since a device has no file
names to rename: the end marker, written only by :meth:`RawDumpDir.publish`
(the step that gives a local dump its final name), and a page of zeros kept
right after the last byte written, so that a stream that stops (the
device full, the run killed) is followed by an invalid record, never by what
an older dump left there.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import errno
import logging
import os
import stat
import struct
import subprocess
import time
from typing import NamedTuple

from capture.agent.config import Device, DeviceBy, RawTarget
from capture.agent.targets import (
    LOCAL_ADDRESS,
    DumpDir,
    DumpEntry,
    DumpFile,
    TargetError,
    Waiting,
    new_directory,
)
from capture.agent.targets.devices import (
    APPEAR_TIMEOUT,
    DISK_DIR,
    resolve_device,
    wait_for_device,
)
from capture.dumpfile import flatformat
from capture.dumpfile.sink import NoSpaceError
from capture.errors import CaptureError, CorruptError

__all__ = (
    "CLEARED_BYTES",
    "RawDeviceTarget",
    "RawDumpDir",
    "RawStreamFile",
    "SaveRawOutcome",
    "SaveRawStatus",
    "filesystem_signature",
    "parse_device",
    "resolve_device",
    "save_raw",
    "save_raw_from_config",
    "tail_reserve",
)

log = logging.getLogger(__name__)

_BLOCK = 4 << 20
"""Bytes gathered before a write to the device: large writes, few system calls."""
_PAGE = 4096
_ZERO_PAGE = bytes(_PAGE)
CLEARED_BYTES = 1 << 20
"""What save-raw zeroes at the device's start: the flattened header and every
place a filesystem probe looks (btrfs at 64 KiB), so a cleared device looks
blank to blkid and to the raw target's own check."""
_PROBED_BYTES = 0x10048


# Naming and finding the device ----------------------------------------------


def parse_device(text: str) -> Device:
    """``LABEL=x``, ``UUID=x`` or a device path, as kdump.conf's ``raw`` takes it.

    :raises TargetError: for anything else.
    """
    for by in (DeviceBy.LABEL, DeviceBy.UUID):
        prefix = f"{by.value}="
        if text.startswith(prefix) and len(text) > len(prefix):
            return Device(by, text[len(prefix) :])
    if text.startswith("/"):
        return Device(DeviceBy.NODE, text)
    raise TargetError(f"'{text}' is not a device: give a /dev path, LABEL=name or UUID=uuid")


def sleeping_wait(seconds: float) -> bool:
    """The :data:`Waiting` of a command outside the capture run: just sleep."""
    time.sleep(seconds)
    return True


# What is on the device ------------------------------------------------------


def filesystem_signature(head: bytes) -> str | None:
    """The filesystem (or swap, LUKS, LVM) whose superblock is in ``head``,
    the device's first bytes; None if none of those we know.

    Magic numbers read at their fixed places, so the check needs no blkid
    (the capture initramfs may not have it).
    """
    checks: list[tuple[str, bool]] = [
        (_ext_kind(head), _is_ext(head)),
        ("xfs", head[0:4] == b"XFSB"),
        ("btrfs", head[0x10040:0x10048] == b"_BHRfS_M"),
        ("crypto_LUKS", head[0:6] == b"LUKS\xba\xbe"),
        ("LVM2_member", any(head[at : at + 8] == b"LABELONE" for at in range(0, 2048, 512))),
        ("swap", any(head[size - 10 : size] in (b"SWAPSPACE2", b"SWAP-SPACE")
                     for size in (4096, 8192, 16384, 65536))),
        ("linux_raid_member", head[4096:4100] == b"\xfc\x4e\x2b\xa9"),
    ]  # fmt: skip
    return next((name for name, found in checks if found), None)


def _is_ext(head: bytes) -> bool:
    """The two-byte magic, and a block size and revision that make sense."""
    (log_block_size,) = struct.unpack_from("<I", head, 1024 + 24)
    (revision,) = struct.unpack_from("<I", head, 1024 + 76)
    return head[1080:1082] == b"\x53\xef" and log_block_size <= 6 and revision <= 1


def _ext_kind(head: bytes) -> str:
    compat, incompat = struct.unpack_from("<II", head, 1024 + 92)
    if incompat & 0x2C0:  # extents, 64bit, flex_bg
        return "ext4"
    return "ext3" if compat & 0x4 else "ext2"  # has_journal


def _read_head(node: str, size: int) -> bytes:
    with open(node, "rb", buffering=0) as device:
        head = device.read(size)
    return head.ljust(size, b"\0")


def _holds_stream(head: bytes) -> bool:
    return head[:16] == flatformat.SIGNATURE


# Is anything using it? ------------------------------------------------------


def _device_number(node: str) -> int:
    return os.stat(node).st_rdev


def _in_use(node: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Why writing over ``node`` would destroy something in use, or None.

    A mount of the device or of one of its partitions (by major:minor, and by
    source path for btrfs, whose mounts show an anonymous number), an active
    swap area, or a holder (LVM, md, dm-crypt) on top of it.
    """
    numbers = _numbers_of(node)
    for line in _lines(mountinfo):
        fields = line.split()
        if len(fields) < 5 or " - " not in line:
            continue
        source = line.split(" - ", 1)[1].split()[1:2]
        if _number(fields[2]) in numbers or _number_of_path(source) in numbers:
            return f"it holds the filesystem mounted on {_unescape(fields[4])}"
    for line in _lines("/proc/swaps")[1:]:
        if _number_of_path(line.split()[:1]) in numbers:
            return "it is an active swap area"
    holders = _sysfs(node, "holders")
    if holders:
        return f"{', '.join(holders)} is built on it"
    return None


def _numbers_of(node: str) -> set[int]:
    """The device's number and its partitions' (a mounted partition is in use
    by the whole disk too)."""
    numbers = {_device_number(node)}
    for name in _sysfs(node, ""):
        dev = _first_line(f"{_sysfs_dir(node)}/{name}/dev")
        if dev and os.path.exists(f"{_sysfs_dir(node)}/{name}/partition"):
            numbers.add(_number(dev))
    return numbers


def _sysfs_dir(node: str) -> str:
    number = _device_number(node)
    return f"/sys/dev/block/{os.major(number)}:{os.minor(number)}"


def _sysfs(node: str, sub: str) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(_sysfs_dir(node), sub)))
    except OSError:
        return []


def _first_line(path: str) -> str:
    try:
        with open(path, encoding="ascii") as file:
            return file.readline().strip()
    except OSError:
        return ""


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            return file.read().splitlines()
    except OSError:
        return []


def _number(major_minor: str) -> int:
    major, _, minor = major_minor.partition(":")
    return os.makedev(int(major), int(minor)) if major.isdigit() and minor.isdigit() else -1


def _number_of_path(paths: list[str]) -> int:
    if not paths or not paths[0].startswith("/"):
        return -1
    try:
        info = os.stat(_unescape(paths[0]))
    except OSError:
        return -1
    return info.st_rdev if stat.S_ISBLK(info.st_mode) else -1


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def check_writable(node: str) -> None:
    """Refuse a device the dump would destroy something on.

    :raises TargetError: if it is in use or holds a filesystem.
    """
    busy = _in_use(node)
    if busy is not None:
        raise TargetError(f"{node}: {busy}; a raw dump would destroy it. Name a spare device")
    head = _read_head(node, _PROBED_BYTES)
    if _holds_stream(head):
        log.warning("%s holds a dump that save-raw has not extracted: it is overwritten", node)
        return
    found = filesystem_signature(head)
    if found is not None:
        raise TargetError(
            f"{node}: holds a signature ({found}); a raw dump would destroy it. If the device "
            f"is meant for dumps, wipe it first (wipefs -a {node})"
        )


def device_size(node: str) -> int:
    fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _open_exclusive(node: str, flags: int) -> int:
    """Open ``node`` with O_EXCL: the kernel refuses (EBUSY) while anything
    has it claimed (a mount, swap, LVM, md), and nothing can claim it while
    we write."""
    try:
        return os.open(node, flags | os.O_EXCL | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.EBUSY:
            raise TargetError(f"{node}: the device is in use (mounted, swap, LVM or md)") from None
        raise TargetError(f"{node}: cannot open it: {error.strerror}") from None


# The capture side -----------------------------------------------------------


class RawStreamFile:
    """The flattened stream written onto the device from its first byte.

    Records are gathered in memory and written in blocks of :data:`_BLOCK`
    at page-aligned places, each block followed by a page of zeros that the
    next one overwrites.

    Pages (writes that make the dump file longer) may not reach into the
    last :func:`tail_reserve` bytes: the one that would raises
    :class:`NoSpaceError`. Writes below the file's end so far (descriptors,
    bitmaps, the header: a stream gets them after the pages) may, so a dump
    cut short still gets its header marked INCOMPLETE and its bitmaps, and
    save-raw takes off a dump crash reads rather than pages without a header.
    What does not fit even there is dropped: raising again would turn the
    engine's incomplete dump into a failure.
    """

    seekable = False

    def __init__(self, node: str, size: int) -> None:
        self.node = node
        self._size = size
        self._reserve = tail_reserve(size)
        self._highest = 0
        """The end of the dump file so far: a write below it is metadata."""
        self._fd = _open_exclusive(node, os.O_WRONLY)
        self._buffer = bytearray(flatformat.HEADER)
        self._written = 0
        """Bytes of the stream on the device; the buffer follows them."""
        self.full = False
        """The stream was cut short by the device's end."""
        self.dropped = 0

    @property
    def end(self) -> int:
        """Where the stream ends (where its end marker goes)."""
        return self._written + len(self._buffer)

    def write_at(self, offset: int, data: bytes) -> None:
        if not data:
            return  # a zero-length record ends makedumpfile -R early
        limit = self._size - len(flatformat.END_MARKER)
        if offset + len(data) > self._highest:  # pages: they make the dump longer
            limit -= self._reserve
        if self.end + flatformat.RECORD.size + len(data) > limit:
            if self.full:
                self.dropped += 1
                log.debug("%s: no room left for %d bytes at %d", self.node, len(data), offset)
                return
            self.full = True
            log.error("%s is full after %d bytes of the dump stream", self.node, self.end)
            raise NoSpaceError(f"{self.node}: the raw device is full", 0)
        self._highest = max(self._highest, offset + len(data))
        self._buffer += flatformat.RECORD.pack(offset, len(data))
        self._buffer += data
        if len(self._buffer) >= _BLOCK:
            self._flush(len(self._buffer) // _PAGE * _PAGE)

    def reserve(self, offset: int, length: int) -> None:
        """Nothing to reserve on a stream."""

    def copy_from(self, fd: int, source_offset: int, length: int, offset: int) -> bool:
        """A stream's records carry the data itself: never."""
        return False

    def sync(self) -> None:
        self._flush(len(self._buffer))
        os.fsync(self._fd)

    def close(self) -> None:
        """Write what is gathered; no end marker (that is :meth:`finish`'s)."""
        if self._fd < 0:
            return
        try:
            self._flush(len(self._buffer))
        finally:
            os.close(self._fd)
            self._fd = -1

    def finish(self) -> None:
        """Write the end marker and make it durable: the stream is a whole dump."""
        if self.full:
            raise TargetError(f"{self.node}: the dump was cut short; it cannot be marked complete")
        if self._fd < 0:
            self._fd = _open_exclusive(self.node, os.O_WRONLY)
        try:
            self._buffer += flatformat.END_MARKER
            self._flush(len(self._buffer), zeros=False)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1
        log.info("%s: the dump stream is complete (%d bytes)", self.node, self._written)

    def _flush(self, length: int, zeros: bool = True) -> None:
        """Write the buffer's first ``length`` bytes, then (unless the end
        marker is among them) a page of zeros, clipped at the device's end."""
        with memoryview(self._buffer) as view:
            _write_fully(self._fd, view[:length], self._written)
        del self._buffer[:length]
        self._written += length
        if zeros:
            room = max(0, min(_PAGE, self._size - self._written))
            _write_fully(self._fd, _ZERO_PAGE[:room], self._written)


def tail_reserve(size: int) -> int:
    """Bytes kept at a device's end for what follows the pages of a dump cut
    short: its bitmaps (1/16384 of the RAM each way, 64 MiB at 1 TB) and header."""
    return min(max(size // 64, 1 << 20), 65 << 20, size // 2)


def _write_fully(fd: int, data: memoryview | bytes, offset: int) -> None:
    done = 0
    while done < len(data):
        try:
            done += os.pwrite(fd, data[done:], offset + done)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise NoSpaceError(f"raw device: {os.strerror(error.errno)}", 0) from None
            raise


class RawDumpDir:
    """The one "directory" of a raw device: the dump stream and nothing else."""

    def __init__(self, node: str, size: int, name: str) -> None:
        self.where = f"{node} (raw, {name})"
        self._node, self._size = node, size
        self._files: dict[str, RawStreamFile] = {}

    def create(self, name: str) -> DumpFile:
        """The dump stream, from the device's first byte; another create starts it over."""
        check_writable(self._node)
        for earlier in self._files.values():
            earlier.close()
        self._files = {name: RawStreamFile(self._node, self._size)}
        return self._files[name]

    def write_file(self, name: str, data: bytes, durable: bool = True) -> None:
        """A raw device keeps only the dump: ``name`` is not kept (logged)."""
        log.info("raw target %s: %s (%d bytes) is not kept", self._node, name, len(data))

    def publish(self, temporary: str, final: str) -> None:
        """The stream's "final name" is its end marker: written only now."""
        stream = self._files.get(temporary)
        if stream is None:
            log.info("raw target %s: %s is not kept, so not renamed", self._node, temporary)
            return
        stream.finish()
        self._files = {final: stream}

    def sha256(self, name: str) -> tuple[int, str] | None:
        """The device holds records, not the file: nothing to read back."""
        return None


class RawDeviceTarget:
    """``raw <device>``: one flattened dump on a bare block device."""

    kind = "raw"
    seekable = False
    keeps_files = False
    address = LOCAL_ADDRESS

    def __init__(
        self,
        target: RawTarget,
        appear_timeout: float = APPEAR_TIMEOUT,
        disk_dir: str = DISK_DIR,
    ) -> None:
        self.device = target.device
        self.where = str(target)
        self._appear_timeout, self._disk_dir = appear_timeout, disk_dir
        self._node: str | None = None
        self._size = 0

    def open(self, wait: Waiting) -> None:
        """Wait for the device, then refuse it if writing would destroy something."""
        node = wait_for_device(self.device, wait, self._appear_timeout, self._disk_dir)
        check_writable(node)
        self._node, self._size = node, device_size(node)
        log.info("raw target %s is %s, %d bytes", self.device, node, self._size)

    def make_dump_dir(self, name: str) -> DumpDir:
        if self._node is None:
            raise TargetError(f"{self.where}: the target was not opened")
        return RawDumpDir(self._node, self._size, name)

    def free_bytes(self) -> int | None:
        """The device's size less the stream's header, end marker and tail reserve."""
        if self._node is None:
            return None
        overhead = flatformat.HEADER_SIZE + len(flatformat.END_MARKER) + tail_reserve(self._size)
        return max(0, self._size - overhead)

    def dumps(self) -> list[DumpEntry]:
        """A raw device holds no dump directories."""
        return []

    def remove_dump(self, name: str) -> None:
        """Nothing to remove (there are no directories on a raw device)."""

    def close(self) -> None:
        """Nothing was mounted."""


# The next boot: save-raw ----------------------------------------------------


class SaveRawStatus(enum.Enum):
    """What save-raw found and did."""

    SAVED = "saved"
    INCOMPLETE = "incomplete"
    NO_DUMP = "no dump"
    LEFT_ALONE = "left alone"


class SaveRawOutcome(NamedTuple):
    status: SaveRawStatus
    message: str
    """One line for the user."""
    saved: str | None = None
    """The file written, if any."""


def save_raw_from_config(
    device_text: str | None,
    config_file: str,
    crash_dir: str | None = None,
    wait_seconds: float = 10.0,
) -> SaveRawOutcome:
    """``kdump-capture save-raw``: the device given, else kdump.conf's ``raw``
    line; into ``crash_dir``, else kdump.conf's ``path`` on this (the root)
    filesystem.

    :raises CaptureError: if the device does not appear or the dump cannot be written out.
    """
    from capture.agent.config import load_config  # only when a config is read

    config = load_config(config_file)
    if device_text is None:
        target = config.target.value if config.target else None
        if not isinstance(target, RawTarget):
            return SaveRawOutcome(SaveRawStatus.NO_DUMP, f"{config_file} names no raw target")
        device = target.device
    else:
        device = parse_device(device_text)
    node = wait_for_device(device, sleeping_wait, wait_seconds)
    umask = os.umask(0o077)  # private from the start, not chmod later: a vmcore holds secrets
    try:
        return save_raw(node, crash_dir or config.path.value)
    finally:
        os.umask(umask)


def save_raw(
    node: str,
    crash_dir: str,
    now: datetime.datetime | None = None,
) -> SaveRawOutcome:
    """Extract the dump on ``node`` into ``<crash_dir>/<YYYY-MM-DD-HH:MM>/vmcore``
    and clear the device, as kdumpctl does at start, but keeping a dump that
    was cut short (as ``vmcore-incomplete``) instead of deleting it.

    :raises CaptureError: if the dump cannot be written out (the device is
        then left as it was, to try again).
    """
    head = _read_head(node, _PROBED_BYTES)
    if not _holds_stream(head):
        found = filesystem_signature(head) or _blkid_type(node)
        if found is not None:
            message = f"{node} holds a signature ({found}), not a dump: left alone"
            return SaveRawOutcome(SaveRawStatus.LEFT_ALONE, message)
        return SaveRawOutcome(SaveRawStatus.NO_DUMP, f"{node} holds no dump")
    directory = _new_dump_dir(crash_dir, now or datetime.datetime.now())
    partial = os.path.join(directory, "vmcore-incomplete")
    complete, size = _extract(node, partial, directory)
    if complete:
        final = os.path.join(directory, "vmcore")
        os.rename(partial, final)
        _fsync_path(directory)
    _clear_header(node)
    if complete:
        message = f"saved the dump on {node} to {final} ({size} bytes); {node} is cleared"
        return SaveRawOutcome(SaveRawStatus.SAVED, message, final)
    message = (
        f"the dump on {node} was cut short (no end marker): what was written is in "
        f"{partial} ({size} bytes), an INCOMPLETE dump; {node} is cleared"
    )
    return SaveRawOutcome(SaveRawStatus.INCOMPLETE, message, partial)


def _blkid_type(node: str) -> str | None:
    """A second opinion for what our magic numbers do not know (vfat, ...)."""
    try:
        found = subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "TYPE", node],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    kind = found.stdout.strip()
    return kind if found.returncode == 0 and kind else None


def _new_dump_dir(crash_dir: str, now: datetime.datetime) -> str:
    """``<crash_dir>/<YYYY-MM-DD-HH:MM>`` (0700), or ``...-2``, ``-3`` if taken:
    an earlier dump is never written over."""
    os.makedirs(crash_dir, mode=0o700, exist_ok=True)
    return new_directory(os.path.join(crash_dir, now.strftime("%Y-%m-%d-%H:%M")))


def _extract(node: str, output: str, directory: str) -> tuple[bool, int]:
    """Rebuild the stream into ``output`` and make it durable: (complete, size)."""
    from capture.dumpfile.flattened import rebuild  # save-raw alone needs it

    complete = True
    try:
        with open(node, "rb", buffering=1 << 20) as stream:
            rebuild(stream, output)
    except CorruptError as error:
        log.warning("%s: %s", node, error)
        complete = False
    except OSError as error:
        if error.errno not in (errno.EFBIG, errno.EINVAL):
            _remove_quietly(output, directory)
            raise CaptureError(
                f"{output}: {error.strerror}; the dump stays on {node}: "
                "make room and run save-raw again"
            ) from None
        log.warning("%s: a record points past any file (%s): the stream ends there", node, error)
        complete = False
    _fsync_path(output)
    _fsync_path(directory)
    return complete, os.path.getsize(output)


def _remove_quietly(output: str, directory: str) -> None:
    for remove, path in ((os.unlink, output), (os.rmdir, directory)):
        with contextlib.suppress(OSError):
            remove(path)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clear_header(node: str) -> None:
    """Zero the device's first :data:`CLEARED_BYTES` (Fedora zeroes 512) and
    check that the signature is gone."""
    fd = _open_exclusive(node, os.O_RDWR)
    try:
        length = min(CLEARED_BYTES, os.lseek(fd, 0, os.SEEK_END))
        os.pwrite(fd, bytes(length), 0)
        os.fsync(fd)
        if os.pread(fd, 16, 0) == flatformat.SIGNATURE:
            raise CaptureError(f"{node}: the dump's header could not be cleared")
    finally:
        os.close(fd)
