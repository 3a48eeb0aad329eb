"""What every dump writer reports, and the progress callback they call."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ("DumpOutcome", "Progress")

Progress = Callable[[int, int], None]
"""Called with (pages written, bytes written so far)."""


class DumpOutcome:
    """What a writer produced."""

    def __init__(self) -> None:
        self.bytes_written = 0
        self.pages_written = 0
        self.incomplete = False
        self.unreadable: list[int] = []
        """Pfns the filter kept but the vmcore could not supply (a truncated file)."""
