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
def image_modules(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], set[str]]:
    """(modules in the image, modules built into the kernel)."""
    tmp = tmp_path_factory.mktemp("drivers")
    config = tmp / "kdump.conf"
    config.write_text(CONFIG)
    kern = get_kernel("6.1")
    image = build_image(config, kern.release, kern.moddir, tmp / "capture.img")
    listing = subprocess.run(["lsinitrd", str(image)], capture_output=True, text=True,
                             errors="replace", check=True).stdout  # fmt: skip
    present = {_name(m) for m in re.findall(r"/([\w-]+)\.ko(?:\.xz|\.zst|\.gz)?$", listing, re.M)}
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
