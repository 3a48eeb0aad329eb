"""``kdump-capture check-config``: everything wrong with a kdump.conf, all at once.

As strict as kdumpctl is when the service starts, and then some. On top of
what the lines themselves have (:func:`capture.agent.config.read_config`:
unknown, deprecated and empty directives, bad values, duplicates, two
targets), it checks what the lines point at: the collector's flags against
what our engine honours and against the target (a raw or ssh target needs a
collector that writes to stdout), the hooks and extra_bins (they must exist
and be executable), the ssh key, and the fence nodes.

And one thing kdumpctl does not: every hook, hook directory and extra_bin
runs as root in the capture kernel, so a file or directory on its way that
someone other than root can write is a way to root. Each one is a problem:
owned by another user, or writable by its group or by everyone (a
sticky directory such as /tmp is fine on the way: nobody can replace what
root owns in it).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from capture.agent.collector import EngineCollector, map_collector
from capture.agent.config import (
    DEFAULT_CONFIG,
    KDUMP_DIR,
    Config,
    HookStage,
    Origin,
    Problem,
    SshTarget,
    read_config,
)

__all__ = ("check_config",)

_RUNS_AS_ROOT = "could change what runs as root in the capture kernel"


def check_config(path: str = DEFAULT_CONFIG, kdump_dir: str = KDUMP_DIR) -> list[Problem]:
    """Every problem of the kdump.conf at ``path``, sorted by line.

    Problems of the file's lines come first, then those of the hook
    directories under ``kdump_dir`` (named by path, without a line).

    :raises OSError: if the file cannot be read.
    """
    parsed = read_config(path)
    checker = _Checker(parsed.config)
    checker.problems += parsed.skipped + parsed.strict_only
    checker.collector()
    checker.fallbacks()
    checker.rebuild_flags()
    for stage in HookStage:
        checker.hook(stage)
        checker.hook_directory(stage, stage.directory(kdump_dir))
    checker.extra_bins()
    checker.ssh_key()
    checker.ssh_format()
    checker.fence_nodes()
    return sorted(checker.problems, key=lambda problem: _order(problem, path))


def _order(problem: Problem, path: str) -> tuple[int, str, int]:
    origin = problem.origin
    return (0, "", origin.line) if origin.file == path else (1, origin.file, origin.line)


class _Checker:
    """The checks of one config; collects problems, each unsafe place once."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.problems: list[Problem] = []
        self._reported_places: set[str] = set()

    def add(self, origin: Origin, message: str) -> None:
        self.problems.append(Problem(origin, message))

    def collector(self) -> None:
        config = self.config
        setting = config.core_collector
        origin = setting.origin if setting else Origin(config.file, 0)
        target = config.target.value if config.target else None
        choice = map_collector(setting.value if setting else None, target, cpus=1,
                               ssh_flat=config.ssh_format.value == "flat")  # fmt: skip
        for message in choice.problems:
            self.add(origin, message)
        if isinstance(choice.collector, EngineCollector):
            self._codec_present(choice.collector.options.codec, origin)

    def _codec_present(self, codec: str, origin: Origin) -> None:
        from capture.dumpfile.codecs import codec_by_name
        from capture.errors import UnsupportedError

        try:
            codec_by_name(codec).make(4096)
        except UnsupportedError as error:
            self.add(origin, f"core_collector: {error}; or choose another codec flag")

    def fallbacks(self) -> None:
        """Each ``kdump_capture_fallback``: a target not named before, and one
        the collector can write to (the same core_collector line serves all)."""
        config = self.config
        seen = {config.target.value: config.target.origin} if config.target else {}
        line = config.core_collector.value if config.core_collector else None
        for setting in config.fallback:
            target, origin = setting.value, setting.origin
            if target in seen:
                first = seen[target].line
                self.add(origin, f"kdump_capture_fallback {target} names the same target as "
                         f"line {first}; a target is tried once: remove one")  # fmt: skip
                continue
            seen[target] = origin
            flat = config.ssh_format.value == "flat"
            for message in map_collector(line, target, cpus=1, ssh_flat=flat).problems:
                self.add(origin, f"for this fallback target: {message}")

    def rebuild_flags(self) -> None:
        rebuild, no_rebuild = self.config.force_rebuild, self.config.force_no_rebuild
        if rebuild.value and no_rebuild.value:
            later = max(rebuild.origin, no_rebuild.origin, key=lambda origin: origin.line)
            self.add(
                later,
                "force_rebuild 1 and force_no_rebuild 1 contradict each other; "
                "set at most one of them to 1",
            )

    def hook(self, stage: HookStage) -> None:
        setting = self.config.hook(stage)
        if setting is not None:
            self._executable(stage.directive, setting.value, setting.origin)

    def hook_directory(self, stage: HookStage, directory: str) -> None:
        """Each file in pre.d (post.d, emergency.d) runs, in lexical order."""
        origin = Origin(directory, 0)
        if not os.path.isdir(directory):
            return
        self._safe(f"{stage.value}.d", directory, origin)
        for name in sorted(os.listdir(directory)):
            if not name.startswith("."):  # the shell's glob skips them, so Fedora does
                entry = os.path.join(directory, name)
                self._executable(f"{stage.value}.d hook", entry, Origin(entry, 0))

    def extra_bins(self) -> None:
        setting = self.config.extra_bins
        if setting is not None:
            for path in setting.value:
                self._executable("extra_bins", path, setting.origin)

    def ssh_key(self) -> None:
        config = self.config
        if config.target is None or not isinstance(config.target.value, SshTarget):
            return
        key, origin = config.sshkey.value, config.sshkey.origin
        if not os.path.isfile(key):
            self.add(
                origin if not config.sshkey.is_default else config.target.origin,
                f"the ssh key {key} does not exist, so the dump cannot log in; "
                "run 'kdump-capture propagate' or give the key's path with 'sshkey PATH'",
            )
        elif os.stat(key).st_mode & 0o077:
            self.add(
                origin if not config.sshkey.is_default else config.target.origin,
                f"the ssh key {key} can be read by others, so ssh refuses to use it; "
                f"chmod 0600 {key}",
            )

    def ssh_format(self) -> None:
        setting = self.config.ssh_format
        targets = [self.config.target, *self.config.fallback]
        any_ssh = any(isinstance(target.value, SshTarget) for target in targets if target)
        if not setting.is_default and not any_ssh:
            self.add(setting.origin, "kdump_capture_ssh_format is only for an 'ssh user@host' "
                     "target, and no target is one; remove the line")  # fmt: skip

    def fence_nodes(self) -> None:
        setting = self.config.fence_kdump_nodes
        if setting is None:
            return
        hostname = os.uname().nodename
        for node in setting.value:
            if node in (hostname, hostname.split(".")[0]):
                self.add(
                    setting.origin,
                    f"fence_kdump_nodes names this machine ({node}); "
                    "list the other nodes of the cluster only",
                )

    def _executable(self, what: str, path: str, origin: Origin) -> None:
        """A hook or extra_bin: a full path to an executable file only root can change."""
        if not os.path.isabs(path):
            self.add(origin, f"{what} '{path}' is not a full path; write its absolute path")
            return
        if not os.path.exists(path):
            self.add(origin, f"{what} {path} does not exist; fix the path or remove it")
            return
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            self.add(origin, f"{what} {path} is not a file; give an executable file")
            return
        if not mode & 0o111:
            self.add(origin, f"{what} {path} is not executable, so it never runs; chmod u+x {path}")
        self._safe(what, path, origin)

    def _safe(self, what: str, path: str, origin: Origin) -> None:
        for place, status in _places(path):
            unsafe = _who_else_can_write(status, is_target=place == path)
            if unsafe is None or place in self._reported_places:
                continue
            self._reported_places.add(place)
            state, who, fix = unsafe
            subject = f"{path}" if place == path else f"{path}: the directory {place}"
            self.add(origin, f"{what} {subject} {state}, {who} {_RUNS_AS_ROOT}; {fix} {place}")


def _places(path: str) -> Iterator[tuple[str, os.stat_result]]:
    """``path`` and every directory above it, as written and with links resolved."""
    seen: set[str] = set()
    for start in (os.path.abspath(path), os.path.realpath(path)):
        place = start
        while place not in seen:
            seen.add(place)
            status = _status(place)
            if status is not None:
                yield place, status
            place = os.path.dirname(place)


def _status(place: str) -> os.stat_result | None:
    try:
        return os.stat(place)
    except OSError:
        return None  # a dangling link on the way: the existence check reports the file


def _who_else_can_write(status: os.stat_result, is_target: bool) -> tuple[str, str, str] | None:
    """How someone other than root could change a place: (its state, who, the
    fix without the path); None: nobody."""
    if status.st_uid != 0:
        return f"is owned by {_user(status.st_uid)}", "who", "chown root:root"
    writable = status.st_mode & 0o022
    sticky_dir = stat.S_ISDIR(status.st_mode) and status.st_mode & stat.S_ISVTX
    if not writable or (sticky_dir and not is_target):
        return None
    if writable & 0o002:
        return "is world-writable", "so anyone", "chmod go-w" if writable & 0o020 else "chmod o-w"
    return "is group-writable", "so anyone in its group", "chmod g-w"


def _user(uid: int) -> str:
    import pwd

    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"
