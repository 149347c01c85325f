"""``python -m convgrad``: the same command line as the ``convgrad`` console script."""

import sys

try:
    from convgrad.cli import main
except KeyboardInterrupt:  # Ctrl-C while NumPy and convgrad are still importing
    print("convgrad: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
