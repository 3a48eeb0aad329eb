"""Page counts per category, as makedumpfile's report prints them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ("FilterStats",)


@dataclass
class FilterStats:
    """How many pages each rule excluded.

    Counted as makedumpfile counts them: a multi-page range (a free buddy
    block, a compound page) counts all its pages. ``ram`` counts each RAM pfn
    once (makedumpfile's "Original pages" counts the kernel-image PT_LOAD,
    which overlaps RAM, twice).
    """

    ram: int = 0
    zero: int = 0
    cache: int = 0
    cache_private: int = 0
    user: int = 0
    free: int = 0
    hwpoison: int = 0
    offline: int = 0
    unaccepted: int = 0
    """Counted into ``free`` in reports, as makedumpfile does."""

    def add(self, category: str, pages: int) -> None:
        """Count ``pages`` more in ``category`` (a field name)."""
        setattr(self, category, getattr(self, category) + pages)

    @property
    def excluded(self) -> int:
        """Every excluded page."""
        return (
            self.zero
            + self.cache
            + self.cache_private
            + self.user
            + self.free
            + self.hwpoison
            + self.offline
            + self.unaccepted
        )

    @property
    def dumped(self) -> int:
        """RAM pages left in the dump."""
        return self.ram - self.excluded

    def report(self) -> dict[str, int]:
        """The ``pages`` object of ``--report``."""
        counts = asdict(self)
        counts["free"] += counts.pop("unaccepted")
        counts["dumped"] = self.dumped
        return counts
