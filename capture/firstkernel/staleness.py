"""Is a capture image current? As kdumpctl decides it: the image is rebuilt
when it is missing or older than any file it was built from.

Those files: kdump.conf, the capture kernel, its modules.dep, every file
the image installs because of kdump.conf (the hooks, extra_bins, the ssh
key, known_hosts and ssh_config, which :func:`make_plan` lists), the hook
directories themselves (a hook added or removed changes the directory),
the frozen agent and our dracut module (docs/firstkernel.md §"When the image
is rebuilt"). ``force_rebuild 1`` and ``force_no_rebuild 1`` in kdump.conf
decide instead, as in Fedora.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from capture.agent.config import KDUMP_DIR, load_config
from capture.errors import CaptureError
from capture.firstkernel.plan import make_plan

__all__ = ("Freshness", "default_agent_tree", "freshness", "image_inputs")

AGENT_EXECUTABLE = "kdump-capture-agent"


@dataclass(frozen=True)
class Freshness:
    """Whether the image must be rebuilt, and why."""

    image: Path
    reasons: tuple[str, ...]
    """Each reason in words; empty when the image is current."""
    forced: bool = False
    """kdump.conf says force_rebuild 1 or force_no_rebuild 1."""

    @property
    def current(self) -> bool:
        return not self.reasons


def default_agent_tree() -> Path:
    """Where scripts/build-agent leaves the frozen agent (not built here)."""
    cache = os.environ.get("KDUMP_CAPTURE_CACHE") or os.path.expanduser("~/.cache/kdump-capture")
    return Path(cache) / "agent" / AGENT_EXECUTABLE


def image_inputs(
    config: str,
    kernel: Path,
    moddir: Path,
    agent_tree: Path | None,
    kdump_dir: str = KDUMP_DIR,
) -> list[Path]:
    """Every file whose change makes the image stale (existing or not)."""
    from capture.firstkernel.initrd import module_source

    plan = make_plan(config, kdump_dir)
    inputs = [Path(config), kernel, moddir / "modules.dep"]
    inputs += [Path(name) for name in [*plan.files, *plan.dirs]]
    if agent_tree is not None:
        inputs.append(agent_tree / AGENT_EXECUTABLE)
    try:
        module = module_source()
    except CaptureError:
        module = None  # a system that cannot rebuild the image: it is judged by the rest
    if module is not None:
        inputs += sorted(p for p in module.iterdir() if p.is_file())
    return list(dict.fromkeys(inputs))


def freshness(image: Path, inputs: list[Path], config: str) -> Freshness:
    """Compare the image's mtime with each input's (a link: with its target's too)."""
    settings = load_config(config)
    if settings.force_no_rebuild.value:
        return Freshness(image, (), forced=True)
    if settings.force_rebuild.value:
        return Freshness(image, (f"{config} says force_rebuild 1",), forced=True)
    try:
        built = image.stat().st_mtime_ns
    except FileNotFoundError:
        return Freshness(image, (f"{image} does not exist",))
    reasons = []
    for path in inputs:
        newer = _changed_after(path, built)
        if newer is not None:
            reasons.append(f"{newer} changed after the image was built")
    return Freshness(image, tuple(reasons))


def _changed_after(path: Path, built: int) -> Path | None:
    for candidate in (path, path.resolve()):
        try:
            if candidate.lstat().st_mtime_ns > built:
                return candidate
        except OSError:
            continue  # gone: the build will say so (make_plan, dracut)
    return None
