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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convgrad.errors import MetricsError
from convgrad.files import atomic_write, lock_holder
from convgrad.lab import plots
from convgrad.lab.metrics import MetricsLog

OVERFITTING = ("full-nodropout", "few250-nodropout")
COURSE_DIGIT_CEILING = 0.984
NO_VALUE = "—"


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
    """Every run under ``directory`` that has a ``result.json``, in the course's order."""
    from convgrad.lab.spec import EXPERIMENT_ORDER

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
    runs.sort(key=lambda r: (EXPERIMENT_ORDER.get(r.name, len(EXPERIMENT_ORDER)), r.name,
                             r.result.get("keep_prob") or 0.0))
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:
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


def target_met(result: dict[str, Any]) -> bool | None:
    """Whether a run reached its target (None: no target, or no accuracy)."""
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


def build_report(directory: Path, command: str | None = None) -> Report:
    """The report of the runs in ``directory``."""
    runs = collect_runs(directory)
    report = Report("convgrad lab report")
    budgets = sorted({r.result.get("budget", "custom") for r in runs})
    intro = (f"{len(runs)} runs in `{Path(directory).name}`, budget: {', '.join(budgets) or '—'}. "
             "Test accuracy is on the whole test set (10,000 images, or the test pairs); curves "
             "during training use fixed subsets (see metrics.jsonl's `test_examples`).")
    report.paragraph(intro)
    if command:
        report.paragraph(f"Produced by `{command}`.")
    if not runs:
        report.paragraph("No runs with a result.json were found.")
        return report
    _summary(report, runs)
    _targets(report, runs)
    _experiments(report, runs)
    _overfitting(report, runs)
    _keep_sweep(report, runs)
    _parameters(report, runs)
    _digit_sum(report, runs)
    return report


def _summary(report: Report, runs: list[Run]) -> None:
    report.heading(2, "Summary")
    rows = []
    for run in runs:
        r = run.result
        rows.append([
            run.label, _integer(r.get("parameters")), _accuracy(run.test_acc),
            _accuracy(r.get("reference")), _delta(run.test_acc, r.get("reference")),
            _integer(r.get("steps_done")), _seconds(r.get("wall_time")), r.get("status", "?"),
        ])
    report.table(["experiment", "parameters", "test accuracy", "course reference",
                  "difference", "steps", "wall time", "status"], rows)


def _targets(report: Report, runs: list[Run]) -> None:
    report.heading(2, "Targets")
    report.paragraph("The issue's targets apply to the full budget (the course protocol); under "
                     "a smaller budget they show how far the shortened runs get.")
    rows = []
    for run in runs:
        met = target_met(run.result)
        if run.result.get("target") is None:
            continue
        rows.append([run.label, run.result.get("budget", "custom"), _target(run.result),
                     _accuracy(run.test_acc), _integer(run.result.get("parameters")),
                     {True: "yes", False: "no", None: NO_VALUE}[met]])
    report.table(["experiment", "budget", "target", "test accuracy", "parameters", "met"], rows)


def _experiments(report: Report, runs: list[Run]) -> None:
    report.heading(2, "Experiments")
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    for name, group in groups.items():
        report.heading(3, name)
        description = group[0].spec.get("description")
        if description:
            report.paragraph(description)
        note = group[0].result.get("reference") is not None and group[0].spec.get(
            "reference_note"
        )
        rows = []
        for run in group:
            r = run.result
            rows.append([
                run.point or name, _integer(r.get("parameters")), _accuracy(run.test_acc),
                _accuracy(r.get("reference")), _accuracy(r.get("train_acc")),
                _integer(r.get("steps_done")), _integer(r.get("batch_size")),
                _seconds(r.get("wall_time")),
                NO_VALUE if r.get("samples_per_s") is None else f"{r['samples_per_s']:.0f}",
                r.get("status", "?") if r.get("status") == "completed" else r.get("message", ""),
            ])
        report.table(["run", "parameters", "test accuracy", "course reference",
                      "train accuracy", "steps", "batch", "wall time", "samples/s", "status"],
                     rows)
        if note:
            report.paragraph(f"Reference: {note}.")
        if len(group) == 1 and group[0].metrics:
            report.figure(f"{name}: training curves",
                          plots.training_curves(name, group[0].metrics, group[0].result.get(
                              "reference")), f"curves-{name}")
        elif len(group) > 1:
            curves = {run.point or run.label: run.metrics for run in group if run.metrics}
            if curves:
                report.figure(f"{name}: train (dashed) and test accuracy of each run",
                              plots.compare_curves(name, curves), f"curves-{name}")


def _overfitting(report: Report, runs: list[Run]) -> None:
    report.heading(2, "Overfitting: all 60,000 examples vs 250")
    chosen = {run.name: run for run in runs if run.name in OVERFITTING}
    if not chosen:
        report.paragraph(f"Run {' and '.join(OVERFITTING)} to see this comparison.")
        return
    rows = []
    for name in OVERFITTING:
        run = chosen.get(name)
        if run is None:
            continue
        train = run.result.get("train_acc")
        gap = None if train is None or run.test_acc is None else train - run.test_acc
        rows.append([name, _accuracy(train), _accuracy(run.test_acc),
                     NO_VALUE if gap is None else f"{gap:.4f}", _accuracy(run.result.get(
                         "reference"))])
    report.table(["experiment", "train accuracy", "test accuracy", "gap", "course reference"],
                 rows)
    curves = {name: run.metrics for name, run in chosen.items() if run.metrics}
    if curves:
        report.figure("train (dashed) vs test accuracy: the 250-example run fits its training set "
                      "and stalls on the test set", plots.compare_curves(
                          "overfitting: full vs 250 examples", curves), "overfitting")


def _keep_sweep(report: Report, runs: list[Run]) -> None:
    report.heading(2, "Accuracy vs keep probability")
    sweep = [run for run in runs if run.name == "few250-dropout" and run.test_acc is not None]
    if not sweep:
        report.paragraph("Run few250-dropout to see the sweep.")
        return
    rows = [[f"{run.result['keep_prob']:g}", f"{1 - run.result['keep_prob']:g}",
             _accuracy(run.test_acc), _accuracy(run.result.get("train_acc"))] for run in sweep]
    report.table(["keep probability", "dropout p", "test accuracy", "train accuracy"], rows)
    points = [(run.result["keep_prob"], run.test_acc, run.result.get("train_acc")) for run in sweep]
    report.figure("few250-dropout: test accuracy against the keep probability",
                  plots.accuracy_vs_keep(points), "keep-probability")


def _parameters(report: Report, runs: list[Run]) -> None:
    report.heading(2, "Parameters vs accuracy")
    done = [run for run in runs if run.test_acc is not None and run.result.get("parameters")]
    done.sort(key=lambda run: run.result["parameters"])
    rows = [[run.label, _integer(run.result["parameters"]), _accuracy(run.test_acc),
             run.result.get("dataset", "")] for run in done]
    report.table(["experiment", "parameters", "test accuracy", "dataset"], rows)
    if done:
        points = [(run.label, run.result["parameters"], run.test_acc) for run in done]
        report.figure("test accuracy against the number of parameters (log scale)",
                      plots.parameters_vs_accuracy(points), "parameters")


def _digit_sum(report: Report, runs: list[Run]) -> None:
    report.heading(2, "Digit sum vs its ceiling")
    by_name = {run.name: run for run in runs}
    digit_sum, baseline = by_name.get("digit-sum"), by_name.get("baseline")
    if digit_sum is None:
        report.paragraph("Run digit-sum to see this comparison.")
        return
    rows = [["digit-sum (this run)", _accuracy(digit_sum.test_acc)],
            ["course reference", _accuracy(digit_sum.result.get("reference"))],
            ["ceiling: course digit accuracy squared", _accuracy(COURSE_DIGIT_CEILING)]]
    if baseline is not None and baseline.test_acc is not None:
        rows.append(["ceiling: this report's baseline accuracy squared",
                     _accuracy(baseline.test_acc**2)])
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


def write_report(directory: str | Path, command: str | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` (with ``plots/*.png``) and ``report.html`` into ``directory``.

    Returns:
        The two paths.
    """
    directory = Path(directory)
    report = build_report(directory, command)
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
