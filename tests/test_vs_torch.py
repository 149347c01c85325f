"""convgrad against PyTorch: forward values and every gradient, on generated shapes and arguments.

Every check goes through :func:`torch_oracle.helper_test_op`, which compares shape, dtype and
values of each output and the gradient of each input under a random upstream gradient; float64
is compared at 1e-10, float32 at loose tolerances.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convgrad as cg
import convgrad.nn.functional as F
from convgrad.kernels import conv as conv_functional
from torch_oracle import helper_test_op, to_numpy, torch_pad_same

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
FLOATS = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]
HYPOTHESIS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


# ------------------------------------------------------------------------------- convolution
class ConvCase(NamedTuple):
    """One generated convolution: shapes and the arguments as they are passed to both libraries."""

    nd: int
    batch: int | None  # None: unbatched input
    c_in: int
    c_out: int
    groups: int
    sizes: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Any  # int, tuple, 'valid' or 'same'
    stride_arg: Any  # int or tuple, as passed
    dilation_arg: Any
    bias: bool
    seed: int

    def shapes(self) -> list[tuple[int, ...]]:
        x = (self.c_in, *self.sizes) if self.batch is None else (self.batch, self.c_in, *self.sizes)
        shapes = [x, (self.c_out, self.c_in // self.groups, *self.kernel)]
        return shapes + [(self.c_out,)] if self.bias else shapes


def _int_or_tuple(draw: Any, values: tuple[int, ...]) -> Any:
    """Pass a tuple of equal values sometimes as the int, as users do."""
    if len(set(values)) == 1 and draw(st.booleans()):
        return values[0]
    return values


@st.composite
def conv_cases(draw: Any, nd: int) -> ConvCase:
    """Valid convolutions only: the dilated kernel never exceeds the padded input."""
    groups = draw(st.sampled_from((1, 2, 3)))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    batch = draw(st.sampled_from((None, 1, 2, 3)))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    kind = draw(st.sampled_from(("int", "tuple", "valid", "same")))
    if kind == "int":
        padding: Any = draw(st.integers(0, 3))
        pads = (padding,) * nd
    elif kind == "tuple":
        pads = padding = tuple(draw(st.integers(0, 3)) for _ in range(nd))
    else:
        padding, pads = kind, (0,) * nd  # 'same' pads at least enough for the kernel
    sizes = []
    for k, d, p in zip(kernel, dilation, pads, strict=True):
        low = 1 if kind == "same" else max(1, d * (k - 1) + 1 - 2 * p)
        sizes.append(draw(st.integers(low, low + 6)))
    return ConvCase(
        nd, batch, c_in, c_out, groups, tuple(sizes), kernel, stride, dilation, padding,
        _int_or_tuple(draw, stride), _int_or_tuple(draw, dilation), draw(st.booleans()),
        draw(st.integers(0, 2**16)),
    )


def torch_conv(case: ConvCase):
    """The torch expression for case; 'same' with stride > 1 pads explicitly as TensorFlow does."""
    conv = TF.conv1d if case.nd == 1 else TF.conv2d

    def run(x, w, b=None):
        if case.padding == "same" and any(s > 1 for s in case.stride):
            x = torch_pad_same(x, case.kernel, case.stride, case.dilation)
            return conv(x, w, b, case.stride_arg, 0, case.dilation_arg, case.groups)
        return conv(x, w, b, case.stride_arg, case.padding, case.dilation_arg, case.groups)

    return run


def convgrad_conv(case: ConvCase):
    conv = F.conv1d if case.nd == 1 else F.conv2d
    return lambda x, w, b=None: conv(
        x, w, b, case.stride_arg, case.padding, case.dilation_arg, case.groups
    )


def check_conv(case: ConvCase, dtype: Any) -> None:
    helper_test_op(
        case.shapes(), torch_conv(case), convgrad_conv(case), dtype=dtype, seed=case.seed
    )


@settings(max_examples=50, **HYPOTHESIS)
@given(case=conv_cases(nd=2))
def test_conv2d_forward_dx_dw_db_match_torch_float64(case: ConvCase) -> None:
    check_conv(case, np.float64)


@settings(max_examples=20, **HYPOTHESIS)
@given(case=conv_cases(nd=2))
def test_conv2d_forward_dx_dw_db_match_torch_float32(case: ConvCase) -> None:
    check_conv(case, np.float32)


@settings(max_examples=40, **HYPOTHESIS)
@given(case=conv_cases(nd=1))
def test_conv1d_forward_dx_dw_db_match_torch_float64(case: ConvCase) -> None:
    check_conv(case, np.float64)


@settings(max_examples=15, **HYPOTHESIS)
@given(case=conv_cases(nd=1))
def test_conv1d_forward_dx_dw_db_match_torch_float32(case: ConvCase) -> None:
    check_conv(case, np.float32)


@settings(max_examples=30, **HYPOTHESIS)
@given(case=conv_cases(nd=2), limit=st.sampled_from((1, 400, 2000)))
def test_conv2d_sliced_over_the_batch_under_a_patch_memory_limit_matches_torch(
    case: ConvCase, limit: int
) -> None:
    # large batches build their patch matrix a few images at a time; a tiny limit forces
    # that path (one image, or a few, per slice) on small shapes
    case = case._replace(batch=3 if case.batch is None else max(case.batch, 2))
    with mock.patch.object(conv_functional, "PATCH_BYTES_LIMIT", limit):
        check_conv(case, np.float64)


def _case(nd=2, batch=2, c_in=2, c_out=3, groups=1, sizes=(7, 6), kernel=(3, 3), stride=(1, 1),
          dilation=(1, 1), padding=0, bias=True) -> ConvCase:
    return ConvCase(nd, batch, c_in, c_out, groups, sizes, kernel, stride, dilation, padding,
                    stride, dilation, bias, 0)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(_case(c_in=1, c_out=4, sizes=(12, 12), kernel=(5, 5), padding="same"),
                     id="deep-mnist-conv1-same-5x5"),
        pytest.param(_case(kernel=(2, 4), padding="same"), id="same-even-kernels"),
        pytest.param(_case(kernel=(2, 3), dilation=(3, 2), padding="same"),
                     id="same-even-kernel-dilated"),
        pytest.param(_case(kernel=(2, 3), stride=(2, 3), padding="same"),
                     id="same-stride-2-3-tensorflow"),
        pytest.param(_case(kernel=(4, 1), stride=(3, 2), dilation=(2, 1), padding="same"),
                     id="same-strided-dilated-tensorflow"),
        pytest.param(_case(sizes=(8, 9), kernel=(3, 2), stride=(3, 2), padding=(1, 2)),
                     id="sizes-not-divisible-by-stride"),
        pytest.param(_case(c_in=1, c_out=6, sizes=(6, 6)), id="input-grad-route-col2im"),
        pytest.param(_case(c_in=6, c_out=1, sizes=(6, 6), padding=1),
                     id="input-grad-route-full-correlation"),
        pytest.param(_case(c_in=6, c_out=6, groups=3, sizes=(5, 7), padding=(2, 0)),
                     id="groups-3"),
        pytest.param(_case(c_in=4, c_out=4, groups=4, bias=False), id="depthwise-no-bias"),
        pytest.param(_case(batch=None, padding="valid"), id="unbatched-valid"),
        pytest.param(_case(sizes=(3, 3), kernel=(3, 3), padding=0), id="kernel-equals-input"),
        pytest.param(_case(nd=1, sizes=(9,), kernel=(4,), stride=(2,), dilation=(2,),
                           padding="same"), id="conv1d-same-strided-dilated-even"),
    ],
)
@pytest.mark.parametrize("dtype", FLOATS)
def test_conv_named_configurations_match_torch(case: ConvCase, dtype: Any) -> None:
    check_conv(case, dtype)


def test_conv2d_same_with_stride_1_equals_torch_padding_same_directly() -> None:
    for kernel, dilation in [((2, 4), (1, 1)), ((3, 2), (2, 3)), ((4, 4), (2, 2))]:
        helper_test_op(
            [(2, 3, 7, 8), (4, 3, *kernel), (4,)],
            lambda x, w, b, d=dilation: TF.conv2d(x, w, b, padding="same", dilation=d),
            lambda x, w, b, d=dilation: F.conv2d(x, w, b, padding="same", dilation=d),
        )


# ------------------------------------------------------------------------------- pooling
class PoolCase(NamedTuple):
    nd: int
    shape: tuple[int, ...]
    kernel: Any
    stride: Any  # None: defaults to the kernel
    padding: Any
    seed: int


@st.composite
def pool_cases(draw: Any, nd: int) -> PoolCase:
    """Valid pools only: padding at most half the kernel, kernel within the padded input."""
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 3)] * nd)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    sizes = []
    for k, p in zip(kernel, padding, strict=True):
        low = max(1, k - 2 * p)
        sizes.append(draw(st.integers(low, low + 6)))
    lead = draw(st.sampled_from(((2,), (1, 3), (2, 2), (3, 1))))
    return PoolCase(
        nd, (*lead, *sizes), _int_or_tuple(draw, kernel),
        None if stride is None else _int_or_tuple(draw, stride), _int_or_tuple(draw, padding),
        draw(st.integers(0, 2**16)),
    )


POOLS = {
    ("max", 1): (TF.max_pool1d, F.max_pool1d),
    ("max", 2): (TF.max_pool2d, F.max_pool2d),
    ("avg", 1): (TF.avg_pool1d, F.avg_pool1d),
    ("avg", 2): (TF.avg_pool2d, F.avg_pool2d),
}


def check_pool(kind: str, case: PoolCase, dtype: Any = np.float64, ties: bool = False) -> None:
    torch_pool, cg_pool = POOLS[kind, case.nd]
    args = (case.kernel, case.stride, case.padding)
    if ties:
        # values from {0, 1, 2}: most windows hold several maxima; integer data and an integer
        # upstream gradient make every sum exact, so the comparison is bitwise
        data = np.random.default_rng(case.seed).integers(0, 3, size=case.shape).astype(dtype)
        helper_test_op([data], lambda x: torch_pool(x, *args), lambda x: cg_pool(x, *args),
                       dtype=dtype, seed=case.seed, integer_grad=True, exact=True)
    else:
        helper_test_op([case.shape], lambda x: torch_pool(x, *args), lambda x: cg_pool(x, *args),
                       dtype=dtype, seed=case.seed)


@settings(max_examples=30, **HYPOTHESIS)
@given(case=pool_cases(nd=2), kind=st.sampled_from(("max", "avg")))
def test_pool2d_forward_and_gradient_match_torch(case: PoolCase, kind: str) -> None:
    check_pool(kind, case)


@settings(max_examples=25, **HYPOTHESIS)
@given(case=pool_cases(nd=1), kind=st.sampled_from(("max", "avg")))
def test_pool1d_forward_and_gradient_match_torch(case: PoolCase, kind: str) -> None:
    check_pool(kind, case)


@settings(max_examples=30, **HYPOTHESIS)
@given(case=st.one_of(pool_cases(nd=1), pool_cases(nd=2)))
def test_max_pool_ties_send_the_gradient_to_the_first_maximum_like_torch(case: PoolCase) -> None:
    check_pool("max", case, ties=True)


@pytest.mark.parametrize(
    "kind, case",
    [
        ("max", PoolCase(2, (2, 3, 8, 8), 2, None, 0, 1)),
        ("max", PoolCase(2, (2, 3, 7, 9), (3, 2), (2, 1), (1, 1), 2)),
        ("avg", PoolCase(2, (2, 3, 7, 7), 2, None, 0, 3)),
        ("avg", PoolCase(2, (1, 2, 6, 5), 3, 2, 1, 4)),
        ("max", PoolCase(1, (2, 3, 11), 3, None, 1, 5)),
        ("avg", PoolCase(1, (4, 10), 4, 3, 2, 6)),
    ],
    ids=["max2d-tiling", "max2d-overlap-padded", "avg2d-tiling-floor", "avg2d-padded",
         "max1d-padded", "avg1d-unbatched"],
)
@pytest.mark.parametrize("dtype", FLOATS)
def test_pool_named_configurations_match_torch(kind: str, case: PoolCase, dtype: Any) -> None:
    check_pool(kind, case, dtype)


# ------------------------------------------------------------------------------- activations
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    "name, torch_fn, cg_fn",
    [
        ("relu", torch.relu, F.relu),
        ("sigmoid", torch.sigmoid, F.sigmoid),
        ("tanh", torch.tanh, F.tanh),
        ("relu-method", lambda x: x.relu(), lambda x: x.relu()),
        ("sigmoid-method", lambda x: x.sigmoid(), lambda x: x.sigmoid()),
        ("tanh-method", lambda x: x.tanh(), lambda x: x.tanh()),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_elementwise_activation_matches_torch(name, torch_fn, cg_fn, dtype) -> None:
    helper_test_op([(3, 4, 5)], torch_fn, cg_fn, dtype=dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_sigmoid_and_tanh_of_large_inputs_are_finite_and_match_torch(dtype) -> None:
    extremes = np.array([-1e4, -1000.0, -100.0, -88.0, -30.0, 0.0, 30.0, 88.0, 100.0, 1000.0,
                         1e4], dtype=dtype)
    for torch_fn, cg_fn in [(torch.sigmoid, F.sigmoid), (torch.tanh, F.tanh)]:
        with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow either
            cg_inputs, _ = helper_test_op([extremes], torch_fn, cg_fn, dtype=dtype)
        assert np.isfinite(to_numpy(cg_inputs[0].grad)).all()
    out = F.sigmoid(cg.tensor(extremes)).numpy()
    assert np.isfinite(out).all() and out[0] == 0.0 and out[-1] == 1.0


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("dim", [0, 1, -1, 2])
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_and_log_softmax_along_each_dim_match_torch(log, dim, dtype) -> None:
    torch_fn = TF.log_softmax if log else TF.softmax
    cg_fn = F.log_softmax if log else F.softmax
    helper_test_op([(2, 3, 4)], lambda x: torch_fn(x, dim=dim), lambda x: cg_fn(x, dim=dim),
                   dtype=dtype)


def test_log_softmax_of_extreme_logits_is_stable_like_torch() -> None:
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [500.0, 1000.0, 1000.0]])
    for dtype in (np.float64, np.float32):
        cg_inputs, _ = helper_test_op([logits], lambda x: TF.log_softmax(x, 1),
                                      lambda x: F.log_softmax(x, 1), dtype=dtype)
        assert np.isfinite(to_numpy(cg_inputs[0].grad)).all()


# ------------------------------------------------------------------------------- linear
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("x_shape", [(5,), (4, 5), (2, 3, 5), (2, 1, 3, 5)],
                         ids=["1d", "2d", "3d", "4d"])
def test_linear_with_leading_dims_matches_torch(x_shape, bias, dtype) -> None:
    shapes = [x_shape, (6, 5)] + ([(6,)] if bias else [])
    helper_test_op(shapes, TF.linear, F.linear, dtype=dtype)


# ------------------------------------------------------------------------------- dropout
def test_dropout_with_p_zero_or_in_eval_mode_is_the_identity_like_torch() -> None:
    for p, training in [(0.0, True), (0.5, False), (0.9, False), (1.0, False)]:
        helper_test_op([(4, 5)], lambda x, p=p, t=training: TF.dropout(x, p, t),
                       lambda x, p=p, t=training: F.dropout(x, p, t))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("dtype", FLOATS)
def test_dropout_drops_a_fraction_p_and_scales_survivors_by_one_over_one_minus_p(p, dtype):
    cg.manual_seed(1234)
    x = cg.tensor(np.ones((200, 500), dtype=dtype), requires_grad=True)
    out = F.dropout(x, p, training=True)
    values = out.detach().numpy()
    dropped = values == 0
    n = values.size
    # binomial: 6 standard deviations of the dropped fraction
    assert abs(dropped.mean() - p) < 6 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(values[~dropped], 1 / (1 - p), rtol=1e-6)
    assert out.dtype == dtype
    # torch's dropout keeps the survivors at the same value
    torch_out = TF.dropout(torch.ones(200, 500, dtype=torch.from_numpy(values).dtype), p)
    np.testing.assert_allclose(torch_out[torch_out != 0].numpy(), values[~dropped][0], rtol=1e-6)
    upstream = np.random.default_rng(0).standard_normal(values.shape).astype(dtype)
    out.backward(upstream)
    mask_over_keep = (~dropped).astype(dtype) / dtype(1 - p)
    np.testing.assert_allclose(x.grad.numpy(), upstream * mask_over_keep, rtol=1e-6)


def test_dropout_with_p_one_in_training_zeroes_everything_like_torch() -> None:
    helper_test_op([(3, 4)], lambda x: TF.dropout(x, 1.0), lambda x: F.dropout(x, 1.0))


def test_dropout_mask_is_reproducible_from_manual_seed() -> None:
    x = cg.ones(50, 50)
    cg.manual_seed(7)
    first = F.dropout(x, 0.5).numpy()
    cg.manual_seed(7)
    second = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, second)


# ------------------------------------------------------------------------------- losses
TARGET = np.array([0, 3, 1, 4, 2, 3], dtype=np.int64)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_reductions_match_torch(reduction, dtype) -> None:
    helper_test_op(
        [(6, 5)],
        lambda x: TF.cross_entropy(x, torch.from_numpy(TARGET), reduction=reduction),
        lambda x: F.cross_entropy(x, cg.tensor(TARGET), reduction=reduction),
        dtype=dtype,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_cross_entropy_ignore_index_matches_torch(reduction, ignore_index) -> None:
    target = TARGET.copy()
    target[[1, 4]] = ignore_index  # rows 1 and 4 contribute nothing and get no gradient
    helper_test_op(
        [(6, 5)],
        lambda x: TF.cross_entropy(x, torch.from_numpy(target), reduction=reduction,
                                   ignore_index=ignore_index),
        lambda x: F.cross_entropy(x, target, reduction=reduction, ignore_index=ignore_index),
    )


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_of_extreme_logits_is_finite_and_matches_torch(reduction, dtype) -> None:
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4], [0.0, 0.0, 1e4]])
    target = np.array([1, 0, 2, 2])
    cg_inputs, _ = helper_test_op(
        [logits],
        lambda x: TF.cross_entropy(x, torch.from_numpy(target), reduction=reduction),
        lambda x: F.cross_entropy(x, target, reduction=reduction),
        dtype=dtype,
    )
    assert np.isfinite(to_numpy(cg_inputs[0].grad)).all()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_nll_loss_matches_torch(reduction, ignore_index, dtype) -> None:
    helper_test_op(
        [(6, 5)],
        lambda x: TF.nll_loss(TF.log_softmax(x, 1), torch.from_numpy(TARGET % 4),
                              reduction=reduction, ignore_index=ignore_index),
        lambda x: F.nll_loss(F.log_softmax(x, 1), TARGET % 4, reduction=reduction,
                             ignore_index=ignore_index),
        dtype=dtype,
    )


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_gradient_reaches_input_and_target_like_torch(reduction, dtype) -> None:
    helper_test_op([(3, 4), (3, 4)], lambda x, t: TF.mse_loss(x, t, reduction=reduction),
                   lambda x, t: F.mse_loss(x, t, reduction=reduction), dtype=dtype)


@pytest.mark.parametrize("start, end", [(0, -1), (1, -1), (1, 2), (2, 3), (-2, -1)])
def test_flatten_matches_torch(start, end) -> None:
    helper_test_op([(2, 3, 4, 5)], lambda x: torch.flatten(x, start, end),
                   lambda x: F.flatten(x, start, end))


# ------------------------------------------------------------------------------- tensor ops
BINARY = [
    ("add", lambda a, b: a + b, [(3, 4), (3, 4)], None),
    ("add-broadcast-col-row", lambda a, b: a + b, [(3, 1), (1, 4)], None),
    ("add-broadcast-rank", lambda a, b: a + b, [(2, 3, 4), (4,)], None),
    ("add-scalar-tensor", lambda a, b: a + b, [(), (3, 4)], None),
    ("sub-broadcast", lambda a, b: a - b, [(3, 1), (2, 1, 4)], None),
    ("mul-broadcast", lambda a, b: a * b, [(3, 1), (1, 4)], None),
    ("div-broadcast", lambda a, b: a / b, [(2, 3, 4), (3, 1)], (0.5, 2.0)),
    ("pow-tensor-exponent", lambda a, b: a**b, [(3, 4), (3, 4)], (0.5, 2.0)),
    ("matmul-1d-1d", lambda a, b: a @ b, [(3,), (3,)], None),
    ("matmul-2d-1d", lambda a, b: a @ b, [(4, 3), (3,)], None),
    ("matmul-1d-2d", lambda a, b: a @ b, [(3,), (3, 5)], None),
    ("matmul-2d-2d", lambda a, b: a @ b, [(4, 3), (3, 5)], None),
    ("matmul-batched-2d", lambda a, b: a @ b, [(2, 4, 3), (3, 5)], None),
    ("matmul-broadcast-batch", lambda a, b: a @ b, [(2, 1, 4, 3), (3, 3, 5)], None),
    ("matmul-1d-batched", lambda a, b: a @ b, [(3,), (2, 3, 5)], None),
    ("matmul-batched-1d", lambda a, b: a @ b, [(2, 4, 3), (3,)], None),
    ("matmul-method", lambda a, b: a.matmul(b), [(4, 3), (3, 2)], None),
    ("cat-dim0", lambda a, b: _lib(a).cat([a, b], 0), [(2, 3), (4, 3)], None),
    ("cat-dim-neg1", lambda a, b: _lib(a).cat([a, b, a], -1), [(2, 3), (2, 1)], None),
    ("stack-dim0", lambda a, b: _lib(a).stack([a, b], 0), [(2, 3), (2, 3)], None),
    ("stack-dim2", lambda a, b: _lib(a).stack([a, b, b], 2), [(2, 3), (2, 3)], None),
]

UNARY = [
    ("neg", lambda x: -x, (3, 4), None),
    ("add-python-scalar", lambda x: x + 1.5, (3, 4), None),
    ("radd-python-scalar", lambda x: 2 + x, (3, 4), None),
    ("rsub-python-scalar", lambda x: 2.0 - x, (3, 4), None),
    ("mul-python-scalar", lambda x: x * 3, (3, 4), None),
    ("rdiv-python-scalar", lambda x: 2.0 / x, (3, 4), (0.5, 2.0)),
    ("div-python-scalar", lambda x: x / 4, (3, 4), None),
    ("pow-2", lambda x: x**2, (3, 4), None),
    ("pow-3-negative-base", lambda x: x**3, (3, 4), None),
    ("pow-half", lambda x: x**0.5, (3, 4), (0.5, 2.0)),
    ("pow-minus-1.5", lambda x: x**-1.5, (3, 4), (0.5, 2.0)),
    ("rpow-scalar-base", lambda x: 2.0**x, (3, 4), None),
    ("exp", lambda x: x.exp(), (3, 4), None),
    ("log", lambda x: x.log(), (3, 4), (0.1, 3.0)),
    ("sqrt", lambda x: x.sqrt(), (3, 4), (0.1, 3.0)),
    ("abs", lambda x: x.abs(), (3, 4), None),
    ("sum-all", lambda x: x.sum(), (2, 3, 4), None),
    ("sum-dim0", lambda x: x.sum(0), (2, 3, 4), None),
    ("sum-dim-neg1-keepdim", lambda x: x.sum(-1, keepdim=True), (2, 3, 4), None),
    ("sum-dims-0-2", lambda x: x.sum((0, 2)), (2, 3, 4), None),
    ("mean-all", lambda x: x.mean(), (2, 3, 4), None),
    ("mean-dim1", lambda x: x.mean(1), (2, 3, 4), None),
    ("mean-dims-keepdim", lambda x: x.mean((1, 2), keepdim=True), (2, 3, 4), None),
    ("max-all", lambda x: x.max(), (2, 3, 4), None),
    ("max-dim1", lambda x: tuple(x.max(1)), (2, 3, 4), None),
    ("max-dim-neg1-keepdim", lambda x: tuple(x.max(-1, keepdim=True)), (2, 3, 4), None),
    ("max-values-attr", lambda x: x.max(dim=0).values, (2, 3, 4), None),
    ("max-indices-attr", lambda x: x.max(dim=2).indices * 1, (2, 3, 4), None),
    ("argmax-dim", lambda x: x.argmax(1), (2, 3, 4), None),
    ("reshape", lambda x: x.reshape(4, 6), (2, 3, 4), None),
    ("reshape-tuple-infer", lambda x: x.reshape((3, -1)), (2, 3, 4), None),
    ("view", lambda x: x.view(6, 4), (2, 3, 4), None),
    ("transpose", lambda x: x.transpose(0, 2), (2, 3, 4), None),
    ("transpose-negative", lambda x: x.transpose(-1, -2), (2, 3, 4), None),
    ("permute", lambda x: x.permute(2, 0, 1), (2, 3, 4), None),
    ("permute-tuple", lambda x: x.permute((1, 2, 0)), (2, 3, 4), None),
    ("T", lambda x: x.T, (3, 4), None),
    ("flatten", lambda x: x.flatten(), (2, 3, 4), None),
    ("flatten-1", lambda x: x.flatten(1), (2, 3, 4), None),
    ("unsqueeze-0", lambda x: x.unsqueeze(0), (2, 3), None),
    ("unsqueeze-neg1", lambda x: x.unsqueeze(-1), (2, 3), None),
    ("squeeze-all", lambda x: x.squeeze(), (2, 1, 3, 1), None),
    ("squeeze-dim", lambda x: x.squeeze(1), (2, 1, 3, 1), None),
    ("squeeze-non-unit-dim", lambda x: x.squeeze(0), (2, 1, 3, 1), None),
    ("index-int", lambda x: x[1], (3, 4, 5), None),
    ("index-negative-int", lambda x: x[-1, 2], (3, 4, 5), None),
    ("index-slices", lambda x: x[:, 1:3, ::2], (3, 4, 5), None),
    ("index-ellipsis", lambda x: x[..., 1], (3, 4, 5), None),
    ("index-none", lambda x: x[None, 0], (3, 4, 5), None),
    ("index-repeated-list", lambda x: x[[0, 2, 0, 0]], (3, 4, 5), None),
    ("index-repeated-column-list", lambda x: x[:, [1, 1, 3]], (3, 4, 5), None),
    ("index-two-arrays", lambda x: x[[0, 0, 2], [1, 1, 3]], (3, 4, 5), None),
    ("index-bool-mask", lambda x: x[x > 0], (3, 4, 5), None),
    ("chain", lambda x: ((x * 2).exp() / (1 + x.exp())).sum(1).log(), (3, 4), (0.1, 1.0)),
]


def _lib(t: Any) -> Any:
    return torch if isinstance(t, torch.Tensor) else cg


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name, fn, shapes, value_range", BINARY, ids=[b[0] for b in BINARY])
def test_binary_tensor_op_and_broadcast_gradients_match_torch(name, fn, shapes, value_range,
                                                             dtype) -> None:
    helper_test_op(shapes, fn, fn, dtype=dtype, value_range=value_range)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name, fn, shape, value_range", UNARY, ids=[u[0] for u in UNARY])
def test_unary_tensor_op_matches_torch(name, fn, shape, value_range, dtype) -> None:
    helper_test_op([shape], fn, fn, dtype=dtype, value_range=value_range)


def test_indexing_with_an_integer_tensor_accumulates_repeated_indices_like_torch() -> None:
    index = np.array([2, 0, 2, 2, 1])
    helper_test_op([(3, 4), index], lambda x, i: x[i], lambda x, i: x[i])


def test_max_with_ties_returns_first_index_and_gradient_like_torch() -> None:
    data = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 5.0, 5.0]])
    helper_test_op([data], lambda x: tuple(x.max(1)), lambda x: tuple(x.max(1)),
                   integer_grad=True, exact=True)
    # a full reduction shares the gradient evenly among the tied maxima (torch.max's rule)
    helper_test_op([data[:2]], lambda x: x.max(), lambda x: x.max())


def test_gradients_accumulate_over_two_backward_calls_like_torch() -> None:
    def twice(x, w):
        first = (x * w).sum()
        first.backward()
        return (x * w * w).sum()

    helper_test_op([(3, 4), (3, 4)], twice, twice)


# ------------------------------------------------------------------------------- retain_graph
RETAINED = {
    "conv2d": (lambda x: TF.conv2d(x, x[:2, :2, :2, :2]), lambda x: F.conv2d(x, x[:2, :2, :2, :2])),
    "max_pool2d": (lambda x: TF.max_pool2d(x, 2), lambda x: F.max_pool2d(x, 2)),
    "avg_pool2d": (lambda x: TF.avg_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2)),
    "linear": (lambda x: TF.linear(x, x[0, 0]), lambda x: F.linear(x, x[0, 0])),
    "cross_entropy": (lambda x: TF.cross_entropy(x[0, 0], torch.tensor([0, 1, 0, 1])),
                      lambda x: F.cross_entropy(x[0, 0], np.array([0, 1, 0, 1]))),
}


@pytest.mark.parametrize("name", list(RETAINED))
def test_backward_twice_with_retain_graph_doubles_the_gradient_like_torch(name: str) -> None:
    torch_fn, cg_fn = RETAINED[name]

    def backward_twice(fn):
        def run(x):
            out = fn(x)
            out.backward(out.detach() * 0 + 1, retain_graph=True)
            return out

        return run

    helper_test_op([(2, 2, 4, 4)], backward_twice(torch_fn), backward_twice(cg_fn))


# ------------------------------------------------------------------------------- modules
def _copy_torch_weights(cg_module: cg.nn.Module, torch_module: torch.nn.Module) -> None:
    cg_module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})


def _compare_parameter_grads(cg_module, torch_module, atol, rtol) -> None:
    cg_grads = {name: p.grad for name, p in cg_module.named_parameters()}
    torch_grads = {name: p.grad for name, p in torch_module.named_parameters()}
    assert cg_grads.keys() == torch_grads.keys()
    for name, grad in torch_grads.items():
        assert cg_grads[name] is not None, f"{name} got no gradient"
        np.testing.assert_allclose(to_numpy(cg_grads[name]), grad.numpy(), atol=atol, rtol=rtol,
                                   err_msg=f"gradient of {name}")


class TorchSharedTower(torch.nn.Module):
    """One conv + linear tower applied to both halves of the image, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.proj = torch.nn.Linear(3 * 6 * 4, 5)
        self.head = torch.nn.Linear(10, 4)

    def forward(self, x):
        halves = [x[..., :4], x[..., 4:]]
        feats = [self.proj(torch.relu(self.conv(h)).flatten(1)) for h in halves]
        return self.head(torch.cat(feats, dim=1))


class CgSharedTower(cg.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = cg.nn.Conv2d(2, 3, 3, padding=1)
        self.proj = cg.nn.Linear(3 * 6 * 4, 5)
        self.head = cg.nn.Linear(10, 4)

    def forward(self, x):
        halves = [x[..., :4], x[..., 4:]]
        feats = [self.proj(F.relu(self.conv(h)).flatten(1)) for h in halves]
        return self.head(cg.cat(feats, dim=1))


@pytest.mark.parametrize("dtype", FLOATS)
def test_shared_conv_and_linear_used_twice_accumulate_gradients_like_torch(dtype) -> None:
    torch.manual_seed(0)
    torch_model = TorchSharedTower()
    cg_model = CgSharedTower()
    if dtype == np.float64:
        torch_model.double()
        cg_model.double()
    _copy_torch_weights(cg_model, torch_model)
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 8)).astype(dtype)
    target = np.array([0, 3, 1])
    tx, cx = torch.tensor(x, requires_grad=True), cg.tensor(x, requires_grad=True)
    torch_loss = TF.cross_entropy(torch_model(tx), torch.from_numpy(target))
    cg_loss = F.cross_entropy(cg_model(cx), target)
    torch_loss.backward()
    cg_loss.backward()
    tol = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(cg_loss.item(), torch_loss.item(), rtol=tol)
    _compare_parameter_grads(cg_model, torch_model, atol=tol, rtol=tol * 10)
    np.testing.assert_allclose(cx.grad.numpy(), tx.grad.numpy(), atol=tol, rtol=tol * 10)
    assert len(list(cg_model.parameters())) == 6


def _small_cnns() -> tuple[torch.nn.Module, cg.nn.Module]:
    torch_model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, padding="same"), torch.nn.Tanh(), torch.nn.AvgPool2d(2),
        torch.nn.Dropout(0.5), torch.nn.Flatten(), torch.nn.Linear(6 * 3 * 3, 5),
    )
    cg_model = cg.nn.Sequential(
        cg.nn.Conv2d(1, 4, 3, padding=1), cg.nn.ReLU(), cg.nn.MaxPool2d(2),
        cg.nn.Conv2d(4, 6, 3, padding="same"), cg.nn.Tanh(), cg.nn.AvgPool2d(2),
        cg.nn.Dropout(0.5), cg.nn.Flatten(), cg.nn.Linear(6 * 3 * 3, 5),
    )
    return torch_model, cg_model


@pytest.mark.parametrize("dtype", FLOATS)
def test_small_cnn_with_torch_weights_gives_torch_loss_and_parameter_grads(dtype) -> None:
    torch.manual_seed(1)
    torch_model, cg_model = _small_cnns()
    if dtype == np.float64:
        torch_model.double()
        cg_model.double()
    _copy_torch_weights(cg_model, torch_model)
    torch_model.eval()  # dropout off in both
    cg_model.eval()
    x = np.random.default_rng(1).standard_normal((4, 1, 12, 12)).astype(dtype)
    target = np.array([0, 4, 2, 1])
    tx, cx = torch.tensor(x, requires_grad=True), cg.tensor(x, requires_grad=True)
    torch_loss = TF.cross_entropy(torch_model(tx), torch.from_numpy(target))
    cg_loss = F.cross_entropy(cg_model(cx), target)
    assert cg_loss.dtype == dtype
    torch_loss.backward()
    cg_loss.backward()
    tol = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(cg_loss.item(), torch_loss.item(), rtol=tol)
    _compare_parameter_grads(cg_model, torch_model, atol=tol, rtol=tol * 10)
    np.testing.assert_allclose(cx.grad.numpy(), tx.grad.numpy(), atol=tol, rtol=tol * 10)


def test_conv1d_module_with_tensorflow_same_padding_matches_padded_torch() -> None:
    torch.manual_seed(2)
    torch_conv1d = torch.nn.Conv1d(2, 3, 4, stride=2, dilation=2).double()
    cg_conv1d = cg.nn.Conv1d(2, 3, 4, stride=2, dilation=2, padding="same").double()
    _copy_torch_weights(cg_conv1d, torch_conv1d)
    helper_test_op(
        [(2, 2, 11)],
        lambda x: torch_conv1d(torch_pad_same(x, (4,), (2,), (2,))),
        lambda x: cg_conv1d(x),
    )
    np.testing.assert_allclose(cg_conv1d.weight.grad.numpy(), torch_conv1d.weight.grad.numpy(),
                               atol=1e-10, rtol=1e-10)


# ------------------------------------------------------------------------------- edge cases
def test_conv_and_linear_skip_gradients_that_nobody_asked_for_like_torch() -> None:
    for requires_grad in [(False, True, True), (True, False, False), (False, False, True)]:
        helper_test_op([(2, 3, 6, 5), (4, 3, 3, 2), (4,)],
                       lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1),
                       lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
                       requires_grad=requires_grad)
        helper_test_op([(2, 5), (3, 5), (3,)], TF.linear, F.linear, requires_grad=requires_grad)


def test_no_grad_outputs_do_not_require_grad_like_torch() -> None:
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5))
    w = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    with torch.no_grad():
        expected = TF.conv2d(torch.tensor(x, requires_grad=True), torch.tensor(w))
    with cg.no_grad():
        got = F.conv2d(cg.tensor(x, requires_grad=True), cg.tensor(w))
    assert got.requires_grad == expected.requires_grad is False
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-12)


def test_tensor_factory_dtypes_follow_torch() -> None:
    for data in [[1.0, 2.0], 3.5, [1, 2], np.zeros(2), np.zeros(2, dtype=np.float32),
                 np.arange(3), [True, False]]:
        assert cg.tensor(data).dtype == torch.tensor(data).numpy().dtype, repr(data)


INTEGER_ARITHMETIC = {
    "int-plus-float-scalar": lambda i: i + 1.5,
    "int-true-divide-int-scalar": lambda i: i / 2,
    "int-times-int-scalar": lambda i: i * 2,
    "float-scalar-minus-int": lambda i: 0.5 - i,
}


@pytest.mark.parametrize("name", list(INTEGER_ARITHMETIC))
def test_integer_tensor_arithmetic_gives_torch_dtype(name) -> None:
    fn = INTEGER_ARITHMETIC[name]
    # torch: an integer tensor combined with a float (or true division) gives the default
    # float dtype, float32, not NumPy's float64
    helper_test_op([np.array([1, 2, 3])], fn, fn)


@pytest.mark.parametrize("dtype", FLOATS)
def test_float_tensor_times_integer_tensor_keeps_the_float_dtype_like_torch(dtype) -> None:
    helper_test_op([(2, 3), np.array([[1, 2, 3], [4, 5, 6]])], lambda x, i: x * i,
                   lambda x, i: x * i, dtype=dtype)


POW_AT_ZERO = {
    # d/dx x**0 = 0 everywhere, also at x = 0 (0 * 0**-1 must not become NaN)
    "x-pow-0": ([np.array([0.0, 0.0, 1.5, -2.0, 0.0])], lambda x: x**0),
    # d/db a**b = a**b log a, taken as 0 at a = 0 for b >= 0 (torch's masked rule)
    "tensor-pow-tensor": (
        [np.array([0.0, 0.0, 1.5, 2.0, 0.0]), np.array([2.0, 0.0, 1.0, 3.0, 1.0])],
        lambda a, b: a**b,
    ),
    "zero-pow-x": ([np.array([1.0, 2.0, 0.5])], lambda x: 0.0**x),
}


@pytest.mark.parametrize("name", list(POW_AT_ZERO))
def test_pow_gradient_at_a_zero_base_is_zero_where_torch_defines_it(name) -> None:
    inputs, fn = POW_AT_ZERO[name]
    helper_test_op(inputs, fn, fn)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_propagates_nan_like_torch(kind) -> None:
    data = np.array([[[[1.0, np.nan, 0.0, 2.0], [3.0, 2.0, 1.0, 1.0]]]])
    torch_pool, cg_pool = POOLS[kind, 2]
    helper_test_op([data], lambda x: torch_pool(x, 2), lambda x: cg_pool(x, 2))


LAYERS = {
    "Conv2d": (lambda m: m.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                                  groups=2), (2, 4, 7, 8)),
    "Conv2d-same-no-bias": (lambda m: m.Conv2d(3, 2, 4, padding="same", bias=False), (2, 3, 6, 5)),
    "Conv1d": (lambda m: m.Conv1d(3, 6, 3, stride=2, padding=1, groups=3), (2, 3, 9)),
    "Conv1d-unbatched": (lambda m: m.Conv1d(2, 3, 2, dilation=2), (2, 9)),
    "Linear": (lambda m: m.Linear(5, 3), (2, 4, 5)),
    "Linear-no-bias": (lambda m: m.Linear(5, 3, bias=False), (4, 5)),
    "MaxPool2d": (lambda m: m.MaxPool2d(3, stride=2, padding=1), (2, 3, 7, 6)),
    "MaxPool1d": (lambda m: m.MaxPool1d(2), (2, 3, 9)),
    "AvgPool2d": (lambda m: m.AvgPool2d((2, 3), padding=(1, 1)), (2, 3, 7, 6)),
    "AvgPool1d": (lambda m: m.AvgPool1d(3, stride=1), (3, 8)),
    "Flatten": (lambda m: m.Flatten(), (2, 3, 4, 5)),
    "Flatten-2-3": (lambda m: m.Flatten(2, 3), (2, 3, 4, 5)),
    "ReLU": (lambda m: m.ReLU(), (3, 4)),
    "Sigmoid": (lambda m: m.Sigmoid(), (3, 4)),
    "Tanh": (lambda m: m.Tanh(), (3, 4)),
    "Identity": (lambda m: m.Identity(), (3, 4)),
    "Dropout-eval": (lambda m: m.Dropout(0.5).eval(), (3, 4)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_each_layer_with_torch_weights_matches_its_torch_module(name: str) -> None:
    build, shape = LAYERS[name]
    torch.manual_seed(3)
    torch_layer, cg_layer = build(torch.nn).double(), build(cg.nn).double()
    _copy_torch_weights(cg_layer, torch_layer)
    helper_test_op([shape], torch_layer, cg_layer)
    _compare_parameter_grads(cg_layer, torch_layer, atol=1e-10, rtol=1e-10)
