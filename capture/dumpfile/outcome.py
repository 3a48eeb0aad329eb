"""What every dump writer reports, and the progress callback they call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ("DumpOutcome", "Progress")

Progress = Callable[[int, int], None]
"""Called with (pages written, bytes written so far)."""


@dataclass
class DumpOutcome:
    """What a writer produced."""

    bytes_written: int = 0
    pages_written: int = 0
    incomplete: bool = False
    unreadable: list[int] = field(default_factory=list)
    """Pfns the filter kept but the vmcore could not supply (a truncated file)."""
