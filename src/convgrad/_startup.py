"""Imported first by ``convgrad/__init__.py``: start-up behaviour of the command line.

When the process was started as the command line (``convgrad ...`` or ``python -m convgrad``),
a Ctrl-C while NumPy and the engine are still importing ends with one line, "convgrad:
interrupted", and exit status 130, not an import traceback. :func:`convgrad.cli.main` restores
Python's default handler once it runs. Imported as a library, nothing changes.
"""

from __future__ import annotations

import os
import signal
import sys


def interrupted_at_start_up(signum: int, frame: object) -> None:
    """SIGINT handler while the command line starts: one line, status 130.

    ``os._exit``: nothing is open yet that needs closing, and an exception raised here could
    surface inside an extension module's import, where it need not end the process cleanly.
    """
    print("convgrad: interrupted", file=sys.stderr, flush=True)
    os._exit(130)


_argv = getattr(sys, "argv", None) or [""]
if _argv[0] == "-m" or _argv[0].rsplit("/", 1)[-1] == "convgrad":
    signal.signal(signal.SIGINT, interrupted_at_start_up)
