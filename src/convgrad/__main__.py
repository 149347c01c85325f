"""``python -m convgrad``: the same command line as the ``convgrad`` console script."""

import sys

from convgrad.cli import main

sys.exit(main())
