"""convgrad.nn.utils against torch.nn.utils: clip_grad_norm_ (returned norm and clipped
gradients, every norm type, non-finite gradients), clip_grad_value_, and the parameter vector."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import convgrad as cg
from convgrad.errors import ArgumentTypeError, GradError, ShapeError

SHAPES = [(4, 3), (7,), (2, 3, 5), (1,)]


def _tolerance(dtype: Any) -> dict[str, float]:
    return {"rtol": 1e-12, "atol": 1e-14} if dtype == np.float64 else {"rtol": 1e-6, "atol": 1e-7}


def _twins(dtype: Any, seed: int = 0, scale: float = 1.0, without_grad: int | None = 3,
           special: float | None = None) -> tuple[list[cg.Tensor], list[torch.Tensor]]:
    """The same parameters and gradients in both libraries; one parameter has no gradient."""
    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for index, shape in enumerate(SHAPES):
        w = rng.standard_normal(shape).astype(dtype)
        g = (scale * rng.standard_normal(shape)).astype(dtype)
        if special is not None and index == 1:
            g[2] = special
        p, q = cg.nn.Parameter(w.copy()), torch.tensor(w.copy(), requires_grad=True)
        if index != without_grad:
            p.grad, q.grad = cg.tensor(g.copy()), torch.tensor(g.copy())
        ours.append(p)
        theirs.append(q)
    return ours, theirs


def _assert_same_grads(ours: list, theirs: list, dtype: Any) -> None:
    for index, (p, q) in enumerate(zip(ours, theirs, strict=True)):
        if q.grad is None:
            assert p.grad is None
            continue
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(p.grad.data, q.grad.numpy(), **_tolerance(dtype),
                                   err_msg=f"parameter {index}")


NORMS = [2.0, 1.0, math.inf, 0.5, 3.0, -math.inf, 0.0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("norm_type", NORMS, ids=str)
@pytest.mark.parametrize("max_norm", [0.3, 1e6], ids=["clipping", "no-clipping"])
def test_clip_grad_norm_returns_torchs_norm_and_clips_like_torch(norm_type, max_norm,
                                                                 dtype) -> None:
    ours, theirs = _twins(dtype, scale=3.0)
    total = cg.nn.utils.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(total, cg.Tensor) and total.shape == () and total.dtype == dtype
    np.testing.assert_allclose(total.item(), expected.item(), **_tolerance(dtype))
    _assert_same_grads(ours, theirs, dtype)


def test_clip_grad_norm_clips_to_the_max_norm_and_accepts_one_tensor_or_a_generator() -> None:
    ours, _ = _twins(np.float64, scale=10.0, without_grad=None)
    cg.nn.utils.clip_grad_norm_(iter(ours), 2.0)
    joint = np.sqrt(sum(float((p.grad.data ** 2).sum()) for p in ours))
    assert joint == pytest.approx(2.0, rel=1e-6)  # max_norm / (norm + 1e-6) * norm
    single = cg.nn.Parameter(np.array([3.0, 4.0]))
    single.grad = cg.tensor(np.array([3.0, 4.0]))
    assert cg.nn.utils.clip_grad_norm_(single, 1.0).item() == 5.0
    np.testing.assert_allclose(single.grad.data, np.array([3.0, 4.0]) / (5.0 + 1e-6))


@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf], ids=str)
@pytest.mark.parametrize("norm_type", [2.0, math.inf], ids=str)
def test_non_finite_gradients(special, norm_type) -> None:
    ours, theirs = _twins(np.float64, special=special)
    message = f"The total norm of order {norm_type} for gradients from `parameters` is non-finite"
    with pytest.raises(RuntimeError, match=message):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type, error_if_nonfinite=True)
    with pytest.raises(GradError, match="clip_grad_norm_: " + message):
        cg.nn.utils.clip_grad_norm_(ours, 1.0, norm_type, error_if_nonfinite=True)
    with np.errstate(invalid="ignore"):
        total = cg.nn.utils.clip_grad_norm_(ours, 1.0, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type)
    np.testing.assert_equal(total.item(), expected.item())  # nan or inf, like torch
    for p, q in zip(ours, theirs, strict=True):  # scaled by the non-finite factor, as torch
        if q.grad is not None:
            np.testing.assert_equal(p.grad.data, q.grad.numpy())


def test_no_gradients_give_a_zero_norm_and_an_empty_generator_warns() -> None:
    p = cg.nn.Parameter(np.ones(3))
    assert cg.nn.utils.clip_grad_norm_([p], 1.0).item() == 0.0
    assert torch.nn.utils.clip_grad_norm_([torch.ones(3, requires_grad=True)], 1.0).item() == 0.0
    with pytest.warns(UserWarning, match="empty generator, no gradient clipping will occur"):
        cg.nn.utils.clip_grad_norm_((q for q in []), 1.0)
    with pytest.raises(ArgumentTypeError, match="clip_grad_norm_: expected Tensors, received "
                                                "ndarray"):
        cg.nn.utils.clip_grad_norm_([np.ones(3)], 1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_clip_grad_value_clamps_like_torch(dtype) -> None:
    ours, theirs = _twins(dtype, scale=2.0)
    assert cg.nn.utils.clip_grad_value_(ours, 0.7) is None
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    _assert_same_grads(ours, theirs, dtype)
    assert max(np.abs(p.grad.data).max() for p in ours if p.grad is not None) == dtype(0.7)


def test_parameters_to_vector_and_back_like_torch() -> None:
    ours, theirs = _twins(np.float64)
    vector = cg.nn.utils.parameters_to_vector(ours)
    expected = torch.nn.utils.parameters_to_vector(theirs)
    np.testing.assert_array_equal(vector.data, expected.detach().numpy())
    weights = np.random.default_rng(5).standard_normal(vector.shape[0])
    (vector * cg.tensor(weights)).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    _assert_same_grads(ours, theirs, np.float64)  # the gradient flows back to every parameter

    new = np.arange(vector.shape[0] + 3, dtype=np.float64)  # extra entries are ignored
    new_vector = cg.tensor(new)
    cg.nn.utils.vector_to_parameters(new_vector, ours)
    torch.nn.utils.vector_to_parameters(torch.tensor(new), theirs)
    for p, q in zip(ours, theirs, strict=True):
        assert p.shape == tuple(q.shape)
        np.testing.assert_array_equal(p.data, q.detach().numpy())
    new_vector.data[0] = 99.0  # like torch, the parameters are views of the vector
    assert ours[0].data[0, 0] == 99.0
    with pytest.raises(ArgumentTypeError, match="expected convgrad.Tensor, but got: ndarray"):
        cg.nn.utils.vector_to_parameters(new, ours)
    with pytest.raises(ShapeError, match=r"the parameters need 50 entries, vec has 10"):
        cg.nn.utils.vector_to_parameters(cg.tensor(np.zeros(10)), ours)
    with pytest.raises(ShapeError, match=r"expected a 1-D vec, received shape \(2, 25\)"):
        cg.nn.utils.vector_to_parameters(cg.tensor(np.zeros((2, 25))), ours)
