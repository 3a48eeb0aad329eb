"""The user's hooks, run as Fedora runs them, each with a time limit and the run's facts.

Fedora's order (docs/capture.md §"Hooks"), kept here as a table
(:data:`ORDER`):

* **pre**: ``kdump_pre``, then every hook in ``pre.d``. A ``kdump_pre`` that
  exits non-zero stops there: Fedora then skips the dump and takes the
  *final* action, not the failure action (:attr:`PreOutcome.kdump_pre_failed`);
  pre.d hooks that fail are only logged.
* **post**: every hook in ``post.d``, then ``kdump_post``; each gets the dump's
  exit status as ``$1`` (0: saved).
* **emergency**: every hook in ``emergency.d``, then ``kdump_emergency``,
  before the failure action.

A directory's hooks run in lexical order of their names in the C locale (byte
order, whatever the capture kernel's locale), and only regular executable
files run (:func:`hooks_in`).

Beyond Fedora, which waits for a hook forever and passes nothing but ``$1``:

* every hook has a time limit. A hook still running then is ended with its
  whole process group (it is started in a session of its own): SIGTERM, then
  SIGKILL after a short grace. It is logged and the run goes on.
* every hook gets the run's facts as ``KDUMP_CAPTURE_*`` environment variables
  (:func:`hook_environment`). Hooks are exec'ed directly, never through a
  shell, so a panic string from the crashed kernel's memory is only ever a
  value in the environment, never a command line.
* a hook that is missing, is not executable or cannot start is logged and
  reported (:class:`HookResult`), never an exception: a hook is not a reason
  to lose the dump.

A hook's output (stdout and stderr) goes to the console, which is what the
user watches in the capture kernel, and its last few KiB to our log; a hook
that floods its output costs no memory beyond that tail.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

from capture.agent.config import KDUMP_DIR, Config, HookStage

__all__ = (
    "DEFAULT_GRACE",
    "ORDER",
    "TAIL_BYTES",
    "HookFacts",
    "HookResult",
    "Hooks",
    "PreOutcome",
    "Spawn",
    "StageOrder",
    "hook_environment",
    "hooks_in",
    "run_hook",
)

log = logging.getLogger("capture")

DEFAULT_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL for a hook past its time limit."""

TAIL_BYTES = 8192
"""How much of a hook's output our log keeps (the console gets all of it)."""

_FACT_CHARS = 4096
"""A fact longer than this (a panic line from corrupt memory) is cut."""

_TICK = 0.05
"""How often, at most, a running hook is checked for having exited."""

_DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Left in a hook directory by editors and package managers: a copy of a hook,
# not a hook. Fedora's glob would run them if executable; running an old copy
# of a hook beside the new one is never what was meant.
_LEFTOVER_SUFFIXES = (
    "~", ".bak", ".orig", ".swp", ".rpmsave", ".rpmnew", ".rpmorig",
    ".dpkg-old", ".dpkg-new", ".dpkg-dist", ".dpkg-tmp",
)  # fmt: skip


class HookFacts(NamedTuple):
    """What the run knows so far, passed to every hook as ``KDUMP_CAPTURE_*``.

    The run fills this; values from the vmcore (the kernel release, the panic
    line) are only ever environment strings (:func:`hook_environment`).
    An empty string means "not known (yet)".
    """

    status: int = 0
    """``KDUMP_CAPTURE_STATUS``: the run's status so far; for post hooks the
    dump's exit status (also ``$1``), 0 when it was saved."""
    dump_dir: str = ""
    """``KDUMP_CAPTURE_DUMP_DIR``: the dump directory (none yet before the dump)."""
    manifest: str = ""
    """``KDUMP_CAPTURE_MANIFEST``: the path of manifest.json."""
    target: str = ""
    """``KDUMP_CAPTURE_TARGET``: kind and place, e.g. ``local:/var/crash``, ``raw:/dev/sdb1``."""
    kernel: str = ""
    """``KDUMP_CAPTURE_KERNEL``: the crashed kernel's release (from VMCOREINFO)."""
    panic: str = ""
    """``KDUMP_CAPTURE_PANIC``: the panic line from the crashed kernel's log."""
    crash_time: str = ""
    """``KDUMP_CAPTURE_CRASH_TIME``: when it crashed, as the manifest says it."""
    vmcore: str = ""
    """``KDUMP_CAPTURE_VMCORE``: the crashed kernel's memory, usually /proc/vmcore."""
    config: str = ""
    """``KDUMP_CAPTURE_CONFIG``: the kdump.conf the run read."""


_VARIABLES = {field: f"KDUMP_CAPTURE_{field.upper()}" for field in HookFacts._fields}


class HookResult(NamedTuple):
    """How one hook went: enough for our log and for the manifest's steps."""

    path: str
    status: int | None
    """Its exit status (negative: the signal that ended it); None when it did
    not start or was killed at its time limit."""
    timed_out: bool
    seconds: float
    output_tail: str
    """The last :data:`TAIL_BYTES` of its output, as text."""
    error: str = ""
    """Why it did not run (missing, not executable, exec failed); empty if it ran."""

    @property
    def ok(self) -> bool:
        """It ran to the end and said so with exit status 0."""
        return self.status == 0


class PreOutcome(NamedTuple):
    """The pre hooks' results, and the one decision they can make."""

    results: tuple[HookResult, ...]
    kdump_pre_failed: bool
    """``kdump_pre`` ran and exited non-zero: Fedora's veto. The run then saves
    nothing and takes the **final** action (not the failure action), and pre.d
    did not run. A kdump_pre that could not start or was killed at its time
    limit said nothing, so it is logged and the dump goes on."""


class StageOrder(NamedTuple):
    """Fedora's rules for one stage."""

    directive_first: bool
    """``kdump_pre`` runs before pre.d; the other directives after their directory."""
    status_argument: bool
    """Each hook gets the dump's status as ``$1`` (post hooks only)."""
    directive_vetoes: bool
    """The directive exiting non-zero ends the stage and skips the dump (kdump_pre only)."""


ORDER = {
    HookStage.PRE: StageOrder(directive_first=True, status_argument=False, directive_vetoes=True),
    HookStage.POST: StageOrder(directive_first=False, status_argument=True, directive_vetoes=False),
    HookStage.EMERGENCY: StageOrder(
        directive_first=False, status_argument=False, directive_vetoes=False
    ),
}


class Spawn(Protocol):
    """Starts a hook: its argv and environment, stdout and stderr on one pipe."""

    def __call__(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]: ...


def _spawn(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    # A session of its own: one killpg ends the hook and all it started.
    # cwd /: a hook must not keep the dump target busy by where it started.
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        cwd="/",
        close_fds=True,
        start_new_session=True,
    )


def _to_console(data: bytes) -> None:
    try:
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()
    except (OSError, ValueError):  # a console gone away must not stop the hook's run
        pass


# The environment -----------------------------------------------------------


def hook_environment(
    facts: HookFacts,
    stage: HookStage,
    timeout: float,
    inherited: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a hook runs with: ours, plus every fact as ``KDUMP_CAPTURE_*``.

    Also ``KDUMP_CAPTURE_STAGE`` (``pre``, ``post``, ``emergency``) and
    ``KDUMP_CAPTURE_HOOK_TIMEOUT`` (seconds it may run; 0: no limit). A value
    from the crashed kernel's memory can hold anything: control characters
    (NUL cannot be in an environment at all) become ``?`` and it is cut at
    4 KiB.
    """
    env = dict(os.environ if inherited is None else inherited)
    env.setdefault("PATH", _DEFAULT_PATH)
    for field, variable in _VARIABLES.items():
        env[variable] = _printable(str(getattr(facts, field)))
    env["KDUMP_CAPTURE_STAGE"] = stage.value
    env["KDUMP_CAPTURE_HOOK_TIMEOUT"] = f"{timeout:g}"
    return env


def _printable(value: str) -> str:
    value = value[:_FACT_CHARS]
    return "".join(char if char == "\t" or char.isprintable() else "?" for char in value)


# One hook ------------------------------------------------------------------


class _Tail:
    """The last ``limit`` bytes of a stream, and how many came before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        self.kept += data
        excess = len(self.kept) - self.limit
        if excess > 0:
            del self.kept[:excess]
            self.dropped += excess

    def text(self) -> str:
        text = self.kept.decode("utf-8", "replace")
        return f"[{self.dropped} bytes before this not kept]\n{text}" if self.dropped else text


def run_hook(
    path: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str],
    timeout: float,
    grace: float = DEFAULT_GRACE,
    spawn: Spawn = _spawn,
    console: Callable[[bytes], None] = _to_console,
    clock: Callable[[], float] = time.monotonic,
    tail_bytes: int = TAIL_BYTES,
) -> HookResult:
    """Run one hook to its end or its time limit; never raises for the hook's sake.

    ``timeout`` 0 means no limit (``kdump_capture_hook_timeout 0``). A hook
    past it is ended with everything in its process group; one that exits
    while something it started in the background still runs is done, and
    what it started is left running (as under Fedora) but logged.
    """
    start = clock()
    problem = _cannot_run(path)
    if problem is None:
        try:
            process = spawn([path, *args], env)
        except (OSError, ValueError) as error:
            problem = f"could not be started: {error}"
    if problem is not None:
        log.error("hook %s %s; skipped", path, problem)
        return HookResult(path, None, False, clock() - start, "", problem)
    log.info("hook %s%s: started", path, "".join(f" {arg}" for arg in args))
    tail = _Tail(tail_bytes)
    deadline = start + timeout if timeout > 0 else None
    with process:
        finished = _follow(process, tail, console, deadline, clock)
        if not finished:
            _end_group(process, grace, clock)
        _warn_of_leftovers(path, process.pid)
    result = HookResult(
        path,
        process.returncode if finished else None,
        not finished,
        clock() - start,
        tail.text(),
    )
    _log_result(result, timeout)
    return result


def _cannot_run(path: str) -> str | None:
    """Why ``path`` cannot be a hook, said for the log; None if it can."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as error:
        return f"cannot be looked at ({error.strerror or error})"
    if not stat.S_ISREG(mode):
        return "is not a file"
    if not mode & 0o111:
        return f"is not executable (chmod u+x {path})"
    return None


def _follow(
    process: subprocess.Popen[bytes],
    tail: _Tail,
    console: Callable[[bytes], None],
    deadline: float | None,
    clock: Callable[[], float],
) -> bool:
    """Pass the hook's output on until it exits (True) or its deadline passes (False).

    The hook's exit, not the end of its output, is what ends the wait: a
    process it left in the background may hold the pipe open for ever.
    """
    assert process.stdout is not None
    pipe = process.stdout.fileno()
    os.set_blocking(pipe, False)
    with selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        open_pipe = True
        while process.poll() is None:
            left = None if deadline is None else deadline - clock()
            if left is not None and left <= 0:
                return False
            wait = _TICK if left is None else min(_TICK, left)
            if open_pipe and selector.select(wait):
                open_pipe = _pass_on(pipe, tail, console)
            elif not open_pipe:
                time.sleep(wait)
        if open_pipe:
            _pass_on(pipe, tail, console)  # what it wrote just before it exited
    return True


def _pass_on(pipe: int, tail: _Tail, console: Callable[[bytes], None]) -> bool:
    """Read what is there now (a bounded amount); False at the end of the output."""
    for _ in range(16):  # at most 1 MiB at a time: a flood must not starve the clock
        try:
            data = os.read(pipe, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        tail.add(data)
        console(data)
    return True


def _end_group(process: subprocess.Popen[bytes], grace: float, clock: Callable[[], float]) -> None:
    """SIGTERM the hook's process group; SIGKILL what is left after ``grace`` seconds."""
    group = process.pid  # its own session: the group id is its pid
    _signal_group(group, signal.SIGTERM)
    until = clock() + grace
    while clock() < until:
        process.poll()  # reap the hook itself: a zombie still counts as in the group
        if not _group_alive(group):
            break
        time.sleep(_TICK)
    else:
        _signal_group(group, signal.SIGKILL)
    process.wait()


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass
    except OSError as error:
        log.error("cannot signal process group %d: %s", group, error)


def _group_alive(group: int) -> bool:
    """Whether anything of the group still runs; zombies (dead, not yet reaped) do not."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        return any(_process_group(pid) == group for pid in os.listdir("/proc") if pid.isdigit())
    except OSError:  # no /proc: a zombie counts as alive, which only costs the grace
        return True


def _process_group(pid: str) -> int | None:
    """The process group of a running process; None for a zombie or one gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state, ppid, pgrp (proc(5)).
    return None if fields[0] == b"Z" else int(fields[2])


def _warn_of_leftovers(path: str, group: int) -> None:
    if _group_alive(group):
        log.warning(
            "hook %s left processes running (process group %d); they go on running", path, group
        )


def _log_result(result: HookResult, timeout: float) -> None:
    name = os.path.basename(result.path)
    for line in result.output_tail.splitlines():
        log.info("hook %s| %s", name, line)
    if result.timed_out:
        log.error(
            "hook %s was still running after %gs (kdump_capture_hook_timeout): "
            "killed with what it started; the run goes on",
            result.path,
            timeout,
        )
    elif result.ok:
        log.info("hook %s: exit 0 after %.1fs", result.path, result.seconds)
    else:
        log.error("hook %s exited with %s after %.1fs", result.path, result.status, result.seconds)


# Directories ---------------------------------------------------------------


def hooks_in(directory: str) -> list[str]:
    """The hooks of a pre.d/post.d/emergency.d directory, in the order they run.

    Names sort in byte order (the C locale). What runs is a regular file (a
    link to one is fine) with an execute bit. Skipped: names starting with a
    dot (the shell's ``*`` skips them, so Fedora does), copies left by editors
    and package managers (``~``, ``.bak``, ``.rpmsave``, ``.dpkg-old``, ...;
    Fedora would run them), anything not a file, and files that are not
    executable (Fedora never puts those in the initramfs). Each skip is logged.
    A directory that does not exist holds no hooks.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as error:
        log.error("hook directory %s cannot be read (%s): its hooks do not run", directory, error)
        return []
    hooks = []
    for name in sorted(names, key=os.fsencode):
        path = os.path.join(directory, name)
        reason = _not_a_hook(name, path)
        if reason is None:
            hooks.append(path)
        elif reason:
            log.warning("%s is skipped: %s", path, reason)
    return hooks


def _not_a_hook(name: str, path: str) -> str | None:
    """Why a directory entry does not run ("" for a dot file: not worth a line)."""
    if name.startswith("."):
        return ""
    if name.endswith(_LEFTOVER_SUFFIXES):
        return "an editor's or package manager's copy, not a hook"
    problem = _cannot_run(path)
    return None if problem is None else f"it {problem}"


# The stages ----------------------------------------------------------------


class Hooks:
    """The hooks of one configuration, run stage by stage.

    The run calls :meth:`pre` before the dump, :meth:`post` after it, and
    :meth:`emergency` on failure before the failure action. Each returns what
    happened; none raises for a hook's sake.
    """

    def __init__(
        self,
        directives: Mapping[HookStage, str | None],
        *,
        kdump_dir: str = KDUMP_DIR,
        timeout: float,
        grace: float = DEFAULT_GRACE,
        spawn: Spawn = _spawn,
        console: Callable[[bytes], None] = _to_console,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directives = directives
        self.kdump_dir = kdump_dir
        self.timeout = timeout
        self.grace = grace
        self.spawn = spawn
        self.console = console
        self.clock = clock

    @classmethod
    def from_config(cls, config: Config, *, kdump_dir: str = KDUMP_DIR) -> Hooks:
        """``kdump_pre``/``kdump_post``/``kdump_emergency`` and ``kdump_capture_hook_timeout``."""
        directives = {}
        for stage in HookStage:
            setting = config.hook(stage)
            directives[stage] = None if setting is None else setting.value
        return cls(directives, kdump_dir=kdump_dir, timeout=config.hook_timeout.value)

    def pre(self, facts: HookFacts) -> PreOutcome:
        """``kdump_pre``, then pre.d; see :class:`PreOutcome` for what a failure means."""
        results, vetoed = self._run_stage(HookStage.PRE, facts)
        if vetoed:
            log.error(
                "kdump_pre %s exited with %s: no dump is saved, the final action follows "
                "(as Fedora does)",
                results[0].path,
                results[0].status,
            )
        return PreOutcome(tuple(results), vetoed)

    def post(self, facts: HookFacts) -> list[HookResult]:
        """post.d, then ``kdump_post``; each gets ``facts.status`` as ``$1``."""
        return self._run_stage(HookStage.POST, facts)[0]

    def emergency(self, facts: HookFacts) -> list[HookResult]:
        """emergency.d, then ``kdump_emergency``: the run failed, the failure action is next."""
        return self._run_stage(HookStage.EMERGENCY, facts)[0]

    def stage_hooks(self, stage: HookStage) -> list[tuple[str, bool]]:
        """The hooks of one stage in Fedora's order, each with whether it is the directive."""
        directive = self.directives.get(stage)
        named = [] if directive is None else [(directive, True)]
        listed = [(path, False) for path in hooks_in(stage.directory(self.kdump_dir))]
        return named + listed if ORDER[stage].directive_first else listed + named

    def _run_stage(self, stage: HookStage, facts: HookFacts) -> tuple[list[HookResult], bool]:
        """The stage's results, and whether its directive vetoed the dump."""
        order = ORDER[stage]
        args = (str(facts.status),) if order.status_argument else ()
        env = hook_environment(facts, stage, self.timeout)
        results = []
        for path, is_directive in self.stage_hooks(stage):
            result = self._run(path, args, env)
            results.append(result)
            if is_directive and order.directive_vetoes and _vetoes(result):
                return results, True  # Fedora: after a failing kdump_pre, pre.d does not run
        return results, False

    def _run(self, path: str, args: Iterable[str], env: Mapping[str, str]) -> HookResult:
        return run_hook(
            path,
            tuple(args),
            env=env,
            timeout=self.timeout,
            grace=self.grace,
            spawn=self.spawn,
            console=self.console,
            clock=self.clock,
        )


def _vetoes(result: HookResult) -> bool:
    """A kdump_pre that ran and said no (an exit status other than 0)."""
    return result.status is not None and result.status != 0
