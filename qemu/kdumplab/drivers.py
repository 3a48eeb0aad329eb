"""The disk rows of the driver matrix with our own image: one real capture
per storage controller the lab offers (vm.DISK_DEVICES), the dump disk
(ext4, LABEL=kdump) behind that controller and nothing else attached.

Each row is judged as floor.trial judges a run (power-off, one complete
dump, the log read back by the host's makedumpfile); a failing row names the
first check that failed and, when the agent said why, its last line.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from .floor import Trial, trial
from .util import log
from .vm import DISK_DEVICES

CONTROLLER_MODULES: dict[str, tuple[str, ...]] = {
    "virtio-blk": ("virtio_pci", "virtio_blk"),
    "virtio-scsi": ("virtio_pci", "virtio_scsi", "sd_mod"),
    "ahci": ("ahci", "libahci", "libata", "sd_mod"),
    "lsi53c895a": ("sym53c8xx", "sd_mod"),
    "megasas": ("megaraid_sas", "sd_mod"),
    "mptsas1068": ("mptsas", "sd_mod"),
    "nvme": ("nvme", "nvme_core"),
}
"""The kernel modules the capture kernel needs for a disk behind each of the
lab's controllers (QEMU's lsi53c895a is driven by sym53c8xx)."""


def run_disks(
    image: Path,
    config: Path,
    out_root: Path,
    memory_mb: int = 2048,
    crashkernel_mb: int = 256,
    disks: list[str] | None = None,
) -> dict[str, Trial]:
    """Capture once per controller; results also go to out_root/disks.json."""
    rows: dict[str, Trial] = {}
    for disk in disks or list(DISK_DEVICES):
        log(f"driver matrix: {disk}")
        rows[disk] = trial(image, config, crashkernel_mb, memory_mb, out_root / disk, "ours",
                           dump_device=disk)  # fmt: skip
        if not rows[disk].ok:
            rows[disk].why += _agent_last_words(Path(rows[disk].out_dir) / "console.log")
        log(f"driver matrix: {disk}: {'pass' if rows[disk].ok else 'FAIL'} ({rows[disk].why})")
    out_root.mkdir(parents=True, exist_ok=True)
    summary = {name: asdict(row) for name, row in rows.items()}
    (out_root / "disks.json").write_text(json.dumps(summary, indent=2) + "\n")
    return rows


def _agent_last_words(console: Path) -> str:
    """The agent's last warning or error on the console, if any."""
    text = console.read_text(errors="replace") if console.exists() else ""
    lines = re.findall(r"kdump-capture-agent\[\d+\]: (?:WARNING|ERROR): ([^\r\n]*)", text)
    return f"; agent: {lines[-1]}" if lines else ""


def format_rows(rows: dict[str, Trial]) -> str:
    """A markdown table: controller, outcome, the capture kernel's uptime at
    the log saved and at the dump done."""
    out = ["| disk controller | result | log saved | dump done |", "| --- | --- | --- | --- |"]
    for name, row in rows.items():
        times = row.guest_seconds
        log_at = f"{times['log_saved']:.0f} s" if "log_saved" in times else "-"
        done_at = f"{times['dump_done']:.0f} s" if "dump_done" in times else "-"
        result = "pass" if row.ok else f"FAIL: {row.why}"
        out.append(f"| {name} | {result} | {log_at} | {done_at} |")
    return "\n".join(out)
