"""``kdump-capture propagate``: make the ssh target reachable from the capture kernel.

As ``kdumpctl propagate``, on the first kernel, interactively: the key
``sshkey`` names is made if there is none, and installed on the server with
the user's own OpenSSH (``ssh-copy-id``, which asks for a password or uses
the user's keys, and on first contact asks the user to accept the server's
host key). Then what the capture kernel needs that Fedora leaves to chance:
the server's host key, as the user's ssh now knows it, is recorded in
``<kdump dir>/known_hosts`` (``/etc/kdump/known_hosts``), the file the
capture image carries and the ssh target reads. Last, the capture side's own
client (paramiko, keys only, that known_hosts only) connects once, so a key
or host key that would fail in the crash kernel fails here instead.

The key type follows the file name: ``..._rsa`` (Fedora's default
``kdump_id_rsa``) an RSA key of 4096 bits, ``..._ecdsa`` ECDSA, anything
else ed25519.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from capture.agent.config import Config, SshTarget
from capture.errors import CaptureError

__all__ = ("KNOWN_HOSTS", "PropagateError", "Resolved", "add_arguments", "key_type", "propagate")

log = logging.getLogger("capture")

KNOWN_HOSTS = "known_hosts"
"""The file, in the kdump directory, that holds the servers' host keys."""


class PropagateError(CaptureError):
    """A step of propagate failed; the message says which and what to do."""


class Resolved(NamedTuple):
    """What OpenSSH's ``ssh -G`` makes of the target."""

    hostname: str
    port: int
    known_hosts: tuple[str, ...]

    @property
    def host_key_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def key_type(path: str) -> list[str]:
    """ssh-keygen's ``-t`` (and ``-b``) for a key file of this name."""
    name = os.path.basename(path)
    if name.endswith("_rsa") or name == "id_rsa":
        return ["-t", "rsa", "-b", "4096"]
    if name.endswith("_ecdsa"):
        return ["-t", "ecdsa"]
    return ["-t", "ed25519"]


def propagate(
    config: Config, kdump_dir: str, ssh_config: str | None = None, sftp: bool = False
) -> str:
    """Make the key, install it, record the host key, check it all.

    :returns: a line for the user saying what was done.
    :raises PropagateError: when a step fails.
    """
    target = config.target.value if config.target else None
    if not isinstance(target, SshTarget):
        raise PropagateError(f"{config.file}: the dump target is not 'ssh user@host'; "
                             "propagate is only for an ssh target")  # fmt: skip
    key = config.sshkey.value
    made = _make_key(key)
    options = ["-F", ssh_config] if ssh_config else []
    resolved = _resolve(target, options)
    try:  # with this key alone: ssh-copy-id's own check also tries the user's other keys
        _capture_client(config, target, ssh_config, resolved.known_hosts)
        log.info("%s is already installed on %s@%s", key, target.user, target.host)
    except PropagateError:
        _install_key(target, key, [*options, "-s"] if sftp else options)
    recorded = os.path.join(kdump_dir, KNOWN_HOSTS)
    _record_host_key(resolved, recorded)
    free = _capture_client(config, target, ssh_config, (recorded,))
    space = f"; {free / 1e9:.1f} GB free under {config.path.value}" if free is not None else ""
    return (f"{'made' if made else 'kept'} {key}, installed it on {target.user}@{target.host}, "
            f"recorded {resolved.host_key_name}'s host key in {recorded}; the capture kernel's "
            f"ssh client got in{space}")  # fmt: skip


def _make_key(path: str) -> bool:
    if os.path.exists(path):
        return False
    Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    comment = f"kdump-capture@{socket.gethostname()}"
    _run(["ssh-keygen", "-q", *key_type(path), "-N", "", "-C", comment, "-f", path],
         f"making the key {path}")  # fmt: skip
    log.info("made %s (%s)", path, " ".join(key_type(path)[1:]))
    return True


def _install_key(target: SshTarget, key: str, options: Sequence[str]) -> None:
    """ssh-copy-id, interactive: the user's own ssh and authentication.
    Forced (-f): its own check lets ssh try the user's other keys too, and so
    takes a key the server does not have for one it has."""
    argv = ["ssh-copy-id", "-f", *options, "-i", f"{key}.pub", f"{target.user}@{target.host}"]
    log.info("installing %s.pub: %s", key, " ".join(argv))
    if subprocess.run(argv, check=False).returncode != 0:
        raise PropagateError(f"ssh-copy-id could not install {key}.pub on "
                             f"{target.user}@{target.host} (its message is above); check that "
                             f"'ssh {target.user}@{target.host}' works, then run propagate "
                             "again")  # fmt: skip


def _resolve(target: SshTarget, options: Sequence[str]) -> Resolved:
    out = _run(["ssh", "-G", *options, f"{target.user}@{target.host}"], "ssh -G")
    values: dict[str, list[str]] = {}
    for line in out.splitlines():
        word, _, rest = line.partition(" ")
        values.setdefault(word, []).append(rest)
    files = (*values.get("userknownhostsfile", [""])[0].split(),
             *values.get("globalknownhostsfile", [""])[0].split())  # fmt: skip
    return Resolved(values["hostname"][0], int(values["port"][0]),
                    tuple(os.path.expanduser(name) for name in files))  # fmt: skip


def _record_host_key(resolved: Resolved, recorded: str) -> None:
    """The server's key lines from ssh's own known_hosts files into ``recorded``,
    replacing what it held for that server."""
    lines = []
    for path in resolved.known_hosts:
        if os.path.isfile(path):
            found = subprocess.run(["ssh-keygen", "-F", resolved.host_key_name, "-f", path],
                                   capture_output=True, text=True, check=False)  # fmt: skip
            lines += [line for line in found.stdout.splitlines() if line and line[0] != "#"]
    if not lines:
        raise PropagateError(f"{resolved.host_key_name}'s host key is in none of "
                             f"{', '.join(resolved.known_hosts)} after ssh-copy-id; connect "
                             "once with ssh and accept it, then run propagate again")  # fmt: skip
    Path(recorded).parent.mkdir(parents=True, exist_ok=True)
    if os.path.exists(recorded):
        subprocess.run(["ssh-keygen", "-R", resolved.host_key_name, "-f", recorded],
                       capture_output=True, check=False)  # fmt: skip
        Path(f"{recorded}.old").unlink(missing_ok=True)
    with open(recorded, "a") as file:
        file.write("".join(f"{line}\n" for line in dict.fromkeys(lines)))
    os.chmod(recorded, 0o644)


def _capture_client(config: Config, target: SshTarget, ssh_config: str | None,
                    known_hosts: tuple[str, ...]) -> int | None:  # fmt: skip
    """The ssh target's own client, with the sshkey alone and these
    known_hosts files only: the free space under ``path``.

    :raises PropagateError: when it cannot get in.
    """
    import time

    from capture.agent.targets import TargetError
    from capture.agent.targets.ssh import SYSTEM_CONFIG, USER_CONFIG, connect, free_bytes, resolve

    files = (ssh_config,) if ssh_config else (USER_CONFIG, SYSTEM_CONFIG)
    endpoint = resolve(target, config.sshkey.value, None, files)
    endpoint = endpoint._replace(identities=(config.sshkey.value,), known_hosts=known_hosts)

    def wait(seconds: float) -> bool:
        time.sleep(seconds)
        return True

    try:
        client = connect(endpoint, 10, wait)
    except TargetError as error:
        raise PropagateError(f"the capture kernel's client cannot get in: {error}") from None
    try:
        return free_bytes(client, config.path.value)
    finally:
        client.close()
        client.get_channel().get_transport().close()


def _run(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as error:
        why = f"{what}: {argv[0]}: {error.strerror}; install openssh-client"
        raise PropagateError(why) from None
    if done.returncode != 0:
        raise PropagateError(f"{what} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``kdump-capture propagate``'s arguments."""
    parser.description = (
        "For an 'ssh user@host' target, as kdumpctl propagate: make the sshkey if there is "
        "none, install it on the server with ssh-copy-id (interactive), record the server's "
        "host key in KDUMP_DIR/known_hosts for the capture kernel, and check that the "
        "capture kernel's own client gets in."
    )
    parser.add_argument("--config", metavar="FILE", default="/etc/kdump.conf",
                        help="its kdump.conf (default: /etc/kdump.conf)")  # fmt: skip
    parser.add_argument("--kdump-dir", metavar="DIR", default="/etc/kdump",
                        help="where known_hosts is recorded (default: /etc/kdump)")  # fmt: skip
    parser.add_argument("--ssh-config", metavar="FILE", default=None,
                        help="an ssh_config for ssh, ssh-copy-id and the check "
                        "(default: ~/.ssh/config and /etc/ssh/ssh_config)")  # fmt: skip
    parser.add_argument("--sftp", action="store_true",
                        help="install the key over SFTP (ssh-copy-id -s): for a server "
                        "with no shell")  # fmt: skip
    parser.set_defaults(command=_command)


def _command(args: argparse.Namespace) -> int:
    from capture.agent.config import load_config

    print(propagate(load_config(args.config), args.kdump_dir, args.ssh_config, args.sftp))
    return 0
