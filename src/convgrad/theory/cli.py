"""``convgrad verify`` and ``convgrad jacobian``: the theory checks and the Jacobian explorer.

Registered on the top-level parser by :func:`register`; each handler returns an exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from convgrad.errors import ConvgradError

if TYPE_CHECKING:
    from convgrad.theory.base import Check, Result


def register(subparsers: Any) -> None:
    """Add the ``verify`` and ``jacobian`` subcommands to the top-level parser's subparsers."""
    verify = subparsers.add_parser(
        "verify", help="run the course's claims as checks on the engine",
        description="Run the course's theoretical claims as executable checks. Exit status 0 "
                    "only if every selected check passes, 2 for an unknown name.",
    )
    verify.add_argument("names", nargs="*", metavar="NAME",
                        help="checks to run (default: all); see --list")
    verify.add_argument("--json", action="store_true", help="print the results as JSON")
    verify.add_argument("--details", action="store_true",
                        help="after the table, print each check's formula and computation")
    verify.add_argument("--list", action="store_true", help="list the checks and exit")
    verify.set_defaults(func=_verify)

    jacobian = subparsers.add_parser(
        "jacobian", help="print (and plot) the explicit Jacobian of a small convolution",
        description="The Jacobian of z = conv(x, w) with respect to w or x, built from the "
                    "definition. The input is x = 1..N (row-major in 2D), the filter w = 1..K, "
                    "so each entry shows which x or w it is.",
    )
    jacobian.add_argument("--n", type=int, default=6, help="input length N (N x N with --2d)")
    jacobian.add_argument("--k", type=int, default=3, help="kernel size K (K x K with --2d)")
    jacobian.add_argument("--stride", type=int, default=1)
    jacobian.add_argument("--padding", default="0", help="an int, 'valid' or 'same' (default 0)")
    jacobian.add_argument("--dilation", type=int, default=1)
    jacobian.add_argument("--wrt", choices=("weight", "input"), default="weight")
    jacobian.add_argument("--2d", dest="two_d", action="store_true",
                          help="a 2-D convolution of an N x N image with a K x K filter")
    jacobian.add_argument("--plot", metavar="PATH", help="write a PNG heat map here")
    jacobian.set_defaults(func=_jacobian)


# ----------------------------------------------------------------------------- verify
def _verify(args: argparse.Namespace) -> int:
    from convgrad.theory import CHECKS, run_checks

    if args.list:
        for check in CHECKS.values():
            print(f"{check.name:<16} {check.statement}")
        return 0
    unknown = [name for name in args.names if name not in CHECKS]
    if unknown:
        print(f"convgrad verify: unknown check{'s' if len(unknown) > 1 else ''} "
              f"{', '.join(map(repr, unknown))}; valid names: {', '.join(CHECKS)}",
              file=sys.stderr)
        return 2
    results = run_checks(args.names or None)
    if args.json:
        print(json.dumps([
            {"name": check.name, "number": check.number, "statement": check.statement,
             "formula": check.formula, **result.to_dict()}
            for check, result in results
        ], indent=2))
    else:
        print(format_table(results))
        if args.details:
            for check, result in results:
                print(f"\n== {check.number}. {check.name}: {check.statement}")
                print("Formula: " + check.formula.replace("\n", "\n         "))
                print(result.details)
    return 0 if all(result.passed for _, result in results) else 1


def format_table(results: list[tuple[Check, Result]]) -> str:
    """The verify table: name, statement, result, measured error (and its tolerance)."""
    rows = [("name", "statement", "result", "error", "tolerance")]
    for check, result in results:
        rows.append((check.name, check.statement, "PASS" if result.passed else "FAIL",
                     f"{result.error:.1e}",
                     "exact" if result.tolerance == 0 else f"{result.tolerance:.0e}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) if i < 3 else row[i].rjust(widths[i]) for i in range(5)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    passed = sum(result.passed for _, result in results)
    lines.append(f"{passed}/{len(results)} checks passed")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- jacobian
def _jacobian(args: argparse.Namespace) -> int:
    from convgrad.theory.jacobian import conv_jacobian, format_matrix, plot_jacobian

    padding: Any = args.padding
    if padding not in ("valid", "same"):
        try:
            padding = int(padding)
        except ValueError:
            print(f"convgrad jacobian: --padding must be an int, 'valid' or 'same', received "
                  f"{args.padding!r}", file=sys.stderr)
            return 2
    n, k = args.n, args.k
    if n <= 0 or k <= 0:
        print(f"convgrad jacobian: expected strictly positive --n and --k, received n={n}, "
              f"k={k}", file=sys.stderr)
        return 2
    if args.two_d:
        x = np.arange(1.0, n * n + 1).reshape(n, n)
        w = np.arange(1.0, k * k + 1).reshape(k, k)
        x_names = [f"x{i + 1}{j + 1}" for i in range(n) for j in range(n)]
        w_names = [f"w{i + 1}{j + 1}" for i in range(k) for j in range(k)]
    else:
        x, w = np.arange(1.0, n + 1), np.arange(1.0, k + 1)
        x_names, w_names = [f"x{i + 1}" for i in range(n)], [f"w{j + 1}" for j in range(k)]
    try:
        matrix = conv_jacobian(x, w, wrt=args.wrt, stride=args.stride, padding=padding,
                               dilation=args.dilation)
    except ConvgradError as error:
        print(f"convgrad jacobian: {error}", file=sys.stderr)
        return 2
    dims = "2D" if args.two_d else "1D"
    shape = f"{n}x{n}" if args.two_d else f"{n}"
    kernel = f"{k}x{k}" if args.two_d else f"{k}"
    respect = "w" if args.wrt == "weight" else "x"
    title = (f"d vec(z) / d vec({respect}): {dims} conv, input {shape}, kernel {kernel}, "
             f"stride {args.stride}, padding {padding}, dilation {args.dilation}")
    print(title)
    print(f"x = 1..{x.size}, w = 1..{w.size}; J has shape {matrix.shape}; zeros shown as '.'")
    columns = w_names if args.wrt == "weight" else x_names
    rows = [f"z{r + 1}" for r in range(matrix.shape[0])]
    print(format_matrix(matrix, rows, columns))
    if args.plot:
        path = plot_jacobian(matrix, args.plot, title=title.replace(": ", "\n", 1),
                             xlabel=f"{respect} index (vec)", ylabel="output index (vec)")
        print(f"heat map written to {path}")
    return 0
