"""manifest.json: what a capture saved, written first and completed last.

Written when the dump directory is made (``status`` ``failed`` until the run
says otherwise, so a run that dies leaves a true record) and rewritten after
each step, so a reader always finds what happened so far: the crashed
kernel, the panic line, the dump's level, format and codec, the target, each
file with its size and sha256, each step with its time, and the action.

With fallback targets (``kdump_capture_fallback``) each target reached has a
dump directory and a manifest of its own: the same run (status, steps,
notes, and ``attempts``: each target tried, what happened and why), with
``target`` and ``files`` saying what is in that directory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from capture import __version__
from capture.errors import CaptureError

__all__ = ("Attempt", "Manifest")

log = logging.getLogger("capture")

MANIFEST = "manifest.json"
COMPLETE, INCOMPLETE, FAILED = "complete", "incomplete", "failed"

Save = Callable[[bytes, bool], None]


class _Place:
    """A dump directory the manifest is saved in, and what it holds."""

    def __init__(self, save: Save, target: Any, files: dict[str, Any]) -> None:
        self.save, self.target, self.files = save, target, files


class Attempt(NamedTuple):
    """One target tried: where, what happened, why."""

    target: dict[str, str]
    dump_dir: str | None
    outcome: str
    """``unreachable``, ``dump saved``, ``dump failed``, ``log only``, ..."""
    why: str | None


class Manifest:
    """The manifest of one capture, saved by ``save`` (the dump directory's
    ``write_file``) whenever it changes, once there is a directory; made
    durable only when completed (an fsync per step costs more than a dump
    of a small machine)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._places: list[_Place] = []
        self.data: dict[str, Any] = {
            "kdump_capture": __version__,
            "status": FAILED,
            "started": _iso(clock()),
            "kernel": None,
            "crash_time": None,
            "panic": None,
            "dump_level": None,
            "format": None,
            "codec": None,
            "target": None,
            "files": {},
            "steps": [],
            "notes": [],
            "attempts": [],
            "action": None,
        }

    def attach(self, save: Save) -> None:
        """Save to ``save`` too from now on, starting now: a dump directory,
        whose files are those recorded from now on."""
        self.data["files"] = {}
        self._places.append(_Place(save, self.data["target"], self.data["files"]))
        self.save()

    def attempt(self, attempt: Attempt) -> None:
        self.data["attempts"].append(attempt._asdict())
        self.save()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def complete(self, **fields: Any) -> None:
        """The last update, made durable."""
        self.data.update(fields)
        self.save(durable=True)

    def note(self, text: str) -> None:
        """A decision the run took that a reader must know (a step-down, a skip)."""
        self.data["notes"].append(text)
        self.save()

    def file(self, name: str, status: str, size: int, sha256: str | None) -> None:
        self.data["files"][name] = {"status": status, "bytes": size, "sha256": sha256}
        self.save()

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a step; its record says ``ok``, or ``failed`` with the error."""
        record: dict[str, Any] = {"name": name, "started": _iso(self._clock()), "status": "ok"}
        started = time.monotonic()
        try:
            yield record
        except BaseException as error:
            record["status"] = "failed"
            record["error"] = str(error) or type(error).__name__
            raise
        finally:
            record["seconds"] = round(time.monotonic() - started, 3)
            self.data["steps"].append(record)
            self.save()

    def save(self, durable: bool = False) -> None:
        """Into every dump directory; one that cannot be written any more (its
        server died) is left out from then on: a record is never the reason
        a run stops."""
        for place in list(self._places):
            data = dict(self.data, target=place.target, files=place.files)
            try:
                place.save(json.dumps(data, indent=2).encode() + b"\n", durable)
            except (OSError, CaptureError) as error:
                log.warning("%s cannot be saved there any more: %s", MANIFEST, error)
                self._places.remove(place)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))
