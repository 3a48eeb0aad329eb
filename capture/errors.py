"""The project's exception tree.

Library code raises these; only :mod:`capture.cli` turns them into an
``error: ...`` line and an exit status. The categories follow libkdumpfile's
status codes, so a caller can decide what to do without parsing messages:

* :class:`CorruptError` - the input is malformed (a crashed kernel's memory is
  corrupt by definition, so this is an expected outcome, not a bug);
* :class:`NoDataError` - the data asked for is not in the dump (an address in a
  hole, an unmapped virtual address, a page past the end of a truncated file);
* :class:`UnsupportedError` - well-formed input this version cannot handle.
"""

from __future__ import annotations

__all__ = ("CaptureError", "CorruptError", "NoDataError", "UnsupportedError")


class CaptureError(Exception):
    """Base of every error the project raises on purpose."""


class CorruptError(CaptureError):
    """The input is malformed: a bad header, note, table entry or pointer."""


class NoDataError(CaptureError):
    """The requested memory or record is not present in the dump."""


class UnsupportedError(CaptureError):
    """Valid input that this version does not know how to handle."""
