"""A bitmap with one bit per pfn, stored as the kdump format stores it.

Bit ``n`` is bit ``n & 7`` (LSB first) of byte ``n >> 3``, so the buffer is
written to a dump file as it is. Whole runs of pages are set or cleared with
byte-slice assignments and Python ints used as bitsets, never a loop per pfn.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ("Bitmap",)

_CHUNK_BITS = 1 << 16
_FILL_BYTES = 1 << 20


class Bitmap:
    """One bit for each pfn of ``[start, end)``, all clear.

    ``start`` is a multiple of 8, so :attr:`data` is the slice of a
    whole-machine bitmap from byte ``start // 8`` on: one cycle of a cyclic
    pass writes its part of the file's bitmap as it is. Every method takes
    and returns pfns; bits outside the range read as clear and are never set.
    """

    def __init__(self, end: int, start: int = 0) -> None:
        if start % 8 or start > end:
            raise ValueError(f"bad bitmap range [{start}, {end})")
        self.start, self.end = start, end
        self.data = bytearray((end - start + 7) // 8)

    @property
    def size(self) -> int:
        """Number of bits."""
        return self.end - self.start

    def copy(self) -> Bitmap:
        """An independent copy."""
        other = Bitmap(self.end, self.start)
        other.data[:] = self.data
        return other

    def is_set(self, pfn: int) -> bool:
        """Whether ``pfn``'s bit is set."""
        bit = pfn - self.start
        return 0 <= bit < self.size and bool(self.data[bit >> 3] >> (bit & 7) & 1)

    def set_range(self, start: int, end: int) -> None:
        """Set the bits of pfns ``[start, end)`` (clipped to the bitmap)."""
        self._fill(start - self.start, end - self.start, True)

    def clear_range(self, start: int, end: int) -> None:
        """Clear the bits of pfns ``[start, end)`` (clipped to the bitmap)."""
        self._fill(start - self.start, end - self.start, False)

    def get_bits(self, start: int, count: int) -> int:
        """Bits of pfns ``[start, start+count)`` as an int: bit ``i`` is pfn ``start+i``'s."""
        skipped = max(0, self.start - start)
        bit = start + skipped - self.start
        count = max(0, min(count - skipped, self.size - bit))
        if count == 0:
            return 0
        first, last = bit >> 3, (bit + count + 7) >> 3
        value = int.from_bytes(self.data[first:last], "little") >> (bit & 7)
        return (value & ((1 << count) - 1)) << skipped

    def clear_bits(self, start: int, bits: int) -> None:
        """Clear pfn ``start+i``'s bit wherever bit ``i`` of ``bits`` is set."""
        bit = start - self.start
        if bit < 0:
            bits >>= -bit
            bit = 0
        count = min(bits.bit_length(), self.size - bit)
        if bits <= 0 or count <= 0:
            return
        first, last = bit >> 3, (bit + count + 7) >> 3
        shift = bit & 7
        value = int.from_bytes(self.data[first:last], "little")
        value &= ~((bits & ((1 << count) - 1)) << shift)
        self.data[first:last] = value.to_bytes(last - first, "little")

    def count(self, start: int | None = None, end: int | None = None) -> int:
        """Number of set bits among pfns ``[start, end)`` (default: all)."""
        start = self.start if start is None else max(start, self.start)
        end = self.end if end is None else min(end, self.end)
        total = 0
        for chunk in range(start, end, _CHUNK_BITS):
            total += self.get_bits(chunk, min(_CHUNK_BITS, end - chunk)).bit_count()
        return total

    def runs(self, start: int | None = None, end: int | None = None) -> Iterator[tuple[int, int]]:
        """Maximal runs ``[first, last)`` of pfns whose bits are set, in order."""
        start = self.start if start is None else max(start, self.start)
        end = self.end if end is None else min(end, self.end)
        run_start: int | None = None
        for chunk in range(start, end, _CHUNK_BITS):
            width = min(_CHUNK_BITS, end - chunk)
            bits = self.get_bits(chunk, width)
            position = 0
            while position < width:
                if run_start is None:
                    if bits == 0:
                        break
                    skip = (bits & -bits).bit_length() - 1
                    run_start = chunk + position + skip
                    bits >>= skip
                    position += skip
                else:
                    ones = (~bits & (bits + 1)).bit_length() - 1
                    if position + ones >= width:
                        break
                    yield run_start, chunk + position + ones
                    run_start = None
                    bits >>= ones
                    position += ones
        if run_start is not None:
            yield run_start, end

    def _fill(self, start: int, end: int, value: bool) -> None:
        """Set or clear bits (not pfns) ``[start, end)``."""
        start, end = max(0, start), min(end, self.size)
        if start >= end:
            return
        first, last = start >> 3, end >> 3
        if first == last:
            self._mask_byte(first, ((1 << (end - start)) - 1) << (start & 7), value)
            return
        if start & 7:
            self._mask_byte(first, (0xFF << (start & 7)) & 0xFF, value)
            first += 1
        fill = (b"\xff" if value else b"\0") * min(last - first, _FILL_BYTES)
        for at in range(first, last, _FILL_BYTES):  # no temporary the size of the range
            end_at = min(last, at + _FILL_BYTES)
            self.data[at:end_at] = fill[: end_at - at]
        if end & 7:
            self._mask_byte(last, (1 << (end & 7)) - 1, value)

    def _mask_byte(self, index: int, mask: int, value: bool) -> None:
        if value:
            self.data[index] |= mask
        else:
            self.data[index] &= ~mask & 0xFF
