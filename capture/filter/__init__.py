"""Page classification by dump level, page for page what makedumpfile does.

:func:`filter_pages` turns a vmcore and a :class:`DumpLevel` into the two
kdump bitmaps and per-category counts (:class:`FilterStats`);
:class:`FilteredPages` does it in cycles when the bitmaps would not fit a
memory budget.

The names are loaded on first use (module ``__getattr__``), not here:
``capture.cli`` imports :mod:`capture.filter.levels` for its argument
parser, and an eager import here would load the whole classifier (and
through it most of :mod:`capture.vmcore`) into every command's start-up.
"""

from typing import TYPE_CHECKING

from capture.lazyexports import lazy_getattr

if TYPE_CHECKING:
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

_SUBMODULE = {  # name: the submodule that defines it
    "Bitmap": "bitmap",
    "DumpLevel": "levels",
    "parse_dump_level": "levels",
    "FilteredPages": "pagefilter",
    "FilterResult": "pagefilter",
    "default_bitmap_budget": "pagefilter",
    "filter_cycles": "pagefilter",
    "filter_pages": "pagefilter",
    "FilterStats": "stats",
}


__getattr__ = lazy_getattr(__name__, _SUBMODULE)
