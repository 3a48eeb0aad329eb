"""What a capture left and what crash and drgn see of it: a whole dump
directory, a capture's dump read by drgn, a dump cut short read by crash
(the check the no-space tests share), and where to cut a dump so that crash
can still start on what was written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from capture.dumpfile.kdump import DESCRIPTOR
from capture.dumpfile.reader import KdumpCore, open_dump
from capture.vmcore import Vmcore
from tests import oracles

KERNEL_TEXT = 0xFFFFFFFF80000000
"""x86_64's kernel image mapping starts here; the direct map lies below."""


def crash_sees_incomplete(dump: Path, release: str) -> None:
    """crash 9.0.2 opens ``dump`` (of kernel ``release``), says it is
    incomplete, and reads what is there.

    --zero_excluded lets the session start though kernel pages past the cut
    are missing; the log lies in the written part.
    """
    vmlinux = oracles.debug_vmlinux(release)
    run = oracles.run_in_chroot(
        ["crash", "-s", "--zero_excluded", oracles.inside(vmlinux), oracles.inside(dump)],
        files=[vmlinux, dump],
        stdin="sys\nlog\nexit\n",
    )
    output = run.stdout + run.stderr
    assert "This dumpfile is incomplete" in output, output
    assert "sysrq: Trigger a crash" in output, output


def start_needs_pfn(vmcore: Path) -> int:
    """The last page frame crash must read to start a session: the end of the
    kernel image or the memory-section root table, whichever lies higher.

    Both are placed at boot (KASLR moves the image, memblock puts the table
    near the top of RAM), so a cut at a fixed size works on one vmcore and
    not another: without either, crash stops at "invalid kernel virtual
    address: 0 type: memory section root table"."""
    with Vmcore(str(vmcore)) as core:
        segments = core.core.segments
        ends = [s.paddr + s.memsz for s in segments if s.vaddr >= KERNEL_TEXT]
        direct = [s for s in segments if 0 < s.vaddr < KERNEL_TEXT and s.paddr > 0]
        table = core.info.symbol("mem_section")
        if table is not None and direct:
            ends.append(table - (direct[0].vaddr - direct[0].paddr) + 1)
        return (max(ends) - 1) // core.page_size


def bytes_through_pfn(dump: Path, pfn: int) -> int:
    """How far into the complete kdump file ``dump`` the data of every page up
    to ``pfn`` lies (the writer stores pages in pfn order)."""
    with open_dump(str(dump)) as dumped:
        kdump = dumped.core
        assert isinstance(kdump, KdumpCore), f"{dump}: not kdump-compressed"
        pages = kdump.bitmap2.count(0, pfn + 1)
        with open(dump, "rb") as file:
            file.seek(kdump.descriptors_at)
            table = file.read(DESCRIPTOR.size * pages)
    return max(int(offset) + int(size) for offset, size, _, _ in DESCRIPTOR.iter_unpack(table))


def cut_between(dump: Path, vmcore: Path) -> int | None:
    """A size to cut ``dump`` (complete) to, half way between what crash needs
    to start and the end; None when less than 1 MiB of pages lies beyond
    (the root table in RAM's last pages, as in the shared 6.1 fixture)."""
    needed = bytes_through_pfn(dump, start_needs_pfn(vmcore))
    whole = dump.stat().st_size
    return (needed + whole) // 2 if whole - needed >= 1 << 20 else None


def drgn_sees_the_crash(dump: Path, release: str) -> None:
    """drgn (libkdumpfile) with the debug symbols on a capture's dump
    directory: the crashed thread's stack, and the whole log as the capture
    saved it in vmcore-dmesg.txt."""
    from drgn.helpers.linux.printk import get_dmesg

    program = oracles.drgn_program(dump / "vmcore", release)
    assert "sysrq_handle_crash" in str(program.crashed_thread().stack_trace())
    # makedumpfile's format (ours) indents a record's continuation lines; drgn's does not.
    saved = [
        line.strip()
        for line in (dump / "vmcore-dmesg.txt").read_text(errors="replace").splitlines()
    ]
    drgns = [line.strip() for line in get_dmesg(program).decode(errors="replace").splitlines()]
    assert drgns == saved


def whole_dump_dir(dump: Path) -> dict[str, Any]:
    """``dump`` (a capture's ``<ip>-<date>/``) holds the dump, the log, the
    manifest and the agent's log, nothing named incomplete, and a manifest
    that says complete with each file's size and sha256; returns the manifest."""
    names = {path.name for path in dump.iterdir()}
    assert {"vmcore", "vmcore-dmesg.txt", "manifest.json", "kexec-dmesg.log"} <= names, names
    assert not [name for name in names if "incomplete" in name], names
    manifest: dict[str, Any] = json.loads((dump / "manifest.json").read_text())
    assert manifest["status"] == "complete", manifest
    for name in ("vmcore", "vmcore-dmesg.txt"):
        entry, data = manifest["files"][name], (dump / name).read_bytes()
        assert (entry["status"], entry["bytes"]) == ("complete", len(data)), (name, entry)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), name
    return manifest
