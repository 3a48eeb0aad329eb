"""A real OpenSSH server on loopback for the ssh target's tests.

Each server has its own host key, an authorized client key for root, and a
port chosen free; the client side is a HOME of its own whose ``.ssh/config``
names the server in a Host block (``dumps``), so ``ssh root@dumps`` resolves
through it as it would on a user's machine, and the real ``~/.ssh`` is never
touched. ``sftp_only`` makes the server offer nothing but SFTP
(``ForceCommand internal-sftp``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
ALIAS = "dumps"


@dataclass
class Server:
    """A running sshd and the client HOME that reaches it."""

    port: int
    home: Path
    """The client's HOME: .ssh/config (Host dumps), the key, known_hosts."""
    key: Path
    """The client's private key (what kdump.conf's sshkey names)."""
    host_key_line: str
    """The server's key as a known_hosts line."""
    process: subprocess.Popen[bytes]
    root: Path

    def sessions(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid:
                    children.append(int(entry.name))
        return children

    def cut_connections(self) -> int:
        """Kill every connection's sshd process: the client sees the TCP
        connection die mid-transfer. Returns how many were killed."""
        killed = 0
        for pid in self.sessions():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        return killed

    def stop(self) -> None:
        """Stop listening (new connections refused); live sessions go too.

        The sessions are found first (they are the listener's children) but
        killed only once it is gone: killed before, a client's immediate
        reconnect could reach the listener in between, and its new session
        outlived the stop."""
        if self.process.poll() is None:
            sessions = self.sessions()
            self.process.send_signal(signal.SIGSTOP)  # accepts nothing more from now on
            for pid in sessions + self.sessions():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait(10)

    def trust(self) -> None:
        """Record the server's key in the client's known_hosts."""
        (self.home / ".ssh" / "known_hosts").write_text(self.host_key_line + "\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _keygen(path: Path, kind: str = "ed25519") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "kdump-test", "-f", str(path)],
                   check=True, capture_output=True)  # fmt: skip
    return (path.with_suffix(".pub") if path.suffix else Path(f"{path}.pub")).read_text().strip()


@contextlib.contextmanager
def sshd(tmp: Path, sftp_only: bool = False, trusted: bool = True, port: int | None = None,
         host_key_type: str = "ed25519",
         client_key_type: str = "ed25519") -> Iterator[Server]:  # fmt: skip
    """An sshd on 127.0.0.1 for as long as the block runs (``*_key_type``:
    ssh-keygen's ``-t`` for its host key and the client's key)."""
    root = tmp / "sshd"
    root.mkdir(parents=True, exist_ok=True)
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    key = home / ".ssh" / f"kdump_id_{client_key_type}"
    if not key.exists():
        (root / "authorized_keys").write_text(_keygen(key, client_key_type) + "\n")
    host_key = root / f"ssh_host_{host_key_type}_key"
    if not host_key.exists():
        _keygen(host_key, host_key_type)
    port = port or free_port()
    server_home = root / "home"
    (server_home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    host_public = Path(f"{host_key}.pub").read_text().split()
    line = f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}"
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        # The second file is where ssh-copy-id -s puts keys: SFTP starts in
        # the test's home, never root's real one.
        f"AuthorizedKeysFile {root / 'authorized_keys'} {server_home / '.ssh/authorized_keys'}",
        f"PidFile {root / 'sshd.pid'}",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        f"Subsystem sftp internal-sftp -d {server_home}", "LogLevel VERBOSE",
        *(["ForceCommand internal-sftp", "DisableForwarding yes"] if sftp_only else []),
        "",
    ]))  # fmt: skip
    (home / ".ssh" / "config").write_text(
        f"Host {ALIAS}\n    HostName 127.0.0.1\n    Port {port}\n    IdentityFile {key}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    log = (root / "sshd.log").open("ab")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    server = Server(port, home, key, line, process, root)
    try:
        _wait_listening(port, process, root / "sshd.log")
        if trusted:
            server.trust()
        yield server
    finally:
        server.stop()
        log.close()


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd does not listen on {port}: {log.read_text()}")
