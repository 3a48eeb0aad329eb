"""keep_freed_memory: freed heap memory is reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys

# Rounds of what a dump does: a few 1 MiB blocks allocated, written and freed.
# Minor page faults are counted after two warm-up rounds, in a fresh process
# (glibc's thresholds adapt to what it has seen, so a process must start clean).
_ROUNDS = """
import resource, sys
from capture.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def round_():
    blocks = [bytearray(1 << 20) for _ in range(8)]
    del blocks
round_(); round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True, check=True
    )
    return int(run.stdout)


def test_freed_blocks_are_reused_without_page_faults() -> None:
    default, tuned = _faults("default"), _faults("tuned")
    # 20 rounds of 8 MiB are 40,960 pages: by default most fault in again.
    assert default > 10_000
    assert tuned < 1_000


# A cycle's bitmap: allocated once per cycle and pass, and given back whole
# when freed (from the heap, the passes' freed bitmaps left holes that raised
# a 1 TB dump's peak RSS by 9 MB).
_BITMAP = """
from capture.allocator import keep_freed_memory
def rss_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
assert keep_freed_memory()
before = rss_kb()
bitmap = bytearray(16 << 20)
held = rss_kb()
del bitmap
print(held - before, rss_kb() - before)
"""


def test_a_freed_cycle_bitmap_goes_back_to_the_kernel() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _BITMAP], capture_output=True, text=True, check=True
    )
    held, after = map(int, run.stdout.split())
    assert held > 15_000  # the 16 MiB were touched
    assert after < 2_000
