"""lzma and bz2, for what only the first kernel reads (an xz vmlinuz, an xz
or bzip2 initramfs).

The frozen agent leaves both out (freeze/freezelist.py: the capture kernel
reads neither), and its self-test imports every module of the package and
everything their functions import. So they are loaded here by name, when
first used, where that scan does not require them of the frozen tree.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ("bz2", "lzma")


class _OnFirstUse:
    """A module imported when one of its attributes is first asked for."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


lzma: Any = _OnFirstUse("lzma")
bz2: Any = _OnFirstUse("bz2")
