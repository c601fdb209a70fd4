"""``python -m tiered_slm`` is the same as the ``tiered-slm`` console script."""

import sys

from tiered_slm.cli import main

sys.exit(main())
