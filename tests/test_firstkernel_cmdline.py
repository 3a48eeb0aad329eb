"""The capture command line load builds, and the settings file that changes it
(docs/firstkernel.md §"The capture command line")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from capture.errors import CaptureError
from capture.firstkernel.cmdline import Settings, capture_cmdline, read_settings, split_cmdline

FEDORA_X86_64 = (
    "novmcoredd hugetlb_cma=0 kfence.sample_interval=0 initramfs_options=size=90% irqpoll "
    "nr_cpus=1 reset_devices cgroup_disable=memory mce=off numa=off udev.children-max=2 "
    "panic=10 acpi_no_memhotplug transparent_hugepage=never nokaslr hest_disable cma=0 "
    "pcie_ports=compat"
)
"""Fedora's KDUMP_COMMANDLINE_APPEND for x86_64, as its gen-kdump-sysconfig.sh writes it."""


def test_a_debian_command_line_becomes_fedoras_capture_line() -> None:
    original = (
        "BOOT_IMAGE=/boot/vmlinuz-6.1.0-57-amd64 root=UUID=0f1e2d3c ro quiet "
        "crashkernel=256M hugepages=64 hugepagesz=2M panic=1 nr_cpus=8 console=ttyS0,115200"
    )
    line = capture_cmdline(original, Settings(), "x86_64", boot_apicid=0)
    assert line == (
        "BOOT_IMAGE=/boot/vmlinuz-6.1.0-57-amd64 root=UUID=0f1e2d3c ro console=ttyS0,115200 "
        f"{FEDORA_X86_64} rd.systemd.gpt_auto=no disable_cpu_apicid=0"
    )


def test_what_must_not_reach_a_capture_kernel_is_dropped() -> None:
    original = (
        "rdinit=/process_api initrd=\\EFI\\debian\\initrd.img rd.lvm.lv=vg/root "
        "rd.luks.uuid=luks-1 panic_on_warn crashkernel=1G-4G:192M,4G-:256M "
        'dyndbg="file drivers/x +p" init=/sbin/init -- --firecracker-init --addr 0.0.0.0'
    )
    words = split_cmdline(capture_cmdline(original, Settings(), "x86_64"))
    assert words[:2] == ['dyndbg="file drivers/x +p"', "init=/sbin/init"]
    for gone in ("rdinit", "initrd", "rd.lvm.lv", "rd.luks.uuid", "panic_on_warn", "crashkernel"):
        assert not [w for w in words if w.split("=")[0] == gone], gone
    assert "--" not in words and "--firecracker-init" not in words
    assert not [w for w in words if w.startswith("disable_cpu_apicid")]  # no APIC id known


def test_no_key_is_given_twice() -> None:
    line = capture_cmdline("panic=1 numa=fake=4 irqpoll", Settings(), "x86_64")
    keys = [word.split("=")[0] for word in split_cmdline(line)]
    assert len(keys) == len(set(keys))
    assert "panic=10" in line and "numa=off" in line and "numa=fake" not in line


def test_the_settings_replace_the_defaults(tmp_path: Path) -> None:
    sysconfig = tmp_path / "kdump"
    sysconfig.write_text(
        "# Fedora's file carries many keys we leave alone\n"
        'KDUMP_KERNELVER=""\n'
        'KDUMP_COMMANDLINE_REMOVE="hugepages mitigations"\n'
        "export KDUMP_COMMANDLINE_APPEND='irqpoll nr_cpus=1 reset_devices panic=10'  # short\n"
        'KEXEC_ARGS="-d --elf64-core-headers"\n'
    )
    settings = read_settings(str(sysconfig))
    assert settings.kexec_args == ["-d", "--elf64-core-headers"]
    line = capture_cmdline("root=/dev/vda quiet mitigations=off hugepages=4", settings, "x86_64", 2)
    # quiet stays: the file's remove list replaced Fedora's default one
    assert line == (
        "root=/dev/vda quiet irqpoll nr_cpus=1 reset_devices panic=10 "
        "rd.systemd.gpt_auto=no disable_cpu_apicid=2"
    )


def test_kdump_commandline_replaces_proc_cmdline(tmp_path: Path) -> None:
    sysconfig = tmp_path / "kdump"
    sysconfig.write_text('KDUMP_COMMANDLINE="root=LABEL=rootfs console=ttyS1"\n')
    line = capture_cmdline("root=/dev/sda1 console=tty0", read_settings(str(sysconfig)), "x86_64")
    assert line.startswith("root=LABEL=rootfs console=ttyS1 novmcoredd")


def test_the_settings_are_looked_for_under_the_root(tmp_path: Path) -> None:
    assert read_settings(None, str(tmp_path)) == Settings()
    ours = tmp_path / "etc" / "default" / "kdump-capture"
    ours.parent.mkdir(parents=True)
    ours.write_text('KDUMP_COMMANDLINE_APPEND="irqpoll"\n')
    assert read_settings(None, str(tmp_path)).append == "irqpoll"
    fedora = tmp_path / "etc" / "sysconfig" / "kdump"
    fedora.parent.mkdir(parents=True)
    fedora.write_text('KDUMP_COMMANDLINE_APPEND="reset_devices"\n')
    assert read_settings(None, str(tmp_path)).append == "reset_devices"  # Fedora's first


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('KDUMP_COMMANDLINE_APPEND="irqpoll', "close the quote"),
        ('KDUMP_COMMANDLINE_APPEND="$KDUMP_COMMANDLINE_APPEND x"', "$ is not expanded"),
        ("KDUMP_COMMANDLINE_APPEND=irqpoll nr_cpus=1", "quote the value"),
        ("kexec -s", 'not a KEY="value" line'),
    ],
)
def test_a_bad_settings_line_is_named_with_its_fix(tmp_path: Path, line: str, message: str) -> None:
    sysconfig = tmp_path / "kdump"
    sysconfig.write_text(f"# first\n{line}\n")
    with pytest.raises(CaptureError, match=re.escape(message)) as error:
        read_settings(str(sysconfig))
    assert str(error.value).startswith(f"{sysconfig}:2: ")


def test_the_kernels_quoting_keeps_a_value_with_blanks() -> None:
    assert split_cmdline(' a  b="c d" "e f"=g\th ') == ["a", 'b="c d"', '"e f"=g', "h"]
