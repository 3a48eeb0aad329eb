"""The capture kernel's command line, made from this kernel's as kdumpctl
makes it, and the settings file that changes it.

The rules (docs/firstkernel.md §"The capture command line"): this kernel's
command line (or ``KDUMP_COMMANDLINE``), without what must not reach a
capture kernel (``crashkernel=``, ``panic_on_warn``, the first kernel's
``rdinit=`` and ``initrd=``, what assembles a root our image cannot, and
the first kernel's init arguments after ``--``), without the
``KDUMP_COMMANDLINE_REMOVE`` keys (Fedora's list by default: huge pages,
``quiet``, ``cma``, ...), and without any key the append list sets again;
then ``KDUMP_COMMANDLINE_APPEND`` (Fedora's list for the machine by default:
``irqpoll nr_cpus=1 reset_devices ...``), ``rd.systemd.gpt_auto=no`` and on
x86 ``disable_cpu_apicid=`` the boot CPU. ``root=`` is kept: our image is
not host-only, so the root filesystem (for a dump without a target line,
``dump_to_rootfs`` and ``boot``) is found from it.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from capture.errors import CaptureError

__all__ = (
    "SETTINGS_FILES",
    "Settings",
    "capture_cmdline",
    "default_append",
    "read_settings",
    "split_cmdline",
)

SETTINGS_FILES = ("/etc/sysconfig/kdump", "/etc/default/kdump-capture")
"""Where the settings are looked for, the first that exists: Fedora's file
(so its settings carry over), else ours."""

ALWAYS_REMOVED = (
    "crashkernel",
    "panic_on_warn",
    "rdinit",  # the first kernel's initramfs program, not in our image
    "initrd",  # the boot loader's file; kexec passes the image itself
    # what assembles a root our image has no dracut module for (Fedora removes
    # them too, and writes its own from the host)
    "rd.lvm.lv",
    "rd.luks.uuid",
    "rd.dm.uuid",
    "rd.md.uuid",
    "fcoe",
    "netroot",
    "rd.iscsi.initiator",
    "iscsi_initiator",
)
DEFAULT_REMOVE = (
    "hugepages hugepagesz default_hugepagesz slub_debug quiet log_buf_len swiotlb "
    "hugetlb_cma ignition.firstboot cma"
)
"""Fedora's KDUMP_COMMANDLINE_REMOVE (x86_64), plus default_hugepagesz."""

_COMMON_APPEND = "novmcoredd hugetlb_cma=0 kfence.sample_interval=0 initramfs_options=size=90%"
_MACHINE_APPEND = {
    "x86_64": "irqpoll nr_cpus=1 reset_devices cgroup_disable=memory mce=off numa=off "
    "udev.children-max=2 panic=10 acpi_no_memhotplug transparent_hugepage=never nokaslr "
    "hest_disable cma=0 pcie_ports=compat",
    "aarch64": "irqpoll nr_cpus=1 reset_devices cgroup_disable=memory udev.children-max=2 "
    "panic=10 swiotlb=noforce cma=0",
}
_OTHER_APPEND = "irqpoll maxcpus=1 reset_devices cma=0"
"""Fedora's KDUMP_COMMANDLINE_APPEND: its common part, then its machine's."""

ALWAYS_APPENDED = "rd.systemd.gpt_auto=no"
"""The gpt-auto generator hangs in a capture kernel (Fedora always adds this)."""

_KEYS = ("KDUMP_COMMANDLINE", "KDUMP_COMMANDLINE_REMOVE", "KDUMP_COMMANDLINE_APPEND", "KEXEC_ARGS")


@dataclass(frozen=True)
class Settings:
    """The settings file's values (None: not set, the default applies)."""

    source: Path | None = None
    commandline: str | None = None
    remove: str | None = None
    append: str | None = None
    kexec_args: list[str] = field(default_factory=list)


def default_append(machine: str) -> str:
    return f"{_COMMON_APPEND} {_MACHINE_APPEND.get(machine, _OTHER_APPEND)}"


def read_settings(path: str | None, root: str = "/") -> Settings:
    """The settings file: ``path``, else the first of :data:`SETTINGS_FILES`
    that exists under ``root``; no file means the defaults.

    Shell assignments (``KEY="value"``, ``export`` allowed, ``#`` comments),
    read without a shell: nothing is expanded or run. Keys other than
    KDUMP_COMMANDLINE, KDUMP_COMMANDLINE_REMOVE, KDUMP_COMMANDLINE_APPEND and
    KEXEC_ARGS are Fedora's others and left alone.

    :raises CaptureError: a line that is no assignment, or uses ``$``.
    """
    if path is None:
        found = [Path(root, p.lstrip("/")) for p in SETTINGS_FILES]
        existing = [p for p in found if p.is_file()]
        if not existing:
            return Settings()
        file = existing[0]
    else:
        file = Path(path)
    values = _assignments(file)
    return Settings(
        source=file,
        commandline=values.get("KDUMP_COMMANDLINE") or None,
        remove=values.get("KDUMP_COMMANDLINE_REMOVE"),
        append=values.get("KDUMP_COMMANDLINE_APPEND"),
        kexec_args=shlex.split(values.get("KEXEC_ARGS", "")),
    )


def _assignments(file: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
        where = f"{file}:{number}"
        try:
            words = shlex.split(line, comments=True)
        except ValueError as error:
            raise CaptureError(f"{where}: {error}: close the quote") from None
        if words[:1] == ["export"]:
            words = words[1:]
        if not words:
            continue
        key, equals, value = words[0].partition("=")
        if len(words) != 1 or not equals or not key.isidentifier():
            raise CaptureError(f'{where}: not a KEY="value" line: quote the value')
        if key in _KEYS and "$" in line.partition("=")[2]:
            raise CaptureError(f"{where}: $ is not expanded here: write {key}'s value out")
        values[key] = value
    return values


def split_cmdline(cmdline: str) -> list[str]:
    """A command line's words as the kernel splits it: at blanks, except
    inside double quotes (kept in the word)."""
    words: list[str] = []
    word: list[str] = []
    quoted = started = False
    for char in cmdline:
        if char == '"':
            quoted = not quoted
        if char.isspace() and not quoted:
            if started:
                words.append("".join(word))
            word, started = [], False
            continue
        word.append(char)
        started = True
    if started:
        words.append("".join(word))
    return words


def _key(word: str) -> str:
    return word.partition("=")[0].replace('"', "")


def capture_cmdline(
    original: str, settings: Settings, machine: str | None = None, boot_apicid: int | None = None
) -> str:
    """The capture kernel's command line from ``original`` (/proc/cmdline)."""
    machine = machine or os.uname().machine
    source = settings.commandline if settings.commandline is not None else original
    append = split_cmdline(
        settings.append if settings.append is not None else default_append(machine)
    )
    append += ALWAYS_APPENDED.split()
    if boot_apicid is not None and machine in ("x86_64", "i686", "i386"):
        append.append(f"disable_cpu_apicid={boot_apicid}")
    remove = set(ALWAYS_REMOVED) | {
        _key(w)
        for w in split_cmdline(settings.remove if settings.remove is not None else DEFAULT_REMOVE)
    }
    remove |= {_key(word) for word in append}
    words = split_cmdline(source)
    if "--" in words:
        words = words[: words.index("--")]  # the first kernel's init's own arguments
    kept = [word for word in words if _key(word) not in remove]
    return " ".join(kept + append)
