"""make_vmcore(): boot a Debian kernel, build memory contents, panic, and
return the captured /proc/vmcore plus a description of what is in it.

Results are cached under <cache>/vmcores/<key>/ where the key covers every
parameter and input file, so tests can call make_vmcore() freely.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .initramfs import LAB_VERSION, capture_initramfs, first_initramfs
from .kernels import KERNELS, Kernel, get_kernel
from .util import LabError, atomic_write, cache_dir, digest, file_digest, log, run
from .vm import GUESTFWD_IP, GUESTFWD_PORT, VmResult, VmSpec, console_tail, run_vm
from .vmcore import extract_vmcore, init_dump_disk, phdrs_of

# The reference fixtures' workload; sizes in MiB unless the key says PAGES/FILES.
DEFAULT_WORKLOAD: dict[str, str] = {
    "CACHE_MB": "64",
    "SHM_MB": "16",
    "ANON_MB": "102",
    "ZERO_MB": "16",
    "SLAB_FILES": "10000",
    "HUGETLB_PAGES": "0",
    "HWPOISON_PAGES": "0",
}
WORKLOAD_KEYS = {*DEFAULT_WORKLOAD, "THP", "PANIC_COMM"}
PAGE = 4096
PAGES_PER_MB = 256
PAGES_PER_HUGE = 512


@dataclass(frozen=True)
class VmcoreResult:
    """Where the outputs are and what the guest reported."""

    out_dir: Path
    vmcore: Path
    console: Path
    workload_json: Path
    kernel_release: str
    info: dict[str, Any]
    cached: bool
    seconds: float
    cache_entry: Path  # the cache directory the outputs are linked from


def default_crashkernel(memory_mb: int) -> str:
    """160M below 1 GiB of guest memory, 256M from 1 GiB."""
    return "160M" if memory_mb < 1024 else "256M"


def normalise_workload(workload: dict[str, Any] | None) -> dict[str, str]:
    """Merge user keys (any case) over the defaults and validate them."""
    wl = dict(DEFAULT_WORKLOAD)
    for key, val in (workload or {}).items():
        k = key.upper()
        if k not in WORKLOAD_KEYS:
            known = ", ".join(sorted(WORKLOAD_KEYS))
            raise LabError(f"unknown workload key {key!r}; known: {known}")
        wl[k] = str(val)
    for k in DEFAULT_WORKLOAD:
        if not wl[k].isdigit():
            raise LabError(f"workload {k} must be a non-negative integer, got {wl[k]!r}")
    if wl.get("THP", "always") not in {"always", "madvise", "never"}:
        raise LabError("THP must be always, madvise or never")
    comm = wl.get("PANIC_COMM", "crashlab-panic")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", comm):
        raise LabError("PANIC_COMM must be 1-15 characters of [A-Za-z0-9_.-]")
    return wl


def _size_mb(size: str) -> int:
    """'160M' / '1G' -> MiB."""
    m = re.fullmatch(r"(\d+)([MG])", size)
    if not m:
        raise LabError(f"crashkernel size must look like 160M or 1G, got {size!r}")
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


def _check_fits(wl: dict[str, str], memory_mb: int, crash_mb: int) -> None:
    """Refuse workloads that would OOM the first kernel before it panics."""
    need = (
        int(wl["CACHE_MB"])
        + int(wl["SHM_MB"])
        + int(wl["ANON_MB"])
        + int(wl["ZERO_MB"])
        + 2 * int(wl["HUGETLB_PAGES"])
        + int(wl["SLAB_FILES"]) // 1000
    )
    room = memory_mb - crash_mb - 100
    if need > room:
        raise LabError(
            f"workload needs ~{need} MiB but only ~{room} MiB are free in a "
            f"{memory_mb} MiB guest with crashkernel={crash_mb}M"
        )


def capture_cmdline(extra: str = "", net_port: int | None = None) -> str:
    """Capture kernel command line; one CPU avoids a QEMU/TCG kexec assertion."""
    parts = [
        "console=ttyS0",
        "nr_cpus=1",
        "irqpoll",
        "reset_devices",
        "panic=-1",
        "CRASHLAB_ROLE=capture",
    ]
    if net_port:
        parts += [f"CRASHLAB_NET_HOST={GUESTFWD_IP}", f"CRASHLAB_NET_PORT={GUESTFWD_PORT}"]
    if extra:
        parts.append(extra)
    return " ".join(parts)


def first_cmdline(crashkernel: str, wl: dict[str, str], extra: str = "") -> str:
    """First kernel command line: crashkernel, reboot on failure, workload env."""
    parts = ["console=ttyS0", f"crashkernel={crashkernel}", "panic=-1"]
    parts += [f"{k}={v}" for k, v in sorted(wl.items())]
    if extra:
        parts.append(extra)
    return " ".join(parts)


@dataclass(frozen=True)
class _RunSpec:
    """What one lab run boots and captures: every parameter of its cache key."""

    kern: Kernel
    memory_mb: int
    crashkernel: str
    wl: dict[str, str]
    capture_img: Path | None
    dump_device: str
    nic: str | None
    extra_first: str
    extra_capture: str


def _run_key(params: _RunSpec) -> str:
    """Cache key: every parameter plus the content of every lab input."""
    here = Path(__file__).resolve().parent
    # files that shape what ends up in the guest; LAB_VERSION covers the rest
    sources = [
        here / "helper.c",
        here / "cpio.py",
        here / "initramfs.py",
        here / "kernels.py",
        *sorted((here / "scripts").glob("*.sh")),
    ]
    inputs = [p.name + file_digest(p) for p in sources]
    return digest(
        [
            LAB_VERSION,
            params.kern.package,
            params.kern.version,
            params.memory_mb,
            params.crashkernel,
            params.wl,
            file_digest(params.capture_img) if params.capture_img else None,
            params.dump_device,
            params.nic,
            params.extra_first,
            params.extra_capture,
            inputs,
        ]
    )


def _parse_console(console: Path) -> tuple[dict[str, str], dict[str, int]]:
    """CRASHLAB-RESULT key=value pairs and CRASHLAB-MEMINFO lines."""
    results: dict[str, str] = {}
    meminfo: dict[str, int] = {}
    text = console.read_text(errors="replace") if console.exists() else ""
    for line in text.replace("\r", "").splitlines():
        if line.startswith("CRASHLAB-RESULT "):
            for pair in line.split()[1:]:
                if "=" in pair:
                    k, v = pair.split("=", 1)
                    results[k] = v
        elif line.startswith("CRASHLAB-MEMINFO "):
            m = re.match(r"CRASHLAB-MEMINFO (\S+):\s+(\d+)", line)
            if m:
                meminfo[m.group(1)] = int(m.group(2))
    return results, meminfo


def _contents(wl: dict[str, str], res: dict[str, str]) -> dict[str, Any]:
    """Per kind of memory content: size in pages and, if patterned, the pattern."""

    def pages(mb: str) -> int:
        return int(wl[mb]) * PAGES_PER_MB

    huge = int(res.get("hugetlb_pages", "0"))
    return {
        "anon": {
            "pages": int(res.get("anon_pages", pages("ANON_MB"))),
            "pattern": "CRASHLAB-ANON",
            "held_by": "crashlab-helper (alive at panic)",
        },
        "page_cache": {
            "pages": int(res.get("cache_pages", pages("CACHE_MB"))),
            "pattern": "CRASHLAB-CACHE",
            "fs": "ext4",
            "file": "/mnt/data/cache.bin",
        },
        "shmem": {
            "pages": int(res.get("shm_pages", pages("SHM_MB"))),
            "pattern": "CRASHLAB-SHM",
            "fs": "tmpfs",
            "file": "/mnt/shm/shm.bin",
        },
        "zero": {"pages": int(res.get("zero_pages", pages("ZERO_MB"))), "pattern": None},
        "hugetlb": {"hugepages": huge, "pages": huge * PAGES_PER_HUGE, "pattern": "CRASHLAB-HUGE"},
        "hwpoison": {
            "pages": int(res.get("hwpoison_pages", "0")),
            "requested": int(wl["HWPOISON_PAGES"]),
            "pattern": "CRASHLAB-HWPOISON",
        },
        "slab": {"files": int(res.get("slab_files", "0")), "fs": "tmpfs", "dir": "/mnt/shm/slab"},
    }


def _make_work_disk(path: Path, cache_mb: int) -> None:
    """Sparse ext4 image for the page-cache workload (LABEL=crashlab-work)."""
    # ext4's own metadata (journal, inode tables) grows with the disk: about
    # 1/16 of it, plus the slab workload's empty files.
    with path.open("wb") as fh:
        fh.truncate((cache_mb + cache_mb // 8 + 64) << 20)
    run(["mkfs.ext4", "-q", "-F", "-L", "crashlab-work", str(path)])


def _publish(src_dir: Path, out_dir: Path) -> None:
    """Hard-link (or copy) the cached outputs into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("vmcore", "console.log", "kernel-version", "workload.json"):
        dst = out_dir / name
        if dst.resolve() == (src_dir / name).resolve():
            continue
        dst.unlink(missing_ok=True)
        try:
            os.link(src_dir / name, dst)
        except OSError:
            shutil.copy2(src_dir / name, dst)


def make_vmcore(
    kernel: str = "6.1",
    memory_mb: int = 512,
    workload: dict[str, Any] | None = None,
    out_dir: Path | str | None = None,
    crashkernel: str | None = None,
    capture_initrd: Path | str | None = None,
    dump_device: str = "virtio-blk",
    nic: str | None = None,
    timeout: float = 600,
    use_cache: bool = True,
    extra_cmdline: str = "",
    extra_capture_cmdline: str = "",
    net_port: int | None = None,
) -> VmcoreResult:
    """Produce a vmcore of `kernel` (alias 5.10/6.1/6.12/7) with the given workload.

    capture_initrd replaces the reference capture initramfs (it must write the
    dump disk protocol, see README); the result is cached by all parameters.
    net_port: a host TCP port on 127.0.0.1 that the capture kernel sends
    "CRASHLAB-NET-OK <ifc>" + the first 64 KiB of the vmcore to (needs nic;
    such runs are never cached).
    Raises LabError with the console tail when anything fails.
    """
    kern = get_kernel(kernel)
    crashkernel = crashkernel or default_crashkernel(memory_mb)
    wl = normalise_workload(workload)
    _check_fits(wl, memory_mb, _size_mb(crashkernel))
    cap = Path(capture_initrd).resolve() if capture_initrd else None
    params = _RunSpec(
        kern=kern,
        memory_mb=memory_mb,
        crashkernel=crashkernel,
        wl=wl,
        capture_img=cap,
        dump_device=dump_device,
        nic=nic,
        extra_first=extra_cmdline,
        extra_capture=extra_capture_cmdline,
    )
    key = _run_key(params)
    rdir = cache_dir() / "vmcores" / f"{kernel}-{memory_mb}M-{key}"
    out = Path(out_dir).resolve() if out_dir else rdir
    if net_port:
        use_cache = False
    rdir.mkdir(parents=True, exist_ok=True)
    # one run per cache entry at a time (parallel tests asking for the same dump)
    with (rdir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if use_cache and (rdir / "workload.json").exists() and (rdir / "vmcore").exists():
            log(f"cached vmcore {rdir}")
            _publish(rdir, out)
            return _result(out, rdir, kern, True, 0.0)
        (rdir / "workload.json").unlink(missing_ok=True)
        start = time.monotonic()
        info = _boot_and_capture(params, rdir, timeout, net_port)
        info["seconds"] = round(time.monotonic() - start, 1)
        atomic_write(rdir / "workload.json", json.dumps(info, indent=2).encode())
        _publish(rdir, out)
    return _result(out, rdir, kern, False, info["seconds"])


def _result(out: Path, rdir: Path, kern: Kernel, cached: bool, seconds: float) -> VmcoreResult:
    """Build the result object from the published workload.json."""
    info = json.loads((out / "workload.json").read_text())
    return VmcoreResult(
        out,
        out / "vmcore",
        out / "console.log",
        out / "workload.json",
        kern.release,
        info,
        cached,
        seconds,
        rdir,
    )


def drop_vmcore(res: VmcoreResult) -> None:
    """Delete a result's vmcore (out dir and cache) but keep logs and metadata.

    The matrix only needs to know that a dump was written; keeping a few
    hundred MiB per row would fill the disk.
    """
    res.vmcore.unlink(missing_ok=True)
    (res.cache_entry / "vmcore").unlink(missing_ok=True)


def _boot_and_capture(
    params: _RunSpec, rdir: Path, timeout: float, net_port: int | None
) -> dict[str, Any]:
    """One QEMU run: first kernel panics, capture kernel writes the dump disk."""
    kern, memory_mb, crashkernel, wl = params.kern, params.memory_mb, params.crashkernel, params.wl
    cap, dump_device, nic = params.capture_img, params.dump_device, params.nic
    extra_first, extra_capture = params.extra_first, params.extra_capture
    cap_img = cap or capture_initramfs(kern)
    cap_cmd = capture_cmdline(extra_capture, net_port)
    first_img = first_initramfs(kern, cap_img, cap_cmd)
    cmdline = first_cmdline(crashkernel, wl, extra_first)
    work = rdir / "work.img"
    dump = rdir / "dump.img"
    console = rdir / "console.log"
    (rdir / "vmcore").unlink(missing_ok=True)
    _make_work_disk(work, int(wl["CACHE_MB"]))
    init_dump_disk(dump, memory_mb + 64)
    spec = VmSpec(
        kern.vmlinuz, first_img, cmdline, memory_mb, console, work, dump, dump_device, nic, net_port
    )
    log(
        f"booting {kern.release} ({memory_mb} MiB, crashkernel={crashkernel}, "
        f"dump on {dump_device}{', nic ' + nic if nic else ''}), timeout {timeout:.0f}s"
    )
    try:
        vm, attempts = _boot(spec, timeout, dump, memory_mb)
        try:
            size = extract_vmcore(dump, rdir / "vmcore")
        except LabError as exc:
            text = console.read_text(errors="replace") if console.exists() else ""
            raise LabError(f"{exc}; QEMU exited in the {_stage(text)}") from None
    except LabError as exc:
        raise LabError(
            f"{exc}\n--- last console lines ({console}) ---\n{console_tail(console)}"
        ) from None
    finally:
        work.unlink(missing_ok=True)
        dump.unlink(missing_ok=True)
    (rdir / "kernel-version").write_text(kern.release + "\n")
    res, meminfo = _parse_console(console)
    log(f"vmcore {size >> 20} MiB in {vm.seconds:.0f}s")
    return {
        "lab_version": LAB_VERSION,
        "kernel": {
            "alias": kern.alias,
            "release": kern.release,
            "package": kern.package,
            "version": kern.version,
            "suite": KERNELS[kern.alias][0],
        },
        "kernel_release": kern.release,
        "memory_mb": memory_mb,
        "crashkernel": crashkernel,
        "dump_device": dump_device,
        "nic": nic,
        "capture_initrd": str(cap) if cap else "reference",
        "cmdline": cmdline,
        "capture_cmdline": cap_cmd,
        "workload": wl,
        "page_size": PAGE,
        "pattern_format": "each 4096-byte page: '<pattern>-<pageno %08d>|' repeated, "
        "rest of the page '.'",
        "panic_comm": wl.get("PANIC_COMM", "crashlab-panic"),
        "panic_trigger": "echo c > /proc/sysrq-trigger",
        "contents": _contents(wl, res),
        "guest_results": res,
        "meminfo_kb": meminfo,
        "vmcore_size": size,
        "vmcore_load_segments": sum(1 for p in phdrs_of(rdir / "vmcore") if p.type == 1),
        "qemu_seconds": round(vm.seconds, 1),
        "boot_attempts": attempts,
    }


CRASHKERNEL_FAILED = re.compile(
    r"cannot allocate crashkernel|crashkernel reservation failed|no crashkernel reservation"
)
MAX_BOOTS = 5


def _boot(spec: VmSpec, timeout: float, dump: Path, memory_mb: int) -> tuple[VmResult, int]:
    """Run the guest; boot again (up to MAX_BOOTS) when KASLR left no room for crashkernel.

    With KASLR the kernel image can land so that no contiguous, aligned
    crashkernel block is left in a small guest (6.12/7: "cannot allocate
    crashkernel", 6.1: "crashkernel reservation failed"; ~1 boot in 4 at
    384 MiB).  The guest then fails within seconds and a new boot gets a new
    random layout.
    """
    for attempt in range(1, MAX_BOOTS + 1):
        vm = run_vm(spec, timeout)
        text = spec.console.read_text(errors="replace") if spec.console.exists() else ""
        if not CRASHKERNEL_FAILED.search(text) or attempt == MAX_BOOTS:
            _check_vm(vm.timed_out, vm.returncode, vm.stderr, spec.console, timeout)
            return vm, attempt
        log(f"crashkernel reservation failed (KASLR layout), boot {attempt + 1}/{MAX_BOOTS}")
        init_dump_disk(dump, memory_mb + 64)
    raise AssertionError("unreachable")


def _stage(text: str) -> str:
    """Which kernel the guest was in, from kernel messages any initramfs prints."""
    if "elfcorehdr=" in text:
        return "capture kernel"
    if "sysrq: Trigger a crash" in text or "Kernel panic" in text:
        return "first kernel after the panic (capture kernel never started)"
    return "first kernel (before the panic)"


def _check_vm(timed_out: bool, rc: int | None, stderr: str, console: Path, timeout: float) -> None:
    """Turn the way QEMU ended into a precise error, or return if it may have worked.

    Success itself is decided by the dump disk's CRASHLAB-DONE record, so a
    foreign capture initramfs needs no console markers.
    """
    text = console.read_text(errors="replace") if console.exists() else ""
    err = re.search(r"CRASHLAB-ERROR: (.*)", text)
    if err:
        raise LabError(f"guest reported: {err.group(1).strip()}")
    if timed_out:
        raise LabError(f"QEMU timed out after {timeout:.0f}s in the {_stage(text)}")
    if rc != 0:
        raise LabError(f"QEMU exited with {rc}: {stderr.strip()[-1000:]}")
