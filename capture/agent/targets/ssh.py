"""``ssh user@host``: the dump written over SFTP, reached as OpenSSH reaches it.

The server is found the way ``ssh user@host`` finds it: Host blocks of
``~/.ssh/config`` then ``/etc/ssh/ssh_config`` give HostName, Port, User
(``user@`` in kdump.conf wins, as on ssh's command line) and IdentityFile
(``sshkey`` first, as Fedora's ``ssh -i``). Only keys authenticate, never a
password; the server's key must already be in a known_hosts file (the
user's, the system's, one the config names, or the one ``kdump-capture
propagate`` recorded): an unknown or changed key ends the connection before
anything is sent.

Everything goes through SFTP, so a server that offers nothing else
(``ForceCommand internal-sftp``) works: mkdir, the statvfs@openssh.com
extension for free space, listings for retention, posix-rename@openssh.com
to publish, fsync@openssh.com to make a file durable. Files are created 0600
and directories 0700, whatever the server's umask.

Two ways to write the dump (``kdump_capture_ssh_format``):

* ``vmcore`` (the default): the regular random-access format written
  directly, each positional write an SFTP write at its offset, so no
  ``makedumpfile -R`` is needed afterwards;
* ``flat``: Fedora's, the flattened stream into ``vmcore-incomplete``,
  renamed ``vmcore.flat``.

Writes are pipelined (a window of requests in flight, acknowledgements read
as they come), and each unacknowledged write is kept until the server
acknowledges it: when the connection drops, the target reconnects (within
``kdump_capture_network_timeout``) and sends again exactly what was not
acknowledged, so the dump resumes where the server's file ends instead of
starting over.

paramiko is imported here only (its client modules, without its package's
``__init__``: paramiko_client.py), and this module only when an ssh target
is configured: no local dump should pay for it.
paramiko's SFTP client is used below its file objects (``_async_request``,
``_read_response``) because those give no way to know which writes the server
acknowledged; those two have kept their shape since paramiko 1.x.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import socket
import stat
import struct
from collections import OrderedDict, deque
from typing import Any, NamedTuple

from capture.agent.config import SshTarget
from capture.agent.targets import DumpEntry, TargetError, Waiting, sha256_of
from capture.agent.targets.paramiko_client import (
    AuthenticationException,
    ConfigParseError,
    HostKeys,
    Message,
    PKey,
    SFTPAttributes,
    SFTPClient,
    SSHConfig,
    SSHException,
    Transport,
    protocol,
)
from capture.agent.targets.retry import with_backoff
from capture.dumpfile.sink import FlattenedSink, NoSpaceError

__all__ = (
    "ConnectionLost",
    "Endpoint",
    "SftpTarget",
    "connect",
    "free_bytes",
    "known_hosts_files",
    "resolve",
)

log = logging.getLogger("capture")

USER_CONFIG = "~/.ssh/config"
SYSTEM_CONFIG = "/etc/ssh/ssh_config"
SYSTEM_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")

_REQUEST_BYTES = 64 << 10
"""Data per SFTP write: OpenSSH's sftp-server takes up to 256 KiB messages;
fewer, larger requests cost less Python per byte."""
_WINDOW = 16
"""Writes in flight at most (1 MiB), each kept until acknowledged: heap
the crash kernel holds for the whole dump (64, 4 MiB, was more than an
ssh capture at crashkernel=144M could spare). A LAN's round trip needs far
less; answers are taken as they arrive, so fewer are kept while the
server keeps up."""
_READ_BYTES = 1 << 20
_READ_WINDOW = 16
"""Reads in flight when a file is read back (1 MiB)."""
_HANDSHAKE_SECONDS = 30.0
_DUMP_NAMES = {"vmcore", "vmcore.flat", "vmcore-incomplete", "vmcore-dmesg.txt"}
_KEEPALIVE_SECONDS = 15
_ANSWER_SECONDS = 120.0
"""An answer that takes longer means a dead connection: reconnect and resume."""
_HASH_BYTES_PER_SECOND = 50e6
"""The slowest sha256sum on a server we wait for (a loaded one, a slow disk)."""
_SHA256SUM_LINE = re.compile(rb"([0-9a-f]{64}) [ *](.*)\n")
"""sha256sum's line for one file: the digest, a space, the mode mark, the name."""
_SIGNATURES = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}
_DROPPED = (OSError, EOFError, SSHException)
"""What a lost connection raises from paramiko (a socket error, EOF, its own)."""
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


class ConnectionLost(NoSpaceError):
    """The connection dropped and could not be made again: the dump ends here,
    as it would on a full disk (what was written is kept, named incomplete)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0)


# Where the server is, as OpenSSH resolves it ---------------------------------


class Endpoint(NamedTuple):
    """The server as ``ssh`` would reach it."""

    alias: str
    """The host as kdump.conf writes it."""
    hostname: str
    port: int
    user: str
    identities: tuple[str, ...]
    """Private key files, in the order they are tried."""
    known_hosts: tuple[str, ...]
    connect_timeout: float | None

    @property
    def host_key_name(self) -> str:
        """The name known_hosts files use: ``host``, or ``[host]:port``."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def resolve(target: SshTarget, sshkey: str, recorded_known_hosts: str | None,
            config_files: tuple[str, ...] = (USER_CONFIG, SYSTEM_CONFIG)) -> Endpoint:  # fmt: skip
    """``target`` as OpenSSH resolves it: the first value of each option wins,
    the user's config before the system's, kdump.conf's user and key first."""
    options = _ssh_options(target.host, config_files)
    hostname = options.get("hostname", target.host)
    try:
        port = int(options.get("port", 22))
    except ValueError:
        why = f"ssh config: Port '{options['port']}' for {target.host} is not a number"
        raise TargetError(why) from None
    identities = [sshkey, *options.get("identityfile", [])]
    if len(identities) == 1:
        identities.extend(DEFAULT_IDENTITIES)  # ssh's own defaults, when the config names none
    paths = (_expanded(path) for path in identities)
    found = tuple(dict.fromkeys(path for path in paths if os.path.isfile(path)))
    timeout = options.get("connecttimeout")
    return Endpoint(
        alias=target.host,
        hostname=hostname,
        port=port,
        user=target.user,
        identities=found,
        known_hosts=known_hosts_files(options, recorded_known_hosts),
        connect_timeout=float(timeout) if timeout and timeout.isdigit() else None,
    )


def known_hosts_files(options: dict[str, Any], recorded: str | None) -> tuple[str, ...]:
    """Every known_hosts file ssh would read, then the one propagate recorded."""
    user = options.get("userknownhostsfile")
    system = options.get("globalknownhostsfile")
    names = [*(user.split() if isinstance(user, str) else USER_KNOWN_HOSTS),
             *(system.split() if isinstance(system, str) else SYSTEM_KNOWN_HOSTS)]  # fmt: skip
    if recorded:
        names.append(recorded)
    return tuple(dict.fromkeys(_expanded(name) for name in names if name != "/dev/null"))


def _ssh_options(host: str, files: tuple[str, ...]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in files:
        path = _expanded(name)
        if not os.path.isfile(path):
            continue
        try:
            found = SSHConfig.from_path(path).lookup(host)
        except (OSError, ConfigParseError) as error:
            raise TargetError(f"{path}: cannot be read: {error}") from None
        for key, value in found.items():
            if key == "identityfile":
                merged.setdefault(key, []).extend(value)
            else:
                merged.setdefault(key, value)
    if merged.get("hostname") == host:
        del merged["hostname"]  # paramiko fills it in when the config has none
    return merged


def _expanded(path: str) -> str:
    return os.path.expanduser(path)


# Connecting -----------------------------------------------------------------


def connect(endpoint: Endpoint, seconds: float, wait: Waiting) -> SFTPClient:
    """An SFTP session with the server, trying again (with backoff) while
    there is no route or the server refuses, for up to ``seconds``.

    :raises TargetError: when the host key is unknown or changed, no key is
        accepted, or the server could not be reached in time.
    """
    known = _known_keys(endpoint)
    if not endpoint.identities:
        raise TargetError(f"ssh {endpoint.user}@{endpoint.alias}: no private key found (sshkey, "
                          "IdentityFile, ~/.ssh/id_*); run 'kdump-capture propagate'")  # fmt: skip
    where = f"ssh {endpoint.user}@{endpoint.alias} ({endpoint.hostname} port {endpoint.port})"
    sock = with_backoff(lambda _left: _tcp_connection(endpoint), wait, seconds, where)
    try:
        return _session(endpoint, sock, known)
    except BaseException:
        sock.close()
        raise


def _tcp_connection(endpoint: Endpoint) -> socket.socket:
    """A connected socket (no route, refused, timed out: OSError)."""
    addresses = socket.getaddrinfo(endpoint.hostname, endpoint.port, type=socket.SOCK_STREAM)
    last: OSError = OSError(errno.EHOSTUNREACH, "no address")
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(endpoint.connect_timeout or _HANDSHAKE_SECONDS)
        try:
            sock.connect(address)
        except OSError as error:
            sock.close()
            last = error
            continue
        sock.settimeout(None)
        return sock
    raise last


def _session(endpoint: Endpoint, sock: socket.socket,
             known: dict[str, PKey]) -> SFTPClient:  # fmt: skip
    transport = Transport(sock)
    transport.set_keepalive(_KEEPALIVE_SECONDS)
    options = transport.get_security_options()
    # Only the kinds we can check (ssh does the same); an RSA key signs with SHA-2.
    options.key_types = (
        tuple(
            name
            for kind in known
            for name in _SIGNATURES.get(kind, (kind,))
            if name in options.key_types
        )
        or options.key_types
    )
    options.ciphers = tuple(c for c in _FAST_CIPHERS if c in options.ciphers) or options.ciphers
    try:
        transport.start_client(timeout=_HANDSHAKE_SECONDS)
        _check_host_key(endpoint, transport.get_remote_server_key(), known)
        _authenticate(endpoint, transport)
        client = SFTPClient.from_transport(transport)
        if client is not None:
            client.get_channel().settimeout(_ANSWER_SECONDS)
    except SSHException as error:
        transport.close()
        raise TargetError(f"ssh {endpoint.user}@{endpoint.alias}: {error}") from None
    except BaseException:
        transport.close()
        raise
    if client is None:
        transport.close()
        raise TargetError(f"ssh {endpoint.user}@{endpoint.alias}: the server offers no SFTP")
    return client


def _known_keys(endpoint: Endpoint) -> dict[str, PKey]:
    """The server's keys the known_hosts files hold, by kind; none: refused."""
    keys: dict[str, PKey] = {}
    for path in endpoint.known_hosts:
        if not os.path.isfile(path):
            continue
        hosts = HostKeys()
        try:
            hosts.load(path)
        except (OSError, SSHException) as error:
            log.warning("%s: cannot be read: %s", path, error)
            continue
        for kind, key in (hosts.lookup(endpoint.host_key_name) or {}).items():
            keys.setdefault(kind, key)
    if not keys:
        raise TargetError(
            f"ssh {endpoint.user}@{endpoint.alias}: the server's host key "
            f"({endpoint.host_key_name}) is in no known_hosts file "
            f"({', '.join(endpoint.known_hosts)}), so it cannot be "
            "trusted and nothing is sent; run 'kdump-capture propagate' on the first kernel"
        )
    return keys


def _check_host_key(endpoint: Endpoint, offered: PKey,
                    known: dict[str, PKey]) -> None:  # fmt: skip
    expected = known.get(offered.get_name())
    if expected is None or expected.asbytes() != offered.asbytes():
        raise TargetError(
            f"ssh {endpoint.user}@{endpoint.alias}: the server's host key "
            f"({offered.get_name()} {offered.fingerprint}) is not the one known_hosts records "
            "for it: it changed, or this is not the server. Nothing is sent; if the change is "
            f"expected, run 'ssh-keygen -R {endpoint.host_key_name}' and 'kdump-capture propagate'"
        )


def _authenticate(endpoint: Endpoint, transport: Transport) -> None:
    """Each key in turn; never a password."""
    refused = []
    for path in endpoint.identities:
        try:
            key = PKey.from_path(path)
        except (OSError, SSHException) as error:
            refused.append(f"{path} (unreadable: {error})")
            continue
        try:
            transport.auth_publickey(endpoint.user, key)
        except AuthenticationException:
            refused.append(path)
            continue
        return
    raise TargetError(f"ssh {endpoint.user}@{endpoint.alias}: the server accepted none of the "
                      f"keys {', '.join(refused)}; run 'kdump-capture propagate'")  # fmt: skip


def free_bytes(client: SFTPClient, path: str) -> int | None:
    """statvfs@openssh.com of ``path``: f_bavail * f_frsize; None if the server lacks it."""
    try:
        kind, message = client._request(protocol.CMD_EXTENDED, "statvfs@openssh.com", path)
    except _DROPPED:
        return None
    if kind != protocol.CMD_EXTENDED_REPLY:
        return None
    _bsize, frsize, _blocks, _bfree, bavail = struct.unpack(">5Q", message.get_bytes(40))
    return int(bavail * frsize)


# Writing files ----------------------------------------------------------------


class _Answers:
    """Receives the server's answers to our requests (paramiko hands each
    answer to the object the request was made for)."""

    def __init__(self) -> None:
        self.answered: dict[int, tuple[int, Message]] = {}
        """Request number -> (answer kind, message)."""

    def _async_response(self, kind: int, message: Message, number: int) -> None:
        self.answered[number] = (kind, message)


def _problem(kind: int, message: Message) -> str | None:
    """None for a write the server did, else what it said."""
    if kind != protocol.CMD_STATUS:
        return f"unexpected answer {kind}"
    code, text = message.get_int(), message.get_text()
    return None if code == protocol.SFTP_OK else (text or f"error {code}")


class _RemoteFile:
    """One file on the server written with pipelined positional writes; every
    write kept until acknowledged, so a new connection can send them again."""

    def __init__(self, session: _Session, path: str) -> None:
        self._session, self._path = session, path
        self._acks = _Answers()
        self._in_flight: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self._handle: bytes | None = session.open_for_writing(path, truncate=True)
        self._broken = False

    def write_at(self, offset: int, data: bytes) -> None:
        if self._broken:
            raise ConnectionLost(f"{self._session.where(self._path)}: the connection is lost")
        view = memoryview(data)
        for start in range(0, len(view), _REQUEST_BYTES):
            piece = bytes(view[start : start + _REQUEST_BYTES])
            self._collect_arrived()
            while len(self._in_flight) >= _WINDOW:
                self._collect()
            self._send(offset + start, piece)

    def drain(self) -> None:
        """Wait until the server acknowledged every write."""
        while self._in_flight:
            self._collect()

    def sync(self) -> None:
        self.drain()
        if self._handle is not None:
            self._session.fsync(self._handle)

    def close(self) -> None:
        """Every write acknowledged, then the handle closed; after a lost
        connection, nothing more to do (what the server has stays)."""
        if self._handle is None or self._broken:
            return
        try:
            self.drain()
        finally:
            handle, self._handle = self._handle, None
            if not self._broken:
                self._session.close_handle(handle)

    def _send(self, offset: int, piece: bytes) -> None:
        try:
            number = self._session.client._async_request(
                self._acks, protocol.CMD_WRITE, self._handle, protocol.int64(offset), piece
            )
        except _DROPPED as error:
            self._resume(error)
            self._send(offset, piece)  # resume sent what was in flight; this one is next
            return
        except BaseException:
            self._broken = True  # interrupted inside paramiko (the stall watchdog): unusable
            raise
        self._in_flight[number] = (offset, piece)

    def _collect(self) -> None:
        """Take the answers already read (a synchronous request may have read
        them), else read one; raise for a write the server refused."""
        if not self._acks.answered:
            try:
                self._session.client._read_response()
            except _DROPPED as error:
                self._resume(error)
                return
            except BaseException:
                self._broken = True
                raise
        for number, (kind, message) in list(self._acks.answered.items()):
            del self._acks.answered[number]
            offset, piece = self._in_flight.pop(number, (0, b""))
            problem = _problem(kind, message)
            if problem is not None:
                raise self._session.refused_write(self._path, offset, len(piece), problem)

    def _collect_arrived(self) -> None:
        """The answers the server has sent already, without waiting for
        more: the writes they acknowledge are let go at once."""
        channel = self._session.client.sock
        while self._in_flight and channel.recv_ready():
            self._collect()

    def _resume(self, error: BaseException) -> None:
        """A new connection, the file opened again (not truncated), and every
        unacknowledged write sent again, in order."""
        log.warning("ssh: the connection dropped (%s); reconnecting to resume %s",
                    error or type(error).__name__, self._path)  # fmt: skip
        try:
            self._session.reconnect()
        except ConnectionLost:
            self._broken = True
            raise
        self._handle = self._session.open_for_writing(self._path, truncate=False)
        pending = list(self._in_flight.values())
        self._in_flight.clear()
        self._acks.answered.clear()
        for offset, piece in pending:
            self._send(offset, piece)
        log.info("ssh: resumed %s (%d writes sent again)", self._path, len(pending))


class _RemoteReader:
    """A file on the server read in order with a bounded window of reads in
    flight (paramiko's prefetch asks for the whole file at once and keeps
    what arrives: a dump's size of memory)."""

    def __init__(self, client: SFTPClient, path: str) -> None:
        self._client, self._path = client, path
        self._answers = _Answers()
        self._size = client.stat(path).st_size or 0
        _, message = client._request(protocol.CMD_OPEN, path, protocol.SFTP_FLAG_READ,
                                     SFTPAttributes())  # fmt: skip
        self._handle: bytes | None = message.get_binary()
        self._asked = 0
        self._queue: deque[tuple[int, int, int]] = deque()
        """(request number, offset, length) in file order."""

    def read(self, size: int) -> bytes:
        """The next bytes (at most a request's), b"" at the end."""
        while len(self._queue) < _READ_WINDOW and self._asked < self._size:
            length = min(_REQUEST_BYTES, self._size - self._asked)
            self._ask(self._asked, length)
            self._asked += length
        if not self._queue:
            self._close()
            return b""
        number, offset, length = self._queue.popleft()
        while number not in self._answers.answered:
            self._client._read_response()
        kind, message = self._answers.answered.pop(number)
        if kind != protocol.CMD_DATA:
            raise TargetError(f"{self._path}: reading it back failed: {_problem(kind, message)}")
        data: bytes = message.get_string()
        if 0 < len(data) < length:  # a short read: ask for the rest next
            self._queue.appendleft(self._ask_now(offset + len(data), length - len(data)))
        return data

    def _ask(self, offset: int, length: int) -> None:
        self._queue.append(self._ask_now(offset, length))

    def _ask_now(self, offset: int, length: int) -> tuple[int, int, int]:
        number = self._client._async_request(self._answers, protocol.CMD_READ, self._handle,
                                             protocol.int64(offset), length)  # fmt: skip
        return number, offset, length

    def _close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            self._client._request(protocol.CMD_CLOSE, handle)


class SftpDumpFile:
    """The dump as the regular random-access format: writes at their offsets."""

    seekable = True

    def __init__(self, remote: _RemoteFile) -> None:
        self._remote = remote

    def write_at(self, offset: int, data: bytes) -> None:
        if data:
            self._remote.write_at(offset, data)

    def reserve(self, offset: int, length: int) -> None:
        """Zeros written now (SFTP cannot allocate), so the metadata written
        there at the end cannot meet a full disk."""
        for start in range(offset, offset + length, _READ_BYTES):
            self._remote.write_at(start, bytes(min(_READ_BYTES, offset + length - start)))

    def copy_from(self, fd: int, source_offset: int, length: int, offset: int) -> bool:
        return False

    def sync(self) -> None:
        self._remote.sync()

    def close(self) -> None:
        self._remote.close()


class _Stream:
    """A remote file written in order: what :class:`FlattenedSink` writes to."""

    def __init__(self, remote: _RemoteFile) -> None:
        self._remote, self._end = remote, 0

    def write(self, data: bytes) -> int:
        self._remote.write_at(self._end, data)
        self._end += len(data)
        return len(data)

    def flush(self) -> None:
        self._remote.drain()


class FlatDumpFile(FlattenedSink):
    """The dump as Fedora's flattened stream, for ``vmcore.flat``."""

    def __init__(self, remote: _RemoteFile) -> None:
        self._remote = remote
        super().__init__(_Stream(remote))  # type: ignore[arg-type]

    def sync(self) -> None:
        self._remote.sync()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._remote.close()


# The session: one connection, made again when it drops -------------------------


class _Session:
    """The SFTP connection and the few requests paramiko has no method for."""

    def __init__(self, endpoint: Endpoint, network_seconds: float, wait: Waiting) -> None:
        self._endpoint, self._seconds, self._wait = endpoint, network_seconds, wait
        self.client = connect(endpoint, network_seconds, wait)
        self.source_ip = self._source_ip()

    def reconnect(self) -> None:
        """:raises ConnectionLost: when the server cannot be reached again."""
        self.close()
        try:
            self.client = connect(self._endpoint, self._seconds, self._wait)
        except TargetError as error:
            why = f"the connection dropped and could not be made again: {error}"
            raise ConnectionLost(why) from None

    def open_for_writing(self, path: str, truncate: bool) -> bytes:
        flags = protocol.SFTP_FLAG_WRITE | protocol.SFTP_FLAG_CREATE
        if truncate:
            flags |= protocol.SFTP_FLAG_TRUNC
        attributes = SFTPAttributes()
        attributes.st_mode = 0o600  # at creation: never a moment readable by others
        try:
            kind, message = self.client._request(protocol.CMD_OPEN, path, flags, attributes)
        except _DROPPED as error:
            raise TargetError(f"{self.where(path)}: cannot create it: {error}") from None
        if kind != protocol.CMD_HANDLE:
            raise TargetError(f"{self.where(path)}: the server answered open with {kind}")
        handle: bytes = message.get_binary()
        return handle

    def fsync(self, handle: bytes) -> None:
        """fsync@openssh.com when the server has it; else its ack is all there is."""
        try:
            self.client._request(protocol.CMD_EXTENDED, "fsync@openssh.com", handle)
        except OSError as error:
            log.debug("fsync@openssh.com: %s", error)

    def close_handle(self, handle: bytes) -> None:
        try:
            self.client._request(protocol.CMD_CLOSE, handle)
        except _DROPPED as error:
            raise NoSpaceError(f"closing a file on the server failed: {error}", 0) from None

    def refused_write(self, path: str, offset: int, size: int, problem: str) -> NoSpaceError:
        """What a refused write means: the server's disk, most often."""
        free = self.free_bytes(os.path.dirname(path))
        full = " (the server's disk is full)" if free is not None and free < size + 65536 else ""
        return NoSpaceError(f"{self.where(path)}: the server refused {size} bytes at "
                            f"{offset}: {problem}{full}", 0)  # fmt: skip

    def free_bytes(self, path: str) -> int | None:
        return free_bytes(self.client, path)

    def server_sha256(self, path: str, seconds: float) -> str | None:
        """``sha256sum`` of ``path`` run on the server; None where there is no
        shell or command (ForceCommand internal-sftp answers the command with
        an SFTP server, which ends when its input does), or it fails."""
        command = f"sha256sum -b -- {shlex.quote(path)}"
        try:
            channel = self.client.get_channel().get_transport().open_session(timeout=30)
            with channel:
                channel.settimeout(seconds)
                channel.exec_command(command)
                channel.shutdown_write()
                output = b""
                while len(output) <= 4096 and (chunk := channel.recv(4096)):
                    output += chunk
                status = channel.recv_exit_status()
        except _DROPPED as error:  # socket.timeout too: an OSError
            log.info("%s: no sha256sum on the server (%s): reading it back", path, error)
            return None
        line = _SHA256SUM_LINE.fullmatch(output)
        if status != 0 or line is None or line[2] != path.encode():
            log.info("%s: no sha256sum on the server (exit %d): reading it back", path, status)
            return None
        return line[1].decode()

    def where(self, path: str) -> str:
        return f"{self._endpoint.user}@{self._endpoint.alias}:{path}"

    def close(self) -> None:
        try:
            self.client.get_channel().get_transport().close()
        except Exception as error:  # a dead connection may fail to close: it is gone either way
            log.debug("ssh: closing: %s", error)

    def _source_ip(self) -> str:
        """This side's address on the connection: the source of the route."""
        transport = self.client.get_channel().get_transport()
        address: str = transport.sock.getsockname()[0]
        return address.removeprefix("::ffff:")


class SftpDumpDir:
    """``<path>/<ip>-<date>/`` on the server."""

    def __init__(self, session: _Session, path: str, flattened: bool) -> None:
        self._session, self._path, self._flattened = session, path, flattened
        self.where = session.where(path)

    def create(self, name: str) -> SftpDumpFile | FlatDumpFile:
        remote = _RemoteFile(self._session, self._join(name))
        return FlatDumpFile(remote) if self._flattened else SftpDumpFile(remote)

    def write_file(self, name: str, data: bytes, durable: bool = True) -> None:
        """Written beside, then renamed over ``name``: a write the server's
        full disk cuts short leaves the earlier file (the manifest) whole."""
        partial = f".{name}.partial"
        remote = _RemoteFile(self._session, self._join(partial))
        try:
            remote.write_at(0, data)
            if durable:
                remote.sync()
        except BaseException:
            remote.close()
            self._remove_quietly(partial)
            raise
        remote.close()
        self.publish(partial, name)

    def _remove_quietly(self, name: str) -> None:
        try:
            self._session.client.remove(self._join(name))
        except _DROPPED as error:
            log.debug("%s: %s", self._join(name), error)

    def publish(self, temporary: str, final: str) -> None:
        old, new = self._join(temporary), self._join(final)
        try:
            self._session.client.posix_rename(old, new)
        except OSError:  # a server without posix-rename: the plain one (no overwrite)
            try:
                self._session.client.rename(old, new)
            except OSError as error:
                raise TargetError(f"{self.where}: cannot rename {temporary} to {final}: "
                                  f"{error}") from None  # fmt: skip

    def sha256(self, name: str) -> tuple[int, str] | None:
        """The server's own sha256sum where it has a shell: reading a dump
        back over the network took as long as writing it. Else (an sftp-only
        server, no sha256sum) it is read back."""
        path = self._join(name)
        try:
            size = self._session.client.stat(path).st_size or 0
            digest = self._session.server_sha256(path, 60 + size / _HASH_BYTES_PER_SECOND)
            if digest is not None:
                log.info("%s: sha256 by the server's sha256sum", name)
                return size, digest
            return sha256_of(_RemoteReader(self._session.client, path).read)
        except (*_DROPPED, TargetError) as error:
            log.warning("%s/%s cannot be read back: %s", self.where, name, error)
            return None

    def _join(self, name: str) -> str:
        return f"{self._path}/{name}"


class SftpTarget:
    """An SSH server, written through SFTP."""

    kind = "ssh"
    keeps_files = True

    def __init__(self, target: SshTarget, path: str, sshkey: str, *, flattened: bool,
                 network_seconds: float, known_hosts: str | None = None) -> None:  # fmt: skip
        self._target, self._path = target, path.rstrip("/") or "/"
        self._sshkey, self._known_hosts = sshkey, known_hosts
        self._flattened, self._seconds = flattened, network_seconds
        self.seekable = not flattened
        self.where = f"{target} at {path}"
        self._session: _Session | None = None

    def open(self, wait: Waiting) -> None:
        endpoint = resolve(self._target, self._sshkey, self._known_hosts)
        log.info("ssh: %s@%s is %s port %d", endpoint.user, endpoint.alias, endpoint.hostname,
                 endpoint.port)  # fmt: skip
        self._session = _Session(endpoint, self._seconds, wait)
        self._make_directories(self._path)

    @property
    def address(self) -> str:
        """This machine's address toward the server: the dump directory's ``<ip>``."""
        return self._open().source_ip

    def make_dump_dir(self, name: str) -> SftpDumpDir:
        """A new directory ``name`` (the run names it for :attr:`address`, as
        Fedora does); ``-2``, ``-3`` if that name exists."""
        session = self._open()
        base = f"{self._path}/{name}"
        for suffix in range(1, 1000):
            candidate = base if suffix == 1 else f"{base}-{suffix}"
            if self._stat(candidate) is not None:
                continue
            self._mkdir(candidate)
            return SftpDumpDir(session, candidate, self._flattened)
        raise TargetError(f"{session.where(base)}: 999 dump directories of this name exist")

    def free_bytes(self) -> int | None:
        return self._open().free_bytes(self._path)

    def dumps(self) -> list[DumpEntry]:
        client = self._open().client
        try:
            entries = client.listdir_attr(self._path)
        except OSError:
            return []
        found = []
        for entry in entries:
            directory = entry.st_mode is not None and stat.S_ISDIR(entry.st_mode)
            if directory and self._looks_like_dump(f"{self._path}/{entry.filename}"):
                found.append(DumpEntry(entry.filename, float(entry.st_mtime or 0)))
        return sorted(found, key=lambda entry: (entry.mtime, entry.name))

    def remove_dump(self, name: str) -> None:
        client = self._open().client
        directory = f"{self._path}/{name}"
        for entry in client.listdir_attr(directory):
            client.remove(f"{directory}/{entry.filename}")
        client.rmdir(directory)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _open(self) -> _Session:
        if self._session is None:
            raise TargetError(f"{self.where}: the target is not open")
        return self._session

    def _looks_like_dump(self, path: str) -> bool:
        try:
            return bool(set(self._open().client.listdir(path)) & _DUMP_NAMES)
        except OSError:
            return False

    def _make_directories(self, path: str) -> None:
        """``mkdir -p``, each new directory 0700."""
        parts = [part for part in path.split("/") if part]
        current = "" if path.startswith("/") else "."
        for part in parts:
            current = f"{current}/{part}"
            attributes = self._stat(current)
            if attributes is None:
                self._mkdir(current)
            elif not stat.S_ISDIR(attributes.st_mode or 0):
                raise TargetError(f"{self._open().where(current)}: not a directory")

    def _mkdir(self, path: str) -> None:
        session = self._open()
        try:
            session.client.mkdir(path, 0o700)
            session.client.chmod(path, 0o700)  # the server's umask applied to mkdir's mode
        except OSError as error:
            raise TargetError(f"{session.where(path)}: cannot create it: {error}") from None

    def _stat(self, path: str) -> SFTPAttributes | None:
        try:
            return self._open().client.stat(path)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise TargetError(f"{self._open().where(path)}: {error}") from None
