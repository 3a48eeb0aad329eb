"""A bitmap with one bit per pfn, stored as the kdump format stores it.

Bit ``n`` is bit ``n & 7`` (LSB first) of byte ``n >> 3``, so the buffer is
written to a dump file as it is. Whole runs of pages are set or cleared with
byte-slice assignments and Python ints used as bitsets, never a loop per pfn.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ("Bitmap",)

_CHUNK_BITS = 1 << 16


class Bitmap:
    """``size`` bits, all clear."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray((size + 7) // 8)

    def copy(self) -> Bitmap:
        """An independent copy."""
        other = Bitmap(self.size)
        other.data[:] = self.data
        return other

    def is_set(self, bit: int) -> bool:
        """Whether ``bit`` is set (bits past the end read as clear)."""
        return 0 <= bit < self.size and bool(self.data[bit >> 3] >> (bit & 7) & 1)

    def set_range(self, start: int, end: int) -> None:
        """Set bits ``[start, end)`` (clipped to the bitmap)."""
        self._fill(start, end, True)

    def clear_range(self, start: int, end: int) -> None:
        """Clear bits ``[start, end)`` (clipped to the bitmap)."""
        self._fill(start, end, False)

    def get_bits(self, start: int, count: int) -> int:
        """Bits ``[start, start+count)`` as an int: bit ``i`` is bit ``start+i``."""
        count = max(0, min(count, self.size - start))
        if count == 0:
            return 0
        first, last = start >> 3, (start + count + 7) >> 3
        value = int.from_bytes(self.data[first:last], "little") >> (start & 7)
        return value & ((1 << count) - 1)

    def clear_bits(self, start: int, bits: int) -> None:
        """Clear bit ``start+i`` wherever bit ``i`` of ``bits`` is set."""
        if bits <= 0:
            return
        count = min(bits.bit_length(), self.size - start)
        first, last = start >> 3, (start + count + 7) >> 3
        shift = start & 7
        value = int.from_bytes(self.data[first:last], "little")
        value &= ~((bits & ((1 << count) - 1)) << shift)
        self.data[first:last] = value.to_bytes(last - first, "little")

    def count(self, start: int = 0, end: int | None = None) -> int:
        """Number of set bits in ``[start, end)``."""
        end = self.size if end is None else min(end, self.size)
        total = 0
        for chunk in range(start, end, _CHUNK_BITS):
            total += self.get_bits(chunk, min(_CHUNK_BITS, end - chunk)).bit_count()
        return total

    def runs(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
        """Maximal runs ``[first, last)`` of set bits, in order."""
        end = self.size if end is None else min(end, self.size)
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
        self.data[first:last] = (b"\xff" if value else b"\0") * (last - first)
        if end & 7:
            self._mask_byte(last, (1 << (end & 7)) - 1, value)

    def _mask_byte(self, index: int, mask: int, value: bool) -> None:
        if value:
            self.data[index] |= mask
        else:
            self.data[index] &= ~mask & 0xFF
