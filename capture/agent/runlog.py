"""The run's own log: every step, its time, what failed (``kexec-dmesg.log``).

Records of the ``capture`` logger are kept (the newest, up to a bound: a
crash kernel has little memory) and written into the dump directory last.
In the capture kernel the log of the capture kernel itself follows, as
Fedora's kexec-dmesg.log holds it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

__all__ = ("RunLog",)

_KEPT_LINES = 20_000


class RunLog(logging.Handler):
    """Keeps the ``capture`` logger's lines while the run lasts."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(logging.INFO)
        self._clock = clock
        self._lines: deque[str] = deque(maxlen=_KEPT_LINES)
        logger = logging.getLogger("capture")
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = str(record.msg)
        self._lines.append(f"{stamp} {record.levelname.lower()}: {message}")

    def text(self, kernel_log: str | None = None) -> bytes:
        """The run's lines, then (if given) the capture kernel's own log."""
        lines = list(self._lines)
        if kernel_log:
            lines += ["", "--- the capture kernel's log ---", kernel_log.rstrip("\n")]
        return ("\n".join(lines) + "\n").encode("utf-8", "replace")

    def close(self) -> None:
        logging.getLogger("capture").removeHandler(self)
        super().close()
