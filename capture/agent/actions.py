"""How a capture run ends: ``failure_action`` and ``final_action``.

The names are kdump.conf's (:class:`~capture.agent.config.Action`, one list
for the parser, check-config and this module): ``reboot``, ``halt``,
``poweroff``, ``shell``, ``dump_to_rootfs`` and ``boot``.

The run holds an :class:`Actions` and calls :meth:`Actions.perform` once per
action. The capture kernel's is :class:`SystemActions`; ``--no-action`` uses
:class:`RecordingActions`, which only records and prints. Either way the
action is logged first as ``kdump-capture: action: NAME``, so the last line
of the run's log names it (the log is saved by ``before_acting``, after that
line and before the machine goes down).

What follows an action is the caller's (Fedora's rule): after ``shell`` and
``dump_to_rootfs`` comes the final action (:data:`FOLLOWED_BY_FINAL_ACTION`);
``reboot``, ``halt``, ``poweroff`` and ``boot`` end the capture kernel, and
if one of them returns, the machine could not be brought down and there is
nothing left to do but say so (the module has already said it in the log).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol, TextIO

from capture.agent.config import FAILURE_ACTIONS, Action

__all__ = (
    "ACTIONS",
    "FOLLOWED_BY_FINAL_ACTION",
    "HAND_OVER",
    "NEWROOT",
    "RB_AUTOBOOT",
    "RB_HALT_SYSTEM",
    "RB_POWER_OFF",
    "Actions",
    "Machine",
    "RecordingActions",
    "SystemActions",
    "action_line",
    "real_machine",
)

log = logging.getLogger("capture")

ACTIONS = FAILURE_ACTIONS
"""Every action kdump.conf can name (the failure actions; the final ones are a subset)."""

FOLLOWED_BY_FINAL_ACTION = frozenset({Action.SHELL, Action.DUMP_TO_ROOTFS})
"""After these the run goes on to the final action, as Fedora's does."""

NEWROOT = "/sysroot"
"""Where a dracut initramfs mounts the root filesystem."""

# reboot(2)'s commands (linux/reboot.h); glibc's wrapper adds the magic numbers.
RB_AUTOBOOT = 0x01234567
RB_HALT_SYSTEM = 0xCDEF0123
RB_POWER_OFF = 0x4321FEDC

SWITCH_ROOT_TARGET = "initrd-switch-root.target"
"""What a systemd initramfs isolates to leave for the real root: dracut's
initrd-cleanup.service does exactly this; a kdump initramfs turns that
service off, so ``boot`` does it itself."""

_COMMAND_SECONDS = 30.0
"""How long a systemctl or mount may take before it is given up."""

HAND_OVER = 'systemctl "$1" -f || exec systemctl "$1" -ff; sleep "$2"; exec systemctl "$1" -ff'
"""What takes reboot, halt or poweroff under systemd, exec'ed in the agent's
place (``sh -c HAND_OVER sh VERB SETTLE``) so that a dump's heap is freed
first: at crashkernel=128M the agent still holding it was OOM-killed during
systemd-shutdown's mlockall. The forced systemctl; if it fails, or systemd
has not ended the shell SETTLE seconds later, ``systemctl -ff``, which calls
reboot(2) at once."""

_SHELL_PROMPT = "kdump:${PWD}# "  # Fedora's prompt: users' notes show it

ACTING_MARKER = "/run/kdump-capture.acting"
"""Made just before the agent brings the machine down or hands it to the root
filesystem: kdump-capture-failure.service does not start once it exists
(ConditionPathExists=!). ``boot`` under systemd isolates
initrd-switch-root.target, which stops the agent's own unit with SIGTERM; a
unit killed so "failed", and its OnFailure= took the failure action (a
reboot) in the middle of the switch."""

ENDING_ACTIONS = frozenset({Action.REBOOT, Action.HALT, Action.POWEROFF, Action.BOOT})
"""The actions after which the agent does nothing more."""


def action_line(action: Action) -> str:
    """The log line that names the action (the run's last line)."""
    return f"kdump-capture: action: {action.value}"


class Actions(Protocol):
    """What the run calls at its end; :class:`SystemActions` or :class:`RecordingActions`."""

    def perform(self, action: Action, before_acting: Callable[[], None] | None = None) -> None:
        """Log :func:`action_line`, call ``before_acting`` (save the log), then act.

        ``dump_to_rootfs`` is not done here: the run dumps again onto the root
        filesystem (:meth:`mount_root` gives it), then takes the final action.
        """

    def mount_root(self) -> str | None:
        """The root filesystem's mount point, mounted if it was not; None if it cannot be."""


def _call_before(before_acting: Callable[[], None] | None) -> None:
    if before_acting is None:
        return
    try:
        before_acting()
    except Exception:  # saving the log must not keep the machine from its action
        log.exception("before the action")


# --no-action -----------------------------------------------------------------


class RecordingActions:
    """``--no-action``: every action is recorded and printed, none is taken.

    ``mount_root`` mounts nothing: the sysroot given (``--sysroot DIR``) is
    taken as it is, if it is a directory.
    """

    def __init__(self, out: TextIO | None = sys.stdout, newroot: str = NEWROOT) -> None:
        self.out = out
        self.newroot = newroot
        self.performed: list[Action] = []

    def perform(self, action: Action, before_acting: Callable[[], None] | None = None) -> None:
        """Record the action; log and print its line (not taken: --no-action)."""
        self.performed.append(action)
        if self.out is not None:
            print(f"{action_line(action)} (not taken: --no-action)", file=self.out, flush=True)
        log.info("%s", action_line(action))
        _call_before(before_acting)

    def mount_root(self) -> str | None:
        """The sysroot directory as it is, or None if there is none."""
        return self.newroot if os.path.isdir(self.newroot) else None


# The capture kernel ------------------------------------------------------------


class Machine(NamedTuple):
    """What the actions do to the machine, each one replaceable in tests."""

    systemd: bool
    """systemd is PID 1 (``/run/systemd/system`` exists, as sd_booted() checks)."""
    pid1: bool
    """We are PID 1 ourselves, so we may exec switch_root."""
    cmdline: str
    """The capture kernel's command line (root=, rootfstype=, rootflags=, init=)."""
    run: Callable[[Sequence[str], float], int]
    """A command with a time limit; its exit status. Raises OSError or
    subprocess.SubprocessError if it cannot be run or takes too long."""
    interactive: Callable[[Sequence[str], Mapping[str, str], str | None], int]
    """An interactive program on a terminal (the path; None: ours); its exit status."""
    reboot: Callable[[int], None]
    """reboot(2) with one of the RB_* commands; raises OSError."""
    sync: Callable[[], None]
    execv: Callable[[str, Sequence[str]], None]
    """Replace this process (returns only in tests; raises OSError)."""
    sleep: Callable[[float], None]
    is_mounted: Callable[[str], bool]
    is_executable: Callable[[str], bool]
    mark_acting: Callable[[], None] = lambda: None
    """Say the agent is taking its final step itself (:data:`ACTING_MARKER`)."""


def real_machine() -> Machine:
    """The machine we run on."""
    return Machine(
        systemd=os.path.isdir("/run/systemd/system"),
        pid1=os.getpid() == 1,
        cmdline=_read_cmdline(),
        run=_run_command,
        interactive=_run_interactive,
        reboot=_reboot_syscall,
        sync=os.sync,
        execv=_exec,
        sleep=time.sleep,
        is_mounted=os.path.ismount,
        is_executable=lambda path: os.path.isfile(path) and os.access(path, os.X_OK),
        mark_acting=_mark_acting,
    )


def _mark_acting() -> None:
    try:
        with open(ACTING_MARKER, "w"):
            pass
    except OSError as error:  # no /run: the failure unit may run, the action goes on
        log.warning("cannot make %s: %s", ACTING_MARKER, error)


def _exec(path: str, argv: Sequence[str]) -> None:
    for stream in (sys.stdout, sys.stderr):  # exec drops what Python still buffers
        with contextlib.suppress(Exception):
            stream.flush()
    os.execv(path, list(argv))


def _read_cmdline() -> str:
    try:
        with open("/proc/cmdline") as file:
            return file.read()
    except OSError:
        return ""


def _run_command(argv: Sequence[str], seconds: float) -> int:
    return subprocess.run(list(argv), stdin=subprocess.DEVNULL, timeout=seconds).returncode


def _reboot_syscall(command: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot.argtypes = [ctypes.c_uint]  # the commands do not fit a signed int
    libc.reboot.restype = ctypes.c_int
    if libc.reboot(command) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _run_interactive(argv: Sequence[str], env: Mapping[str, str], terminal: str | None) -> int:
    """Run a program for a person at the console and wait for it, without a time limit.

    With a terminal path (we are a service with no terminal), the program gets
    it as stdin, stdout, stderr and controlling terminal in a session of its
    own, so job control and Ctrl-C work there and do not reach us.
    """
    if terminal is None:
        with _ignoring_interrupts():  # Ctrl-C on our own terminal is the shell's
            return subprocess.run(list(argv), env=dict(env)).returncode
    fd = os.open(terminal, os.O_RDWR | os.O_NOCTTY)
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=fd,
            stdout=fd,
            stderr=fd,
            env=dict(env),
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
    finally:
        os.close(fd)
    return process.wait()


def _on_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):
        return False


def _take_terminal() -> None:
    # In the child, after setsid: make stdin its controlling terminal. Not a
    # terminal (a test's file): the shell still runs, without job control.
    with contextlib.suppress(OSError):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@contextlib.contextmanager
def _ignoring_interrupts() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to change
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class SystemActions:
    """The actions as the capture kernel takes them.

    * ``reboot``, ``halt``, ``poweroff``: sync, then under systemd a shell
      exec'ed in the agent's place runs ``systemctl reboot -f`` (``halt -f``,
      ``poweroff -f``: Fedora's forced ones, which kill every process and
      unmount without stopping units one by one), and ``systemctl reboot -ff``
      (reboot(2) at once) when that fails or the machine is still up
      ``settle`` seconds later (:data:`HAND_OVER`). Without systemd, or when
      the shell cannot be exec'ed, reboot(2) itself (RB_AUTOBOOT,
      RB_HALT_SYSTEM, RB_POWER_OFF).
    * ``shell``: ``/bin/sh -i -l`` on the console with Fedora's ``kdump:`` prompt,
      without a time limit; returns when it exits (the final action is next).
    * ``boot``: mount the root filesystem (:meth:`mount_root`) and run its init.
      Under systemd: ``systemctl --no-block isolate initrd-switch-root.target``,
      the normal end of a dracut initramfs. Without systemd: exec
      ``switch_root /sysroot INIT`` (INIT from ``init=``, else /sbin/init),
      which only PID 1 can do; when we are not PID 1 the initramfs's own init
      switches root after we return. If the root cannot be mounted, has no
      init, or the switch does not happen, ``reboot`` instead: the machine
      must come back up.
    * ``dump_to_rootfs``: named and logged only; the run does the dump.
    """

    def __init__(
        self,
        machine: Machine | None = None,
        *,
        newroot: str = NEWROOT,
        console: str = "/dev/console",
        shell: Sequence[str] = ("/bin/sh", "-i", "-l"),
        settle: float = 30.0,
        mount_wait: int = 90,
    ) -> None:
        self.machine = real_machine() if machine is None else machine
        self.newroot = newroot
        self.console = console
        self.shell = tuple(shell)
        self.settle = settle
        self.mount_wait = mount_wait

    def perform(self, action: Action, before_acting: Callable[[], None] | None = None) -> None:
        """Log the action's line, call ``before_acting``, then take the action."""
        log.info("%s", action_line(action))
        _call_before(before_acting)
        if action in ENDING_ACTIONS:
            self.machine.mark_acting()
        if action is Action.REBOOT:
            self._power_off("reboot", RB_AUTOBOOT)
        elif action is Action.HALT:
            self._power_off("halt", RB_HALT_SYSTEM)
        elif action is Action.POWEROFF:
            self._power_off("poweroff", RB_POWER_OFF)
        elif action is Action.SHELL:
            self._shell()
        elif action is Action.BOOT:
            self._boot()
        else:  # DUMP_TO_ROOTFS: the run dumps, then takes the final action
            log.info("dump_to_rootfs: the run saves the dump on the root filesystem")

    # reboot, halt, poweroff

    def _power_off(self, verb: str, command: int) -> None:
        _flush_logs()
        self._sync()
        if self.machine.systemd:
            argv = ["sh", "-c", HAND_OVER, "sh", verb, f"{self.settle:g}"]
            try:
                self.machine.execv("/bin/sh", argv)
            except OSError as error:
                log.error("exec /bin/sh for systemctl %s -f failed (%s): calling reboot(2)",
                          verb, error)  # fmt: skip
        _flush_logs()
        try:
            self.machine.reboot(command)
        except OSError as error:
            log.critical("reboot(2) for %s failed (%s): the machine stays up", verb, error)

    def _sync(self) -> None:
        try:
            self.machine.sync()
        except OSError as error:
            log.error("sync failed (%s); going on", error)

    def _command(self, *argv: str) -> bool:
        """Run a command; True if it exited 0. Failures are logged, never raised."""
        try:
            status = self.machine.run(argv, _COMMAND_SECONDS)
        except (OSError, subprocess.SubprocessError) as error:
            log.error("%s failed: %s", " ".join(argv), error)
            return False
        if status != 0:
            log.error("%s exited with %d", " ".join(argv), status)
        return status == 0

    # shell

    def _shell(self) -> None:
        terminal = None if _on_terminal() else self.console
        env = {**os.environ, "PS1": _SHELL_PROMPT}
        log.info("kdump-capture: a shell on %s; exit it to go on", terminal or "this terminal")
        try:
            status = self.machine.interactive(self.shell, env, terminal)
        except OSError as error:
            log.error("the shell %s could not be started: %s", self.shell[0], error)
            return
        log.info("the shell exited with %d; going on to the final action", status)

    # boot

    def _boot(self) -> None:
        newroot = self.mount_root()
        if newroot is None:
            log.error("boot: the root filesystem cannot be mounted; rebooting instead")
        elif self.machine.systemd:
            self._isolate_switch_root()
        elif self._switch_root(newroot):
            return  # handed over: the initramfs's init switches root when we are done
        self._power_off("reboot", RB_AUTOBOOT)

    def _isolate_switch_root(self) -> None:
        if self._command("systemctl", "--no-block", "isolate", SWITCH_ROOT_TARGET):
            self.machine.sleep(self.settle)  # systemd stops us on its way
            log.error("boot: still running %gs after isolating %s", self.settle, SWITCH_ROOT_TARGET)
        log.error("boot: systemd did not switch to the root filesystem; rebooting instead")

    def _switch_root(self, newroot: str) -> bool:
        """Exec switch_root as PID 1; True if the switch is left to the initramfs's init.

        False when it cannot happen (no init, exec failed): the caller reboots.
        """
        init = self._find_init(newroot)
        if init is None:
            log.error("boot: no init on %s (init= or /sbin/init); rebooting instead", newroot)
            return False
        if not self.machine.pid1:
            log.warning("boot: not PID 1, so the initramfs's init switches root to %s", newroot)
            return True
        switch_root = shutil.which("switch_root") or "/sbin/switch_root"
        _flush_logs()
        try:
            self.machine.execv(switch_root, ["switch_root", newroot, init])
        except OSError as error:
            log.error("boot: %s failed (%s); rebooting instead", switch_root, error)
        return False

    def _find_init(self, newroot: str) -> str | None:
        """``init=`` from the command line, else /sbin/init: the first executable in newroot.

        An absolute link (/sbin/init -> /lib/systemd/systemd) is looked up
        inside newroot, not in the initramfs.
        """
        for init in (_argument(self.machine.cmdline, "init"), "/sbin/init"):
            if not init:
                continue
            path = os.path.join(newroot, init.lstrip("/"))
            if os.path.islink(path) and os.readlink(path).startswith("/"):
                path = os.path.join(newroot, os.readlink(path).lstrip("/"))
            if self.machine.is_executable(path):
                return init
        return None

    # the root filesystem

    def mount_root(self) -> str | None:
        """Mount the root filesystem at newroot (as Fedora's dump_to_rootfs does) and wait.

        Under systemd ``systemctl start --no-block sysroot.mount`` (the unit
        dracut makes from ``root=``); without it ``mount`` with ``root=``,
        ``rootfstype=`` and ``rootflags=``. Then up to ``mount_wait`` seconds
        for it to be mounted (Fedora waits 90). It is mounted as the command
        line says (``ro`` or ``rw``): a dump onto it remounts it read-write.
        """
        if self.machine.is_mounted(self.newroot):
            return self.newroot
        if self.machine.systemd:
            self._command("systemctl", "start", "--no-block", "sysroot.mount")
        elif not self._mount_from_cmdline():
            return None
        for _ in range(self.mount_wait):
            if self.machine.is_mounted(self.newroot):
                return self.newroot
            self.machine.sleep(1)
        if self.machine.is_mounted(self.newroot):
            return self.newroot
        log.error("the root filesystem is not on %s after %ds", self.newroot, self.mount_wait)
        return None

    def _mount_from_cmdline(self) -> bool:
        cmdline = self.machine.cmdline
        root = _argument(cmdline, "root").removeprefix("block:")
        if not root:
            log.error("no root= on the kernel command line: the root filesystem cannot be mounted")
            return False
        argv = ["mount"]
        fstype = _argument(cmdline, "rootfstype")
        if fstype:
            argv += ["-t", fstype]
        words = cmdline.split()
        options = ["rw" if "rw" in words and "ro" not in words else "ro"]
        options += [flag for flag in _argument(cmdline, "rootflags").split(",") if flag]
        argv += ["-o", ",".join(options), root, self.newroot]
        return self._command(*argv)


def _argument(cmdline: str, name: str) -> str:
    """The last ``name=value`` on a kernel command line (the kernel's rule); "" if none."""
    value = ""
    for word in cmdline.split():
        key, equals, rest = word.partition("=")
        if equals and key == name:
            value = rest.strip('"')
    return value


def _flush_logs() -> None:
    """Everything logged reaches its file before the machine goes down."""
    for logger in (log, logging.getLogger()):
        for handler in logger.handlers:
            with contextlib.suppress(Exception):
                handler.flush()
