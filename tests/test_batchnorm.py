"""Batch normalisation: central differences, PyTorch as the oracle, buffers, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convgrad as cg
import convgrad.nn.functional as F
from convgrad.errors import ArgumentError, ShapeError
from convgrad.kernels.norm import batch_norm_backward, batch_norm_forward
from gradcheck import check_gradients
from torch_oracle import helper_test_op

SHAPES = [(6, 3), (4, 2, 5), (3, 3, 4, 5), (2, 1, 3, 3), (7, 4, 1)]


def _channels_last(shape: tuple[int, ...]):
    """fn(x) that reads an (N, *spatial, C) array as the NCHW-logical view of NHWC memory."""
    nd = len(shape)
    return (0, nd - 1, *range(1, nd - 1)), (shape[0], *shape[2:], shape[1])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_training_gradients_match_central_differences(shape, affine):
    rng = np.random.default_rng(len(shape) * 10 + shape[0])
    x = rng.standard_normal(shape) * 2 + 1
    c = shape[1]
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    if affine:
        check_gradients(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), x, w, b)
    else:
        check_gradients(lambda x: F.batch_norm(x, None, None, training=True), x)


@pytest.mark.parametrize("shape", [(3, 3, 4, 5), (4, 2, 5)])
def test_channels_last_memory_gradients_match_central_differences(shape):
    """The convolution hands BatchNorm NCHW views of NHWC memory: the (M, C) path."""
    order, stored = _channels_last(shape)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(stored)
    w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])

    def fn(x, w, b):
        view = x.permute(*order)
        assert view.shape == shape and not view.data.flags.c_contiguous
        return F.batch_norm(view, None, None, w, b, training=True)

    check_gradients(fn, x, w, b)


@pytest.mark.parametrize("shape", SHAPES)
def test_evaluation_gradients_match_central_differences(shape):
    rng = np.random.default_rng(2)
    c = shape[1]
    mean, var = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    x, w, b = rng.standard_normal(shape), rng.standard_normal(c), rng.standard_normal(c)
    check_gradients(lambda x, w, b: F.batch_norm(x, mean, var, w, b, training=False), x, w, b)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_functional_batch_norm_matches_torch(shape, training, dtype):
    c = shape[1]
    rng = np.random.default_rng(3)
    mean0, var0 = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    stats = {"cg": (mean0.copy(), var0.copy()), "torch": (torch.tensor(mean0), torch.tensor(var0))}
    helper_test_op(
        [shape, (c,), (c,)],
        lambda x, w, b: torch.nn.functional.batch_norm(
            x * 3 + 1, *stats["torch"], w, b, training=training, momentum=0.3, eps=1e-3
        ),
        lambda x, w, b: F.batch_norm(
            x * 3 + 1, *stats["cg"], w, b, training=training, momentum=0.3, eps=1e-3
        ),
        dtype=dtype,
    )
    for mine, theirs in zip(stats["cg"], stats["torch"], strict=True):
        np.testing.assert_allclose(
            mine,
            theirs.numpy(),
            **({"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12}),
        )
    if training:
        assert not np.array_equal(stats["cg"][0], mean0)  # the update happened


def _twins(module_cls, c, dtype, **kwargs):
    mine = module_cls(c, dtype=dtype, **kwargs)
    theirs = getattr(torch.nn, module_cls.__name__)(
        c, dtype=torch.float64 if dtype == np.float64 else torch.float32, **kwargs
    )
    with torch.no_grad():
        if mine.affine:
            w = np.random.default_rng(5).standard_normal(c).astype(dtype)
            theirs.weight.copy_(torch.tensor(w))
            mine.weight.data[...] = w
    return mine, theirs


@pytest.mark.parametrize(
    ("module_cls", "shape"),
    [
        (cg.nn.BatchNorm2d, (4, 3, 5, 6)),
        (cg.nn.BatchNorm1d, (8, 5)),
        (cg.nn.BatchNorm1d, (4, 3, 7)),
    ],
)
@pytest.mark.parametrize("momentum", [0.1, None, 1.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_module_training_steps_and_evaluation_match_torch(module_cls, shape, momentum, dtype):
    """Several training steps: outputs, every gradient, running statistics and the batch
    counter agree with torch; then evaluation uses the running statistics."""
    c = shape[1]
    mine, theirs = _twins(module_cls, c, dtype, momentum=momentum)
    rng = np.random.default_rng(6)
    tight = dtype == np.float64
    rtol, atol = (1e-10, 1e-10) if tight else (1e-4, 1e-5)
    for step in range(4):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        dout = rng.standard_normal(shape).astype(dtype)
        x_cg, x_t = cg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y_cg, y_t = mine(x_cg), theirs(x_t)
        np.testing.assert_allclose(y_cg.data, y_t.detach().numpy(), rtol=rtol, atol=atol)
        y_cg.backward(dout)
        y_t.backward(torch.tensor(dout))
        np.testing.assert_allclose(x_cg.grad.data, x_t.grad.numpy(), rtol=rtol * 10, atol=atol * 10)
        for name in ("weight", "bias"):
            np.testing.assert_allclose(
                getattr(mine, name).grad.data,
                getattr(theirs, name).grad.numpy(),
                rtol=rtol * 10,
                atol=atol * 100,
            )
        mine.zero_grad()
        theirs.zero_grad()
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(
                getattr(mine, name).data, getattr(theirs, name).numpy(), rtol=rtol, atol=atol
            )
        assert mine.num_batches_tracked.item() == theirs.num_batches_tracked.item() == step + 1
        assert mine.num_batches_tracked.dtype == np.int64
        assert mine.running_mean.dtype == dtype
    mine.eval()
    theirs.eval()
    x = rng.standard_normal(shape).astype(dtype)
    x_cg, x_t = cg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y_cg, y_t = mine(x_cg), theirs(x_t)
    np.testing.assert_allclose(y_cg.data, y_t.detach().numpy(), rtol=rtol, atol=atol)
    y_cg.sum().backward()
    y_t.sum().backward()
    np.testing.assert_allclose(x_cg.grad.data, x_t.grad.numpy(), rtol=rtol, atol=atol)
    assert mine.num_batches_tracked.item() == 4  # evaluation does not count


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_affine_and_track_running_stats_variants_match_torch(affine, track, training):
    mine, theirs = _twins(
        cg.nn.BatchNorm2d, 3, np.float64, affine=affine, track_running_stats=track
    )
    mine.train(training)
    theirs.train(training)
    x = np.random.default_rng(7).standard_normal((2, 3, 4, 4)) * 2 + 0.5
    helper_test_op([x], theirs, mine)
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in mine.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert list(mine.state_dict()) == list(theirs.state_dict())


def test_conv_batchnorm_float32_channels_last_matches_torch():
    """Conv output (NHWC memory) into BatchNorm2d into ReLU, float32, forward and backward."""
    cg.manual_seed(0)
    mine = cg.nn.Sequential(cg.nn.Conv2d(2, 6, 3, padding=1), cg.nn.BatchNorm2d(6), cg.nn.ReLU())
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU()
    )
    theirs.load_state_dict({k: torch.tensor(v) for k, v in mine.state_dict().items()})
    x = np.random.default_rng(8).standard_normal((16, 2, 12, 12)).astype(np.float32)
    x_cg, x_t = cg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y_cg, y_t = mine(x_cg), theirs(x_t)
    np.testing.assert_allclose(y_cg.data, y_t.detach().numpy(), rtol=1e-4, atol=1e-5)
    (y_cg * y_cg).sum().backward()
    (y_t * y_t).sum().backward()
    np.testing.assert_allclose(x_cg.grad.data, x_t.grad.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(
        mine[1].weight.grad.data, theirs[1].weight.grad.numpy(), rtol=1e-3, atol=1e-3
    )
    np.testing.assert_allclose(mine[1].running_var.data, theirs[1].running_var.numpy(), rtol=1e-5)


def test_kernel_backward_needs_only_what_is_asked():
    x = np.random.default_rng(9).standard_normal((4, 3, 2, 2))
    _, cache = batch_norm_forward(x, np.ones(3), np.zeros(3), None, None, True, 0.1, 1e-5)
    dx, dw, db = batch_norm_backward(np.ones_like(x), cache, need_x=False, need_affine=True)
    assert dx is None and dw.shape == db.shape == (3,)
    np.testing.assert_allclose(db, [16, 16, 16])
    np.testing.assert_allclose(dw, 0, atol=1e-12)  # sum of xhat is 0 per channel


class ConvBN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.Conv2d(4, 6, 3),
            torch.nn.BatchNorm2d(6, momentum=None),
            torch.nn.ReLU(),
        )
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 3), torch.nn.BatchNorm1d(3)
        )

    def forward(self, x):
        return self.head(self.features(x))


def _convgrad_twin():
    nn = cg.nn
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3),
        nn.BatchNorm2d(6, momentum=None),
        nn.ReLU(),
    )
    model.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 4 * 4, 3), nn.BatchNorm1d(3))
    model.forward = lambda x: model.head(model.features(x))
    return model


def test_a_torch_state_dict_of_a_conv_bn_network_loads_and_gives_the_same_eval_outputs():
    torch.manual_seed(0)
    theirs = ConvBN().double()
    rng = np.random.default_rng(10)
    theirs.train()
    with torch.no_grad():  # move the running statistics away from their initial values
        for _ in range(3):
            theirs(torch.tensor(rng.standard_normal((8, 1, 8, 8)) * 2 + 1))
    theirs.eval()
    state = theirs.state_dict()
    mine = _convgrad_twin().double()
    assert list(mine.state_dict()) == list(state)  # the same keys in the same order
    assert "features.1.running_mean" in state and "features.4.num_batches_tracked" in state
    result = mine.load_state_dict(state)  # torch tensors, passed directly
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert mine.features[4].num_batches_tracked.item() == 3
    assert mine.features[4].num_batches_tracked.dtype == np.int64
    mine.eval()
    x = rng.standard_normal((5, 1, 8, 8))
    with torch.no_grad():
        expected = theirs(torch.tensor(x)).numpy()
    np.testing.assert_allclose(mine(cg.tensor(x)).data, expected, rtol=1e-10, atol=1e-12)
    # and back: convgrad's state_dict loads into torch
    theirs.load_state_dict({k: torch.tensor(v) for k, v in mine.state_dict().items()})


def test_errors_name_the_layer_and_the_shapes():
    with pytest.raises(
        ShapeError,
        match=r"BatchNorm2d\(3\): expected a 4-D input \(N, C, H, W\), "
        r"received shape \(3, 8, 8\)",
    ):
        cg.nn.BatchNorm2d(3)(cg.tensor(np.zeros((3, 8, 8), np.float32)))
    with pytest.raises(
        ShapeError,
        match=r"BatchNorm2d\(3\): expected input with 3 channels, "
        r"received shape \(2, 4, 8, 8\)",
    ):
        cg.nn.BatchNorm2d(3)(cg.tensor(np.zeros((2, 4, 8, 8), np.float32)))
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(3\): expected a 2-D or 3-D input"):
        cg.nn.BatchNorm1d(3)(cg.tensor(np.zeros((2, 3, 4, 4), np.float32)))
    with pytest.raises(
        ShapeError,
        match="more than 1 value per channel when training, received "
        r"input shape \(1, 3\)",
    ):
        cg.nn.BatchNorm1d(3)(cg.tensor(np.zeros((1, 3), np.float32)))
    with pytest.raises(ArgumentError, match="running_mean and running_var must be given"):
        F.batch_norm(cg.tensor(np.zeros((2, 3))), None, None, training=False)
    with pytest.raises(ShapeError, match=r"expected running_mean of shape \(4,\)"):
        F.batch_norm(cg.tensor(np.zeros((2, 4))), np.zeros(3), np.ones(3))
    with pytest.raises(ArgumentError, match="num_features=0"):
        cg.nn.BatchNorm2d(0)
    with pytest.raises(ArgumentError, match="momentum=1.5"):
        cg.nn.BatchNorm2d(2, momentum=1.5)
    # torch raises on the same inputs
    with pytest.raises(ValueError):
        torch.nn.BatchNorm2d(3)(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError):
        torch.nn.BatchNorm1d(3)(torch.zeros(1, 3))


def test_repr_and_summary_mult_adds():
    bn = cg.nn.BatchNorm2d(4, momentum=None)
    assert (
        repr(bn) == "BatchNorm2d(4, eps=1e-05, momentum=None, affine=True, "
        "track_running_stats=True)"
    )
    model = cg.nn.Sequential(cg.nn.Conv2d(1, 4, 3), cg.nn.BatchNorm2d(4), cg.nn.ReLU())
    rows = cg.summary(model, (2, 1, 6, 6)).rows
    assert rows[1].layer == "BatchNorm2d" and rows[1].mult_adds == 2 * 4 * 4 * 4
    assert rows[1].params == 8
    assert rows[0].mult_adds == 2 * 4 * 4 * 4 * 9
