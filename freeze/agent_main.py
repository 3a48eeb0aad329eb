"""The frozen agent's entry point: the same commands as ``kdump-capture``."""

import os
import sys


def _give_children_the_original_environment() -> None:
    """PyInstaller's bootloader restarts the agent with LD_LIBRARY_PATH set to
    the tree's libraries (the caller's value kept in LD_LIBRARY_PATH_ORIG) and
    _PYI_* variables that tell a restarted instance from a new one. The
    agent's children (hooks, mount, blkid, extra_bins, the agent again) must
    load the system's libraries, not the tree's, and start afresh."""
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        os.environ["LD_LIBRARY_PATH"] = original
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)
    for name in [name for name in os.environ if name.startswith("_PYI_")]:
        del os.environ[name]


if getattr(sys, "frozen", False):
    _give_children_the_original_environment()

from capture.cli import main  # noqa: E402 (after the environment is fixed)

sys.exit(main())
