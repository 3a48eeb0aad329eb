"""kdump.conf: the parser, its lenient and strict readings, and check-config."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from capture.agent.checkconfig import check_config
from capture.agent.config import (
    DEFAULT_SSHKEY,
    DEPRECATED,
    Action,
    Config,
    Device,
    DeviceBy,
    FilesystemTarget,
    HookStage,
    NfsTarget,
    Origin,
    RawTarget,
    SshTarget,
    load_config,
    parse_config,
)
from capture.cli import main

# The directive lines of the kdump.conf Fedora ships (kdump-utils' gen-kdump-conf.sh),
# commented examples and live lines as they are; its long explanatory comment
# block is summed up by our own first line.
FEDORA_EXAMPLES = [
    "raw /dev/vg/lv_kdump",
    "ext4 /dev/vg/lv_kdump",
    "ext4 LABEL=/boot",
    "ext4 UUID=03138356-5e61-4ab3-b58e-27507ac41937",
    "virtiofs myfs",
    "nfs my.server.com:/export/tmp",
    "nfs [2001:db8::1:2:3:4]:/export/tmp",
    "ssh user@my.server.com",
    "ssh user@2001:db8::1:2:3:4",
    "sshkey /root/.ssh/kdump_id_rsa",
]
FEDORA_LATER_EXAMPLES = [
    "core_collector scp",
    "kdump_post /var/crash/scripts/kdump-post.sh",
    "kdump_pre /var/crash/scripts/kdump-pre.sh",
    "extra_bins /usr/bin/lftp",
    "extra_modules gfs2",
    "failure_action shell",
    "force_rebuild 1",
    "force_no_rebuild 1",
    'dracut_args --omit-drivers "cfg80211 snd" --add-drivers "ext2 ext3"',
    "fence_kdump_args -p 7410 -f auto -c 0 -i 10",
    "fence_kdump_nodes node1 node2",
]
FEDORA_LIVE = [
    "auto_reset_crashkernel yes",
    "path /var/crash",
    "core_collector makedumpfile -l --message-level 7 -d 31",
]
FEDORA_STOCK = "\n".join(
    [
        "# kdump.conf as Fedora ships it (the documentation comments are left out here).",
        "#",
        *(f"#{line}" for line in FEDORA_EXAMPLES),
        *FEDORA_LIVE,
        *(f"#{line}" for line in FEDORA_LATER_EXAMPLES),
        "",
    ]
)
STOCK_PATH_LINE = 2 + len(FEDORA_EXAMPLES) + 2  # the live 'path' line
STOCK_COLLECTOR_LINE = STOCK_PATH_LINE + 1


def write(tmp_path, text: str, name: str = "kdump.conf") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def executable(path, text: str = "#!/bin/sh\nexit 0\n", mode: int = 0o700) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


@pytest.fixture
def kdump_dir(tmp_path) -> str:
    """An empty /etc/kdump, so the machine's own hooks do not leak into a test."""
    directory = tmp_path / "etc-kdump"
    directory.mkdir()
    return str(directory)


# Fedora's stock file --------------------------------------------------------


def test_fedora_stock_file_reads_clean() -> None:
    parsed = parse_config(FEDORA_STOCK, "kdump.conf")
    assert parsed.skipped == [] and parsed.strict_only == []
    config = parsed.config
    assert config.target is None  # the root filesystem
    assert config.path.value == "/var/crash"
    assert config.path.origin == Origin("kdump.conf", STOCK_PATH_LINE)
    assert config.core_collector is not None
    assert config.core_collector.value == "makedumpfile -l --message-level 7 -d 31"
    assert config.core_collector.origin.line == STOCK_COLLECTOR_LINE
    assert config.auto_reset_crashkernel.value is True
    assert config.auto_reset_crashkernel.origin.line == STOCK_PATH_LINE - 1
    assert config.failure_action.value is Action.REBOOT and config.failure_action.is_default
    assert config.final_action.value is Action.REBOOT


def test_fedora_stock_file_passes_check_config(tmp_path, kdump_dir, capsys) -> None:
    path = write(tmp_path, FEDORA_STOCK)
    assert check_config(path, kdump_dir) == []
    assert main(["check-config", path, "--kdump-dir", kdump_dir]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: no problems\n" and err == ""


def test_fedora_s390x_stock_collector_is_clean(tmp_path, kdump_dir) -> None:
    text = FEDORA_STOCK.replace("makedumpfile -l", "makedumpfile -c")
    assert "makedumpfile -c --message-level 7 -d 31" in text
    assert check_config(write(tmp_path, text), kdump_dir) == []


@pytest.mark.parametrize("example", FEDORA_EXAMPLES + FEDORA_LATER_EXAMPLES)
def test_each_stock_example_uncommented_is_understood(example: str) -> None:
    text = FEDORA_STOCK.replace(f"#{example}\n", f"{example}\n", 1)
    assert text != FEDORA_STOCK
    parsed = parse_config(text, "kdump.conf")
    assert parsed.skipped == []
    # Only the 'core_collector scp' example repeats a directive a live line sets.
    repeated = {problem.origin.line for problem in parsed.strict_only}
    assert repeated <= {STOCK_COLLECTOR_LINE + 1}


@pytest.mark.parametrize(
    ("line", "target"),
    [
        ("raw /dev/vg/lv_kdump", RawTarget(Device(DeviceBy.NODE, "/dev/vg/lv_kdump"))),
        ("ext4 /dev/vg/lv_kdump",
         FilesystemTarget("ext4", Device(DeviceBy.NODE, "/dev/vg/lv_kdump"))),
        ("ext4 LABEL=/boot", FilesystemTarget("ext4", Device(DeviceBy.LABEL, "/boot"))),
        ("xfs UUID=03138356-5e61-4ab3-b58e-27507ac41937",
         FilesystemTarget("xfs", Device(DeviceBy.UUID, "03138356-5e61-4ab3-b58e-27507ac41937"))),
        ("btrfs LABEL=data", FilesystemTarget("btrfs", Device(DeviceBy.LABEL, "data"))),
        ("minix /dev/sdc1", FilesystemTarget("minix", Device(DeviceBy.NODE, "/dev/sdc1"))),
        ("ext2 /dev/sdc1", FilesystemTarget("ext2", Device(DeviceBy.NODE, "/dev/sdc1"))),
        ("ext3 UUID=1234", FilesystemTarget("ext3", Device(DeviceBy.UUID, "1234"))),
        ("virtiofs myfs", FilesystemTarget("virtiofs", Device(DeviceBy.TAG, "myfs"))),
        ("nfs my.server.com:/export/tmp", NfsTarget("my.server.com", "/export/tmp")),
        ("nfs [2001:db8::1:2:3:4]:/export/tmp", NfsTarget("2001:db8::1:2:3:4", "/export/tmp")),
        ("ssh user@my.server.com", SshTarget("user", "my.server.com")),
        ("ssh user@2001:db8::1:2:3:4", SshTarget("user", "2001:db8::1:2:3:4")),
        ('dracut_args --mount "LABEL=dumps /mnt/dumps xfs defaults,noatime"',
         FilesystemTarget("xfs", Device(DeviceBy.LABEL, "dumps"), "/mnt/dumps",
                          "defaults,noatime")),
        ("dracut_args --mount '/dev/sdb1 /kdumproot ext4'",
         FilesystemTarget("ext4", Device(DeviceBy.NODE, "/dev/sdb1"), "/kdumproot")),
        ('dracut_args --add-drivers "ext4" --mount="UUID=ab /mnt ext4 rw"',
         FilesystemTarget("ext4", Device(DeviceBy.UUID, "ab"), "/mnt", "rw")),
    ],
)  # fmt: skip
def test_targets(line: str, target: object) -> None:
    parsed = parse_config(f"path /var/crash\n{line}\n", "k")
    assert parsed.skipped == []
    assert parsed.config.target is not None
    assert parsed.config.target.value == target
    assert parsed.config.target.origin == Origin("k", 2)


def test_target_streams() -> None:
    device = Device(DeviceBy.NODE, "/dev/sdb")
    assert RawTarget(device).streams and SshTarget("u", "h").streams
    assert not FilesystemTarget("ext4", device).streams and not NfsTarget("h", "/e").streams


def test_dracut_args_without_mount_is_not_a_target() -> None:
    config = parse_config('dracut_args --omit-drivers "cfg80211 snd"\n', "k").config
    assert config.target is None
    assert config.dracut_args is not None
    assert config.dracut_args.value == '--omit-drivers "cfg80211 snd"'


def test_a_user_config() -> None:
    text = """\
# dumps go to the big disk
xfs UUID=2f6a1d0c-9d8e-4b8b-9f3e-0b1c2d3e4f50
path /crash   # relative to that filesystem
core_collector "makedumpfile -z -d 31 --num-threads=2"
kdump_post /etc/kdump/notify.sh
failure_action dump_to_rootfs
final_action poweroff
extra_bins /usr/bin/curl /usr/bin/jq
extra_modules nvme xfs
kdump_capture_deadline 1800
kdump_capture_keep_dumps 5
"""
    parsed = parse_config(text, "k")
    assert parsed.skipped == [] and parsed.strict_only == []
    config = parsed.config
    assert config.path.value == "/crash"
    assert config.core_collector is not None
    assert config.core_collector.value == "makedumpfile -z -d 31 --num-threads=2"
    assert config.kdump_post is not None and config.kdump_post.value == "/etc/kdump/notify.sh"
    assert config.hook(HookStage.POST) == config.kdump_post
    assert config.hook(HookStage.PRE) is None
    assert config.failure_action.value is Action.DUMP_TO_ROOTFS
    assert config.final_action.value is Action.POWEROFF
    assert config.extra_bins is not None
    assert config.extra_bins.value == ("/usr/bin/curl", "/usr/bin/jq")
    assert config.extra_modules is not None and config.extra_modules.value == ("nvme", "xfs")
    assert (config.deadline.value, config.deadline.origin.line) == (1800, 10)
    assert config.keep_dumps.value == 5


def test_hook_stages_name_their_directive_and_directory() -> None:
    assert HookStage.PRE.directory() == "/etc/kdump/pre.d"
    assert HookStage.POST.directory() == "/etc/kdump/post.d"
    assert HookStage.EMERGENCY.directory("/x") == "/x/emergency.d"
    directives = [stage.directive for stage in HookStage]
    assert directives == ["kdump_pre", "kdump_post", "kdump_emergency"]


def test_our_directives_defaults_and_values() -> None:
    config = parse_config("", "k").config
    assert _ours(config) == (0, 300, 300, 0, 3)
    assert config.crash_loop.is_default
    text = "\n".join(
        f"kdump_capture_{name} {value}"
        for name, value in [("deadline", 600), ("stall_timeout", 0), ("hook_timeout", 30),
                            ("keep_dumps", 2), ("crash_loop", 0)]
    )  # fmt: skip
    config = parse_config(text, "k").config
    assert _ours(config) == (600, 0, 30, 2, 0)
    assert config.crash_loop.origin.line == 5


# Quoting, comments, last-wins -----------------------------------------------


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("path /var/crash", "/var/crash"),
        ('path "/var/crash"', "/var/crash"),
        ("path /var/crash # where dumps go", "/var/crash"),
        ('path "/var/crash"   # quoted, then a comment', "/var/crash"),
        ("path /var/crash#no blank before the comment", "/var/crash"),
        ("   path    /var/crash   ", "/var/crash"),
        ("path\t/var/crash\r", "/var/crash"),
        ('path ""/x""', '"/x"'),  # one pair only
        ('path "/x', '"/x'),  # no pair: kept as written
        ("path //var//crash/", "/var/crash/"),  # slashes squeezed, as Fedora
        ('core_collector "makedumpfile -l --message-level 7 -d 31"',
         "makedumpfile -l --message-level 7 -d 31"),
        ('core_collector "cp --sparse=always"', "cp --sparse=always"),
    ],
)  # fmt: skip
def test_quotes_and_comments(line: str, value: str) -> None:
    parsed = parse_config(f"# a comment\n\n   # an indented comment\n{line}\n", "k")
    assert parsed.skipped == []
    directive = line.split()[0]
    setting = getattr(parsed.config, directive)
    assert setting.value == value
    assert setting.origin.line == 4


def test_last_occurrence_wins_and_strict_sees_the_repeat() -> None:
    text = "path /one\nfailure_action halt\npath /two\ndefault poweroff\n"
    parsed = parse_config(text, "k")
    assert parsed.config.path == ("/two", Origin("k", 3))
    assert parsed.config.failure_action == (Action.POWEROFF, Origin("k", 4))
    assert parsed.skipped == []
    assert [(problem.origin.line, problem.message) for problem in parsed.strict_only] == [
        (3, "path is given again: it was set at line 1; keep one of the lines "
            "(at capture time the last one wins)"),
        (4, "'default' is the old name of failure_action; write 'failure_action poweroff'"),
        (4, "default is given again: it was set at line 2 (as 'failure_action'); keep one of "
            "the lines (at capture time the last one wins)"),
    ]  # fmt: skip


def test_a_bad_last_line_leaves_the_good_one_before_it() -> None:
    parsed = parse_config("failure_action halt\nfailure_action explode\n", "k")
    assert parsed.config.failure_action == (Action.HALT, Origin("k", 1))
    assert [problem.origin.line for problem in parsed.skipped] == [2]


def test_two_targets_last_wins() -> None:
    parsed = parse_config("ext4 LABEL=a\nssh root@backup\n", "k")
    assert parsed.config.target is not None
    assert parsed.config.target.value == SshTarget("root", "backup")
    assert [str(problem) for problem in parsed.strict_only] == [
        "k:2: a second dump target 'ssh' (the first is 'ext4' at line 1); "
        "kdump writes to one target: keep one of the two"
    ]


# Bad lines: what is wrong, what to write --------------------------------------


@pytest.mark.parametrize("directive", sorted(DEPRECATED))
def test_deprecated_directives_say_what_replaces_them(directive: str) -> None:
    parsed = parse_config(f"{directive} something\n", "k")
    [problem] = parsed.skipped
    assert problem.message == (
        f"{directive} is deprecated and does nothing; {DEPRECATED[directive]}"
    )
    replacement = {
        "net": "nfs host:/export", "options": "KDUMP_COMMANDLINE_APPEND",
        "link_delay": "remove it", "disk_timeout": "remove it",
        "debug_mem_level": "rd.memdebug", "blacklist": "rd.driver.blacklist",
    }  # fmt: skip
    assert replacement[directive] in problem.message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("core_colector cp", "unknown directive 'core_colector'; did you mean 'core_collector'?"),
        ("frobnicate 1", "unknown directive 'frobnicate'; see the README's list of directives"),
        ("path", "path has no value; write e.g. 'path /var/crash'"),
        ('path ""', "path has no value; write e.g. 'path /var/crash'"),
        ("path # only a comment", "path has no value; write e.g. 'path /var/crash'"),
        ("final_action shell", "final_action 'shell' is not an action; use one of: "
                               "reboot, halt, poweroff, boot"),
        ("failure_action explode", "failure_action 'explode' is not an action; use one of: "
                                   "reboot, halt, poweroff, shell, dump_to_rootfs, boot"),
        ("ssh backup.example.com", "ssh 'backup.example.com' is not user@host; "
                                   "write e.g. 'ssh root@dumps.example.com'"),
        ("nfs server", "nfs 'server' is not host:/export; write e.g. "
                       "'nfs dumps.example.com:/export' or 'nfs [2001:db8::1]:/export'"),
        ("nfs [2001:db8::1]/export",
         "nfs '[2001:db8::1]/export' is not host:/export; write e.g. "
         "'nfs dumps.example.com:/export' or 'nfs [2001:db8::1]:/export'"),
        ("ext4 sdb1", "ext4 'sdb1' is not a device; write a device node (/dev/disk/by-id/...), "
                      "LABEL=name or UUID=uuid"),
        ("raw LABEL=", "raw 'LABEL=' is not a device; write a device node (/dev/disk/by-id/...), "
                       "LABEL=name or UUID=uuid"),
        ("force_rebuild yes", "force_rebuild 'yes' is not 0 or 1; write 0 or 1"),
        ("auto_reset_crashkernel 1",
         "auto_reset_crashkernel '1' is not no or yes; write no or yes"),
        ("kdump_capture_deadline 10m", "kdump_capture_deadline '10m' is not a whole number; "
                                       "write 0 or more"),
        ("kdump_capture_keep_dumps -1", "kdump_capture_keep_dumps '-1' is not a whole number; "
                                        "write 0 or more"),
        ('dracut_args --mount "/dev/a /a ext4" --mount "/dev/b /b xfs"',
         "dracut_args has 2 --mount; give exactly one: "
         '--mount "DEVICE MOUNTPOINT FSTYPE [OPTIONS]"'),
        ('dracut_args --mount "/dev/a"', "dracut_args --mount '/dev/a' is not \"DEVICE MOUNTPOINT "
                                         "FSTYPE [OPTIONS]\"; write e.g. --mount \"LABEL=dumps "
                                         '/mnt/dumps xfs defaults"'),
        ("dracut_args --mount \"/dev/a /a ext4", "dracut_args cannot be split (No closing "
                                                 "quotation); close every quote"),
    ],
)  # fmt: skip
def test_bad_lines(line: str, message: str) -> None:
    parsed = parse_config(f"path /var/crash\n{line}\n", "k")
    assert [str(problem) for problem in parsed.skipped] == [f"k:2: {message}"]
    assert parsed.config.target is None
    assert parsed.config.path.value == "/var/crash"


# Lenient reading at capture time ----------------------------------------------

BROKEN = """\
path /var/crash
net nfs.example.com:/dumps
ext4 LABEL=dumps
core_collector makedumpfile -l --message-level 7 -d 31 --split
xfs UUID=abcd
failure_action explode
path /srv/crash
kdump_post /nonexistent/post.sh
frobnicate yes
final_action
kdump_capture_keep_dumps three
final_action poweroff
"""


def test_lenient_reading_never_raises_and_keeps_the_good_lines(tmp_path, caplog) -> None:
    path = write(tmp_path, BROKEN)
    with caplog.at_level(logging.INFO, logger="capture.agent.config"):
        config = load_config(path)
    assert config.path == ("/srv/crash", Origin(path, 7))
    assert config.target is not None
    assert config.target.value == FilesystemTarget("xfs", Device(DeviceBy.UUID, "abcd"))
    assert config.core_collector is not None and config.core_collector.origin.line == 4
    assert config.failure_action.value is Action.REBOOT and config.failure_action.is_default
    assert config.final_action == (Action.POWEROFF, Origin(path, 12))
    assert config.kdump_post is not None  # a missing hook is the run's business, not the parser's
    assert config.keep_dumps.is_default
    skipped = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [message.split(": ")[0] for message in skipped] == [
        f"{path}:{line}" for line in (2, 6, 9, 10, 11)
    ]
    assert all(message.endswith("(line skipped)") for message in skipped)


def test_lenient_reading_of_a_missing_or_unreadable_file(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="capture.agent.config"):
        missing = load_config(str(tmp_path / "nothere.conf"))
        directory = load_config(str(tmp_path))
    for config in (missing, directory):
        assert config.path.is_default and config.path.value == "/var/crash"
        assert config.target is None and config.core_collector is None
        assert config.sshkey.value == DEFAULT_SSHKEY
    assert [record.levelno for record in caplog.records] == [logging.WARNING, logging.ERROR]
    assert "using the defaults" in caplog.records[1].getMessage()


def test_lenient_reading_of_garbage(tmp_path) -> None:
    path = tmp_path / "kdump.conf"
    path.write_bytes(bytes(range(256)) * 4 + b"\npath /var/\xffcrash\n\x00\x00")
    config = load_config(str(path))
    assert os.fsencode(config.path.value) == b"/var/\xffcrash"  # the bytes survive


def test_lenient_reading_survives_a_bug_of_ours(tmp_path, monkeypatch, caplog) -> None:
    import capture.agent.config as config_module

    def broken(directive: str, value: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setitem(config_module.DIRECTIVES, "path", broken)
    with caplog.at_level(logging.ERROR, logger="capture.agent.config"):
        config = load_config(write(tmp_path, "path /srv/crash\n"))
    assert config.path.is_default and config.path.value == "/var/crash"
    assert "could not be parsed: using the defaults" in caplog.records[0].getMessage()


# check-config: the broken file, every problem at once -------------------------


def test_check_config_lists_every_problem_of_a_broken_file(tmp_path, kdump_dir, capsys) -> None:
    path = write(tmp_path, BROKEN)
    expected = [
        (2, "net is deprecated and does nothing; write 'nfs host:/export' or "
            "'ssh user@host' instead"),
        (4, "makedumpfile --split writes the dump as several files, and kdump saves one "
            "vmcore; remove it (more CPUs are used without it)"),
        (5, "a second dump target 'xfs' (the first is 'ext4' at line 3); kdump writes to one "
            "target: keep one of the two"),
        (6, "failure_action 'explode' is not an action; use one of: reboot, halt, poweroff, "
            "shell, dump_to_rootfs, boot"),
        (7, "path is given again: it was set at line 1; keep one of the lines "
            "(at capture time the last one wins)"),
        (8, "kdump_post /nonexistent/post.sh does not exist; fix the path or remove it"),
        (9, "unknown directive 'frobnicate'; see the README's list of directives"),
        (10, "final_action has no value; write one of: reboot, halt, poweroff, boot"),
        (11, "kdump_capture_keep_dumps 'three' is not a whole number; write 0 or more"),
    ]  # fmt: skip  (line 12 repeats no accepted line: line 10 was already wrong)
    problems = check_config(path, kdump_dir)
    assert [(problem.origin.line, problem.message) for problem in problems] == expected

    assert main(["check-config", path, "--kdump-dir", kdump_dir]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{path}:{line}: {message}" for line, message in expected]
    assert err == f"{path}: {len(expected)} problems\n"


def test_check_config_strict_on_what_the_lines_point_at(tmp_path, kdump_dir) -> None:
    bins = tmp_path / "bin"
    bins.mkdir()
    good = executable(bins / "good")
    not_executable = executable(bins / "plain", mode=0o600)
    text = f"""\
raw /dev/disk/by-id/wwn-0x5000-part3
core_collector cp --sparse=always
kdump_pre {not_executable}
kdump_post relative/post.sh
kdump_emergency {good}
extra_bins {good} {bins}/missing {bins}
force_rebuild 1
force_no_rebuild 1
"""
    problems = check_config(write(tmp_path, text), kdump_dir)
    assert [(problem.origin.line, problem.message) for problem in problems] == [
        (2, "core_collector cp cannot write to stdout, and a raw target takes the dump from "
            "the collector's stdout; use makedumpfile (e.g. 'core_collector makedumpfile -l "
            "--message-level 7 -d 31') or cat"),
        (3, f"kdump_pre {not_executable} is not executable, so it never runs; "
            f"chmod u+x {not_executable}"),
        (4, "kdump_post 'relative/post.sh' is not a full path; write its absolute path"),
        (6, f"extra_bins {bins}/missing does not exist; fix the path or remove it"),
        (6, f"extra_bins {bins} is not a file; give an executable file"),
        (8, "force_rebuild 1 and force_no_rebuild 1 contradict each other; "
            "set at most one of them to 1"),
    ]  # fmt: skip


def test_check_config_of_a_missing_file(tmp_path, capsys) -> None:
    assert main(["check-config", str(tmp_path / "nothere.conf")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "nothere.conf" in err


def test_check_config_collector_flags(tmp_path, kdump_dir) -> None:
    text = "core_collector makedumpfile -l -d 31 --compress=zstd -x vmlinux --num-threads 2\n"
    problems = check_config(write(tmp_path, text), kdump_dir)
    assert [str(problem).split(": ", 1)[1] for problem in problems] == [
        "makedumpfile has no --compress; write -c (zlib), -l (lzo), -p (snappy) or -z (zstd)",
        "makedumpfile -x filters with debug information, which the engine does not use "
        "(it finds page types from VMCOREINFO); remove it",
    ]
    assert {problem.origin.line for problem in problems} == {1}


def test_check_config_ssh_key(tmp_path, kdump_dir) -> None:
    key = tmp_path / "id_kdump"
    text = f"ssh kdump@backup.example.com\nsshkey {key}\n"
    path = write(tmp_path, text)
    assert [str(p) for p in check_config(path, kdump_dir)] == [
        f"{path}:2: the ssh key {key} does not exist, so the dump cannot log in; "
        "run 'kdump-capture propagate' or give the key's path with 'sshkey PATH'"
    ]
    key.write_text("key")
    key.chmod(0o644)
    assert [str(p) for p in check_config(path, kdump_dir)] == [
        f"{path}:2: the ssh key {key} can be read by others, so ssh refuses to use it; "
        f"chmod 0600 {key}"
    ]
    key.chmod(0o600)
    assert check_config(path, kdump_dir) == []


def test_check_config_fence_nodes_name_this_machine(tmp_path, kdump_dir) -> None:
    hostname = os.uname().nodename
    path = write(tmp_path, f"fence_kdump_nodes node1 {hostname}\n")
    assert [str(p) for p in check_config(path, kdump_dir)] == [
        f"{path}:1: fence_kdump_nodes names this machine ({hostname}); "
        "list the other nodes of the cluster only"
    ]
    assert check_config(write(tmp_path, "fence_kdump_nodes node1 node2\n"), kdump_dir) == []


# check-config: who can change what runs as root -------------------------------


def test_world_and_group_writable_hooks(tmp_path, kdump_dir) -> None:
    world = executable(tmp_path / "world.sh", mode=0o777)
    group = executable(tmp_path / "group.sh", mode=0o770)
    fine = executable(tmp_path / "fine.sh", mode=0o755)
    path = write(tmp_path, f"kdump_pre {world}\nkdump_post {group}\nkdump_emergency {fine}\n")
    assert [str(p) for p in check_config(path, kdump_dir)] == [
        f"{path}:1: kdump_pre {world} is world-writable, so anyone could change what runs as "
        f"root in the capture kernel; chmod go-w {world}",
        f"{path}:2: kdump_post {group} is group-writable, so anyone in its group could change "
        f"what runs as root in the capture kernel; chmod g-w {group}",
    ]


def test_hook_owned_by_another_user(tmp_path, kdump_dir) -> None:
    hook = executable(tmp_path / "post.sh")
    os.chown(hook, 4321, 0)
    path = write(tmp_path, f"kdump_post {hook}\n")
    assert [str(p) for p in check_config(path, kdump_dir)] == [
        f"{path}:1: kdump_post {hook} is owned by uid 4321, who could change what runs as "
        f"root in the capture kernel; chown root:root {hook}"
    ]


def test_unsafe_directory_above_a_hook(tmp_path, kdump_dir) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # world-writable, not sticky: anyone can replace the hook
    hook = executable(shared / "pre.sh")
    other = executable(shared / "bin")
    path = write(tmp_path, f"kdump_pre {hook}\nextra_bins {other}\n")
    assert [str(p) for p in check_config(path, kdump_dir)] == [
        f"{path}:1: kdump_pre {hook}: the directory {shared} is world-writable, so anyone "
        f"could change what runs as root in the capture kernel; chmod go-w {shared}",
    ]  # the directory once, not once per file in it
    shared.chmod(0o777 | stat.S_ISVTX)  # sticky, like /tmp: nobody replaces root's files
    assert check_config(path, kdump_dir) == []
    shared.chmod(0o755)
    os.chown(shared, 1000, 1000)
    assert [str(p).split(": ", 1)[1] for p in check_config(path, kdump_dir)] == [
        f"kdump_pre {hook}: the directory {shared} is owned by {_user(1000)}, who could "
        f"change what runs as root in the capture kernel; chown root:root {shared}",
    ]


def test_hook_reached_through_a_link_in_an_unsafe_directory(tmp_path, kdump_dir) -> None:
    real = executable(tmp_path / "real.sh")
    users = tmp_path / "users"
    users.mkdir()
    os.chown(users, 1000, 1000)
    link = users / "hook"
    link.symlink_to(real)  # its owner can point it anywhere
    path = write(tmp_path, f"kdump_post {link}\n")
    [problem] = check_config(path, kdump_dir)
    assert problem.message.startswith(f"kdump_post {link}: the directory {users} is owned by")


def test_hook_directories(tmp_path, kdump_dir) -> None:
    pre = os.path.join(kdump_dir, "pre.d")
    post = os.path.join(kdump_dir, "post.d")
    emergency = os.path.join(kdump_dir, "emergency.d")
    for directory in (pre, post, emergency):
        os.mkdir(directory)
    executable_fine = executable(tmp_path / "etc-kdump" / "pre.d" / "10-fine")
    plain = executable(tmp_path / "etc-kdump" / "pre.d" / "20-plain", mode=0o644)
    theirs = executable(tmp_path / "etc-kdump" / "post.d" / "10-theirs")
    os.chown(theirs, 1000, 1000)
    executable(tmp_path / "etc-kdump" / "post.d" / ".hidden", mode=0o666)  # not run: no problem
    os.mkdir(os.path.join(post, "subdir"))
    os.chmod(emergency, 0o775)
    path = write(tmp_path, "path /var/crash\n")
    problems = check_config(path, kdump_dir)
    assert executable_fine
    assert [str(p) for p in problems] == [
        f"{emergency}: emergency.d {emergency} is group-writable, so anyone in its group could "
        f"change what runs as root in the capture kernel; chmod g-w {emergency}",
        f"{post}/10-theirs: post.d hook {theirs} is owned by {_user(1000)}, who could change "
        f"what runs as root in the capture kernel; chown root:root {theirs}",
        f"{post}/subdir: post.d hook {post}/subdir is not a file; give an executable file",
        f"{plain}: pre.d hook {plain} is not executable, so it never runs; chmod u+x {plain}",
    ]


def test_check_config_through_main_with_permission_problems(tmp_path, kdump_dir, capsys) -> None:
    hook = executable(tmp_path / "pre.sh", mode=0o757)
    path = write(tmp_path, f"path /var/crash\nkdump_pre {hook}\nnet x\n")
    assert main(["check-config", path, "--kdump-dir", kdump_dir]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{path}:2: kdump_pre {hook} is world-writable, so anyone could change what runs as "
        f"root in the capture kernel; chmod o-w {hook}",
        f"{path}:3: net is deprecated and does nothing; write 'nfs host:/export' or "
        "'ssh user@host' instead",
    ]
    assert err == f"{path}: 2 problems\n"
    os.chmod(hook, 0o755)
    path = write(tmp_path, f"path /var/crash\nkdump_pre {hook}\n")
    assert main(["check-config", path, "--kdump-dir", kdump_dir]) == 0


def _ours(config: Config) -> tuple[int, ...]:
    return tuple(
        setting.value
        for setting in (config.deadline, config.stall_timeout, config.hook_timeout,
                        config.keep_dumps, config.crash_loop)
    )  # fmt: skip


def _user(uid: int) -> str:
    import pwd

    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"
