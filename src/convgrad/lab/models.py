"""Networks from specs: layer lists, the course's named builders, and the weight-sharing tower.

Input sizes are inferred: each layer is built knowing the shape the previous ones produce (a
forward pass of zeros), so a spec gives ``out_channels``/``out_features`` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import convgrad as cg
from convgrad import nn
from convgrad.lab.spec import (
    AdaptivePoolLayer,
    BatchNormLayer,
    Conv2dLayer,
    DeepMnistBuilder,
    DigitSumBuilder,
    DropoutLayer,
    EluLayer,
    GeluLayer,
    GlobalAvgPoolLayer,
    LayerListModel,
    LeakyReluLayer,
    LinearLayer,
    MinimalBuilder,
    OneConvBuilder,
    PlainLayer,
    PoolLayer,
    SharedTowerModel,
    SpecError,
    Split,
    SumDistributionLayer,
)

_PLAIN = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "flatten": nn.Flatten,
    "identity": nn.Identity,
}


class SplitShared(nn.Module):
    """Weight sharing: cut the input into equal parts, run one ``tower`` on each, concatenate.

    The tower is a single module, so every part goes through the same Parameter objects and
    autograd accumulates the gradient of all parts into them (``dL/dw = sum_k dL/dw|part k``).
    ``parameters()`` yields each shared parameter once, so the optimizer and ``cg.summary``
    see one tower.

    Args:
        tower: applied to each part; its outputs are flattened and concatenated.
        head: applied to the concatenation.
        axis: ``"height"``, ``"width"`` or ``"channels"`` of the (N, C, H, W) input.
        parts: number of equal parts (the size along ``axis`` is floored to a multiple).
        stem: applied to the whole input before the split (default: none). With the convolutions
            in the stem, the halves are split after pooling and the tower starts at ``flatten``.

    Shape:
        - input: (N, C, H, W); each part (N, C, H // parts, W) for ``axis="height"``.
        - output: ``head(cat([flatten(tower(part_k)) for k], dim=1))``, the parts cut from
          ``stem(input)``.
    """

    _AXES = {"channels": 1, "height": 2, "width": 3}

    def __init__(self, tower: nn.Module, head: nn.Module, axis: str = "height", parts: int = 2,
                 stem: nn.Module | None = None):
        super().__init__()
        if axis not in self._AXES:
            raise SpecError(f"split.axis: expected one of {sorted(self._AXES)}, received {axis!r}")
        self.stem = stem
        self.tower = tower
        self.head = head
        self.axis = axis
        self.parts = int(parts)

    def split(self, input: cg.Tensor) -> list[cg.Tensor]:
        """The ``parts`` slices of ``input`` along ``axis``."""
        dim = self._AXES[self.axis]
        size = input.shape[dim] // self.parts
        slices = []
        for k in range(self.parts):
            index = [slice(None)] * input.ndim
            index[dim] = slice(k * size, (k + 1) * size)
            slices.append(input[tuple(index)])
        return slices

    def forward(self, input: cg.Tensor) -> cg.Tensor:
        if self.stem is not None:
            input = self.stem(input)
        features = [self.tower(part).flatten(1) for part in self.split(input)]
        return self.head(cg.cat(features, dim=1))

    def extra_repr(self) -> str:
        return f"axis={self.axis!r}, parts={self.parts}"


class SumDistribution(nn.Module):
    """Log-probabilities of the sum of two independent digits, from each digit's logits.

    With p1 = softmax(a) and p2 = softmax(b) the distributions of the two digits (K classes),
    the sum s = i + j has ``p(s) = sum_k p1(k) p2(s - k)``: the discrete convolution of p1 and
    p2. It is computed in log space, exactly, with one log-sum-exp per sum:

        L[i, j] = log p1(i) + log p2(j)                 (the outer sum, K*K values)
        G[s, t] = L[t, s - t] for max(0, s-K+1) <= t <= min(s, K-1), else -inf   (2K-1, K)
        log p(s) = m_s + log sum_t exp(G[s, t] - m_s),   m_s = max_t G[s, t]

    Every sum has at least one term, so m_s is finite and the largest term of each sum is
    exp(0) = 1: nothing underflows to log(0), however confident the digits are. m_s is a
    constant shift (the result does not depend on it), so it is detached. Built from the
    engine's ops (outer sum, a gather with a fixed index table, exp, sum, log), so the backward
    is theirs: ``d log p(s) / d L[i, j] = [i + j == s] p1(i) p2(j) / p(s)``.

    Trained with cross-entropy on the sum alone (the output is already normalised, so
    log_softmax leaves it as it is), the network learns to read each digit without digit labels.

    Shape:
        - input: (N, 2K), the first digit's logits then the second's.
        - output: (N, 2K - 1) log-probabilities of the sums 0 .. 2K - 2.
    """

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = k = int(classes)
        sums = np.arange(2 * k - 1)[:, None]  # (2K - 1, 1)
        first = np.arange(k)[None, :]  # (1, K): t, the first digit
        valid = (sums - first >= 0) & (sums - first < k)
        # position of L[t, s - t] in the flattened (K*K) outer sum; K*K: the -inf pad
        self.index = np.where(valid, first * k + (sums - first), k * k)  # (2K - 1, K)

    def forward(self, input: cg.Tensor) -> cg.Tensor:
        k = self.classes
        if input.ndim != 2 or input.shape[1] != 2 * k:
            raise SpecError(
                f"SumDistribution({k}): expected input (N, {2 * k}), received {input.shape}"
            )
        n = input.shape[0]
        first = cg.nn.functional.log_softmax(input[:, :k], dim=1)  # (N, K)
        second = cg.nn.functional.log_softmax(input[:, k:], dim=1)  # (N, K)
        outer = (first.unsqueeze(2) + second.unsqueeze(1)).reshape(n, k * k)
        pad = cg.tensor(np.full((n, 1), -np.inf), dtype=input.dtype)
        terms = cg.cat([outer, pad], dim=1)[:, self.index]  # (N, 2K - 1, K)
        shift = terms.max(dim=2, keepdim=True).values.detach()  # (N, 2K - 1, 1)
        return shift.squeeze(2) + (terms - shift).exp().sum(dim=2).log()

    def extra_repr(self) -> str:
        return f"classes={self.classes}"


def _probe(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape of ``module`` on zeros of ``shape`` (batch 1), in eval mode."""
    module.eval()
    with cg.no_grad():
        out = module(cg.tensor(np.zeros(shape, dtype=np.float32)))
    module.train()
    return tuple(out.shape)


def _layer(spec, shape: tuple[int, ...], num_classes: int, path: str) -> nn.Module:
    if isinstance(spec, Conv2dLayer):
        if len(shape) != 4:
            raise SpecError(
                f"{path}: conv2d expects (N, C, H, W) input, the layers before give {shape}"
            )
        return nn.Conv2d(
            shape[1], spec.out_channels, spec.kernel_size, stride=spec.stride,
            padding=spec.padding, bias=spec.bias,
        )
    if isinstance(spec, LinearLayer):
        if len(shape) != 2:
            raise SpecError(
                f"{path}: linear expects (N, features) input, the layers before give {shape}; "
                "add {type = \"flatten\"} before it"
            )
        return nn.Linear(shape[1], spec.out_features or num_classes, bias=spec.bias)
    if isinstance(spec, PoolLayer):
        pool = nn.MaxPool2d if spec.type == "maxpool" else nn.AvgPool2d
        return pool(spec.kernel_size, stride=spec.stride, padding=spec.padding)
    if isinstance(spec, DropoutLayer):
        return nn.Dropout(spec.p)
    if isinstance(spec, BatchNormLayer):
        if len(shape) not in (2, 3, 4):
            raise SpecError(
                f"{path}: batchnorm expects (N, C, H, W), (N, C, L) or (N, features) input, the "
                f"layers before give {shape}"
            )
        norm = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
        return norm(shape[1], eps=spec.eps, momentum=spec.momentum, affine=spec.affine)
    if isinstance(spec, AdaptivePoolLayer | GlobalAvgPoolLayer):
        if len(shape) != 4:
            raise SpecError(
                f"{path}: {spec.type} expects (N, C, H, W) input, the layers before give {shape}"
            )
        if isinstance(spec, GlobalAvgPoolLayer):
            return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        pool = nn.AdaptiveAvgPool2d if spec.type == "adaptive_avgpool" else nn.AdaptiveMaxPool2d
        return pool(spec.output_size)
    if isinstance(spec, LeakyReluLayer):
        return nn.LeakyReLU(spec.negative_slope)
    if isinstance(spec, EluLayer):
        return nn.ELU(spec.alpha)
    if isinstance(spec, GeluLayer):
        return nn.GELU(spec.approximate)
    if isinstance(spec, PlainLayer):
        return _PLAIN[spec.type]()
    if isinstance(spec, SumDistributionLayer):
        if len(shape) != 2 or shape[1] % 2:
            raise SpecError(
                f"{path}: sum_distribution expects (N, 2K) input (two digits' logits), the "
                f"layers before give {shape}"
            )
        return SumDistribution(shape[1] // 2)
    raise SpecError(f"{path}: unsupported layer {spec!r}")  # pragma: no cover


def build_stack(
    layers: Sequence, input_shape: tuple[int, ...], num_classes: int, path: str = "model.layers"
) -> tuple[nn.Sequential, tuple[int, ...]]:
    """A Sequential from layer specs, each sized from the shape the previous ones produce.

    Args:
        layers: layer specs.
        input_shape: (1, C, H, W) of one example.
        num_classes: ``out_features`` of a linear layer that does not give one.
        path: key path used in error messages.

    Returns:
        The module and its output shape on ``input_shape``.

    Raises:
        SpecError: a layer that cannot take the shape it receives, naming its key path.
    """
    model = nn.Sequential()
    shape = tuple(input_shape)
    for index, spec in enumerate(layers):
        where = f"{path}[{index}]"
        try:
            layer = _layer(spec, shape, num_classes, where)
            shape = _probe(layer, shape)
        except SpecError:
            raise
        except (ValueError, TypeError) as error:
            raise SpecError(f"{where} ({spec.type}) on input {shape}: {error}") from None
        model.append(layer)
    return model, shape


def deep_mnist(
    num_classes: int = 10,
    linear: bool = False,
    dropout: float = 0.5,
    dropout_everywhere: bool = False,
    conv1_channels: int = 32,
    conv1_kernel: int = 5,
    conv2_channels: int = 64,
    conv2_kernel: int = 5,
    hidden: int = 1024,
    input_size: tuple[int, int] = (28, 28),
) -> nn.Sequential:
    """The TensorFlow Deep MNIST network (3,274,634 parameters with the defaults).

    conv 5x5x32 'same' -> ReLU -> maxpool 2 -> conv 5x5x64 'same' -> ReLU -> maxpool 2 ->
    flatten (3136) -> linear 1024 -> ReLU -> dropout(p) -> linear ``num_classes``.

    Args:
        linear: drop every ReLU and average-pool instead of max-pool: the whole network is then
            an affine map of its input.
        dropout: p (drop probability) of the dropout before the last layer; 0 removes it.
        dropout_everywhere: also put dropout after each conv block (between every two layers).
    """
    activation = nn.Identity if linear else nn.ReLU
    pool = nn.AvgPool2d if linear else nn.MaxPool2d

    def drop() -> list[nn.Module]:
        return [nn.Dropout(dropout)] if dropout > 0 else []

    height, width = input_size[0] // 4, input_size[1] // 4
    layers: list[nn.Module] = [
        nn.Conv2d(1, conv1_channels, conv1_kernel, padding="same"), activation(), pool(2),
        *(drop() if dropout_everywhere else []),
        nn.Conv2d(conv1_channels, conv2_channels, conv2_kernel, padding="same"), activation(),
        pool(2),
        *(drop() if dropout_everywhere else []),
        nn.Flatten(), nn.Linear(conv2_channels * height * width, hidden), activation(),
        *drop(),
        nn.Linear(hidden, num_classes),
    ]
    return nn.Sequential(*[layer for layer in layers if not isinstance(layer, nn.Identity)])


def one_conv(num_classes: int = 10, channels: int = 8, kernel: int = 8,
             input_size: tuple[int, int] = (28, 28)) -> nn.Sequential:
    """One 'same' convolution, ReLU, one linear layer: 63,250 parameters for 8 filters 8x8."""
    return nn.Sequential(
        nn.Conv2d(1, channels, kernel, padding="same"), nn.ReLU(), nn.Flatten(),
        nn.Linear(channels * input_size[0] * input_size[1], num_classes),
    )


def minimal(num_classes: int = 10, channels: Sequence[int] = (16, 32, 32), kernel: int = 3,
            input_size: tuple[int, int] = (28, 28)) -> nn.Sequential:
    """Conv blocks (kxk 'same', ReLU, maxpool 2) then a linear layer.

    With channels (16, 32, 32): 28 -> 14 -> 7 -> 3, 288 features, 16,938 parameters.
    """
    layers: list[nn.Module] = []
    in_channels, height, width = 1, *input_size
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, kernel, padding="same"), nn.ReLU(),
                   nn.MaxPool2d(2)]
        in_channels, height, width = out_channels, height // 2, width // 2
    layers += [nn.Flatten(), nn.Linear(in_channels * height * width, num_classes)]
    return nn.Sequential(*layers)


def digit_sum(num_classes: int = 19, hidden: int = 1024, dropout: float = 0.0,
              input_size: tuple[int, int] = (56, 28)) -> SplitShared:
    """The two-digit-sum network: one tower shared by the two 28x28 halves, then a linear head.

    tower: conv 5x5x32 'same' -> ReLU -> maxpool 2 -> conv 5x5x64 'same' -> ReLU -> maxpool 2 ->
    flatten (3136) -> linear ``hidden`` -> ReLU; head: [dropout] -> linear 2*hidden -> classes.
    """
    height, width = input_size[0] // 2 // 4, input_size[1] // 4
    tower = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * height * width, hidden), nn.ReLU(),
    )
    head_layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
    head = nn.Sequential(*head_layers, nn.Linear(2 * hidden, num_classes))
    return SplitShared(tower, head, axis="height", parts=2)


def _initialise(model: nn.Module, spec) -> None:
    if spec.init == "tf_tutorial":
        nn.init.tf_tutorial_init_(model, stddev=spec.init_std, bias=spec.init_bias)


def build_model(spec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The network a model spec describes, initialised from the global generator.

    Call ``cg.manual_seed(seed)`` first: initialisation draws from it.

    Args:
        spec: a model spec (layer list, split tower or named builder).
        input_shape: (C, H, W) of one example.
        num_classes: classes of the dataset; the output must be (N, num_classes).

    Raises:
        SpecError: a layer that does not fit its input, or an output of the wrong size.
    """
    example = (1, *input_shape)
    size = tuple(input_shape[1:])
    if isinstance(spec, LayerListModel):
        model, out_shape = build_stack(spec.layers, example, num_classes)
    elif isinstance(spec, SharedTowerModel):
        model, out_shape = _build_shared(spec, example, num_classes)
    elif isinstance(spec, DeepMnistBuilder):
        options = spec.model_dump(exclude={"builder", "init", "init_std", "init_bias"})
        model = deep_mnist(num_classes, input_size=size, **options)
        out_shape = None
    elif isinstance(spec, OneConvBuilder):
        model = one_conv(num_classes, spec.channels, spec.kernel, input_size=size)
        out_shape = None
    elif isinstance(spec, MinimalBuilder):
        model = minimal(num_classes, spec.channels, spec.kernel, input_size=size)
        out_shape = None
    elif isinstance(spec, DigitSumBuilder):
        model = digit_sum(num_classes, spec.hidden, spec.dropout, input_size=size)
        out_shape = None
    else:  # pragma: no cover
        raise SpecError(f"model: unsupported model spec {type(spec).__name__}")
    if out_shape is None:
        try:
            out_shape = _probe(model, example)
        except (ValueError, TypeError) as error:
            raise SpecError(f"model: the network does not fit input {example}: {error}") from None
    if out_shape != (1, num_classes):
        raise SpecError(
            f"model: expected an output of shape (N, {num_classes}) for {num_classes} classes, "
            f"the network gives {out_shape} for input {example}"
        )
    _initialise(model, spec)
    return model


def _build_shared(
    spec: SharedTowerModel, example: tuple[int, ...], num_classes: int
) -> tuple[SplitShared, tuple[int, ...]]:
    split: Split = spec.split
    stem = None
    if spec.stem:
        stem, example = build_stack(spec.stem, example, num_classes, "model.stem")
    probe = SplitShared(nn.Identity(), nn.Identity(), split.axis, split.parts)
    part_shape = tuple(probe.split(cg.tensor(np.zeros(example, dtype=np.float32)))[0].shape)
    tower, tower_shape = build_stack(spec.tower, part_shape, num_classes, "model.tower")
    features = int(np.prod(tower_shape[1:])) * split.parts
    head, head_shape = build_stack(spec.head, (1, features), num_classes, "model.head")
    return SplitShared(tower, head, split.axis, split.parts, stem), head_shape


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters' elements (a shared tower counts once)."""
    return int(sum(p.numel() for p in model.parameters()))
