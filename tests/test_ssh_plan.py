"""What build-initrd's plan puts in an ssh target's image (capture/firstkernel/plan.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from capture.firstkernel.plan import GENERIC_DRIVERS, NETWORK_DRIVERS, make_plan

DISK_ONLY = {"virtio_blk", "virtio_scsi", "sd_mod", "ahci", "nvme", "dm_mod"}


def _plan(tmp_path: Path, lines: str) -> list[str]:
    key = tmp_path / "id"
    key.write_text("key")
    config = tmp_path / "kdump.conf"
    config.write_text(f"ssh dumper@192.0.2.7\nsshkey {key}\n{lines}")
    drivers: list[str] = make_plan(str(config), str(tmp_path)).drivers
    return drivers


def test_an_ssh_image_has_no_disk_drivers(tmp_path: Path) -> None:
    """Nothing is written to a disk: only the NICs' drivers and the bus
    virtio-net sits on; what extra_modules asks for stays."""
    drivers = _plan(tmp_path, "final_action poweroff\nfailure_action reboot\n")
    assert set(NETWORK_DRIVERS) <= set(drivers)
    assert "virtio_pci" in drivers
    assert not DISK_ONLY & set(drivers), DISK_ONLY & set(drivers)
    asked = _plan(tmp_path, "extra_modules virtio_blk\n")
    assert "virtio_blk" in asked and "ahci" not in asked


@pytest.mark.parametrize("lines", [
    "failure_action dump_to_rootfs\n",  # the root filesystem is mounted
    "failure_action boot\n",
    "kdump_capture_fallback ext4 LABEL=spare\n",  # a disk may be written
])  # fmt: skip
def test_an_ssh_image_that_may_use_a_disk_keeps_them(tmp_path: Path, lines: str) -> None:
    drivers = _plan(tmp_path, lines)
    assert set(GENERIC_DRIVERS) <= set(drivers)
