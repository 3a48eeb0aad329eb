"""The ELF writer's load plan against makedumpfile's rule applied page by page.

The writer walks the dumpable bitmap run by run; the reference below walks it
one page at a time, the way makedumpfile's ELF writer does (docs/formats.md
§"The ELF dump"), so the two are written differently and must agree on random
bitmaps.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from capture.dumpfile.elf import EXCLUDED_RUN, plan_loads
from capture.filter import DumpLevel, FilterResult, FilterStats
from capture.filter.bitmap import Bitmap
from capture.vmcore.elfcore import LoadSegment

PAGE = 4096


def reference_plan(segment: LoadSegment, bitmap: Bitmap) -> list[tuple[int, int, int, int]]:
    """(paddr, vaddr, memsz, filesz) of each output load, page by page."""
    loads = []
    paddr, vaddr, memsz, filesz = segment.paddr, segment.vaddr, 0, 0
    excluded = 0
    address = segment.paddr
    while address < segment.end:
        pfn = address // PAGE
        size = min(segment.end, (pfn + 1) * PAGE) - address
        address += size
        if not bitmap.is_set(pfn):
            excluded += 1
            memsz += size
            continue
        if excluded < EXCLUDED_RUN:
            memsz += size
            filesz = memsz
        else:
            loads.append((paddr, vaddr, memsz, filesz))
            vaddr += pfn * PAGE - paddr
            paddr, memsz, filesz = pfn * PAGE, size, size
        excluded = 0
    loads.append((paddr, vaddr, memsz, filesz))
    return loads


@st.composite
def segments_and_bitmaps(draw: st.DrawFn) -> tuple[LoadSegment, Bitmap]:
    start = draw(st.integers(0, 600)) * PAGE + draw(st.sampled_from([0, 0, 0x400, 0xC00]))
    size = draw(st.integers(0, 3000 * PAGE))
    bitmap = Bitmap(-(-(start + size) // PAGE) + 1)
    pfn = start // PAGE
    # Alternating runs, some of them around the 256-page threshold.
    while pfn < bitmap.size:
        length = draw(st.sampled_from([1, 3, 255, 256, 257, 600]))
        if draw(st.booleans()):
            bitmap.set_range(pfn, pfn + length)
        pfn += length
    segment = LoadSegment(start, 0xFFFF888000000000 + start, 0x1000, size, size)
    return segment, bitmap


@settings(max_examples=300, deadline=None)
@given(segments_and_bitmaps())
def test_plan_matches_page_by_page_rule(case: tuple[LoadSegment, Bitmap]) -> None:
    segment, bitmap = case
    filtered = FilterResult(DumpLevel(31), bitmap.copy(), bitmap, FilterStats(), [])
    planned = plan_loads(segment, filtered, PAGE)
    got = [(load.paddr, load.vaddr, load.memsz, load.filesz) for load in planned]
    assert got == reference_plan(segment, bitmap)
