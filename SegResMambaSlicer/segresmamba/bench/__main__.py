"""``python -m segresmamba.bench``: the same as ``segresmamba bench``."""

import sys

from . import main

sys.exit(main())
