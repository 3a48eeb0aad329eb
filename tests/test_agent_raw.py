"""The raw target and save-raw, on real loop devices with the real 6.1 vmcore:
our engine writes the flattened stream onto the device through the target,
save-raw takes it off on the "next boot"; makedumpfile and crash are the judges."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from capture.agent.config import Device, DeviceBy, RawTarget
from capture.agent.targets import TargetError
from capture.agent.targets.raw import (
    CLEARED_BYTES,
    RawDeviceTarget,
    parse_device,
    resolve_device,
    wait_for_device,
)
from capture.cli import main
from capture.dumpfile.codecs import codec_by_name
from capture.dumpfile.kdump import write_kdump
from capture.dumpfile.outcome import DumpOutcome
from capture.filter import DumpLevel, FilteredPages, default_bitmap_budget
from capture.vmcore import Vmcore
from tests import oracles
from tests.crashcheck import crash_sees_incomplete, cut_between
from tests.realcores import core_61

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("losetup") is None, reason="needs root and losetup"
)

LoopFactory = Callable[[int], str]
DATED = re.compile(r"\d{4}-\d\d-\d\d-\d\d:\d\d(-\d+)?")


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[LoopFactory]:
    """Make loop devices of N MiB on files in tmp_path; all detached afterwards."""
    attached: list[str] = []

    def attach(megabytes: int) -> str:
        image = tmp_path / f"disk{len(attached)}.img"
        with image.open("wb") as file:
            file.truncate(megabytes << 20)
        node = subprocess.run(
            ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
        ).stdout.strip()
        attached.append(node)
        return node

    yield attach
    for node in attached:
        subprocess.run(["partx", "-d", node], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", node], check=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """What ``makedumpfile -l -d 31`` writes for the 6.1 vmcore."""
    output = tmp_path_factory.mktemp("reference") / "vmcore"
    subprocess.run(
        ["makedumpfile", "-l", "-d", "31", str(core_61().vmcore), str(output)],
        check=True, capture_output=True,
    )  # fmt: skip
    return output.read_bytes()


def no_wait(seconds: float) -> bool:
    return False


def raw_target(node: str) -> RawDeviceTarget:
    return RawDeviceTarget(RawTarget(Device(DeviceBy.NODE, node)))


def dump_through(target: RawDeviceTarget) -> tuple[DumpOutcome, Callable[[], None]]:
    """The engine writes the 6.1 vmcore (lzo, level 31) through the target, as
    the capture run does; returns the outcome and the run's publish step."""
    target.open(no_wait)
    directory = target.make_dump_dir("127.0.0.1-2026-12-01-20:10:00")
    file = directory.create("vmcore-incomplete")
    codec = codec_by_name("lzo")
    with Vmcore(str(core_61().vmcore)) as vmcore:
        filtered = FilteredPages(vmcore, DumpLevel(31), default_bitmap_budget())
        outcome = write_kdump(vmcore, filtered, codec, codec.make(vmcore.page_size), file)
    if not outcome.incomplete:
        file.sync()
    file.close()
    return outcome, lambda: directory.publish("vmcore-incomplete", "vmcore.flat")


def save_raw(node: str, crash: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["save-raw", node, "--path", str(crash), "--config", str(crash / "none")])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def dump_dirs(crash: Path) -> list[Path]:
    return sorted(path for path in crash.iterdir() if path.is_dir()) if crash.exists() else []


def device_head(node: str, size: int = CLEARED_BYTES) -> bytes:
    with open(node, "rb") as device:
        return device.read(size)


def test_raw_dump_then_save_raw(
    tmp_path: Path,
    loop_device: LoopFactory,
    reference: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = loop_device(64)
    outcome, publish = dump_through(raw_target(node))
    assert not outcome.incomplete
    assert device_head(node, 16) == b"makedumpfile\0\0\0\0"
    publish()

    rebuilt = tmp_path / "rebuilt"
    with open(node, "rb") as stream:
        subprocess.run(["makedumpfile", "-R", str(rebuilt)], stdin=stream, check=True,
                       capture_output=True)  # fmt: skip
    assert rebuilt.read_bytes() == reference

    crash = tmp_path / "crash"
    status, said = save_raw(node, crash, capsys)
    assert status == 0, said
    [directory] = dump_dirs(crash)
    assert DATED.fullmatch(directory.name)
    assert sorted(os.listdir(directory)) == ["vmcore"]
    saved = directory / "vmcore"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert saved.read_bytes() == reference
    assert f"saved the dump on {node}" in said
    assert device_head(node) == bytes(CLEARED_BYTES)
    _crash_opens(saved)

    status, said = save_raw(node, crash, capsys)
    assert status == 0 and "holds no dump" in said, said
    assert dump_dirs(crash) == [directory]


def _crash_opens(dump: Path) -> None:
    vmlinux = oracles.debug_vmlinux(core_61().release)
    run = oracles.run_in_chroot(
        ["crash", "-s", oracles.inside(vmlinux), oracles.inside(dump)],
        files=[vmlinux, dump],
        stdin="sys\nlog\nexit\n",
    )
    output = run.stdout + run.stderr
    assert f"RELEASE: {core_61().release}" in output, output
    assert "sysrq: Trigger a crash" in output, output
    assert "incomplete" not in output, output


def test_device_too_small(
    tmp_path: Path,
    loop_device: LoopFactory,
    capsys: pytest.CaptureFixture[str],
    reference: bytes,
) -> None:
    """A device that holds the pages crash needs to start and half of the rest
    (24 MiB for 25 where no such cut exists, as in the shared fixture's dump,
    which that size cuts in its last data): the engine's outcome is
    incomplete, no end marker; save-raw keeps vmcore-incomplete (marked
    INCOMPLETE, its bitmaps and header written in the tail reserve), exit 3,
    device cleared.

    The device starts as erased flash reads, all 0xff: sixteen of them are the
    end marker, so only the zeros kept after the stream tell that it stopped."""
    whole = tmp_path / "whole.kdump"
    whole.write_bytes(reference)
    cut = cut_between(whole, core_61().vmcore)
    megabytes = 24 if cut is None else -(-cut // (1 << 20)) + 1  # + the tail reserve
    node = loop_device(megabytes)
    with open(node, "r+b") as device:
        device.write(b"\xff" * (megabytes << 20))
    outcome, publish = dump_through(raw_target(node))
    assert outcome.incomplete
    with pytest.raises(TargetError, match="cut short"):
        publish()
    crash = tmp_path / "crash"
    status, said = save_raw(node, crash, capsys)
    assert status == 3, said
    assert "cut short" in said and "INCOMPLETE" in said
    [directory] = dump_dirs(crash)
    assert os.listdir(directory) == ["vmcore-incomplete"]
    kept = directory / "vmcore-incomplete"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    header = kept.read_bytes()[:512]
    assert header[:8] == b"KDUMP   "
    assert struct.unpack_from("<I", header, 424)[0] & 0x8  # status: INCOMPLETE
    assert device_head(node) == bytes(CLEARED_BYTES)
    crash_sees_incomplete(kept, core_61().release)
    status, said = save_raw(node, crash, capsys)
    assert status == 0 and "holds no dump" in said


def test_filesystem_left_alone_and_refused(
    tmp_path: Path, loop_device: LoopFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    node = loop_device(16)
    subprocess.run(["mkfs.ext4", "-q", "-F", node], check=True)
    before = hashlib.sha256(device_head(node, 4 << 20)).digest()
    crash = tmp_path / "crash"
    status, said = save_raw(node, crash, capsys)
    assert status == 0 and "ext4" in said and "left alone" in said, said
    assert dump_dirs(crash) == []
    with pytest.raises(TargetError, match=r"ext4.*wipefs"):
        raw_target(node).open(no_wait)
    assert hashlib.sha256(device_head(node, 4 << 20)).digest() == before
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    subprocess.run(["mount", node, str(mountpoint)], check=True)
    try:
        with pytest.raises(TargetError, match=f"mounted on {mountpoint}"):
            raw_target(node).open(no_wait)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_whole_disk_with_a_mounted_partition_is_refused(
    tmp_path: Path, loop_device: LoopFactory
) -> None:
    """Writing the disk would destroy the partition: refused, by the kernel
    (O_EXCL) if not by our look at the mounts."""
    node = loop_device(16)
    partition = _mbr_partition(node, 0x1234ABCD)
    subprocess.run(["mkfs.ext4", "-q", "-F", partition], check=True)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    subprocess.run(["mount", partition, str(mountpoint)], check=True)
    try:
        with pytest.raises(TargetError, match="mounted on"):
            raw_target(node).open(no_wait)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def _mbr_partition(node: str, disk_id: int) -> str:
    """One MBR partition from sector 2048 to the end; its node, made by partx."""
    sectors = int(Path(f"/sys/class/block/{os.path.basename(node)}/size").read_text())
    table = bytearray(512)
    struct.pack_into("<I", table, 440, disk_id)
    table[446:462] = struct.pack("<B3sB3sII", 0, bytes(3), 0x83, bytes(3), 2048, sectors - 2048)
    table[510:512] = b"\x55\xaa"
    with open(node, "r+b") as device:
        device.write(table)
    subprocess.run(["partx", "-a", node], check=True, capture_output=True)
    partition = f"{node}p1"
    assert stat.S_ISBLK(os.stat(partition).st_mode)
    return partition


def test_uuid_resolved_by_blkid(loop_device: LoopFactory) -> None:
    """No udev here: UUID= finds a partition by its PARTUUID through blkid's probe."""
    if shutil.which("partx") is None or shutil.which("blkid") is None:
        pytest.skip("needs partx and blkid")
    node = loop_device(16)
    partition = _mbr_partition(node, 0x5EED0042)
    assert resolve_device(parse_device("UUID=5eed0042-01")) == partition
    assert resolve_device(parse_device("UUID=5eed0043-01")) is None
    target = RawDeviceTarget(RawTarget(parse_device("UUID=5eed0042-01")))
    target.open(no_wait)
    assert target.free_bytes() == (15 << 20) - 4096 - 16 - (1 << 20)


def test_label_resolved_through_disk_links(tmp_path: Path, loop_device: LoopFactory) -> None:
    """udev's /dev/disk links: by-label, then by-partlabel (what a raw device keeps)."""
    node = loop_device(8)
    disk = tmp_path / "disk"
    (disk / "by-partlabel").mkdir(parents=True)
    (disk / "by-partlabel" / "kdump-raw").symlink_to(node)
    assert resolve_device(parse_device("LABEL=kdump-raw"), str(disk)) == node
    (disk / "by-label").mkdir()
    (disk / "by-label" / "kdump-raw").symlink_to(tmp_path / "gone")
    assert resolve_device(parse_device("LABEL=kdump-raw"), str(disk)) == node
    assert resolve_device(parse_device("LABEL=other"), str(disk)) is None


def test_device_that_never_appears(tmp_path: Path) -> None:
    """Tried again each second while the run allows, then a TargetError that names it."""
    asked: list[float] = []

    def run_allows_three(seconds: float) -> bool:
        asked.append(seconds)
        return len(asked) < 4

    target = RawDeviceTarget(RawTarget(Device(DeviceBy.NODE, str(tmp_path / "vdz"))))
    with pytest.raises(TargetError, match=r"vdz: no such block device \(waited 3 s\)"):
        target.open(run_allows_three)
    assert asked == [1.0, 1.0, 1.0, 1.0]
    with pytest.raises(TargetError, match=r"LABEL=nowhere.*waited 2 s"):
        wait_for_device(parse_device("LABEL=nowhere"), lambda seconds: True, 2.0, str(tmp_path))


def test_the_device_wait_counts_the_clock_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a loaded machine each look takes seconds (blkid): the wait ends on
    the clock, not only after its count of one-second pauses."""
    from capture.agent.targets import devices

    clock, looks = [0.0], []

    def slow_look(*args: object, **kwargs: object) -> None:
        looks.append(clock[0])
        clock[0] += 10.0
        return None

    monkeypatch.setattr(devices, "resolve_device", slow_look)
    monkeypatch.setattr(devices, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    with pytest.raises(TargetError, match=r"waited 20 s"):
        wait_for_device(parse_device("LABEL=late"), lambda seconds: True, 15.0, str(tmp_path))
    assert looks == [0.0, 10.0]  # counting pauses alone looked 16 times, for 160 s


def test_save_raw_without_a_raw_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "kdump.conf"
    config.write_text("path /var/crash\n")
    assert main(["save-raw", "--config", str(config), "--path", str(tmp_path / "c")]) == 0
    assert "names no raw target" in capsys.readouterr().out
    assert not (tmp_path / "c").exists()
