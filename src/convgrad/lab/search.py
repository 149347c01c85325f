"""``convgrad search SPEC``: hyperparameter and architecture search with Ray Tune.

A search spec is an experiment spec plus a ``[search]`` table::

    [search]
    samples = 16              # trials drawn from the space
    seed = 0                  # the draws are a function of this seed
    scheduler = "asha"        # or "fifo": every trial runs to the end
    grace_period = 2          # evaluations before ASHA may stop a trial
    reduction_factor = 3      # ASHA keeps the best 1/3 at each rung
    max_params = 20000        # trials with more parameters are refused, never trained
    target = 0.99             # best = the smallest network reaching it on validation
    validation = 5000         # 5,000 held-out training examples; the test set is never used
    cpus_per_trial = 1

    [search.space]            # dotted keys of the spec
    "optimizer.lr" = { loguniform = [5e-4, 5e-3] }
    "model.channels" = { choice = [[4, 8, 8], [8, 16, 16]] }
    "model.kernel" = { randint = [3, 6] }        # 3, 4 or 5 (the upper end is excluded)
    "train.batch_size" = { choice = [32, 50] }

The ``[search]`` table is removed before the rest is validated as an ordinary spec (the spec
schema is not changed). Trials are drawn here, from ``seed``, so a search is reproducible; a drawn
spec whose model has more than ``max_params`` parameters (counted by building it) is refused
before anything is submitted. The others run as Ray Tune trials, each an ordinary run directory
(``OUT/trials/trial-003``) trained by :func:`convgrad.lab.runner.run_experiment` with exact resume,
whose "test" split is the validation split (:func:`validation_datasets`). ASHA early-stops the
weak trials on the validation accuracy reported after each evaluation.

Writes ``OUT/trials.csv``, ``OUT/trials.md``, ``OUT/search.png`` and ``OUT/best.toml``: the best
trial's settings applied to the original spec (its full schedule, the full training set, the test
set), which ``convgrad run OUT/best.toml`` trains.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from convgrad.files import atomic_write
from convgrad.lab.spec import (
    ExperimentSpec,
    SpecError,
    format_validation_error,
    validate_spec,
)

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
METRIC = "val_acc"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dimension(_Strict):
    """One axis of the space: exactly one of ``uniform``, ``loguniform``, ``randint``, ``choice``.

    ``uniform = [low, high]`` and ``loguniform = [low, high]`` draw floats (rounded to 4
    significant digits); ``randint = [low, high]`` draws an integer in ``[low, high)`` (as
    ``ray.tune.randint``); ``choice = [...]`` draws one of the values (any TOML values).
    """

    uniform: tuple[float, float] | None = None
    loguniform: tuple[PositiveFloat, PositiveFloat] | None = None
    randint: tuple[int, int] | None = None
    choice: Annotated[list[Any], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Dimension:
        given = [name for name in ("uniform", "loguniform", "randint", "choice")
                 if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of uniform, loguniform, randint, choice; received "
                f"{given or 'none'}"
            )
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"expected low < high, received {list(bounds)}")
        return self

    def sample(self, rng: np.random.Generator) -> Any:
        """One value drawn with ``rng``."""
        if self.uniform is not None:
            return _round(rng.uniform(*self.uniform))
        if self.loguniform is not None:
            low, high = self.loguniform
            return _round(math.exp(rng.uniform(math.log(low), math.log(high))))
        if self.randint is not None:
            return int(rng.integers(*self.randint))
        assert self.choice is not None
        return copy.deepcopy(self.choice[int(rng.integers(len(self.choice)))])

    def example(self) -> Any:
        """A value of the space (the lower end, or the first choice), to check the key early."""
        if self.choice is not None:
            return copy.deepcopy(self.choice[0])
        return (self.uniform or self.loguniform or self.randint)[0]  # type: ignore[index]


def _round(value: float) -> float:
    return float(f"{value:.4g}")


class SearchSpec(_Strict):
    """The ``[search]`` table (see the module docstring)."""

    space: Annotated[dict[str, Dimension], Field(min_length=1)]
    samples: PositiveInt = 8
    seed: Annotated[int, Field(ge=0)] = 0
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: PositiveInt = 2
    reduction_factor: Annotated[int, Field(ge=2)] = 3
    max_params: PositiveInt | None = None
    target: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    validation: PositiveInt = 5000
    cpus_per_trial: PositiveInt = 1


class _SearchTable(_Strict):
    search: SearchSpec


# ---------------------------------------------------------------------------------- loading
def searches_dir() -> Path:
    """The folder of the searches shipped with the package."""
    return Path(__file__).with_name("searches")


def load_search(name_or_path: str | Path) -> tuple[ExperimentSpec, SearchSpec]:
    """A search spec: the experiment (without ``[search]``) and its search table.

    Args:
        name_or_path: a ``.toml`` file, or the name of a shipped search (``minimal-search``).

    Raises:
        SpecError: unreadable file, no ``[search]`` table, an invalid table or experiment, or a
            space key that names no key of the experiment.
    """
    path = Path(name_or_path)
    if not (path.suffix == ".toml" or path.exists()):
        shipped = searches_dir() / f"{name_or_path}.toml"
        if not shipped.is_file():
            known = sorted(p.stem for p in searches_dir().glob("*.toml"))
            raise SpecError(f"unknown search {str(name_or_path)!r}: expected one of {known} or a "
                            "path to a .toml spec with a [search] table")
        path = shipped
    source = f"spec {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SpecError(f"cannot read spec {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"invalid {source}: TOML syntax error: {error}") from None
    table = data.pop("search", None)
    if table is None:
        raise SpecError(f"{source}: expected a [search] table (with [search.space]), found none")
    try:
        search = _SearchTable.model_validate({"search": table}).search
    except ValidationError as error:
        raise SpecError(format_validation_error(error, {"search": table}, source)) from None
    spec = validate_spec(data, source=source)
    if spec.sweep is not None:
        raise SpecError(f"{source}: sweep: a search spec cannot also sweep; remove [sweep]")
    base = spec.model_dump(mode="json")
    for key, dimension in search.space.items():
        try:
            _set_dotted(copy.deepcopy(base), key, dimension.example())
        except KeyError:
            raise SpecError(f"{source}: search.space.{key!r}: no key {key!r} in the spec "
                            "(expected a dotted path such as 'optimizer.lr')") from None
    return spec, search


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Set ``data['a']['b'] = value`` for ``key = 'a.b'``; every part must already exist."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise KeyError(key)
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        raise KeyError(key)
    node[parts[-1]] = value
    return data


# ---------------------------------------------------------------------------------- trials
@dataclass
class Trial:
    """One point of the space: its settings, its spec, and what became of it."""

    index: int
    settings: dict[str, Any]
    spec: ExperimentSpec | None
    parameters: int | None
    refused: str | None = None
    status: str = "pending"
    val_acc: float | None = None
    step: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``trial-003``."""
        return f"trial-{self.index:03d}"


def count_spec_parameters(spec: ExperimentSpec) -> int:
    """Parameters of the spec's model, counted by building it (no data is loaded)."""
    from convgrad.lab.datasets import dataset_geometry
    from convgrad.lab.models import build_model, count_parameters

    input_shape, num_classes = dataset_geometry(spec.dataset)
    return count_parameters(build_model(spec.model, input_shape, num_classes))


def draw_trials(
    spec: ExperimentSpec, search: SearchSpec, *, budget: str | None = None,
    samples: int | None = None,
) -> list[Trial]:
    """The trials of a search, drawn from ``search.seed``; refused ones are marked, not dropped.

    A trial is refused when its settings make an invalid spec or when its model has more than
    ``search.max_params`` parameters.
    """
    rng = np.random.default_rng(search.seed)
    base = spec.model_dump(mode="json")
    trials = []
    for index in range(samples or search.samples):
        settings = {key: dimension.sample(rng) for key, dimension in search.space.items()}
        data = copy.deepcopy(base)
        for key, value in settings.items():
            _set_dotted(data, key, value)
        data["name"] = f"{spec.name}-trial-{index:03d}"
        try:
            trial_spec = validate_spec(data, source=f"search trial {index}")
            if budget is not None:
                trial_spec = trial_spec.with_overrides(budget=budget)
            parameters = count_spec_parameters(trial_spec)
        except (SpecError, ValueError) as error:
            first = str(error).replace("\n", " ")
            trials.append(Trial(index, settings, None, None, f"invalid: {first}", "refused"))
            continue
        trial = Trial(index, settings, trial_spec, parameters)
        if search.max_params is not None and parameters > search.max_params:
            trial.refused = f"{parameters:,} parameters > max_params {search.max_params:,}"
            trial.status = "refused"
        trials.append(trial)
    return trials


def validation_datasets(dataset_spec: Any, validation: int) -> Any:
    """Train on the training set less ``validation`` held-out examples; "test" on those.

    The held-out examples are the lab's validation split (``protocol = "validation"``,
    :func:`convgrad.lab.datasets.load_datasets`): the same positions, drawn by a fixed seed, so a
    search and a validation-protocol run of the same dataset select on the same images (for
    digit pairs, on pairs of held-out digits). The test split is loaded by the data layer but
    never evaluated.

    Raises:
        SpecError: ``validation`` is not smaller than the training set.
    """
    from convgrad.lab.datasets import load_datasets

    try:
        data = load_datasets(dataset_spec, validation)
    except SpecError as error:
        raise SpecError(str(error).replace("validation_examples:", "search.validation:", 1)) \
            from None
    return data._replace(test=data.validation, validation=None)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    from convgrad.lab.metrics import MetricsLog

    path = Path(run_dir) / "metrics.jsonl"
    return MetricsLog(path).read() if path.is_file() else []


def _trial_main(config: dict[str, Any]) -> None:
    """A Tune trial: train in chunks of one evaluation, reporting the validation accuracy after
    each, so ASHA can stop the trial between chunks. A restarted trial (its worker died) resumes
    from the run directory's last checkpoint and reports its earlier evaluations again."""
    from ray import tune
    from threadpoolctl import threadpool_limits

    import convgrad as cg
    from convgrad.lab.checkpoint import MANIFEST
    from convgrad.lab.runner import run_experiment

    config = config["trial"]
    spec = validate_spec(config["spec"])
    run_dir = Path(config["run_dir"])
    threads = int(config["threads"])
    cg.set_num_threads(threads)
    datasets = validation_datasets(spec.dataset, int(config["validation"]))
    reported = 0

    def report_new() -> None:
        nonlocal reported
        records = _records(run_dir)
        for record in records[reported:]:
            tune.report({METRIC: record["test_acc"], "step": record["step"],
                         "train_loss": record["train_loss"]})
        reported = len(records)

    with threadpool_limits(limits=threads):
        report_new()
        while True:
            manifest = run_dir / MANIFEST
            step = json.loads(manifest.read_text())["step"] if manifest.is_file() else 0
            outcome = run_experiment(spec, run_dir, resume=True, progress=False, datasets=datasets,
                                     budget=config["budget"], stop_after=step + 1)
            report_new()
            if outcome.status != "stopped":
                if outcome.status != "completed" and reported == 0:
                    tune.report({METRIC: 0.0, "step": 0, "train_loss": float("nan")})
                return


# ---------------------------------------------------------------------------------- driver
@dataclass
class SearchOutcome:
    """What :func:`run_search` returns."""

    trials: list[Trial]
    best: Trial | None
    files: list[Path]


def run_search(
    name_or_path: str | Path,
    out: Path,
    *,
    budget: str | None = None,
    samples: int | None = None,
    address: str = "local",
    max_retries: int = 3,
    resume: bool = False,
    say: Callable[[str], None] | None = None,
) -> SearchOutcome:
    """Draw the trials, run the allowed ones as Tune trials, write the table, plot and best spec.

    Raises:
        SpecError: an invalid search spec, every trial refused, or ``out`` already holding a
            search without ``resume``.
        RayUnavailableError, ClusterError: see :func:`convgrad.lab.distributed.connect`.
    """
    from convgrad.lab.distributed import connect

    say = say or (lambda line: None)
    spec, search = load_search(name_or_path)
    trials = draw_trials(spec, search, budget=budget, samples=samples)
    runnable = [trial for trial in trials if trial.refused is None]
    out = Path(out).resolve()
    trials_dir = out / "trials"
    if trials_dir.exists() and any(trials_dir.iterdir()) and not resume:
        raise SpecError(f"{out} already holds a search; pass --resume to continue it or choose "
                        "another --out")
    for trial in trials:
        if trial.refused:
            say(f"{trial.label} refused: {trial.refused} ({_settings_text(trial.settings)})")
    if not runnable:
        raise SpecError(f"search {spec.name}: every one of the {len(trials)} trials was refused "
                        "(see above); widen search.space or raise search.max_params")
    out.mkdir(parents=True, exist_ok=True)
    with connect(address):
        errored = _tune(spec, search, runnable, trials_dir, out, budget, max_retries, say)
    for trial in runnable:
        _collect(trial, trials_dir / trial.label)
        if trial.index in errored:
            trial.status = "failed"
    best = pick_best(trials, search.target)
    files = write_outputs(spec, search, trials, best, out)
    return SearchOutcome(trials, best, files)


def _tune(
    spec: ExperimentSpec, search: SearchSpec, runnable: Sequence[Trial], trials_dir: Path,
    out: Path, budget: str | None, max_retries: int, say: Callable[[str], None],
) -> set[int]:
    """Run the trials with Tune; returns the indices of those that failed after retries."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    evaluations = max(
        math.ceil(trial.spec.train.steps / trial.spec.train.eval_every)  # type: ignore[union-attr]
        for trial in runnable
    )
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=max(1, evaluations),
                      grace_period=min(search.grace_period, max(1, evaluations)),
                      reduction_factor=search.reduction_factor)
        if search.scheduler == "asha" else FIFOScheduler()
    )
    by_index = {trial.index: trial for trial in runnable}
    configs = [
        {"index": trial.index, "spec": trial.spec.model_dump(mode="json"),  # type: ignore[union-attr]
         "run_dir": str(trials_dir / trial.label), "threads": search.cpus_per_trial,
         "validation": search.validation, "budget": budget or "custom"}
        for trial in runnable
    ]
    done = [0]
    errored: set[int] = set()

    class Progress(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._line(trial, "ended")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            errored.add(trial.config["trial"]["index"])
            self._line(trial, "failed")

        def _line(self, tune_trial: Any, how: str) -> None:
            ours = by_index[tune_trial.config["trial"]["index"]]
            _collect(ours, trials_dir / ours.label)
            if how == "failed":
                ours.status = "failed"
            done[0] += 1
            accuracy = "-" if ours.val_acc is None else f"{ours.val_acc:.4f}"
            say(f"[{done[0]}/{len(runnable)}] {ours.label} {ours.status}"
                f": val acc {accuracy} at step {ours.step}, {ours.parameters:,} parameters "
                f"({_settings_text(ours.settings)})")

    tuner = tune.Tuner(
        tune.with_resources(_trial_main, {"cpu": search.cpus_per_trial}),
        param_space={"trial": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", scheduler=scheduler, num_samples=1,
            trial_name_creator=lambda t: f"trial-{t.config['trial']['index']:03d}",
            trial_dirname_creator=lambda t: f"trial-{t.config['trial']['index']:03d}",
        ),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(out), verbose=0, callbacks=[Progress()],
            failure_config=tune.FailureConfig(max_failures=max_retries),
        ),
    )
    tuner.fit()
    return errored


def _collect(trial: Trial, run_dir: Path) -> None:
    """Fill a trial's status, curve and final validation accuracy from its run directory."""
    records = _records(run_dir)
    trial.curve = [(int(r["step"]), float(r["test_acc"])) for r in records]
    trial.step = trial.curve[-1][0] if trial.curve else 0
    trial.val_acc = trial.curve[-1][1] if trial.curve else None
    result_path = run_dir / "result.json"
    if result_path.is_file():
        trial.status = json.loads(result_path.read_text())["status"]
    elif trial.spec is not None and trial.curve and trial.step < trial.spec.train.steps:
        trial.status = "stopped"
    else:
        trial.status = "failed"


def pick_best(trials: Sequence[Trial], target: float | None) -> Trial | None:
    """With a target: the fewest parameters among the trials reaching it at their last
    evaluation (ties: higher accuracy). Otherwise, or if none reaches it: the highest accuracy
    (ties: fewer parameters)."""
    scored = [t for t in trials if t.val_acc is not None and t.parameters is not None]
    if not scored:
        return None
    if target is not None:
        reaching = [t for t in scored if t.val_acc >= target]  # type: ignore[operator]
        if reaching:
            return min(reaching, key=lambda t: (t.parameters, -t.val_acc))  # type: ignore[operator]
    return max(scored, key=lambda t: (t.val_acc, -t.parameters))  # type: ignore[operator]


# ---------------------------------------------------------------------------------- outputs
def _settings_text(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value)}" for key, value in settings.items())


def trial_rows(trials: Sequence[Trial]) -> list[dict[str, Any]]:
    """One flat dict per trial: index, status, parameters, step, val_acc, then the settings."""
    return [
        {"trial": t.label, "status": t.status, "parameters": t.parameters, "steps": t.step,
         METRIC: None if t.val_acc is None else round(t.val_acc, 6),
         **{key: json.dumps(value) if isinstance(value, list) else value
            for key, value in t.settings.items()},
         "note": t.refused or ""}
        for t in trials
    ]


def write_outputs(
    spec: ExperimentSpec, search: SearchSpec, trials: Sequence[Trial], best: Trial | None,
    out: Path,
) -> list[Path]:
    """``trials.csv``, ``trials.md``, ``search.png`` and (if a trial was scored) ``best.toml``."""
    rows = trial_rows(trials)
    columns = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    files = [out / "trials.csv", out / "trials.md", out / "search.png"]
    atomic_write(files[0], buffer.getvalue().encode())
    lines = [
        f"# Search {spec.name}: {len(trials)} trials",
        "",
        f"Validation accuracy on the last {search.validation:,} training examples (the test set "
        f"is not used); scheduler {search.scheduler}"
        + (f"; max_params {search.max_params:,}" if search.max_params else "")
        + (f"; target {search.target}" if search.target is not None else "") + ".",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join("" if row[c] is None else str(row[c]) for c in columns)
                     + " |")
    if best is not None:
        lines += ["", f"Best: {best.label} ({best.parameters:,} parameters, validation accuracy "
                  f"{best.val_acc:.4f}); its spec: best.toml"]
    atomic_write(files[1], ("\n".join(lines) + "\n").encode())
    _plot(trials, search, files[2])
    if best is not None:
        files.append(out / "best.toml")
        atomic_write(files[3], best_spec_toml(spec, search, best).encode())
    return files


def best_spec_toml(spec: ExperimentSpec, search: SearchSpec, best: Trial) -> str:
    """The original spec with the best trial's settings, as TOML that ``convgrad run`` accepts.

    It keeps the original schedule and budgets, and trains on the whole training set.
    """
    data = spec.model_dump(mode="json", exclude_none=True)
    for key, value in best.settings.items():
        _set_dotted(data, key, value)
    data["name"] = f"{spec.name}-best"
    data["description"] = (
        f"{best.label} of search {spec.name}: {best.parameters:,} parameters, validation accuracy "
        f"{best.val_acc:.4f} after {best.step} steps"
    )
    data.pop("point", None)
    validate_spec(data)
    header = (f"# Written by convgrad search {spec.name}: the best of {search.samples} trials "
              f"({_settings_text(best.settings)}).\n")
    return header + to_toml(data)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    raise TypeError(f"to_toml: cannot write {type(value).__name__} {value!r}")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """TOML text for nested dicts of TOML values (None values are left out; lists of tables
    become arrays of inline tables). ``tomllib.loads(to_toml(d)) == d`` without Nones."""
    scalars = {k: v for k, v in data.items() if v is not None and not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    text = "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in scalars.items())
    for key, table in tables.items():
        name = f"{prefix}{_toml_key(key)}"
        text += f"\n[{name}]\n" + to_toml(table, prefix=f"{name}.").lstrip("\n")
    return text


def _plot(trials: Sequence[Trial], search: SearchSpec, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = {"completed": ("o", "tab:blue"), "stopped": ("v", "tab:orange"),
               "diverged": ("x", "tab:red"), "failed": ("x", "tab:red")}
    for status, (marker, color) in markers.items():
        chosen = [t for t in trials if t.status == status and t.val_acc is not None]
        if chosen:
            left.scatter([t.parameters for t in chosen], [t.val_acc for t in chosen],
                         marker=marker, color=color, label=f"{status} ({len(chosen)})")
    refused = [t for t in trials if t.status == "refused" and t.parameters is not None]
    if refused:
        for t in refused:
            left.axvline(t.parameters, color="0.8", lw=0.8)
        left.plot([], [], color="0.8", label=f"refused ({len(refused)})")
    if search.max_params:
        left.axvline(search.max_params, color="k", ls="--", lw=1, label="max_params")
    if search.target is not None:
        left.axhline(search.target, color="tab:green", ls=":", lw=1, label="target")
        right.axhline(search.target, color="tab:green", ls=":", lw=1)
    left.set_xscale("log")
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.set_xlabel("parameters")
    left.set_ylabel("validation accuracy (last evaluation)")
    left.legend(fontsize=8)
    for t in trials:
        if t.curve:
            steps, values = zip(*t.curve, strict=True)
            right.plot(steps, values, marker=".", lw=1, label=t.label)
    if 0 < len([t for t in trials if t.curve]) <= 12:
        right.legend(fontsize=7, ncol=2)
    right.set_xlabel("step")
    right.set_ylabel("validation accuracy")
    right.set_title("curves (ASHA stops the weak ones early)", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write(path, buffer.getvalue())


# ---------------------------------------------------------------------------------- command line
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``convgrad search``."""
    from convgrad.lab.cli_common import _non_negative, _positive

    parser = subparsers.add_parser(
        "search", help="hyperparameter and architecture search with Ray Tune (a spec's [search])",
        description="Draw trials from the spec's [search] table, refuse those over max_params, "
        "train the rest as Ray Tune trials (ASHA early-stops weak ones) on a validation split "
        "carved from the training set, and write trials.csv, trials.md, search.png and best.toml "
        "to --out. Needs pip install 'convgrad[ray]'.",
    )
    parser.add_argument("spec", metavar="NAME|SPEC.toml",
                        help="a shipped search (minimal-search) or a spec file with [search]")
    parser.add_argument("--budget", choices=("quick", "standard", "full"),
                        help="each trial's steps: the spec's budget (default: train.steps)")
    parser.add_argument("--samples", type=_positive, help="trials (overrides search.samples)")
    parser.add_argument("--out", type=Path, help="directory (default: runs/search-<name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the search in --out (finished trials are kept)")
    parser.add_argument("--ray", default="local", metavar="ADDRESS",
                        help="'local' (default), 'auto', 'ray://HOST:PORT' or 'HOST:PORT'")
    parser.add_argument("--max-retries", type=_non_negative, default=3, metavar="N",
                        help="restarts of a trial whose worker died (default: 3)")
    parser.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    """``convgrad search``."""
    from convgrad.lab.distributed import ClusterError, RayUnavailableError, import_ray

    try:
        import_ray()
        spec, _ = load_search(args.spec)
        out = args.out or Path("runs") / f"search-{spec.name}"
        started = time.perf_counter()
        outcome = run_search(args.spec, out, budget=args.budget, samples=args.samples,
                             address=args.ray, max_retries=args.max_retries, resume=args.resume,
                             say=lambda line: print(line, flush=True))
    except (SpecError, RayUnavailableError, ClusterError) as error:
        print(f"convgrad: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convgrad: error: interrupted; continue with the same command and --resume",
              file=sys.stderr)
        return 130
    print(f"search ended after {time.perf_counter() - started:.0f} s")
    if outcome.best is None:
        print("convgrad: error: no trial produced a validation accuracy", file=sys.stderr)
        return 1
    best = outcome.best
    print(f"best: {best.label}, {best.parameters:,} parameters, validation accuracy "
          f"{best.val_acc:.4f} ({_settings_text(best.settings)})")
    print("wrote " + ", ".join(str(p) for p in outcome.files))
    failed = [t.label for t in outcome.trials if t.status == "failed"]
    if failed:
        print(f"convgrad: error: trials failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
