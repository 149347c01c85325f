"""The experiment schema: pydantic models of a TOML spec that refuse unknown keys.

A spec names the dataset, the model, the optimizer, the training schedule, the seed, the course's
reference accuracy and, optionally, a learning-rate ``[scheduler]``, label smoothing,
``[[train.augment]]`` tables and a sweep over keep probabilities. Every validation error is
reported with the dotted path of the offending key (``optimizer.lr: Input should be greater than
0``), see :class:`SpecError`.

A whole spec (the shipped ``baseline.toml``) is shown in :mod:`convgrad.lab.spec`.

The plus experiments add (``baseline-plus.toml``)::

    layers = [{ type = "conv2d", ... }, { type = "batchnorm" }, { type = "relu" }, ...]

    [optimizer]
    name = "adamw"
    lr = 2e-3
    weight_decay = 0.05
    decay_bias_and_norm = false

    [scheduler]
    kind = "onecycle"        # over train.steps, peak = optimizer.lr

    [train]
    label_smoothing = 0.1

    [[train.augment]]
    name = "RandomAffine"
    degrees = 10
    translate = [0.1, 0.1]
"""

from __future__ import annotations

import copy
import functools
import math
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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


class BatchNormLayer(_Strict):
    """``BatchNorm2d`` after a (N, C, H, W) input, ``BatchNorm1d`` after (N, F) or (N, C, L):
    chosen by the rank of the input; ``num_features`` inferred.

    ``momentum`` is the weight of the new batch in the running statistics (torch's
    convention, not Keras's), in (0, 1].
    """

    type: Literal["batchnorm"]
    eps: PositiveFloat = 1e-5
    momentum: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 0.1
    affine: StrictBool = True


class AdaptivePoolLayer(_Strict):
    """``AdaptiveAvgPool2d(output_size)`` / ``AdaptiveMaxPool2d(output_size)``."""

    type: Literal["adaptive_avgpool", "adaptive_maxpool"]
    output_size: Annotated[StrictInt, Field(gt=0)] | tuple[
        Annotated[StrictInt, Field(gt=0)], Annotated[StrictInt, Field(gt=0)]
    ]


class GlobalAvgPoolLayer(_Strict):
    """Global average pooling: ``AdaptiveAvgPool2d(1)`` then flatten, (N, C, H, W) -> (N, C)."""

    type: Literal["global_avgpool"]


class LeakyReluLayer(_Strict):
    """``LeakyReLU(negative_slope)``."""

    type: Literal["leaky_relu"]
    negative_slope: Finite = 0.01


class EluLayer(_Strict):
    """``ELU(alpha)``."""

    type: Literal["elu"]
    alpha: Finite = 1.0


class GeluLayer(_Strict):
    """``GELU(approximate)``: the exact erf form (``"none"``) or the tanh approximation."""

    type: Literal["gelu"]
    approximate: Literal["none", "tanh"] = "none"


LayerSpec = Annotated[
    Conv2dLayer | LinearLayer | PoolLayer | DropoutLayer | PlainLayer | SumDistributionLayer
    | BatchNormLayer | AdaptivePoolLayer | GlobalAvgPoolLayer | LeakyReluLayer | EluLayer
    | GeluLayer,
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
class _OptimizerBase(_Strict):
    """What every optimizer takes besides its own options.

    Attributes:
        weight_decay: L2 penalty added to the gradient (Adam, SGD, RMSprop), or decoupled
            decay ``w -= lr * weight_decay * w`` (AdamW), as torch.
        decay_bias_and_norm: False puts the parameters of rank <= 1 (biases, BatchNorm's
            weight and bias) into a second parameter group with ``weight_decay = 0``; the
            usual practice for normalised networks. Default True (torch's: every parameter).
    """

    weight_decay: NonNegativeFloat = 0.0
    decay_bias_and_norm: StrictBool = True


class AdamSpec(_OptimizerBase):
    """``convgrad.optim.Adam``."""

    name: Literal["adam"]
    lr: PositiveFloat = 1e-3
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8


class AdamWSpec(_OptimizerBase):
    """``convgrad.optim.AdamW``: Adam with decoupled weight decay (default 0.01, torch's)."""

    name: Literal["adamw"]
    lr: PositiveFloat = 1e-3
    betas: tuple[Probability, Probability] = (0.9, 0.999)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 1e-2


class SgdSpec(_OptimizerBase):
    """``convgrad.optim.SGD``."""

    name: Literal["sgd"]
    lr: PositiveFloat
    momentum: NonNegativeFloat = 0.0
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SgdSpec:
        if self.nesterov and self.momentum <= 0:
            raise ValueError(
                f"nesterov: expected momentum > 0 with nesterov = true, received momentum="
                f"{self.momentum}"
            )
        return self


class RmspropSpec(_OptimizerBase):
    """``convgrad.optim.RMSprop``."""

    name: Literal["rmsprop"]
    lr: PositiveFloat = 1e-2
    alpha: Fraction = 0.99
    eps: PositiveFloat = 1e-8
    momentum: NonNegativeFloat = 0.0
    centered: StrictBool = False


OptimizerSpec = Annotated[
    AdamSpec | AdamWSpec | SgdSpec | RmspropSpec, Field(discriminator="name")
]


# ---------------------------------------------------------------------------------- schedules
class OneCycleSpec(_Strict):
    """``OneCycleLR``: warm up from ``max_lr / div_factor`` to ``max_lr``, anneal to
    ``max_lr / (div_factor * final_div_factor)``; cycles the momentum (Adam's beta1) inversely.

    Attributes:
        max_lr: the peak learning rate; default the optimizer's ``lr``.
        total_steps: the cycle's length in optimizer steps; default the run's ``train.steps``
            (so a smaller budget runs a whole, shorter cycle).
    """

    kind: Literal["onecycle"]
    max_lr: PositiveFloat | None = None
    total_steps: PositiveInt | None = None
    pct_start: Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)] = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    cycle_momentum: StrictBool = True
    base_momentum: Fraction = 0.85
    max_momentum: Fraction = 0.95
    div_factor: PositiveFloat = 25.0
    final_div_factor: PositiveFloat = 1e4
    three_phase: StrictBool = False


class CosineSpec(_Strict):
    """``CosineAnnealingLR``: from the optimizer's ``lr`` to ``eta_min`` over ``T_max`` steps
    (default the run's ``train.steps``)."""

    kind: Literal["cosine"]
    T_max: PositiveInt | None = None  # noqa: N815  (torch's name)
    eta_min: NonNegativeFloat = 0.0


class StepSpec(_Strict):
    """``StepLR``: multiply the learning rate by ``gamma`` every ``step_size`` steps."""

    kind: Literal["step"]
    step_size: PositiveInt
    gamma: PositiveFloat = 0.1


class MultiStepSpec(_Strict):
    """``MultiStepLR``: multiply the learning rate by ``gamma`` at each milestone step."""

    kind: Literal["multistep"]
    milestones: Annotated[list[PositiveInt], Field(min_length=1)]
    gamma: PositiveFloat = 0.1

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, values: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise ValueError(f"expected strictly increasing steps, received {values}")
        return values


class ExponentialSpec(_Strict):
    """``ExponentialLR``: multiply the learning rate by ``gamma`` every step."""

    kind: Literal["exponential"]
    gamma: PositiveFloat


class LinearScheduleSpec(_Strict):
    """``LinearLR``: the factor goes linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps, then stays (a warm-up)."""

    kind: Literal["linear"]
    start_factor: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 1.0 / 3
    end_factor: Fraction = 1.0
    total_iters: PositiveInt = 5


SchedulerSpec = Annotated[
    OneCycleSpec | CosineSpec | StepSpec | MultiStepSpec | ExponentialSpec | LinearScheduleSpec,
    Field(discriminator="kind"),
]
"""A learning-rate schedule, stepped after every optimizer step (torch's order)."""


def _check_augment(table: dict[str, Any]) -> dict[str, Any]:
    """One ``[[train.augment]]`` table, checked by building it (:func:`transforms.from_config`)."""
    from convgrad.data.transforms import from_config
    from convgrad.errors import ArgumentError

    try:
        from_config([table], where="")
    except ArgumentError as error:
        message = str(error).removeprefix("[0]: ")
        raise PydanticCustomError("augment", "{detail}", {"detail": message}) from None
    return table


AugmentTable = Annotated[dict[str, Any], AfterValidator(_check_augment)]


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
        label_smoothing: the training loss's ``F.cross_entropy(label_smoothing=)``, in [0, 1].
        augment: ``[[train.augment]]`` tables, each a transform of
            :mod:`convgrad.data.transforms` (``name = "RandomAffine"`` and its arguments),
            applied in order to every training batch (:func:`transforms.from_config`); never to
            evaluation. Replayed exactly on resume.
    """

    batch_size: PositiveInt = 50
    steps: PositiveInt
    eval_every: PositiveInt = 1000
    checkpoint_every: PositiveInt | None = None
    eval_train_examples: PositiveInt = 1000
    eval_test_examples: NonNegativeInt = 2000
    keep_checkpoints: PositiveInt = 2
    loss_ceiling_factor: Annotated[float, Field(gt=1.0, allow_inf_nan=False)] = 1e4
    label_smoothing: Fraction = 0.0
    augment: list[AugmentTable] = []


class BudgetSpec(_Strict):
    """Steps under the smaller budgets (``full`` is ``train.steps``).

    Attributes:
        quick, standard: optimizer steps under those budgets (default ``train.steps``).
        evaluations: the most evaluations of a quick or standard run (default 10,
            :data:`BUDGET_EVALUATION`); fewer keeps the validation passes of a short run cheap.
        quick_seeds: under the quick budget run only the first ``quick_seeds`` of ``seeds``
            (default all), so the quick suite stays short; standard and full run them all.
    """

    quick: PositiveInt | None = None
    standard: PositiveInt | None = None
    evaluations: PositiveInt | None = None
    quick_seeds: PositiveInt | None = None


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
        reference_disagreement: what another source says of the same experiment where it
            disagrees with the reference (the report's references table shows it beside the
            reference and the measured accuracy).
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
        optimizer: ``[optimizer]``: adam, adamw, sgd or rmsprop, with ``weight_decay`` and
            ``decay_bias_and_norm``.
        scheduler: ``[scheduler]``: a learning-rate schedule (``kind`` = onecycle, cosine,
            step, multistep, exponential, linear), stepped after every optimizer step and
            checkpointed with the run; None keeps the optimizer's ``lr``.
        point: the sweep point this spec is (``keep-0.5``), set by :meth:`sweep_points`.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    reference: Fraction | None = None
    reference_note: str = ""
    reference_disagreement: str = ""
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
    scheduler: SchedulerSpec | None = None
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
    def _schedule_covers_run(self) -> ExperimentSpec:
        schedule, steps = self.scheduler, self.train.steps
        if isinstance(schedule, OneCycleSpec) and schedule.total_steps is not None \
                and schedule.total_steps < steps:
            raise ValueError(
                f"scheduler.total_steps: expected at least train.steps={steps} (OneCycleLR "
                f"cannot step past its cycle), received {schedule.total_steps}"
            )
        if isinstance(schedule, OneCycleSpec) and schedule.base_momentum > schedule.max_momentum:
            raise ValueError(
                f"scheduler.base_momentum: expected at most max_momentum="
                f"{schedule.max_momentum}, received {schedule.base_momentum}"
            )
        return self

    @property
    def schedule_follows_steps(self) -> bool:
        """The scheduler's length is ``train.steps`` (OneCycle without ``total_steps``, cosine
        without ``T_max``): then ``train.steps`` cannot change on resume."""
        schedule = self.scheduler
        return (isinstance(schedule, OneCycleSpec) and schedule.total_steps is None) or (
            isinstance(schedule, CosineSpec) and schedule.T_max is None
        )

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

        Under the quick and standard budgets a run evaluates at most 10 times (or
        ``budget.evaluations``), on smaller fixed subsets during training
        (:data:`BUDGET_EVALUATION`); the last evaluation is still on the whole test set. The
        quick budget keeps the first ``budget.quick_seeds`` seeds only, when that is set.
        """
        data = self.model_dump(mode="python")
        train = data["train"]
        if budget is not None and budget != "full":
            self.steps_for(budget)  # validates the name
            full_steps, full_every = train["steps"], train["eval_every"]
            max_evaluations, eval_examples = BUDGET_EVALUATION[budget]
            max_evaluations = min(max_evaluations, self.budget.evaluations or max_evaluations)
            if budget == "quick" and self.budget.quick_seeds and data["seeds"]:
                data["seeds"] = data["seeds"][: self.budget.quick_seeds]
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
