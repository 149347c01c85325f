"""PyTorch as the oracle: run one expression in convgrad and in torch, compare everything.

In the spirit of tinygrad's ``helper_test_op``: build the same inputs in both libraries, apply
``torch_fn`` and ``convgrad_fn``, then compare every output's shape, dtype and values, push one
random upstream gradient through both graphs and compare the gradient of every input. float64
is compared at 1e-10 (both libraries compute the same sums, only rounding differs); float32 at
loose tolerances (BLAS and reduction order differ).

torch is a test-only dependency; this module is the only test helper that imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

import convgrad as cg

torch.set_num_threads(1)  # the test machine is shared: one thread, and no thread-count noise

TOLERANCES: dict[Any, dict[str, float]] = {
    np.float64: {"atol": 1e-10, "rtol": 1e-10, "grad_atol": 1e-10, "grad_rtol": 1e-10},
    np.float32: {"atol": 1e-5, "rtol": 1e-4, "grad_atol": 1e-4, "grad_rtol": 1e-3},
}


def tolerances(dtype: Any) -> dict[str, float]:
    """The default forward and gradient tolerances for dtype (float64 tight, float32 loose)."""
    return TOLERANCES[np.dtype(dtype).type]


def to_numpy(t: Any) -> np.ndarray:
    """A torch tensor or a convgrad tensor as a NumPy array (detached)."""
    if isinstance(t, torch.Tensor):
        return t.detach().numpy()
    if isinstance(t, cg.Tensor):
        return t.detach().data
    return np.asarray(t)


def as_outputs(result: Any) -> list[Any]:
    """A single tensor or a tuple of tensors (e.g. max's (values, indices)) as a list."""
    if isinstance(result, tuple | list):
        return list(result)
    return [result]


def make_inputs(
    shapes_or_arrays: Sequence[Any], dtype: Any, rng: np.random.Generator,
    value_range: tuple[float, float] | None = None,
) -> list[np.ndarray]:
    """Arrays for each entry: a shape becomes random data of dtype, an array is taken as given.

    Random data is standard normal, or uniform in value_range when given. Float arrays are cast
    to dtype; integer arrays (class indices, index tensors) are kept as they are.
    """
    arrays = []
    for entry in shapes_or_arrays:
        if isinstance(entry, np.ndarray):
            array = entry.astype(dtype) if entry.dtype.kind == "f" else entry.copy()
        elif value_range is None:
            array = rng.standard_normal(tuple(entry)).astype(dtype)
        else:
            array = rng.uniform(*value_range, size=tuple(entry)).astype(dtype)
        arrays.append(array)
    return arrays


def helper_test_op(
    shapes_or_arrays: Sequence[Any],
    torch_fn: Callable[..., Any],
    convgrad_fn: Callable[..., Any],
    atol: float | None = None,
    rtol: float | None = None,
    grad_atol: float | None = None,
    grad_rtol: float | None = None,
    dtype: Any = np.float64,
    *,
    seed: int = 0,
    value_range: tuple[float, float] | None = None,
    requires_grad: Sequence[bool] | None = None,
    integer_grad: bool = False,
    exact: bool = False,
) -> tuple[list[Any], list[Any]]:
    """Check that convgrad_fn(*inputs) equals torch_fn(*inputs), forward and backward.

    Args:
        shapes_or_arrays: one entry per input: a shape (random data of dtype) or an ndarray.
        torch_fn: callable on torch tensors, returning a tensor or a tuple of tensors.
        convgrad_fn: the same expression on convgrad tensors.
        atol, rtol: forward tolerances; default by dtype (see :data:`TOLERANCES`).
        grad_atol, grad_rtol: gradient tolerances; default by dtype.
        dtype: np.float64 (tight) or np.float32 (loose).
        seed: seeds the inputs and the upstream gradient.
        value_range: (low, high) for uniform random inputs instead of standard normal.
        requires_grad: per input, whether it requires a gradient; default: every float input.
        integer_grad: draw the upstream gradient from the integers -3..3, so that sums of it
            are exact and ``exact`` comparisons are meaningful.
        exact: require bitwise-equal forward values and gradients (ties, integer data).

    Compares, for every output: shape, dtype, requires_grad and values; then back-propagates one
    random upstream gradient per differentiable output through both graphs and compares, for
    every input: whether a gradient arrived, its shape, dtype and values.

    Returns:
        (convgrad inputs, torch inputs) after backward, for extra checks by the caller.
    """
    tol = tolerances(dtype)
    atol = tol["atol"] if atol is None else atol
    rtol = tol["rtol"] if rtol is None else rtol
    grad_atol = tol["grad_atol"] if grad_atol is None else grad_atol
    grad_rtol = tol["grad_rtol"] if grad_rtol is None else grad_rtol
    rng = np.random.default_rng(seed)
    arrays = make_inputs(shapes_or_arrays, dtype, rng, value_range)
    if requires_grad is None:
        requires_grad = [a.dtype.kind == "f" for a in arrays]
    torch_inputs = [
        torch.tensor(a, requires_grad=bool(g)) for a, g in zip(arrays, requires_grad, strict=True)
    ]
    cg_inputs = [
        cg.tensor(a.copy(), requires_grad=bool(g))
        for a, g in zip(arrays, requires_grad, strict=True)
    ]

    torch_outs = as_outputs(torch_fn(*torch_inputs))
    cg_outs = as_outputs(convgrad_fn(*cg_inputs))
    assert len(cg_outs) == len(torch_outs), (
        f"convgrad returned {len(cg_outs)} outputs, torch {len(torch_outs)}"
    )
    for index, (mine, theirs) in enumerate(zip(cg_outs, torch_outs, strict=True)):
        assert isinstance(mine, cg.Tensor), f"output {index} is a {type(mine)}, not a cg.Tensor"
        expected = to_numpy(theirs)
        got = to_numpy(mine)
        assert got.shape == expected.shape, f"output {index}: shape {got.shape} != {expected.shape}"
        assert got.dtype == expected.dtype, f"output {index}: dtype {got.dtype} != {expected.dtype}"
        assert mine.requires_grad == theirs.requires_grad, f"output {index}: requires_grad differs"
        assert_close(got, expected, atol, rtol, exact, f"forward output {index}")

    differentiable = [
        i for i, t in enumerate(torch_outs) if t.requires_grad and t.dtype.is_floating_point
    ]
    if not differentiable:
        return cg_inputs, torch_inputs
    upstream = []
    for i in differentiable:
        shape = tuple(torch_outs[i].shape)
        if integer_grad:
            upstream.append(rng.integers(-3, 4, size=shape).astype(dtype))
        else:
            upstream.append(rng.standard_normal(shape).astype(dtype))
    torch.autograd.backward(
        [torch_outs[i] for i in differentiable], [torch.tensor(g) for g in upstream]
    )
    if len(differentiable) == 1:
        cg_outs[differentiable[0]].backward(upstream[0])
    else:
        total = sum((cg_outs[i] * cg.tensor(g)).sum() for i, g in zip(differentiable, upstream,
                                                                         strict=True))
        total.backward()

    for index, (mine, theirs) in enumerate(zip(cg_inputs, torch_inputs, strict=True)):
        if not theirs.requires_grad:
            continue
        if theirs.grad is None:
            assert mine.grad is None, f"input {index}: convgrad has a gradient, torch has none"
            continue
        assert mine.grad is not None, f"input {index}: torch has a gradient, convgrad has none"
        expected = theirs.grad.numpy()
        got = to_numpy(mine.grad)
        assert got.shape == expected.shape, f"grad {index}: shape {got.shape} != {expected.shape}"
        assert got.dtype == expected.dtype, f"grad {index}: dtype {got.dtype} != {expected.dtype}"
        assert_close(got, expected, grad_atol, grad_rtol, exact, f"gradient of input {index}")
    return cg_inputs, torch_inputs


def assert_close(
    got: np.ndarray, expected: np.ndarray, atol: float, rtol: float, exact: bool, what: str
) -> None:
    """assert_allclose (NaN equal to NaN), or bitwise equality when exact."""
    if exact:
        np.testing.assert_array_equal(got, expected, err_msg=f"{what} differs from torch")
    else:
        np.testing.assert_allclose(
            got, expected, atol=atol, rtol=rtol, equal_nan=True,
            err_msg=f"{what} differs from torch",
        )


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding along one axis, written out independently of convgrad.

    out = ceil(size / s); total = max((out - 1) s + d (K - 1) + 1 - size, 0);
    before = total // 2, after = total - before.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def torch_pad_same(
    x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> torch.Tensor:
    """Apply TensorFlow's asymmetric 'SAME' padding to the spatial dims of x (N, C, *spatial).

    torch refuses padding='same' with stride > 1; this pads explicitly so that a padding=0 torch
    convolution computes TensorFlow's (and convgrad's) definition.
    """
    spatial = x.shape[-len(kernel):]
    pads: list[int] = []
    # torch.nn.functional.pad takes (last_before, last_after, second_last_before, ...)
    for size, k, s, d in reversed(list(zip(spatial, kernel, stride, dilation, strict=True))):
        pads.extend(tf_same_padding(int(size), k, s, d))
    return torch.nn.functional.pad(x, pads)
