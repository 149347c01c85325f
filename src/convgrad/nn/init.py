"""Parameter initialisation, ``convgrad.nn.init``: PyTorch's functions and the TensorFlow
tutorial's truncated normal. Every function fills the tensor in place from the global generator
(:func:`convgrad.manual_seed`) and returns it.
"""

from __future__ import annotations

import math

import numpy as np

from convgrad.autograd import Tensor
from convgrad.errors import ArgumentError
from convgrad.random import default_generator


def _fill(tensor: Tensor, values: np.ndarray) -> Tensor:
    tensor.data[...] = values.astype(tensor.dtype, copy=False)
    return tensor


def calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """fan_in = C_in * prod(kernel), fan_out = C_out * prod(kernel) for (C_out, C_in, *kernel)."""
    if tensor.ndim < 2:
        raise ArgumentError(
            f"fan in and fan out can not be computed for a tensor with fewer than 2 dimensions "
            f"(shape {tensor.shape})"
        )
    receptive = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as torch.nn.init.calculate_gain."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    raise ArgumentError(f"unsupported nonlinearity {nonlinearity!r}")


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    return _fill(tensor, default_generator().uniform(a, b, tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    return _fill(tensor, default_generator().normal(mean, std, tensor.shape))


def constant_(tensor: Tensor, val: float) -> Tensor:
    tensor.data[...] = val
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def trunc_normal_(
    tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0
) -> Tensor:
    """Normal(mean, std) restricted to [a, b] (absolute bounds, as torch), by resampling."""
    if not a < b:
        raise ArgumentError(f"trunc_normal_: expected a < b, received a={a}, b={b}")
    generator = default_generator()
    values = generator.normal(mean, std, tensor.shape)
    bad = (values < a) | (values > b)
    while bad.any():
        values[bad] = generator.normal(mean, std, int(bad.sum()))
        bad = (values < a) | (values > b)
    return _fill(tensor, values)


def tf_truncated_normal_(tensor: Tensor, stddev: float = 0.1) -> Tensor:
    """TensorFlow's tf.truncated_normal(stddev): resample beyond two standard deviations.

    The Deep MNIST tutorial initialises every weight with stddev 0.1.
    """
    return trunc_normal_(tensor, 0.0, stddev, -2 * stddev, 2 * stddev)


def kaiming_uniform_(
    tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Tensor:
    """U(-bound, bound), bound = gain * sqrt(3 / fan). PyTorch's Conv/Linear default uses
    a = sqrt(5), giving bound = 1/sqrt(fan_in)."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(
    tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> Tensor:
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def default_init_(weight: Tensor, bias: Tensor | None) -> None:
    """PyTorch's reset_parameters for Conv and Linear: kaiming_uniform_(a=sqrt(5)) on the weight,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) on the bias."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound)


def tf_tutorial_init_(module, stddev: float = 0.1, bias: float = 0.1) -> None:
    """The Deep MNIST tutorial's initialisation on every Conv/Linear of a module: weights
    truncated normal (stddev 0.1), biases constant 0.1."""
    for sub in module.modules():
        weight = sub._parameters.get("weight")
        if weight is not None and weight.ndim >= 2:
            tf_truncated_normal_(weight, stddev)
            if sub._parameters.get("bias") is not None:
                constant_(sub._parameters["bias"], bias)
