"""The experiment schema: pydantic models of a TOML spec that refuse unknown keys.

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
import functools
import math
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from convgrad.lab.spec.errors import SpecError, format_validation_error

BUDGETS = ("quick", "standard", "full")
# budget -> (most evaluations per run, examples of each fixed evaluation subset during training)
BUDGET_EVALUATION = {"quick": (10, 500), "standard": (10, 1000)}
# counts are strict integers (``steps = true`` is refused, not read as 1); floats are finite
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
KeepProbability = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """``steps = true`` is not 1: a boolean is accepted only where the field takes a bool."""
        if isinstance(data, Mapping):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if isinstance(value, bool) and field is not None and not _takes_bool(
                    field.annotation
                ):
                    raise ValueError(f"{key}: expected a number, received {str(value).lower()}")
        return data


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type admits a bool (``bool``, ``bool | None``, ``Literal[True]``, ...)."""
    if annotation is bool or annotation is Any:
        return True
    if get_origin(annotation) is Literal:
        return any(isinstance(option, bool) for option in get_args(annotation))
    return any(_takes_bool(option) for option in get_args(annotation))


# ---------------------------------------------------------------------------------- datasets
class MnistData(_Strict):
    """All of MNIST (60,000 train, 10,000 test) or Fashion-MNIST."""

    kind: Literal["mnist", "fashion-mnist"]


class SubsetData(_Strict):
    """A class-balanced ``n``-example subset of the training split; the full test split."""

    kind: Literal["subset"]
    base: Literal["mnist", "fashion-mnist"] = "mnist"
    n: PositiveInt
    seed: NonNegativeInt = 0


class DigitPairsData(_Strict):
    """Two digits stacked into 56x28, labelled with their sum (19 classes).

    ``sampling = "fixed"`` trains on ``train_pairs`` pairs drawn once; ``"fresh"`` draws every
    batch's pairs anew from the training digits (:class:`convgrad.data.FreshDigitPairs`, the
    tutorial's ``next_batch`` style); ``train_pairs`` then only sizes the fixed set whose training
    accuracy is logged.
    """

    kind: Literal["digit-pairs"]
    base: Literal["mnist", "fashion-mnist"] = "mnist"
    sampling: Literal["fixed", "fresh"] = "fixed"
    train_pairs: PositiveInt = 60000
    test_pairs: PositiveInt = 10000
    seed: NonNegativeInt = 0


class SyntheticData(_Strict):
    """Noisy class prototypes generated from ``seed``: for tests and smoke runs, no download."""

    kind: Literal["synthetic"]
    train: PositiveInt = 512
    test: PositiveInt = 256
    classes: Annotated[StrictInt, Field(ge=2)] = 10
    height: PositiveInt = 28
    width: PositiveInt = 28
    noise: NonNegativeFloat = 0.3
    seed: NonNegativeInt = 0


DatasetSpec = Annotated[
    MnistData | SubsetData | DigitPairsData | SyntheticData, Field(discriminator="kind")
]

# ---------------------------------------------------------------------------------- layers
IntPair = StrictInt | tuple[StrictInt, StrictInt]


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


class SumDistributionLayer(_Strict):
    """The distribution of the sum of two digits from their two distributions, in log space.

    The input is (N, 2K): the logits of the first and of the second digit (K classes each);
    the output is (N, 2K - 1), ``log p(s) = log sum_k p1(k) p2(s - k)``: a discrete convolution
    of the two distributions (see :class:`convgrad.lab.models.SumDistribution`).
    """

    type: Literal["sum_distribution"]


LayerSpec = Annotated[
    Conv2dLayer | LinearLayer | PoolLayer | DropoutLayer | PlainLayer | SumDistributionLayer,
    Field(discriminator="type"),
]


# ---------------------------------------------------------------------------------- models
class _ModelBase(_Strict):
    init: Literal["default", "tf_tutorial"] = "default"
    init_std: PositiveFloat = 0.1
    init_bias: Finite = 0.1


class LayerListModel(_ModelBase):
    """A plain stack of layers, applied in order."""

    layers: Annotated[list[LayerSpec], Field(min_length=1)]


class Split(_Strict):
    """How to cut the input: into ``parts`` equal slices along ``axis``."""

    axis: Literal["height", "width", "channels"] = "height"
    parts: Annotated[StrictInt, Field(ge=2)] = 2


class SharedTowerModel(_ModelBase):
    """Weight sharing: the *same* tower on each part of the input, concatenated, then a head.

    ``stem`` (default none) runs on the whole input before the split: convolutions over the
    whole 56x28 image with the halves split after pooling are ``stem = [conv, relu, pool, ...]``
    and a tower that starts at ``flatten``.
    """

    stem: list[LayerSpec] = []
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


# the model kinds told apart by their keys: a ``builder`` key, else the keys only one kind has
_MODEL_KINDS: dict[str, type[_ModelBase]] = {
    "layer-list": LayerListModel,
    "split-tower": SharedTowerModel,
}


@functools.cache
def _kind_keys() -> dict[str, frozenset[str]]:
    common = set(_ModelBase.model_fields)
    return {tag: frozenset(set(cls.model_fields) - common) for tag, cls in _MODEL_KINDS.items()}


def _model_kind(value: Any) -> str | None:
    """The tag of a model table (a mapping) or model object, derived from the models' fields."""
    if isinstance(value, Mapping):
        if "builder" in value:
            return "named-builder"
        for tag, keys in _kind_keys().items():
            if tag != "layer-list" and keys & set(value):
                return tag
        return "layer-list"
    if isinstance(value, BaseModel):
        for tag, cls in _MODEL_KINDS.items():
            if type(value) is cls:
                return tag
        return "named-builder"
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
    lr: PositiveFloat = 1e-3
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0


class SgdSpec(_Strict):
    """``convgrad.optim.SGD``."""

    name: Literal["sgd"]
    lr: PositiveFloat
    momentum: NonNegativeFloat = 0.0
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 0.0


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
    eval_test_examples: NonNegativeInt = 2000
    keep_checkpoints: PositiveInt = 2
    loss_ceiling_factor: Annotated[float, Field(gt=1.0, allow_inf_nan=False)] = 1e4


class BudgetSpec(_Strict):
    """Steps under the smaller budgets (``full`` is ``train.steps``)."""

    quick: PositiveInt | None = None
    standard: PositiveInt | None = None


class SweepSpec(_Strict):
    """One run per keep probability; each sets every dropout of the model to ``p = 1 - keep``."""

    keep_prob: Annotated[list[KeepProbability], Field(min_length=1)]

    @field_validator("keep_prob")
    @classmethod
    def _distinct(cls, values: list[float]) -> list[float]:
        if len(set(values)) != len(values):
            raise ValueError(f"expected distinct keep probabilities, received {values}")
        return values


class ReportSpec(_Strict):
    """Where the experiment appears in the report and which figures it gets.

    Attributes:
        section: ``"course"`` (the course's table, its protocol) or ``"beyond"``.
        compare: comparison tables it joins; ``"overfitting"`` puts train against test accuracy.
        plots: ``"curves"`` (training curves), ``"keep-sweep"`` (accuracy against the keep
            probability of a sweep), ``"sum-ceiling"`` (the sum against the single-digit
            accuracy squared), ``"explain"`` (filters, feature maps, saliency, confusions).
        ceiling_of: for ``"sum-ceiling"``, the single-digit experiment whose accuracy squared
            bounds this one.
    """

    section: Literal["course", "beyond"] = "course"
    compare: list[Literal["overfitting"]] = []
    plots: list[Literal["curves", "keep-sweep", "sum-ceiling", "explain"]] = ["curves"]
    ceiling_of: str | None = None


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
        seeds: run once per seed (each in its own ``seed-<s>`` directory); the report gives
            their mean and standard deviation. None: one run with ``seed``.
        order: position in ``convgrad list``, ``reproduce`` and the report (then the name).
        ms_per_example: training milliseconds per example on one core, a cost hint that only
            orders parallel runs (longest first).
        protocol: ``"course"`` evaluates the last weights on the test set, as the course does;
            ``"validation"`` keeps the weights that are best on a validation split carved from
            the training set (``validation_examples`` of it) and reports their test accuracy:
            the test set never selects anything.
        report: the experiment's report section and figures.
        point: the sweep point this spec is (``keep-0.5``), set by :meth:`sweep_points`.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    reference: Fraction | None = None
    reference_note: str = ""
    target: Fraction | None = None
    target_max: Fraction | None = None
    max_params: PositiveInt | None = None
    seed: NonNegativeInt = 0
    seeds: Annotated[list[NonNegativeInt], Field(min_length=1)] | None = None
    order: NonNegativeInt = 1000
    ms_per_example: PositiveFloat = 4.6
    protocol: Literal["course", "validation"] = "course"
    validation_examples: PositiveInt = 5000
    report: ReportSpec = ReportSpec()
    point: str = ""
    dataset: DatasetSpec
    model: ModelSpec
    optimizer: OptimizerSpec = AdamSpec(name="adam")
    train: TrainSpec
    budget: BudgetSpec = BudgetSpec()
    sweep: SweepSpec | None = None

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"expected distinct seeds, received {values}")
        return values

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

        ``seed`` runs that one seed only (the spec's ``seeds`` list is dropped).

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
        if seed is not None:  # one explicit seed replaces the spec's list of seeds
            data["seed"], data["seeds"] = seed, None
        return validate_spec(data)

    def seed_points(self, count: int | None = None) -> list[tuple[str, ExperimentSpec]]:
        """``[(directory, spec)]``: one per seed (``seed-0``...), or ``[("", self)]``.

        Args:
            count: run seeds ``0 .. count - 1`` instead of the spec's ``seeds``.
        """
        seeds = list(range(count)) if count is not None else self.seeds
        if seeds is None:
            return [("", self)]
        points = []
        for seed in seeds:
            data = self.model_dump(mode="python")
            data["seed"], data["seeds"] = seed, None
            points.append((f"seed-{seed}", validate_spec(data)))
        return points

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




# ---------------------------------------------------------------------------------- validation
def _tags_of(annotation: Any) -> set[str]:
    """Tags of the tagged unions inside ``annotation``: each member's value of the union's
    discriminator field (``Field(discriminator="type")`` -> ``conv2d``, ``linear``, ...)."""
    tags: set[str] = set()
    for metadata in getattr(annotation, "__metadata__", ()):
        key = getattr(metadata, "discriminator", None)
        if isinstance(key, str):
            for member in _members(annotation):
                field = member.model_fields.get(key)
                if field is not None and typing.get_origin(field.annotation) is Literal:
                    tags |= {str(value) for value in typing.get_args(field.annotation)}
    for argument in typing.get_args(annotation):
        tags |= _tags_of(argument)
    return tags


def _members(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModel classes inside an annotation (through Annotated, unions and lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _members(arg)]


@functools.cache
def union_tags() -> frozenset[str]:
    """Every tag pydantic may put into an error location, derived from the schema's types.

    The tagged unions' member tags (``conv2d``, ``adam``, ``digit-pairs``...), the model kinds
    (:func:`_model_kind`) and the names pydantic gives to members of unions of plain types.
    """
    tags = {"named-builder", *_MODEL_KINDS, "function-after", "tuple", "int", "is-instance"}
    seen: set[type[BaseModel]] = set()
    pending: list[type[BaseModel]] = [ExperimentSpec]
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for info in cls.model_fields.values():
            annotation = info.annotation
            if isinstance(info.discriminator, str):  # pydantic moves a field's own discriminator
                annotation = Annotated[annotation, Field(discriminator=info.discriminator)]
            tags |= _tags_of(annotation)
            pending += _members(info.annotation)
    return frozenset(tags)


def validate_spec(data: Mapping[str, Any], source: str = "spec") -> ExperimentSpec:
    """Validate a parsed spec.

    Raises:
        SpecError: listing every problem with its dotted key path.
    """
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, data, source, union_tags())) from None
