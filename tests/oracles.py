"""Reference readers ("oracles") the tests compare kdump-capture with.

Debian 12's own makedumpfile (1.7.2) misreads 6.12 kernels and its crash is
too old for them, so the tests use the newer builds from Debian sid
(makedumpfile 1.7.8, crash 9.0.x). They run in a minimal sid chroot made once
with debootstrap in the cache ($KDUMP_CAPTURE_CACHE, default
~/.cache/kdump-capture), never in the repository.

How a call reaches host files: every call runs in its own mount namespace
(``unshare --mount --pid --fork``). Inside it, a fresh /proc is mounted on the
chroot's /proc, a tmpfs on its /tmp and on /mnt/host, and the folders holding
the files the call needs are bind-mounted at ``/mnt/host/<same host path>``.
When the call ends, the namespace and all its mounts vanish with it: nothing
is left mounted on the host, and parallel calls cannot see each other.
``inside(path)`` gives the name a host path has in the chroot.

Debug vmlinux files (for crash, drgn) come from the Debian mirror's
``linux-image-<release>-dbg`` packages, fetched with a private apt
configuration so the host's sources and state are not touched; only the
vmlinux is kept, at $KDUMP_CAPTURE_CACHE/vmlinux/vmlinux-<release>.

Every function raises ``OracleUnavailable`` when its tool cannot be set up;
the tests decide whether that fails or skips them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import drgn

SID_PACKAGES = ("makedumpfile", "crash")
HOST_MOUNT = "/mnt/host"
STAMP = ".kdump-capture-ready"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBUG_SUITES = ("bookworm", "bookworm-updates", "trixie", "trixie-updates", "sid")
SECURITY_SUITES = ("bookworm-security", "trixie-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}

# Runs inside the new mount namespace, before chroot: $1 is the chroot, then
# the host folders to bind, then "--", then the command.
ENTER_SCRIPT = r"""
root=$1; shift
mount -t tmpfs -o mode=1777 oracle-tmp "$root/tmp"
mount -t tmpfs -o mode=0755 oracle-host "$root/mnt/host"
while [ "$1" != -- ]; do
    mkdir -p "$root/mnt/host$1"
    mount --rbind "$1" "$root/mnt/host$1"
    shift
done
shift
exec chroot "$root" "$@"
"""


class OracleUnavailable(RuntimeError):
    """A reference tool could not be set up (no root, no network, no package)."""


class OracleFailed(RuntimeError):
    """A reference tool ran but could not read its input."""


def cache_dir() -> Path:
    """The cache root, read at call time so tests may point it elsewhere."""
    default = Path.home() / ".cache" / "kdump-capture"
    return Path(os.environ.get("KDUMP_CAPTURE_CACHE", default))


# ---------------------------------------------------------------- locking


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialize set-up steps between parallel test workers and scripts."""
    lock_file = cache_dir() / "locks" / f"{name}.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(
    argv: Sequence[str], what: str, *, timeout: float | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a set-up command; a failure becomes OracleUnavailable with its output."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, errors="replace",
            timeout=timeout, cwd=cwd, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OracleUnavailable(f"{what}: {error}") from error
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise OracleUnavailable(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


# ---------------------------------------------------------------- mirror


def _host_sources() -> list[str]:
    """Every URI the host's apt sources name, in order."""
    uris: list[str] = []
    etc = Path("/etc/apt")
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    for path in files:
        if path.suffix not in (".list", ".sources") or not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            uris += re.findall(r"(?:^URIs:|^deb)\s+(?:\[[^]]*\]\s+)?(\S+)", line.strip())
    return uris


def mirror() -> str:
    """The Debian mirror: $KDUMP_CAPTURE_MIRROR, else the host's, since it may be the only
    one reachable."""
    configured = os.environ.get("KDUMP_CAPTURE_MIRROR")
    if configured:
        return configured.rstrip("/")
    for uri in _host_sources():
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def security_mirror() -> str:
    """The security archive next to the mirror (kernel updates land there first)."""
    for uri in _host_sources():
        if uri.rstrip("/").endswith("/debian-security"):
            return uri.rstrip("/")
    return mirror().removesuffix("/debian") + "/debian-security"


# ---------------------------------------------------------------- sid chroot


def sid_chroot() -> Path:
    """The sid chroot with makedumpfile and crash, made on first use.

    A stamp file marks a finished chroot; anything else found at its place is
    the remains of an interrupted attempt and is removed before starting over.
    """
    root = cache_dir() / "sid-readers"
    if (root / STAMP).is_file():
        return root
    with _locked("sid-readers"):
        if not (root / STAMP).is_file():
            _build_chroot(root)
    return root


def _build_chroot(root: Path) -> None:
    """Debootstrap into a side folder, then move it into place."""
    if os.geteuid() != 0:
        raise OracleUnavailable(
            f"making {root} needs root (debootstrap); run scripts/reference-tools"
        )
    if shutil.which("debootstrap") is None:
        raise OracleUnavailable("debootstrap is missing: apt-get install debootstrap")
    partial = root.with_name(root.name + ".partial")
    for leftover in (root, partial):
        _remove_tree(leftover)
    partial.parent.mkdir(parents=True, exist_ok=True)
    _debootstrap(partial)
    (partial / HOST_MOUNT.lstrip("/")).mkdir(parents=True, exist_ok=True)
    versions = _run(
        ["chroot", str(partial), "dpkg-query", "-W", *SID_PACKAGES], "dpkg-query in the chroot"
    )
    (partial / STAMP).write_text(versions.stdout)
    partial.rename(root)


def _debootstrap(target: Path) -> None:
    """Debootstrap in a private mount namespace, so that if it is killed, the /proc and
    /sys it mounts die with it instead of staying mounted in the cache."""
    argv = [
        "unshare", "--mount", "--propagation", "private",
        "debootstrap", "--variant=minbase", f"--include={','.join(SID_PACKAGES)}",
        "sid", str(target), mirror(),
    ]  # fmt: skip
    try:
        _run(argv, "debootstrap of sid", timeout=1800)
    except OracleUnavailable as error:
        log = target / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        raise OracleUnavailable(f"{error}\n{detail}") from error


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first (so they unmount in order)."""
    prefix = str(path)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Remove a chroot safely: unmount first, and never cross into another filesystem
    (a forgotten bind mount of a host folder must not be emptied)."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    if _mounts_under(path):
        raise OracleUnavailable(f"cannot unmount everything under {path}; remove it by hand")
    if path.exists():
        _run(["rm", "-rf", "--one-file-system", "--", str(path)], f"removing {path}")


# ---------------------------------------------------------------- running in the chroot


def inside(path: Path) -> str:
    """The name a host path has inside the chroot during a call."""
    return HOST_MOUNT + str(path.resolve())


def _bind_sources(paths: Sequence[Path]) -> list[str]:
    """The host folders to bind: each folder given, or the parent of each file (which
    may not exist yet, like an output file); folders inside another one are dropped."""
    folders = sorted({p.resolve() if p.is_dir() else p.resolve().parent for p in paths})
    kept: list[Path] = []
    for folder in folders:
        if not any(folder.is_relative_to(outer) for outer in kept):
            kept.append(folder)
    return [str(folder) for folder in kept]


def _namespace_prefix(root: Path) -> list[str]:
    """unshare arguments: a private mount and PID namespace with its own /proc in the
    chroot; without root, a user namespace maps the caller to root so it still works."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [
        "unshare", *user, "--mount", "--propagation", "private",
        "--pid", "--fork", f"--mount-proc={root}/proc",
    ]  # fmt: skip


def run_in_chroot(
    argv: Sequence[str],
    files: Sequence[Path] = (),
    *,
    stdin: str | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command in the sid chroot with the folders of `files` visible at
    ``inside(path)``. The command's own exit status is left for the caller to judge."""
    root = sid_chroot()
    command = [
        *_namespace_prefix(root),
        "/bin/sh", "-euc", ENTER_SCRIPT, "enter", str(root),
        *_bind_sources(files), "--", *argv,
    ]  # fmt: skip
    try:
        return subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            errors="replace",
            env=CHROOT_ENV,
            timeout=timeout,
            check=False,
        )
    except OSError as error:
        raise OracleUnavailable(f"cannot run {argv[0]} in {root}: {error}") from error


def makedumpfile_new(
    *args: str | Path, files: Sequence[Path] = (), timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run sid's makedumpfile (1.7.8) on host files.

    Path arguments are translated to their chroot names and their folders bound
    (an output file's folder included, so it lands on the host). Host paths
    hidden inside a string argument must be written with ``inside(path)`` and
    listed in `files`. Output is text: write binary (-F) output to a file.
    """
    argv = ["makedumpfile", *(inside(arg) if isinstance(arg, Path) else arg for arg in args)]
    paths = [arg for arg in args if isinstance(arg, Path)]
    return run_in_chroot(argv, [*paths, *files], timeout=timeout)


def crash_new(vmlinux: Path, dump: Path, commands: Sequence[str], timeout: float = 600) -> str:
    """Run sid's crash (9.0.x) non-interactively and return what it printed.

    The commands go on stdin followed by ``exit``; ``-s`` drops the banner and the
    pager. Raises OracleFailed when crash cannot open the dump (exit status not 0).
    """
    script = "".join(f"{command}\n" for command in [*commands, "exit"])
    argv = ["crash", "-s", inside(vmlinux), inside(dump)]
    proc = run_in_chroot(argv, [vmlinux, dump], stdin=script, timeout=timeout)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()[-3000:]
        raise OracleFailed(f"crash exited {proc.returncode} on {dump}:\n{output}")
    return proc.stdout + proc.stderr


# ---------------------------------------------------------------- debug vmlinux


def drgn_program(dump: Path, release: str) -> drgn.Program:
    """drgn 0.3.0 (libkdumpfile inside, for kdump files) on ``dump`` with the
    debug symbols of kernel ``release``."""
    import drgn  # only the tests that use drgn pay for its import

    program = drgn.Program()
    program.set_core_dump(str(dump))
    program.load_debug_info([str(debug_vmlinux(release))])
    return program


def debug_vmlinux(release: str) -> Path:
    """The debug vmlinux of a Debian kernel release, fetched once.

    The -dbg package is about 1 GB: it is downloaded into a scratch folder in the
    cache, only the vmlinux is kept, and the package is deleted.
    """
    if not re.fullmatch(r"[0-9][0-9A-Za-z.+~-]*", release):
        raise ValueError(f"not a kernel release: {release!r}")
    target = cache_dir() / "vmlinux" / f"vmlinux-{release}"
    if target.is_file():
        return target
    with _locked(f"vmlinux-{release}"):
        if not target.is_file():
            _fetch_vmlinux(release, target)
    return target


def _fetch_vmlinux(release: str, target: Path) -> None:
    """Download the -dbg package, extract its vmlinux, delete the package."""
    scratch = target.with_name(f"download-{release}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        deb = _apt_download(f"linux-image-{release}-dbg", scratch)
        _extract_member(deb, f"usr/lib/debug/boot/vmlinux-{release}", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _apt_dir() -> Path:
    """A private apt configuration and state for the debug packages, so the host's
    sources (which may lack the kernel's suite) and its lists stay untouched."""
    base = cache_dir() / "apt" / "debug-symbols"
    for sub in ("state/lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "state" / "status").touch()
    lines = [f"deb [signed-by={KEYRING}] {mirror()} {suite} main" for suite in DEBUG_SUITES]
    lines += [f"deb [signed-by={KEYRING}] {security_mirror()} {s} main" for s in SECURITY_SUITES]
    (base / "sources.list").write_text("\n".join(lines) + "\n")
    return base


def _apt_options(base: Path) -> list[str]:
    """apt options that point every file apt uses into the private folder."""
    options = {
        "Dir::Etc::SourceList": base / "sources.list",
        "Dir::Etc::SourceParts": base / "sources.list.d",
        "Dir::Etc::Preferences": base / "preferences",
        "Dir::Etc::PreferencesParts": base / "preferences.d",
        "Dir::State": base / "state",
        "Dir::State::Lists": base / "state" / "lists",
        "Dir::State::status": base / "state" / "status",
        "Dir::Cache": base / "cache",
        "Acquire::Languages": "none",
    }
    if os.geteuid() == 0:
        options["APT::Sandbox::User"] = "root"  # _apt may not enter the cache folder
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def _apt_download(package: str, folder: Path) -> Path:
    """Download one package, refreshing the lists once when the package is unknown
    or its file has gone from the mirror (security updates replace old kernels)."""
    base = _apt_dir()
    options = _apt_options(base)
    if not any((base / "state" / "lists").glob("*Packages*")):
        _run(["apt-get", *options, "update"], "apt-get update (debug symbols)")
    proc = _try_download(options, package, folder)
    if proc.returncode != 0:
        _run(["apt-get", *options, "update"], "apt-get update (debug symbols)")
        proc = _try_download(options, package, folder)
    debs = sorted(folder.glob("*.deb"))
    if proc.returncode != 0 or not debs:
        suites = ", ".join([*DEBUG_SUITES, *SECURITY_SUITES])
        raise OracleUnavailable(
            f"package {package} is not available from {mirror()} ({suites}):\n"
            + proc.stderr.strip()
        )
    return debs[0]


def _try_download(
    options: list[str], package: str, folder: Path
) -> subprocess.CompletedProcess[str]:
    """One `apt-get download` into folder; its status tells whether to refresh."""
    return subprocess.run(
        ["apt-get", *options, "download", package],
        cwd=folder, capture_output=True, text=True, check=False,
    )  # fmt: skip


def _extract_member(deb: Path, member: str, target: Path) -> None:
    """Copy one file out of a .deb, stopping the decompression as soon as it is out."""
    partial = target.with_name(target.name + ".partial")
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        try:
            found = _copy_from_tar(proc.stdout, member, partial)
        finally:
            proc.kill()
    if not found:
        partial.unlink(missing_ok=True)
        raise OracleUnavailable(f"{deb.name} holds no {member}")
    partial.replace(target)


def _copy_from_tar(stream: IO[bytes], member: str, target: Path) -> bool:
    """Stream through a tar and write out the named member; False if it is absent."""
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for entry in archive:
            if entry.isfile() and entry.name.removeprefix("./") == member:
                source = archive.extractfile(entry)
                assert source is not None
                with target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                return True
    return False
