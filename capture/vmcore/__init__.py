"""Reading a crashed kernel's memory without debug info.

:class:`Vmcore` opens /proc/vmcore or a saved ELF vmcore; :class:`MemMap`
finds its struct pages; :func:`read_kernel_log` extracts its log.

The names are loaded on first use (module ``__getattr__``), not here: a
command imports only the submodules it runs (``dump`` never needs the
printk reader, ``dmesg`` never needs the struct page columns), and start-up
is a large part of a small dump's time.
"""

from typing import TYPE_CHECKING

from capture.lazyexports import lazy_getattr

if TYPE_CHECKING:
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

_SUBMODULE = {  # name: the submodule that defines it
    "Utsname": "kernel",
    "Vmcore": "kernel",
    "MemMap": "memmap",
    "PageColumns": "pagecolumns",
    "StructPageLayout": "pagecolumns",
    "KernelLog": "printk",
    "LogRecord": "printk",
    "format_log": "printk",
    "read_kernel_log": "printk",
    "VmcoreInfo": "vmcoreinfo",
    "parse_vmcoreinfo": "vmcoreinfo",
}


__getattr__ = lazy_getattr(__name__, _SUBMODULE)
