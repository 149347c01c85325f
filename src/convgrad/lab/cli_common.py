"""What the lab's subcommands share: exit statuses, argument types, the error line and the
command line a report records (used by ``convgrad.lab.cli`` and the Ray driver alike)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convgrad.cli_args import non_negative_integer, positive_integer

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3


def _error(message: str) -> None:
    print(f"convgrad: error: {message}", file=sys.stderr)


_positive = positive_integer
_non_negative = non_negative_integer


def _exit_status(results: list[dict]) -> int:
    for result in results:
        if result["status"] != "completed":
            _error(f"{result['name']} {result.get('point', '')}: {result['status']}: "
                   f"{result.get('message', '')}")
    if all(r["status"] == "completed" for r in results):
        return EXIT_OK
    if all(r["status"] in ("completed", "locked") for r in results):
        return EXIT_LOCKED
    return EXIT_FAILED


def _command_line(args: argparse.Namespace, out: Path) -> str:
    parts = ["convgrad reproduce", f"--budget {args.budget}", f"--out {out}"]
    if args.jobs > 1:
        parts.append(f"--jobs {args.jobs}")
    if args.only:
        parts.append("--only " + " ".join(args.only))
    if args.seeds:
        parts.append(f"--seeds {args.seeds}")
    return " ".join(parts)
