"""convgrad modules to PyTorch modules and back, with parameters and buffers copied.

:func:`to_torch` walks a convgrad module tree and builds the ``torch.nn`` tree with the same
structure, names and attribute values (so ``state_dict`` keys are identical); :func:`from_torch`
is its inverse. Every class exported by :mod:`convgrad.nn` has a converter, looked up by its
PyTorch name, plus the lab's two model parts: the weight-sharing
:class:`~convgrad.lab.models.SplitShared` (optional ``stem`` included) and the digit-sum head
:class:`~convgrad.lab.models.SumDistribution`, whose twins :class:`TorchSplitShared` and
:class:`TorchSumDistribution` are defined here. A module reached twice (a shared tower) becomes
one module on the other side too, so weight sharing survives the conversion.

Two convgrad conveniences have no torch.nn class of their own and get a small twin here:
``padding='same'`` with a stride above 1 (TensorFlow's definition; torch refuses it), done by
:class:`SameConv1d` / :class:`SameConv2d`, which pad by the same formula before convolving.

Example::

    import torch
    from convgrad.interop import to_torch, from_torch

    twin = to_torch(model).eval()          # torch.nn.Sequential with the same weights
    back = from_torch(torchvision_like)    # a convgrad module
    model.load_state_dict(twin.state_dict())   # torch tensors load directly
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from convgrad import nn
from convgrad.autograd import Tensor
from convgrad.interop.common import InteropError, require

torch = require("torch", "convgrad.interop.torch")
tnn = torch.nn
tF = torch.nn.functional


class UnsupportedModuleError(InteropError):
    """A module without a converter, named by class and by its path in the tree."""


# ---------------------------------------------------------------------- torch twins
class TorchSplitShared(tnn.Module):
    """PyTorch twin of :class:`convgrad.lab.models.SplitShared` (same attributes and forward).

    Applies ``stem`` (when given) to the whole (N, C, H, W) input, cuts the result into
    ``parts`` equal slices along ``axis``, runs the single ``tower`` on each (one set of
    parameters, gradients summed over parts), flattens and concatenates the results and
    applies ``head``. ``stem`` is registered first, so ``state_dict`` keys come in convgrad's
    order (``stem.*``, ``tower.*``, ``head.*``).
    """

    _AXES = {"channels": 1, "height": 2, "width": 3}

    def __init__(self, tower: Any, head: Any, axis: str = "height", parts: int = 2,
                 stem: Any = None) -> None:
        super().__init__()
        if axis not in self._AXES:
            raise InteropError(f"TorchSplitShared: expected axis in {sorted(self._AXES)}, "
                               f"received {axis!r}")
        self.stem = stem
        self.tower, self.head, self.axis, self.parts = tower, head, axis, int(parts)

    def forward(self, input: Any) -> Any:
        if self.stem is not None:
            input = self.stem(input)
        dim = self._AXES[self.axis]
        size = input.shape[dim] // self.parts
        parts = [input.narrow(dim, k * size, size) for k in range(self.parts)]
        return self.head(torch.cat([self.tower(part).flatten(1) for part in parts], dim=1))

    def extra_repr(self) -> str:
        return f"axis={self.axis!r}, parts={self.parts}"


def sum_index(classes: int) -> np.ndarray:
    """The (2K - 1, K) gather table of :class:`convgrad.lab.models.SumDistribution`.

    Row s lists the positions t * K + (s - t) of the pairs (t, s - t) with both digits in
    0 .. K - 1 inside the flattened (K*K) outer sum; the other entries hold K*K, the position
    of the -inf column appended after it.
    """
    k = int(classes)
    sums = np.arange(2 * k - 1)[:, None]
    first = np.arange(k)[None, :]
    valid = (sums - first >= 0) & (sums - first < k)
    return np.where(valid, first * k + (sums - first), k * k).astype(np.int64)


class TorchSumDistribution(tnn.Module):
    """PyTorch twin of :class:`convgrad.lab.models.SumDistribution` (no parameters).

    ``log p(s) = logsumexp_t (log_softmax(a)[t] + log_softmax(b)[s - t])`` over the valid t:
    the outer sum of the two digits' log-probabilities, flattened, a -inf column appended,
    gathered with the fixed (2K - 1, K) table ``index`` (a non-persistent buffer, so
    ``state_dict`` stays empty as in convgrad) and reduced with ``torch.logsumexp``, which
    shifts by each row's finite maximum: no -inf or nan for confident logits.

    Shape:
        - input: (N, 2K), the first digit's K logits then the second's.
        - output: (N, 2K - 1) log-probabilities of the sums 0 .. 2K - 2.
    """

    index: Any

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = int(classes)
        self.register_buffer("index", torch.from_numpy(sum_index(self.classes)),
                             persistent=False)

    def forward(self, input: Any) -> Any:
        k = self.classes
        if input.dim() != 2 or input.shape[1] != 2 * k:
            raise InteropError(f"TorchSumDistribution({k}): expected input (N, {2 * k}), "
                               f"received {tuple(input.shape)}")
        n = input.shape[0]
        first = tF.log_softmax(input[:, :k], dim=1)
        second = tF.log_softmax(input[:, k:], dim=1)
        outer = (first.unsqueeze(2) + second.unsqueeze(1)).reshape(n, k * k)
        pad = outer.new_full((n, 1), -math.inf)
        terms = torch.cat([outer, pad], dim=1)[:, self.index]  # (N, 2K - 1, K)
        return torch.logsumexp(terms, dim=2)

    def extra_repr(self) -> str:
        return f"classes={self.classes}"


def _tf_same_pads(sizes: Any, kernel: Any, stride: Any, dilation: Any) -> list[int]:
    """F.pad's list (last axis first) for TensorFlow 'SAME': total = max((ceil(n/s) - 1)s +
    d(k - 1) + 1 - n, 0), the smaller half before."""
    pads: list[int] = []
    for n, k, s, d in reversed(list(zip(sizes, kernel, stride, dilation, strict=True))):
        total = max((math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class SameConv2d(tnn.Conv2d):
    """torch.nn.Conv2d with TensorFlow's padding='same' for any stride (pads, then convolves)."""

    def forward(self, input: Any) -> Any:
        pads = _tf_same_pads(input.shape[2:], self.kernel_size, self.stride, self.dilation)
        return self._conv_forward(tF.pad(input, pads), self.weight, self.bias)


class SameConv1d(tnn.Conv1d):
    """torch.nn.Conv1d with TensorFlow's padding='same' for any stride (pads, then convolves)."""

    def forward(self, input: Any) -> Any:
        pads = _tf_same_pads(input.shape[2:], self.kernel_size, self.stride, self.dilation)
        return self._conv_forward(tF.pad(input, pads), self.weight, self.bias)


# ---------------------------------------------------------------------- state copying
def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return np.array(value.data, copy=True)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    return np.array(value, copy=True)


def _cg_buffers(module: nn.Module) -> dict[str, Any]:
    named = getattr(module, "named_buffers", None)
    if named is None:
        return {}
    return {name: value for name, value in named(recurse=False) if value is not None}


def _copy_cg_to_torch(source: nn.Module, target: Any) -> None:
    """Overwrite target's own parameters and buffers with copies of source's (dtype included)."""
    for name, param in source._parameters.items():
        if param is None:
            continue
        tparam = getattr(target, name)
        tparam.data = torch.from_numpy(_to_numpy(param))
        tparam.requires_grad_(param.requires_grad)
    for name, buffer in _cg_buffers(source).items():
        target._buffers[name] = torch.from_numpy(_to_numpy(buffer))
    target.training = bool(source.training)  # this module only: children keep their own mode


def _copy_torch_to_cg(source: Any, target: nn.Module) -> None:
    """Overwrite target's own parameters and buffers with copies of source's (dtype included)."""
    for name, tparam in source._parameters.items():
        if tparam is None:
            continue
        param = getattr(target, name)
        param.data = _to_numpy(tparam)
        param.requires_grad = bool(tparam.requires_grad)
    for name, tbuffer in source._buffers.items():
        if tbuffer is None:
            continue
        array = _to_numpy(tbuffer)
        current = getattr(target, name, None)
        if isinstance(current, Tensor):
            current.data = array
        else:  # a buffer kept as a plain array, or one the constructor left as None
            target.register_buffer(name, array)
    object.__setattr__(target, "training", bool(source.training))


# ---------------------------------------------------------------------- converters
def _pair(value: Any, nd: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (int(value),) * nd


def _conv_to_torch(m: Any, nd: int) -> Any:
    plain = tnn.Conv2d if nd == 2 else tnn.Conv1d
    same = SameConv2d if nd == 2 else SameConv1d
    padding = m.padding
    cls = plain
    if padding == "same" and any(s != 1 for s in m.stride):
        cls, padding = same, 0
    return cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=padding,
               dilation=m.dilation, groups=m.groups, bias=m.bias is not None)


def _conv_from_torch(t: Any, nd: int) -> Any:
    cls = nn.Conv2d if nd == 2 else nn.Conv1d
    padding = "same" if isinstance(t, SameConv1d | SameConv2d) else t.padding
    return cls(t.in_channels, t.out_channels, t.kernel_size, stride=t.stride, padding=padding,
               dilation=t.dilation, groups=t.groups, bias=t.bias is not None)


def _conv_transpose_to_torch(m: Any, cls: Any) -> Any:
    return cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
               output_padding=m.output_padding, groups=m.groups, bias=m.bias is not None,
               dilation=m.dilation)


def _conv_transpose_from_torch(t: Any, name: str) -> Any:
    return getattr(nn, name)(t.in_channels, t.out_channels, t.kernel_size, stride=t.stride,
                             padding=t.padding, output_padding=t.output_padding,
                             groups=t.groups, bias=t.bias is not None, dilation=t.dilation)


def _batch_norm_kwargs(m: Any) -> dict[str, Any]:
    return {"eps": m.eps, "momentum": m.momentum, "affine": m.affine,
            "track_running_stats": m.track_running_stats}


def _unwrap(value: Any, nd: int) -> Any:
    """torch keeps 1-d pooling sizes as ints; convgrad as 1-tuples."""
    return value[0] if nd == 1 and isinstance(value, tuple) else value


# class name -> (convgrad -> torch, torch -> convgrad); containers are handled by the walker.
_CONVERTERS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "Linear": (
        lambda m: tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None),
        lambda t: nn.Linear(t.in_features, t.out_features, bias=t.bias is not None),
    ),
    "Conv1d": (lambda m: _conv_to_torch(m, 1), lambda t: _conv_from_torch(t, 1)),
    "Conv2d": (lambda m: _conv_to_torch(m, 2), lambda t: _conv_from_torch(t, 2)),
    "ConvTranspose1d": (
        lambda m: _conv_transpose_to_torch(m, tnn.ConvTranspose1d),
        lambda t: _conv_transpose_from_torch(t, "ConvTranspose1d"),
    ),
    "ConvTranspose2d": (
        lambda m: _conv_transpose_to_torch(m, tnn.ConvTranspose2d),
        lambda t: _conv_transpose_from_torch(t, "ConvTranspose2d"),
    ),
    "BatchNorm1d": (
        lambda m: tnn.BatchNorm1d(m.num_features, **_batch_norm_kwargs(m)),
        lambda t: nn.BatchNorm1d(t.num_features, **_batch_norm_kwargs(t)),
    ),
    "BatchNorm2d": (
        lambda m: tnn.BatchNorm2d(m.num_features, **_batch_norm_kwargs(m)),
        lambda t: nn.BatchNorm2d(t.num_features, **_batch_norm_kwargs(t)),
    ),
    "AdaptiveAvgPool2d": (
        lambda m: tnn.AdaptiveAvgPool2d(m.output_size),
        lambda t: nn.AdaptiveAvgPool2d(t.output_size),
    ),
    "AdaptiveMaxPool2d": (
        lambda m: tnn.AdaptiveMaxPool2d(m.output_size),
        lambda t: nn.AdaptiveMaxPool2d(t.output_size),
    ),
    "ReLU": (lambda m: tnn.ReLU(), lambda t: nn.ReLU()),
    "Sigmoid": (lambda m: tnn.Sigmoid(), lambda t: nn.Sigmoid()),
    "Tanh": (lambda m: tnn.Tanh(), lambda t: nn.Tanh()),
    "Identity": (lambda m: tnn.Identity(), lambda t: nn.Identity()),
    "LeakyReLU": (
        lambda m: tnn.LeakyReLU(m.negative_slope),
        lambda t: nn.LeakyReLU(t.negative_slope),
    ),
    "ELU": (lambda m: tnn.ELU(m.alpha), lambda t: nn.ELU(t.alpha)),
    "GELU": (
        lambda m: tnn.GELU(approximate=m.approximate),
        lambda t: nn.GELU(approximate=t.approximate),
    ),
    "Softmax": (lambda m: tnn.Softmax(dim=m.dim), lambda t: nn.Softmax(dim=t.dim)),
    "LogSoftmax": (lambda m: tnn.LogSoftmax(dim=m.dim), lambda t: nn.LogSoftmax(dim=t.dim)),
    "Dropout": (lambda m: tnn.Dropout(m.p), lambda t: nn.Dropout(t.p)),
    "CrossEntropyLoss": (
        lambda m: tnn.CrossEntropyLoss(ignore_index=m.ignore_index, reduction=m.reduction,
                                       label_smoothing=m.label_smoothing),
        lambda t: nn.CrossEntropyLoss(ignore_index=t.ignore_index, reduction=t.reduction,
                                      label_smoothing=t.label_smoothing),
    ),
    "Flatten": (
        lambda m: tnn.Flatten(m.start_dim, m.end_dim),
        lambda t: nn.Flatten(t.start_dim, t.end_dim),
    ),
}
for _name, _nd in (("MaxPool1d", 1), ("MaxPool2d", 2), ("AvgPool1d", 1), ("AvgPool2d", 2)):
    _CONVERTERS[_name] = (
        lambda m, _name=_name, _nd=_nd: getattr(tnn, _name)(
            _unwrap(m.kernel_size, _nd), _unwrap(m.stride, _nd), _unwrap(m.padding, _nd)
        ),
        lambda t, _name=_name, _nd=_nd: getattr(nn, _name)(
            t.kernel_size, t.stride, t.padding
        ),
    )

# torch attributes convgrad does not model: (attribute, the only value convgrad supports).
_TORCH_REQUIREMENTS: dict[str, tuple[tuple[str, Any], ...]] = {
    "Conv1d": (("padding_mode", "zeros"),),
    "Conv2d": (("padding_mode", "zeros"),),
    "ConvTranspose1d": (("padding_mode", "zeros"),),
    "ConvTranspose2d": (("padding_mode", "zeros"),),
    "MaxPool1d": (("dilation", 1), ("ceil_mode", False), ("return_indices", False)),
    "MaxPool2d": (("dilation", 1), ("ceil_mode", False), ("return_indices", False)),
    "AvgPool1d": (("ceil_mode", False), ("count_include_pad", True)),
    "AvgPool2d": (("ceil_mode", False), ("count_include_pad", True), ("divisor_override", None)),
    "AdaptiveMaxPool2d": (("return_indices", False),),
    "ReLU": (("inplace", False),),
    "LeakyReLU": (("inplace", False),),
    "ELU": (("inplace", False),),
    "Dropout": (("inplace", False),),
}


def _describe(path: str) -> str:
    return path or "<root>"


def _lab_classes() -> tuple[type | None, type | None]:
    """The lab's (SplitShared, SumDistribution), or None where the lab cannot be imported."""
    try:
        from convgrad.lab.models import SplitShared, SumDistribution
    except ImportError:  # pragma: no cover - the lab ships with convgrad
        return None, None
    return SplitShared, SumDistribution


# ---------------------------------------------------------------------- public API
def to_torch(model: nn.Module) -> Any:
    """A ``torch.nn.Module`` tree equal to ``model``: same structure, names and values.

    Parameters and buffers are copied (the two models share no memory) with their dtypes;
    ``training`` and ``requires_grad`` flags follow. A module used twice becomes one torch module
    used twice.

    Args:
        model: a convgrad module built from the classes of :mod:`convgrad.nn` (any nesting of
            Sequential and ModuleList) and the lab's :class:`~convgrad.lab.models.SplitShared`
            and :class:`~convgrad.lab.models.SumDistribution`.

    Returns:
        The torch module; ``to_torch(m).state_dict()`` has the keys of ``m.state_dict()``.

    Raises:
        UnsupportedModuleError: a module with no converter, e.g. "cannot convert MyBlock at
            'features.2' to PyTorch: no converter for this class".
    """
    memo: dict[int, Any] = {}
    split_shared, sum_distribution = _lab_classes()

    def convert(module: nn.Module, path: str) -> Any:
        if id(module) in memo:
            return memo[id(module)]
        cls = type(module)
        name = cls.__name__
        prefix = f"{path}." if path else ""
        if cls is nn.Sequential or cls is nn.ModuleList:
            children = OrderedDict(
                (key, convert(child, prefix + key)) for key, child in module._modules.items()
            )
            out = (tnn.Sequential(children) if cls is nn.Sequential
                   else tnn.ModuleList(list(children.values())))
        elif split_shared is not None and cls is split_shared:
            stem = None if module.stem is None else convert(module.stem, prefix + "stem")
            out = TorchSplitShared(convert(module.tower, prefix + "tower"),
                                   convert(module.head, prefix + "head"),
                                   module.axis, module.parts, stem)
        elif sum_distribution is not None and cls is sum_distribution:
            out = TorchSumDistribution(module.classes)
        elif name in _CONVERTERS and getattr(nn, name, None) is cls:
            out = _CONVERTERS[name][0](module)
        else:
            raise UnsupportedModuleError(
                f"cannot convert {name} at {_describe(path)!r} to PyTorch: no converter for "
                "this class"
            )
        _copy_cg_to_torch(module, out)
        memo[id(module)] = out
        return out

    return convert(model, "")


def from_torch(module: Any) -> nn.Module:
    """A convgrad module tree equal to a ``torch.nn.Module`` tree (inverse of :func:`to_torch`).

    Args:
        module: built from torch.nn classes with a convgrad counterpart (Linear, Conv1d/2d,
            pools, activations, Dropout, Flatten, Sequential, ModuleList, ... and the twins
            defined in this module), with default values for the attributes convgrad does not
            model (``padding_mode='zeros'``, ``ceil_mode=False``, ...).

    Returns:
        The convgrad module with copies of the parameters and buffers.

    Raises:
        UnsupportedModuleError: a class without a converter or an attribute value convgrad
            cannot reproduce, naming the class, the path and the attribute.
    """
    memo: dict[int, nn.Module] = {}
    split_shared, sum_distribution = _lab_classes()

    def convert(t: Any, path: str) -> nn.Module:
        if id(t) in memo:
            return memo[id(t)]
        cls = type(t)
        name = cls.__name__
        prefix = f"{path}." if path else ""
        if cls is tnn.Sequential or cls is tnn.ModuleList:
            children = [(key, convert(child, prefix + key)) for key, child in t._modules.items()]
            out: nn.Module = (nn.Sequential(OrderedDict(children)) if cls is tnn.Sequential
                              else nn.ModuleList([child for _, child in children]))
        elif cls is TorchSplitShared and split_shared is not None:
            stem = None if t.stem is None else convert(t.stem, prefix + "stem")
            out = split_shared(convert(t.tower, prefix + "tower"),
                               convert(t.head, prefix + "head"), t.axis, t.parts, stem)
        elif cls is TorchSumDistribution and sum_distribution is not None:
            # no parameters; the gather table is rebuilt from ``classes``, not copied
            out = sum_distribution(t.classes)
            object.__setattr__(out, "training", bool(t.training))
            memo[id(t)] = out
            return out
        else:
            base = {SameConv1d: "Conv1d", SameConv2d: "Conv2d"}.get(cls, name)
            known = base in _CONVERTERS and (getattr(tnn, base, None) is cls or base != name)
            if not known or getattr(nn, base, None) is None:
                raise UnsupportedModuleError(
                    f"cannot convert {name} at {_describe(path)!r} from PyTorch: no convgrad "
                    "counterpart for this class"
                )
            for attribute, expected in _TORCH_REQUIREMENTS.get(base, ()):
                value = getattr(t, attribute, expected)
                if value != expected:
                    raise UnsupportedModuleError(
                        f"cannot convert {name} at {_describe(path)!r} from PyTorch: convgrad "
                        f"supports only {attribute}={expected!r}, received {attribute}={value!r}"
                    )
            out = _CONVERTERS[base][1](t)
        _copy_torch_to_cg(t, out)
        memo[id(t)] = out
        return out

    return convert(module, "")


def supported_classes() -> list[str]:
    """Names of the convgrad.nn classes :func:`to_torch` converts (containers included)."""
    present = [name for name in _CONVERTERS if getattr(nn, name, None) is not None]
    return sorted(["Sequential", "ModuleList", *present])
