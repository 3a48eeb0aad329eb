"""load, unload and status against a /proc and /sys of our own (``--root``).

This machine's kernel has no kexec, so the kernel's side is a tree in
tmp_path and ``kexec`` a stand-in on PATH that records its arguments, says
what a kernel that refuses kexec_file_load says, and marks the tree loaded
as the kernel would. The capture kernel is a real one (the lab's Debian
6.1). What load does on its own is real: the reservation check, the
command line, the syscall order, the record, and status's reading of all
of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capture.firstkernel.kexecstate import iomem_ranges, kernel_span, read_crash_state
from tests.realcores import REPO

sys.path.insert(0, str(REPO / "qemu"))
from kdumplab.kernels import get_kernel

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
00100000-bffdffff : System RAM
  01000000-01e02a16 : Kernel code
  02000000-0256dfff : Kernel rodata
  02600000-0290a67f : Kernel data
  02f0e000-033fffff : Kernel bss
  a7000000-b6ffffff : Crash kernel
100000000-13fffffff : System RAM
"""

STAND_IN_KEXEC = """#!/bin/sh
# records each call; refuses kexec_file_load (-s) when told to, as a kernel without
# CONFIG_KEXEC_FILE does; marks the tree loaded or unloaded as the kernel would
echo "$*" >> "$KEXEC_CALLS"
case " $* " in
  *" -u "*) echo 0 > "$KEXEC_ROOT/sys/kernel/kexec_crash_loaded"; exit 0 ;;
  *" -s "*) if [ -n "$KEXEC_REFUSE_FILE_LOAD" ]; then
              echo "kexec_file_load failed: Function not implemented" >&2; exit 1
            fi ;;
esac
echo 1 > "$KEXEC_ROOT/sys/kernel/kexec_crash_loaded"
"""


def _tree(root: Path, reserved: int, loaded: bool = False) -> Path:
    (root / "sys" / "kernel").mkdir(parents=True)
    (root / "proc").mkdir()
    (root / "sys" / "kernel" / "kexec_crash_size").write_text(f"{reserved}\n")
    (root / "sys" / "kernel" / "kexec_crash_loaded").write_text("1\n" if loaded else "0\n")
    (root / "proc" / "iomem").write_text(IOMEM)
    (root / "proc" / "cmdline").write_text(
        "BOOT_IMAGE=/vmlinuz root=/dev/vda ro quiet crashkernel=256M console=ttyS0\n"
    )
    (root / "proc" / "cpuinfo").write_text(
        "processor\t: 0\napicid\t\t: 3\n\nprocessor\t: 1\napicid\t\t: 5\n"
    )
    return root


def test_the_reservation_and_kernel_span_from_iomem(tmp_path: Path) -> None:
    root = _tree(tmp_path, 256 << 20)
    state = read_crash_state(str(root))
    assert (state.reserved, state.loaded) == (256 << 20, False)
    assert state.regions == ((0xA7000000, 0xB7000000),)
    assert kernel_span(str(root)) == 0x03400000 - 0x01000000
    assert iomem_ranges(IOMEM, "System RAM")[0] == (0x1000, 0x9FC00)
    # what a user who is not root sees: zeros
    (root / "proc" / "iomem").write_text("00000000-00000000 : Kernel code\n")
    assert kernel_span(str(root)) is None
    assert read_crash_state(str(tmp_path / "none")).reserved is None


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A reserved 256 MiB, a real kernel, a config, an image newer than both."""
    kern = get_kernel("6.1")
    root = _tree(tmp_path / "root", 256 << 20)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kexec").write_text(STAND_IN_KEXEC)
    (bin_dir / "kexec").chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("KEXEC_CALLS", str(calls))
    monkeypatch.setenv("KEXEC_ROOT", str(root))
    config = tmp_path / "kdump.conf"
    config.write_text("ext4 LABEL=kdump\nfinal_action poweroff\n")
    image = tmp_path / "initrd.img"
    image.write_bytes(_one_file_cpio(tmp_path / "tree"))
    return {
        "root": root, "calls": calls, "config": config, "image": image,
        "kernel": kern.vmlinuz, "moddir": kern.moddir, "kdump_dir": tmp_path / "kdump",
        "agent": tmp_path / "agent",
    }  # fmt: skip


def _one_file_cpio(tree: Path) -> bytes:
    """A real (if tiny) initramfs, by GNU cpio."""
    tree.mkdir()
    (tree / "init").write_bytes(b"#!/bin/sh\n" * 100)
    return subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"], input=b"init\n", cwd=tree,
        capture_output=True, check=True,
    ).stdout  # fmt: skip


def _cli(system: dict[str, Path], command: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [command, "--root", str(system["root"])]
    if command != "unload":
        argv += [
            "--config", str(system["config"]), "--kernel", str(system["kernel"]),
            "--initrd", str(system["image"]), "--kmoddir", str(system["moddir"]),
            "--kdump-dir", str(system["kdump_dir"]), "--agent", str(system["agent"]),
        ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "capture", *argv, *extra],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip


def _make_current(system: dict[str, Path]) -> None:
    """The image newer than everything it is built from."""
    newest = max(
        p.stat().st_mtime
        for p in [
            *(REPO / "dracut-module" / "99kdump-capture").iterdir(),
            system["kernel"],
            system["moddir"] / "modules.dep",
        ]
    )
    later = max(newest, system["config"].stat().st_mtime) + 10
    os.utime(system["image"], (later, later))


def test_load_tries_kexec_file_load_then_kexec_load(
    system: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_current(system)
    monkeypatch.setenv("KEXEC_REFUSE_FILE_LOAD", "1")
    result = _cli(system, "load")
    assert result.returncode == 0, result.stderr
    first, second = system["calls"].read_text().splitlines()
    assert first.startswith(f"-s -p {system['kernel']} --initrd={system['image']} --command-line=")
    assert second.startswith(f"-c -p {system['kernel']} --initrd={system['image']} ")
    line = second.split("--command-line=", 1)[1]
    assert line.startswith("BOOT_IMAGE=/vmlinuz root=/dev/vda ro console=ttyS0 novmcoredd")
    assert line.endswith("rd.systemd.gpt_auto=no disable_cpu_apicid=3")
    assert "(kexec_load)" in result.stdout
    record = json.loads((system["root"] / "run" / "kdump-capture" / "loaded.json").read_text())
    assert record["syscall"] == "kexec_load" and record["initrd"] == str(system["image"])
    assert record["cmdline"] == line


def test_status_follows_load_a_change_and_unload(system: dict[str, Path]) -> None:
    _make_current(system)
    status = _cli(system, "status")
    assert status.returncode == 3, status.stdout + status.stderr
    assert "capture kernel: not loaded" in status.stdout
    assert "reserved:       256 MiB at 0xa7000000-0xb6ffffff" in status.stdout
    assert _cli(system, "load").returncode == 0
    assert system["calls"].read_text().startswith("-s -p ")  # kexec_file_load took it
    status = _cli(system, "status", "--json")
    assert status.returncode == 0, status.stdout
    report = json.loads(status.stdout)
    assert report["loaded"] and report["initrd_current"] and report["exit_status"] == 0
    assert report["loaded_record"]["syscall"] == "kexec_file_load"
    # the image rebuilt (or replaced) after the load: what is loaded is not what is on disk
    later = system["image"].stat().st_mtime + 5
    os.utime(system["image"], (later, later))
    status = _cli(system, "status")
    assert status.returncode == 4
    assert "the image changed after it was loaded" in status.stdout
    # kdump.conf edited after the image was built
    os.utime(system["config"], (later + 5, later + 5))
    status = _cli(system, "status", "--json")
    assert json.loads(status.stdout)["stale_because"] == [
        f"{system['config']} changed after the image was built"
    ]
    unload = _cli(system, "unload")
    assert (unload.returncode, unload.stdout) == (0, "unloaded the capture kernel\n")
    assert not (system["root"] / "run" / "kdump-capture" / "loaded.json").exists()
    assert _cli(system, "status").returncode == 3


def test_without_a_reservation_load_names_the_fix_and_runs_nothing(system: dict[str, Path]) -> None:
    (system["root"] / "sys" / "kernel" / "kexec_crash_size").write_text("0\n")
    result = _cli(system, "load")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: no memory is reserved for a capture kernel (/sys/kernel/kexec_crash_size is 0): "
        "add crashkernel=SIZE to this kernel's command line and reboot "
        "(kdump-capture estimate says what SIZE the image needs)"
    ]
    assert not system["calls"].exists()
    dry = _cli(system, "load", "--dry-run")  # says what it would run, and that it would fail
    assert dry.returncode == 0 and dry.stdout.startswith("kexec -s -p ")
    assert "warning: a load would fail: no memory is reserved" in dry.stderr
    assert not system["calls"].exists()


def test_both_syscalls_refused_is_one_line_with_both_reasons(
    system: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_current(system)
    kexec = Path(os.environ["PATH"].split(":")[0]) / "kexec"
    kexec.write_text('#!/bin/sh\necho "$*" >> "$KEXEC_CALLS"\necho "Cannot load $3" >&2\nexit 1\n')
    result = _cli(system, "load")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"error: kexec -p refused {system['kernel']}: kexec_file_load: Cannot load"
    )
    assert "; kexec_load: Cannot load" in line and "kdump-capture estimate" in line


def test_a_stale_image_given_by_name_is_loaded_with_a_warning(system: dict[str, Path]) -> None:
    _make_current(system)
    later = system["image"].stat().st_mtime + 5
    os.utime(system["config"], (later, later))
    result = _cli(system, "load")
    assert result.returncode == 0
    assert f"warning: {system['image']} is stale ({system['config']} changed" in result.stderr
    dry = _cli(system, "load", "--dry-run")
    assert f"{system['image']} is stale, loaded as given (--initrd)" in dry.stderr


def test_the_first_kernels_units_verify_and_order_save_raw_first(tmp_path: Path) -> None:
    """systemd-analyze verify reads both units as systemd would (ExecStart= pointed
    at this tree's kdump-capture, which must exist for it)."""
    executable = REPO / ".venv" / "bin" / "kdump-capture"
    for unit in ("kdump-capture.service", "kdump-capture-save-raw.service"):
        text = (REPO / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/usr/bin/kdump-capture", str(executable)))
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    load = (REPO / "systemd" / "kdump-capture.service").read_text().splitlines()
    assert "ExecStart=/usr/bin/kdump-capture load" in load
    assert "ExecStop=/usr/bin/kdump-capture unload" in load
    assert {"Wants=kdump-capture-save-raw.service", "After=kdump-capture-save-raw.service"} <= set(
        load
    )
    assert "ConditionPathExists=!/proc/vmcore" in load


def test_a_missing_image_given_by_name_is_an_error_not_a_build(system: dict[str, Path]) -> None:
    system["image"].unlink()
    result = _cli(system, "load")
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {system['image']}: no such image: build it with kdump-capture build-initrd\n"
    )
    dry = _cli(system, "load", "--dry-run")
    assert f"warning: a load would fail: {system['image']}: no such image" in dry.stderr
    assert not system["calls"].exists()


def test_load_warns_when_the_reservation_is_below_the_estimate(system: dict[str, Path]) -> None:
    _make_current(system)
    (system["root"] / "sys" / "kernel" / "kexec_crash_size").write_text(f"{64 << 20}\n")
    result = _cli(system, "load")
    assert result.returncode == 0
    # 58.0 MiB of 6.1's vmlinux + 3.5 + the tiny image + 29: 96M
    assert result.stderr == (
        f"warning: crashkernel= reserved 64M, and kdump-capture estimate says {system['image']} "
        "needs 96M: set crashkernel=96M and reboot\n"
    )
    (system["root"] / "sys" / "kernel" / "kexec_crash_size").write_text(f"{96 << 20}\n")
    assert _cli(system, "load").stderr == ""
