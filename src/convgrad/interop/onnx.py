"""Export a convgrad module tree to ONNX, built with the ``onnx`` package's helpers.

:func:`export` walks the module tree (not a trace): each module class becomes ONNX node(s),
each parameter or buffer one initializer. A module reached twice (the lab's shared tower) emits
its nodes twice over the *same* initializers. The walk also runs convgrad on ``example_input``
to know every intermediate shape, which fixes the explicit pads of TensorFlow-style 'same'
padding (asymmetric for even kernels or stride 2) and the windows of adaptive pooling; the
batch dimension stays symbolic (``dynamic_batch``). Dropout is the identity at inference and
emits nothing.

Module -> ONNX (opset >= 13):

======================  ============================================================
Conv1d/2d               Conv with explicit pads [begin..., end...]
ConvTranspose1d/2d      ConvTranspose (pads, output_padding, dilations, group)
Linear                  Gemm (transB=1) on 2-D input, MatMul + Add otherwise
MaxPool/AvgPool         MaxPool / AveragePool (count_include_pad=1) with pads
AdaptiveAvg/MaxPool2d   Global*Pool, a fixed-window pool, or Slice + Reduce per cell
BatchNorm1d/2d (eval)   BatchNormalization with the running statistics
Flatten                 Flatten (start_dim=1, end_dim=-1) or Reshape
ReLU, Sigmoid, Tanh     Relu, Sigmoid, Tanh; LeakyReLU, ELU: LeakyRelu, Elu
GELU                    Erf (exact) or Tanh (approximate) formula; Gelu from opset 20
Softmax, LogSoftmax     Softmax, LogSoftmax (axis = dim)
SplitShared             the stem (if any), Slice per part, the tower per part, Flatten,
                        Concat, head
SumDistribution         Slice + LogSoftmax per digit, Unsqueeze + Add (outer sum),
                        Reshape, Concat a -inf column (ConstantOfShape), Gather with the
                        fixed index table, then log-sum-exp over the last axis as
                        ReduceMax, Sub, Exp, ReduceSum, Log, Add
======================  ============================================================

SumDistribution's log-sum-exp is spelled out rather than one ReduceLogSumExp: onnxruntime
1.32's CPU ReduceLogSumExp does not shift a row that starts with -inf by its maximum, so
float32 exp underflows ([-inf, -100, -100] gives -99.290 instead of -99.307, and
[-inf, -104, -104] gives -inf instead of -103.307). Those are exactly the rows of the large
sums when the digits are confident. Shifting by the row's maximum first (as convgrad does)
keeps every sum exact and finite.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

import convgrad as cg
from convgrad import nn
from convgrad.autograd import Tensor
from convgrad.files import atomic_write
from convgrad.interop.common import InteropError, require
from convgrad.nn._args import resolve_padding

onnx = require("onnx", "convgrad.interop.onnx")
helper = onnx.helper
numpy_helper = onnx.numpy_helper

MIN_OPSET = 13


class UnsupportedModuleError(InteropError):
    """A module the exporter has no ONNX translation for (names class and path)."""


def _tuple(value: Any, nd: int) -> tuple[int, ...]:
    if isinstance(value, tuple | list):
        return tuple(int(v) for v in value)
    return (int(value),) * nd


class _Graph:
    """Nodes and initializers being collected; values are tracked with their convgrad arrays."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: dict[int, str] = {}
        self._used: set[str] = set()
        self._counter = 0

    def fresh(self, base: str) -> str:
        self._counter += 1
        return f"{base}_{self._counter}"

    def node(self, op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        out = self.fresh(name)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attributes))
        return out

    def parameter(self, value: Any, name: str) -> str:
        """The initializer of a parameter/buffer, created once per distinct object."""
        key = id(value)
        if key not in self._names:
            array = np.asarray(value.data if isinstance(value, Tensor) else value)
            unique = name
            while unique in self._used:
                unique = self.fresh(name)
            self._used.add(unique)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), unique))
            self._names[key] = unique
        return self._names[key]

    def constant(self, array: np.ndarray, name: str) -> str:
        unique = self.fresh(name)
        self._used.add(unique)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), unique))
        return unique

    def reduce(self, op: str, x: str, axes: list[int], name: str) -> str:
        """ReduceMean/ReduceMax with keepdims; axes is an input from opset 18 on."""
        if self.opset >= 18:
            return self.node(op, [x, self.constant(np.array(axes, np.int64), "axes")], name,
                             keepdims=1)
        return self.node(op, [x], name, axes=axes, keepdims=1)


def _conv(g: _Graph, m: Any, x: str, value: np.ndarray, path: str) -> str:
    pads = resolve_padding(m.padding, value.shape[2:], m.kernel_size, m.stride, m.dilation,
                           type(m).__name__)
    inputs = [x, g.parameter(m.weight, f"{path}.weight")]
    if m.bias is not None:
        inputs.append(g.parameter(m.bias, f"{path}.bias"))
    return g.node(
        "Conv", inputs, path, kernel_shape=list(m.kernel_size), strides=list(m.stride),
        dilations=list(m.dilation), group=int(m.groups),
        pads=[p[0] for p in pads] + [p[1] for p in pads],
    )


def _conv_transpose(g: _Graph, m: Any, x: str, value: np.ndarray, path: str) -> str:
    nd = value.ndim - 2  # (N, C, L) or (N, C, H, W)
    padding = _tuple(m.padding, nd)
    inputs = [x, g.parameter(m.weight, f"{path}.weight")]
    if m.bias is not None:
        inputs.append(g.parameter(m.bias, f"{path}.bias"))
    return g.node(
        "ConvTranspose", inputs, path, kernel_shape=list(_tuple(m.kernel_size, nd)),
        strides=list(_tuple(m.stride, nd)), dilations=list(_tuple(m.dilation, nd)),
        group=int(m.groups), pads=list(padding) * 2,
        output_padding=list(_tuple(m.output_padding, nd)),
    )


def _linear(g: _Graph, m: Any, x: str, value: np.ndarray, path: str) -> str:
    weight = g.parameter(m.weight, f"{path}.weight")
    if value.ndim == 2:
        inputs = [x, weight] + ([g.parameter(m.bias, f"{path}.bias")] if m.bias is not None
                                else [])
        return g.node("Gemm", inputs, path, transB=1)
    transposed = g.node("Transpose", [weight], f"{path}.weight_t", perm=[1, 0])
    out = g.node("MatMul", [x, transposed], path)
    if m.bias is not None:
        out = g.node("Add", [out, g.parameter(m.bias, f"{path}.bias")], f"{path}.bias_add")
    return out


def _pool(g: _Graph, m: Any, x: str, value: np.ndarray, path: str) -> str:
    attributes = {"kernel_shape": list(m.kernel_size), "strides": list(m.stride),
                  "pads": list(m.padding) * 2}
    if type(m).__name__.startswith("Max"):
        return g.node("MaxPool", [x], path, **attributes)
    return g.node("AveragePool", [x], path, count_include_pad=1, **attributes)


def _adaptive(g: _Graph, m: Any, x: str, value: np.ndarray, path: str) -> str:
    is_max = type(m).__name__.startswith("AdaptiveMax")
    sizes = value.shape[2:]
    requested = _tuple(m.output_size, 2) if m.output_size is not None else sizes
    out_sizes = [s if o is None else int(o) for o, s in zip(requested, sizes, strict=True)]
    if all(o == 1 for o in out_sizes):
        return g.node("GlobalMaxPool" if is_max else "GlobalAveragePool", [x], path)
    if all(s % o == 0 for s, o in zip(sizes, out_sizes, strict=True)):
        kernel = [s // o for s, o in zip(sizes, out_sizes, strict=True)]
        op = "MaxPool" if is_max else "AveragePool"
        return g.node(op, [x], path, kernel_shape=kernel, strides=kernel)
    # windows start = floor(i * n / o), end = ceil((i + 1) * n / o), as in torch
    rows = []
    for i in range(out_sizes[0]):
        cells = []
        for j in range(out_sizes[1]):
            starts, ends = [], []
            for index, n, o in ((i, sizes[0], out_sizes[0]), (j, sizes[1], out_sizes[1])):
                starts.append(index * n // o)
                ends.append(-(-(index + 1) * n // o))
            window = g.node("Slice", [
                x, g.constant(np.array(starts, np.int64), "starts"),
                g.constant(np.array(ends, np.int64), "ends"),
                g.constant(np.array([2, 3], np.int64), "axes"),
            ], f"{path}.window")
            cells.append(g.reduce("ReduceMax" if is_max else "ReduceMean", window, [2, 3],
                                  f"{path}.cell"))
        rows.append(g.node("Concat", cells, f"{path}.row", axis=3))
    return g.node("Concat", rows, path, axis=2)


def _batch_norm(g: _Graph, m: Any, x: str, value: np.ndarray, path: str) -> str:
    channels = m.num_features
    dtype = value.dtype
    scale = (g.parameter(m.weight, f"{path}.weight") if m.affine
             else g.constant(np.ones(channels, dtype), f"{path}.weight"))
    bias = (g.parameter(m.bias, f"{path}.bias") if m.affine
            else g.constant(np.zeros(channels, dtype), f"{path}.bias"))
    if m.track_running_stats and getattr(m, "running_mean", None) is not None:
        mean = g.parameter(m.running_mean, f"{path}.running_mean")
        var = g.parameter(m.running_var, f"{path}.running_var")
        return g.node("BatchNormalization", [x, scale, bias, mean, var], path,
                      epsilon=float(m.eps))
    # no running statistics: eval mode normalises with the batch's own (biased) statistics
    axes = [0] + list(range(2, value.ndim))
    mean = g.reduce("ReduceMean", x, axes, f"{path}.mean")
    centred = g.node("Sub", [x, mean], f"{path}.centred")
    var = g.reduce("ReduceMean", g.node("Mul", [centred, centred], f"{path}.sq"), axes,
                   f"{path}.var")
    eps = g.constant(np.array(m.eps, dtype), f"{path}.eps")
    std = g.node("Sqrt", [g.node("Add", [var, eps], f"{path}.var_eps")], f"{path}.std")
    normed = g.node("Div", [centred, std], f"{path}.normed")
    shape = g.constant(np.array([channels] + [1] * (value.ndim - 2), np.int64), f"{path}.shape")
    scale = g.node("Reshape", [scale, shape], f"{path}.scale")
    bias = g.node("Reshape", [bias, shape], f"{path}.shift")
    return g.node("Add", [g.node("Mul", [normed, scale], f"{path}.scaled"), bias], path)


def _flatten(g: _Graph, m: Any, x: str, value: np.ndarray, path: str) -> str:
    ndim = value.ndim
    start, end = m.start_dim % ndim, m.end_dim % ndim
    if start == 1 and end == ndim - 1:
        return g.node("Flatten", [x], path, axis=1)
    shape = [0] * start + [-1] + list(value.shape[end + 1:])
    return g.node("Reshape", [x, g.constant(np.array(shape, np.int64), f"{path}.shape")], path)


def _gelu(g: _Graph, m: Any, x: str, value: np.ndarray, path: str) -> str:
    approximate = getattr(m, "approximate", "none")
    if g.opset >= 20:
        return g.node("Gelu", [x], path, approximate=approximate)
    dtype = value.dtype

    def const(v: float, name: str) -> str:
        return g.constant(np.array(v, dtype), f"{path}.{name}")

    if approximate == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = g.node("Mul", [g.node("Mul", [x, x], f"{path}.sq"), x], f"{path}.cube")
        inner = g.node("Add", [x, g.node("Mul", [cube, const(0.044715, "c")], f"{path}.cx3")],
                       f"{path}.inner")
        scaled = g.node("Mul", [inner, const(math.sqrt(2 / math.pi), "k")], f"{path}.scaled")
        gate = g.node("Tanh", [scaled], f"{path}.tanh")
    else:
        # 0.5 x (1 + erf(x / sqrt 2))
        gate = g.node("Erf", [g.node("Mul", [x, const(1 / math.sqrt(2), "k")], f"{path}.scaled")],
                      f"{path}.erf")
    one_plus = g.node("Add", [gate, const(1.0, "one")], f"{path}.one_plus")
    half_x = g.node("Mul", [x, const(0.5, "half")], f"{path}.half_x")
    return g.node("Mul", [half_x, one_plus], path)


def _simple(op: str, **attributes: Any) -> Any:
    return lambda g, m, x, value, path: g.node(op, [x], path, **attributes)


_EXPORTERS: dict[str, Any] = {
    "Conv1d": _conv,
    "Conv2d": _conv,
    "ConvTranspose1d": _conv_transpose,
    "ConvTranspose2d": _conv_transpose,
    "Linear": _linear,
    "MaxPool1d": _pool,
    "MaxPool2d": _pool,
    "AvgPool1d": _pool,
    "AvgPool2d": _pool,
    "AdaptiveAvgPool2d": _adaptive,
    "AdaptiveMaxPool2d": _adaptive,
    "BatchNorm1d": _batch_norm,
    "BatchNorm2d": _batch_norm,
    "Flatten": _flatten,
    "ReLU": _simple("Relu"),
    "Sigmoid": _simple("Sigmoid"),
    "Tanh": _simple("Tanh"),
    "GELU": _gelu,
    "LeakyReLU": lambda g, m, x, v, p: g.node("LeakyRelu", [x], p, alpha=float(m.negative_slope)),
    "ELU": lambda g, m, x, v, p: g.node("Elu", [x], p, alpha=float(m.alpha)),
    "Softmax": lambda g, m, x, v, p: g.node("Softmax", [x], p, axis=int(m.dim)),
    "LogSoftmax": lambda g, m, x, v, p: g.node("LogSoftmax", [x], p, axis=int(m.dim)),
    "Identity": None,  # pass-through
    "Dropout": None,   # the identity at inference
}


def _lab_classes() -> tuple[type | None, type | None]:
    """The lab's (SplitShared, SumDistribution), or None where the lab cannot be imported."""
    try:
        from convgrad.lab.models import SplitShared, SumDistribution
    except ImportError:  # pragma: no cover
        return None, None
    return SplitShared, SumDistribution


def _sum_distribution(g: _Graph, m: Any, x: str, value: np.ndarray, path: str) -> str:
    """log p(s) = log sum_t p1(t) p2(s - t) from (N, 2K) logits, as SumDistribution computes it.

    L = log_softmax(a)[:, :, None] + log_softmax(b)[:, None, :] flattened to (N, K*K), a -inf
    column appended (position K*K), G = L[:, index] (N, 2K - 1, K), and
    log p(s) = m_s + log sum_t exp(G[s, t] - m_s) with m_s = max_t G[s, t] (finite: every sum
    has at least one pair).
    """
    k = int(m.classes)
    dtype = value.dtype

    def const(array: Any, name: str) -> str:
        return g.constant(np.asarray(array), f"{path}.{name}")

    digits = []
    for d, (start, end) in enumerate(((0, k), (k, 2 * k))):
        logits = g.node("Slice", [
            x, const(np.array([start], np.int64), "starts"),
            const(np.array([end], np.int64), "ends"), const(np.array([1], np.int64), "axes"),
        ], f"{path}.digit{d}")
        digits.append(g.node("LogSoftmax", [logits], f"{path}.log_p{d}", axis=1))
    # Unsqueeze takes its axes as an input from opset 13 on (the exporter's minimum)
    first = g.node("Unsqueeze", [digits[0], const(np.array([2], np.int64), "axis2")],
                   f"{path}.first")  # (N, K, 1)
    second = g.node("Unsqueeze", [digits[1], const(np.array([1], np.int64), "axis1")],
                    f"{path}.second")  # (N, 1, K)
    outer = g.node("Reshape", [g.node("Add", [first, second], f"{path}.outer"),
                               const(np.array([0, k * k], np.int64), "flat")],
                   f"{path}.outer_flat")  # (N, K*K)
    # the (N, 1) -inf column, N taken from the input's shape (the batch stays symbolic)
    batch = g.node("Slice", [g.node("Shape", [x], f"{path}.shape"),
                             const(np.array([0], np.int64), "zero"),
                             const(np.array([1], np.int64), "one")], f"{path}.batch")
    pad_shape = g.node("Concat", [batch, const(np.array([1], np.int64), "one_column")],
                       f"{path}.pad_shape", axis=0)
    minus_inf = helper.make_tensor("value", _onnx_type(dtype), [1], [-np.inf])
    pad = g.node("ConstantOfShape", [pad_shape], f"{path}.pad", value=minus_inf)
    padded = g.node("Concat", [outer, pad], f"{path}.padded", axis=1)  # (N, K*K + 1)
    index = const(np.asarray(m.index, np.int64), "index")  # (2K - 1, K)
    terms = g.node("Gather", [padded, index], f"{path}.terms", axis=1)  # (N, 2K - 1, K)
    shift = g.reduce("ReduceMax", terms, [2], f"{path}.max")  # (N, 2K - 1, 1)
    exp = g.node("Exp", [g.node("Sub", [terms, shift], f"{path}.shifted")], f"{path}.exp")
    # ReduceSum takes its axes as an input from opset 13 on
    total = g.node("ReduceSum", [exp, const(np.array([2], np.int64), "axes")], f"{path}.sum",
                   keepdims=1)
    log_p = g.node("Add", [g.node("Log", [total], f"{path}.log"), shift], f"{path}.log_p")
    return g.node("Squeeze", [log_p, const(np.array([2], np.int64), "squeeze")], path)


def _walk(g: _Graph, module: nn.Module, x: str, value: Tensor, path: str) -> tuple[str, Tensor]:
    """Emit ``module`` applied to graph value ``x`` (whose convgrad value is ``value``)."""
    cls = type(module)
    name = cls.__name__
    prefix = f"{path}." if path else ""
    if cls is nn.Sequential:
        for key, child in module._modules.items():
            x, value = _walk(g, child, x, value, prefix + key)
        return x, value
    split_shared, sum_distribution = _lab_classes()
    if sum_distribution is not None and cls is sum_distribution:
        out_value = module(value)
        return _sum_distribution(g, module, x, value.data, path or "sum_distribution"), out_value
    if split_shared is not None and cls is split_shared:
        if module.stem is not None:
            x, value = _walk(g, module.stem, x, value, prefix + "stem")
        dim = split_shared._AXES[module.axis]
        size = value.shape[dim] // module.parts
        features, feature_values = [], []
        for k, part in enumerate(module.split(value)):
            sliced = g.node("Slice", [
                x, g.constant(np.array([k * size], np.int64), "starts"),
                g.constant(np.array([(k + 1) * size], np.int64), "ends"),
                g.constant(np.array([dim], np.int64), "axes"),
            ], f"{prefix}part{k}")
            out, out_value = _walk(g, module.tower, sliced, part, prefix + "tower")
            if out_value.ndim != 2:
                out = g.node("Flatten", [out], f"{prefix}tower_flat", axis=1)
            features.append(out)
            feature_values.append(out_value.flatten(1))
        joined = g.node("Concat", features, f"{prefix}concat", axis=1)
        joined_value = cg.cat(feature_values, dim=1)
        return _walk(g, module.head, joined, joined_value, prefix + "head")
    if name not in _EXPORTERS or getattr(nn, name, None) is not cls:
        raise UnsupportedModuleError(
            f"cannot export {name} at {path or '<root>'!r} to ONNX: no translation for this class"
        )
    exporter = _EXPORTERS[name]
    out_value = module(value)
    if exporter is None:
        return x, out_value
    return exporter(g, module, x, value.data, path or name.lower()), out_value


def _onnx_type(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def export(
    model: nn.Module,
    example_input: Any,
    path: str | os.PathLike[str],
    opset: int = 17,
    dynamic_batch: bool = True,
    input_name: str = "input",
    output_name: str = "output",
) -> Any:
    """Write ``model`` as an ONNX file that onnxruntime runs with convgrad's outputs.

    The model is put in eval mode for the walk (dropout off, batch norm on running statistics)
    and restored afterwards. The graph is checked with ``onnx.checker`` before it is written.

    Args:
        model: a tree of :mod:`convgrad.nn` modules (and the lab's SplitShared and
            SumDistribution).
        example_input: (N, C, ...) array or Tensor; fixes every non-batch size and the dtype.
        path: destination ``.onnx`` file, written atomically.
        opset: ONNX opset of the default domain (>= 13; default 17).
        dynamic_batch: leave the batch size symbolic ("batch") instead of N.
        input_name, output_name: names of the graph's input and output.

    Returns:
        The ``onnx.ModelProto`` that was written.

    Raises:
        UnsupportedModuleError: a module with no ONNX translation (class and path named).
        InteropError: an opset below 13.
    """
    if opset < MIN_OPSET:
        raise InteropError(f"export: expected opset >= {MIN_OPSET}, received opset={opset}")
    array = np.asarray(example_input.data if isinstance(example_input, Tensor) else example_input)
    graph = _Graph(opset)
    was_training = model.training
    model.eval()
    try:
        with cg.no_grad():
            out, out_value = _walk(graph, model, input_name, cg.tensor(array), "")
    finally:
        model.train(was_training)
    if out == input_name:  # an empty or identity model: ONNX needs one node
        out = graph.node("Identity", [out], "identity")
    graph.nodes.append(helper.make_node("Identity", [out], [output_name], name=output_name))

    def value_info(name: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        dims: list[Any] = list(shape)
        if dynamic_batch and dims:
            dims[0] = "batch"
        return helper.make_tensor_value_info(name, _onnx_type(dtype), dims)

    onnx_graph = helper.make_graph(
        graph.nodes, type(model).__name__,
        [value_info(input_name, array.shape, array.dtype)],
        [value_info(output_name, out_value.shape, out_value.dtype)],
        initializer=graph.initializers,
    )
    from convgrad._version import __version__

    proto = helper.make_model(
        onnx_graph, producer_name="convgrad", producer_version=__version__,
        opset_imports=[helper.make_opsetid("", opset)],
    )
    proto.ir_version = min(proto.ir_version, _max_ir_version(opset))
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(Path(path), proto.SerializeToString())
    return proto


def _max_ir_version(opset: int) -> int:
    """The IR version of the onnx release that introduced ``opset`` (what older runtimes read)."""
    versions = [row[1] for row in helper.VERSION_TABLE if row[2] == opset]
    return min(versions) if versions else onnx.IR_VERSION
