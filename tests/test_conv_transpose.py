"""Transposed convolution: central differences, PyTorch as the oracle, the naive loops, the adjoint
identity with conv2d, the layers, and the errors (by message, and raised where torch raises).

Cases are generated over strides, paddings, output paddings (every legal value, including those
legal only through the dilation), dilations, groups, odd and even kernels and sizes that the
stride does not divide.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convgrad as cg
import convgrad.nn.functional as F
from convgrad import parallel
from convgrad.errors import ArgumentError, ConvgradError, DtypeError, ShapeError
from convgrad.kernels import conv as conv_f
from convgrad.reference import conv_transpose2d_naive
from gradcheck import check_gradients
from torch_oracle import helper_test_op

HYPOTHESIS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
FLOATS = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]


class TransposeCase(NamedTuple):
    """One generated transposed convolution, with its arguments as both libraries receive them."""

    nd: int
    batch: int | None  # None: unbatched input
    c_in: int
    c_out: int
    groups: int
    sizes: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    bias: bool
    seed: int

    def shapes(self) -> list[tuple[int, ...]]:
        x = (self.c_in, *self.sizes) if self.batch is None else (self.batch, self.c_in, *self.sizes)
        shapes = [x, (self.c_in, self.c_out // self.groups, *self.kernel)]
        return shapes + [(self.c_out,)] if self.bias else shapes

    def arguments(self) -> tuple[Any, ...]:
        """stride, padding, output_padding, groups, dilation in the functional order; a tuple
        of equal values is passed as the int."""

        def arg(values: tuple[int, ...]) -> Any:
            return values[0] if len(set(values)) == 1 and self.seed % 2 else values

        return (arg(self.stride), arg(self.padding), arg(self.output_padding), self.groups,
                arg(self.dilation))

    def out_sizes(self) -> tuple[int, ...]:
        return tuple(
            (n - 1) * s - 2 * p + d * (k - 1) + op + 1
            for n, k, s, p, op, d in zip(self.sizes, self.kernel, self.stride, self.padding,
                                         self.output_padding, self.dilation, strict=True)
        )


@st.composite
def transpose_cases(draw: Any, nd: int, max_size: int = 5, batch: Any = None) -> TransposeCase:
    """Valid transposed convolutions: output_padding below max(stride, dilation), output >= 1."""
    groups = draw(st.sampled_from((1, 1, 2, 3)))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    sizes = tuple(draw(st.integers(1, max_size)) for _ in range(nd))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1))
                           for s, d in zip(stride, dilation, strict=True))
    padding = tuple(
        draw(st.integers(0, min(3, ((n - 1) * s + d * (k - 1) + op) // 2)))
        for n, k, s, d, op in zip(sizes, kernel, stride, dilation, output_padding, strict=True)
    )
    batch_size = draw(st.sampled_from((None, 1, 2)) if batch is None else st.just(batch))
    return TransposeCase(nd, batch_size, c_in, c_out, groups, sizes, kernel, stride, padding,
                         output_padding, dilation, draw(st.booleans()),
                         draw(st.integers(0, 2**16)))


def torch_transpose(case: TransposeCase):
    conv = TF.conv_transpose1d if case.nd == 1 else TF.conv_transpose2d
    return lambda x, w, b=None: conv(x, w, b, *case.arguments())


def convgrad_transpose(case: TransposeCase):
    conv = F.conv_transpose1d if case.nd == 1 else F.conv_transpose2d
    return lambda x, w, b=None: conv(x, w, b, *case.arguments())


def _case(nd=2, batch=2, c_in=2, c_out=3, groups=1, sizes=(4, 5), kernel=(3, 3), stride=(2, 2),
          padding=(1, 1), output_padding=(1, 1), dilation=(1, 1), bias=True,
          seed=1) -> TransposeCase:
    return TransposeCase(nd, batch, c_in, c_out, groups, sizes, kernel, stride, padding,
                         output_padding, dilation, bias, seed)


NAMED_CASES = [
    pytest.param(_case(), id="stride2-pad1-outpad1-odd-kernel"),
    pytest.param(_case(c_in=4, sizes=(5, 5), kernel=(4, 4), padding=(1, 1), output_padding=(0, 0)),
                 id="dcgan-up-2x-even-kernel"),
    pytest.param(_case(sizes=(3, 4), kernel=(2, 3), stride=(3, 2), padding=(0, 2),
                       output_padding=(2, 1)), id="non-square-stride-and-kernel"),
    pytest.param(_case(stride=(1, 1), dilation=(2, 3), output_padding=(1, 2), padding=(2, 0)),
                 id="output-padding-allowed-by-the-dilation"),
    pytest.param(_case(c_in=6, c_out=3, groups=3, stride=(2, 1), output_padding=(1, 0)),
                 id="groups-3"),
    pytest.param(_case(c_in=4, c_out=4, groups=4, bias=False, output_padding=(0, 0)),
                 id="depthwise-no-bias"),
    pytest.param(_case(batch=None, stride=(1, 1), output_padding=(0, 0), padding=(0, 0)),
                 id="unbatched-stride1-full-correlation-route"),
    pytest.param(_case(sizes=(1, 1), kernel=(3, 3), padding=(1, 1), stride=(1, 1),
                       output_padding=(0, 0)), id="one-pixel-in-one-pixel-out"),
    pytest.param(_case(sizes=(3, 3), kernel=(1, 1), stride=(3, 3), padding=(0, 0),
                       output_padding=(2, 2)), id="1x1-kernel-stride3-gaps"),
    pytest.param(_case(nd=1, sizes=(6,), kernel=(4,), stride=(3,), padding=(2,),
                       output_padding=(1,), dilation=(2,)), id="1d-strided-dilated-even"),
]


# ------------------------------------------------------------------- central differences
@pytest.mark.parametrize("case", NAMED_CASES)
def test_named_cases_match_central_differences(case: TransposeCase) -> None:
    conv = convgrad_transpose(case)
    arrays = [np.random.default_rng(case.seed).standard_normal(s) for s in case.shapes()]
    check_gradients(conv, *arrays, seed=case.seed)


@settings(max_examples=12, **HYPOTHESIS)
@given(case=st.one_of(transpose_cases(nd=2, max_size=3), transpose_cases(nd=1, max_size=4)))
def test_generated_cases_match_central_differences(case: TransposeCase) -> None:
    arrays = [np.random.default_rng(case.seed).standard_normal(s) for s in case.shapes()]
    check_gradients(convgrad_transpose(case), *arrays, seed=case.seed)


# ------------------------------------------------------------------- PyTorch as the oracle
@settings(max_examples=50, **HYPOTHESIS)
@given(case=transpose_cases(nd=2))
def test_conv_transpose2d_forward_and_gradients_match_torch_float64(case: TransposeCase) -> None:
    helper_test_op(case.shapes(), torch_transpose(case), convgrad_transpose(case), seed=case.seed)


@settings(max_examples=20, **HYPOTHESIS)
@given(case=transpose_cases(nd=2))
def test_conv_transpose2d_forward_and_gradients_match_torch_float32(case: TransposeCase) -> None:
    helper_test_op(case.shapes(), torch_transpose(case), convgrad_transpose(case),
                   dtype=np.float32, seed=case.seed)


@settings(max_examples=30, **HYPOTHESIS)
@given(case=transpose_cases(nd=1, max_size=8))
def test_conv_transpose1d_forward_and_gradients_match_torch_float64(case: TransposeCase) -> None:
    helper_test_op(case.shapes(), torch_transpose(case), convgrad_transpose(case), seed=case.seed)


@settings(max_examples=10, **HYPOTHESIS)
@given(case=transpose_cases(nd=1, max_size=8))
def test_conv_transpose1d_forward_and_gradients_match_torch_float32(case: TransposeCase) -> None:
    helper_test_op(case.shapes(), torch_transpose(case), convgrad_transpose(case),
                   dtype=np.float32, seed=case.seed)


@pytest.mark.parametrize("case", NAMED_CASES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_named_cases_match_torch(case: TransposeCase, dtype: Any) -> None:
    helper_test_op(case.shapes(), torch_transpose(case), convgrad_transpose(case), dtype=dtype,
                   seed=case.seed)


@pytest.fixture
def sliced_and_threaded(monkeypatch):
    """One image per patch slice and per scatter slice, threads on any size, 3 threads."""
    monkeypatch.setattr(conv_f, "PATCH_BYTES_LIMIT", 1)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    before = cg.get_num_threads()
    cg.set_num_threads(3)
    yield
    cg.set_num_threads(before)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=transpose_cases(nd=2, batch=5))
def test_sliced_over_the_batch_on_threads_matches_torch(case, sliced_and_threaded) -> None:
    # the fixture only sets module constants, the same for every example
    helper_test_op(case.shapes(), torch_transpose(case), convgrad_transpose(case), seed=case.seed)


def test_a_large_batch_is_sliced_and_still_matches_torch() -> None:
    # 64 images of 32 channels at 14x14, kernel 4 stride 2: the col2im route, several slices
    case = _case(batch=64, c_in=32, c_out=16, sizes=(14, 14), kernel=(4, 4), padding=(1, 1),
                 output_padding=(0, 0))
    helper_test_op(case.shapes(), torch_transpose(case), convgrad_transpose(case))


# ------------------------------------------------------------------- naive loops
@settings(max_examples=40, **HYPOTHESIS)
@given(case=transpose_cases(nd=2, batch=2))
def test_fast_path_equals_the_naive_loops(case: TransposeCase) -> None:
    rng = np.random.default_rng(case.seed)
    x, w, b = (rng.standard_normal(s) for s in case.shapes()[:2] + [(case.c_out,)])
    expected = conv_transpose2d_naive(x, w, b, case.stride, case.padding, case.output_padding,
                                      case.dilation, case.groups)
    got = F.conv_transpose2d(cg.tensor(x), cg.tensor(w), cg.tensor(b), case.stride, case.padding,
                             case.output_padding, case.groups, case.dilation)
    assert got.shape == expected.shape == (2, case.c_out, *case.out_sizes())
    np.testing.assert_allclose(got.data, expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------- the adjoint of conv2d
@st.composite
def conv_geometries(draw: Any) -> tuple[Any, ...]:
    """A valid conv2d: x (N, C_in, H, W), w (C_out, C_in/G, kH, kW), stride, padding, dilation."""
    groups = draw(st.sampled_from((1, 2)))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    sizes = tuple(
        draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 9))
        for k, d, p in zip(kernel, dilation, padding, strict=True)
    )
    return ((2, c_in, *sizes), (c_out, c_in // groups, *kernel), stride, padding, dilation,
            groups, draw(st.integers(0, 2**16)))


@settings(max_examples=60, **HYPOTHESIS)
@given(geometry=conv_geometries())
def test_conv_transpose2d_is_the_adjoint_of_conv2d(geometry) -> None:
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>, output_padding chosen to give x's size."""
    x_shape, w_shape, stride, padding, dilation, groups, seed = geometry
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    conv = F.conv2d(cg.tensor(x), cg.tensor(w), None, stride, padding, dilation, groups)
    y = rng.standard_normal(conv.shape)
    smallest = [(o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in
                zip(conv.shape[2:], stride, padding, dilation, w_shape[2:], strict=True)]
    output_padding = tuple(n - low for n, low in zip(x_shape[2:], smallest, strict=True))
    transposed = F.conv_transpose2d(cg.tensor(y), cg.tensor(w), None, stride, padding,
                                    output_padding, groups, dilation)
    assert transposed.shape == x.shape
    left, right = np.sum(conv.data * y), np.sum(x * transposed.data)
    assert math.isclose(left, right, rel_tol=1e-11, abs_tol=1e-11)


def test_the_transposed_forward_is_conv2d_input_gradient_and_its_gradients_are_conv2d_ops() -> None:
    """One kernel serves both ops, so the results are equal bit for bit, not just close."""
    rng = np.random.default_rng(3)
    stride, padding, dilation, groups = (2, 3), (1, 2), (2, 1), 2
    x, w = rng.standard_normal((3, 4, 11, 10)), rng.standard_normal((6, 2, 3, 4))
    x_t = cg.tensor(x, requires_grad=True)
    w_conv = cg.tensor(w, requires_grad=True)
    out = F.conv2d(x_t, w_conv, None, stride, padding, dilation, groups)
    dout = rng.standard_normal(out.shape)
    out.backward(dout)
    output_padding = (11 - ((out.shape[2] - 1) * 2 - 2 + 2 * 2 + 1),
                      10 - ((out.shape[3] - 1) * 3 - 4 + 3 + 1))
    y = cg.tensor(dout, requires_grad=True)
    w_t = cg.tensor(w, requires_grad=True)
    up = F.conv_transpose2d(y, w_t, None, stride, padding, output_padding, groups, dilation)
    np.testing.assert_array_equal(up.data, x_t.grad.data)  # forward = conv2d's dx

    g = rng.standard_normal(up.shape)
    up.backward(g)
    w_again = cg.tensor(w, requires_grad=True)
    conv_of_g = F.conv2d(cg.tensor(g), w_again, None, stride, padding, dilation, groups)
    np.testing.assert_array_equal(y.grad.data, conv_of_g.data)  # dx = conv2d forward of g
    conv_of_g.backward(dout)  # conv2d's dw with g as the input and y as the output gradient
    np.testing.assert_array_equal(w_t.grad.data, w_again.grad.data)


# ------------------------------------------------------------------- odd inputs
def test_empty_batch_gives_an_empty_output_and_zero_parameter_gradients() -> None:
    layer = cg.nn.ConvTranspose2d(3, 4, 3, stride=2, dtype=np.float64)
    x = cg.tensor(np.zeros((0, 3, 5, 5)), requires_grad=True)
    out = layer(x)
    assert out.shape == (0, 4, 11, 11)
    out.sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
    assert not layer.weight.grad.data.any() and not layer.bias.grad.data.any()


def test_no_input_gradient_is_computed_for_an_input_that_needs_none() -> None:
    x = cg.tensor(np.ones((1, 2, 3, 3)))
    w = cg.tensor(np.ones((2, 1, 2, 2)), requires_grad=True)
    F.conv_transpose2d(x, w, stride=2).sum().backward()
    assert x.grad is None and w.grad is not None
    np.testing.assert_array_equal(w.grad.data, np.full((2, 1, 2, 2), 9.0))  # 9 pixels each


# ------------------------------------------------------------------- layers
def _torch_twin(layer: cg.nn.Module) -> torch.nn.Module:
    torch_cls = getattr(torch.nn, type(layer).__name__)
    twin = torch_cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                     layer.padding, layer.output_padding, layer.groups, layer.bias is not None,
                     layer.dilation, dtype=torch.float64)
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in layer.state_dict().items()})
    return twin


@pytest.mark.parametrize(
    "cls_name,args,kwargs,input_shape,output_size",
    [
        ("ConvTranspose2d", (4, 6, 3), {"stride": 2}, (2, 4, 5, 5), [12, 11]),
        ("ConvTranspose2d", (4, 6, 3), {"stride": 2}, (2, 4, 5, 5), (2, 6, 11, 12)),  # N, C too
        ("ConvTranspose2d", (4, 6, (3, 2)), {"stride": (3, 2), "padding": 1, "groups": 2},
         (4, 5, 6), [14, 11]),  # unbatched
        ("ConvTranspose2d", (4, 6, 3), {"stride": 2, "dilation": 2, "output_padding": 1},
         (1, 4, 3, 3), None),
        ("ConvTranspose1d", (2, 3, 4), {"stride": 3, "bias": False}, (2, 2, 7), [24]),
        ("ConvTranspose1d", (2, 3, 4), {"stride": 3, "padding": 2}, (2, 2, 7), (2, 3, 20)),
    ],
)
def test_layer_with_output_size_matches_torch(cls_name, args, kwargs, input_shape,
                                              output_size) -> None:
    cls = getattr(cg.nn, cls_name)
    cg.manual_seed(0)
    layer = cls(*args, **kwargs, dtype=np.float64)
    twin = _torch_twin(layer)

    def torch_fn(x):
        return twin(x) if output_size is None else twin(x, output_size=list(output_size))

    def convgrad_fn(x):
        return layer(x) if output_size is None else layer(x, output_size=output_size)

    helper_test_op([input_shape], torch_fn, convgrad_fn)
    expected = torch_fn(torch.zeros(input_shape, dtype=torch.float64)).shape
    assert convgrad_fn(cg.zeros(*input_shape, dtype=np.float64)).shape == tuple(expected)


def test_layer_weight_shape_init_and_repr_follow_torch() -> None:
    cg.manual_seed(0)
    layer = cg.nn.ConvTranspose2d(8, 6, (3, 2), stride=2, padding=1, output_padding=1,
                                  groups=2, bias=True, dilation=2)
    twin = torch.nn.ConvTranspose2d(8, 6, (3, 2), 2, 1, 1, 2, True, 2)
    assert layer.weight.shape == tuple(twin.weight.shape) == (8, 3, 3, 2)
    assert layer.weight.dtype == np.float32
    assert repr(layer) == repr(twin)
    assert repr(cg.nn.ConvTranspose1d(4, 2, 3, bias=False)) == repr(
        torch.nn.ConvTranspose1d(4, 2, 3, bias=False))
    bound = 1 / math.sqrt(3 * 3 * 2)  # fan_in = weight.shape[1] * kH * kW = C_out/groups * k
    for param in (layer.weight, layer.bias):
        assert np.abs(param.data).max() <= bound
        assert np.abs(param.data).max() > 0.8 * bound  # uniform over the whole range
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]


def test_layer_mult_adds_are_those_of_the_convolution_it_transposes() -> None:
    layer = cg.nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
    x = cg.zeros(2, 32, 14, 14)
    # each input pixel of each channel meets C_out/G * kH * kW weights
    assert layer.mult_adds(x.shape, layer(x).shape) == 2 * 32 * 14 * 14 * 16 * 4 * 4
    conv = cg.nn.Conv2d(16, 32, 4, stride=2, padding=1)
    u = cg.zeros(2, 16, 28, 28)
    assert conv.mult_adds(u.shape, conv(u).shape) == layer.mult_adds(x.shape, layer(x).shape)
    assert cg.summary(layer, (2, 32, 14, 14)).mult_adds == layer.mult_adds(x.shape, (2, 16, 28, 28))


def test_layer_trains_a_tiny_upsampler() -> None:
    """Gradients flow through a ConvTranspose2d inside a model: the loss falls."""
    cg.manual_seed(0)
    model = cg.nn.Sequential(cg.nn.Conv2d(1, 4, 3, stride=2, padding=1), cg.nn.ReLU(),
                             cg.nn.ConvTranspose2d(4, 1, 3, stride=2, padding=1,
                                                   output_padding=1))
    x = cg.tensor(np.random.default_rng(0).random((8, 1, 8, 8)).astype(np.float32))
    optimizer = cg.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    assert model(x).shape == x.shape
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------- errors
def _x(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape)


ERRORS = [
    # (input, weight, bias, kwargs, convgrad error, message)
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), None, {"output_padding": 1}, ArgumentError,
                 r"conv_transpose2d: output padding must be smaller than either stride or "
                 r"dilation, received output_padding=\(1, 1\) with stride=\(1, 1\) and "
                 r"dilation=\(1, 1\)", id="output-padding-equal-to-stride"),
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), None,
                 {"stride": (2, 1), "dilation": (1, 2), "output_padding": (1, 2)}, ArgumentError,
                 r"output padding must be smaller than either stride or dilation",
                 id="output-padding-equal-to-dilation"),
    pytest.param((2, 4, 5), (4, 3, 3), None, {"stride": 2, "output_padding": 2}, ArgumentError,
                 r"conv_transpose1d: output padding must be smaller", id="1d-output-padding"),
    pytest.param((2, 3, 5, 5), (4, 3, 3, 3), None, {}, ShapeError,
                 r"conv_transpose2d: given groups=1, weight of size \(4, 3, 3, 3\), expected "
                 r"input \(2, 3, 5, 5\) to have 4 channels, but got 3 channels instead",
                 id="wrong-input-channels"),
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), None, {"groups": 3}, ArgumentError,
                 r"C_in \(4\) must be divisible by groups \(3\)", id="groups-not-dividing"),
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), None, {"groups": 0}, ArgumentError,
                 r"expected a strictly positive groups, received groups=0", id="groups-zero"),
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), (4,), {}, ShapeError,
                 r"expected bias of shape \(3,\), received \(4,\)", id="bias-of-c-in"),
    pytest.param((1, 4, 1, 1), (4, 3, 2, 2), None, {"padding": 1}, ShapeError,
                 r"calculated output size \(0, 0\) from input size \(1, 1\) is too small",
                 id="output-size-zero"),
    pytest.param((1, 4, 0, 3), (4, 3, 2, 2), None, {"stride": 2}, ShapeError,
                 r"non-empty spatial dimensions, received shape \(1, 4, 0, 3\)",
                 id="empty-spatial-input"),
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), None, {"padding": -1}, ArgumentError,
                 r"expected a non-negative padding, received padding=-1", id="negative-padding"),
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), None, {"stride": 2, "output_padding": -1},
                 ArgumentError, r"non-negative output_padding", id="negative-output-padding"),
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), None, {"stride": 0}, ArgumentError,
                 r"strictly positive stride, received stride=0", id="stride-zero"),
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), None, {"dilation": (1, 0)}, ArgumentError,
                 r"strictly positive dilation", id="dilation-zero"),
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), None, {"padding": "same"}, ArgumentError,
                 r"padding must be an int or a tuple of 2 ints, received 'same'",
                 id="padding-string"),
    pytest.param((2, 4, 5, 5), (4, 3, 3, 3), None, {"output_padding": (1, 1, 1), "stride": 2},
                 ArgumentError, r"output_padding must be an int or a tuple of 2 ints",
                 id="output-padding-wrong-length"),
    pytest.param((1, 2, 4, 5, 5), (4, 3, 3, 3), None, {}, ShapeError,
                 r"expected a 4-D input \(N, C_in, H, W\) \(or 3-D unbatched\), received shape "
                 r"\(1, 2, 4, 5, 5\)", id="5d-input"),
    pytest.param((2, 4, 5, 5), (4, 3, 3), None, {}, ShapeError,
                 r"expected a 4-D weight \(C_in, C_out/groups, kH, kW\)", id="3d-weight"),
    pytest.param((2, 4, 5, 5), (4, 0, 3, 3), None, {}, ShapeError,
                 r"expected a non-empty weight", id="empty-weight"),
]


@pytest.mark.parametrize("input_shape,weight_shape,bias_shape,kwargs,error,message", ERRORS)
def test_errors_name_the_op_and_torch_refuses_the_same_call(
    input_shape, weight_shape, bias_shape, kwargs, error, message
) -> None:
    nd = len(weight_shape) - 2 if len(weight_shape) in (3, 4) and len(input_shape) == 3 else 2
    ours = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    theirs = TF.conv_transpose1d if nd == 1 else TF.conv_transpose2d
    x, w = _x(*input_shape), _x(*weight_shape)
    b = None if bias_shape is None else _x(*bias_shape)
    with pytest.raises(error, match=message):
        ours(cg.tensor(x), cg.tensor(w), None if b is None else cg.tensor(b), **kwargs)
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        theirs(torch.tensor(x), torch.tensor(w), None if b is None else torch.tensor(b), **kwargs)


def test_dtype_mismatch_is_a_dtype_error() -> None:
    with pytest.raises(DtypeError, match=r"conv_transpose2d: input dtype float32 and weight dtype "
                                         r"float64 differ"):
        F.conv_transpose2d(cg.zeros(1, 2, 3, 3), cg.zeros(2, 1, 2, 2, dtype=np.float64))


def test_layer_errors_name_the_layer() -> None:
    layer = cg.nn.ConvTranspose2d(4, 6, 3, stride=2)
    with pytest.raises(ShapeError, match=r"ConvTranspose2d\(4, 6, kernel_size=\(3, 3\), "
                                         r"stride=\(2, 2\)\): given groups=1, weight of size "
                                         r"\(4, 6, 3, 3\), expected input \(2, 3, 5, 5\) to "
                                         r"have 4 channels"):
        layer(cg.zeros(2, 3, 5, 5))
    with pytest.raises(ArgumentError, match=r"ConvTranspose2d: out_channels \(6\) must be "
                                            r"divisible by groups \(4\)"):
        cg.nn.ConvTranspose2d(4, 6, 3, groups=4)
    with pytest.raises(ArgumentError, match=r"ConvTranspose1d: expected a strictly positive "
                                            r"in_channels, received in_channels=0"):
        cg.nn.ConvTranspose1d(0, 6, 3)
    with pytest.raises(ArgumentError, match=r"ConvTranspose2d: padding must be an int or a "
                                            r"tuple of 2 ints, received 'same'"):
        cg.nn.ConvTranspose2d(4, 6, 3, padding="same")
    with pytest.raises(TypeError):  # torch builds it and refuses it when called
        torch.nn.ConvTranspose2d(4, 6, 3, padding="same")(torch.zeros(1, 4, 5, 5))


@pytest.mark.parametrize(
    "output_size,error,message",
    [
        ([13, 12], ShapeError, r"ConvTranspose2d\(4, 6, kernel_size=\(3, 3\), stride=\(2, 2\)\): "
         r"requested an output size of \(13, 12\), but valid sizes range from \(11, 11\) to "
         r"\(12, 12\) \(for an input of \(5, 5\)\)"),
        ([10, 11], ShapeError, r"valid sizes range from \(11, 11\) to \(12, 12\)"),
        ([12], ArgumentError, r"for a 4-D input, output_size must be 2 or 4 ints, received "
         r"output_size=\[12\]"),
        ([1, 6, 12], ArgumentError, r"output_size must be 2 or 4 ints"),
    ],
)
def test_output_size_out_of_range_is_refused_like_torch(output_size, error, message) -> None:
    layer = cg.nn.ConvTranspose2d(4, 6, 3, stride=2)
    with pytest.raises(error, match=message):
        layer(cg.zeros(2, 4, 5, 5), output_size=output_size)
    with pytest.raises(ValueError):
        torch.nn.ConvTranspose2d(4, 6, 3, stride=2)(torch.zeros(2, 4, 5, 5),
                                                    output_size=output_size)


def test_output_size_overrides_an_impossible_output_padding_as_in_torch() -> None:
    """torch ignores the layer's output_padding when output_size is given; so does convgrad."""
    layer = cg.nn.ConvTranspose2d(4, 6, 3, output_padding=1)
    with pytest.raises(ArgumentError, match=r"output padding must be smaller than either"):
        layer(cg.zeros(1, 4, 5, 5))
    assert layer(cg.zeros(1, 4, 5, 5), output_size=(7, 7)).shape == (1, 6, 7, 7)
    twin = torch.nn.ConvTranspose2d(4, 6, 3, output_padding=1)
    with pytest.raises(RuntimeError, match="output padding must be smaller"):
        twin(torch.zeros(1, 4, 5, 5))
    assert tuple(twin(torch.zeros(1, 4, 5, 5), output_size=(7, 7)).shape) == (1, 6, 7, 7)


# ------------------------------------------------------------------- the fuzzer
@st.composite
def transpose_arguments(draw: Any) -> tuple[Any, ...]:
    """Mostly valid arguments, each part invalid now and then (about a third of all calls fail:
    a wrong sign, channels or groups that do not match, an output padding too large, an output
    size below 1)."""
    nd = draw(st.sampled_from((1, 2)))
    groups = 0 if draw(st.integers(0, 14)) == 14 else draw(st.sampled_from((1, 2, 3, 1)))
    c_in = max(groups, 1) * draw(st.integers(1, 2))
    if draw(st.integers(0, 9)) == 9:
        c_in = draw(st.integers(1, 4))  # may not divide by groups
    c_out_g = draw(st.integers(1, 3))
    input_channels = c_in if draw(st.integers(0, 9)) < 9 else draw(st.integers(1, 4))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    sizes = tuple(draw(st.integers(1, 5)) for _ in range(nd))

    def ints(low: int, high: int, invalid: int) -> Any:
        def one() -> int:
            return invalid if draw(st.integers(0, 14)) == 14 else draw(st.integers(low, high))

        return one() if draw(st.booleans()) else tuple(one() for _ in range(nd))

    bias = draw(st.sampled_from((None, "right", "right", "right", "wrong")))
    return (nd, (2, input_channels, *sizes), (c_in, c_out_g, *kernel), bias, ints(1, 3, 0),
            ints(0, 2, -1), ints(0, 2, -1), groups, ints(1, 3, 0), draw(st.integers(0, 2**16)))


@settings(max_examples=120, **HYPOTHESIS)
@given(args=transpose_arguments())
def test_conv_transpose_raises_exactly_when_torch_raises(args) -> None:
    nd, x_shape, w_shape, bias, stride, padding, output_padding, groups, dilation, seed = args
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    c_out = w_shape[1] * max(groups, 1)
    b = None if bias is None else rng.standard_normal(c_out + (bias == "wrong"))
    call_args = (stride, padding, output_padding, groups, dilation)
    theirs = TF.conv_transpose1d if nd == 1 else TF.conv_transpose2d
    ours = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    try:
        expected, torch_error = theirs(torch.tensor(x), torch.tensor(w),
                                       None if b is None else torch.tensor(b), *call_args), None
    except Exception as error:  # noqa: BLE001  (the outcome is what is compared)
        expected, torch_error = None, error
    try:
        got, cg_error = ours(cg.tensor(x), cg.tensor(w), None if b is None else cg.tensor(b),
                             *call_args), None
    except Exception as error:  # noqa: BLE001
        got, cg_error = None, error
    if cg_error is not None:
        assert isinstance(cg_error, ConvgradError), f"not a convgrad error: {cg_error!r}"
    assert (cg_error is None) == (torch_error is None), (
        f"torch raised {torch_error!r}, convgrad raised {cg_error!r}"
    )
    if cg_error is None:
        np.testing.assert_allclose(got.data, expected.numpy(), rtol=1e-10, atol=1e-10)
