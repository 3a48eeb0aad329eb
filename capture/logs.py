"""The engine's logger, which imports ``logging`` only when it has a message.

``logging`` brings threading, traceback, linecache, tokenize, weakref and
string with it: 5 ms of start-up, 4% of a small dump (measured), and a
dump that goes well logs nothing. So the engine's modules (those that
``dump``, ``dmesg`` and ``info`` run) log through ``log`` here, and the
command line says how messages are shown with ``show_on_stderr``, which
defers the handler until the first message. The agent logs every step: its
modules use ``logging.getLogger("capture")``, the same logger, directly.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

__all__ = ("DEBUG", "INFO", "WARNING", "log", "show_on_stderr")

DEBUG, INFO, WARNING = 10, 20, 30
"""logging's levels (fixed since it exists), to name without importing it."""

_FORMAT = "%(levelname)s: %(message)s"

_deferred_level: int | None = None
"""The level to show, while setting logging up waits for a first message."""


def show_on_stderr(level: int, *, defer: bool) -> None:
    """Show messages of ``level`` and above on stderr as ``LEVEL: message``:
    now, or (``defer``) when the first message comes. Deferring saves only
    the import: with logging imported already, it is set up at once."""
    global _deferred_level
    _deferred_level = level
    if not defer or "logging" in sys.modules:
        _real_logger()


def _shown(level: int) -> bool:
    """False only for a message below the deferred level (logging would
    drop it too), which then costs no import."""
    return _deferred_level is None or level >= _deferred_level


def _real_logger() -> logging.Logger:
    global _deferred_level
    import logging

    if _deferred_level is not None:
        logging.basicConfig(format=_FORMAT, level=_deferred_level)
        _deferred_level = None
    return logging.getLogger("capture")


class _Logger:
    """The ``capture`` logger's methods the engine uses, each importing
    logging (and showing messages as set) on first use; records name the
    caller's line, not this module's."""

    __slots__ = ()

    def debug(self, message: str, *args: object) -> None:
        if _shown(DEBUG):
            _real_logger().debug(message, *args, stacklevel=2)

    def info(self, message: str, *args: object) -> None:
        if _shown(INFO):
            _real_logger().info(message, *args, stacklevel=2)

    def warning(self, message: str, *args: object) -> None:
        _real_logger().warning(message, *args, stacklevel=2)

    def error(self, message: str, *args: object) -> None:
        _real_logger().error(message, *args, stacklevel=2)


log = _Logger()
