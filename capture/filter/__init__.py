"""Page classification by dump level, page for page what makedumpfile does.

:func:`filter_pages` turns a vmcore and a :class:`DumpLevel` into the two
kdump bitmaps and per-category counts (:class:`FilterStats`);
:class:`FilteredPages` does it in cycles when the bitmaps would not fit a
memory budget.
"""

from capture.filter.bitmap import Bitmap
from capture.filter.levels import DumpLevel, parse_dump_level
from capture.filter.pagefilter import (
    FilteredPages,
    FilterResult,
    default_bitmap_budget,
    filter_cycles,
    filter_pages,
)
from capture.filter.stats import FilterStats

__all__ = (
    "Bitmap",
    "DumpLevel",
    "FilterResult",
    "FilterStats",
    "FilteredPages",
    "default_bitmap_budget",
    "filter_cycles",
    "filter_pages",
    "parse_dump_level",
)
