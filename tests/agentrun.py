"""Helpers for the tests of ``kdump-capture run``: real loop filesystems, a
config and hooks written into tmp_path, the run with its actions recorded,
and the checks of a dump directory against makedumpfile and crash."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from capture.agent.actions import RecordingActions
from capture.agent.config import load_config
from capture.agent.run import RunEnvironment, RunResult, run_capture
from tests import oracles
from tests.realcores import RealCore

DIR_NAME = re.compile(r"^127\.0\.0\.1-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d$")
"""Fedora's name of a local dump directory: <ip>-<YYYY>-<MM>-<DD>-<HH>:<MM>:<SS>."""


@contextlib.contextmanager
def loop_filesystem(tmp_path: Path, fstype: str, megabytes: int) -> Iterator[tuple[str, str, str]]:
    """A new filesystem on a loop device: (device, label, uuid)."""
    image = tmp_path / f"{fstype}.img"
    with image.open("wb") as file:
        file.truncate(megabytes << 20)
    device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    label = f"kdc{uuid.uuid4().hex[:8]}"
    try:
        mkfs = ["mkfs.ext4", "-q", "-F", "-L", label] if fstype == "ext4" else \
            ["mkfs.xfs", "-q", "-f", "-L", label]  # fmt: skip
        subprocess.run([*mkfs, device], check=True, capture_output=True)
        found = subprocess.run(["blkid", "-o", "value", "-s", "UUID", device], check=True,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        yield device, label, found
    finally:
        subprocess.run(["umount", "-A", device], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def mounted(device: str, tmp_path: Path) -> contextlib.AbstractContextManager[Path]:
    @contextlib.contextmanager
    def mount() -> Iterator[Path]:
        point = tmp_path / "inspect"
        point.mkdir(exist_ok=True)
        subprocess.run(["mount", device, str(point)], check=True)
        try:
            yield point
        finally:
            subprocess.run(["umount", str(point)], check=True)

    return mount()


def write_config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "kdump.conf"
    config.write_text(text)
    return config


def hook(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def capture(tmp_path: Path, config: Path, vmcore: Path, **env: object) -> RunResult:
    """The run, with the actions recorded; the sysroot is tmp_path/sysroot."""
    (tmp_path / "sysroot").mkdir(exist_ok=True)
    actions = RecordingActions(out=None, newroot=str(tmp_path / "sysroot"))
    settings: dict[str, object] = {
        "vmcore": str(vmcore),
        "sysroot": str(tmp_path / "sysroot"),
        "mount_root": str(tmp_path / "kdumproot"),
        "kdump_dir": str(tmp_path / "kdump.d"),
        "cpus": 1,
        **env,
    }
    environment = RunEnvironment(actions=actions, **settings)  # type: ignore[arg-type]
    result = run_capture(load_config(str(config)), environment)
    assert actions.performed[-1] == result.action
    return result


def only_dump_dir(root: Path) -> Path:
    [directory] = [path for path in root.iterdir() if path.is_dir()]
    return directory


def makedumpfile(core: RealCore, output: Path, *flags: str) -> None:
    command = ["makedumpfile", *flags, str(core.vmcore), str(output)]
    subprocess.run(command, check=True, capture_output=True)


def check_files_against_references(tmp_path: Path, core: RealCore, directory: Path) -> None:
    theirs = tmp_path / "makedumpfile.out"
    makedumpfile(core, theirs, "-l", "--message-level", "7", "-d", "31")
    assert (directory / "vmcore").read_bytes() == theirs.read_bytes()
    makedumpfile(core, tmp_path / "dmesg.txt", "--dump-dmesg")
    assert (directory / "vmcore-dmesg.txt").read_bytes() == (tmp_path / "dmesg.txt").read_bytes()
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(manifest["files"]) == {"vmcore", "vmcore-dmesg.txt"}
    for name, facts in manifest["files"].items():
        data = (directory / name).read_bytes()
        assert facts == {"status": "complete", "bytes": len(data),
                         "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip
    assert manifest["kernel"] == core.release
    assert manifest["panic"].startswith("Kernel panic - not syncing")
    assert (manifest["dump_level"], manifest["format"], manifest["codec"]) == (31, "kdump", "lzo")
    output = oracles.crash_new(oracles.debug_vmlinux(core.release), directory / "vmcore", ["sys"])
    assert core.release in output and "PANIC:" in output
