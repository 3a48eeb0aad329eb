"""The frozen agent's entry point: the same commands as ``kdump-capture``."""

import os
import sys


def _give_children_their_library_path() -> None:
    """PyInstaller's bootloader restarts the agent with LD_LIBRARY_PATH set to
    the tree's libraries (its own copy kept in LD_LIBRARY_PATH_ORIG). The
    agent's children (hooks, mount, blkid, extra_bins) must load the system's
    libraries, not the tree's, so they get the original value back."""
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        os.environ["LD_LIBRARY_PATH"] = original
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)


if getattr(sys, "frozen", False):
    _give_children_their_library_path()

from capture.cli import main  # noqa: E402 (after the environment is fixed)

sys.exit(main())
