"""Page classification by dump level, page for page what makedumpfile does.

:func:`filter_pages` turns a vmcore and a :class:`DumpLevel` into the two
kdump bitmaps and per-category counts (:class:`FilterStats`).
"""

from capture.filter.bitmap import Bitmap
from capture.filter.levels import DumpLevel, parse_dump_level
from capture.filter.pagefilter import FilterResult, filter_pages
from capture.filter.stats import FilterStats

__all__ = ("Bitmap", "DumpLevel", "FilterResult", "FilterStats", "filter_pages", "parse_dump_level")
