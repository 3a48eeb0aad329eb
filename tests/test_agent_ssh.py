"""The ssh target against a real OpenSSH server on loopback (tests/sshd.py).

The server has its own host key and root's authorized key; the client is a
HOME of its own whose ~/.ssh/config names the server in a Host block on a
non-standard port, so ``ssh root@dumps`` resolves as it would for a user.
Each test runs the whole capture on a real vmcore and checks what lands on
the server: Fedora's names and modes, the dump against makedumpfile's own
(byte for byte, or through ``makedumpfile -R``), the log against
``makedumpfile --dump-dmesg``, the manifest's sha256 against the server's
files; and the faults, each ending in the configured action with nothing
partial named complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from capture.agent.config import Action, SshTarget
from capture.cli import main
from tests import oracles
from tests.agentrun import capture, only_dump_dir
from tests.realcores import RealCore, core_61
from tests.sshd import ALIAS, Server, sshd

DIR_NAME = re.compile(r"^127\.0\.0\.1-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d$")
FEDORA_FILES = {"vmcore": "vmcore", "flat": "vmcore.flat"}


def use_home(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's ~/.ssh is the test's own; the caches stay where they are."""
    monkeypatch.setenv("KDUMP_CAPTURE_CACHE", str(oracles.cache_dir()))
    monkeypatch.setenv("HOME", str(server.home))


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    with sshd(tmp_path) as running:
        use_home(running, monkeypatch)
        yield running


def config_for(tmp_path: Path, server: Server, dumps: Path, collector: str = "-l -d 31",
               extra: str = "") -> Path:  # fmt: skip
    config = tmp_path / "kdump.conf"
    config.write_text(
        f"ssh root@{ALIAS}\nsshkey {server.key}\npath {dumps}\n"
        f"core_collector makedumpfile {collector}\nkdump_capture_network_timeout 3\n"
        f"final_action poweroff\nfailure_action halt\n{extra}"
    )
    return config


def rebuilt(flat: Path, output: Path) -> Path:
    """``makedumpfile -R``'s regular file from a flattened dump."""
    with flat.open("rb") as stream:
        subprocess.run(["makedumpfile", "-R", str(output)], stdin=stream, check=True,
                       capture_output=True)  # fmt: skip
    return output


def reference(tmp_path: Path, core: RealCore, *flags: str) -> bytes:
    """makedumpfile's own dump (the current one, 1.7.8: it knows 6.12's pages)."""
    out = tmp_path / f"makedumpfile{'-'.join(flags)}.out"
    out.unlink(missing_ok=True)
    done = oracles.makedumpfile_new(*flags, core.vmcore, out)
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


def manifest_of(directory: Path) -> dict[str, object]:
    path = directory / "manifest.json"
    text = path.read_text() if path.exists() else ""
    return json.loads(text) if text else {}


def check_manifest_against_files(directory: Path) -> None:
    manifest = manifest_of(directory)
    files = manifest["files"]
    assert isinstance(files, dict)
    for name, facts in files.items():
        data = (directory / name).read_bytes()
        assert facts == {"status": "complete", "bytes": len(data),
                         "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip


@pytest.mark.parametrize("form", ["vmcore", "flat"])
def test_fedora_files_on_the_server(
    tmp_path: Path, server: Server, real_core: RealCore, form: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`kdump-capture run --no-action` with `ssh root@dumps`: Fedora's files,
    0600 in a 0700 directory named for our address toward the server; the dump
    is makedumpfile's byte for byte (the flat one after makedumpfile -R)."""
    dumps = tmp_path / "dumps"
    config = config_for(tmp_path, server, dumps, "-l --message-level 7 -d 31",
                        f"kdump_capture_ssh_format {form}\n")  # fmt: skip
    status = main(["run", "--no-action", "--config", str(config), "--vmcore",
                   str(real_core.vmcore), "--kdump-dir", str(tmp_path / "kdump.d")])  # fmt: skip
    assert status == 0
    assert "kdump-capture: action: poweroff (not taken: --no-action)" in capsys.readouterr().out
    directory = only_dump_dir(dumps)
    assert DIR_NAME.match(directory.name), directory.name
    dump_name = FEDORA_FILES[form]
    names = sorted(path.name for path in directory.iterdir())
    assert names == sorted(["kexec-dmesg.log", "manifest.json", dump_name, "vmcore-dmesg.txt"])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in directory.iterdir())
    theirs = reference(tmp_path, real_core, "-l", "--message-level", "7", "-d", "31")
    dump = directory / dump_name
    if form == "flat":
        dump = rebuilt(dump, tmp_path / "rebuilt")
    assert dump.read_bytes() == theirs
    log = tmp_path / "dmesg.txt"
    subprocess.run(["makedumpfile", "--dump-dmesg", str(dump), str(log)], check=True,
                   capture_output=True)  # fmt: skip
    assert (directory / "vmcore-dmesg.txt").read_bytes() == log.read_bytes()
    check_manifest_against_files(directory)
    manifest = manifest_of(directory)
    assert manifest["status"] == "complete"
    assert manifest["target"] == {"kind": "ssh", "where": f"ssh root@{ALIAS} at {dumps}"}
    run_log = (directory / "kexec-dmesg.log").read_text()
    assert run_log.splitlines()[-1].endswith("kdump-capture: action: poweroff")
    # Hashed where the files are, not read back over the network.
    assert f"{dump_name}: sha256 by the server's sha256sum" in run_log


def test_crash_opens_the_dump_written_over_sftp(tmp_path: Path, server: Server) -> None:
    core = core_61()
    dumps = tmp_path / "dumps"
    result = capture(tmp_path, config_for(tmp_path, server, dumps), core.vmcore)
    assert (result.status, result.action) == (0, Action.POWEROFF)
    vmcore = only_dump_dir(dumps) / "vmcore"
    output = oracles.crash_new(oracles.debug_vmlinux(core.release), vmcore, ["sys"])
    assert core.release in output and "PANIC:" in output


def test_sftp_only_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ForceCommand internal-sftp: no shell at all (ssh's command is refused),
    and the capture still lands whole."""
    core = core_61()
    with sshd(tmp_path, sftp_only=True) as server:
        use_home(server, monkeypatch)
        ssh_dir = server.home / ".ssh"
        shell = subprocess.run(["ssh", "-F", str(ssh_dir / "config"), "-o", "BatchMode=yes",
                                "-o", f"UserKnownHostsFile={ssh_dir / 'known_hosts'}",
                                f"root@{ALIAS}", "echo shell-works"],
                               capture_output=True, text=True, timeout=30)  # fmt: skip
        assert "shell-works" not in shell.stdout
        dumps = tmp_path / "dumps"
        result = capture(tmp_path, config_for(tmp_path, server, dumps), core.vmcore)
    assert (result.status, result.action) == (0, Action.POWEROFF)
    directory = only_dump_dir(dumps)
    assert (directory / "vmcore").read_bytes() == reference(tmp_path, core, "-l", "-d", "31")
    check_manifest_against_files(directory)  # read back over SFTP: no command runs there
    assert "vmcore: no sha256sum on the server" in (directory / "kexec-dmesg.log").read_text()


def test_unknown_host_key_sends_nothing(tmp_path: Path, server: Server,
                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    (server.home / ".ssh" / "known_hosts").write_text("")
    dumps = tmp_path / "dumps"
    result = capture(tmp_path, config_for(tmp_path, server, dumps), core_61().vmcore)
    assert (result.status, result.action) == (1, Action.HALT)
    assert not dumps.exists()
    assert "is in no known_hosts file" in caplog.text
    assert "kdump-capture propagate" in caplog.text


def test_changed_host_key_is_refused(tmp_path: Path, server: Server,
                                     caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = Path(f"{other}.pub").read_text().split()[:2]
    (server.home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {kind} {key}\n")
    dumps = tmp_path / "dumps"
    result = capture(tmp_path, config_for(tmp_path, server, dumps), core_61().vmcore)
    assert (result.status, result.action) == (1, Action.HALT)
    assert not dumps.exists()
    assert "is not the one known_hosts records" in caplog.text


def test_connection_refused_ends_in_the_failure_action(
    tmp_path: Path, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server.stop()
    result = capture(tmp_path, config_for(tmp_path, server, tmp_path / "dumps"), core_61().vmcore)
    assert (result.status, result.action) == (1, Action.HALT)
    assert "Connection refused" in caplog.text
    assert "kdump_capture_network_timeout" in caplog.text


def when_file_grows(path_of: Callable[[], Path | None], size: int,
                    then: Callable[[], None]) -> threading.Thread:  # fmt: skip
    """Call ``then`` (in a thread) once the file reaches ``size`` bytes."""

    def watch() -> None:
        for _ in range(60_000):
            path = path_of()
            if path is not None and path.exists() and path.stat().st_size >= size:
                then()
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def incomplete_dump(dumps: Path) -> Callable[[], Path | None]:
    def find() -> Path | None:
        found = list(dumps.glob("*/vmcore-incomplete")) if dumps.exists() else []
        return found[0] if found else None

    return find


@pytest.mark.parametrize("form", ["vmcore", "flat"])
def test_connection_cut_mid_dump_resumes(tmp_path: Path, server: Server, form: str,
                                         caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """The server's session process killed mid-dump: the target reconnects and
    sends again what the server had not acknowledged; the dump is whole."""
    core = core_61()
    dumps = tmp_path / "dumps"
    config = config_for(tmp_path, server, dumps, "-d 0", f"kdump_capture_ssh_format {form}\n")
    cut: list[int] = []
    watcher = when_file_grows(incomplete_dump(dumps), 64 << 20,
                              lambda: cut.append(server.cut_connections()))  # fmt: skip
    result = capture(tmp_path, config, core.vmcore)
    watcher.join(5)
    assert cut and cut[0] >= 1, "the connection was never cut"
    assert "reconnecting to resume" in caplog.text
    assert (result.status, result.action) == (0, Action.POWEROFF)
    directory = only_dump_dir(dumps)
    dump = directory / FEDORA_FILES[form]
    if form == "flat":
        dump = rebuilt(dump, tmp_path / "rebuilt")
    theirs = hashlib.sha256(reference(tmp_path, core, "-d", "0")).hexdigest()
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == theirs
    check_manifest_against_files(directory)


def test_server_gone_mid_dump_leaves_it_incomplete(tmp_path: Path, server: Server) -> None:
    """Cut and not coming back: the dump stays vmcore-incomplete, nothing is
    named complete, and the run ends in its action within the network wait."""
    dumps = tmp_path / "dumps"
    config = config_for(tmp_path, server, dumps, "-d 0")
    watcher = when_file_grows(incomplete_dump(dumps), 64 << 20, server.stop)
    result = capture(tmp_path, config, core_61().vmcore)
    watcher.join(5)
    assert result.status == 3 and result.action is Action.HALT  # log saved, dump not: failure
    directory = only_dump_dir(dumps)
    names = {path.name for path in directory.iterdir()}
    assert "vmcore-incomplete" in names and "vmcore" not in names
    assert (directory / "vmcore-dmesg.txt").read_bytes() == core_61().reference.joinpath(
        "vmcore-dmesg.txt"
    ).read_bytes()
    assert manifest_of(directory).get("status") != "complete"


def test_server_down_falls_back_to_a_local_disk(tmp_path: Path, server: Server) -> None:
    """kdump_capture_fallback: the server refuses, the dump lands whole on the
    local disk, and the manifest says why the server was not used."""
    from tests.agentrun import loop_filesystem, mounted

    core = core_61()
    server.stop()
    with loop_filesystem(tmp_path, "ext4", 200) as (device, label, _uuid):
        config = config_for(tmp_path, server, Path("/var/crash"),
                            extra=f"kdump_capture_fallback ext4 LABEL={label}\n")  # fmt: skip
        result = capture(tmp_path, config, core.vmcore)
        assert (result.status, result.action) == (0, Action.POWEROFF)
        with mounted(device, tmp_path) as root:
            directory = only_dump_dir(root / "var/crash")
            dump = (directory / "vmcore").read_bytes()
            assert dump == reference(tmp_path, core, "-l", "-d", "31")
            manifest = manifest_of(directory)
    attempts = manifest["attempts"]
    assert isinstance(attempts, list)
    assert [attempt["outcome"] for attempt in attempts] == ["unreachable", "dump saved"]
    assert "Connection refused" in attempts[0]["why"]
    assert manifest["status"] == "complete"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """tmpfs mounts of a given size, as the server's dump path."""
    mounted: list[Path] = []

    def make(megabytes: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755", "tmpfs",
                        str(point)], check=True)  # fmt: skip
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_server_too_small_saves_the_log_and_says_why(
    tmp_path: Path, server: Server, small_disk: Callable[[int], Path]
) -> None:
    """The remote free space (statvfs@openssh.com) is checked before the dump."""
    dumps = small_disk(4)
    result = capture(tmp_path, config_for(tmp_path, server, dumps), core_61().vmcore)
    assert (result.status, result.action) == (3, Action.HALT)
    directory = only_dump_dir(dumps)
    names = sorted(path.name for path in directory.iterdir())
    assert names == ["kexec-dmesg.log", "manifest.json", "vmcore-dmesg.txt"]
    manifest = manifest_of(directory)
    assert manifest["status"] == "incomplete"
    notes = manifest["notes"]
    assert isinstance(notes, list)
    assert any(note.startswith("step-down:") and "the log only" in note for note in notes)


def test_server_disk_fills_during_the_dump(
    tmp_path: Path, server: Server, small_disk: Callable[[int], Path],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """Space taken by something else once the dump started: the server refuses
    writes, the dump stays vmcore-incomplete, the log is whole."""
    dumps = small_disk(420)
    filler = dumps / "filler"

    def fill() -> None:
        with filler.open("wb") as file:
            chunk = bytes(1 << 20)
            try:
                while True:
                    file.write(chunk)
            except OSError:
                pass

    watcher = when_file_grows(incomplete_dump(dumps), 32 << 20, fill)
    result = capture(tmp_path, config_for(tmp_path, server, dumps, "-d 0"), core_61().vmcore)
    watcher.join(5)
    filler.unlink()
    assert result.status == 3 and result.action is Action.HALT
    [directory] = [path for path in dumps.iterdir() if path.is_dir()]
    names = {path.name for path in directory.iterdir()}
    assert "vmcore-incomplete" in names and "vmcore" not in names
    assert (directory / "vmcore-dmesg.txt").stat().st_size > 0
    assert "the server refused" in caplog.text
    assert manifest_of(directory).get("status") != "complete"


def test_retention_on_the_server(tmp_path: Path, server: Server) -> None:
    """kdump_capture_keep_dumps: old dump directories listed and removed over SFTP."""
    dumps = tmp_path / "dumps"
    for age, name in enumerate(["127.0.0.1-2020-01-01-00:00:00", "127.0.0.1-2021-01-01-00:00:00"]):
        old = dumps / name
        old.mkdir(parents=True)
        (old / "vmcore-dmesg.txt").write_text("old\n")
        os.utime(old, (1_600_000_000 + age, 1_600_000_000 + age))
    (dumps / "not-a-dump").mkdir()
    config = config_for(tmp_path, server, dumps, extra="kdump_capture_keep_dumps 2\n")
    result = capture(tmp_path, config, core_61().vmcore)
    assert result.status == 0
    kept = sorted(path.name for path in dumps.iterdir())
    assert "127.0.0.1-2020-01-01-00:00:00" not in kept
    assert "127.0.0.1-2021-01-01-00:00:00" in kept and "not-a-dump" in kept
    assert len(kept) == 3


def test_scp_collector_copies_the_whole_vmcore(tmp_path: Path, server: Server) -> None:
    """core_collector scp: every page, unfiltered, named vmcore when whole; its
    log and its memory are the source's."""
    core = core_61()
    dumps = tmp_path / "dumps"
    config = config_for(tmp_path, server, dumps)
    config.write_text(config.read_text().replace("core_collector makedumpfile -l -d 31",
                                                 "core_collector scp"))  # fmt: skip
    result = capture(tmp_path, config, core.vmcore)
    assert (result.status, result.action) == (0, Action.POWEROFF)
    directory = only_dump_dir(dumps)
    assert sorted(path.name for path in directory.iterdir()) == [
        "kexec-dmesg.log", "manifest.json", "vmcore", "vmcore-dmesg.txt"]  # fmt: skip
    copy = directory / "vmcore"
    assert copy.read_bytes()[:4] == b"\x7fELF"
    log = tmp_path / "dmesg.txt"
    subprocess.run(["makedumpfile", "--dump-dmesg", str(copy), str(log)], check=True,
                   capture_output=True)  # fmt: skip
    assert log.read_bytes() == (directory / "vmcore-dmesg.txt").read_bytes()
    # Every page of the source is in the copy: makedumpfile -d 0 of each is the same.
    ours, theirs = tmp_path / "ours.kdump", tmp_path / "theirs.kdump"
    for source, out in ((copy, ours), (core.vmcore, theirs)):
        subprocess.run(["makedumpfile", "-d", "0", str(source), str(out)], check=True,
                       capture_output=True)  # fmt: skip
    assert page_data(ours) == page_data(theirs)
    check_manifest_against_files(directory)


def page_data(kdump: Path) -> str:
    """The hash of a kdump file past its headers (the pages and bitmaps)."""
    data = kdump.read_bytes()
    return hashlib.sha256(data[8192:]).hexdigest()


def test_resolution_as_openssh(tmp_path: Path) -> None:
    """Host blocks, first value wins, the user's file before the system's;
    kdump.conf's user@ and sshkey first."""
    from capture.agent.targets.ssh import resolve

    key, other = tmp_path / "kdump_key", tmp_path / "other_key"
    key.write_text("k")
    other.write_text("k")
    user = tmp_path / "user_config"
    user.write_text(f"Host dumps\n  HostName 192.0.2.7\n  User nobody\n  IdentityFile {other}\n"
                    f"  UserKnownHostsFile {tmp_path / 'kh'}\n"
                    "Host *\n  Port 2222\n")  # fmt: skip
    system = tmp_path / "system_config"
    system.write_text("Host *\n  Port 22\n  HostName wrong.example\n  ConnectTimeout 7\n")
    endpoint = resolve(SshTarget("root", "dumps"), str(key), "/etc/kdump/known_hosts",
                       (str(user), str(system)))  # fmt: skip
    assert (endpoint.hostname, endpoint.port, endpoint.user) == ("192.0.2.7", 2222, "root")
    assert endpoint.identities == (str(key), str(other))
    assert endpoint.known_hosts[0] == str(tmp_path / "kh")
    assert endpoint.known_hosts[-1] == "/etc/kdump/known_hosts"
    assert endpoint.connect_timeout == 7
    assert endpoint.host_key_name == "[192.0.2.7]:2222"


def test_a_local_run_never_imports_paramiko(tmp_path: Path) -> None:
    """paramiko (0.2 s, 40 MB) only for an ssh target: a root-filesystem
    capture never loads it."""
    (tmp_path / "sysroot").mkdir()
    config = tmp_path / "kdump.conf"
    config.write_text("path /var/crash\ncore_collector makedumpfile -l -d 31\n")
    program = f"""
import sys
from capture.agent.actions import RecordingActions
from capture.agent.config import load_config
from capture.agent.run import RunEnvironment, run_capture
env = RunEnvironment(actions=RecordingActions(out=None, newroot={str(tmp_path)!r}),
                     vmcore={str(core_61().vmcore)!r}, sysroot={str(tmp_path / "sysroot")!r},
                     kdump_dir={str(tmp_path / "kd")!r})
result = run_capture(load_config({str(config)!r}), env)
assert result.status == 0, result
print(sorted(name for name in sys.modules if name.split(".")[0] in ("paramiko", "cryptography")))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_propagate_then_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """propagate makes the key, installs it with ssh-copy-id (here over SFTP,
    accepting the new host key as a user would), records the host key in
    KDUMP_DIR/known_hosts; the capture then gets in with that file alone."""
    # A short HOME: ssh-copy-id puts a control socket under it (108 bytes at most).
    short = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))
    try:
        with sshd(short) as server:
            use_home(server, monkeypatch)
            propagate_then_capture(tmp_path, server, capsys)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def propagate_then_capture(tmp_path: Path, server: Server,
                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    ssh_dir = server.home / ".ssh"
    (ssh_dir / "known_hosts").write_text("")
    ssh_config = ssh_dir / "config"
    ssh_config.write_text(ssh_config.read_text() + "    StrictHostKeyChecking accept-new\n"
                          f"    UserKnownHostsFile {ssh_dir / 'known_hosts'}\n")  # fmt: skip
    new_key = ssh_dir / "kdump_id_new"
    dumps = tmp_path / "dumps"
    config = config_for(tmp_path, server, dumps)
    config.write_text(config.read_text().replace(f"sshkey {server.key}", f"sshkey {new_key}"))
    kdump_dir = tmp_path / "kdump.d"
    status = main(["propagate", "--config", str(config), "--kdump-dir", str(kdump_dir),
                   "--ssh-config", str(ssh_config), "--sftp"])  # fmt: skip
    output = capsys.readouterr()
    assert status == 0, output
    assert f"made {new_key}" in output.out
    assert Path(f"{new_key}.pub").read_text().startswith("ssh-ed25519 ")
    installed = (server.root / "home" / ".ssh" / "authorized_keys").read_text()
    assert Path(f"{new_key}.pub").read_text().split()[1] in installed
    recorded = (kdump_dir / "known_hosts").read_text()
    assert server.host_key_line.split()[2] in recorded
    # The capture: the user's known_hosts and key gone, so only the new key
    # and the recorded host key can let it in.
    (ssh_dir / "known_hosts").unlink()
    ssh_config.write_text(f"Host {ALIAS}\n    HostName 127.0.0.1\n    Port {server.port}\n")
    server.key.unlink()
    result = capture(tmp_path, config, core_61().vmcore)
    assert (result.status, result.action) == (0, Action.POWEROFF)
    assert (only_dump_dir(dumps) / "vmcore").exists()
