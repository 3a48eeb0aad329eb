"""The capture run: what the capture kernel does once /proc/vmcore exists.

One sequence, in Fedora's order (docs/capture.md §"Capture sequence") with
Fedora's names (§"Dump directory"), read top to bottom in :meth:`_Run.capture`:

1. the crashed kernel's facts (release, crash time, panic line, its log);
2. ``kdump_pre`` and pre.d (a failing ``kdump_pre`` means no dump, then the
   final action, as Fedora);
3. the target opened (device waited for, mounted, remounted read-write);
4. ``<path>/<ip>-<YYYY-MM-DD-HH:MM:SS>/`` made, ``manifest.json`` started;
5. ``vmcore-dmesg.txt``, first: small and the most valuable thing;
6. crash-loop protection, then the free-space check and step-down;
7. ``vmcore-incomplete``, synced, renamed ``vmcore`` only when whole;
8. retention of old dumps;

With ``kdump_capture_fallback`` lines, steps 3 to 8 are taken on each
target in order (:meth:`_Run.save_with_fallback`): the log goes to every
target that can be reached, the dump to the first that takes it whole; a
target that cannot be reached, or fails or fills up during the dump, is
recorded in the manifest's ``attempts`` and the next one is tried, while the
run's deadline allows. Without them the run is Fedora's, one target.

then, whatever happened (:meth:`_Run.end`): when the dump was not saved
whole, emergency.d and ``kdump_emergency``; post.d and ``kdump_post`` with
the status; the manifest completed; ``kexec-dmesg.log``; the failure action
(the dump not saved whole, as Fedora's) or the final action, named on the
run's last log line. An exception inside our own code ends there too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, TextIO

from capture.agent.actions import Actions, action_line
from capture.agent.collector import EngineCollector, ExternalCollector, collector_for
from capture.agent.config import (
    Action,
    Config,
    FilesystemTarget,
    NfsTarget,
    RawTarget,
    Target,
)
from capture.agent.hooks import HookFacts, Hooks
from capture.agent.manifest import (
    COMPLETE,
    FAILED,
    INCOMPLETE,
    MANIFEST,
    Attempt,
    Manifest,
)
from capture.agent.runlog import RunLog
from capture.agent.space import (
    crash_loop,
    estimate_dump,
    remove_old_dumps,
    stronger_codec,
)
from capture.agent.targets import DumpDir, TargetError, Waiting
from capture.agent.targets import Target as TargetPlace
from capture.agent.watchdog import Deadline, WatchedFile
from capture.errors import CaptureError

if TYPE_CHECKING:
    from capture.dumpfile.dump import DumpPlan

__all__ = ("EXIT_COMPLETE", "EXIT_FAILED", "EXIT_PARTIAL", "RunEnvironment", "RunResult",
           "run_capture")  # fmt: skip

log = logging.getLogger("capture")

EXIT_COMPLETE, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 3
DMESG, DMESG_TEMP = "vmcore-dmesg.txt", "vmcore-dmesg-incomplete.txt"
DUMP_TEMP = "vmcore-incomplete"
RUN_LOG = "kexec-dmesg.log"
TEST_STATUS = "vmcore-creation.status"


class RunEnvironment(NamedTuple):
    """Everything outside kdump.conf that the run uses, so tests can drive it."""

    actions: Actions
    vmcore: str = "/proc/vmcore"
    sysroot: str = "/sysroot"
    mount_root: str = "/kdumproot"
    kdump_dir: str = "/etc/kdump"
    cmdline: str = ""
    """The capture kernel's command line (``kdump_test_id=``)."""
    cpus: int = 1
    console: TextIO | None = None
    """Where the progress line goes (None: none)."""
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    fstab: str = "/etc/fstab"
    """Where an NFS target's mount options are looked up (Fedora's fstab entry)."""


class RunResult(NamedTuple):
    status: int
    """0: the dump was saved whole; 3: only part (the log, an incomplete or
    stepped-down dump); 1: nothing."""
    action: Action
    dump_dir: str | None


def run_capture(config: Config, env: RunEnvironment) -> RunResult:
    """Capture, then act; never raises (every way out ends in the action)."""
    os.umask(0o077)  # from the start: no file of a dump is ever readable by others
    run = _Run(config, env)
    try:
        run.capture()
    except CaptureError as error:  # the vmcore, the target: said in one line
        log.error("%s", error)
        run.manifest.note(str(error))
    except Exception as error:  # a bug of ours must not skip the action
        log.exception("kdump-capture failed: %s", error)
        run.manifest.note(f"kdump-capture failed inside itself: {error}")
    return run.end()


class _Run:
    """The state of one capture, filled in step by step."""

    def __init__(self, config: Config, env: RunEnvironment) -> None:
        self.config, self.env = config, env
        self.deadline = Deadline(config.deadline.value)
        self.manifest = Manifest(env.clock)
        self.runlog = RunLog(env.clock)
        self.hooks = Hooks.from_config(config, kdump_dir=env.kdump_dir)
        self.facts = HookFacts(vmcore=env.vmcore, config=config.file)
        self.target: TargetPlace | None = None
        self.dump_dir: DumpDir | None = None
        self.opened: list[TargetPlace] = []
        """Every target opened (or tried), to be closed at the end."""
        self.reached: list[tuple[TargetPlace, DumpDir]] = []
        """Every target with a dump directory, for kexec-dmesg.log."""
        self.target_config = config
        """The config with the target being tried as its target (fallback)."""
        self.log_saved = False
        self.dump_state: str | None = None
        """``complete``, ``incomplete``, ``skipped`` once the dump step ran."""
        self.dump_problem: str | None = None
        """Why the dump did not go whole onto this target, when the target is
        to blame (full, stalled, failed): the next target may take it."""
        self.vetoed = False
        self.crash_looping = False
        """A crash loop was seen, so no dump was wanted (only the log)."""
        self.dump_holder: DumpDir | None = None
        """The dump directory that holds the whole dump, once one does."""
        self.test_id = _test_id(env.cmdline)
        self.kernel_log: bytes | None = None

    # The sequence -----------------------------------------------------------

    def capture(self) -> None:
        log.info("kdump-capture: capturing %s (%s)", self.env.vmcore, self.config.file)
        self.kernel_log = self._crash_facts()
        if self._pre_hooks_veto():
            return
        if self.config.fallback:
            self.save_with_fallback()
        else:
            self.save(_target_for(self.config, self.env))

    def save(self, target: TargetPlace) -> None:
        """Steps 3 to 8 onto ``target`` (again onto the root filesystem for
        the ``dump_to_rootfs`` action)."""
        self._open_target(target)
        self._make_dump_dir()
        self._save_kernel_log(self.kernel_log)
        if self._crash_loop():
            return
        self._save_dump()
        self._apply_retention()

    def save_with_fallback(self) -> None:
        """Each target in order (``kdump_capture_fallback``): the log to every
        one reached, the dump to the first that takes it whole; each attempt
        in the manifest."""
        dump_wanted = True
        for number, setting in enumerate((self.config.target, *self.config.fallback), 1):
            self.target_config = self.config._replace(target=setting)
            # each target that is mounted here gets a mount point of its own
            root = self.env.mount_root if number == 1 else f"{self.env.mount_root}-{number}"
            place = _target_for(self.target_config, self.env._replace(mount_root=root))
            if self.deadline.passed():
                why = "the run's deadline (kdump_capture_deadline) had passed"
                attempt = Attempt(_describe(place), None, "not tried", why)
            else:
                attempt = self._attempt_on(place, dump_wanted)
            log.info("%s: %s%s", place.where, attempt.outcome,
                     f" ({attempt.why})" if attempt.why else "")  # fmt: skip
            self.manifest.attempt(attempt)
            dump_wanted = dump_wanted and attempt.outcome in ("unreachable", "dump failed")
        self._point_at_the_dump()

    def _attempt_on(self, place: TargetPlace, dump_wanted: bool) -> Attempt:
        """Steps 3 to 8 on one target of the fallback, said as an :class:`Attempt`.

        A target that only gets the log (the dump is elsewhere already) is
        tried once, not waited for.
        """
        self.dump_problem = None
        try:
            self._open_target(place, None if dump_wanted else _no_wait)
        except (CaptureError, OSError) as error:
            return Attempt(_describe(place), None, "unreachable", str(error))
        try:
            self._make_dump_dir()
            self._save_kernel_log(self.kernel_log)
            if dump_wanted and not self._crash_loop():
                self._save_dump()
            self._apply_retention()
        except (CaptureError, OSError) as error:
            log.error("%s: %s", place.where, error)
            self.manifest.note(f"{place.where}: {error}")
            self.dump_problem = self.dump_problem or str(error)
        here = self.reached[-1][1] if self.reached and self.reached[-1][0] is place else None
        where = here.where if here is not None else None
        if not dump_wanted:
            outcome = "log saved" if where is not None else "failed"
            return Attempt(_describe(place), where, outcome, self.dump_problem)
        if here is not None and self.dump_holder is here:
            return Attempt(_describe(place), where, "dump saved", None)
        if self.dump_problem is not None:
            return Attempt(_describe(place), where, "dump failed", self.dump_problem)
        # Not the target's fault (a crash loop, pages missing from the vmcore):
        # another target would do no better.
        return Attempt(_describe(place), where, f"dump {self.dump_state}", None)

    def _point_at_the_dump(self) -> None:
        """After the fallback: the hooks see the target that holds the dump
        (else the last one reached)."""
        holder = next((pair for pair in self.reached if pair[1] is self.dump_holder), None)
        if holder is None and self.reached:
            holder = self.reached[-1]
        if holder is None:
            return
        self.target, self.dump_dir = holder
        manifest = os.path.join(self.dump_dir.where, MANIFEST)
        target = f"{self.target.kind}:{self.target.where}"
        self.facts = self.facts._replace(target=target, dump_dir=self.dump_dir.where,
                                         manifest=manifest)  # fmt: skip

    def _crash_facts(self) -> bytes | None:
        """What the hooks and the manifest say about the crash; its log."""
        from capture.agent.crashfacts import read_crash_facts

        with self.manifest.step("crash facts"):
            facts = read_crash_facts(self.env.vmcore)
        self.facts = self.facts._replace(kernel=facts.kernel, panic=facts.panic,
                                         crash_time=facts.crash_time)  # fmt: skip
        self.manifest.update(kernel=facts.kernel, crash_time=facts.crash_time, panic=facts.panic)
        if facts.problem:
            log.warning("%s: %s", self.env.vmcore, facts.problem)
        return facts.log

    def _pre_hooks_veto(self) -> bool:
        with self.manifest.step("kdump_pre and pre.d"):
            outcome = self.hooks.pre(self.facts)
        self.vetoed = outcome.kdump_pre_failed
        if self.vetoed:
            self.manifest.note("kdump_pre failed: no dump, the final action follows (as Fedora)")
        return self.vetoed

    def _open_target(self, target: TargetPlace, wait: Waiting | None = None) -> None:
        self.target = target
        self.opened.append(target)
        self.facts = self.facts._replace(target=f"{self.target.kind}:{self.target.where}")
        self.manifest.update(target=_describe(target))
        with self.manifest.step("open target"):
            self.target.open(wait or self._wait)
        log.info("target: %s", self.target.where)

    def _make_dump_dir(self) -> None:
        assert self.target is not None
        name = _dump_dir_name(self.env.clock(), self.target.address, self.test_id)
        with self.manifest.step("dump directory"):
            self.dump_dir = self.target.make_dump_dir(name)
        self.reached.append((self.target, self.dump_dir))
        self.facts = self.facts._replace(dump_dir=self.dump_dir.where)
        log.info("saving to %s", self.dump_dir.where)
        if self.test_id is not None:
            self.dump_dir.write_file(TEST_STATUS, f"fail {self.test_id}\n".encode())
        if self.target.keeps_files:
            self.facts = self.facts._replace(manifest=os.path.join(self.dump_dir.where, MANIFEST))
            directory = self.dump_dir
            self.manifest.attach(
                lambda data, durable: directory.write_file(MANIFEST, data, durable)
            )

    def _save_kernel_log(self, kernel_log: bytes | None) -> None:
        """vmcore-dmesg-incomplete.txt, synced, renamed vmcore-dmesg.txt."""
        assert self.target is not None and self.dump_dir is not None
        if kernel_log is None or not self.target.keeps_files:
            return
        with self.manifest.step("kernel log"):
            self.dump_dir.write_file(DMESG_TEMP, kernel_log)
            self.dump_dir.publish(DMESG_TEMP, DMESG)
        self.log_saved = True
        self._record_file(DMESG)

    def _crash_loop(self) -> bool:
        assert self.target is not None and self.dump_dir is not None
        current = os.path.basename(self.dump_dir.where)
        earlier = [entry for entry in self.target.dumps() if entry.name != current]
        recent = crash_loop(earlier, self.env.clock(), self.config.crash_loop.value)
        if recent is None:
            return False
        why = (f"{recent} dumps on the target are from the last hour: a crash loop, "
               "so only the log is saved (kdump_capture_crash_loop)")  # fmt: skip
        log.warning("%s", why)
        self.manifest.note(why)
        self.dump_state = "skipped"
        self.crash_looping = True
        return True

    def _save_dump(self) -> None:
        collector = collector_for(self.target_config, self.env.cpus)
        if isinstance(collector, ExternalCollector):
            self._save_dump_with(collector)
            return
        self._save_dump_in_process(collector)

    def _save_dump_in_process(self, collector: EngineCollector) -> None:
        from capture.dumpfile.dump import DumpPlan
        from capture.vmcore import Vmcore

        assert self.target is not None and self.dump_dir is not None
        log.info("core_collector: %s", collector.command)
        options = collector.options._replace(flattened=not self.target.seekable)
        with Vmcore(self.env.vmcore) as vmcore:
            with self.manifest.step("filter"):
                planned = DumpPlan(vmcore, options)
            plan = self._fit_to_space(planned)
            if plan is None:
                self.dump_state = "skipped"
                return
            self.manifest.update(dump_level=int(options.level),
                                 format="elf" if options.elf else "kdump",
                                 codec=None if options.elf else plan.options.codec)  # fmt: skip
            self._write_dump(plan)

    def _fit_to_space(self, plan: DumpPlan) -> DumpPlan | None:
        """``plan``, or a stronger codec's, or None: only what the target can hold."""
        assert self.target is not None
        free = self.target.free_bytes()
        estimate = estimate_dump(plan)
        log.info("the dump takes about %.1f MB (%d pages)", estimate.bytes / 1e6, estimate.pages)
        if free is None or estimate.bytes <= free:
            return plan
        stronger = stronger_codec(plan)
        if stronger is not None and estimate_dump(stronger).bytes <= free:
            why = (f"{free / 1e6:.1f} MB free cannot hold about {estimate.bytes / 1e6:.1f} MB: "
                   f"{stronger.options.codec} instead of {plan.options.codec}")  # fmt: skip
            log.warning("%s", why)
            self.manifest.note(f"step-down: {why}")
            return stronger
        why = (f"{free / 1e6:.1f} MB free cannot hold the dump (about "
               f"{estimate.bytes / 1e6:.1f} MB even compressed harder): the log only")  # fmt: skip
        log.error("%s", why)
        self.manifest.note(f"step-down: {why}")
        self.dump_problem = why
        return None

    def _write_dump(self, plan: DumpPlan) -> None:
        from capture.progress import ProgressLine, page_summary

        assert self.target is not None and self.dump_dir is not None
        progress = ProgressLine.factory(self.env.console) if self.env.console else None
        with self.manifest.step("dump") as step:
            file = WatchedFile(self.dump_dir.create(DUMP_TEMP), self.deadline,
                               self.config.stall_timeout.value)  # fmt: skip
            try:
                report = plan.write(file, progress)
            except BaseException:
                file.close()
                raise
            if file.ended:
                self.manifest.note(file.ended)
            step["pages"] = report.stats.report()
            log.info("%s", page_summary(report))
            if report.outcome.incomplete:
                file.close()
                self.dump_state = INCOMPLETE
                if not report.outcome.unreadable:  # the target's fault, not the vmcore's
                    self.dump_problem = file.ended or "the target ran out of space"
                self._record_file(DUMP_TEMP, INCOMPLETE)
                return
            file.sync()
            file.close()
            final = "vmcore" if self.target.seekable else "vmcore.flat"
            self.dump_dir.publish(DUMP_TEMP, final)
        self.dump_state = COMPLETE
        self.dump_holder = self.dump_dir
        self._record_file(final)

    def _save_dump_with(self, collector: ExternalCollector) -> None:
        """The user's command, as Fedora runs it, into vmcore-incomplete."""
        import subprocess

        assert self.target is not None and self.dump_dir is not None
        if not self.target.seekable or not self.target.keeps_files:
            raise TargetError(f"core_collector {collector.argv[0]} is only run for a filesystem "
                              "target here; use makedumpfile for a raw or ssh target")  # fmt: skip
        temporary = os.path.join(self.dump_dir.where, DUMP_TEMP)
        argv = collector.arguments(self.env.vmcore, temporary)
        log.info("core_collector: %s", " ".join(argv))
        with self.manifest.step("dump"):
            done = subprocess.run(argv, check=False, timeout=self.deadline.left())
            if done.returncode != 0:
                self.dump_state = INCOMPLETE
                self._record_file(DUMP_TEMP, INCOMPLETE)
                raise CaptureError(f"{argv[0]} exited with {done.returncode}")
            self.dump_dir.publish(DUMP_TEMP, "vmcore")
        self.dump_state = COMPLETE
        self.dump_holder = self.dump_dir
        self._record_file("vmcore")

    def _apply_retention(self) -> None:
        assert self.target is not None and self.dump_dir is not None
        keep = self.config.keep_dumps.value
        if keep <= 0:
            return
        current = os.path.basename(self.dump_dir.where)
        removed = remove_old_dumps(self.target, keep, current)
        if removed:
            names = ", ".join(removed)
            self.manifest.note(f"retention: removed {names} (kdump_capture_keep_dumps)")

    # The end ----------------------------------------------------------------

    def end(self) -> RunResult:
        """Hooks, manifest, log and action, whatever the capture did."""
        status = self._status()
        action = self._action(status)
        self.facts = self.facts._replace(status=0 if status == EXIT_COMPLETE else 1)
        if self._failed(status):
            self._safely("emergency hooks", lambda: self.hooks.emergency(self.facts))
        if not self.vetoed:  # Fedora's kdump_post runs after every dump attempt, even
            # one whose target never came (it is told so by its $1); not after a veto
            self._safely("kdump_post and post.d", lambda: self.hooks.post(self.facts))
        self._finish(status, action)
        if action is Action.DUMP_TO_ROOTFS:
            status = self._dump_to_rootfs(status)
            action = self.config.final_action.value
        log.info("kdump-capture: %s", _STATUS_WORDS[status])
        if action is Action.SHELL:  # the user looks around (the target still mounted), then
            self.env.actions.perform(action, before_acting=self._save_run_log)
            action = self.config.final_action.value
        self.env.actions.perform(action, before_acting=self._leave)
        return RunResult(status, action, self.dump_dir.where if self.dump_dir else None)

    def _finish(self, status: int, action: Action) -> None:
        """The manifest and test status completed."""
        self._safely("manifest", lambda: self._finish_manifest(status, action))
        self._safely("test status", lambda: self._finish_test_status(status))

    def _leave(self) -> None:
        """kexec-dmesg.log saved last (its last line names the action), then
        the targets let go (unmounted)."""
        self._save_run_log()
        for target in self.opened:
            self._safely("close target", target.close)
        self.opened = []

    def _dump_to_rootfs(self, status: int) -> int:
        """The failure action dump_to_rootfs: the same capture onto the root
        filesystem (Fedora: no hooks again), then the final action."""
        from capture.agent.targets.local import LocalTarget

        log.info("%s", action_line(Action.DUMP_TO_ROOTFS))  # named as every action is
        root = self.env.actions.mount_root()
        if root is None:
            log.error("dump_to_rootfs: the root filesystem cannot be mounted")
            return status
        log.info("dump_to_rootfs: saving onto the root filesystem at %s", root)
        self._leave()
        self.dump_dir, self.dump_state, self.log_saved = None, None, False
        self.reached, self.target_config = [], self.config._replace(target=None)
        self.manifest = Manifest(self.env.clock)
        try:
            self.save(LocalTarget(None, self.config.path.value, sysroot=root))
        except Exception as error:
            log.exception("dump_to_rootfs failed: %s", error)
        status = self._status()
        self._finish(status, self.config.final_action.value)
        return status

    def _status(self) -> int:
        if self.dump_state == COMPLETE:
            return EXIT_COMPLETE
        if self.log_saved or self.dump_state == INCOMPLETE:
            return EXIT_PARTIAL
        return EXIT_FAILED

    def _action(self, status: int) -> Action:
        chosen = self.config.failure_action if self._failed(status) else self.config.final_action
        return chosen.value

    def _failed(self, status: int) -> bool:
        """Fedora: a capture that did not save the dump whole has failed, whatever
        log it saved first (a makedumpfile that fails fails kdump.sh), and takes
        failure_action after the emergency hooks. A kdump_pre veto and a crash
        loop wanted no dump: final_action."""
        return status != EXIT_COMPLETE and not self.vetoed and not self.crash_looping

    def _finish_manifest(self, status: int, action: Action) -> None:
        states = {EXIT_COMPLETE: COMPLETE, EXIT_PARTIAL: INCOMPLETE, EXIT_FAILED: FAILED}
        self.manifest.complete(status=states[status], action=action.value,
                             finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))  # fmt: skip

    def _finish_test_status(self, status: int) -> None:
        if self.test_id is not None and self.dump_dir is not None:
            word = "success" if status == EXIT_COMPLETE else "fail"
            self.dump_dir.write_file(TEST_STATUS, f"{word} {self.test_id}\n".encode())

    def _save_run_log(self) -> None:
        """kexec-dmesg.log: this run's log, in every dump directory."""
        places = [(target, directory) for target, directory in self.reached if target.keeps_files]
        if not places:
            return
        text = self.runlog.text(self._capture_kernel_log())
        for _target, directory in places:
            try:
                directory.write_file(RUN_LOG, text)
            except (OSError, CaptureError) as error:
                log.error("cannot save %s in %s: %s", RUN_LOG, directory.where, error)

    def _capture_kernel_log(self) -> str | None:
        """In the capture kernel, its own log (``dmesg -T``), as Fedora keeps it."""
        if self.env.vmcore != "/proc/vmcore":
            return None  # a saved vmcore: this kernel's log tells nothing of the crash
        import subprocess

        try:
            done = subprocess.run(["dmesg", "-T"], capture_output=True, text=True, timeout=10,
                                  check=False, errors="replace")  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout or None

    def _record_file(self, name: str, status: str = COMPLETE) -> None:
        assert self.dump_dir is not None
        facts = self.dump_dir.sha256(name)
        size, digest = facts if facts is not None else (0, None)
        self.manifest.file(name, status, size, digest)

    def _wait(self, seconds: float) -> bool:
        """Between tries at the target: False once the run's time is up (the
        targets bound their own waits for a device)."""
        left = self.deadline.left()
        if left is not None and left <= seconds:
            return False
        self.env.sleep(seconds)
        return True

    def _safely(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as error:  # the end must reach the action
            log.exception("%s failed: %s", what, error)


_STATUS_WORDS = {
    EXIT_COMPLETE: "the dump was saved",
    EXIT_PARTIAL: "only part was saved",
    EXIT_FAILED: "nothing could be saved",
}


def _target_for(config: Config, env: RunEnvironment) -> TargetPlace:
    """The target kdump.conf names (none: the root filesystem)."""
    target: Target | None = config.target.value if config.target else None
    path = config.path.value
    if target is None or isinstance(target, FilesystemTarget):
        from capture.agent.targets.local import LocalTarget

        return LocalTarget(target, path, sysroot=env.sysroot, mount_root=env.mount_root)
    if isinstance(target, RawTarget):
        from capture.agent.targets.raw import RawDeviceTarget

        return RawDeviceTarget(target)
    if isinstance(target, NfsTarget):
        from capture.agent.targets.nfs import NfsExportTarget

        return NfsExportTarget(target, path, mount_root=env.mount_root, fstab=env.fstab,
                               mount_wait=config.network_timeout.value,
                               stall_seconds=config.stall_timeout.value)  # fmt: skip
    from capture.agent.config import SshTarget

    if isinstance(target, SshTarget):
        from capture.agent.collector import copies_whole_vmcore
        from capture.agent.targets.ssh import SftpTarget

        # scp's copy is an ELF file, written at its offsets: never flattened
        flat = config.ssh_format.value == "flat" and not copies_whole_vmcore(config)
        return SftpTarget(target, path, config.sshkey.value, flattened=flat,
                          network_seconds=config.network_timeout.value,
                          known_hosts=os.path.join(env.kdump_dir, "known_hosts"))  # fmt: skip
    raise TargetError(f"{target}: this target is not supported yet; use a local or raw target")


def _no_wait(seconds: float) -> bool:
    """A target that only gets the log is tried once: never waited for."""
    return False


def _describe(target: TargetPlace) -> dict[str, str]:
    """A target as the manifest names it."""
    return {"kind": target.kind, "where": target.where}


def _dump_dir_name(now: float, ip: str, test_id: str | None) -> str:
    """Fedora's ``<ip>-<YYYY-MM-DD-HH:MM:SS>``, or ``kdump-test-<id>`` in test mode."""
    if test_id is not None:
        return f"kdump-test-{test_id}"
    return f"{ip}-{time.strftime('%Y-%m-%d-%H:%M:%S', time.localtime(now))}"


def _test_id(cmdline: str) -> str | None:
    """``kdump_test_id=<id>`` from the command line, made safe for a path."""
    for word in cmdline.split():
        if word.startswith("kdump_test_id="):
            value = word.partition("=")[2]
            safe = "".join(c for c in value if c.isalnum() or c in "-_.")
            return safe or None
    return None
