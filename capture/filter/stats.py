"""Page counts per category, as makedumpfile's report prints them."""

from __future__ import annotations

from enum import StrEnum
from typing import Never

__all__ = ("Category", "FilterStats")


class Category(StrEnum):
    """Why a page is left out of a dump: the filter's rules, and zero pages
    (which only reading a page can tell, so the writers find them)."""

    ZERO = "zero"
    CACHE = "cache"
    CACHE_PRIVATE = "cache_private"
    USER = "user"
    FREE = "free"
    HWPOISON = "hwpoison"
    OFFLINE = "offline"
    UNACCEPTED = "unaccepted"
    """Counted into ``free`` in reports, as makedumpfile does."""


class _Count:
    """A read-only attribute naming one category's count (``stats.zero``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._category = Category(name)

    def __get__(self, stats: FilterStats, owner: type | None = None) -> int:
        return stats.pages[self._category]

    def __set__(self, stats: FilterStats, value: Never) -> None:
        # Never: mypy rejects ``stats.zero += n``; FilterStats.add is the one way.
        raise AttributeError(f"use FilterStats.add(Category.{self._category.name}, n)")


class FilterStats:
    """How many pages each category excluded.

    Counted as makedumpfile counts them: a multi-page range (a free buddy
    block, a compound page) counts all its pages. ``ram`` counts each RAM pfn
    once (makedumpfile's "Original pages" counts the kernel-image PT_LOAD,
    which overlaps RAM, twice). Counts only grow, through :meth:`add`.
    """

    zero = _Count()
    cache = _Count()
    cache_private = _Count()
    user = _Count()
    free = _Count()
    hwpoison = _Count()
    offline = _Count()
    unaccepted = _Count()

    def __init__(self, ram: int = 0) -> None:
        self.ram = ram
        self.pages = dict.fromkeys(Category, 0)

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={value}" for name, value in self.counts().items())
        return f"FilterStats({counts})"

    def add(self, category: Category, pages: int) -> None:
        """Count ``pages`` more in ``category``."""
        self.pages[category] += pages

    def add_all(self, other: FilterStats) -> None:
        """Count ``other``'s pages too (another cycle's), ``ram`` included."""
        self.ram += other.ram
        for category, pages in other.pages.items():
            self.pages[category] += pages

    def with_zero_pages(self, pages: int) -> FilterStats:
        """A copy that also counts ``pages`` zero pages a writer found."""
        copy = FilterStats()
        copy.add_all(self)
        copy.add(Category.ZERO, pages)
        return copy

    @property
    def excluded(self) -> int:
        """Every excluded page."""
        return sum(self.pages.values())

    def counts(self) -> dict[str, int]:
        """``ram`` and every category, by name."""
        return {"ram": self.ram, **{str(category): pages for category, pages in self.pages.items()}}

    @property
    def dumped(self) -> int:
        """RAM pages left in the dump."""
        return self.ram - self.excluded

    def report(self) -> dict[str, int]:
        """The ``pages`` object of ``--report``."""
        counts = self.counts()
        counts["free"] += counts.pop("unaccepted")
        counts["dumped"] = self.dumped
        return counts
