"""kdump-capture: a Linux crash-dump capture agent.

The engine reads a crashed kernel's memory (:mod:`capture.vmcore`); the
command-line front is :mod:`capture.cli`.
"""

__version__ = "0.1.0"
