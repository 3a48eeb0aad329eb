"""build-initrd's decisions and a real dracut build of the capture image.

The plan (what kdump.conf makes the image hold) is checked directly; the
image itself is built by the real dracut with the real frozen agent and
listed with lsinitrd, so what the module installs is what is checked.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from capture.agent.config import parse_config
from capture.errors import CaptureError
from capture.firstkernel.initrd import agent_files, build_initrd, find_agent, squash_compressor
from capture.firstkernel.plan import make_plan, persistent_config
from tests.realcores import REPO

sys.path.insert(0, str(REPO / "qemu"))
from kdumplab.kernels import get_kernel


def _executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_agent_files_split_elf_from_data_and_leave_out_ssh(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "_internal" / "paramiko").mkdir(parents=True)
    shutil.copy("/bin/true", tree / "kdump-capture-agent")
    (tree / "_internal" / "base_library.zip").write_bytes(b"PK")
    (tree / "_internal" / "paramiko" / "client.pyc").write_bytes(b"x")
    (tree / "ssh.files").write_text("_internal/paramiko\n")
    (tree / "needs.libs").write_text("/lib/x86_64-linux-gnu/libc.so.6\n")
    elf, data = agent_files(tree, include_ssh=False)
    assert elf == ["kdump-capture-agent"]
    assert data == ["_internal/base_library.zip"]
    _elf, data = agent_files(tree, include_ssh=True)
    assert data == ["_internal/base_library.zip", "_internal/paramiko/client.pyc"]


def test_agent_files_leave_out_network_files_without_a_network_target(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    dynload = tree / "_internal" / "python3.11" / "lib-dynload"
    dynload.mkdir(parents=True)
    shutil.copy("/bin/true", tree / "kdump-capture-agent")
    (dynload / "math.so").write_bytes(b"x")
    (dynload / "unicodedata.so").write_bytes(b"x")
    (tree / "network.files").write_text("_internal/python3.11/lib-dynload/unicodedata.so\n")
    _elf, local = agent_files(tree, include_ssh=False, include_network=False)
    assert local == ["_internal/python3.11/lib-dynload/math.so"]
    for ssh, network in ((False, True), (True, False)):  # nfs; ssh (always a network)
        _elf, data = agent_files(tree, include_ssh=ssh, include_network=network)
        assert "_internal/python3.11/lib-dynload/unicodedata.so" in data


def test_squash_compressor_follows_the_kernels_config(tmp_path: Path) -> None:
    moddir = tmp_path / "lib" / "modules" / "6.1.0-test"
    moddir.mkdir(parents=True)
    config = tmp_path / "boot" / "config-6.1.0-test"
    config.parent.mkdir()
    assert squash_compressor("6.1.0-test", moddir) == "zstd"  # no config found: as before
    config.write_text("CONFIG_X86_64=y\nCONFIG_SQUASHFS_XZ=y\nCONFIG_XZ_DEC_X86=y\n")
    assert squash_compressor("6.1.0-test", moddir) == "xz -Xbcj x86"
    config.write_text("CONFIG_ARM64=y\nCONFIG_SQUASHFS_XZ=y\n")
    assert squash_compressor("6.1.0-test", moddir) == "xz"
    config.write_text("CONFIG_X86_64=y\n# CONFIG_SQUASHFS_XZ is not set\nCONFIG_SQUASHFS_ZSTD=y\n")
    assert squash_compressor("6.1.0-test", moddir) == "zstd"
    lab = get_kernel("6.1")  # Debian's: xz and the x86 filter
    assert squash_compressor(lab.release, lab.moddir) == "xz -Xbcj x86"


def test_plan_for_an_ssh_target_with_hooks(tmp_path: Path) -> None:
    kdump_dir = tmp_path / "kdump"
    pre = _executable(kdump_dir / "pre.d" / "10-note")
    post = _executable(tmp_path / "post.sh")
    key = tmp_path / "id"
    key.write_text("key")
    config = tmp_path / "kdump.conf"
    config.write_text(
        f"ssh dumper@192.0.2.7\nsshkey {key}\nkdump_post {post}\n"
        "extra_bins /bin/true\nextra_modules dummy\nfailure_action boot\n"
    )
    assert make_plan(str(config), str(kdump_dir)).known_hosts is None  # propagate not run
    (kdump_dir / "known_hosts").write_text("192.0.2.7 ssh-ed25519 AAAA\n")
    plan = make_plan(str(config), str(kdump_dir))
    assert plan.known_hosts == str(kdump_dir / "known_hosts")
    assert {str(pre), str(post), str(key), "/bin/true", plan.known_hosts} <= set(plan.files)
    assert "network" in plan.depends and plan.network and plan.ssh
    assert {"virtio_net", "e1000", "dummy"} <= set(plan.drivers)
    assert "rd.neednet=1" in plan.cmdline
    assert plan.switch_root  # failure_action boot
    assert str(kdump_dir / "emergency.d") in plan.dirs


def test_plan_for_nfs_and_local(tmp_path: Path) -> None:
    config = tmp_path / "kdump.conf"
    config.write_text("nfs 192.0.2.7:/dumps\n")
    nfs = make_plan(str(config), str(tmp_path))
    assert "mount.nfs" in nfs.tools and "nfs" in nfs.drivers and nfs.network
    config.write_text("xfs LABEL=dumps\nfinal_action poweroff\n")
    local = make_plan(str(config), str(tmp_path))
    assert not local.network and "xfs" in local.drivers and not local.switch_root
    config.write_text("ext4 LABEL=dumps\n")
    assert "xfs" not in make_plan(str(config), str(tmp_path)).drivers  # no root mounted
    config.write_text("ext4 LABEL=dumps\nfailure_action dump_to_rootfs\n")
    assert "xfs" in make_plan(str(config), str(tmp_path)).drivers


def test_a_line_the_capture_kernel_would_skip_stops_the_build(tmp_path: Path) -> None:
    config = tmp_path / "kdump.conf"
    config.write_text("ext4 LABEL=kdump\nfinal_action explode\n")
    with pytest.raises(CaptureError, match="final_action"):
        make_plan(str(config))


@pytest.fixture
def loop_ext4(tmp_path: Path) -> Iterator[str]:
    """A real block device (a loop device over an ext4 image)."""
    image = tmp_path / "fs.img"
    with image.open("wb") as file:
        file.truncate(32 << 20)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-U", "0f1e2d3c-4b5a-4968-8776-655443322110", str(image)],
        check=True,
    )
    node = subprocess.run(
        ["losetup", "--find", "--show", str(image)],
        check=True,
        capture_output=True,
        text=True,
        errors="replace",
    ).stdout.strip()
    try:
        yield node
    finally:
        subprocess.run(["losetup", "-d", node], check=False)


def test_a_device_node_becomes_its_uuid(loop_ext4: str) -> None:
    text = f"# dumps\next4 {loop_ext4}\npath /var/crash\n"
    config = parse_config(text, "kdump.conf").config
    rewritten = persistent_config(config, text)
    assert rewritten == "# dumps\next4 UUID=0f1e2d3c-4b5a-4968-8776-655443322110\npath /var/crash\n"
    text = "ext4 LABEL=kdump\n"
    assert persistent_config(parse_config(text, "k").config, text) == text


def _lsinitrd(image: Path, *names: str) -> str:
    return subprocess.run(
        ["lsinitrd", str(image), *names],
        check=True,
        capture_output=True,
        text=True,
        errors="replace",
    ).stdout


def test_a_real_image_holds_the_agent_config_hooks_and_ssh_files(tmp_path: Path) -> None:
    """dracut 059 with our module, a lab kernel's modules, no squash so lsinitrd lists it.

    Built under umask 077 (a hardened root's): the image must still open its
    directories and configuration to the services' own users, or networkd
    reads no configuration and the NIC never comes up."""
    os.umask(0o077)  # conftest restores it
    kern = get_kernel("6.1")
    kdump_dir = tmp_path / "kdump"
    hook = _executable(kdump_dir / "post.d" / "50-note")
    key = tmp_path / "kdump_id"
    key.write_text("not a key\n")
    key.chmod(stat.S_IRUSR)
    known = "192.0.2.7 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKnownHostsRecordedByPropagate\n"
    (kdump_dir / "known_hosts").write_text(known)  # what propagate records
    config = tmp_path / "kdump.conf"
    config.write_text(
        f"ssh dumper@192.0.2.7\nsshkey {key}\nextra_bins /usr/bin/env\nfinal_action poweroff\n"
    )
    image = build_initrd(
        str(config),
        kern.release,
        str(kern.moddir),
        str(tmp_path / "img"),
        agent=str(find_agent(None)),
        kdump_dir=str(kdump_dir),
        squash=False,
    )
    listing = _lsinitrd(image.path)
    for path in (
        "usr/lib/kdump-capture/kdump-capture-agent",
        "usr/bin/env",
        str(hook)[1:],
        str(key)[1:],
        "kdump-capture.service",
        "kdump-capture-failure.service",
        "initrd.target.wants/kdump-capture.service",
        "/paramiko/",
        "lib-dynload/unicodedata.",  # the idna codec, for the server's name
        "virtio_net.ko",
        "etc/cmdline.d/90kdump-capture.conf",
    ):
        assert path in listing, path
    assert "virtio_blk.ko" not in listing  # nothing goes to a disk (tests/test_ssh_plan.py)
    assert _lsinitrd(image.path, "-f", "etc/kdump.conf") == config.read_text()
    assert _lsinitrd(image.path, "-f", "etc/kdump/known_hosts") == known  # where the agent reads
    assert "rd.neednet=1" in _lsinitrd(image.path, "-f", "etc/cmdline.d/90kdump-capture.conf")
    modes = {line.split()[-1]: line.split()[0] for line in listing.splitlines() if line.strip()}
    assert modes["etc/cmdline.d"] == "drwxr-xr-x", modes["etc/cmdline.d"]
    assert modes["etc/cmdline.d/90kdump-capture.conf"] == "-rw-r--r--"
    assert modes["usr/lib/dracut/modules.txt"] == "-rw-r--r--"


def test_a_real_ssh_image_without_systemd_has_none(tmp_path: Path) -> None:
    """--no-systemd: dracut's shell init runs our hooks and network-legacy
    (dhclient) brings the NIC up; no systemd module may come back through
    a dependency (the network's did, and the image booted systemd)."""
    kern = get_kernel("6.1")
    key = tmp_path / "kdump_id"
    key.write_text("not a key\n")
    config = tmp_path / "kdump.conf"
    config.write_text(f"ssh dumper@192.0.2.7\nsshkey {key}\n")
    agent = str(find_agent(None))
    image = build_initrd(str(config), kern.release, str(kern.moddir), str(tmp_path / "img"),
                         agent=agent, kdump_dir=str(tmp_path), systemd=False)  # fmt: skip
    modules = _lsinitrd(image.path, "-f", "usr/lib/dracut/modules.txt").split()
    assert "network-legacy" in modules and "kdump-capture" in modules, modules
    assert not [module for module in modules if "systemd" in module], modules
    listing = _lsinitrd(image.path)
    assert "usr/sbin/dhclient" in listing
    assert "init -> usr/lib/systemd/systemd" not in listing
    for hook in ("pre-mount/99-kdump-capture-hook.sh", "pre-pivot/90-kdump-capture-hook.sh"):
        assert f"usr/lib/dracut/hooks/{hook}" in listing, hook


def test_a_real_local_image_leaves_out_what_only_other_targets_need(tmp_path: Path) -> None:
    """A local target's image: no ssh part, no snappy, no unicodedata (only
    the idna codec of a network target's host name loads it)."""
    kern = get_kernel("6.1")
    config = tmp_path / "kdump.conf"
    config.write_text("ext4 LABEL=kdump\ncore_collector makedumpfile -l -d 31\n")
    agent = str(find_agent(None))
    image = build_initrd(str(config), kern.release, str(kern.moddir), str(tmp_path / "img"),
                         agent=agent, kdump_dir=str(tmp_path), squash=False)  # fmt: skip
    listing = _lsinitrd(image.path)
    assert "usr/lib/kdump-capture/kdump-capture-agent" in listing
    assert "lib-dynload/math." in listing  # the standard library's extensions are there
    # THP off and no watermark boost before the agent starts (min_free_kbytes
    # 3815 -> 1109 at crashkernel=128M)
    modes = {line.split()[-1]: line.split()[0] for line in listing.splitlines() if line.strip()}
    assert modes["usr/lib/kdump-capture/memory.sh"] == "-rwxr-xr-x"
    unit = _lsinitrd(image.path, "-f", "usr/lib/systemd/system/kdump-capture.service")
    assert "ExecStartPre=-/usr/lib/kdump-capture/memory.sh" in unit.splitlines()
    script = _lsinitrd(image.path, "-f", "usr/lib/kdump-capture/memory.sh")
    assert "transparent_hugepage/enabled" in script and "watermark_boost_factor" in script
    for left_out in ("unicodedata", "/paramiko/", "/cryptography/", "/cramjam/"):
        assert left_out not in listing, left_out
