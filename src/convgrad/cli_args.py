"""Argument types shared by the command line's subcommands (``argparse`` ``type=`` callables)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type for integers >= ``minimum``: "expected an integer >= 1, received '0'"."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, received {text!r}"
            )
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_integer = integer_at_least(1)
non_negative_integer = integer_at_least(0)
