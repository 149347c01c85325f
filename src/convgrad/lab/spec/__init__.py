"""Experiment specs: TOML files validated by pydantic models that refuse unknown keys.

- :mod:`~convgrad.lab.spec.schema`: the models (dataset, layers, model, optimizer, schedule,
  budget, sweep, seeds, protocol, report) and :func:`validate_spec`;
- :mod:`~convgrad.lab.spec.errors`: :class:`SpecError` and pydantic's errors as one line per key
  path (``optimizer.lr: Input should be greater than 0``);
- :mod:`~convgrad.lab.spec.registry`: loading files and the registry of experiments (every
  ``*.toml`` of the shipped folder and of ``CONVGRAD_SPECS``, in each spec's ``order``).

Example (the shipped ``baseline.toml``)::

    name = "baseline"
    order = 0
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
    quick = 300
    standard = 2000

A new table (say ``[search]``) is one more optional field of :class:`ExperimentSpec` whose type
is its own pydantic model (``search: SearchSpec | None = None``), in its own module.
"""

from convgrad.lab.spec.errors import SpecError, format_validation_error
from convgrad.lab.spec.registry import (
    SPECS_ENV,
    builtin_dir,
    builtin_names,
    experiment_order,
    load_spec,
    registry,
    resolve_spec,
    spec_dirs,
)
from convgrad.lab.spec.schema import (
    BUDGET_EVALUATION,
    BUDGETS,
    AdamSpec,
    AdamWSpec,
    AdaptivePoolLayer,
    BatchNormLayer,
    BudgetSpec,
    BuilderModel,
    Conv2dLayer,
    CosineSpec,
    DatasetSpec,
    DeepMnistBuilder,
    DigitPairsData,
    DigitSumBuilder,
    DropoutLayer,
    EluLayer,
    ExperimentSpec,
    ExponentialSpec,
    GeluLayer,
    GlobalAvgPoolLayer,
    LayerListModel,
    LayerSpec,
    LeakyReluLayer,
    LinearLayer,
    LinearScheduleSpec,
    MinimalBuilder,
    MnistData,
    ModelSpec,
    MultiStepSpec,
    OneConvBuilder,
    OneCycleSpec,
    OptimizerSpec,
    PlainLayer,
    PoolLayer,
    ReportSpec,
    RmspropSpec,
    SchedulerSpec,
    SgdSpec,
    SharedTowerModel,
    Split,
    StepSpec,
    SubsetData,
    SumDistributionLayer,
    SweepSpec,
    SyntheticData,
    TrainSpec,
    dropout_of,
    union_tags,
    validate_spec,
)

__all__ = [
    "AdamSpec",
    "AdamWSpec",
    "AdaptivePoolLayer",
    "BatchNormLayer",
    "CosineSpec",
    "EluLayer",
    "ExponentialSpec",
    "GeluLayer",
    "GlobalAvgPoolLayer",
    "LeakyReluLayer",
    "LinearScheduleSpec",
    "MultiStepSpec",
    "OneCycleSpec",
    "RmspropSpec",
    "SchedulerSpec",
    "StepSpec",
    "BUDGETS",
    "BUDGET_EVALUATION",
    "BudgetSpec",
    "BuilderModel",
    "Conv2dLayer",
    "DatasetSpec",
    "DeepMnistBuilder",
    "DigitPairsData",
    "DigitSumBuilder",
    "DropoutLayer",
    "ExperimentSpec",
    "LayerListModel",
    "LayerSpec",
    "LinearLayer",
    "MinimalBuilder",
    "MnistData",
    "ModelSpec",
    "OneConvBuilder",
    "OptimizerSpec",
    "PlainLayer",
    "PoolLayer",
    "ReportSpec",
    "SPECS_ENV",
    "SgdSpec",
    "SharedTowerModel",
    "SpecError",
    "Split",
    "SubsetData",
    "SumDistributionLayer",
    "SweepSpec",
    "SyntheticData",
    "TrainSpec",
    "builtin_dir",
    "builtin_names",
    "dropout_of",
    "experiment_order",
    "format_validation_error",
    "load_spec",
    "registry",
    "resolve_spec",
    "spec_dirs",
    "union_tags",
    "validate_spec",
]
