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
import threading
from collections.abc import Sequence

# Packages whose ``cli`` module contributes subcommands, in the order they are listed in --help.
_SUBCOMMAND_MODULES = ("convgrad.lab.cli", "convgrad.data.cli", "convgrad.theory.cli")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subsystem's subcommands registered."""
    from convgrad._version import __version__

    parser = argparse.ArgumentParser(
        prog="convgrad",
        description="Convolutional networks from first principles: engine, theory checks, lab.",
    )
    parser.add_argument("--version", action="version", version=f"convgrad {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


class _Interrupts:
    """SIGINT while a command runs: raises KeyboardInterrupt (as Python's default handler does)
    and remembers that it came, so that an interrupt which an extension module's import turned
    into another exception still ends as "interrupted"."""

    seen = False

    @classmethod
    def handler(cls, signum: int, frame: object) -> None:
        cls.seen = True
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status.

    Ctrl-C at any point (start-up included) ends with "convgrad: interrupted" and status 130; a
    convgrad error or a failed file operation that a subcommand did not handle ends with one line
    naming it (status 2 or 1), never a traceback.
    """
    from convgrad.errors import ConvgradError

    previous = None
    if threading.current_thread() is threading.main_thread():
        # Until the subcommands are imported, convgrad._startup's handler (when the process is
        # the command) ends it at once; afterwards a KeyboardInterrupt lets every finally run.
        previous = signal.getsignal(signal.SIGINT)
    _Interrupts.seen = False
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if previous is not None:
            signal.signal(signal.SIGINT, _Interrupts.handler)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except ConvgradError as error:
        print(f"convgrad: error: {error}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as error:
        if _Interrupts.seen:
            return _interrupted(argv)
        print(f"convgrad: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _interrupted(argv)
    except BaseException as error:
        if _Interrupts.seen and not isinstance(error, SystemExit):
            return _interrupted(argv)
        raise
    finally:
        if previous is not None:
            from convgrad._startup import interrupted_at_start_up

            restore = signal.default_int_handler if previous is interrupted_at_start_up else (
                previous)
            signal.signal(signal.SIGINT, restore)


def _interrupted(argv: Sequence[str] | None) -> int:
    print("convgrad: interrupted", file=sys.stderr)
    if argv is None:  # this process is the command: end it with 130 now
        _exit_now(130)
    return 130


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
