"""``report.md`` and a self-contained ``report.html`` from the runs in a directory.

The report is built once as a list of blocks (headings, paragraphs, tables, figures) and rendered
twice: Markdown with the figures saved under ``plots/``, HTML with them embedded as base64
``data:image/png`` URIs, so the HTML file can be mailed on its own.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convgrad.errors import MetricsError
from convgrad.files import atomic_write, lock_holder
from convgrad.lab import plots
from convgrad.lab.metrics import MetricsLog

COURSE_DIGIT_CEILING = 0.984
NO_VALUE = "—"
PROTOCOLS = {
    "course": "course protocol: the last weights, evaluated on the test set",
    "validation": "validation protocol: the weights best on a validation split carved from the "
                  "training set, evaluated once on the test set",
}


# ---------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One finished (or diverged) run: its result, its spec and its metrics."""

    run_dir: Path
    result: dict[str, Any]
    spec: dict[str, Any]
    metrics: list[dict[str, Any]]
    display: str = ""

    @property
    def name(self) -> str:
        """The experiment's name."""
        return self.result.get("name") or self.spec.get("name", self.run_dir.name)

    @property
    def point(self) -> str:
        """The sweep point (``keep-0.5``) or ``""``."""
        return self.result.get("point") or self.spec.get("point", "")

    @property
    def label(self) -> str:
        """``name`` or ``name keep-0.5`` (the directory when two runs would share a label)."""
        return self.display or f"{self.name} {self.point}".strip()

    @property
    def test_acc(self) -> float | None:
        """Final test accuracy (whole test set), or None."""
        return self.result.get("test_acc")

    @property
    def seed(self) -> int:
        """The run's seed."""
        return int(self.result.get("seed", self.spec.get("seed", 0)))

    @property
    def protocol(self) -> str:
        """``course`` or ``validation`` (see :data:`PROTOCOLS`)."""
        return self.result.get("protocol") or self.spec.get("protocol") or "course"

    @property
    def report_spec(self) -> dict[str, Any]:
        """The spec's ``[report]`` table (the defaults for runs written before it existed)."""
        from convgrad.lab.spec import ReportSpec

        return {**ReportSpec().model_dump(mode="json"), **(self.spec.get("report") or {})}

    @property
    def group(self) -> str:
        """The label shared by the seeds of one experiment (and sweep point)."""
        return f"{self.name} {self.point}".strip()


def _order_key(run: Run, order: dict[str, int]) -> tuple:
    spec_order = run.spec.get("order")
    position = order.get(run.name, len(order) + (spec_order if spec_order is not None else 1000))
    return (position, run.name, run.result.get("keep_prob") or 0.0, run.seed)


_NUMBER = (int, float)
_RESULT_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str, "point": str, "status": str, "message": str, "budget": str, "dataset": str,
    **{key: _NUMBER for key in (
        "keep_prob", "test_acc", "train_acc", "test_examples", "wall_time", "train_time",
        "samples_per_s", "steps", "steps_done", "parameters", "batch_size", "reference",
        "target", "target_max", "max_params", "seed", "diverged_step", "last_checkpoint_step",
    )},
}


def _well_formed(result: Any) -> bool:
    """A JSON object whose fields the report reads have the types convgrad writes (or null)."""
    if not isinstance(result, dict):
        return False
    for key, types in _RESULT_TYPES.items():
        value = result.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            return False
        if isinstance(value, float) and value != value:  # nan sorts and compares badly
            return False
    return True


def collect_runs(directory: Path) -> list[Run]:
    """Every run under ``directory`` that has a ``result.json``, in the experiments' order
    (the registry's, then each spec's ``order``), then sweep point and seed."""
    from convgrad.lab.spec import experiment_order

    order = experiment_order()
    runs = []
    for result_path in sorted({*Path(directory).rglob("result.json"),
                               *Path(directory).rglob("spec.json")}):
        run_dir = result_path.parent
        if result_path.name == "spec.json" and (run_dir / "result.json").is_file():
            continue  # listed through its result.json
        try:
            spec_path = run_dir / "spec.json"
            spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
            holder = lock_holder(run_dir)
            if holder is not None:  # a process is writing this run now (its result is stale)
                result = {"status": "running", "message": f"running (process {holder})"}
            elif result_path.name == "spec.json":
                continue  # never finished, nobody running it: an interrupted run
            else:
                result = json.loads(result_path.read_text())
            metrics = MetricsLog(run_dir / "metrics.jsonl").read()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, MetricsError):
            continue
        if not (_well_formed(result) and isinstance(spec, dict) and _well_formed(
            {k: spec.get(k) for k in ("name", "point")}
        )):
            continue  # not written by convgrad: skipped rather than a traceback
        runs.append(Run(run_dir, result, spec, metrics))
    runs.sort(key=lambda r: _order_key(r, order))
    labels = [(run.label, run.seed) for run in runs]
    for run in runs:
        if labels.count((run.label, run.seed)) > 1:
            run.display = run.run_dir.relative_to(directory).as_posix() or run.name
    return runs


# ---------------------------------------------------------------------------------- formatting
def _accuracy(value: float | None) -> str:
    return NO_VALUE if value is None else f"{value:.4f}"


def _integer(value: int | None) -> str:
    return NO_VALUE if value is None else f"{value:,}"


def _seconds(value: float | None) -> str:
    if value is None:
        return NO_VALUE
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.2f} h"


def _delta(value: float | None, reference: float | None) -> str:
    if value is None or reference is None:
        return NO_VALUE
    return f"{value - reference:+.4f}"


def _target(result: dict[str, Any]) -> str:
    low, high, ceiling = result.get("target"), result.get("target_max"), result.get("max_params")
    if low is None:
        return NO_VALUE
    text = f"{low:.3f}–{high:.3f}" if high is not None else f">= {low:.3f}"
    if ceiling is not None:
        text += f", <= {ceiling:,} params"
    return text


def seed_statistics(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _mean_std(values: list[float]) -> str:
    if not values:
        return NO_VALUE
    mean, std = seed_statistics(values)
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


@dataclass
class Group:
    """The runs of one experiment (and sweep point) over its seeds."""

    label: str
    runs: list[Run]

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def accuracies(self) -> list[float]:
        """Each seed's final test accuracy (runs without one left out)."""
        return [run.test_acc for run in self.runs if run.test_acc is not None]

    @property
    def mean(self) -> float | None:
        """Mean test accuracy over the seeds, or None."""
        values = self.accuracies
        return seed_statistics(values)[0] if values else None

    def per_seed(self) -> str:
        """``seed 0: 0.9912, seed 1: 0.9905`` (or the single value)."""
        if len(self.runs) == 1:
            return _accuracy(self.first.test_acc)
        return ", ".join(f"{run.seed}: {_accuracy(run.test_acc)}" for run in self.runs)


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by experiment and sweep point (their seeds together), in order."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = run.display or run.group
        groups.setdefault(key, Group(key, [])).runs.append(run)
    return list(groups.values())


def target_met(result: dict[str, Any]) -> bool | None:
    """Whether a run reached its target (None: no target, or no accuracy).

    For several seeds pass the first seed's result with ``test_acc`` replaced by the mean: a
    target is met only when the mean meets it.
    """
    accuracy, low = result.get("test_acc"), result.get("target")
    if low is None or accuracy is None:
        return None
    ok = accuracy >= low
    if result.get("target_max") is not None:
        ok = ok and accuracy <= result["target_max"]
    if result.get("max_params") is not None:
        ok = ok and result.get("parameters", 0) <= result["max_params"]
    return bool(ok)


# ---------------------------------------------------------------------------------- blocks
@dataclass
class Report:
    """Blocks in order: ``("h", level, text)``, ``("p", text)``, ``("table", headers, rows)``,
    ``("figure", caption, png_bytes, file_stem)``."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", headers, rows))

    def figure(self, caption: str, png: bytes, stem: str) -> None:
        self.blocks.append(("figure", caption, png, stem))

    def tables(self) -> list[tuple]:
        """The table blocks (for tests)."""
        return [b for b in self.blocks if b[0] == "table"]


def build_report(directory: Path, command: str | None = None, explain: bool = True) -> Report:
    """The report of the runs in ``directory``.

    Args:
        directory: searched recursively for ``result.json``.
        command: the command that produced the runs, quoted in the report.
        explain: add the pictures of experiments whose spec asks for them (``report.plots``
            has ``"explain"``) and whose run kept a checkpoint.
    """
    runs = collect_runs(directory)
    report = Report("convgrad lab report")
    budgets = sorted({r.result.get("budget", "custom") for r in runs})
    intro = (f"{len(runs)} runs in `{Path(directory).name}`, budget: {', '.join(budgets) or '—'}. "
             "Test accuracy is on the whole test set (10,000 images, or the test pairs); curves "
             "during training use fixed subsets (see metrics.jsonl's `test_examples`). With "
             "several seeds an accuracy is the mean ± the sample standard deviation, and each "
             "seed's value is listed.")
    report.paragraph(intro)
    if command:
        report.paragraph(f"Produced by `{command}`.")
    if not runs:
        report.paragraph("No runs with a result.json were found.")
        return report
    groups = group_runs(runs)
    _summary(report, groups)
    _references(report, groups)
    _targets(report, groups)
    _experiments(report, runs, explain)
    _overfitting(report, groups)
    _keep_sweep(report, groups)
    _parameters(report, groups)
    _sum_ceiling(report, groups)
    return report


def _summary(report: Report, groups: list[Group]) -> None:
    report.heading(2, "Summary")
    sections: dict[str, list[Group]] = {"course": [], "beyond": []}
    for group in groups:
        sections[group.first.report_spec["section"]].append(group)
    titles = {"course": "The course's experiments", "beyond": "Beyond the course"}
    for section, members in sections.items():
        if not members:
            continue
        protocols = sorted({run.protocol for group in members for run in group.runs})
        report.paragraph(f"{titles[section]} ("
                         + "; ".join(PROTOCOLS.get(p, p) for p in protocols) + ").")
        rows = []
        for group in members:
            r = group.first.result
            mean = group.mean
            rows.append([
                group.label, _integer(r.get("parameters")), _mean_std(group.accuracies),
                str(len(group.runs)), group.per_seed(), _accuracy(r.get("reference")),
                _delta(mean, r.get("reference")), group.first.protocol,
                _integer(r.get("steps_done")),
                _seconds(sum(run.result.get("wall_time") or 0.0 for run in group.runs)),
                ", ".join(sorted({run.result.get("status", "?") for run in group.runs})),
            ])
        report.table(["experiment", "parameters", "test accuracy", "seeds", "per seed",
                      "course reference", "difference", "protocol", "steps", "wall time",
                      "status"], rows)


def _references(report: Report, groups: list[Group]) -> None:
    """Each reference's source, and what other sources say where they disagree."""
    rows = []
    for group in groups:
        spec, result = group.first.spec, group.first.result
        if result.get("reference") is None:
            continue
        rows.append([group.label, _accuracy(result.get("reference")),
                     spec.get("reference_note") or NO_VALUE, _mean_std(group.accuracies),
                     spec.get("reference_disagreement") or NO_VALUE])
    if not rows:
        return
    report.heading(2, "References and their sources")
    report.paragraph("Where each reference number comes from, beside this lab's measurement; "
                     "where another source gives a different picture of the same experiment, "
                     "the last column says what it says.")
    report.table(["experiment", "reference", "source", "measured here", "other sources"], rows)


def _targets(report: Report, groups: list[Group]) -> None:
    report.heading(2, "Targets")
    report.paragraph("Each experiment's target applies to the full budget (the spec's "
                     "`train.steps`: the course's number of steps for the course's "
                     "experiments); under a smaller budget the table shows how far the shortened "
                     "runs get. With several seeds a target is met only when the mean is.")
    rows = []
    for group in groups:
        result = group.first.result
        if result.get("target") is None:
            continue
        met = target_met({**result, "test_acc": group.mean})
        rows.append([group.label, result.get("budget", "custom"), _target(result),
                     _mean_std(group.accuracies), str(len(group.runs)),
                     _integer(result.get("parameters")),
                     {True: "yes", False: "no", None: NO_VALUE}[met]])
    if not rows:
        report.paragraph("None of these experiments has a target.")
        return
    report.table(["experiment", "budget", "target", "test accuracy", "seeds", "parameters",
                  "met"], rows)


def _experiments(report: Report, runs: list[Run], explain: bool) -> None:
    report.heading(2, "Experiments")
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    for name, group in by_name.items():
        report.heading(3, name)
        first = group[0]
        description = first.spec.get("description")
        if description:
            report.paragraph(description)
        report.paragraph(f"Protocol: {PROTOCOLS.get(first.protocol, first.protocol)}.")
        recipe = training_recipe(first.spec, first.metrics)
        if recipe:
            report.paragraph(recipe)
        note = first.result.get("reference") is not None and first.spec.get("reference_note")
        rows = []
        for run in group:
            r = run.result
            selected = r.get("selected_step")
            rows.append([
                run.point or name, str(run.seed), _integer(r.get("parameters")),
                _accuracy(run.test_acc), _accuracy(r.get("val_acc")),
                NO_VALUE if selected is None else f"{selected:,}",
                _accuracy(r.get("reference")), _accuracy(r.get("train_acc")),
                _integer(r.get("steps_done")), _integer(r.get("batch_size")),
                _seconds(r.get("wall_time")),
                NO_VALUE if r.get("samples_per_s") is None else f"{r['samples_per_s']:.0f}",
                r.get("status", "?") if r.get("status") == "completed" else r.get("message", ""),
            ])
        report.table(["run", "seed", "parameters", "test accuracy", "validation accuracy",
                      "selected step", "course reference", "train accuracy", "steps", "batch",
                      "wall time", "samples/s", "status"], rows)
        if note:
            report.paragraph(f"Reference: {note}.")
        if "curves" in first.report_spec["plots"]:
            _curves(report, name, group)
        if explain and "explain" in first.report_spec["plots"]:
            _explain(report, name, group)


def training_recipe(spec: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """One line on how a run trained: optimizer, weight decay, schedule, label smoothing,
    augmentation, and the learning rate logged at each evaluation (``metrics.jsonl``'s ``lr``)
    when it moved."""
    optimizer = spec.get("optimizer") or {}
    train = spec.get("train") or {}
    parts = []
    if optimizer.get("name"):
        text = f"{optimizer['name']} lr {optimizer.get('lr', 0):g}"
        if optimizer.get("weight_decay"):
            text += f", weight decay {optimizer['weight_decay']:g}"
            if optimizer.get("decay_bias_and_norm") is False:
                text += " (not on biases and norms)"
        parts.append(f"Optimizer: {text}")
    schedule = spec.get("scheduler")
    if schedule:
        defaults = _schedule_defaults(schedule.get("kind"))
        options = ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in schedule.items()
                            if key != "kind" and value is not None
                            and (key not in defaults or defaults[key] != value))
        parts.append(f"schedule: {schedule['kind']}" + (f" ({options})" if options else ""))
    if train.get("label_smoothing"):
        parts.append(f"label smoothing {train['label_smoothing']:g}")
    if train.get("augment"):
        parts.append("augmentation: " + ", ".join(
            str(table.get("name", "?")) for table in train["augment"]))
    rates = [(r["step"], r["lr"]) for r in metrics if isinstance(r.get("lr"), int | float)]
    if len({lr for _, lr in rates}) > 1:
        parts.append("learning rate at each evaluation: " + ", ".join(
            f"{lr:.3g} (step {step:,})" for step, lr in rates))
    return "; ".join(parts) + "." if parts else ""


def _schedule_defaults(kind: Any) -> dict[str, Any]:
    """The default values of a ``[scheduler]`` kind's optional keys (shown only when changed)."""
    import typing

    from pydantic_core import PydanticUndefined

    from convgrad.lab.spec import SchedulerSpec

    for cls in typing.get_args(typing.get_args(SchedulerSpec)[0]):
        if kind in typing.get_args(cls.model_fields["kind"].annotation):
            return {name: field.default for name, field in cls.model_fields.items()
                    if field.default is not PydanticUndefined}
    return {}


def _curves(report: Report, name: str, group: list[Run]) -> None:
    if len(group) == 1 and group[0].metrics:
        report.figure(f"{name}: training curves",
                      plots.training_curves(name, group[0].metrics,
                                            group[0].result.get("reference")), f"curves-{name}")
    elif len(group) > 1:
        curves = {_run_key(run): run.metrics for run in group if run.metrics}
        if curves:
            report.figure(f"{name}: train (dashed) and test accuracy of each run",
                          plots.compare_curves(name, curves), f"curves-{name}")


def _run_key(run: Run) -> str:
    parts = [run.point] if run.point else []
    if run.run_dir.name.startswith("seed-") or run.run_dir.parent.name.startswith("seed-"):
        parts.append(f"seed {run.seed}")
    return " ".join(parts) or run.label


def _explain(report: Report, name: str, group: list[Run]) -> None:
    from convgrad.lab.explain import CAPTIONS, explain_figures, has_weights

    run = next((run for run in group if has_weights(run.run_dir)), None)
    if run is None:
        report.paragraph("Pictures: this run kept no checkpoint to explain.")
        return
    try:
        figures = explain_figures(run.run_dir)
    except (OSError, ValueError) as error:  # missing data files, a corrupt checkpoint
        report.paragraph(f"Pictures: could not explain `{run.run_dir.name}`: {error}")
        return
    report.paragraph(f"Pictures of `{run.run_dir.name}` (seed {run.seed}); "
                     f"`convgrad explain {run.run_dir}` writes them as files.")
    for stem, png in figures.items():
        report.figure(f"{name}: {CAPTIONS[stem]}", png, f"explain-{name}-{stem}")


def _registered(wanted: Callable[[Any], bool]) -> str:
    """The registered experiments whose ``[report]`` table passes ``wanted``, as text."""
    from convgrad.lab.spec import registry

    names = [name for name, spec in registry().items() if wanted(spec.report)]
    if not names:
        return "an experiment whose spec asks for it"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _overfitting(report: Report, groups: list[Group]) -> None:
    report.heading(2, "Overfitting: train against test accuracy")
    chosen = [g for g in groups if "overfitting" in g.first.report_spec["compare"]]
    if not chosen:
        report.paragraph(f"Run {_registered(lambda r: 'overfitting' in r.compare)} to see this "
                         "comparison.")
        return
    rows = []
    for group in chosen:
        train = [run.result["train_acc"] for run in group.runs
                 if run.result.get("train_acc") is not None]
        gaps = [run.result["train_acc"] - run.test_acc for run in group.runs
                if run.result.get("train_acc") is not None and run.test_acc is not None]
        rows.append([group.label, _mean_std(train), _mean_std(group.accuracies),
                     _mean_std(gaps), _accuracy(group.first.result.get("reference"))])
    report.table(["experiment", "train accuracy", "test accuracy", "gap", "course reference"],
                 rows)
    curves = {group.label: group.first.metrics for group in chosen if group.first.metrics}
    if curves:
        report.figure("train (dashed) vs test accuracy: the run on few examples fits its "
                      "training set and stalls on the test set", plots.compare_curves(
                          "overfitting: train vs test", curves), "overfitting")


def _keep_sweep(report: Report, groups: list[Group]) -> None:
    report.heading(2, "Accuracy vs keep probability")
    sweep = [g for g in groups if "keep-sweep" in g.first.report_spec["plots"]
             and g.first.result.get("keep_prob") is not None and g.accuracies]
    if not sweep:
        report.paragraph(f"Run {_registered(lambda r: 'keep-sweep' in r.plots)} to see the "
                         "sweep.")
        return
    rows, points = [], []
    for group in sweep:
        keep = group.first.result["keep_prob"]
        train = [run.result["train_acc"] for run in group.runs
                 if run.result.get("train_acc") is not None]
        rows.append([f"{keep:g}", f"{1 - keep:g}", _mean_std(group.accuracies),
                     _mean_std(train)])
        points.append((keep, seed_statistics(group.accuracies)[0],
                       seed_statistics(train)[0] if train else None))
    report.table(["keep probability", "dropout p", "test accuracy", "train accuracy"], rows)
    names = sorted({group.first.name for group in sweep})
    report.figure(f"{', '.join(names)}: test accuracy against the keep probability",
                  plots.accuracy_vs_keep(points), "keep-probability")


def _parameters(report: Report, groups: list[Group]) -> None:
    report.heading(2, "Parameters vs accuracy")
    done = [g for g in groups if g.accuracies and g.first.result.get("parameters")]
    done.sort(key=lambda g: g.first.result["parameters"])
    rows = [[g.label, _integer(g.first.result["parameters"]), _mean_std(g.accuracies),
             g.first.result.get("dataset", "")] for g in done]
    report.table(["experiment", "parameters", "test accuracy", "dataset"], rows)
    if done:
        points = [(g.label, int(g.first.result["parameters"]), seed_statistics(g.accuracies)[0])
                  for g in done]
        report.figure("test accuracy against the number of parameters (log scale): the "
                      "course's trade-off", plots.parameters_vs_accuracy(points), "parameters")


def _sum_ceiling(report: Report, groups: list[Group]) -> None:
    report.heading(2, "Digit sum vs its ceiling")
    sums = [g for g in groups if "sum-ceiling" in g.first.report_spec["plots"]]
    if not sums:
        report.paragraph(f"Run {_registered(lambda r: 'sum-ceiling' in r.plots)} to see this "
                         "comparison.")
        return
    by_name = {g.label: g for g in groups}
    rows = [[f"{g.label} (this report)", _mean_std(g.accuracies)] for g in sums]
    rows.append(["course reference (digit-sum)", _accuracy(sums[0].first.result.get(
        "reference"))])
    rows.append(["ceiling: course digit accuracy squared", _accuracy(COURSE_DIGIT_CEILING)])
    singles = {g.first.report_spec.get("ceiling_of") for g in sums}
    for single in sorted(name for name in singles if isinstance(name, str)):
        group = by_name.get(single)
        if group is not None and group.mean is not None:
            rows.append([f"ceiling: this report's {single} accuracy squared",
                         _accuracy(group.mean**2)])
    report.table(["", "accuracy"], rows)
    report.paragraph("A sum is right when both digits are read right (or when two errors cancel, "
                     "which is rare), so a single-digit classifier's accuracy squared is the "
                     "natural ceiling for the sum.")


# ---------------------------------------------------------------------------------- rendering
def _markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, plots_dir: str = "plots") -> tuple[str, dict[str, bytes]]:
    """Markdown text and the figure files it refers to (``plots/<stem>.png`` -> bytes)."""
    lines = [f"# {report.title}", ""]
    files: dict[str, bytes] = {}
    for block in report.blocks:
        if block[0] == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif block[0] == "p":
            lines += [block[1], ""]
        elif block[0] == "table":
            headers, rows = block[1], block[2]
            lines.append("| " + " | ".join(_markdown_cell(h) for h in headers) + " |")
            lines.append("|" + "|".join("---" for _ in headers) + "|")
            lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif block[0] == "figure":
            path = f"{plots_dir}/{block[3]}.png"
            files[path] = block[2]
            lines += [f"![{block[1]}]({path})", ""]
    return "\n".join(lines), files


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
figure { margin: 0.5rem 0 1.5rem; } figcaption { font-size: 0.85rem; color: #555; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(report: Report) -> str:
    """One HTML page with every figure embedded as a base64 PNG data URI."""
    body = [f"<h1>{html.escape(report.title)}</h1>"]
    for block in report.blocks:
        if block[0] == "h":
            body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            body.append(f"<p>{_inline(block[1])}</p>")
        elif block[0] == "table":
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                for row in block[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif block[0] == "figure":
            data = base64.b64encode(block[2]).decode("ascii")
            caption = html.escape(block[1])
            body.append(f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{caption}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(
    directory: str | Path, command: str | None = None, explain: bool = True
) -> tuple[Path, Path]:
    """Write ``report.md`` (with ``plots/*.png``) and ``report.html`` into ``directory``.

    Returns:
        The two paths.
    """
    directory = Path(directory)
    report = build_report(directory, command, explain)
    markdown, files = render_markdown(report)
    made = []
    try:
        for relative, payload in files.items():
            path = directory / relative
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True)
                made.append(path.parent)
            atomic_write(path, payload)
        markdown_path, html_path = directory / "report.md", directory / "report.html"
        atomic_write(markdown_path, markdown.encode())
        atomic_write(html_path, render_html(report).encode())
    except OSError:
        for folder in made:  # a full disk leaves no empty plots/ behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return markdown_path, html_path


def experiment_table() -> str:
    """The shipped experiments as a text table (``convgrad list``)."""
    from convgrad.lab.datasets import dataset_geometry
    from convgrad.lab.models import build_model, count_parameters
    from convgrad.lab.spec import builtin_names, resolve_spec

    rows = [["name", "parameters", "dataset", "steps quick/standard/full", "reference",
             "description"]]
    for name in builtin_names():
        spec = resolve_spec(name)
        shape, classes = dataset_geometry(spec.dataset)
        first = spec.sweep_points()[0][1]
        parameters = count_parameters(build_model(first.model, shape, classes))
        dataset = spec.dataset.kind + (f" n={spec.dataset.n}" if spec.dataset.kind == "subset"
                                       else "")
        steps = "/".join(f"{spec.steps_for(b):,}" for b in ("quick", "standard", "full"))
        runs = f" x{len(spec.sweep.keep_prob)}" if spec.sweep else ""
        rows.append([name, f"{parameters:,}{runs}", dataset, steps, _accuracy(spec.reference),
                     spec.description])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[i].rjust(widths[i]) if i in (1, 3, 4) and index else row[i].ljust(widths[i])
                 for i in range(len(widths))]
        lines.append("  ".join(cells) + "  " + row[-1])
    return "\n".join(lines)
