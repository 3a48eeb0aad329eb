"""Fetch Debian kernels through their meta-packages and resolve modules.

Exact kernel versions vanish from the mirrors, so the lab asks apt which
real ``linux-image-<release>`` package a meta-package currently depends on,
downloads that .deb (never installs it) and unpacks it into the cache.  Each
suite gets a private apt configuration under the cache so the host's own apt
setup is never changed.
"""

from __future__ import annotations

import gzip
import json
import lzma
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .util import LabError, atomic_write, cache_dir, log, run

MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# alias -> (suite, meta package)
KERNELS: dict[str, tuple[str, str]] = {
    "5.10": ("bullseye", "linux-image-amd64"),
    "6.1": ("bookworm", "linux-image-amd64"),
    "6.12": ("bookworm", "linux-image-6.12-amd64"),
    "7": ("sid", "linux-image-amd64"),
}

SUITE_SOURCES: dict[str, list[str]] = {
    "bullseye": [
        f"{MIRROR} bullseye main",
        f"{MIRROR} bullseye-updates main",
        f"{SECURITY} bullseye-security main",
    ],
    "bookworm": [
        f"{MIRROR} bookworm main",
        f"{MIRROR} bookworm-updates main",
        f"{SECURITY} bookworm-security main",
    ],
    "sid": [f"{MIRROR} sid main"],
}

# Modules the guests need: virtio + ext4 for the workload, plus every
# storage/NIC driver of the device matrix.  Built-ins are skipped.
WANTED_MODULES = [
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "virtio_console",
    "ext4",
    "jbd2",
    "mbcache",
    "crc16",
    "crc32c_generic",
    "crc32c_intel",
    "libcrc32c",
    "ahci",
    "libahci",
    "libata",
    "sd_mod",
    "scsi_mod",
    "sym53c8xx",
    "megaraid_sas",
    "mptsas",
    "mptscsih",
    "mptbase",
    "nvme",
    "nvme_core",
    "e1000",
    "e1000e",
    "8139too",
    "8139cp",
    "af_packet",
]


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel: where its files are and what exactly it is."""

    alias: str
    release: str  # e.g. 6.1.0-56-amd64, the modules directory name
    package: str  # e.g. linux-image-6.1.0-56-amd64
    version: str  # Debian package version
    root: Path  # unpacked .deb

    @property
    def vmlinuz(self) -> Path:
        """The bootable bzImage (in /boot, or beside the modules on newer Debian)."""
        for cand in (
            self.root / "boot" / f"vmlinuz-{self.release}",
            self.root / "usr" / "lib" / "modules" / self.release / "vmlinuz",
            self.root / "lib" / "modules" / self.release / "vmlinuz",
        ):
            if cand.exists():
                return cand
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def moddir(self) -> Path:
        """/lib/modules/<release> inside the unpacked tree."""
        for base in ("lib", "usr/lib"):
            cand = self.root / base / "modules" / self.release
            if cand.is_dir():
                return cand
        raise LabError(f"no modules directory for {self.release} under {self.root}")

    @property
    def config(self) -> Path:
        """The kernel .config shipped with the image, used to check options."""
        for cand in (
            self.root / "boot" / f"config-{self.release}",
            self.root / "usr" / "lib" / "modules" / self.release / "config",
        ):
            if cand.exists():
                return cand
        return self.root / "boot" / f"config-{self.release}"


def _apt_dir(suite: str) -> Path:
    """Private apt state for one suite, so the host's apt config stays untouched."""
    base = cache_dir() / "apt" / suite
    (base / "state" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (base / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    lines = [f"deb [signed-by={KEYRING}] {src}" for src in SUITE_SOURCES[suite]]
    (base / "sources.list").write_text("\n".join(lines) + "\n")
    return base


def _apt_opts(suite: str) -> list[str]:
    """apt -o options that point at the private per-suite configuration."""
    base = _apt_dir(suite)
    return [
        "-o",
        f"Dir::Etc::sourcelist={base / 'sources.list'}",
        "-o",
        "Dir::Etc::sourceparts=/nonexistent",
        "-o",
        f"Dir::State={base / 'state'}",
        "-o",
        f"Dir::Cache={base / 'cache'}",
        "-o",
        "Dir::State::status=/var/lib/dpkg/status",
        "-o",
        "APT::Sandbox::User=root",
        "-o",
        "Acquire::Languages=none",
    ]


def _apt_update(suite: str) -> None:
    """Refresh the private package lists of a suite."""
    log(f"apt-get update for {suite}")
    run(["apt-get", *_apt_opts(suite), "-qq", "update"], timeout=600)


def _resolve_meta(suite: str, meta: str) -> tuple[str, str]:
    """Return (real package, version) that the meta-package depends on now."""
    out = run(["apt-cache", *_apt_opts(suite), "depends", meta])
    deps = re.findall(r"Depends:\s+(linux-image-[0-9]\S*)", out)
    if not deps:
        raise LabError(f"{meta} in {suite} depends on no linux-image-<release>: {out}")
    pkg = deps[0]
    pol = run(["apt-cache", *_apt_opts(suite), "policy", pkg])
    m = re.search(r"Candidate:\s+(\S+)", pol)
    if not m or m.group(1) == "(none)":
        raise LabError(f"no candidate version for {pkg} in {suite}")
    return pkg, m.group(1)


def _download(suite: str, pkg: str, version: str, dest: Path) -> Path:
    """apt-get download the .deb into dest (which is in the cache)."""
    dest.mkdir(parents=True, exist_ok=True)
    run(
        ["apt-get", *_apt_opts(suite), "-qq", "download", f"{pkg}={version}"], cwd=dest, timeout=900
    )
    debs = sorted(dest.glob(f"{pkg}_*.deb"))
    if not debs:
        raise LabError(f"apt-get download {pkg} produced no .deb in {dest}")
    return debs[-1]


def _split_parts(suite: str, pkg: str, release: str) -> list[str]:
    """Same-release packages the image depends on that carry its files."""
    out = run(["apt-cache", *_apt_opts(suite), "depends", pkg])
    parts = re.findall(r"Depends:\s+(linux-(?:binary|modules)-\S+)", out)
    return [p for p in dict.fromkeys(parts) if p.endswith(release)]


def get_kernel(alias: str, refresh: bool = False) -> Kernel:
    """Resolve, download and unpack a kernel; cached after the first call.

    The resolution is remembered in kernels/<alias>.json so later runs work
    without the network; ``refresh`` re-resolves the meta-package.
    """
    if alias not in KERNELS:
        raise LabError(f"unknown kernel {alias!r}; choose from {', '.join(KERNELS)}")
    suite, meta = KERNELS[alias]
    kdir = cache_dir() / "kernels"
    kdir.mkdir(exist_ok=True)
    meta_file = kdir / f"{alias}.json"
    if meta_file.exists() and not refresh:
        info = json.loads(meta_file.read_text())
        kern = Kernel(alias, info["release"], info["package"], info["version"], Path(info["root"]))
        if kern.vmlinuz.exists():
            _depmod(kern)
            return kern
    _apt_update(suite)
    pkg, version = _resolve_meta(suite, meta)
    release = pkg.removeprefix("linux-image-")
    root = kdir / f"{pkg}_{version}"
    if not Kernel(alias, release, pkg, version, root).vmlinuz.exists():
        tmp = root.with_name(root.name + ".partial")
        run(["rm", "-rf", str(tmp), str(root)])
        # newer Debian splits the image into linux-binary-/linux-modules-<rel>
        for part in [pkg, *_split_parts(suite, pkg, release)]:
            log(f"downloading {part} {version} ({suite})")
            deb = _download(suite, part, version, kdir / "debs")
            run(["dpkg-deb", "-x", str(deb), str(tmp)], timeout=600)
        tmp.rename(root)
    kern = Kernel(alias, release, pkg, version, root)
    if not kern.vmlinuz.exists():
        raise LabError(f"{pkg} has no /boot/vmlinuz-{release}")
    _depmod(kern)
    atomic_write(
        meta_file,
        json.dumps(
            {
                "alias": alias,
                "suite": suite,
                "meta": meta,
                "package": pkg,
                "version": version,
                "release": release,
                "root": str(root),
            },
            indent=2,
        ).encode(),
    )
    log(f"kernel {alias}: {pkg} {version}")
    return kern


def _depmod(kern: Kernel) -> None:
    """Generate modules.dep/modules.builtin.* which the .deb leaves to postinst."""
    if (kern.moddir / "modules.dep").exists():
        return
    if not (kern.root / "lib" / "modules").exists():
        # merged-/usr packages ship usr/lib/modules; depmod -b looks in lib/
        (kern.root / "lib").mkdir(exist_ok=True)
        (kern.root / "lib" / "modules").symlink_to("../usr/lib/modules")
    run(["depmod", "-b", str(kern.root), kern.release], timeout=300)


def _modname(path: str) -> str:
    """Module name from a modules.dep path (dashes folded to underscores)."""
    name = path.rsplit("/", 1)[-1]
    name = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", name)
    return name.replace("-", "_")


def _read_moddep(moddir: Path) -> dict[str, tuple[str, list[str]]]:
    """Parse modules.dep into name -> (relative path, dependency names)."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        path, deps = line.split(":", 1)
        table[_modname(path)] = (path, [_modname(d) for d in deps.split()])
    return table


def _read_builtin(moddir: Path) -> set[str]:
    """Names of modules compiled into the kernel image."""
    f = moddir / "modules.builtin"
    if not f.exists():
        return set()
    return {_modname(line.strip()) for line in f.read_text().splitlines() if line.strip()}


def _softdeps(moddir: Path) -> dict[str, list[str]]:
    """'softdep X pre: a b' entries: modules that X wants loaded first."""
    res: dict[str, list[str]] = {}
    f = moddir / "modules.softdep"
    if not f.exists():
        return res
    for line in f.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0] != "softdep":
            continue
        pre: list[str] = []
        mode = ""
        for tok in parts[2:]:
            if tok.endswith(":"):
                mode = tok
            elif mode == "pre:":
                pre.append(tok.replace("-", "_"))
        res[parts[1].replace("-", "_")] = pre
    return res


def resolve_modules(kern: Kernel, wanted: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Order the wanted modules and their deps for insmod.

    Returns (relative paths in load order, built-in names, missing names).
    """
    moddir = kern.moddir
    dep = _read_moddep(moddir)
    builtin = _read_builtin(moddir)
    soft = _softdeps(moddir)
    order: list[str] = []
    seen: set[str] = set()
    builtins: list[str] = []
    missing: list[str] = []

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        if name in builtin:
            builtins.append(name)
            return
        if name not in dep:
            missing.append(name)
            return
        for pre in soft.get(name, []):
            if pre in dep or pre in builtin:
                visit(pre)
        path, deps = dep[name]
        for d in reversed(deps):
            visit(d)
        order.append(path)

    for w in wanted:
        visit(w)
    return order, builtins, missing


def module_bytes(kern: Kernel, relpath: str) -> bytes:
    """A module's ELF bytes, decompressed, because busybox insmod wants plain .ko."""
    path = kern.moddir / relpath
    data = path.read_bytes()
    if relpath.endswith(".xz"):
        return lzma.decompress(data)
    if relpath.endswith(".gz"):
        return gzip.decompress(data)
    if relpath.endswith(".zst"):
        proc = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=False)
        if proc.returncode != 0:
            raise LabError(f"zstd -d {path} failed (apt-get install zstd)")
        return proc.stdout
    return data


def config_enabled(kern: Kernel, option: str) -> bool:
    """Whether CONFIG_<option> is y or m in the kernel's shipped config."""
    try:
        text = kern.config.read_text()
    except OSError:
        return False
    return re.search(rf"^CONFIG_{option}=[ym]$", text, re.M) is not None
