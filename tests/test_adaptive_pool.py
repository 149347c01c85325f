"""Adaptive average and max pooling: windows, central differences, PyTorch as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convgrad as cg
import convgrad.nn.functional as F
from convgrad.errors import ArgumentError, ShapeError
from convgrad.kernels.pool import adaptive_windows
from gradcheck import check_gradients
from torch_oracle import helper_test_op

# (input shape, output_size): sizes that divide, that do not, larger outputs, None entries
CASES = [
    ((2, 3, 6, 6), 3),
    ((2, 2, 7, 5), (3, 2)),
    ((1, 2, 5, 7), (4, 3)),
    ((2, 1, 5, 4), (7, 9)),
    ((1, 3, 6, 5), (None, 2)),
    ((2, 2, 5, 6), (3, None)),
    ((3, 2, 4, 5), 1),
    ((2, 3, 5, 7), (1, 1)),
    ((3, 5, 4), (2, 3)),
]


@given(size=st.integers(1, 40), out=st.integers(1, 40))
@settings(max_examples=60, deadline=None)
def test_windows_are_torchs_cover_the_axis_and_are_never_empty(size, out):
    start, end = adaptive_windows(size, out)
    i = np.arange(out)
    np.testing.assert_array_equal(start, np.floor(i * size / out).astype(int))
    np.testing.assert_array_equal(end, np.ceil((i + 1) * size / out).astype(int))
    assert (end > start).all() and start[0] == 0 and end[-1] == size
    assert (start[1:] <= end[:-1]).all()  # consecutive windows touch or overlap


@pytest.mark.parametrize(("shape", "size"), CASES)
@pytest.mark.parametrize("pool", [F.adaptive_avg_pool2d, F.adaptive_max_pool2d])
def test_gradients_match_central_differences(shape, size, pool):
    x = np.random.default_rng(sum(shape)).standard_normal(shape)
    check_gradients(lambda t: pool(t, size), x)


@pytest.mark.parametrize(("shape", "size"), CASES)
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (F.adaptive_avg_pool2d, torch.nn.functional.adaptive_avg_pool2d),
        (F.adaptive_max_pool2d, torch.nn.functional.adaptive_max_pool2d),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_and_gradient_match_torch(shape, size, ours, theirs, dtype):
    helper_test_op([shape], lambda t: theirs(t, size), lambda t: ours(t, size), dtype=dtype)


def test_max_ties_go_to_the_first_maximum_like_torch():
    x = np.random.default_rng(0).integers(0, 3, (2, 3, 7, 6)).astype(np.float64)
    helper_test_op(
        [x],
        lambda t: torch.nn.functional.adaptive_max_pool2d(t, (4, 4)),
        lambda t: F.adaptive_max_pool2d(t, (4, 4)),
        integer_grad=True,
        exact=True,
    )


@pytest.mark.parametrize("size", [1, (3, 3)])
def test_channels_last_memory_input_float32(size):
    """The conv's NCHW views of NHWC memory, as the modules see them in a network."""
    stored = np.random.default_rng(1).standard_normal((4, 7, 7, 8)).astype(np.float32)
    x = cg.tensor(stored, requires_grad=True)
    xt = torch.tensor(stored, requires_grad=True)
    for ours, theirs in [
        (cg.nn.AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size)),
        (cg.nn.AdaptiveMaxPool2d(size), torch.nn.AdaptiveMaxPool2d(size)),
    ]:
        out, out_t = ours(x.permute(0, 3, 1, 2)), theirs(xt.permute(0, 3, 1, 2))
        np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-5, atol=1e-6)
        out.sum().backward()
        out_t.sum().backward()
        np.testing.assert_allclose(x.grad.data, xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_global_average_pooling_is_the_plane_mean():
    x = np.random.default_rng(2).standard_normal((3, 4, 5, 6))
    out = cg.nn.AdaptiveAvgPool2d(1)(cg.tensor(x))
    assert out.shape == (3, 4, 1, 1)
    np.testing.assert_allclose(out.data[:, :, 0, 0], x.mean(axis=(2, 3)), rtol=1e-12)


def test_modules_repr_and_errors():
    assert repr(cg.nn.AdaptiveAvgPool2d((None, 3))) == "AdaptiveAvgPool2d(output_size=(None, 3))"
    with pytest.raises(
        ShapeError,
        match=r"AdaptiveAvgPool2d\(output_size=2\): expected a 4-D input \(N, C, H, W\) \(or "
        r"3-D unbatched\), received shape \(2, 5\)",
    ):
        cg.nn.AdaptiveAvgPool2d(2)(cg.tensor(np.zeros((2, 5), np.float32)))
    with pytest.raises(
        ArgumentError,
        match=r"AdaptiveMaxPool2d: expected output_size .*"
        r"received output_size=\(1, 2, 3\)",
    ):
        cg.nn.AdaptiveMaxPool2d((1, 2, 3))
    with pytest.raises(ArgumentError, match="received output_size=-1"):
        cg.nn.AdaptiveMaxPool2d(-1)
    with pytest.raises(
        ArgumentError,
        match=r"adaptive_avg_pool2d: expected non-negative output "
        r"sizes or None, received output_size=\(2, 1.5\)",
    ):
        F.adaptive_avg_pool2d(cg.tensor(np.zeros((1, 1, 4, 4))), (2, 1.5))
    with pytest.raises(ShapeError, match="non-empty height and width"):
        F.adaptive_max_pool2d(cg.tensor(np.zeros((1, 1, 0, 4))), 2)


def test_summary_counts_no_mult_adds_for_adaptive_pools():
    model = cg.nn.Sequential(cg.nn.Conv2d(1, 2, 3), cg.nn.AdaptiveAvgPool2d(1), cg.nn.Flatten())
    rows = cg.summary(model, (1, 1, 6, 6)).rows
    assert rows[1].output_shape == (1, 2, 1, 1) and rows[1].mult_adds == 0


@pytest.mark.parametrize(("shape", "size"), [((2, 3, 7, 5), (3, 2)), ((3, 5, 4), 3)])
def test_return_indices_match_torch(shape, size):
    x = np.random.default_rng(4).standard_normal(shape)
    out, indices = cg.nn.AdaptiveMaxPool2d(size, return_indices=True)(cg.tensor(x))
    out_t, indices_t = torch.nn.AdaptiveMaxPool2d(size, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(out.data, out_t.numpy())
    np.testing.assert_array_equal(indices.data, indices_t.numpy())
    assert indices.dtype == np.int64
