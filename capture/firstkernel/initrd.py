"""``kdump-capture build-initrd``: the capture initramfs, built by dracut with
our module (dracut-module/99kdump-capture) and the frozen agent.

Nothing is installed into /usr/lib/dracut: dracut runs from a private base
directory (``dracutbasedir``) made of links to the system's dracut plus our
module, so the build needs no root-owned change and the module used is the
one of this tree. That directory also fixes dracut 059's kernel-module check,
which looks in the build host's /lib/modules whatever --kmoddir says (and so
refuses squash for another kernel).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from capture.agent.config import KDUMP_DIR
from capture.errors import CaptureError
from capture.firstkernel.plan import Plan, make_plan

SYSTEM_DRACUT = Path("/usr/lib/dracut")
MODULE_NAME = "99kdump-capture"
REPO = Path(__file__).resolve().parents[2]
AGENT_EXECUTABLE = "kdump-capture-agent"
DRACUT_MODULES = (
    "bash",
    "systemd",
    "systemd-initrd",
    "dracut-systemd",
    "rootfs-block",
    "udev-rules",
    "shutdown",
    "kdump-capture",
)
"""A small systemd initrd, as mkdumprd's: its kdumpbase depends on base and shutdown."""

_NETWORK_MODULES_STUB = """#!/bin/bash
# kdump-capture: the NIC drivers are the plan's (NETWORK_DRIVERS, extra_modules);
# dracut's own list, every Ethernet driver, was 45 MB of a 110 MB ssh image
check() { return 0; }
depends() { return 0; }
installkernel() { :; }
"""
NETWORK_MODULES = "90kernel-network-modules"

_CHECK_KERNEL_MODULE = """
# kdump-capture: look for kernel modules where --kmoddir says ($srcmods)
check_kernel_module() {
    modprobe -d "$KDUMP_CAPTURE_KMODROOT" -S "$kernel" --dry-run "$1" &> /dev/null || return 1
}
"""


@dataclass(frozen=True)
class Image:
    """What was built."""

    path: Path
    size: int
    squash: bool
    agent: Path


def module_source() -> Path:
    """Our dracut module: $KDUMP_CAPTURE_DRACUT_MODULE, this tree's, or an installed one."""
    candidates = [
        os.environ.get("KDUMP_CAPTURE_DRACUT_MODULE", ""),
        str(REPO / "dracut-module" / MODULE_NAME),
        f"/usr/share/kdump-capture/dracut/{MODULE_NAME}",
        str(SYSTEM_DRACUT / "modules.d" / MODULE_NAME),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "module-setup.sh").is_file():
            return Path(candidate)
    raise CaptureError(f"the dracut module {MODULE_NAME} is not found (looked in the source tree)")


def find_agent(agent: str | None) -> Path:
    """The frozen agent's tree: the one given, else scripts/build-agent's (built now if need be)."""
    if agent is not None:
        tree = Path(agent)
    else:
        script = REPO / "scripts" / "build-agent"
        if not script.exists():
            raise CaptureError(
                "give --agent DIR (the frozen agent): scripts/build-agent is not here"
            )
        result = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True, check=False)
        if result.returncode != 0:
            raise CaptureError(f"scripts/build-agent failed (exit {result.returncode})")
        tree = Path(result.stdout.strip().splitlines()[-1])
    if not (tree / AGENT_EXECUTABLE).is_file():
        raise CaptureError(f"{tree}: no {AGENT_EXECUTABLE} in it (not a frozen agent tree)")
    return tree


def build_initrd(
    config: str,
    kver: str,
    kmoddir: str | None,
    output: str,
    agent: str | None = None,
    kdump_dir: str = KDUMP_DIR,
    squash: bool | None = None,
    systemd: bool = True,
) -> Image:
    """Build the capture initramfs for kernel ``kver`` into ``output``
    (``systemd`` False: dracut's own shell init, the agent run from a hook)."""
    if shutil.which("dracut") is None:
        raise CaptureError("dracut is not installed: apt-get install dracut-core")
    plan = make_plan(config, kdump_dir)
    if not systemd:
        # Our module's depends() reads the plan's list: a systemd module left
        # there would bring systemd back as the image's init.
        plan.depends = [_without_systemd(module) for module in plan.depends]
    tree = find_agent(agent)
    _self_test(tree, plan)
    moddir = Path(kmoddir) if kmoddir else Path("/lib/modules") / kver
    if not (moddir / "modules.dep").exists():
        raise CaptureError(f"{moddir}: no modules.dep (run depmod -b ROOT {kver})")
    with _readable_files(), tempfile.TemporaryDirectory(prefix="kdump-capture-initrd.") as work:
        workdir = Path(work)
        plan_dir = _write_plan(workdir / "plan", plan, tree)
        basedir = _dracut_base(workdir / "dracut")
        kmodroot = _kmod_root(workdir / "kmodroot", moddir, kver)
        use_squash = systemd and (_squash_available(basedir) if squash is None else squash)
        argv = dracut_argv(kver, moddir, Path(output), workdir, use_squash, plan, systemd)
        env = dict(
            os.environ,
            dracutbasedir=str(basedir),
            KDUMP_CAPTURE_PLAN=str(plan_dir),
            KDUMP_CAPTURE_AGENT=str(tree),
            KDUMP_CAPTURE_KMODROOT=str(kmodroot),
        )
        result = subprocess.run(argv, env=env, check=False)
        if result.returncode != 0:
            raise CaptureError(f"dracut failed (exit {result.returncode}): {' '.join(argv)}")
    return Image(Path(output), Path(output).stat().st_size, use_squash, tree)


@contextlib.contextmanager
def _readable_files() -> Iterator[None]:
    """The image is made under umask 022, whatever the caller's: its services
    run as users of their own (systemd-network), and under umask 077 (a
    hardened root's) the files of the plan and the directories dracut made
    were closed to them, so networkd read no configuration and no NIC came
    up. Secrets keep their own modes (the ssh key is installed as it is)."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _self_test(tree: Path, plan: Plan) -> None:
    """The frozen agent checks it holds what a capture needs, so a missing
    library fails this build, not the capture."""
    argv = [str(tree / AGENT_EXECUTABLE), "self-test", *(["--ssh"] if plan.ssh else [])]
    result = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=False)
    if result.returncode != 0:
        raise CaptureError(f"{' '.join(argv)} failed:\n{(result.stdout + result.stderr)[-2000:]}")


def dracut_argv(
    kver: str,
    moddir: Path,
    output: Path,
    workdir: Path,
    squash: bool,
    plan: Plan,
    systemd: bool = True,
) -> list[str]:
    """dracut's command line: not host-only (the image boots on other machines),
    no host configuration, our module list, squash when there is one."""
    confdir = workdir / "conf.d"
    confdir.mkdir(exist_ok=True)
    conf = workdir / "dracut.conf"
    conf.write_text("")
    modules = [m for m in DRACUT_MODULES if systemd or "systemd" not in m]
    modules += ["squash"] if squash else []
    argv = [
        "dracut",
        "--force",
        "--quiet",
        "--no-hostonly",
        "--no-hostonly-cmdline",
        "--no-early-microcode",
        "--reproducible",
        "--conf",
        str(conf),
        "--confdir",
        str(confdir),
        "--tmpdir",
        str(workdir),
        "--kver",
        kver,
        "--kmoddir",
        str(moddir),
        "-m",
        " ".join(modules + plan.depends),
    ]
    argv += ["--squash-compressor", squash_compressor(kver, moddir)] if squash else ["--zstd"]
    # fsck helpers (xfs_repair, xfs_db, e2fsck: 1.1 MiB of a squash image,
    # held twice while it unpacks) only for a root filesystem that is mounted
    argv += [] if plan.root_mounted else ["--nofscks"]
    return [*argv, str(output), kver]


def squash_compressor(kver: str, moddir: Path) -> str:
    """mksquashfs's compressor for the image: xz, with the x86 branch filter
    on x86, when the kernel's config (beside --kmoddir's package tree, or in
    /boot) says it reads them; else zstd. The capture kernel holds the whole
    squash image in memory until it powers off: a local target's was 17.6 MB
    with zstd, 15.6 with xz and the filter."""
    for config in (moddir / ".." / ".." / ".." / "boot" / f"config-{kver}",
                   Path("/boot") / f"config-{kver}"):  # fmt: skip
        try:
            options = set(config.read_text(errors="replace").split())
        except OSError:
            continue
        if "CONFIG_SQUASHFS_XZ=y" not in options:
            return "zstd"
        x86 = {"CONFIG_X86_64=y", "CONFIG_XZ_DEC_X86=y"} <= options
        return "xz -Xbcj x86" if x86 else "xz"
    return "zstd"


def _without_systemd(module: str) -> str:
    """An image without systemd gets dracut's shell network (dhclient) instead."""
    return "network-legacy" if module == "systemd-networkd" else module


def _write_plan(plan_dir: Path, plan: Plan, tree: Path) -> Path:
    """The plan as the module reads it: one file per list, one entry a line."""
    plan_dir.mkdir()
    plan.files += sorted(_listed(tree / "needs.libs"))
    (plan_dir / "kdump.conf").write_text(
        plan.config_text, encoding="utf-8", errors="surrogateescape"
    )
    lists = {
        "files": plan.files,
        "tools": plan.tools,
        "dirs": plan.dirs,
        "drivers": plan.drivers,
        "depends": plan.depends,
        "cmdline.conf": [" ".join(plan.cmdline)] if plan.cmdline else [],
    }
    for name, entries in lists.items():
        (plan_dir / name).write_text("".join(f"{e}\n" for e in dict.fromkeys(entries)))
    elf, data = agent_files(tree, include_ssh=plan.ssh, include_snappy=plan.snappy,
                            include_network=plan.network)  # fmt: skip
    (plan_dir / "agent.elf").write_text("".join(f"{e}\n" for e in elf))
    (plan_dir / "agent.data").write_text("".join(f"{e}\n" for e in data))
    if plan.switch_root:
        (plan_dir / "switch-root").touch()
    if plan.network:
        (plan_dir / "network").touch()
    if plan.known_hosts:
        shutil.copyfile(plan.known_hosts, plan_dir / "known_hosts")
    return plan_dir


def agent_files(
    tree: Path, include_ssh: bool, include_snappy: bool = True, include_network: bool = True
) -> tuple[list[str], list[str]]:
    """The tree's files (relative), ELF ones apart: those get their host libraries.
    What only an SSH target needs (ssh.files) is left out without one, what
    only snappy (core_collector -p) needs without it, and what only a network
    target needs (network.files: unicodedata, for the idna codec that
    resolving a server's name uses) without an ssh or nfs target."""
    skip = set() if include_ssh else _listed(tree / "ssh.files")
    skip |= set() if include_snappy else _listed(tree / "snappy.files")
    skip |= set() if include_network or include_ssh else _listed(tree / "network.files")
    skip |= {p.name for p in tree.glob("*.files")} | {"needs.libs"}  # the tree's own lists
    elf: list[str] = []
    data: list[str] = []
    for path in sorted(tree.rglob("*")):
        rel = path.relative_to(tree).as_posix()
        if (path.is_dir() and not path.is_symlink()) or _skipped(rel, skip):
            continue
        with_libs = path.is_file() and not path.is_symlink() and _is_elf(path)
        (elf if with_libs else data).append(rel)
    return elf, data


def _listed(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line.strip().rstrip("/") for line in path.read_text().splitlines() if line.strip()}


def _skipped(rel: str, skip: set[str]) -> bool:
    """``rel`` or a directory above it is listed."""
    parts = rel.split("/")
    return any("/".join(parts[:i]) in skip for i in range(1, len(parts) + 1))


def _is_elf(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(4) == b"\x7fELF"


def _dracut_base(base: Path) -> Path:
    """A private dracutbasedir: links to the system's dracut, our module added,
    and check_kernel_module reading --kmoddir's modules."""
    if not SYSTEM_DRACUT.is_dir():
        raise CaptureError(f"{SYSTEM_DRACUT} is missing: apt-get install dracut-core")
    (base / "modules.d").mkdir(parents=True)
    for entry in SYSTEM_DRACUT.iterdir():
        if entry.name not in ("modules.d", "dracut-functions.sh"):
            (base / entry.name).symlink_to(entry)
    for module in (SYSTEM_DRACUT / "modules.d").iterdir():
        if module.name != MODULE_NAME:
            (base / "modules.d" / module.name).symlink_to(module)
    (base / "modules.d" / MODULE_NAME).symlink_to(module_source().resolve())
    stub = base / "modules.d" / NETWORK_MODULES
    stub.unlink(missing_ok=True)
    stub.mkdir()
    (stub / "module-setup.sh").write_text(_NETWORK_MODULES_STUB)
    functions = (SYSTEM_DRACUT / "dracut-functions.sh").read_text()
    (base / "dracut-functions.sh").write_text(functions + _CHECK_KERNEL_MODULE)
    return base


def _kmod_root(root: Path, moddir: Path, kver: str) -> Path:
    """A root whose lib/modules/KVER is --kmoddir, for modprobe -d."""
    (root / "lib" / "modules").mkdir(parents=True)
    (root / "lib" / "modules" / kver).symlink_to(moddir.resolve())
    return root


def _squash_available(basedir: Path) -> bool:
    """dracut's squash module and mksquashfs are there (the kernel's modules
    are checked by the module itself)."""
    return (basedir / "modules.d" / "99squash").exists() and shutil.which("mksquashfs") is not None
