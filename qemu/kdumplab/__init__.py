"""QEMU crash lab for kdump-capture.

Boots Debian kernels under QEMU/TCG, builds recognisable memory contents,
panics via sysrq and captures /proc/vmcore with a pluggable capture
initramfs.  Import with /work/main/qemu on sys.path:

    from kdumplab import make_vmcore, count_patterns
"""

from .lab import DEFAULT_WORKLOAD, VmcoreResult, drop_vmcore, make_vmcore
from .util import LabError, cache_dir
from .vmcore import check_dump, count_patterns, phdrs_of

__all__ = [
    "DEFAULT_WORKLOAD",
    "LabError",
    "VmcoreResult",
    "cache_dir",
    "check_dump",
    "count_patterns",
    "drop_vmcore",
    "make_vmcore",
    "phdrs_of",
]
