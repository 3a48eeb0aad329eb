"""Our capture image holds a driver for every disk controller of the lab's
driver matrix, and every generic disk driver build-initrd promises.

The image is built by the real build-initrd (dracut, squash, the frozen agent)
for Debian's 6.1 kernel and listed by lsinitrd, which reads into the squashfs;
a module counts as present when its .ko file is in the image or the kernel
has it built in (modules.builtin).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from capture.firstkernel.initrd import NETWORK_MODULES, _dracut_base
from capture.firstkernel.plan import GENERIC_DRIVERS
from tests.realcores import REPO

sys.path.insert(0, str(REPO / "qemu"))
from kdumplab.capture import build_image
from kdumplab.drivers import CONTROLLER_MODULES
from kdumplab.kernels import get_kernel
from kdumplab.vm import DISK_DEVICES

CONFIG = "ext4 LABEL=kdump\npath /var/crash\ncore_collector makedumpfile -l -d 31\n"


def _name(module: str) -> str:
    """Module names compare with - and _ alike, as modprobe does."""
    return module.replace("-", "_")


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory) -> str:
    """lsinitrd's listing of a real image for a local target."""
    tmp = tmp_path_factory.mktemp("drivers")
    config = tmp / "kdump.conf"
    config.write_text(CONFIG)
    kern = get_kernel("6.1")
    image = build_image(config, kern.release, kern.moddir, tmp / "capture.img")
    return subprocess.run(["lsinitrd", str(image)], capture_output=True, text=True,
                          errors="replace", check=True).stdout  # fmt: skip


@pytest.fixture(scope="module")
def image_modules(listing: str) -> tuple[set[str], set[str]]:
    """(modules in the image, modules built into the kernel)."""
    kern = get_kernel("6.1")
    found = re.findall(r"/([\w-]+)\.ko(?:\.xz|\.zst|\.gz)?$", listing, re.M)
    present = {_name(m) for m in found}
    builtin_text = (kern.moddir / "modules.builtin").read_text()
    builtin = {_name(Path(line).name.split(".ko")[0]) for line in builtin_text.splitlines()}
    return present, builtin


def test_every_lab_controller_has_a_known_driver() -> None:
    assert set(CONTROLLER_MODULES) == set(DISK_DEVICES)


@pytest.mark.parametrize("controller", sorted(DISK_DEVICES))
def test_the_image_holds_the_controllers_driver(
    image_modules: tuple[set[str], set[str]], controller: str
) -> None:
    present, builtin = image_modules
    missing = [m for m in CONTROLLER_MODULES[controller] if _name(m) not in present | builtin]
    assert not missing, f"{controller}: {missing} not in the image"


def test_the_image_holds_every_generic_disk_driver(
    image_modules: tuple[set[str], set[str]],
) -> None:
    present, builtin = image_modules
    missing = [m for m in GENERIC_DRIVERS if _name(m) not in present | builtin]
    assert not missing, f"not in the image: {missing}"


def test_a_local_targets_image_has_no_fsck_helpers(listing: str) -> None:
    """Nothing in a capture for a dump disk runs fsck (the root is not mounted)."""
    helpers = re.findall(r"/(e2fsck|xfs_repair|xfs_db|fsck(?:\.\w+)?)$", listing, re.M)
    assert not helpers, helpers
    assert re.search(r"/kdump-capture-agent$", listing, re.M)  # the listing is the image's


def test_dracut_network_modules_leave_the_nic_drivers_to_the_plan(tmp_path: Path) -> None:
    """dracut's kernel-network-modules would add every Ethernet driver (45 MB
    unpacked); in our dracut base it installs none, the plan names them."""
    base = _dracut_base(tmp_path / "dracut")
    setup = base / "modules.d" / NETWORK_MODULES / "module-setup.sh"
    result = subprocess.run(
        ["bash", "-c", f'source "{setup}"; declare -f installkernel; check && depends'],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "instmods" not in result.stdout and "dracut_instmods" not in result.stdout
