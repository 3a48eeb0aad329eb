"""Dump levels: which kinds of pages a dump leaves out (makedumpfile's ``-d``)."""

from __future__ import annotations

import enum

__all__ = ("DumpLevel", "parse_dump_level")


class DumpLevel(enum.IntFlag):
    """The five bits of a dump level; any sum from 0 to 31 is valid."""

    ZERO = 1
    """Pages filled with zeros."""
    CACHE = 2
    """Page cache that is not private (no buffers or fs-private data attached)."""
    CACHE_PRIVATE = 4
    """All page cache, private too."""
    USER = 8
    """Anonymous and hugetlbfs memory of user processes."""
    FREE = 16
    """Free pages (in the buddy allocator)."""


def parse_dump_level(text: str) -> DumpLevel:
    """Parse ``-d`` as makedumpfile does: a decimal from 0 to 31.

    :raises ValueError: with a message saying what is accepted.
    """
    try:
        value = int(text, 10)
    except ValueError:
        raise ValueError(f"dump level {text!r} is not a number from 0 to 31") from None
    if not 0 <= value <= 31:
        raise ValueError(f"dump level {value} is out of range: use 0 to 31")
    return DumpLevel(value)
