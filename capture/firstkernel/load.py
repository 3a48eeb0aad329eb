"""``kdump-capture load`` and ``unload``: arm and disarm the capture kernel,
as ``kdumpctl start`` and ``stop`` do.

``load`` checks that memory is reserved, rebuilds the image when it is
missing or stale (:mod:`capture.firstkernel.staleness`), makes the capture
command line (:mod:`capture.firstkernel.cmdline`) and runs ``kexec -p``:
kexec_file_load (``-s``) first, which a kernel that verifies signatures
requires, then kexec_load (``-c``) when the kernel refuses the first. What
was loaded is recorded in /run/kdump-capture/loaded.json for ``status``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from capture.agent.config import KDUMP_DIR
from capture.errors import CaptureError
from capture.firstkernel.bootfiles import BootFiles, boot_files
from capture.firstkernel.cmdline import Settings, capture_cmdline, read_settings
from capture.firstkernel.kexecstate import (
    CrashState,
    boot_cpu_apicid,
    proc_cmdline,
    read_crash_state,
)
from capture.firstkernel.staleness import Freshness, default_agent_tree, freshness, image_inputs

__all__ = (
    "LOADED_RECORD",
    "Prepared",
    "add_common_arguments",
    "add_load_arguments",
    "add_unload_arguments",
    "agent_tree",
    "kexec_argv",
    "prepare",
    "reservation_problem",
)

LOADED_RECORD = "run/kdump-capture/loaded.json"
"""Under the root: what ``load`` loaded, for ``status``."""
COMMAND_LINE_SIZE = 2048
"""x86's limit, the terminating NUL included."""
FILE_SYSCALL, LOAD_SYSCALL = "kexec_file_load", "kexec_load"
_SYSCALL_FLAGS = {FILE_SYSCALL: "-s", LOAD_SYSCALL: "-c"}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options load, status and estimate share: which kernel, image and config."""
    parser.add_argument(
        "--config", metavar="FILE", default="/etc/kdump.conf",
        help="kdump.conf (default: /etc/kdump.conf)",
    )  # fmt: skip
    parser.add_argument(
        "--kernel", metavar="FILE",
        help="the capture kernel (default: /boot/vmlinuz-$(uname -r))",
    )  # fmt: skip
    parser.add_argument(
        "--initrd", metavar="FILE",
        help="the capture image, used as it is (default: build-initrd's, "
        "/boot/initrd-RELEASE-kdump-capture.img, rebuilt when stale)",
    )  # fmt: skip
    parser.add_argument(
        "--kmoddir", metavar="DIR", help="the kernel's modules (default: /lib/modules/RELEASE)"
    )
    parser.add_argument(
        "--agent", metavar="DIR", help="the frozen agent's tree (default: scripts/build-agent's)"
    )
    parser.add_argument(
        "--kdump-dir", metavar="DIR", default=KDUMP_DIR,
        help="where pre.d, post.d and emergency.d are (default: /etc/kdump)",
    )  # fmt: skip
    parser.add_argument(
        "--root", metavar="DIR", default="/",
        help="read /proc, /sys and /run under DIR (default: /)",
    )  # fmt: skip


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Load the capture kernel with kexec -p, as kdumpctl start: the image is rebuilt "
        "first when it is missing or older than kdump.conf, the kernel, the hooks, "
        "extra_bins or the agent; the command line is this kernel's, edited as kdumpctl "
        "edits it (irqpoll nr_cpus=1 reset_devices ...)."
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--sysconfig", metavar="FILE",
        help="KDUMP_COMMANDLINE, _REMOVE, _APPEND and KEXEC_ARGS (default: "
        "/etc/sysconfig/kdump, else /etc/default/kdump-capture, if there is one)",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print the kexec command, change nothing (not even a stale image)",
    )  # fmt: skip
    parser.set_defaults(command=load)


def add_unload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Unload the capture kernel (kexec -p -u), as kdumpctl stop."
    parser.add_argument(
        "--root", metavar="DIR", default="/",
        help="read /sys and /run under DIR (default: /)",
    )  # fmt: skip
    parser.set_defaults(command=unload)


@dataclass(frozen=True)
class Prepared:
    """What a load would do."""

    files: BootFiles
    freshness: Freshness
    cmdline: str
    settings: Settings
    agent: Path | None
    """The frozen agent the image is (to be) built with, when known."""


def prepare(args: argparse.Namespace, agent_tree: Path | None) -> Prepared:
    """The kernel, the image and whether it is current, the command line."""
    files = boot_files(args.kernel, args.initrd)
    moddir = Path(args.kmoddir) if args.kmoddir else Path("/lib/modules") / files.release
    inputs = image_inputs(args.config, files.kernel, moddir, agent_tree, args.kdump_dir)
    settings = read_settings(getattr(args, "sysconfig", None), args.root)
    cmdline = capture_cmdline(
        proc_cmdline(args.root), settings, boot_apicid=boot_cpu_apicid(args.root)
    )
    fresh = freshness(files.image, inputs, args.config)
    return Prepared(files, fresh, cmdline, settings, agent_tree)


def reservation_problem(state: CrashState) -> str | None:
    """Why nothing can be loaded, with the fix; None when memory is reserved."""
    if state.reserved is None:
        return (
            "this kernel has no kexec crash support (no /sys/kernel/kexec_crash_size): "
            "boot a kernel built with CONFIG_KEXEC and CONFIG_CRASH_DUMP"
        )
    if state.reserved == 0:
        return (
            "no memory is reserved for a capture kernel (/sys/kernel/kexec_crash_size is 0): "
            "add crashkernel=SIZE to this kernel's command line and reboot "
            "(kdump-capture estimate says what SIZE the image needs)"
        )
    return None


def kexec_argv(prepared: Prepared, syscall: str) -> list[str]:
    """``kexec -p`` with the syscall's flag (unless KEXEC_ARGS names one)."""
    extra = prepared.settings.kexec_args
    chosen = [] if _named_syscall(extra) else [_SYSCALL_FLAGS[syscall]]
    return [
        "kexec",
        *chosen,
        *extra,
        "-p",
        str(prepared.files.kernel),
        f"--initrd={prepared.files.image}",
        f"--command-line={prepared.cmdline}",
    ]


def _named_syscall(kexec_args: list[str]) -> str | None:
    """The syscall KEXEC_ARGS insists on, if it does."""
    for word in kexec_args:
        if word in ("-s", "--kexec-file-syscall"):
            return FILE_SYSCALL
        if word in ("-c", "--kexec-syscall"):
            return LOAD_SYSCALL
    return None


def load(args: argparse.Namespace) -> int:
    problem = reservation_problem(read_crash_state(args.root))
    if problem is not None and not args.dry_run:
        raise CaptureError(problem)
    prepared = prepare(args, agent_tree(args.agent, build=not args.dry_run))
    if len(prepared.cmdline) >= COMMAND_LINE_SIZE:
        where = prepared.settings.source or "/etc/sysconfig/kdump"
        raise CaptureError(
            f"the capture command line is {len(prepared.cmdline)} bytes, over the kernel's "
            f"{COMMAND_LINE_SIZE - 1}: drop words with KDUMP_COMMANDLINE_REMOVE in {where}"
        )
    if args.dry_run:
        return _dry_run(prepared, problem)
    prepared = _rebuild_if_stale(prepared, args)
    _warn_if_too_small(prepared, args.root)
    syscall = _kexec(prepared)
    _record(args.root, prepared, syscall)
    print(
        f"loaded {prepared.files.kernel} with {prepared.files.image} ({syscall}); "
        f"command line: {prepared.cmdline}"
    )
    return 0


def agent_tree(agent: str | None, build: bool) -> Path | None:
    """The agent the image is (to be) built with: --agent, else build-agent's
    (built now when ``build`` and this is a source tree), else none known."""
    if agent is not None:
        return Path(agent)
    from capture.firstkernel.initrd import REPO, find_agent

    if build and (REPO / "scripts" / "build-agent").exists():
        return find_agent(None)
    tree = default_agent_tree()
    return tree if tree.is_dir() else None


def _dry_run(prepared: Prepared, problem: str | None) -> int:
    if problem is not None:
        print(f"warning: a load would fail: {problem}", file=sys.stderr)
    files, fresh = prepared.files, prepared.freshness
    if files.image_given and not files.image.exists():
        print(f"warning: a load would fail: {files.image}: no such image", file=sys.stderr)
    elif not fresh.current:
        verb = "is stale, loaded as given (--initrd)" if files.image_given else "would be rebuilt"
        print(f"{files.image} {verb}: {'; '.join(fresh.reasons)}", file=sys.stderr)
    print(shlex.join(kexec_argv(prepared, FILE_SYSCALL)))
    return 0


def _rebuild_if_stale(prepared: Prepared, args: argparse.Namespace) -> Prepared:
    files, fresh = prepared.files, prepared.freshness
    if fresh.current:
        return prepared
    if files.image_given:
        if not files.image.exists():
            raise CaptureError(
                f"{files.image}: no such image: build it with kdump-capture build-initrd"
            )
        print(f"warning: {files.image} is stale ({'; '.join(fresh.reasons)}); loading it as given",
              file=sys.stderr)  # fmt: skip
        return prepared
    from capture.firstkernel.initrd import build_initrd

    print(f"rebuilding {files.image}: {'; '.join(fresh.reasons)}", file=sys.stderr)
    files.image.parent.mkdir(parents=True, exist_ok=True)
    agent = str(prepared.agent) if prepared.agent else None
    build_initrd(args.config, files.release, args.kmoddir, str(files.image), agent=agent,
                 kdump_dir=args.kdump_dir)  # fmt: skip
    return prepared


def _warn_if_too_small(prepared: Prepared, root: str) -> None:
    """Say so when estimate finds the reservation too small for this image: the
    capture kernel would run out of memory unpacking it, long after this load."""
    from capture.firstkernel.estimate import estimate

    files = prepared.files
    try:
        result = estimate(str(files.kernel), str(files.image), root)
    except (CaptureError, OSError) as error:
        print(
            f"warning: {files.image}: no estimate of the memory it needs: {error}", file=sys.stderr
        )
        return
    if result.enough is False:
        have, need = (result.reserved or 0) >> 20, result.crashkernel >> 20
        print(
            f"warning: crashkernel= reserved {have}M, and kdump-capture estimate says "
            f"{files.image} needs {need}M: set crashkernel={need}M and reboot",
            file=sys.stderr,
        )


def _kexec(prepared: Prepared) -> str:
    """Load with kexec_file_load, else kexec_load; the syscall that worked.

    :raises CaptureError: both refused (each one's message in the line).
    """
    named = _named_syscall(prepared.settings.kexec_args)
    failures = []
    for syscall in [named] if named else [FILE_SYSCALL, LOAD_SYSCALL]:
        argv = kexec_argv(prepared, syscall)
        try:
            result = subprocess.run(argv, capture_output=True, text=True, errors="replace")
        except FileNotFoundError:
            raise CaptureError("kexec is not installed: apt-get install kexec-tools") from None
        if result.returncode == 0:
            return syscall
        said = " ".join((result.stderr or result.stdout).split()) or f"exit {result.returncode}"
        failures.append(f"{syscall}: {said}")
    raise CaptureError(
        f"kexec -p refused {prepared.files.kernel}: {'; '.join(failures)}; "
        "check that the kernel and the image match and fit the reservation (kdump-capture estimate)"
    )


def _record(root: str, prepared: Prepared, syscall: str) -> None:
    """What was loaded, for status (/run: forgotten at reboot, as the load is)."""
    path = Path(root) / LOADED_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    image = prepared.files.image
    record = {
        "kernel": str(prepared.files.kernel),
        "initrd": str(image),
        "initrd_mtime_ns": image.stat().st_mtime_ns,
        "cmdline": prepared.cmdline,
        "syscall": syscall,
        "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(temporary, path)


def unload(args: argparse.Namespace) -> int:
    """kexec -p -u (with -s too, when the kernel only takes kexec_file_load)."""
    was_loaded = read_crash_state(args.root).loaded
    failures = []
    for argv in (["kexec", "-p", "-u"], ["kexec", "-s", "-p", "-u"]):
        try:
            result = subprocess.run(argv, capture_output=True, text=True, errors="replace")
        except FileNotFoundError:
            raise CaptureError("kexec is not installed: apt-get install kexec-tools") from None
        if result.returncode == 0:
            (Path(args.root) / LOADED_RECORD).unlink(missing_ok=True)
            print("unloaded the capture kernel" if was_loaded else "no capture kernel was loaded")
            return 0
        failures.append(
            " ".join((result.stderr or result.stdout).split()) or f"exit {result.returncode}"
        )
    raise CaptureError(f"kexec -p -u failed: {'; '.join(failures)}")
