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
        self.zero_pages = 0
        """Pages found to be zero while writing, with dump level bit 1 (the
        filter cannot tell them: only reading a page can)."""
        self.unreadable = 0
        """Pages the filter kept but the vmcore could not supply (a truncated file):
        a count, not a list, so a vmcore missing most of its pages costs no memory."""
