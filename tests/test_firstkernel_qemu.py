"""load, status, estimate and unload in a real first kernel: one QEMU boot
(TCG) of the lab's Debian 6.1 with crashkernel=256M, the frozen agent as the
only Python (its tree and needs.libs in a busybox initramfs), the host's
kexec-tools. The guest asks status, loads, asks again and panics; the capture
kernel that boots (a busybox image that only says so and powers off) must
carry the command line load built.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capture.firstkernel.initrd import find_agent
from tests.realcores import REPO

sys.path.insert(0, str(REPO / "qemu"))
from kdumplab.cpio import Cpio
from kdumplab.kernels import get_kernel
from kdumplab.vm import VmSpec, console_tail, run_vm

AGENT = "/opt/kdump-capture-agent"
FLAGS = "--kernel /boot/vmlinuz --initrd /boot/capture.img --agent " + AGENT
FIRST_INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
A={AGENT}/kdump-capture-agent
step() {{
    name=$1; shift; echo "STEP-BEGIN $name"; "$@"; rc=$?
    echo "STEP-END $name rc=$rc"; echo "STEP-TIME $name $(cut -d' ' -f1 /proc/uptime)"
}}
step status-before $A status {FLAGS}
step load $A load {FLAGS}
step status-loaded $A status {FLAGS} --json
echo "STEP-CRASH"
echo c > /proc/sysrq-trigger
sleep 60
poweroff -f
"""


def _add_dynamic(cpio: Cpio, binary: Path) -> None:
    """A dynamic binary with the libraries ldd names, at the paths it names."""
    cpio.add_host_file(f"sbin/{binary.name}", binary, 0o755)
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    for library in re.findall(r"(/\S+)\s+\(0x", ldd):
        cpio.add_host_file(library, Path(library), 0o755)


def _busybox(cpio: Cpio) -> None:
    cpio.add_host_file("bin/busybox", Path(shutil.which("busybox") or "/bin/busybox"), 0o755)


def _capture_image(work: Path) -> Path:
    """The capture kernel's: it is up, that is all this test needs of it."""
    cpio = Cpio()
    _busybox(cpio)
    cpio.add_chardev("dev/console", 5, 1)
    cpio.add_file(
        "init", b"#!/bin/busybox sh\necho CAPTURE-KERNEL-UP\n/bin/busybox poweroff -f\n", 0o755
    )
    image = work / "capture.img"
    cpio.write(image, compress=True)
    return image


def _first_initramfs(work: Path, kern_vmlinuz: Path, capture_img: Path) -> Path:
    cpio = Cpio()
    _busybox(cpio)
    for directory in ("proc", "sys", "dev", "tmp", "run", "sbin", "etc", "boot"):
        cpio.add_dir(directory)
    cpio.add_chardev("dev/console", 5, 1)
    cpio.add_file("init", FIRST_INIT.encode(), 0o755)
    _add_dynamic(cpio, Path(shutil.which("kexec") or "/usr/sbin/kexec"))
    tree = find_agent(None)
    for path in sorted(tree.rglob("*")):
        relative = f"{AGENT[1:]}/{path.relative_to(tree).as_posix()}"
        if path.is_symlink():
            cpio.add_symlink(relative, str(path.readlink()))
        elif path.is_file():
            cpio.add_host_file(relative, path)
    for library in (tree / "needs.libs").read_text().split():
        cpio.add_host_file(library, Path(library), 0o755)
    cpio.add_host_file("boot/vmlinuz", kern_vmlinuz, 0o644)
    cpio.add_host_file("boot/capture.img", capture_img, 0o644)
    cpio.add_file("etc/kdump.conf", b"ext4 LABEL=kdump\nfinal_action poweroff\n")
    image = work / "first.img"
    cpio.write(image)  # not compressed: unpacked faster than gunzipped under TCG
    return image


def _steps(console: str) -> dict[str, tuple[str, int]]:
    """Each step's output and exit status."""
    found = re.findall(r"STEP-BEGIN (\S+)\n(.*?)STEP-END \1 rc=(\d+)\n", console, re.S)
    return {name: (output, int(rc)) for name, output, rc in found}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> str:
    kern = get_kernel("6.1")
    work = tmp_path_factory.mktemp("qemu")
    first = _first_initramfs(work, kern.vmlinuz, _capture_image(work))
    spec = VmSpec(
        kernel=kern.vmlinuz,
        initrd=first,
        cmdline="console=ttyS0 crashkernel=256M panic=-1 quiet rdinit=/init",
        memory_mb=2048,
        console=work / "console.log",
    )
    result = run_vm(spec, timeout=900)
    assert not result.timed_out, console_tail(spec.console)
    return spec.console.read_text(errors="replace").replace("\r", "")


def test_status_and_load_in_a_real_first_kernel(console: str) -> None:
    steps = _steps(console)
    output, status = steps["status-before"]
    assert status == 3, output
    assert "capture kernel: not loaded" in output and "reserved:       256 MiB at 0x" in output
    output, status = steps["load"]
    assert status == 0, output
    assert "loaded /boot/vmlinuz with /boot/capture.img (kexec_file_load); command line: " in output
    output, status = steps["status-loaded"]
    report = json.loads(output[output.index("{") :])
    assert status == 0 and report["loaded"] and report["initrd_current"], output
    assert report["reserved_bytes"] == 256 << 20
    assert report["loaded_record"]["syscall"] == "kexec_file_load"


def test_the_capture_kernel_boots_with_the_line_load_built(console: str) -> None:
    output, _status = _steps(console)["load"]
    line = output.split("; command line: ", 1)[1].strip()
    assert "crashkernel" not in line and "rdinit" not in line and "quiet" not in line.split()
    assert "irqpoll nr_cpus=1 reset_devices" in line and "disable_cpu_apicid=0" in line
    # the capture kernel's own "Command line:" is ours after what the kernel adds (elfcorehdr=)
    after_crash = console.split("STEP-CRASH", 1)[1]
    booted = re.search(r"Command line: (elfcorehdr=\S+) (.*)", after_crash)
    assert booted is not None, after_crash[-2000:]
    assert booted.group(2) == line
    assert "CAPTURE-KERNEL-UP" in after_crash
