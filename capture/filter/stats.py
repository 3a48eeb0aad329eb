"""Page counts per category, as makedumpfile's report prints them."""

from __future__ import annotations

__all__ = ("FilterStats",)


class FilterStats:
    """How many pages each rule excluded.

    Counted as makedumpfile counts them: a multi-page range (a free buddy
    block, a compound page) counts all its pages. ``ram`` counts each RAM pfn
    once (makedumpfile's "Original pages" counts the kernel-image PT_LOAD,
    which overlaps RAM, twice).
    """

    CATEGORIES = (
        "zero",
        "cache",
        "cache_private",
        "user",
        "free",
        "hwpoison",
        "offline",
        "unaccepted",
    )
    """``unaccepted`` is counted into ``free`` in reports, as makedumpfile does."""

    def __init__(self, ram: int = 0) -> None:
        self.ram = ram
        self.zero = self.cache = self.cache_private = self.user = self.free = 0
        self.hwpoison = self.offline = self.unaccepted = 0

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={value}" for name, value in self.counts().items())
        return f"FilterStats({counts})"

    def add(self, category: str, pages: int) -> None:
        """Count ``pages`` more in ``category`` (a field name)."""
        setattr(self, category, getattr(self, category) + pages)

    @property
    def excluded(self) -> int:
        """Every excluded page."""
        return sum(getattr(self, category) for category in self.CATEGORIES)

    def counts(self) -> dict[str, int]:
        """``ram`` and every category, by name."""
        return {
            "ram": self.ram,
            **{category: getattr(self, category) for category in self.CATEGORIES},
        }

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
