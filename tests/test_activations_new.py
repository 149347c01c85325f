"""LeakyReLU, ELU, GELU, Softmax/LogSoftmax modules and label smoothing, against torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convgrad as cg
import convgrad.nn.functional as F
from convgrad.errors import ArgumentError
from convgrad.kernels.activation import erf
from gradcheck import check_gradients
from torch_oracle import helper_test_op

TF = torch.nn.functional

ACTIVATIONS = [
    ("leaky_relu", lambda t: F.leaky_relu(t), lambda t: TF.leaky_relu(t)),
    ("leaky_relu_0.2", lambda t: F.leaky_relu(t, 0.2), lambda t: TF.leaky_relu(t, 0.2)),
    ("leaky_relu_-0.5", lambda t: F.leaky_relu(t, -0.5), lambda t: TF.leaky_relu(t, -0.5)),
    ("elu", lambda t: F.elu(t), lambda t: TF.elu(t)),
    ("elu_0.3", lambda t: F.elu(t, 0.3), lambda t: TF.elu(t, 0.3)),
    ("elu_2", lambda t: F.elu(t, 2.0), lambda t: TF.elu(t, 2.0)),
    ("gelu", lambda t: F.gelu(t), lambda t: TF.gelu(t)),
    ("gelu_tanh", lambda t: F.gelu(t, "tanh"), lambda t: TF.gelu(t, approximate="tanh")),
]
IDS = [name for name, _, _ in ACTIVATIONS]
SHAPES = [(7,), (3, 4), (2, 3, 4, 5)]


@pytest.mark.parametrize(("name", "ours", "theirs"), ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_central_differences(name, ours, theirs, shape):
    x = np.random.default_rng(len(shape)).standard_normal(shape) * 3
    x[np.abs(x) < 1e-3] = 0.5  # central differences straddling the kink at 0 would not agree
    check_gradients(ours, x)


@pytest.mark.parametrize(("name", "ours", "theirs"), ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_and_gradient_match_torch(name, ours, theirs, dtype):
    # a wide range, both tails of GELU's erf, and exact zeros (the subgradient at the kink)
    x = np.concatenate([np.linspace(-12, 12, 241), [0.0, -0.0, 1e-8, -1e-8, 40.0, -40.0]])
    helper_test_op([x.astype(dtype)], theirs, ours, dtype=dtype)


@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=20))
@settings(max_examples=50, deadline=None)
def test_erf_is_correct_to_double_precision(values):
    x = np.array(values)
    np.testing.assert_allclose(erf(x), [math.erf(v) for v in values], rtol=2e-15, atol=2e-16)


def test_erf_special_values_and_dtype():
    out = erf(np.array([np.inf, -np.inf, np.nan, 0.0, 1e-300]))
    assert out[0] == 1 and out[1] == -1 and np.isnan(out[2]) and out[3] == 0
    assert out[4] == pytest.approx(2 / math.sqrt(math.pi) * 1e-300, rel=1e-15)
    assert erf(np.ones(2, np.float32)).dtype == np.float32


def test_modules_match_the_functions_and_print_like_torch():
    x = cg.tensor(np.linspace(-3, 3, 13))
    for module, function in [
        (cg.nn.LeakyReLU(0.1), lambda t: F.leaky_relu(t, 0.1)),
        (cg.nn.ELU(0.5), lambda t: F.elu(t, 0.5)),
        (cg.nn.GELU("tanh"), lambda t: F.gelu(t, "tanh")),
    ]:
        np.testing.assert_array_equal(module(x).data, function(x).data)
    assert repr(cg.nn.LeakyReLU()) == repr(torch.nn.LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(cg.nn.ELU(0.5)) == "ELU(alpha=0.5)" == repr(torch.nn.ELU(0.5))
    assert repr(cg.nn.GELU()) == "GELU(approximate='none')" == repr(torch.nn.GELU())
    with pytest.raises(
        ArgumentError, match="approximate must be 'none' or 'tanh', received approximate='fast'"
    ):
        cg.nn.GELU("fast")
    with pytest.raises(ArgumentError, match="gelu: approximate"):
        F.gelu(x, "erf")


@pytest.mark.parametrize(
    ("dim", "shape"),
    [
        (d, s)
        for s in [(4,), (3, 5), (2, 3, 4), (2, 3, 2, 2)]
        for d in (0, 1, -1, None)
        if d is None or d < len(s)
    ],
)
def test_softmax_modules_match_torch(dim, shape):
    for ours, theirs in [
        (cg.nn.Softmax, torch.nn.Softmax),
        (cg.nn.LogSoftmax, torch.nn.LogSoftmax),
    ]:
        with pytest.warns(UserWarning) if dim is None else _nothing():
            torch_module = theirs(dim)
            helper_test_op([shape], torch_module, ours(dim))


class _nothing:  # noqa: N801
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_label_smoothing_matches_torch(reduction, smoothing, ignore, dtype):
    target = np.random.default_rng(0).integers(0, 5, 9)
    if ignore:
        target[[1, 4]] = -100
    helper_test_op(
        [(9, 5)],
        lambda t: TF.cross_entropy(
            t, torch.tensor(target), reduction=reduction, label_smoothing=smoothing
        ),
        lambda t: F.cross_entropy(t, target, reduction=reduction, label_smoothing=smoothing),
        dtype=dtype,
    )
    module = cg.nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)
    logits = np.random.default_rng(1).standard_normal((9, 5)).astype(dtype)
    expected = torch.nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing)(
        torch.tensor(logits), torch.tensor(target)
    )
    np.testing.assert_allclose(
        module(cg.tensor(logits), target).data,
        expected.numpy(),
        rtol=1e-5 if dtype == np.float32 else 1e-12,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_label_smoothing_gradient_matches_central_differences(reduction):
    target = np.array([0, 3, 2, -100, 1])
    x = np.random.default_rng(2).standard_normal((5, 4))
    check_gradients(
        lambda t: F.cross_entropy(t, target, reduction=reduction, label_smoothing=0.2), x
    )


def test_label_smoothing_errors_and_repr():
    x = cg.tensor(np.zeros((2, 3)))
    with pytest.raises(
        ArgumentError,
        match=r"cross_entropy: label_smoothing must be between 0.0 "
        r"and 1.0, received label_smoothing=1.5",
    ):
        F.cross_entropy(x, np.array([0, 1]), label_smoothing=1.5)
    with pytest.raises(ArgumentError, match="CrossEntropyLoss: label_smoothing"):
        cg.nn.CrossEntropyLoss(label_smoothing=-0.1)
    with pytest.raises(ArgumentError, match="CrossEntropyLoss: reduction"):
        cg.nn.CrossEntropyLoss(reduction="avg")
    assert "label_smoothing=0.1" in repr(cg.nn.CrossEntropyLoss(label_smoothing=0.1))
