"""capture.agent.hooks: real hook scripts run as real processes.

Each hook is a small sh script written into tmp_path. Time limits are half a
second, so a test of a hanging hook costs about that.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from capture.agent.config import HookStage, parse_config
from capture.agent.hooks import (
    TAIL_BYTES,
    HookFacts,
    HookResult,
    Hooks,
    hook_environment,
    hooks_in,
    run_hook,
)

REPO = Path(__file__).resolve().parent.parent
# Hooks meant to finish get a limit a loaded CI machine never reaches;
# only hooks meant to hang get the short one.
TIMEOUT = 60.0
HANGS = 0.5


def script(path: Path, body: str, mode: int = 0o755) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return str(path)


def quiet(data: bytes) -> None:
    """A console nobody watches."""


class Counter:
    """A console that counts what it is sent and keeps none of it."""

    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self, data: bytes) -> None:
        self.bytes += len(data)


def hooks(tmp_path: Path, timeout: float = TIMEOUT, **directives: str) -> Hooks:
    """Hooks with /etc/kdump at tmp_path/kdump and the given directives."""
    named = {stage: directives.get(stage.value) for stage in HookStage}
    return Hooks(named, kdump_dir=str(tmp_path / "kdump"), timeout=timeout, grace=0.5,
                 console=quiet)  # fmt: skip


def recorder(tmp_path: Path, name: str, record: Path) -> str:
    """A hook that appends its name and arguments to ``record``."""
    return script(tmp_path / name, f'echo "{name.split("/")[-1]} $*" >> {record}\n')


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def run(
    path: str,
    *args: str,
    facts: HookFacts | None = None,
    timeout: float = TIMEOUT,
    stage: HookStage = HookStage.POST,
    grace: float = 0.5,
) -> HookResult:
    env = hook_environment(facts or HookFacts(), stage, timeout)
    return run_hook(path, args, env=env, timeout=timeout, grace=grace, console=quiet)


# Order and arguments -------------------------------------------------------


def test_pre_runs_kdump_pre_then_pre_d_in_byte_order(tmp_path: Path) -> None:
    record = tmp_path / "record"
    for name in ("b", "a", "B", "10-x", "9-y", "a~", ".hidden", "z.rpmsave"):
        recorder(tmp_path, f"kdump/pre.d/{name}", record)
    kdump_pre = recorder(tmp_path, "kdump_pre", record)
    outcome = hooks(tmp_path, pre=kdump_pre).pre(HookFacts())
    # C locale: digits, then upper case, then lower case; no backups, no dot files.
    assert lines(record) == ["kdump_pre ", "10-x ", "9-y ", "B ", "a ", "b "]
    assert not outcome.kdump_pre_failed
    assert [result.ok for result in outcome.results] == [True] * 6


def test_post_runs_post_d_then_kdump_post_each_with_the_status_as_1(tmp_path: Path) -> None:
    record = tmp_path / "record"
    recorder(tmp_path, "kdump/post.d/02-second", record)
    recorder(tmp_path, "kdump/post.d/01-first", record)
    kdump_post = recorder(tmp_path, "kdump_post", record)
    results = hooks(tmp_path, post=kdump_post).post(HookFacts(status=1))
    assert lines(record) == ["01-first 1", "02-second 1", "kdump_post 1"]
    assert len(results) == 3


def test_emergency_runs_emergency_d_then_kdump_emergency_without_arguments(
    tmp_path: Path,
) -> None:
    record = tmp_path / "record"
    recorder(tmp_path, "kdump/emergency.d/only", record)
    kdump_emergency = recorder(tmp_path, "kdump_emergency", record)
    hooks(tmp_path, emergency=kdump_emergency).emergency(HookFacts(status=1))
    assert lines(record) == ["only ", "kdump_emergency "]


def test_a_failing_kdump_pre_vetoes_the_dump_and_pre_d_does_not_run(tmp_path: Path) -> None:
    record = tmp_path / "record"
    recorder(tmp_path, "kdump/pre.d/01", record)
    kdump_pre = script(tmp_path / "kdump_pre", "exit 7\n")
    outcome = hooks(tmp_path, pre=kdump_pre).pre(HookFacts())
    assert outcome.kdump_pre_failed
    assert [result.status for result in outcome.results] == [7]
    assert lines(record) == []


def test_a_failing_pre_d_hook_is_only_logged(tmp_path: Path) -> None:
    record = tmp_path / "record"
    script(tmp_path / "kdump/pre.d/01-fails", "exit 3\n")
    recorder(tmp_path, "kdump/pre.d/02-runs", record)
    outcome = hooks(tmp_path).pre(HookFacts())
    assert not outcome.kdump_pre_failed
    assert [result.status for result in outcome.results] == [3, 0]
    assert lines(record) == ["02-runs "]


def test_a_kdump_pre_that_cannot_start_does_not_veto(tmp_path: Path) -> None:
    # It said nothing: the dump goes on (Fedora's shell would fail with 127).
    outcome = hooks(tmp_path, pre=str(tmp_path / "missing")).pre(HookFacts())
    assert not outcome.kdump_pre_failed
    assert outcome.results[0].status is None
    assert "does not exist" in outcome.results[0].error


def test_a_kdump_pre_killed_at_its_time_limit_does_not_veto(tmp_path: Path) -> None:
    kdump_pre = script(tmp_path / "kdump_pre", "sleep 100\n")
    outcome = hooks(tmp_path, timeout=HANGS, pre=kdump_pre).pre(HookFacts())
    assert outcome.results[0].timed_out
    assert not outcome.kdump_pre_failed


def test_directories_run_only_regular_executable_files(tmp_path: Path) -> None:
    directory = tmp_path / "post.d"
    script(directory / "runs", "")
    script(directory / "not-executable", "", mode=0o644)
    script(directory / "edited~", "")
    script(directory / "old.bak", "")
    script(directory / ".dotfile", "")
    (directory / "a-directory").mkdir()
    os.symlink(directory / "runs", directory / "link-to-runs")
    os.symlink(tmp_path / "nowhere", directory / "dangling")
    assert hooks_in(str(directory)) == [str(directory / "link-to-runs"), str(directory / "runs")]


def test_a_missing_directory_holds_no_hooks(tmp_path: Path) -> None:
    assert hooks_in(str(tmp_path / "none")) == []
    assert hooks(tmp_path).post(HookFacts()) == []


# The environment -----------------------------------------------------------


def test_every_hook_gets_the_facts_in_its_environment(tmp_path: Path) -> None:
    dump = tmp_path / "kdump" / "post.d" / "env"
    script(dump, f"env | grep ^KDUMP_CAPTURE_ | sort > {tmp_path / 'env'}\n")
    facts = HookFacts(
        status=0,
        dump_dir="/var/crash/127.0.0.1-2024-05-01-10:00:00",
        manifest="/var/crash/127.0.0.1-2024-05-01-10:00:00/manifest.json",
        target="local:/var/crash",
        kernel="6.8.9-300.fc40.x86_64",
        panic="Kernel panic - not syncing: sysrq triggered crash",
        crash_time="2024-05-01T10:00:00+00:00",
        vmcore="/proc/vmcore",
        config="/etc/kdump.conf",
    )
    hooks(tmp_path).post(facts)
    env = dict(line.split("=", 1) for line in lines(tmp_path / "env"))
    assert env == {
        "KDUMP_CAPTURE_STATUS": "0",
        "KDUMP_CAPTURE_DUMP_DIR": facts.dump_dir,
        "KDUMP_CAPTURE_MANIFEST": facts.manifest,
        "KDUMP_CAPTURE_TARGET": "local:/var/crash",
        "KDUMP_CAPTURE_KERNEL": "6.8.9-300.fc40.x86_64",
        "KDUMP_CAPTURE_PANIC": facts.panic,
        "KDUMP_CAPTURE_CRASH_TIME": facts.crash_time,
        "KDUMP_CAPTURE_VMCORE": "/proc/vmcore",
        "KDUMP_CAPTURE_CONFIG": "/etc/kdump.conf",
        "KDUMP_CAPTURE_STAGE": "post",
        "KDUMP_CAPTURE_HOOK_TIMEOUT": "60",
    }


def test_the_stage_is_named_and_the_inherited_environment_kept(tmp_path: Path) -> None:
    env = hook_environment(HookFacts(), HookStage.EMERGENCY, 300, {"HOME": "/root"})
    assert env["KDUMP_CAPTURE_STAGE"] == "emergency"
    assert env["HOME"] == "/root"
    assert env["PATH"]  # a hook finds sh tools even if we were started without PATH
    assert env["KDUMP_CAPTURE_DUMP_DIR"] == ""


def test_a_hostile_panic_line_is_only_a_string(tmp_path: Path) -> None:
    # NUL and newlines from corrupt memory, and shell syntax: never run, never an error.
    panic = "Kernel panic $(touch PWNED) `touch PWNED`; touch PWNED\x00\nnext\x1b[2J" + "x" * 9000
    hook = script(tmp_path / "hook", 'printf "%s" "$KDUMP_CAPTURE_PANIC"\n')
    result = run(hook, facts=HookFacts(panic=panic))
    assert result.ok
    assert result.output_tail.startswith("Kernel panic $(touch PWNED) `touch PWNED`; touch PWNED??")
    assert len(result.output_tail) == 4096
    assert not list(Path("/").glob("PWNED")) and not list(tmp_path.glob("PWNED"))


# One hook: time limit, failures, output ------------------------------------


def test_a_hanging_hook_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    body = f"sleep 100 &\necho $! > {pid_file}\necho started\nsleep 100\n"
    hook = script(tmp_path / "hangs", body)
    start = time.monotonic()
    result = run(hook, timeout=HANGS, grace=5)
    # SIGTERM to the whole group ends it at once: no waiting out the grace.
    assert time.monotonic() - start < HANGS + 1.5
    assert result.timed_out and result.status is None
    assert "started" in result.output_tail
    assert not _running(int(pid_file.read_text()))


def test_a_hook_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    hook = script(
        tmp_path / "stubborn",
        f"trap '' TERM\n(trap '' TERM; sleep 100) &\necho $! > {pid_file}\n"
        "while :; do sleep 1; done\n",
    )
    result = run(hook, timeout=HANGS)
    assert result.timed_out
    assert not _running(int(pid_file.read_text()))


def test_a_hook_that_leaves_a_child_running_is_done_when_it_exits(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    hook = script(tmp_path / "daemon", f"sleep 30 &\necho $! > {pid_file}\necho bye\n")
    start = time.monotonic()
    result = run(hook, timeout=10)
    try:
        assert time.monotonic() - start < 2  # not until the child closes the pipe
        assert result.ok and not result.timed_out
        assert "bye" in result.output_tail
        assert _running(int(pid_file.read_text()))  # Fedora leaves it too
    finally:
        os.kill(int(pid_file.read_text()), 9)


def test_a_non_executable_hook_is_reported_not_raised(tmp_path: Path) -> None:
    hook = script(tmp_path / "plain", "echo never\n", mode=0o644)
    result = run(hook)
    assert result.status is None and not result.timed_out
    assert "not executable" in result.error


def test_a_missing_hook_is_reported_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="capture"):
        result = run(str(tmp_path / "missing"))
    assert result.status is None and result.error == "does not exist"
    assert "missing does not exist" in caplog.text


def test_a_hook_that_cannot_be_exec_ed_is_reported(tmp_path: Path) -> None:
    hook = tmp_path / "bad-interpreter"
    hook.write_text("#!/nonexistent/interpreter\n")
    hook.chmod(0o755)
    result = run(str(hook))
    assert result.status is None
    assert result.error.startswith("could not be started")


def test_a_spawn_that_fails_is_reported(tmp_path: Path) -> None:
    def refuses(argv: object, env: object) -> subprocess.Popen[bytes]:
        raise OSError(12, "Cannot allocate memory")

    hook = script(tmp_path / "hook", "")
    env = hook_environment(HookFacts(), HookStage.PRE, TIMEOUT)
    result = run_hook(hook, env=env, timeout=TIMEOUT, spawn=refuses, console=quiet)
    assert result.status is None and "Cannot allocate memory" in result.error


def test_exit_status_and_signals_are_reported(tmp_path: Path) -> None:
    assert run(script(tmp_path / "three", "exit 3\n")).status == 3
    assert run(script(tmp_path / "killed", "kill -9 $$\n")).status == -9


def test_a_flood_of_output_keeps_only_a_tail(tmp_path: Path) -> None:
    console = Counter()
    hook = script(
        tmp_path / "floods",
        "i=0; while [ $i -lt 2000 ]; do printf '%01000d\\n' $i; i=$((i+1)); done; echo THE-END\n",
    )
    env = hook_environment(HookFacts(), HookStage.POST, 10)
    result = run_hook(hook, env=env, timeout=10, console=console)
    assert result.ok
    assert console.bytes == 2000 * 1001 + len("THE-END\n")  # the console gets it all
    assert result.output_tail.endswith("THE-END\n")
    assert "bytes before this not kept" in result.output_tail
    assert len(result.output_tail) < TAIL_BYTES + 100


def test_output_goes_to_the_console_whole_and_to_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen = bytearray()
    hook = script(tmp_path / "talks", "echo to-stdout\necho to-stderr >&2\n")
    env = hook_environment(HookFacts(), HookStage.POST, TIMEOUT)
    with caplog.at_level(logging.INFO, logger="capture"):
        run_hook(hook, env=env, timeout=TIMEOUT, console=seen.extend)
    assert seen == b"to-stdout\nto-stderr\n"
    assert "talks| to-stdout" in caplog.text and "talks| to-stderr" in caplog.text


def test_the_clock_is_the_one_passed_in(tmp_path: Path) -> None:
    ticks = iter(range(0, 1000, 10))
    hook = script(tmp_path / "quick", "")
    env = hook_environment(HookFacts(), HookStage.POST, 0)
    result = run_hook(hook, env=env, timeout=0, console=quiet, clock=lambda: next(ticks))
    assert result.ok and result.seconds % 10 == 0 and result.seconds > 0


def test_from_config_takes_the_directives_and_the_time_limit(tmp_path: Path) -> None:
    record = tmp_path / "record"
    kdump_post = recorder(tmp_path, "post-hook", record)
    text = f"kdump_post {kdump_post}\nkdump_capture_hook_timeout 7\n"
    config = parse_config(text, "kdump.conf").config
    runner = Hooks.from_config(config, kdump_dir=str(tmp_path / "kdump"))
    assert runner.timeout == 7
    runner.console = quiet
    runner.post(HookFacts(status=0))
    assert lines(record) == ["post-hook 0"]


def _running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 of a container may be slow to reap)."""
    for _ in range(20):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return False
        if state == "Z":
            return False
        time.sleep(0.05)
    return True


# The example hooks in hooks/ -----------------------------------------------


SHELLS = [shell for shell in ("sh", "busybox") if shutil.which(shell)]


@pytest.fixture
def dump_dir(tmp_path: Path) -> Path:
    """A dump directory as the run leaves it, with a manifest."""
    directory = tmp_path / "crash" / "127.0.0.1-2024-05-01-10:00:00"
    directory.mkdir(parents=True)
    (directory / "vmcore-dmesg.txt").write_text("[    0.000000] Linux version 6.8.9\n" * 10)
    (directory / "vmcore").write_bytes(b"KDUMP   " + bytes(1000))
    manifest = {"status": "complete", "files": {"vmcore": {"status": "complete", "bytes": 1008}}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def example(name: str, shell: str, tmp_path: Path) -> str:
    """The example hook, run by ``shell`` (busybox: its sh, as in an initramfs)."""
    source = REPO / "hooks" / name
    if shell == "sh":
        return str(source)
    wrapper = tmp_path / f"{name}-{shell}"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which(shell)} sh {source} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def facts_for(dump_dir: Path, **changes: object) -> HookFacts:
    facts = HookFacts(
        status=0,
        dump_dir=str(dump_dir),
        manifest=str(dump_dir / "manifest.json"),
        target=f"local:{dump_dir.parent}",
        kernel="6.8.9-300.fc40.x86_64",
        panic="Kernel panic - not syncing: sysrq triggered crash",
        crash_time="2024-05-01T10:00:00+00:00",
    )
    return facts._replace(**changes)  # type: ignore[arg-type]


def test_the_examples_are_executable_posix_sh() -> None:
    for path in (REPO / "hooks").glob("*.sh"):
        assert os.access(path, os.X_OK), path
        assert path.read_text().startswith("#!/bin/sh\n"), path
        subprocess.run(["sh", "-n", str(path)], check=True)


@pytest.mark.parametrize("shell", SHELLS)
def test_post_summary_prints_the_panic_and_what_was_saved(
    shell: str, dump_dir: Path, tmp_path: Path
) -> None:
    hook = example("post-summary.sh", shell, tmp_path)
    result = run(hook, "0", facts=facts_for(dump_dir))
    assert result.ok, result.output_tail
    out = result.output_tail.splitlines()
    assert out[0] == "kdump: kernel 6.8.9-300.fc40.x86_64 crashed at 2024-05-01T10:00:00+00:00"
    assert out[1] == "kdump: panic: Kernel panic - not syncing: sysrq triggered crash"
    assert out[2] == f"kdump: dump saved to local:{dump_dir.parent}"
    dmesg_size = (dump_dir / "vmcore-dmesg.txt").stat().st_size
    assert f"kdump: {1008:>14}  vmcore" in out
    assert f"kdump: {dmesg_size:>14}  vmcore-dmesg.txt" in out
    assert out[-1] == f"kdump: details (sizes, sha256, steps): {dump_dir / 'manifest.json'}"


@pytest.mark.parametrize("shell", SHELLS)
def test_post_summary_says_when_nothing_was_saved(shell: str, tmp_path: Path) -> None:
    hook = example("post-summary.sh", shell, tmp_path)
    panic = "Kernel panic - not syncing: $(touch PWNED)"
    result = run(hook, "1", facts=HookFacts(status=1, target="raw:/dev/sdb1", panic=panic))
    assert result.ok
    assert "kdump: panic: Kernel panic - not syncing: $(touch PWNED)\n" in result.output_tail
    assert "kdump: dump NOT saved (status 1) to raw:/dev/sdb1\n" in result.output_tail
    assert "kdump: no dump directory\n" in result.output_tail
    assert not (Path("/") / "PWNED").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_post_copy_dmesg_copies_the_log_to_a_second_directory(
    shell: str, dump_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = tmp_path / "second"
    monkeypatch.setenv("KDUMP_DMESG_COPY_TO", str(second))
    hook = example("post-copy-dmesg.sh", shell, tmp_path)
    result = run(hook, "0", facts=facts_for(dump_dir))
    assert result.ok, result.output_tail
    copy = second / "127.0.0.1-2024-05-01-10:00:00-vmcore-dmesg.txt"
    assert copy.read_bytes() == (dump_dir / "vmcore-dmesg.txt").read_bytes()
    assert copy.stat().st_mode & 0o777 == 0o600
    assert f"copied to {copy}" in result.output_tail
    assert [path.name for path in second.iterdir()] == [copy.name]


@pytest.mark.parametrize("shell", SHELLS)
def test_post_copy_dmesg_writes_onto_a_character_device(
    shell: str, dump_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KDUMP_DMESG_COPY_TO", "/dev/null")
    hook = example("post-copy-dmesg.sh", shell, tmp_path)
    result = run(hook, "0", facts=facts_for(dump_dir))
    assert result.ok
    assert result.output_tail == "copy-dmesg: vmcore-dmesg.txt written to /dev/null\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_post_copy_dmesg_without_a_log_copies_nothing(
    shell: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = tmp_path / "second"
    monkeypatch.setenv("KDUMP_DMESG_COPY_TO", str(second))
    empty = tmp_path / "empty-dump"
    empty.mkdir()
    hook = example("post-copy-dmesg.sh", shell, tmp_path)
    result = run(hook, "1", facts=HookFacts(status=1, dump_dir=str(empty)))
    assert result.ok
    assert "nothing to copy" in result.output_tail
    assert not second.exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_pre_target_state_logs_the_target_and_memory(shell: str, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    hook = example("pre-target-state.sh", shell, tmp_path)
    facts = HookFacts(target=f"local:{target}/var/crash")
    result = run(hook, facts=facts, stage=HookStage.PRE)
    assert result.ok
    out = result.output_tail
    assert f"target-state: target local:{target}/var/crash (stage pre)\n" in out
    assert f"{target}/var/crash does not exist (yet); nearest is {target}\n" in out
    assert f"target-state: free space at {target}:\n" in out
    assert "Available" in out  # df's header
    assert "target-state: MemAvailable " in out


@pytest.mark.parametrize("shell", SHELLS)
def test_pre_target_state_for_a_raw_target(shell: str, tmp_path: Path) -> None:
    hook = example("pre-target-state.sh", shell, tmp_path)
    not_a_device = tmp_path / "sdb1"
    not_a_device.write_bytes(b"")
    result = run(hook, facts=HookFacts(target=f"raw:{not_a_device}"), stage=HookStage.PRE)
    assert result.ok
    assert f"target-state: {not_a_device} is not a block device (yet)\n" in result.output_tail
