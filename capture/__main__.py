"""``python -m capture``: the same as the ``kdump-capture`` command."""

import sys

from capture.cli import main

sys.exit(main())
