"""Reading a crashed kernel's memory without debug info.

:class:`Vmcore` opens /proc/vmcore or a saved ELF vmcore; :class:`MemMap`
finds its struct pages; :func:`read_kernel_log` extracts its log.
"""

from capture.vmcore.kernel import Utsname, Vmcore
from capture.vmcore.memmap import MemMap
from capture.vmcore.pagecolumns import PageColumns, StructPageLayout
from capture.vmcore.printk import KernelLog, LogRecord, format_log, read_kernel_log
from capture.vmcore.vmcoreinfo import VmcoreInfo, parse_vmcoreinfo

__all__ = (
    "KernelLog",
    "LogRecord",
    "MemMap",
    "PageColumns",
    "StructPageLayout",
    "Utsname",
    "Vmcore",
    "VmcoreInfo",
    "format_log",
    "parse_vmcoreinfo",
    "read_kernel_log",
)
