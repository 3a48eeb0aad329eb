"""kdump.conf, read as Fedora's kdump reads it, into one typed :class:`Config`.

One parser serves both moments kdump.conf is read (docs/capture.md
§"kdump.conf parsing", §"Dump targets", §"Other directives"). In the capture
kernel it is lenient (:func:`load_config`): a bad line is logged and
skipped, the last occurrence of a directive wins, and a missing or
unreadable file means the defaults; the config is never the reason a dump is
lost. Before that, ``kdump-capture check-config`` is strict
(:func:`read_config`, then :mod:`capture.agent.checkconfig`): it reports the
lines the lenient reading skipped plus everything kdumpctl refuses at start,
such as a directive given twice or two dump targets.

Every value keeps the file and line it came from (:class:`Setting`), so each
message can point at the line to fix. Defaults carry line 0.

Lines are read as kdumpctl reads them: blank lines and lines starting with
``#`` are ignored; the first word is the directive and the rest of the line
its value; anything after a ``#`` in the value is dropped, then one pair of
double quotes around the whole value is removed.
"""

from __future__ import annotations

import enum
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, NamedTuple, TypeVar

__all__ = (
    "DEFAULT_CONFIG",
    "DEFAULT_PATH",
    "DEFAULT_SSHKEY",
    "DEPRECATED",
    "DIRECTIVES",
    "FAILURE_ACTIONS",
    "FALLBACK_TARGETS",
    "FILESYSTEM_TYPES",
    "FINAL_ACTIONS",
    "KDUMP_DIR",
    "Action",
    "Config",
    "Device",
    "DeviceBy",
    "FilesystemTarget",
    "HookStage",
    "NfsTarget",
    "Origin",
    "ParsedConfig",
    "Problem",
    "RawTarget",
    "Setting",
    "SshTarget",
    "Target",
    "load_config",
    "parse_config",
    "read_config",
)

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/kdump.conf"
DEFAULT_PATH = "/var/crash"
DEFAULT_SSHKEY = "/root/.ssh/kdump_id_rsa"
KDUMP_DIR = "/etc/kdump"
"""Where the pre.d, post.d and emergency.d hook directories are."""

FILESYSTEM_TYPES = ("ext2", "ext3", "ext4", "xfs", "btrfs", "minix", "virtiofs")

T = TypeVar("T")


class Origin(NamedTuple):
    """Where a value came from: a line of a file, or line 0 for a default."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class Setting(NamedTuple, Generic[T]):
    """A value and the line that set it."""

    value: T
    origin: Origin

    @property
    def is_default(self) -> bool:
        """True when no line of the file set it."""
        return self.origin.line == 0


class Problem(NamedTuple):
    """One thing wrong with the configuration, said so a user can fix it.

    ``message`` reads "what is wrong; what to write instead".
    """

    origin: Origin
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


class Action(enum.Enum):
    """What the machine does at the end: ``failure_action`` and ``final_action``."""

    REBOOT = "reboot"
    HALT = "halt"
    POWEROFF = "poweroff"
    SHELL = "shell"
    """An interactive shell on the console; the final action when it exits."""
    DUMP_TO_ROOTFS = "dump_to_rootfs"
    """Mount the root filesystem and dump there; then the final action."""
    BOOT = "boot"
    """Ours, not Fedora's: mount the root filesystem and run its init."""


FAILURE_ACTIONS = tuple(Action)
FINAL_ACTIONS = (Action.REBOOT, Action.HALT, Action.POWEROFF, Action.BOOT)


class HookStage(enum.Enum):
    """The three points where user hooks run, each with a directive and a directory."""

    PRE = "pre"
    POST = "post"
    EMERGENCY = "emergency"

    @property
    def directive(self) -> str:
        """``kdump_pre``, ``kdump_post`` or ``kdump_emergency``."""
        return f"kdump_{self.value}"

    def directory(self, kdump_dir: str = KDUMP_DIR) -> str:
        """``/etc/kdump/pre.d`` and its siblings: every executable there runs too."""
        return os.path.join(kdump_dir, f"{self.value}.d")


# Targets -------------------------------------------------------------------


class DeviceBy(enum.Enum):
    """How a target names its device."""

    NODE = "node"
    """A device node path: /dev/vg/lv_kdump, /dev/disk/by-id/..."""
    LABEL = "LABEL"
    UUID = "UUID"
    TAG = "tag"
    """A virtiofs tag."""


class Device(NamedTuple):
    """A device as kdump.conf names it."""

    by: DeviceBy
    name: str

    def __str__(self) -> str:
        if self.by in (DeviceBy.LABEL, DeviceBy.UUID):
            return f"{self.by.value}={self.name}"
        return self.name


class FilesystemTarget(NamedTuple):
    """``ext4 LABEL=kdump`` and the like, or ``dracut_args --mount "..."``."""

    fstype: str
    device: Device
    mount_point: str | None = None
    """Only with ``dracut_args --mount``: where it is mounted."""
    mount_options: str = "defaults"

    @property
    def streams(self) -> bool:
        """A filesystem holds a seekable file: the regular format."""
        return False

    def __str__(self) -> str:
        if self.mount_point is not None:
            return f'dracut_args --mount "{self.device} {self.mount_point} {self.fstype}"'
        return f"{self.fstype} {self.device}"


class RawTarget(NamedTuple):
    """``raw <device>``: the flattened stream written onto a block device."""

    device: Device

    @property
    def streams(self) -> bool:
        """The dump is a stream written from the device's first byte on."""
        return True

    def __str__(self) -> str:
        return f"raw {self.device}"


class NfsTarget(NamedTuple):
    """``nfs host:/export`` (an IPv6 host in brackets)."""

    host: str
    export: str

    @property
    def streams(self) -> bool:
        """An NFS mount holds a seekable file."""
        return False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"nfs {host}:{self.export}"


class SshTarget(NamedTuple):
    """``ssh user@host``: the dump is streamed to ``dd`` on the server."""

    user: str
    host: str

    @property
    def streams(self) -> bool:
        """A collector other than makedumpfile writes to its stdout, which the
        server receives (Fedora pipes it to ``dd``); makedumpfile's format
        follows ``kdump_capture_ssh_format``."""
        return True

    def __str__(self) -> str:
        return f"ssh {self.user}@{self.host}"


Target = FilesystemTarget | RawTarget | NfsTarget | SshTarget
"""Where the dump goes. No target line at all means the root filesystem."""


# The configuration ---------------------------------------------------------


class Config(NamedTuple):
    """Everything kdump.conf says, each value with its line.

    ``None`` means the directive was not given and has no default. Fields
    marked "first kernel" are parsed and checked but mean nothing at capture.
    """

    file: str
    target: Setting[Target] | None
    """None: the root filesystem (``path`` is then a path on it)."""
    path: Setting[str]
    core_collector: Setting[str] | None
    """The line as written; None: Fedora's default for the target."""
    kdump_pre: Setting[str] | None
    kdump_post: Setting[str] | None
    kdump_emergency: Setting[str] | None
    failure_action: Setting[Action]
    final_action: Setting[Action]
    sshkey: Setting[str]
    fence_kdump_args: Setting[str] | None
    fence_kdump_nodes: Setting[tuple[str, ...]] | None
    extra_bins: Setting[tuple[str, ...]] | None
    """First kernel: files put in the capture initramfs."""
    extra_modules: Setting[tuple[str, ...]] | None
    """First kernel: kernel modules put in the capture initramfs."""
    dracut_args: Setting[str] | None
    """First kernel, except its ``--mount``, which is the target."""
    force_rebuild: Setting[bool]
    """First kernel."""
    force_no_rebuild: Setting[bool]
    """First kernel."""
    auto_reset_crashkernel: Setting[bool]
    """First kernel."""
    deadline: Setting[int]
    """``kdump_capture_deadline``: seconds for the whole run; 0: none."""
    stall_timeout: Setting[int]
    """``kdump_capture_stall_timeout``: seconds a write may make no progress; 0: forever."""
    hook_timeout: Setting[int]
    """``kdump_capture_hook_timeout``: seconds each hook may run; 0: forever."""
    keep_dumps: Setting[int]
    """``kdump_capture_keep_dumps``: dumps kept on the target, the new one included; 0: all."""
    crash_loop: Setting[int]
    """``kdump_capture_crash_loop``: this many dumps in the last hour on the
    target means a crash loop, so only the log is saved; 0: never."""
    network_timeout: Setting[int]
    """``kdump_capture_network_timeout``: seconds to wait for a route to a
    network target's server and for it to take the connection (Fedora: 600)."""
    ssh_format: Setting[str]
    """``kdump_capture_ssh_format``: ``vmcore``, the random-access dump
    written over SFTP, or ``flat``, Fedora's flattened ``vmcore.flat``."""
    fallback: tuple[Setting[Target], ...] = ()
    """``kdump_capture_fallback TARGET-LINE``, repeatable: the targets tried
    in order after the first one (``target``) when it cannot be reached or
    does not take the whole dump."""

    def hook(self, stage: HookStage) -> Setting[str] | None:
        """The ``kdump_pre``/``kdump_post``/``kdump_emergency`` executable."""
        hook: Setting[str] | None = getattr(self, stage.directive)
        return hook


class ParsedConfig(NamedTuple):
    """A config and what is wrong with it.

    ``skipped``: lines the capture kernel ignores (logged there).
    ``strict_only``: what only kdumpctl refuses (a duplicate, a second target,
    an old name); at capture time such lines are honoured, the last one wins.
    """

    config: Config
    skipped: list[Problem]
    strict_only: list[Problem]


# Our own directives: one prefix, each name says what it sets.
# kdump_capture_fallback (below, with the targets) is the repeatable one.
_OURS: dict[str, tuple[str, int]] = {
    "kdump_capture_deadline": ("deadline", 0),
    "kdump_capture_stall_timeout": ("stall_timeout", 300),
    "kdump_capture_hook_timeout": ("hook_timeout", 300),
    "kdump_capture_keep_dumps": ("keep_dumps", 0),
    "kdump_capture_crash_loop": ("crash_loop", 3),
    "kdump_capture_network_timeout": ("network_timeout", 600),
}
SSH_FORMATS = ("vmcore", "flat")
"""``kdump_capture_ssh_format`` values, the default first."""


DEPRECATED = {
    "net": "write 'nfs host:/export' or 'ssh user@host' instead",
    "options": "put module options on the capture kernel's command line instead "
    "(KDUMP_COMMANDLINE_APPEND in /etc/sysconfig/kdump, e.g. loop.max_loop=1)",
    "link_delay": "remove it: the capture initramfs waits for the network itself",
    "disk_timeout": "remove it: the capture initramfs waits for disks itself",
    "debug_mem_level": "add rd.memdebug=0-3 to KDUMP_COMMANDLINE_APPEND "
    "in /etc/sysconfig/kdump instead",
    "blacklist": "add rd.driver.blacklist=MODULE to KDUMP_COMMANDLINE_APPEND "
    "in /etc/sysconfig/kdump instead",
}
"""Directives kdumpctl refuses, each with what replaces it."""


class _Bad(Exception):
    """A value that cannot be used; the message says what to write instead."""


class _Reading(NamedTuple):
    """What one line sets: (field, value) pairs, and advice for strict mode."""

    assignments: tuple[tuple[str, object], ...]
    advice: str | None = None


def load_config(path: str = DEFAULT_CONFIG) -> Config:
    """The capture kernel's reading: never raises, logs every skipped line."""
    try:
        text = _read_text(path)
    except FileNotFoundError:
        log.warning("%s does not exist: using the defaults", path)
        text = ""
    except OSError as error:
        log.error("%s cannot be read (%s): using the defaults", path, error.strerror or error)
        text = ""
    try:
        parsed = parse_config(text, path)
    except Exception:  # a bug of ours must not cost the dump: the defaults still dump
        log.exception("%s could not be parsed: using the defaults", path)
        parsed = parse_config("", path)
    for problem in parsed.skipped:
        log.warning("%s (line skipped)", problem)
    for problem in parsed.strict_only:
        log.info("%s", problem)
    return parsed.config


def read_config(path: str = DEFAULT_CONFIG) -> ParsedConfig:
    """The strict reading's first half: every problem the lines themselves have.

    :raises OSError: if the file cannot be read.
    """
    return parse_config(_read_text(path), path)


def _read_text(path: str) -> str:
    with open(path, "rb") as file:
        # surrogateescape: a path in the file with bytes that are not UTF-8 survives.
        return file.read().decode("utf-8", "surrogateescape")


def parse_config(text: str, file: str) -> ParsedConfig:
    """Read kdump.conf's text; ``file`` names it in every :class:`Origin`."""
    fields: dict[str, Any] = _defaults(file)
    first_seen: dict[str, tuple[str, Origin]] = {}
    skipped: list[Problem] = []
    strict_only: list[Problem] = []
    for origin, directive, value in _lines(text, file):
        try:
            reading = _interpret(directive, value)
        except _Bad as bad:
            skipped.append(Problem(origin, str(bad)))
            continue
        if reading.advice:
            strict_only.append(Problem(origin, reading.advice))
        for field, parsed in reading.assignments:
            if field == "fallback":  # repeatable: each line adds a target, in order
                fields[field] = (*fields[field], Setting(parsed, origin))
                continue
            earlier = first_seen.setdefault(field, (directive, origin))
            if earlier[1] != origin:
                strict_only.append(_repeated(field, directive, origin, earlier))
            fields[field] = Setting(parsed, origin)
    return ParsedConfig(Config(**fields), skipped, strict_only)


def _defaults(file: str) -> dict[str, Any]:
    default = Origin(file, 0)
    fields: dict[str, Any] = {name: None for name in Config._fields}
    fields.update(
        file=file,
        path=Setting(DEFAULT_PATH, default),
        failure_action=Setting(Action.REBOOT, default),
        final_action=Setting(Action.REBOOT, default),
        sshkey=Setting(DEFAULT_SSHKEY, default),
        force_rebuild=Setting(False, default),
        force_no_rebuild=Setting(False, default),
        auto_reset_crashkernel=Setting(True, default),
        ssh_format=Setting(SSH_FORMATS[0], default),
        fallback=(),
    )
    for field, value in _OURS.values():
        fields[field] = Setting(value, default)
    return fields


def _lines(text: str, file: str) -> Iterator[tuple[Origin, str, str]]:
    """Each directive line as (origin, directive, value), as kdumpctl splits it."""
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.strip().split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        value = words[1] if len(words) > 1 else ""
        value = value.split("#", 1)[0].strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        yield Origin(file, number), words[0], value


def _repeated(field: str, directive: str, origin: Origin, earlier: tuple[str, Origin]) -> Problem:
    first_directive, first = earlier
    if field == "target":
        return Problem(
            origin,
            f"a second dump target '{directive}' (the first is '{first_directive}' at line "
            f"{first.line}); kdump writes to one target: keep one of the two",
        )
    also = "" if first_directive == directive else f" (as '{first_directive}')"
    return Problem(
        origin,
        f"{directive} is given again: it was set at line {first.line}{also}; "
        "keep one of the lines (at capture time the last one wins)",
    )


# One line -> what it sets --------------------------------------------------


def _interpret(directive: str, value: str) -> _Reading:
    """What a directive line sets.

    :raises _Bad: for a line the capture kernel must skip.
    """
    if directive in DEPRECATED:
        raise _Bad(f"{directive} is deprecated and does nothing; {DEPRECATED[directive]}")
    handler = DIRECTIVES.get(directive)
    if handler is None:
        raise _Bad(_unknown(directive))
    if not value:
        raise _Bad(f"{directive} has no value; {_USAGE.get(directive, 'give one or remove it')}")
    return handler(directive, value)


def _unknown(directive: str) -> str:
    import difflib  # only a wrong line pays for it

    known = [*DIRECTIVES, *DEPRECATED]
    close = difflib.get_close_matches(directive, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "see the README's list of directives"
    return f"unknown directive '{directive}'; {hint}"


def _one(field: str, parse: Callable[[str], object]) -> Callable[[str, str], _Reading]:
    def handler(directive: str, value: str) -> _Reading:
        return _Reading(((field, parse(value)),))

    return handler


def _text(value: str) -> str:
    return value


def _words(value: str) -> tuple[str, ...]:
    return tuple(value.split())


def _path(value: str) -> str:
    """Duplicate slashes squeezed, as Fedora does (``//var//crash/`` -> ``/var/crash/``)."""
    return re.sub("/+", "/", value)


def _action(allowed: tuple[Action, ...], directive: str) -> Callable[[str], Action]:
    def parse(value: str) -> Action:
        for action in allowed:
            if action.value == value:
                return action
        names = ", ".join(action.value for action in allowed)
        raise _Bad(f"{directive} '{value}' is not an action; use one of: {names}")

    return parse


def _failure_action(directive: str, value: str) -> _Reading:
    action = _action(FAILURE_ACTIONS, directive)(value)
    advice = None
    if directive == "default":
        advice = f"'default' is the old name of failure_action; write 'failure_action {value}'"
    return _Reading((("failure_action", action),), advice)


def _flag(zero: str, one: str) -> Callable[[str, str], _Reading]:
    """A 0/1 or yes/no directive."""

    def handler(directive: str, value: str) -> _Reading:
        if value not in (zero, one):
            raise _Bad(f"{directive} '{value}' is not {zero} or {one}; write {zero} or {one}")
        return _Reading(((directive, value == one),))

    return handler


def _count(directive: str, value: str) -> _Reading:
    field = _OURS[directive][0]
    if not value.isdigit():
        raise _Bad(f"{directive} '{value}' is not a whole number; write 0 or more")
    return _Reading(((field, int(value)),))


def _device(directive: str, value: str) -> Device:
    for by in (DeviceBy.LABEL, DeviceBy.UUID):
        prefix = f"{by.value}="
        if value.startswith(prefix) and len(value) > len(prefix):
            return Device(by, value[len(prefix) :])
    if value.startswith("/") and len(value.split()) == 1:
        return Device(DeviceBy.NODE, value)
    raise _Bad(
        f"{directive} '{value}' is not a device; write a device node (/dev/disk/by-id/...), "
        "LABEL=name or UUID=uuid"
    )


def _filesystem(directive: str, value: str) -> _Reading:
    if directive == "virtiofs":
        if len(value.split()) != 1:
            raise _Bad(f"virtiofs '{value}' is not one tag; write 'virtiofs TAG'")
        device = Device(DeviceBy.TAG, value)
    else:
        device = _device(directive, value)
    return _Reading((("target", FilesystemTarget(directive, device)),))


def _raw(directive: str, value: str) -> _Reading:
    return _Reading((("target", RawTarget(_device(directive, value))),))


def _ssh(directive: str, value: str) -> _Reading:
    user, at, host = value.partition("@")
    host = host.removeprefix("[").removesuffix("]")
    if not at or not user or not host or " " in value:
        raise _Bad(f"ssh '{value}' is not user@host; write e.g. 'ssh root@dumps.example.com'")
    return _Reading((("target", SshTarget(user, host)),))


def _ssh_format(value: str) -> str:
    if value not in SSH_FORMATS:
        raise _Bad(f"kdump_capture_ssh_format '{value}' is not vmcore or flat; write vmcore "
                   "(the dump readable as it is) or flat (Fedora's vmcore.flat)")  # fmt: skip
    return value


def _nfs(directive: str, value: str) -> _Reading:
    if value.startswith("["):
        host, closed, rest = value[1:].partition("]")
        export = rest.removeprefix(":") if closed and rest.startswith(":") else ""
    else:
        host, _, export = value.partition(":")
    if not host or not export.startswith("/") or " " in value:
        raise _Bad(
            f"nfs '{value}' is not host:/export; write e.g. 'nfs dumps.example.com:/export' "
            "or 'nfs [2001:db8::1]:/export'"
        )
    return _Reading((("target", NfsTarget(host, export)),))


FALLBACK_TARGETS = (*FILESYSTEM_TYPES, "raw", "nfs", "ssh")
"""The target directives a ``kdump_capture_fallback`` line may hold."""


def _fallback(directive: str, value: str) -> _Reading:
    """``kdump_capture_fallback ext4 LABEL=crash``: a target line, read as one."""
    inner, _, rest = value.partition(" ")
    if inner not in FALLBACK_TARGETS:
        raise _Bad(
            f"{directive} '{value}' is not a target line; write a target as on its own "
            "line, e.g. 'kdump_capture_fallback ext4 LABEL=crash' or "
            "'kdump_capture_fallback nfs host:/export'"
        )
    rest = rest.strip()
    if not rest:
        raise _Bad(f"{directive} {inner} has no value; {_USAGE.get(inner, 'give one')}")
    [(_, target)] = DIRECTIVES[inner](inner, rest).assignments
    return _Reading((("fallback", target),))


def _dracut_args(directive: str, value: str) -> _Reading:
    """The arguments as written; a ``--mount`` among them is also the dump target."""
    if "--mount" not in value:
        return _Reading(((directive, value),))
    import shlex  # dracut splits its arguments like xargs; only --mount needs it

    try:
        words = shlex.split(value)
    except ValueError as error:
        raise _Bad(f"dracut_args cannot be split ({error}); close every quote") from None
    mounts = [
        word.removeprefix("--mount=") if word.startswith("--mount=") else after
        for word, after in zip(words, [*words[1:], ""], strict=True)
        if word == "--mount" or word.startswith("--mount=")
    ]
    if len(mounts) != 1:
        raise _Bad(
            f"dracut_args has {len(mounts)} --mount; "
            'give exactly one: --mount "DEVICE MOUNTPOINT FSTYPE [OPTIONS]"'
        )
    parts = mounts[0].split()
    if len(parts) not in (3, 4) or not parts[1].startswith("/"):
        raise _Bad(
            f"dracut_args --mount '{mounts[0]}' is not \"DEVICE MOUNTPOINT FSTYPE [OPTIONS]\"; "
            'write e.g. --mount "LABEL=dumps /mnt/dumps xfs defaults"'
        )
    device = _device("dracut_args --mount", parts[0])
    options = parts[3] if len(parts) == 4 else "defaults"
    target = FilesystemTarget(parts[2], device, parts[1], options)
    return _Reading(((directive, value), ("target", target)))


DIRECTIVES: dict[str, Callable[[str, str], _Reading]] = {
    **{fstype: _filesystem for fstype in FILESYSTEM_TYPES},
    "raw": _raw,
    "nfs": _nfs,
    "ssh": _ssh,
    "dracut_args": _dracut_args,
    "kdump_capture_fallback": _fallback,
    "path": _one("path", _path),
    "core_collector": _one("core_collector", _text),
    "kdump_pre": _one("kdump_pre", _text),
    "kdump_post": _one("kdump_post", _text),
    "kdump_emergency": _one("kdump_emergency", _text),
    "failure_action": _failure_action,
    "default": _failure_action,
    "final_action": lambda directive, value: _Reading(
        (("final_action", _action(FINAL_ACTIONS, directive)(value)),)
    ),
    "sshkey": _one("sshkey", _path),
    "fence_kdump_args": _one("fence_kdump_args", _text),
    "fence_kdump_nodes": _one("fence_kdump_nodes", _words),
    "extra_bins": _one("extra_bins", _words),
    "extra_modules": _one("extra_modules", _words),
    "force_rebuild": _flag("0", "1"),
    "force_no_rebuild": _flag("0", "1"),
    "auto_reset_crashkernel": _flag("no", "yes"),
    **{directive: _count for directive in _OURS},
    "kdump_capture_ssh_format": lambda directive, value: _Reading(
        (("ssh_format", _ssh_format(value)),)
    ),
}
"""Every directive understood, each with what reads its value."""

_USAGE = {
    "path": "write e.g. 'path /var/crash'",
    "core_collector": "write e.g. 'core_collector makedumpfile -l --message-level 7 -d 31'",
    "failure_action": "write one of: " + ", ".join(action.value for action in FAILURE_ACTIONS),
    "final_action": "write one of: " + ", ".join(action.value for action in FINAL_ACTIONS),
    **{fstype: f"write '{fstype} LABEL=name', '{fstype} UUID=uuid' or a device node"
       for fstype in FILESYSTEM_TYPES if fstype != "virtiofs"},
    "virtiofs": "write 'virtiofs TAG'",
    "raw": "write 'raw /dev/disk/by-id/...'",
    "ssh": "write 'ssh user@host'",
    "nfs": "write 'nfs host:/export'",
    "kdump_capture_fallback": "write a target line, e.g. 'kdump_capture_fallback ext4 LABEL=crash'",
}  # fmt: skip
