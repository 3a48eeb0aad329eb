"""Dump files: kdump-compressed and ELF writers, sinks, codecs, readers.

:func:`dump_vmcore` filters a vmcore and writes it; :func:`rebuild` turns a
flattened stream back into a regular file.
"""

from capture.dumpfile.codecs import CODECS, Codec, codec_by_name
from capture.dumpfile.dump import DumpOptions, DumpReport, dump_vmcore
from capture.dumpfile.flattened import rebuild

__all__ = (
    "CODECS",
    "Codec",
    "DumpOptions",
    "DumpReport",
    "codec_by_name",
    "dump_vmcore",
    "rebuild",
)
