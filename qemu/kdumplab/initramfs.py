"""Build the busybox initramfs images for the first and the capture kernel.

Both are cached under the cache dir keyed by everything that goes in them,
so a second run with the same kernel costs nothing.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from .cpio import Cpio
from .kernels import WANTED_MODULES, Kernel, module_bytes, resolve_modules
from .util import LabError, cache_dir, digest, file_digest, log, run

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
LAB_VERSION = "1"


def _busybox() -> Path:
    """The static busybox from Debian's busybox-static package."""
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.exists():
            out = run(["file", "-L", str(p)]) if shutil.which("file") else "static"
            if "dynamically" in out:
                raise LabError(f"{p} is dynamically linked: apt-get install busybox-static")
            return p
    raise LabError("busybox not found: apt-get install busybox-static")


def helper_binary() -> Path:
    """Build the static C workload helper once into the cache."""
    src = HERE / "helper.c"
    out = cache_dir() / "bin" / f"crashlab-helper-{file_digest(src)}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log("building crashlab-helper (gcc -static)")
    tmp = out.with_name(out.name + ".tmp")
    run(["gcc", "-static", "-O2", "-Wall", "-o", str(tmp), str(src)])
    tmp.replace(out)
    return out


def _add_base(cpio: Cpio, kern: Kernel, init_script: str) -> None:
    """Busybox, console node, shared functions, init, and the modules."""
    cpio.add_host_file("bin/busybox", _busybox(), 0o755)
    cpio.add_symlink("bin/sh", "busybox")
    for d in ("proc", "sys", "dev", "tmp", "mnt", "run", "sbin", "etc", "root", "boot"):
        cpio.add_dir(d)
    cpio.add_chardev("dev/console", 5, 1)
    cpio.add_chardev("dev/null", 1, 3, 0o666)
    cpio.add_file("etc/crashlab/common.sh", (SCRIPTS / "common.sh").read_bytes())
    cpio.add_file("init", (SCRIPTS / init_script).read_bytes(), 0o755)
    order, _builtin, missing = resolve_modules(kern, WANTED_MODULES)
    if missing:
        why = (
            "built in or renamed; this kernel ships no plain modules.builtin"
            if not (kern.moddir / "modules.builtin").exists()
            else "not in this kernel"
        )
        log(f"{kern.release}: no .ko for {', '.join(missing)} ({why})")
    names: list[str] = []
    for rel in order:
        name = re.sub(r"\.(xz|zst|gz)$", "", rel.rsplit("/", 1)[-1])
        cpio.add_file(f"lib/modules/crashlab/{name}", module_bytes(kern, rel))
        names.append(name)
    cpio.add_file("etc/crashlab/modules", ("\n".join(names) + "\n").encode())


def capture_initramfs(kern: Kernel) -> Path:
    """The reference capture initramfs: copy /proc/vmcore to the dump disk."""
    key = digest(
        [
            LAB_VERSION,
            kern.package,
            kern.version,
            file_digest(SCRIPTS / "capture-init.sh"),
            file_digest(SCRIPTS / "common.sh"),
            WANTED_MODULES,
        ]
    )
    return _cached_image("capture", kern, key, "capture-init.sh", lambda cpio: None)


def _ldd_libs(binary: Path) -> list[Path]:
    """Shared libraries (and the loader) a dynamic binary needs, per ldd."""
    libs: list[Path] = []
    for line in run(["ldd", str(binary)]).splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def _add_kexec(cpio: Cpio) -> None:
    """kexec-tools is dynamic: bring the binary, its libraries and ld-linux."""
    kexec = shutil.which("kexec") or "/usr/sbin/kexec"
    if not Path(kexec).exists():
        raise LabError("kexec not found: apt-get install kexec-tools")
    cpio.add_host_file("sbin/kexec", Path(kexec), 0o755)
    for lib in _ldd_libs(Path(kexec)):
        # stored under the exact path ldd printed, which the loader looks up
        cpio.add_host_file(str(lib), lib, 0o755)


def first_initramfs(kern: Kernel, capture_img: Path, capture_cmdline: str) -> Path:
    """The first kernel's initramfs: kexec, the helper, kernel + capture image."""
    helper = helper_binary()
    key = digest(
        [
            LAB_VERSION,
            kern.package,
            kern.version,
            file_digest(capture_img),
            capture_cmdline,
            file_digest(SCRIPTS / "first-init.sh"),
            file_digest(SCRIPTS / "common.sh"),
            helper.name,
            WANTED_MODULES,
        ]
    )

    def add_first_kernel_parts(cpio: Cpio) -> None:
        _add_kexec(cpio)
        cpio.add_host_file("bin/crashlab-helper", helper, 0o755)
        cpio.add_host_file("boot/vmlinuz", kern.vmlinuz, 0o644)
        cpio.add_host_file("boot/capture.img", capture_img, 0o644)
        cpio.add_file("etc/crashlab/capture-cmdline", capture_cmdline.encode())

    return _cached_image("first", kern, key, "first-init.sh", add_first_kernel_parts)


def _cached_image(
    kind: str, kern: Kernel, key: str, init_script: str, add_parts: Callable[[Cpio], None]
) -> Path:
    """The initramfs ``kind`` for this key: the cached one, or built now from
    the base (busybox, modules, ``init_script``) and ``add_parts``."""
    out = cache_dir() / "initramfs" / f"{kind}-{kern.release}-{key}.img"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cpio = Cpio()
    _add_base(cpio, kern, init_script)
    add_parts(cpio)
    cpio.write(out, compress=True)
    log(f"built {kind} initramfs {out.name} ({out.stat().st_size >> 10} KiB)")
    return out
