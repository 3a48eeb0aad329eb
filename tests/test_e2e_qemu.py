"""End to end: a Debian kernel panics in QEMU and our own capture image saves it.

`kdump-capture build-initrd` builds the image (dracut, the frozen agent, the
config); the lab's first kernel loads it with ``kexec -p`` and only kdumpctl's
capture command line, and panics with sysrq. What the capture kernel left on
the dump disk is then read by independent tools: makedumpfile 1.7.8 and
crash 9.0 and drgn with the kernel's debug symbols. The few runs CI can afford (each
a minute or two of TCG): a LABEL target on 6.1 read by crash, the same
image with its target missing (the failure action, nothing complete), and a
UUID target on 6.12.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests import oracles
from tests.crashcheck import drgn_sees_the_crash, whole_dump_dir
from tests.realcores import REPO

sys.path.insert(0, str(REPO / "qemu"))
from kdumplab.capture import CaptureResult, Disk, build_image, capture
from kdumplab.kernels import get_kernel

CONFIG = """\
{target}
path /var/crash
core_collector makedumpfile -l -d 31
final_action poweroff
failure_action reboot
"""
UUID = "6b1c0c39-6f06-4d0e-9d3b-0f0c0b6d2e11"


def _image(tmp: Path, kernel: str, target: str) -> tuple[Path, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "kdump.conf"
    config.write_text(CONFIG.format(target=target))
    kern = get_kernel(kernel)
    return config, build_image(config, kern.release, kern.moddir, tmp / "capture.img")


@pytest.fixture(scope="module")
def label_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _image(tmp_path_factory.mktemp("image-6.1"), "6.1", "ext4 LABEL=kdump")


def _one_dump(result: CaptureResult) -> Path:
    assert result.ended == "power_off", f"final_action poweroff: {result.ended}"
    assert len(result.dumps) == 1, result.dumps
    dump = result.dumps[0]
    assert re.fullmatch(r"127\.0\.0\.1-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d", dump.name), dump.name
    whole_dump_dir(dump)
    return dump


def _without_caller_id(text: str) -> list[str]:
    """makedumpfile 1.7.8 prints the [T123] caller column; compare without it."""
    return [
        re.sub(r"^(\[ *[0-9.]+\]) \[ *[TC]\d+\]", r"\1", line).strip() for line in text.splitlines()
    ]


def _log_matches_makedumpfile(dump: Path) -> None:
    theirs = dump.parent / f"{dump.name}.makedumpfile-dmesg"
    run = oracles.makedumpfile_new("--dump-dmesg", dump / "vmcore", theirs)
    assert run.returncode == 0, run.stderr
    ours = (dump / "vmcore-dmesg.txt").read_text(errors="replace")
    assert "sysrq: Trigger a crash" in ours
    assert _without_caller_id(theirs.read_text(errors="replace")) == _without_caller_id(ours)


def test_label_target_on_6_1_read_by_crash(label_image: tuple[Path, Path], tmp_path: Path) -> None:
    config, image = label_image
    result = capture("6.1", 2048, "256M", config, tmp_path, Disk("ext4", "kdump"), image)
    dump = _one_dump(result)
    _log_matches_makedumpfile(dump)
    release = get_kernel("6.1").release
    out = oracles.crash_new(oracles.debug_vmlinux(release), dump / "vmcore", ["sys", "bt", "log"])
    assert "sysrq: Trigger a crash" in out
    assert re.search(r"PANIC:.*sysrq triggered crash", out), out[-3000:]
    assert "sysrq_handle_crash" in out, out[-3000:]
    assert "crashlab-panic" in out
    drgn_sees_the_crash(dump, release)


def test_missing_target_ends_in_the_failure_action(
    label_image: tuple[Path, Path], tmp_path: Path
) -> None:
    config, image = label_image
    result = capture("6.1", 2048, "256M", config, tmp_path, None, image)
    assert result.ended == "restart", f"failure_action reboot: {result.ended}"
    console = result.console.read_text(errors="replace")
    capture_part = console[console.rfind("elfcorehdr=") :]
    assert "kdump-capture: action: reboot" in capture_part
    assert "kdump-capture: action: poweroff" not in capture_part
    assert "kdump-capture: nothing could be saved" in capture_part
    assert "the dump was saved" not in capture_part
    assert "Power down" not in capture_part


def test_uuid_target_on_6_12(tmp_path: Path) -> None:
    config, image = _image(tmp_path / "image", "6.12", f"ext4 UUID={UUID}")
    result = capture(
        "6.12", 2048, "256M", config, tmp_path / "run", Disk("ext4", None, UUID), image
    )
    dump = _one_dump(result)
    _log_matches_makedumpfile(dump)
    drgn_sees_the_crash(dump, get_kernel("6.12").release)
