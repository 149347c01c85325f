"""Experiment specs: TOML files validated by pydantic models that refuse unknown keys.

A spec names the dataset, the model, the optimizer, the training schedule, the seed, the course's
reference accuracy and, optionally, a sweep over keep probabilities. Every validation error is
reported with the dotted path of the offending key (``optimizer.lr: Input should be greater than
0``), see :class:`SpecError`.

Example (the shipped ``baseline.toml``)::

    name = "baseline"
    seed = 0
    reference = 0.992

    [dataset]
    kind = "mnist"

    [model]
    builder = "deep_mnist"
    dropout = 0.5

    [optimizer]
    name = "adam"
    lr = 1e-4

    [train]
    batch_size = 50
    steps = 20000
    eval_every = 1000

    [budget]
    quick = 150
    standard = 2000
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from convgrad.errors import ArgumentError

BUDGETS = ("quick", "standard", "full")
# budget -> (most evaluations per run, examples of each fixed evaluation subset during training)
BUDGET_EVALUATION = {"quick": (10, 500), "standard": (10, 1000)}
PositiveInt = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


class SpecError(ArgumentError):
    """A spec that cannot be used; the message lists each problem with its key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """``steps = true`` is not 1: a boolean is accepted only where the field is a bool."""
        if isinstance(data, Mapping):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if isinstance(value, bool) and field is not None and field.annotation is not bool:
                    raise ValueError(f"{key}: expected a number, received {str(value).lower()}")
        return data


# ---------------------------------------------------------------------------------- datasets
class MnistData(_Strict):
    """All of MNIST (60,000 train, 10,000 test) or Fashion-MNIST."""

    kind: Literal["mnist", "fashion-mnist"]


class SubsetData(_Strict):
    """A class-balanced ``n``-example subset of the training split; the full test split."""

    kind: Literal["subset"]
    base: Literal["mnist", "fashion-mnist"] = "mnist"
    n: PositiveInt
    seed: Annotated[int, Field(ge=0)] = 0


class DigitPairsData(_Strict):
    """Two digits stacked into 56x28, labelled with their sum (19 classes)."""

    kind: Literal["digit-pairs"]
    base: Literal["mnist", "fashion-mnist"] = "mnist"
    train_pairs: PositiveInt = 60000
    test_pairs: PositiveInt = 10000
    seed: Annotated[int, Field(ge=0)] = 0


class SyntheticData(_Strict):
    """Noisy class prototypes generated from ``seed``: for tests and smoke runs, no download."""

    kind: Literal["synthetic"]
    train: PositiveInt = 512
    test: PositiveInt = 256
    classes: Annotated[int, Field(ge=2)] = 10
    height: PositiveInt = 28
    width: PositiveInt = 28
    noise: Annotated[float, Field(ge=0.0)] = 0.3
    seed: Annotated[int, Field(ge=0)] = 0


DatasetSpec = Annotated[
    MnistData | SubsetData | DigitPairsData | SyntheticData, Field(discriminator="kind")
]

# ---------------------------------------------------------------------------------- layers
IntPair = int | tuple[int, int]


class Conv2dLayer(_Strict):
    """``Conv2d(in inferred, out_channels, kernel_size, stride, padding, bias)``."""

    type: Literal["conv2d"]
    out_channels: PositiveInt
    kernel_size: IntPair
    stride: IntPair = 1
    padding: IntPair | Literal["same", "valid"] = 0
    bias: bool = True


class LinearLayer(_Strict):
    """``Linear(in inferred, out_features, bias)``; ``out_features`` defaults to the classes."""

    type: Literal["linear"]
    out_features: PositiveInt | None = None
    bias: bool = True


class PoolLayer(_Strict):
    """``MaxPool2d`` / ``AvgPool2d(kernel_size, stride=kernel_size, padding)``."""

    type: Literal["maxpool", "avgpool"]
    kernel_size: IntPair = 2
    stride: IntPair | None = None
    padding: IntPair = 0


class DropoutLayer(_Strict):
    """``Dropout(p)``, ``p`` the probability of *dropping* (keep probability = 1 - p)."""

    type: Literal["dropout"]
    p: Probability = 0.5


class PlainLayer(_Strict):
    """Parameter-free layers: activations, flatten, identity."""

    type: Literal["relu", "sigmoid", "tanh", "flatten", "identity"]


LayerSpec = Annotated[
    Conv2dLayer | LinearLayer | PoolLayer | DropoutLayer | PlainLayer, Field(discriminator="type")
]


# ---------------------------------------------------------------------------------- models
class _ModelBase(_Strict):
    init: Literal["default", "tf_tutorial"] = "default"
    init_std: Annotated[float, Field(gt=0.0)] = 0.1
    init_bias: float = 0.1


class LayerListModel(_ModelBase):
    """A plain stack of layers, applied in order."""

    layers: Annotated[list[LayerSpec], Field(min_length=1)]


class Split(_Strict):
    """How to cut the input: into ``parts`` equal slices along ``axis``."""

    axis: Literal["height", "width", "channels"] = "height"
    parts: Annotated[int, Field(ge=2)] = 2


class SharedTowerModel(_ModelBase):
    """Weight sharing: the *same* tower on each part of the input, concatenated, then a head."""

    split: Split
    tower: Annotated[list[LayerSpec], Field(min_length=1)]
    head: Annotated[list[LayerSpec], Field(min_length=1)]


class DeepMnistBuilder(_ModelBase):
    """The TensorFlow Deep MNIST network and its course variants.

    conv(k1, c1) -> act -> pool -> conv(k2, c2) -> act -> pool -> linear(hidden) -> act ->
    dropout(p) -> linear(classes). ``linear=True`` removes every ReLU and uses average pooling;
    ``dropout_everywhere=True`` puts dropout between every two layers (after each block).
    """

    builder: Literal["deep_mnist"]
    init: Literal["default", "tf_tutorial"] = "tf_tutorial"
    linear: bool = False
    dropout: Probability = 0.5
    dropout_everywhere: bool = False
    conv1_channels: PositiveInt = 32
    conv1_kernel: PositiveInt = 5
    conv2_channels: PositiveInt = 64
    conv2_kernel: PositiveInt = 5
    hidden: PositiveInt = 1024


class OneConvBuilder(_ModelBase):
    """One 'same' convolution (``channels`` filters of ``kernel`` x ``kernel``), ReLU, linear."""

    builder: Literal["one_conv"]
    channels: PositiveInt = 8
    kernel: PositiveInt = 8


class MinimalBuilder(_ModelBase):
    """Small 3x3 conv blocks (conv 'same', ReLU, max-pool 2), then one linear layer."""

    builder: Literal["minimal"]
    channels: Annotated[list[PositiveInt], Field(min_length=1)] = [16, 32, 32]
    kernel: PositiveInt = 3


class DigitSumBuilder(_ModelBase):
    """The shared tower of the digit-sum task: per half conv5x5x32, pool, conv5x5x64, pool,
    linear 3136 -> hidden; halves concatenated, linear to the classes."""

    builder: Literal["digit_sum"]
    init: Literal["default", "tf_tutorial"] = "tf_tutorial"
    hidden: PositiveInt = 1024
    dropout: Probability = 0.0


BuilderModel = Annotated[
    DeepMnistBuilder | OneConvBuilder | MinimalBuilder | DigitSumBuilder,
    Field(discriminator="builder"),
]


def _model_kind(value: Any) -> str | None:
    if isinstance(value, Mapping):
        if "builder" in value:
            return "named-builder"
        if {"split", "tower", "head"} & set(value):
            return "split-tower"
        return "layer-list"
    if isinstance(value, BaseModel):
        return {LayerListModel: "layer-list", SharedTowerModel: "split-tower"}.get(
            type(value), "named-builder"
        )
    return None


ModelSpec = Annotated[
    Annotated[BuilderModel, Tag("named-builder")]
    | Annotated[LayerListModel, Tag("layer-list")]
    | Annotated[SharedTowerModel, Tag("split-tower")],
    Discriminator(_model_kind),
]


# ---------------------------------------------------------------------------------- training
class AdamSpec(_Strict):
    """``convgrad.optim.Adam``."""

    name: Literal["adam"]
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    eps: Annotated[float, Field(gt=0.0)] = 1e-8
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0


class SgdSpec(_Strict):
    """``convgrad.optim.SGD``."""

    name: Literal["sgd"]
    lr: Annotated[float, Field(gt=0.0)]
    momentum: Annotated[float, Field(ge=0.0)] = 0.0
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0


OptimizerSpec = Annotated[AdamSpec | SgdSpec, Field(discriminator="name")]


class TrainSpec(_Strict):
    """The schedule. Evaluation and checkpoints happen at multiples of their interval and at the
    last step, so they fall on the same steps in an interrupted run and in an uninterrupted one.

    Attributes:
        batch_size: examples per step.
        steps: optimizer steps (the ``full`` budget).
        eval_every: steps between evaluations (one metrics line each).
        checkpoint_every: steps between checkpoints; default ``eval_every``.
        eval_train_examples: size of the fixed training subset whose accuracy is logged.
        eval_test_examples: size of the fixed test subset evaluated *during* training; the last
            evaluation always uses the whole test set. 0 means the whole test set every time.
        keep_checkpoints: checkpoint generations kept (the newest that verifies is resumed).
        loss_ceiling_factor: a step's loss above this multiple of the run's first loss counts as
            divergence, like inf or nan.
    """

    batch_size: PositiveInt = 50
    steps: PositiveInt
    eval_every: PositiveInt = 1000
    checkpoint_every: PositiveInt | None = None
    eval_train_examples: PositiveInt = 1000
    eval_test_examples: Annotated[int, Field(ge=0)] = 2000
    keep_checkpoints: PositiveInt = 2
    loss_ceiling_factor: Annotated[float, Field(gt=1.0)] = 1e4


class BudgetSpec(_Strict):
    """Steps under the smaller budgets (``full`` is ``train.steps``)."""

    quick: PositiveInt | None = None
    standard: PositiveInt | None = None


class SweepSpec(_Strict):
    """One run per keep probability; each sets every dropout of the model to ``p = 1 - keep``."""

    keep_prob: Annotated[list[Annotated[float, Field(gt=0.0, le=1.0)]], Field(min_length=1)]

    @field_validator("keep_prob")
    @classmethod
    def _distinct(cls, values: list[float]) -> list[float]:
        if len(set(values)) != len(values):
            raise ValueError(f"expected distinct keep probabilities, received {values}")
        return values


class ExperimentSpec(_Strict):
    """One experiment (or, with ``sweep``, a family of runs).

    Attributes:
        name: short identifier, also the run directory's name.
        description: one line for ``convgrad list`` and the report.
        reference: the course's test accuracy for this experiment, if it has one.
        reference_note: where the reference comes from.
        target: the accuracy this experiment must reach under the full budget, if any.
        max_params: a parameter ceiling that is part of the target (the minimal network).
        seed: seeds initialisation, dropout and data order.
        point: the sweep point this spec is (``keep-0.5``), set by :meth:`sweep_points`.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    reference: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    reference_note: str = ""
    target: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    target_max: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    max_params: PositiveInt | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    point: str = ""
    dataset: DatasetSpec
    model: ModelSpec
    optimizer: OptimizerSpec = AdamSpec(name="adam")
    train: TrainSpec
    budget: BudgetSpec = BudgetSpec()
    sweep: SweepSpec | None = None

    @model_validator(mode="after")
    def _sweep_needs_dropout(self) -> ExperimentSpec:
        if self.sweep is not None and not _has_dropout(self.model):
            raise ValueError(
                "sweep.keep_prob needs a model with dropout (a dropout layer, or a builder with "
                "a dropout option)"
            )
        return self

    def steps_for(self, budget: str) -> int:
        """Optimizer steps under ``budget`` (quick, standard or full)."""
        if budget not in BUDGETS:
            raise SpecError(f"budget: expected one of {list(BUDGETS)}, received {budget!r}")
        if budget == "full":
            return self.train.steps
        return getattr(self.budget, budget) or self.train.steps

    def with_overrides(
        self,
        *,
        steps: int | None = None,
        seed: int | None = None,
        eval_every: int | None = None,
        budget: str | None = None,
    ) -> ExperimentSpec:
        """A copy with the schedule changed; a smaller budget scales the evaluations with it.

        Under the quick and standard budgets a run evaluates at most 10 times, on smaller fixed
        subsets during training (:data:`BUDGET_EVALUATION`); the last evaluation is still on the
        whole test set.
        """
        data = self.model_dump(mode="python")
        train = data["train"]
        if budget is not None and budget != "full":
            self.steps_for(budget)  # validates the name
            full_steps, full_every = train["steps"], train["eval_every"]
            max_evaluations, eval_examples = BUDGET_EVALUATION[budget]
            train["steps"] = self.steps_for(budget)
            evaluations = max(1, min(max_evaluations, math.ceil(full_steps / full_every)))
            train["eval_every"] = max(1, math.ceil(train["steps"] / evaluations))
            train["checkpoint_every"] = None
            train["eval_train_examples"] = min(train["eval_train_examples"], eval_examples)
            during = train["eval_test_examples"]
            train["eval_test_examples"] = min(during or eval_examples, eval_examples)
        if steps is not None:
            train["steps"] = steps
        if eval_every is not None:
            train["eval_every"] = eval_every
            train["checkpoint_every"] = None
        if seed is not None:
            data["seed"] = seed
        return validate_spec(data)

    def sweep_points(self) -> list[tuple[str, ExperimentSpec]]:
        """``[(point, spec)]``: one per keep probability, or ``[("", self)]`` without a sweep."""
        if self.sweep is None:
            return [("", self)]
        points = []
        for keep in self.sweep.keep_prob:
            data = self.model_dump(mode="python")
            data["sweep"] = None
            data["point"] = f"keep-{keep:g}"
            data["model"] = _set_dropout(data["model"], round(1.0 - keep, 12))
            points.append((f"keep-{keep:g}", validate_spec(data)))
        return points

    @property
    def checkpoint_interval(self) -> int:
        """Steps between checkpoints."""
        return self.train.checkpoint_every or self.train.eval_every


def dropout_of(model: Any) -> float | None:
    """The model's dropout probability (the largest, when layers differ); None without dropout."""
    if hasattr(model, "dropout"):
        return float(model.dropout)
    layers = [layer for key in ("layers", "tower", "head") for layer in getattr(model, key, [])]
    values = [layer.p for layer in layers if getattr(layer, "type", None) == "dropout"]
    return max(values) if values else None


def _has_dropout(model: Any) -> bool:
    if hasattr(model, "dropout"):
        return True
    layers = [layer for key in ("layers", "tower", "head") for layer in getattr(model, key, [])]
    return any(getattr(layer, "type", None) == "dropout" for layer in layers)


def _set_dropout(model: dict[str, Any], p: float) -> dict[str, Any]:
    model = copy.deepcopy(model)
    if "dropout" in model:
        model["dropout"] = p
    for key in ("layers", "tower", "head"):
        for layer in model.get(key) or []:
            if layer["type"] == "dropout":
                layer["p"] = p
    return model


# ---------------------------------------------------------------------------------- loading
_TAGS = {
    "mnist", "fashion-mnist", "subset", "digit-pairs", "synthetic", "conv2d", "linear", "maxpool",
    "avgpool", "dropout", "relu", "sigmoid", "tanh", "flatten", "identity", "deep_mnist",
    "one_conv", "minimal", "digit_sum", "named-builder", "layer-list", "split-tower", "adam",
    "sgd", "function-after", "tuple", "int", "literal['same','valid']", "is-instance",
}


def _key_path(loc: tuple[Any, ...], data: Any) -> str:
    """The dotted key path of ``loc`` in ``data``, without pydantic's union-member tags."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping):
            if part in node:
                node = node[part]
                parts.append(str(part))
                continue
            if isinstance(part, str) and (part in _TAGS or "[" in part):
                continue
            parts.append(str(part))
            node = None
        elif isinstance(node, list | tuple) and isinstance(part, int):
            node = node[part] if 0 <= part < len(node) else None
            parts.append(f"[{part}]")
        elif isinstance(part, str) and (part in _TAGS or "[" in part):
            continue
        else:
            parts.append(f"[{part}]" if isinstance(part, int) else str(part))
            node = None
    path = ""
    for part in parts:
        path += part if part.startswith("[") or not path else f".{part}"
    return path or "(top level)"


def format_validation_error(error: ValidationError, data: Any, source: str = "spec") -> str:
    """One line per problem: ``key.path: message (received value)``."""
    problems: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        path = _key_path(tuple(item["loc"]), data)
        message = item["msg"]
        context = item.get("ctx") or {}
        key = str(context.get("discriminator", "")).strip("'")
        if item["type"] in ("union_tag_invalid", "union_tag_not_found") and key.isidentifier():
            path = f"{path}.{key}" if path != "(top level)" else key
            if item["type"] == "union_tag_not_found":
                message = "Field required"
            else:
                message = (f"expected one of {context.get('expected_tags')}, received "
                           f"{context.get('tag')!r}")
        elif item["type"] == "union_tag_not_found":
            message = ("expected a table: layers = [...], builder = \"...\", or split, tower "
                       "and head")
        elif item["type"] == "extra_forbidden":
            message = "unknown key (not allowed here)"
        elif item["type"] != "missing" and "input" in item and not isinstance(
            item["input"], Mapping | list
        ):
            message += f" (received {item['input']!r})"
        messages = problems.setdefault(path, [])
        if message not in messages:
            messages.append(message)
    lines = [f"  {path}: {'; or '.join(messages)}" for path, messages in problems.items()]
    count = len(lines)
    return f"invalid {source}: {count} problem{'s' if count != 1 else ''}\n" + "\n".join(lines)


def validate_spec(data: Mapping[str, Any], source: str = "spec") -> ExperimentSpec:
    """Validate a parsed spec.

    Raises:
        SpecError: listing every problem with its dotted key path.
    """
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, data, source)) from None


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a TOML spec file.

    Raises:
        SpecError: unreadable file, TOML syntax error, or invalid content.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"cannot read spec {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise SpecError(f"invalid spec {path}: not UTF-8 text ({error.reason} at byte "
                        f"{error.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"invalid spec {path}: TOML syntax error: {error}") from None
    return validate_spec(data, source=f"spec {path}")


def builtin_dir() -> Path:
    """The folder of the specs shipped with the package."""
    return Path(__file__).with_name("specs")


def builtin_names() -> list[str]:
    """Names of the shipped experiments, in the course's order."""
    specs = [load_spec(p) for p in sorted(builtin_dir().glob("*.toml"))]
    specs.sort(key=lambda spec: EXPERIMENT_ORDER.get(spec.name, len(EXPERIMENT_ORDER)))
    return [spec.name for spec in specs]


EXPERIMENT_ORDER = {
    name: index
    for index, name in enumerate(
        [
            "baseline", "linear", "one-conv", "minimal", "full-nodropout", "few250-nodropout",
            "few250-small", "few250-dropout", "digit-sum",
        ]
    )
}


def resolve_spec(name_or_path: str) -> ExperimentSpec:
    """A shipped experiment by name, or a spec file by path.

    Raises:
        SpecError: neither a known name nor a readable spec file.
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        return load_spec(candidate)
    shipped = builtin_dir() / f"{name_or_path}.toml"
    if shipped.is_file():
        return load_spec(shipped)
    raise SpecError(
        f"unknown experiment {name_or_path!r}: expected one of {builtin_names()} or a path to a "
        ".toml spec"
    )
