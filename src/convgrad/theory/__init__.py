"""The course's theory as executable checks, and an explorer for the Jacobian of a convolution.

Each claim of the course is a :class:`Check` (name, one-line statement, formula) whose ``run()``
computes it with the engine and compares with an independent computation from the definition,
returning a :class:`Result` (passed, measured error, tolerance, the numbers as shown to a
student). ``convgrad verify`` runs them all; ``convgrad jacobian`` prints and plots
:func:`conv_jacobian`.

Examples:
    >>> from convgrad.theory import CHECKS, run_checks
    >>> CHECKS["input_gradient"].run().passed
    True
    >>> [check.name for check, result in run_checks(["output_size"]) if result.passed]
    ['output_size']
"""

from __future__ import annotations

from collections.abc import Iterable

from convgrad.errors import ArgumentError
from convgrad.theory.backprop import DEAD_RELU, MATRIX_CALCULUS
from convgrad.theory.base import Check, Result
from convgrad.theory.convolution import (
    EQUIVARIANCE,
    FILTER_JACOBIAN,
    INPUT_GRADIENT,
    OUTPUT_SIZE,
)
from convgrad.theory.jacobian import conv_definition, conv_jacobian, plot_jacobian
from convgrad.theory.networks import LINEAR_NETWORK, PARAM_COUNTS

__all__ = [
    "CHECKS", "Check", "Result", "conv_definition", "conv_jacobian", "plot_jacobian",
    "run_checks",
]

#: Every check, in the order of the course's claims 1-8, by name.
CHECKS: dict[str, Check] = {
    check.name: check
    for check in (EQUIVARIANCE, OUTPUT_SIZE, FILTER_JACOBIAN, INPUT_GRADIENT, DEAD_RELU,
                  PARAM_COUNTS, MATRIX_CALCULUS, LINEAR_NETWORK)
}


def run_checks(names: Iterable[str] | None = None) -> list[tuple[Check, Result]]:
    """Run checks by name (all of them, in order, when names is None).

    Args:
        names: check names from :data:`CHECKS`, run in the order given.

    Returns:
        [(check, result), ...].

    Raises:
        ArgumentError: an unknown name; the message lists the valid ones.
    """
    selected = list(CHECKS) if names is None else list(names)
    unknown = [name for name in selected if name not in CHECKS]
    if unknown:
        raise ArgumentError(
            f"unknown check{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid names: {', '.join(CHECKS)}"
        )
    return [(CHECKS[name], CHECKS[name].run()) for name in selected]
