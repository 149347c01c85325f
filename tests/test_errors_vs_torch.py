"""Errors: convgrad refuses exactly the inputs torch refuses, with messages that say why.

Part one is tinygrad's fuzzer idea: generate convolution arguments, valid and invalid, and check
that convgrad raises (a ValueError/TypeError subclass from convgrad.errors, never a NumPy
traceback) exactly when torch raises. The one documented difference: convgrad accepts
padding='same' with stride > 1 (TensorFlow's definition), which torch refuses; there the oracle
is torch on the explicitly padded input. Part two checks the messages themselves.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convgrad as cg
import convgrad.nn.functional as F
from convgrad.errors import ArgumentError, ConvgradError, DtypeError, ShapeError
from torch_oracle import torch_pad_same

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
HYPOTHESIS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


# ------------------------------------------------------------------------------- the fuzzer
class ConvArguments(NamedTuple):
    nd: int
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    bias_shape: tuple[int, ...] | None
    stride: Any
    padding: Any
    dilation: Any
    groups: int
    seed: int


def _int_or_tuple(draw: Any, nd: int, low: int, high: int, wrong_length: bool = False) -> Any:
    if draw(st.booleans()):
        return draw(st.integers(low, high))
    length = nd + 1 if wrong_length and draw(st.integers(0, 9)) == 0 else nd
    return tuple(draw(st.integers(low, high)) for _ in range(length))


@st.composite
def conv_arguments(draw: Any) -> ConvArguments:
    """Mostly valid arguments, each part invalid now and then."""
    nd = draw(st.sampled_from((1, 2)))
    groups = draw(st.sampled_from((1, 1, 1, 2, 2, 3, 0, -1)))
    c_in = draw(st.integers(1, 4))
    c_out = draw(st.integers(1, 4))
    if groups > 0 and c_in % groups == 0 and draw(st.integers(0, 3)):
        c_in_per_group = c_in // groups  # consistent channels most of the time
    else:
        c_in_per_group = draw(st.integers(1, 4))
    kernel = tuple(draw(st.integers(1, 5)) for _ in range(nd))
    sizes = tuple(draw(st.integers(1, 7)) for _ in range(nd))
    batched = (2, c_in, *sizes)
    input_ndim = draw(st.sampled_from((nd + 2, nd + 2, nd + 2, nd + 1, nd, nd + 3)))
    input_shape = (1, *batched) if input_ndim == nd + 3 else batched[nd + 2 - input_ndim:]
    bias_shape = draw(st.sampled_from((None, (c_out,), (c_out,), (c_out + 1,))))
    stride = _int_or_tuple(draw, nd, -1, 3, wrong_length=True)
    padding = draw(st.one_of(st.sampled_from(("same", "valid")),
                             st.just(_int_or_tuple(draw, nd, -1, 3))))
    dilation = _int_or_tuple(draw, nd, 0, 3)
    return ConvArguments(nd, input_shape, (c_out, c_in_per_group, *kernel), bias_shape, stride,
                         padding, dilation, groups, draw(st.integers(0, 2**16)))


def _as_tuple(value: Any, nd: int) -> tuple[int, ...]:
    return (value,) * nd if isinstance(value, int) else tuple(value)


def _is_tensorflow_same(args: ConvArguments) -> bool:
    """'same' with a well-formed stride > 1: convgrad's extension beyond torch."""
    stride = _as_tuple(args.stride, args.nd)
    return (args.padding == "same" and len(stride) == args.nd and min(stride) >= 1
            and max(stride) > 1)


def run_torch(args: ConvArguments, arrays: list[np.ndarray | None]) -> Any:
    conv = TF.conv1d if args.nd == 1 else TF.conv2d
    x, w, b = (None if a is None else torch.tensor(a) for a in arrays)
    if _is_tensorflow_same(args):
        kernel = args.weight_shape[2:]
        x = torch_pad_same(x, kernel, _as_tuple(args.stride, args.nd),
                           _as_tuple(args.dilation, args.nd))
        return conv(x, w, b, args.stride, 0, args.dilation, args.groups)
    return conv(x, w, b, args.stride, args.padding, args.dilation, args.groups)


def run_convgrad(args: ConvArguments, arrays: list[np.ndarray | None]) -> Any:
    conv = F.conv1d if args.nd == 1 else F.conv2d
    x, w, b = (None if a is None else cg.tensor(a) for a in arrays)
    return conv(x, w, b, args.stride, args.padding, args.dilation, args.groups)


def outcome(fn, *fn_args) -> tuple[Any, Exception | None]:
    try:
        return fn(*fn_args), None
    except Exception as error:  # noqa: BLE001  (the outcome is what is compared)
        return None, error


@settings(max_examples=150, **HYPOTHESIS)
@given(args=conv_arguments())
def test_conv_raises_exactly_when_torch_raises(args: ConvArguments) -> None:
    rng = np.random.default_rng(args.seed)
    shapes = (args.input_shape, args.weight_shape, args.bias_shape)
    arrays = [None if s is None else rng.standard_normal(s) for s in shapes]
    expected, torch_error = outcome(run_torch, args, arrays)
    got, cg_error = outcome(run_convgrad, args, arrays)
    if cg_error is not None:
        assert isinstance(cg_error, ConvgradError), f"not a convgrad error: {cg_error!r}"
        assert isinstance(cg_error, ValueError | TypeError), repr(cg_error)
    assert (cg_error is None) == (torch_error is None), (
        f"torch raised {torch_error!r}, convgrad raised {cg_error!r}"
    )
    if cg_error is None:  # both computed something: the same thing
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-10, rtol=1e-10)


@settings(max_examples=60, **HYPOTHESIS)
@given(args=conv_arguments())
def test_conv_module_raises_exactly_when_torch_module_raises(args: ConvArguments) -> None:
    """Construction or call: the layer refuses an argument at one time or the other, like torch."""
    c_out, c_in_per_group, *kernel = args.weight_shape
    c_in = args.input_shape[-args.nd - 1] if len(args.input_shape) > args.nd else 1
    c_in = c_in if args.groups <= 0 else c_in_per_group * args.groups
    config = (c_in, c_out, tuple(kernel), args.stride, args.padding, args.dilation, args.groups,
              args.bias_shape is not None)
    x = np.random.default_rng(args.seed).standard_normal(args.input_shape).astype(np.float32)
    torch_layer = torch.nn.Conv1d if args.nd == 1 else torch.nn.Conv2d
    cg_layer = cg.nn.Conv1d if args.nd == 1 else cg.nn.Conv2d

    def torch_run():
        if _is_tensorflow_same(args):
            layer = torch_layer(*config[:4], 0, *config[5:])
            padded = torch_pad_same(torch.tensor(x), tuple(kernel),
                                    _as_tuple(args.stride, args.nd),
                                    _as_tuple(args.dilation, args.nd))
            return layer(padded)
        return torch_layer(*config)(torch.tensor(x))

    _, torch_error = outcome(torch_run)
    _, cg_error = outcome(lambda: cg_layer(*config)(cg.tensor(x)))
    if cg_error is not None:
        assert isinstance(cg_error, ConvgradError), f"not a convgrad error: {cg_error!r}"
        assert isinstance(cg_error, ValueError | TypeError), repr(cg_error)
    assert (cg_error is None) == (torch_error is None), (
        f"torch raised {torch_error!r}, convgrad raised {cg_error!r}"
    )


def test_same_padding_with_stride_2_is_accepted_although_torch_refuses() -> None:
    x, w = np.zeros((1, 1, 28, 28)), np.zeros((4, 1, 5, 5))
    with pytest.raises((ValueError, RuntimeError), match="strided"):
        TF.conv2d(torch.tensor(x), torch.tensor(w), stride=2, padding="same")
    assert F.conv2d(cg.tensor(x), cg.tensor(w), stride=2, padding="same").shape == (1, 4, 14, 14)
    layer = cg.nn.Conv2d(1, 4, 5, stride=2, padding="same")
    assert layer(cg.tensor(x, dtype=np.float32)).shape == (1, 4, 14, 14)


# ------------------------------------------------------------------------------- messages
MNIST_BATCH = np.zeros((8, 3, 28, 28), dtype=np.float32)


def test_conv2d_channel_mismatch_names_the_layer_expected_channels_and_received_shape() -> None:
    layer = cg.nn.Conv2d(1, 32, 5)
    pattern = (re.escape("Conv2d(1, 32, kernel_size=(5, 5)") + r".*expected input "
               + re.escape("(8, 3, 28, 28)") + r" to have 1 channels, but got 3 channels")
    with pytest.raises(ShapeError, match=pattern):
        layer(cg.tensor(MNIST_BATCH))
    assert issubclass(ShapeError, ValueError)


def test_conv1d_channel_mismatch_names_the_layer() -> None:
    with pytest.raises(ShapeError, match=re.escape("Conv1d(2, 4, kernel_size=(3,)") +
                       r".*to have 2 channels, but got 5 channels"):
        cg.nn.Conv1d(2, 4, 3)(cg.zeros(1, 5, 10))


def test_linear_with_wrong_in_features_names_the_layer_and_the_shapes() -> None:
    layer = cg.nn.Linear(3136, 1024)
    pattern = (re.escape("Linear(in_features=3136, out_features=1024, bias=True)")
               + r".*last dimension 3136 \(in_features\).*" + re.escape("(8, 3, 28, 28)"))
    with pytest.raises(ShapeError, match=pattern):
        layer(cg.tensor(MNIST_BATCH))


def test_conv2d_with_zero_out_channels_asks_for_a_strictly_positive_value() -> None:
    with pytest.raises(ArgumentError,
                       match="expected a strictly positive out_channels, received out_channels=0"):
        cg.nn.Conv2d(1, 0, 3)


@pytest.mark.parametrize("name", ["in_channels", "out_channels", "groups"])
def test_conv2d_with_a_negative_count_names_the_argument(name: str) -> None:
    kwargs = {"in_channels": 2, "out_channels": 2, "kernel_size": 3, name: -1}
    with pytest.raises(ArgumentError, match=f"strictly positive {name}, received {name}=-1"):
        cg.nn.Conv2d(**kwargs)


def test_stride_zero_is_refused_by_the_layer_and_by_the_function() -> None:
    with pytest.raises(ArgumentError, match=r"Conv2d: expected a strictly positive stride, "
                                            r"received stride=\(0, 0\)"):
        cg.nn.Conv2d(1, 2, 3, stride=0)
    with pytest.raises(ArgumentError, match=r"conv2d: expected a strictly positive stride"):
        F.conv2d(cg.zeros(1, 1, 5, 5), cg.zeros(2, 1, 3, 3), stride=(1, 0))
    with pytest.raises(ArgumentError, match="strictly positive dilation"):
        F.conv1d(cg.zeros(1, 1, 5), cg.zeros(2, 1, 3), dilation=0)


def test_groups_not_dividing_the_channels_is_refused_with_both_numbers() -> None:
    in_message = r"in_channels \(3\) must be divisible by groups \(2\)"
    out_message = r"out_channels \(3\) must be divisible by groups \(2\)"
    with pytest.raises(ArgumentError, match=in_message):
        cg.nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ArgumentError, match=out_message):
        cg.nn.Conv2d(4, 3, 3, groups=2)
    with pytest.raises(ArgumentError, match=out_message):
        F.conv2d(cg.zeros(1, 4, 5, 5), cg.zeros(3, 2, 3, 3), groups=2)


def test_negative_padding_and_unknown_padding_strings_are_refused() -> None:
    with pytest.raises(ArgumentError, match="expected a non-negative padding"):
        cg.nn.Conv2d(1, 2, 3, padding=-1)
    with pytest.raises(ArgumentError, match="expected a non-negative padding"):
        F.conv2d(cg.zeros(1, 1, 5, 5), cg.zeros(2, 1, 3, 3), padding=(1, -1))
    with pytest.raises(ArgumentError, match="invalid padding string 'full'"):
        cg.nn.Conv2d(1, 2, 3, padding="full")


def test_kernel_larger_than_the_padded_input_says_both_sizes() -> None:
    with pytest.raises(ArgumentError, match=r"kernel size \(5, 5\) \(dilated extent 5\) is larger "
                                            r"than the padded input size 4"):
        cg.nn.Conv2d(1, 2, 5)(cg.zeros(1, 1, 4, 9))
    with pytest.raises(ArgumentError, match=r"dilated extent 7\) is larger than the padded input "
                                            r"size 6"):
        F.conv1d(cg.zeros(1, 1, 4), cg.zeros(1, 1, 4), padding=1, dilation=2)


def test_conv_input_of_the_wrong_rank_names_the_expected_layout() -> None:
    with pytest.raises(ShapeError, match=re.escape("expected a 4-D input (N, C_in, H, W) (or 3-D "
                                                   "unbatched), received shape (28, 28)")):
        cg.nn.Conv2d(1, 2, 3)(cg.zeros(28, 28))
    with pytest.raises(ShapeError, match=re.escape("expected a 3-D input (N, C_in, L)")):
        F.conv1d(cg.zeros(1, 1, 1, 5), cg.zeros(1, 1, 3))


def test_conv_bias_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ShapeError, match=r"expected bias of shape \(2,\), received \(3,\)"):
        F.conv2d(cg.zeros(1, 1, 5, 5), cg.zeros(2, 1, 3, 3), cg.zeros(3))


def test_pool_padding_over_half_the_kernel_is_refused() -> None:
    with pytest.raises(ArgumentError, match="at most half of the kernel size"):
        cg.nn.MaxPool2d(2, padding=2)
    with pytest.raises(ArgumentError, match="at most half of the kernel size"):
        F.avg_pool1d(cg.zeros(1, 1, 8), 3, padding=2)


def test_cross_entropy_with_float_targets_is_a_dtype_error() -> None:
    logits = cg.zeros(4, 3)
    with pytest.raises(DtypeError, match=r"cross_entropy: expected integer class-index targets "
                                         r"\(int64\), received dtype float32"):
        F.cross_entropy(logits, cg.tensor([0.0, 1.0, 2.0, 1.0]))
    assert issubclass(DtypeError, TypeError)


@pytest.mark.parametrize("bad", [3, 7, -1])
def test_cross_entropy_with_an_out_of_range_class_names_it(bad: int) -> None:
    with pytest.raises(ArgumentError, match=f"target {bad} is out of bounds for 3 classes"):
        F.cross_entropy(cg.zeros(4, 3), np.array([0, bad, 1, 2]))
    with pytest.raises(IndexError):  # torch refuses the same target
        TF.cross_entropy(torch.zeros(4, 3), torch.tensor([0, bad, 1, 2]))


def test_nll_loss_out_of_range_and_shape_mismatch_are_refused() -> None:
    with pytest.raises(ArgumentError, match="nll_loss: target 5 is out of bounds for 3 classes"):
        F.nll_loss(cg.zeros(2, 3), np.array([5, 0]))
    with pytest.raises(ShapeError, match=r"expected input \(N, C\) and target \(N,\), received "
                                         r"input \(2, 3\) and target \(3,\)"):
        F.nll_loss(cg.zeros(2, 3), np.array([0, 1, 2]))


@pytest.mark.parametrize("p", [1.5, -0.1])
def test_dropout_probability_outside_zero_one_is_refused(p: float) -> None:
    with pytest.raises(ArgumentError, match=f"between 0 and 1, but got {p}"):
        cg.nn.Dropout(p=p)
    with pytest.raises(ArgumentError, match=f"between 0 and 1, but got {p}"):
        F.dropout(cg.zeros(3), p)
    with pytest.raises(ValueError, match="between 0 and 1"):  # torch's wording
        torch.nn.Dropout(p=p)


def test_mse_loss_shape_mismatch_and_unknown_reduction_are_refused() -> None:
    with pytest.raises(ShapeError, match=r"input \(2, 3\) and target \(3, 2\)"):
        F.mse_loss(cg.zeros(2, 3), cg.zeros(3, 2))
    with pytest.raises(ArgumentError, match="reduction must be one of"):
        F.mse_loss(cg.zeros(2), cg.zeros(2), reduction="average")
