"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot state) and returned as PNG.

Every function takes plain records (the runs' ``metrics.jsonl`` lines and ``result.json``
contents) and returns the PNG bytes of one figure.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Records = Sequence[dict[str, Any]]


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _series(records: Records, key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def training_curves(title: str, records: Records, reference: float | None = None) -> bytes:
    """Train and test accuracy (left) and training loss (right) against the step."""
    figure = Figure(figsize=(9, 3.4))
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for key, label, style in (("train_acc", "train", "-"), ("test_acc", "test", "-o")):
        steps, values = _series(records, key)
        accuracy_axes.plot(steps, values, style, label=label, markersize=3)
    if reference is not None:
        accuracy_axes.axhline(reference, color="grey", linestyle="--", label="course reference")
    accuracy_axes.set(xlabel="step", ylabel="accuracy", title=f"{title}: accuracy")
    accuracy_axes.legend(loc="lower right", fontsize=8)
    accuracy_axes.grid(alpha=0.3)
    steps, values = _series(records, "train_loss")
    loss_axes.plot(steps, values, "-", color="tab:red")
    if values and min(values) > 0:
        loss_axes.set_yscale("log")
    loss_axes.set(xlabel="step", ylabel="training loss (mean per interval)",
                  title=f"{title}: loss")
    loss_axes.grid(alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def compare_curves(title: str, runs: Mapping[str, Records]) -> bytes:
    """Train (dashed) and test (solid) accuracy of several runs on one axis: overfitting shows
    as the gap between a run's two lines."""
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for (name, records), color in zip(runs.items(), colors * 4, strict=False):
        steps, values = _series(records, "train_acc")
        axes.plot(steps, values, "--", color=color, label=f"{name} train")
        steps, values = _series(records, "test_acc")
        axes.plot(steps, values, "-o", color=color, markersize=3, label=f"{name} test")
    axes.set(xlabel="step", ylabel="accuracy", title=title)
    axes.legend(fontsize=8, loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def accuracy_vs_keep(points: Sequence[tuple[float, float, float | None]]) -> bytes:
    """Test (and final train) accuracy against the keep probability; points are
    ``(keep, test_acc, train_acc)``."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    points = sorted(points)
    axes.plot([p[0] for p in points], [p[1] for p in points], "-o", label="test")
    train = [(p[0], p[2]) for p in points if p[2] is not None]
    if train:
        axes.plot([p[0] for p in train], [p[1] for p in train], "--s", label="train subset")
    axes.set(xlabel="keep probability (1 - p)", ylabel="accuracy",
             title="few250-dropout: accuracy vs keep probability")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def parameters_vs_accuracy(points: Sequence[tuple[str, int, float]]) -> bytes:
    """Test accuracy against the parameter count (log scale); points are
    ``(label, parameters, test_acc)``."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for label, parameters, accuracy in points:
        axes.scatter([parameters], [accuracy])
        axes.annotate(label, (parameters, accuracy), textcoords="offset points", xytext=(4, 4),
                      fontsize=8)
    axes.set_xscale("log")
    axes.set(xlabel="parameters (log scale)", ylabel="test accuracy",
             title="parameters vs test accuracy")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _png(figure)
