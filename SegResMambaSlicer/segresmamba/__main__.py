"""``python -m segresmamba``: the same command as ``segresmamba``."""

import sys

from .cli import main

sys.exit(main())
