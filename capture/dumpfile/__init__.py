"""Dump files: kdump-compressed and ELF writers, sinks, codecs, readers.

:func:`capture.dumpfile.dump.dump_vmcore` filters a vmcore and writes it;
:func:`capture.dumpfile.flattened.rebuild` turns a flattened stream back into
a regular file; :func:`capture.dumpfile.reader.open_dump` reads any dump.
Nothing is imported here: each command loads only the modules it runs, which
is most of its start-up time.
"""
