"""Trying a network step again until it works or its time is up.

A capture kernel's network comes up late and a server may be rebooting:
the NFS mount, the route to the server and the SSH connection are each
tried again, waiting 1, 2, 4 ... 30 s between tries, for at most
``kdump_capture_network_timeout`` seconds in all (the tries' own time
counted) and only while the run's deadline allows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from capture.agent.targets import TargetError, Waiting

__all__ = ("with_backoff",)

log = logging.getLogger("capture")
T = TypeVar("T")

FIRST_PAUSE, LONGEST_PAUSE = 1.0, 30.0
SHORTEST_TRY = 5.0
"""Seconds a last try gets, however little of the limit is left."""


def with_backoff(attempt: Callable[[float], T], wait: Waiting, limit: float, what: str) -> T:
    """``attempt(seconds left)`` until it returns instead of raising OSError.

    :raises TargetError: naming ``what``, the last error and the setting
        that bounds the wait, when time is up or ``wait`` says stop.
    """
    pause, spent = FIRST_PAUSE, 0.0
    while True:
        started = time.monotonic()
        try:
            return attempt(max(SHORTEST_TRY, limit - spent))
        except OSError as error:
            problem = error.strerror or str(error)
        spent += time.monotonic() - started
        if spent + pause > limit or not wait(pause):
            raise TargetError(f"{what}: {problem} (tried for {spent:.0f} s; "
                              f"kdump_capture_network_timeout is {limit:g})")  # fmt: skip
        log.info("%s: %s; trying again in %.0f s", what, problem, pause)
        spent += pause
        pause = min(pause * 2, LONGEST_PAUSE)
