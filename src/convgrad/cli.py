"""The ``convgrad`` command line.

Each subsystem owns its subcommands: ``convgrad.<package>.cli`` defines ``register(subparsers)``,
which adds its parsers and sets ``func`` on each to a callable ``(args) -> int`` exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence

# Packages whose ``cli`` module contributes subcommands, in the order they are listed in --help.
_SUBCOMMAND_MODULES = ("convgrad.lab.cli", "convgrad.data.cli", "convgrad.theory.cli")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subsystem's subcommands registered."""
    from convgrad import __version__

    parser = argparse.ArgumentParser(
        prog="convgrad",
        description="Convolutional networks from first principles: engine, theory checks, lab.",
    )
    parser.add_argument("--version", action="version", version=f"convgrad {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status.

    Ctrl-C at any point (start-up included) ends with "convgrad: interrupted" and status 130; a
    convgrad error or a failed file operation that a subcommand did not handle ends with one line
    naming it (status 2 or 1), never a traceback.
    """
    from convgrad._startup import interrupted_at_start_up
    from convgrad.errors import ConvgradError

    if signal.getsignal(signal.SIGINT) is interrupted_at_start_up:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("convgrad: interrupted", file=sys.stderr)
        if argv is None:  # this process is the command: end it with 130 now
            _exit_now(130)
        return 130
    except ConvgradError as error:
        print(f"convgrad: error: {error}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as error:
        print(f"convgrad: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


def _exit_now(status: int) -> None:
    """Flush and end the process with ``status``.

    After a Ctrl-C that reached the interpreter inside code it runs through its C API (some
    libraries' import-time code), CPython ends a process whose KeyboardInterrupt was handled
    by killing itself with SIGINT anyway (status -2 instead of 130). Every ``finally`` has run
    by now (the lock is released by the kernel, files are written atomically), so nothing is
    lost by leaving at once.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
