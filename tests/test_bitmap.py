"""The pfn bitmap against a plain list of booleans."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from capture.filter.bitmap import Bitmap

operations = st.lists(
    st.tuples(st.booleans(), st.integers(-8, 200_000), st.integers(0, 70_000)), max_size=12
)


def runs_of(bits: list[bool]) -> list[tuple[int, int]]:
    runs, start = [], None
    for index, bit in enumerate([*bits, False]):
        if bit and start is None:
            start = index
        elif not bit and start is not None:
            runs.append((start, index))
            start = None
    return runs


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 140_000), operations, st.integers(0, 2**80), st.integers(0, 139_999))
def test_matches_a_list(size: int, ops, bits: int, at: int) -> None:
    bitmap, model = Bitmap(size), [False] * size
    for value, start, length in ops:
        (bitmap.set_range if value else bitmap.clear_range)(start, start + length)
        for index in range(max(0, start), min(size, start + length)):
            model[index] = value
    at %= size
    bitmap.clear_bits(at, bits)
    for index in range(80):
        if bits >> index & 1 and at + index < size:
            model[at + index] = False
    assert bitmap.count() == sum(model)
    assert list(bitmap.runs()) == runs_of(model)
    assert bitmap.get_bits(at, 80) == sum(
        1 << i for i in range(80) if at + i < size and model[at + i]
    )
    assert bytes(bitmap.data) == bytes(
        sum(1 << bit for bit in range(8) if 8 * byte + bit < size and model[8 * byte + bit])
        for byte in range(len(bitmap.data))
    )


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 8).map(lambda k: k * 8 * 997),
    st.integers(1, 40_000),
    operations,
    st.integers(0, 2**80),
    st.integers(-100, 60_000),
)
def test_a_bitmap_from_a_later_pfn_is_a_slice_of_the_whole(
    start: int, size: int, ops, bits: int, at: int
) -> None:
    """A cycle's bitmap of pfns [start, end): the same operations, in pfns, as
    on a whole-machine bitmap give the whole one's bytes from start // 8 on."""
    end = start + size
    part, whole = Bitmap(end, start), Bitmap(end)
    for value, first, length in ops:
        for bitmap in (part, whole):
            (bitmap.set_range if value else bitmap.clear_range)(first, first + length)
    for bitmap in (part, whole):
        bitmap.clear_bits(start + at, bits)
    assert bytes(part.data) == bytes(whole.data[start // 8 :])
    assert part.count() == whole.count(start)
    assert list(part.runs()) == list(whole.runs(start))
    assert part.get_bits(start + at, 90) == whole.get_bits(start + at, 90) & ~(
        (1 << max(0, -at)) - 1
    )
    assert [part.is_set(pfn) for pfn in range(start - 3, start + 50)] == [
        start <= pfn and whole.is_set(pfn) for pfn in range(start - 3, start + 50)
    ]
