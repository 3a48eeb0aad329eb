"""The frozen agent (scripts/build-agent): runs with no Python, gives the venv's bytes.

One build per machine, kept in the cache and rebuilt only when its inputs
change (the script's stamp): the dracut module's tests use the same tree.
Every run of the frozen executable here has an empty environment (env -i),
so nothing of the venv, PATH or PYTHON* reaches it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from capture import __version__
from tests.realcores import REPO, RealCore, core_61

NAME = "kdump-capture-agent"
VENV_CLI = REPO / ".venv" / "bin" / "kdump-capture"
SSH_PACKAGES = ("paramiko", "cryptography", "nacl", "bcrypt")


@pytest.fixture(scope="module")
def tree() -> Path:
    build = subprocess.run(
        [str(REPO / "scripts" / "build-agent")], capture_output=True, text=True, check=False
    )
    assert build.returncode == 0, build.stderr
    path = Path(build.stdout.splitlines()[-1])
    assert path.name == NAME and (path / NAME).is_file()
    return path


def frozen(tree: Path, *args: str, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tree / NAME), *args], capture_output=True, text=True, env={}, cwd=cwd, check=False
    )


LOCAL_IMAGE_LEAVES_OUT = ("ssh.files", "snappy.files", "network.files")
"""What build-initrd leaves out of a local target's image (-l, no ssh or nfs)."""


def listed(tree: Path, name: str) -> list[str]:
    return (tree / name).read_text().splitlines()


def copy_leaving_out(tree: Path, into: Path, lists: tuple[str, ...]) -> Path:
    """The tree as an image without those parts holds it (the dracut module's rule)."""
    left_out = {line for name in lists for line in listed(tree, name)}
    copy = into / NAME
    for directory, _, names in os.walk(tree):
        for file in names:
            relative = os.path.relpath(os.path.join(directory, file), tree)
            if relative not in left_out:
                (copy / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(tree / relative, copy / relative, follow_symlinks=False)
    return copy


def test_self_test_passes_with_no_environment(tree: Path) -> None:
    core = frozen(tree, "self-test")
    assert core.returncode == 0, core.stderr
    assert core.stdout.startswith("self-test ok") and core.stdout.count("\n") == 1
    assert "lzo" in core.stdout and "zstd" in core.stdout and "snappy" in core.stdout
    ssh = frozen(tree, "self-test", "--ssh")
    assert ssh.returncode == 0, ssh.stderr
    assert "paramiko" in ssh.stdout and "ed25519" in ssh.stdout


def test_version_is_the_packages(tree: Path) -> None:
    result = frozen(tree, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"kdump-capture {__version__}"


def test_the_tree_lists_its_parts_and_host_libraries(tree: Path) -> None:
    top = sorted(path.name for path in tree.iterdir())
    assert top == ["_internal", NAME, "needs.libs", "network.files", "snappy.files", "ssh.files"]
    assert [Path(line).name.split(".")[0] for line in listed(tree, "network.files")] == [
        "unicodedata"
    ]
    ssh = listed(tree, "ssh.files")
    for package in SSH_PACKAGES:
        assert any(line.startswith(f"_internal/{package}/") for line in ssh), package
    parts = ssh + listed(tree, "snappy.files") + listed(tree, "network.files")
    assert all((tree / line).is_file() for line in parts)
    # Our lzo binding and the libraries it links are in the tree, in the core.
    assert (tree / "_internal" / "liblzo2.so.2").is_file()
    assert not any("lzo" in line or "libz" in line for line in ssh)
    # Outside the tree only glibc, and the host's libz that the bootloader starts with.
    names = {Path(line).name for line in listed(tree, "needs.libs")}
    glibc = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "ld-linux-x86-64.so.2"}
    assert names - glibc <= {"libz.so.1"}, names


def test_the_archives_modules_are_stored_without_column_tables(tree: Path) -> None:
    """build-agent freezes with PYTHONNODEBUGRANGES (smaller code objects, in
    the archive and in the capture kernel's memory) and stores the archive's
    modules without zlib, so the image's squashfs compresses them whole."""
    from PyInstaller.archive.readers import (  # type: ignore[import-untyped]
        CArchiveReader,
        ZlibArchiveReader,
    )

    executable = tree / NAME
    package = CArchiveReader(str(executable))
    start = package._start_offset + package.toc["PYZ.pyz"][0]
    archive = ZlibArchiveReader(str(executable), start)
    for module in ("capture.agent.run", "capture.dumpfile.kdump", "argparse"):
        _kind, offset, _length = archive.toc[module]
        with executable.open("rb") as file:
            file.seek(start + offset)
            assert file.read(2) == b"\x78\x01", module  # a zlib stream of stored blocks
        code = archive.extract(module)
        assert all(column is None for _, _, column, _ in code.co_positions()), module


def test_a_copy_without_the_ssh_part_captures_but_cannot_ssh(tree: Path, tmp_path: Path) -> None:
    copy = copy_leaving_out(tree, tmp_path, LOCAL_IMAGE_LEAVES_OUT)
    for package in SSH_PACKAGES:
        assert not (copy / "_internal" / package).exists()
    assert not list(copy.glob("_internal/python3*/lib-dynload/unicodedata*"))
    assert frozen(copy, "self-test").returncode == 0
    ssh = frozen(copy, "self-test", "--ssh")
    assert ssh.returncode == 1
    assert "paramiko" in ssh.stderr  # it says what is missing
    assert "idna" in ssh.stderr  # and that a server's name could not be resolved


def test_a_copy_without_network_files_cannot_resolve_a_server(tree: Path, tmp_path: Path) -> None:
    copy = copy_leaving_out(tree, tmp_path, ("network.files",))
    ssh = frozen(copy, "self-test", "--ssh")
    assert ssh.returncode == 1
    assert "idna" in ssh.stderr and "paramiko" not in ssh.stderr


def test_runs_in_a_chroot_of_the_tree_and_needs_libs_only(tree: Path, tmp_path: Path) -> None:
    """No Python, no libraries but those needs.libs lists: as in the capture initramfs."""
    root = tmp_path / "root"
    shutil.copytree(tree, root / "agent", symlinks=True)
    for library in listed(tree, "needs.libs"):
        (root / library.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library, root / library.lstrip("/"))  # the file a symlink names
    (root / "tmp").mkdir(mode=0o1777)
    command = [_tool("chroot"), str(root), f"/agent/{NAME}", "self-test", "--ssh"]
    if os.getuid() != 0:
        command = [_tool("unshare"), "--map-root-user", *command]
    result = subprocess.run(command, capture_output=True, text=True, env={}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("self-test ok")


def _tool(name: str) -> str:
    path = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    assert path, f"{name} is not installed (util-linux, coreutils)"
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_dump_and_info_match_the_venvs(tree: Path, tmp_path: Path, real_core: RealCore) -> None:
    venv_info = subprocess.run([str(VENV_CLI), "info", str(real_core.vmcore)],
                               capture_output=True, text=True, check=True)  # fmt: skip
    info = frozen(tree, "info", str(real_core.vmcore))
    assert info.returncode == 0, info.stderr
    assert info.stdout == venv_info.stdout
    venv_dump, frozen_dump = tmp_path / "venv.dump", tmp_path / "frozen.dump"
    subprocess.run([str(VENV_CLI), "dump", "-l", "-d", "31", str(real_core.vmcore),
                    str(venv_dump)], capture_output=True, check=True)  # fmt: skip
    dump = frozen(tree, "dump", "-l", "-d", "31", str(real_core.vmcore), str(frozen_dump))
    assert dump.returncode == 0, dump.stderr
    assert sha256(frozen_dump) == sha256(venv_dump)


def test_run_captures_and_hooks_get_the_system_libraries(tree: Path, tmp_path: Path) -> None:
    """`run` (a capture to the root filesystem, as the image runs it) from a
    copy elsewhere: the dump is saved, and a hook the agent starts inherits
    neither the bootloader's LD_LIBRARY_PATH (it would load the tree's libz)
    nor its _PYI_* variables, and can run the agent again."""
    core = core_61()
    copy = copy_leaving_out(tree, tmp_path / "image", LOCAL_IMAGE_LEAVES_OUT)
    sysroot = tmp_path / "sysroot"
    (sysroot / "var" / "crash").mkdir(parents=True)
    hook = tmp_path / "pre.sh"
    hook.write_text(f"#!/bin/sh\nenv > {tmp_path}/hook-env\n"
                    f"{copy / NAME} --version > {tmp_path}/hook-agent\n")  # fmt: skip
    hook.chmod(0o755)
    config = tmp_path / "kdump.conf"
    config.write_text(f"path /var/crash\ncore_collector makedumpfile -l -d 31\nkdump_pre {hook}\n")
    result = frozen(copy, "run", "--no-action", "--config", str(config), "--vmcore",
                    str(core.vmcore), "--sysroot", str(sysroot), "--kdump-dir",
                    str(tmp_path / "kdump.d"), cwd=str(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    [dump_dir] = (sysroot / "var" / "crash").iterdir()
    assert (dump_dir / "vmcore").is_file() and (dump_dir / "vmcore-dmesg.txt").is_file()
    assert (dump_dir / "vmcore-dmesg.txt").read_bytes() == (
        core.reference / "vmcore-dmesg.txt"
    ).read_bytes()
    hook_env = (tmp_path / "hook-env").read_text()
    assert "LD_LIBRARY_PATH" not in hook_env and "_PYI_" not in hook_env
    assert (tmp_path / "hook-agent").read_text() == f"kdump-capture {__version__}\n"
