"""Validation of the arguments users pass to layers and functional ops, like torch's ``_ntuple``
and the checks at the top of its convolution functions.

The kernels (:mod:`convgrad.kernels`) take sizes that are already known to be valid; everything
that can be wrong in a call is refused here, with a message that names the layer or op (its
``owner``), what was expected and what was received.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convgrad.errors import ArgumentError
from convgrad.kernels.conv_arith import Pads, output_sizes, same_padding


def positive_int(value: Any, name: str, owner: str) -> int:
    """A strictly positive int (channels, features, groups), as a Python int.

    Raises:
        ArgumentError: a bool, a non-integer, zero or a negative value.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ArgumentError(
            f"{owner}: expected a strictly positive {name}, received {name}={value!r}"
        )
    return int(value)


def normalize_tuple(value: Any, n: int, name: str, owner: str = "conv") -> tuple[int, ...]:
    """Turn an int or a length-n sequence of ints into an n-tuple, like torch's ``_ntuple``.

    Raises:
        ArgumentError: a wrong length or a non-integer entry.
    """
    if isinstance(value, bool):
        raise ArgumentError(
            f"{owner}: {name} must be an int or a tuple of {n} ints, received {value!r}"
        )
    if isinstance(value, int | np.integer):
        return (int(value),) * n
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 1 and n > 1:
            value = tuple(value) * n
        if len(value) != n or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value
        ):
            raise ArgumentError(
                f"{owner}: {name} must be an int or a tuple of {n} ints, received {value!r}"
            )
        return tuple(int(v) for v in value)
    raise ArgumentError(
        f"{owner}: {name} must be an int or a tuple of {n} ints, received {value!r}"
    )


def _as_received(values: tuple[int, ...], received: Any) -> Any:
    """What the message quotes: the argument as the user passed it, if known."""
    if received is not None:
        return received
    return values if len(values) > 1 else values[0]


def require_positive(
    values: tuple[int, ...], name: str, owner: str, received: Any = None
) -> None:
    """Refuse zero or negative strides, dilations and kernel sizes.

    Args:
        values: the normalised tuple. received: the argument as passed, quoted in the message.
    """
    if any(v <= 0 for v in values):
        raise ArgumentError(
            f"{owner}: expected a strictly positive {name}, received "
            f"{name}={_as_received(values, received)}"
        )


def require_non_negative(
    values: tuple[int, ...], name: str, owner: str, received: Any = None
) -> None:
    """Refuse negative paddings and output paddings (arguments as in require_positive)."""
    if any(v < 0 for v in values):
        raise ArgumentError(
            f"{owner}: expected a non-negative {name}, received "
            f"{name}={_as_received(values, received)}"
        )


def resolve_padding(
    padding: Any,
    in_sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    owner: str = "conv",
) -> Pads:
    """A convolution's padding as ((before, after), ...) per spatial axis.

    Args:
        padding: int, tuple of ints (symmetric per axis), 'valid' (no padding) or 'same'
            (TensorFlow's definition, for any kernel parity, stride and dilation).
        in_sizes: spatial input sizes, e.g. (H, W).
        kernel, stride, dilation: per-axis tuples, already validated.
        owner: the layer or op name used in error messages.
    """
    n = len(in_sizes)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * n
        if mode == "same":
            return tuple(
                same_padding(in_sizes[i], kernel[i], stride[i], dilation[i]) for i in range(n)
            )
        raise ArgumentError(
            f"{owner}: padding must be an int, a tuple of {n} ints, 'valid' or 'same', "
            f"received {padding!r}"
        )
    pads = normalize_tuple(padding, n, "padding", owner)
    if any(p < 0 for p in pads):
        raise ArgumentError(f"{owner}: expected a non-negative padding, received padding={padding}")
    return tuple((p, p) for p in pads)


def checked_output_sizes(
    in_sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pads: Pads,
    dilation: tuple[int, ...],
    owner: str = "conv",
) -> tuple[int, ...]:
    """A convolution's or pooling's output sizes; refuses a kernel larger than the padded input."""
    for i, size in enumerate(in_sizes):
        padded = size + pads[i][0] + pads[i][1]
        span = dilation[i] * (kernel[i] - 1) + 1
        if span > padded:
            raise ArgumentError(
                f"{owner}: kernel size {kernel} (dilated extent {span}) is larger than the padded "
                f"input size {padded} along spatial axis {i} (input {tuple(in_sizes)}, padding "
                f"{pads[i]})"
            )
    return output_sizes(in_sizes, kernel, stride, pads, dilation)
