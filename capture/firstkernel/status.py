"""``kdump-capture status``: is a capture kernel loaded, how much memory is
reserved and where, is the image current; as ``kdumpctl status``, whose exit
status 3 means "not operational".

Exit status: 0 loaded and current; 3 not loaded (or nothing reserved);
4 loaded, but the image on disk is stale or is not the one loaded (a
``kdump-capture load`` makes it current); 1 the status could not be read.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.firstkernel.kexecstate import CrashState, read_crash_state
from capture.firstkernel.load import (
    LOADED_RECORD,
    Prepared,
    add_common_arguments,
    agent_tree,
    prepare,
)

__all__ = ("EXIT_NOT_LOADED", "EXIT_STALE", "Status", "add_arguments", "read_status")

EXIT_LOADED, EXIT_NOT_LOADED, EXIT_STALE = 0, 3, 4
_MIB = 1 << 20


@dataclass(frozen=True)
class Status:
    """Everything status reports."""

    state: CrashState
    prepared: Prepared
    record: dict[str, Any] | None
    """What ``load`` recorded, if it ran since the last boot."""

    @property
    def loaded_image_replaced(self) -> bool:
        """The image file changed after it was loaded (or another one was loaded)."""
        if self.record is None:
            return False
        image = self.prepared.files.image
        try:
            mtime = image.stat().st_mtime_ns
        except OSError:
            return True
        return (
            self.record.get("initrd") != str(image) or self.record.get("initrd_mtime_ns") != mtime
        )

    @property
    def exit_status(self) -> int:
        if not self.state.loaded:
            return EXIT_NOT_LOADED
        if not self.prepared.freshness.current or self.loaded_image_replaced:
            return EXIT_STALE
        return EXIT_LOADED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Say whether a capture kernel is loaded, how much memory is reserved and where, "
        "and whether the image is current. Exit status 0: loaded and current; 3: not "
        "loaded; 4: loaded but the image is stale (run kdump-capture load); 1: error."
    )
    add_common_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(command=status)


def read_status(args: argparse.Namespace) -> Status:
    state = read_crash_state(args.root)
    prepared = prepare(args, agent_tree(args.agent, build=False))
    return Status(state, prepared, _read_record(Path(args.root) / LOADED_RECORD))


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def status(args: argparse.Namespace) -> int:
    report = read_status(args)
    if args.json:
        print(json.dumps(_as_json(report), indent=2))
    else:
        print("\n".join(_describe(report)))
    return report.exit_status


def _as_json(report: Status) -> dict[str, Any]:
    fresh = report.prepared.freshness
    return {
        "loaded": report.state.loaded,
        "reserved_bytes": report.state.reserved,
        "regions": [list(region) for region in report.state.regions],
        "kernel": str(report.prepared.files.kernel),
        "initrd": str(fresh.image),
        "initrd_current": fresh.current,
        "stale_because": list(fresh.reasons),
        "loaded_record": report.record,
        "loaded_image_replaced": report.loaded_image_replaced,
        "exit_status": report.exit_status,
    }


def _describe(report: Status) -> list[str]:
    state, fresh = report.state, report.prepared.freshness
    lines = [f"capture kernel: {_loaded(report)}", f"reserved:       {_reserved(state)}"]
    if fresh.current:
        lines.append(f"image:          {fresh.image}: current")
    else:
        lines.append(f"image:          {fresh.image}: stale: {'; '.join(fresh.reasons)}")
    if report.loaded_image_replaced:
        lines.append(
            "                the image changed after it was loaded: run kdump-capture load"
        )
    return lines


def _loaded(report: Status) -> str:
    if not report.state.loaded:
        return "not loaded (kdump-capture load loads it)"
    record = report.record
    if record is None:
        return "loaded (not by kdump-capture load since this boot: what is unknown)"
    return f"loaded by {record.get('syscall')} at {record.get('loaded_at')}: {record.get('kernel')}"


def _reserved(state: CrashState) -> str:
    if state.reserved is None:
        return "unknown: this kernel has no /sys/kernel/kexec_crash_size (no kexec)"
    if state.reserved == 0:
        return "none: add crashkernel= to the kernel command line (kdump-capture estimate)"
    where = ", ".join(f"{start:#x}-{end - 1:#x}" for start, end in state.regions)
    return f"{state.reserved / _MIB:.0f} MiB" + (f" at {where}" if where else "")
