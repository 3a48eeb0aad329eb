"""Page classification equals makedumpfile's, category by category.

The reference is makedumpfile 1.7.9's report shipped with each real vmcore
(``report.txt``, counts in hex) for dump levels 0, 1, 2, 4, 8, 16 and 31.
"""

from __future__ import annotations

import pytest

from capture.filter import DumpLevel, filter_pages
from capture.vmcore import Vmcore
from tests.realcores import LABELS, RealCore, kernel_segment_pages, makedumpfile_counts


@pytest.mark.parametrize("level", [0, 1, 2, 4, 8, 16, 31])
def test_categories_equal_makedumpfile(real_core: RealCore, level: int) -> None:
    expected = makedumpfile_counts(real_core, level)
    with Vmcore(str(real_core.vmcore)) as vmcore:
        result = filter_pages(vmcore, DumpLevel(level))
        double_counted = kernel_segment_pages(vmcore)
    counts = result.stats.report()
    assert {key: counts[key] for key in LABELS} == {key: expected[key] for key in LABELS}
    assert result.problems == []
    # Zero pages are found by the writer; what is left for it must add up too.
    dumpable = result.bitmap2.count()
    assert dumpable - expected["zero"] == expected["remaining"] - double_counted


def test_free_pages_are_found_on_every_kernel(real_core: RealCore) -> None:
    """The 6.12 page-type change once made makedumpfile find no free page at all."""
    with Vmcore(str(real_core.vmcore)) as vmcore:
        stats = filter_pages(vmcore, DumpLevel.FREE).stats
    assert stats.free > 1000
