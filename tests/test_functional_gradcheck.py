"""Every op's backward against central differences in float64 (no PyTorch needed)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import convgrad as cg
import convgrad.nn.functional as F
from gradcheck import check_gradients

rng = np.random.default_rng(1234)


def randn(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape)


# --------------------------------------------------------------------------- convolution
CONV2D_CASES = [
    # (N, C_in, C_out, H, W, kernel, stride, padding, dilation, groups)
    (2, 3, 4, 7, 6, 3, 1, 0, 1, 1),
    (1, 2, 3, 8, 7, (2, 3), (2, 1), 1, 1, 1),  # non-square kernel, sizes that don't divide
    (2, 2, 2, 9, 9, 3, 2, "same", 1, 1),  # TensorFlow 'same' with stride 2
    (1, 1, 2, 6, 6, 4, 1, "same", 1, 1),  # even kernel 'same': asymmetric padding
    (1, 2, 2, 8, 8, 2, 3, "same", 2, 1),  # even kernel, stride 3, dilation 2
    (1, 4, 6, 7, 7, 3, 1, (1, 2), 2, 2),  # dilation and groups
    (2, 6, 3, 5, 5, 1, 1, 0, 1, 3),  # 1x1 grouped
    (1, 3, 3, 6, 5, 3, 2, "valid", 1, 3),  # depthwise, stride 2
    (1, 1, 1, 4, 4, 4, 1, 0, 1, 1),  # kernel == input: a single output
    (1, 2, 5, 5, 6, 3, 1, 3, 1, 1),  # padding larger than the kernel reach
]


@pytest.mark.parametrize("n,cin,cout,h,w,k,s,p,d,g", CONV2D_CASES)
def test_conv2d_gradients_match_central_differences(n, cin, cout, h, w, k, s, p, d, g):
    kh, kw = (k, k) if isinstance(k, int) else k
    x, weight, bias = randn(n, cin, h, w), randn(cout, cin // g, kh, kw), randn(cout)
    check_gradients(lambda x, weight, bias: F.conv2d(x, weight, bias, s, p, d, g), x, weight, bias)


@pytest.mark.parametrize(
    "length,k,s,p,d,g",
    [(9, 3, 1, 0, 1, 1), (10, 4, 2, "same", 1, 1), (8, 2, 1, "same", 3, 2), (7, 3, 3, 2, 1, 2)],
)
def test_conv1d_gradients_match_central_differences(length, k, s, p, d, g):
    x, weight, bias = randn(2, 2 * g, length), randn(2 * g, 2, k), randn(2 * g)
    check_gradients(lambda x, weight, bias: F.conv1d(x, weight, bias, s, p, d, g), x, weight, bias)


def test_conv2d_without_bias_and_unbatched_input():
    check_gradients(lambda x, w: F.conv2d(x, w, None, 1, 1), randn(2, 5, 5), randn(3, 2, 3, 3))


# --------------------------------------------------------------------------- pooling
POOL_CASES = [
    # (kernel, stride, padding, H, W)
    (2, None, 0, 6, 6),
    (2, None, 0, 7, 5),  # floor drops the last row/column
    (3, 2, 1, 7, 8),
    ((2, 3), (1, 2), (1, 1), 6, 7),
    (3, 1, 0, 5, 5),  # overlapping windows
]


@pytest.mark.parametrize("kernel,stride,padding,h,w", POOL_CASES)
@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
def test_pool2d_gradients_match_central_differences(pool, kernel, stride, padding, h, w):
    # distinct values: max pooling is differentiable away from ties
    x = rng.permutation(2 * 3 * h * w).reshape(2, 3, h, w) / 7.0
    check_gradients(lambda x: pool(x, kernel, stride, padding), x)


@pytest.mark.parametrize("pool", [F.max_pool1d, F.avg_pool1d])
@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), (4, 1, 2)])
def test_pool1d_gradients_match_central_differences(pool, kernel, stride, padding):
    x = rng.permutation(2 * 3 * 9).reshape(2, 3, 9) / 5.0
    check_gradients(lambda x: pool(x, kernel, stride, padding), x)


# --------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize(
    "fn",
    [
        F.relu,
        F.sigmoid,
        F.tanh,
        lambda x: F.softmax(x, 1),
        lambda x: F.log_softmax(x, 0),
        lambda x: x.exp(),
        lambda x: (x * x + 1).log(),
        lambda x: (x * x + 1).sqrt(),
        lambda x: x.abs(),
        lambda x: -x,
        lambda x: x**3,
        lambda x: 2.0**x,
        lambda x: 1 / (x * x + 1),
    ],
    ids=[
        "relu",
        "sigmoid",
        "tanh",
        "softmax",
        "log_softmax",
        "exp",
        "log",
        "sqrt",
        "abs",
        "neg",
        "pow",
        "rpow",
        "rdiv",
    ],
)
def test_elementwise_gradients_match_central_differences(fn):
    x = randn(3, 4)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kinks of relu and abs
    check_gradients(fn, x)


@pytest.mark.parametrize(
    "fn,shapes",
    [
        (lambda a, b: a + b, [(3, 1), (1, 4)]),
        (lambda a, b: a - b, [(2, 3, 4), (4,)]),
        (lambda a, b: a * b, [(3, 4), (3, 1)]),
        (lambda a, b: a / (b * b + 1), [(2, 1, 3), (4, 1)]),
        (lambda a, b: a @ b, [(3, 4), (4, 2)]),
        (lambda a, b: a @ b, [(2, 3, 4), (4,)]),
        (lambda a, b: a @ b, [(4,), (2, 4, 3)]),
        (lambda a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)]),
        (lambda a, b: a**b, [(3,), (3,)]),
        (lambda a, b: cg.cat([a, b], dim=1), [(2, 3), (2, 2)]),
        (lambda a, b: cg.stack([a, b], dim=-1), [(2, 3), (2, 3)]),
    ],
)
def test_binary_gradients_match_central_differences(fn, shapes):
    inputs = [randn(*s) for s in shapes]
    if fn(*[cg.tensor(np.ones(s)) for s in shapes]).shape and shapes[0] == (3,):  # a ** b
        inputs[0] = np.abs(inputs[0]) + 0.5
    check_gradients(fn, *inputs)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.sum(),
        lambda x: x.sum(dim=1),
        lambda x: x.sum(dim=(0, 2), keepdim=True),
        lambda x: x.mean(),
        lambda x: x.mean(dim=-1),
        lambda x: x.max(),
        lambda x: x.max(1)[0],
        lambda x: x.max(dim=2, keepdim=True).values,
        lambda x: x.reshape(6, 4),
        lambda x: x.view(-1),
        lambda x: x.transpose(0, 2),
        lambda x: x.permute(2, 0, 1),
        lambda x: x.flatten(1),
        lambda x: x.unsqueeze(1).squeeze(1),
        lambda x: x[1, :, ::2],
        lambda x: x[np.array([0, 1, 1, 0])],
        lambda x: x.T,
        lambda x: x.clone() * 2,
    ],
)
def test_reduction_and_shape_gradients_match_central_differences(fn):
    check_gradients(fn, rng.permutation(24).reshape(2, 3, 4) / 3.0)


# --------------------------------------------------------------------------- layers and losses
def test_linear_gradients_match_central_differences():
    check_gradients(lambda x, w, b: F.linear(x, w, b), randn(2, 3, 5), randn(4, 5), randn(4))


def test_dropout_gradient_is_the_scaled_mask():
    check_gradients(lambda x: F.dropout(x, 0.4, training=True), randn(4, 6), reseed=7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_and_nll_gradients_match_central_differences(reduction):
    target = np.array([0, 3, 2, 3, 1])
    check_gradients(lambda x: F.cross_entropy(x, target, reduction=reduction), randn(5, 4))
    check_gradients(
        lambda x: F.nll_loss(F.log_softmax(x, 1), target, reduction=reduction), randn(5, 4)
    )


def test_cross_entropy_ignore_index_gets_no_gradient():
    target = np.array([0, -100, 2])
    check_gradients(lambda x: F.cross_entropy(x, target), randn(3, 4))
    x = cg.tensor(randn(3, 4), requires_grad=True)
    F.cross_entropy(x, target).backward()
    assert np.all(x.grad.data[1] == 0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_gradients_match_central_differences(reduction):
    check_gradients(lambda x, t: F.mse_loss(x, t, reduction), randn(3, 4), randn(3, 4))


def test_whole_cnn_gradients_match_central_differences():
    target = np.array([2, 0])

    def network(x, w1, b1, w2, b2, w3, b3):
        out = F.max_pool2d(F.tanh(F.conv2d(x, w1, b1, padding="same")), 2)
        out = F.sigmoid(F.conv2d(out, w2, b2, stride=2))
        return F.cross_entropy(F.linear(F.flatten(out, 1), w3, b3), target)

    x = rng.permutation(2 * 64).reshape(2, 1, 8, 8) / 50.0
    weights = [randn(2, 1, 3, 3), randn(2), randn(3, 2, 2, 2), randn(3), randn(3, 12), randn(3)]
    check_gradients(network, x, *weights)


def test_conv_backward_skips_input_gradient_when_not_needed():
    x = cg.tensor(randn(1, 1, 5, 5))  # the image: no gradient wanted
    w = cg.tensor(randn(2, 1, 3, 3), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None


@pytest.mark.parametrize("k,s,d", list(itertools.product([1, 2, 3], [1, 2], [1, 2])))
def test_same_padding_output_is_ceil_of_input_over_stride(k, s, d):
    for size in range(max(1, d * (k - 1)), 10):
        out = F.conv1d(cg.tensor(randn(1, 1, size)), cg.tensor(randn(1, 1, k)), None, s, "same", d)
        assert out.shape[-1] == -(-size // s)


def test_blocked_units_get_exactly_zero_gradient_even_from_infinite_upstream():
    x = cg.tensor([[[[-1.0, 2.0], [3.0, -4.0]]]], requires_grad=True)
    y = F.relu(x)
    y.backward(np.full((1, 1, 2, 2), np.inf, dtype=np.float32))
    assert x.grad.data.tolist() == [[[[0.0, np.inf], [np.inf, 0.0]]]]
    x.grad = None
    F.max_pool2d(x, 2).backward(np.full((1, 1, 1, 1), np.nan, dtype=np.float32))
    assert np.isnan(x.grad.data[0, 0, 1, 0]) and np.count_nonzero(x.grad.data == 0) == 3
