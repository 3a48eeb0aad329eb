"""``python -m capture``: the same as the ``kdump-capture`` command."""

from capture.cli import console

console()
