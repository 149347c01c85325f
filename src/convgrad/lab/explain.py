"""Pictures of a trained run: what the network learned and where it errs.

``convgrad explain RUN_DIR`` (and each experiment's section of the report) draws, from the run's
weights (the selected ones under the validation protocol, else the last checkpoint):

- ``filters``: the first convolution's filters as a grid (input channels averaged);
- ``feature-maps``: the output of each convolution for a few test examples;
- ``saliency``: |d logit_pred / d input| for right and for wrong predictions, computed by the
  engine's own backward pass (the input is a leaf that requires grad);
- ``confusion``: the confusion matrix on the test examples used;
- ``mistakes``: the most confident mistakes, with their images, labels and predictions.

Matplotlib's Agg canvas, no network. Figures are PNG bytes (:func:`explain_figures`);
:func:`explain_run` also writes them with an ``explain.html`` that shows them together.
"""

from __future__ import annotations

import contextlib
import html
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import convgrad as cg
from convgrad import nn
from convgrad.files import atomic_write

CAPTIONS = {
    "filters": "the first convolution's filters (input channels averaged)",
    "feature-maps": "the output of each convolution for a few test examples",
    "saliency": "saliency |d logit / d input| for right (top) and wrong (bottom) predictions",
    "confusion": "confusion matrix on the test examples used",
    "mistakes": "the most confident mistakes (label -> prediction, probability)",
}
BEST_WEIGHTS = "best.npz"


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def has_weights(run_dir: str | Path) -> bool:
    """True when the run kept weights to explain (a checkpoint or selected weights)."""
    run_dir = Path(run_dir)
    return (run_dir / "manifest.json").is_file() or (run_dir / BEST_WEIGHTS).is_file()


def load_trained(run_dir: str | Path) -> tuple[Any, nn.Module, Any]:
    """``(spec, model, datasets)`` of a run, with its selected or last weights loaded.

    Raises:
        FileNotFoundError: no spec.json or no weights in ``run_dir``.
    """
    from convgrad.lab.checkpoint import load_checkpoint
    from convgrad.lab.datasets import datasets_for
    from convgrad.lab.models import build_model
    from convgrad.lab.runner import load_run_spec

    run_dir = Path(run_dir)
    if not (run_dir / "spec.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no spec.json)")
    if not has_weights(run_dir):
        raise FileNotFoundError(f"{run_dir} has no weights (no manifest.json or {BEST_WEIGHTS})")
    spec = load_run_spec(run_dir)
    data = datasets_for(spec)
    cg.manual_seed(spec.seed)
    model = build_model(spec.model, data.input_shape, data.num_classes)
    if (run_dir / BEST_WEIGHTS).is_file():
        with np.load(run_dir / BEST_WEIGHTS, allow_pickle=False) as stored:
            model.load_state_dict({key: stored[key] for key in stored.files})
    else:
        model.load_state_dict(load_checkpoint(run_dir)[1])
    model.eval()
    return spec, model, data


@contextlib.contextmanager
def _conv_outputs(model: nn.Module) -> Iterator[list[tuple[nn.Module, np.ndarray]]]:
    """Collect ``(conv module, output array)`` for every call of ``model``'s Conv2d layers
    inside the block (a forward hook on each, removed on exit)."""
    calls: list[tuple[nn.Module, np.ndarray]] = []

    def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        if isinstance(module, nn.Conv2d):
            calls.append((module, np.asarray(output.data)))

    handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _as_input(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32)[:, None] / np.float32(255)  # (N, 1, H, W)


def predict(model: nn.Module, images: np.ndarray, batch_size: int = 200) -> np.ndarray:
    """Softmax probabilities (N, classes) in eval mode, without autograd."""
    out = []
    with cg.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(cg.tensor(_as_input(images[start:start + batch_size]))).data
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            out.append(shifted / shifted.sum(axis=1, keepdims=True))
    return np.concatenate(out)


def saliency(model: nn.Module, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """|d logit[class] / d input| (N, H, W) by the engine's backward pass.

    The batch's logits are weighted by one-hot(classes) and summed, so one backward gives each
    example's gradient of its own logit (examples do not interact in eval mode).
    """
    x = cg.tensor(_as_input(images), requires_grad=True)
    logits = model(x)
    one_hot = np.zeros(logits.shape, dtype=np.float32)
    one_hot[np.arange(len(classes)), classes] = 1.0
    (logits * cg.tensor(one_hot)).sum().backward()
    assert x.grad is not None  # x is a leaf that requires grad and the logits depend on it
    return np.abs(x.grad.data[:, 0])


def _grid(figure: Figure, images: list[np.ndarray], titles: list[str], columns: int,
          cmap: str = "gray", start_row: int = 0, rows: int | None = None) -> None:
    rows = rows or -(-len(images) // columns)
    for index, (image, title) in enumerate(zip(images, titles, strict=True)):
        axes = figure.add_subplot(rows, columns, start_row * columns + index + 1)
        axes.imshow(image, cmap=cmap)
        axes.set_xticks([])
        axes.set_yticks([])
        if title:
            axes.set_title(title, fontsize=7)


def filters_figure(model: nn.Module) -> bytes | None:
    """The first Conv2d's filters as a grid; None when the model has no convolution."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return None
    weights = np.asarray(conv.weight.data).mean(axis=1)  # (C_out, kH, kW)
    columns = min(8, len(weights))
    rows = -(-len(weights) // columns)
    figure = Figure(figsize=(columns * 0.9, rows * 0.9 + 0.4))
    limit = float(np.abs(weights).max()) or 1.0
    for index, kernel in enumerate(weights):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"first convolution: {len(weights)} filters {weights.shape[1]}x"
                    f"{weights.shape[2]} (red +, blue -)", fontsize=9)
    return _png(figure)


def feature_maps_figure(model: nn.Module, images: np.ndarray, channels: int = 6) -> bytes | None:
    """For each example (row block) the input and ``channels`` maps of each Conv2d call."""
    with _conv_outputs(model) as calls, cg.no_grad():
        model(cg.tensor(_as_input(images)))
    if not calls:
        return None
    columns = 1 + channels
    rows = len(images) * len(calls)
    figure = Figure(figsize=(columns * 1.1, rows * 1.1 + 0.4))
    names = {id(m): name for name, m in model.named_modules()}
    for example in range(len(images)):
        for call, (module, output) in enumerate(calls):
            row = example * len(calls) + call
            axes = figure.add_subplot(rows, columns, row * columns + 1)
            axes.imshow(images[example], cmap="gray")
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_ylabel(names.get(id(module), "conv"), fontsize=6)
            for channel in range(min(channels, output.shape[1])):
                axes = figure.add_subplot(rows, columns, row * columns + 2 + channel)
                axes.imshow(output[example, channel], cmap="viridis")
                axes.set_xticks([])
                axes.set_yticks([])
    figure.suptitle("feature maps: input, then the first channels of each convolution call",
                    fontsize=9)
    return _png(figure)


def saliency_figure(model: nn.Module, images: np.ndarray, labels: np.ndarray,
                    predictions: np.ndarray, count: int = 6) -> bytes:
    """Images and saliency maps of up to ``count`` right and ``count`` wrong predictions."""
    right = np.flatnonzero(predictions == labels)[:count]
    wrong = np.flatnonzero(predictions != labels)[:count]
    chosen = np.concatenate([right, wrong]).astype(np.int64)
    maps = saliency(model, images[chosen], predictions[chosen])
    columns = max(len(right), len(wrong), 1)
    figure = Figure(figsize=(columns * 1.2, 4 * 1.3 + 0.4))
    for block, indices in enumerate((right, wrong)):
        for column, index in enumerate(indices):
            where = np.flatnonzero(chosen == index)[0]
            for offset, (picture, cmap) in enumerate(((images[index], "gray"),
                                                      (maps[where], "hot"))):
                axes = figure.add_subplot(4, columns, (2 * block + offset) * columns + column + 1)
                axes.imshow(picture, cmap=cmap)
                axes.set_xticks([])
                axes.set_yticks([])
                if offset == 0:
                    axes.set_title(f"{labels[index]} -> {predictions[index]}", fontsize=7,
                                   color="green" if block == 0 else "red")
    figure.suptitle("saliency |d logit / d input|: right (top rows), wrong (bottom rows)",
                    fontsize=9)
    return _png(figure)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) int64 counts: row = true label, column = prediction."""
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(
        classes, classes
    )


def confusion_figure(matrix: np.ndarray) -> bytes:
    """The confusion matrix as a heat map (log colour scale), counts written in the cells."""
    from matplotlib.colors import LogNorm

    classes = len(matrix)
    size = max(4.0, classes * 0.42)
    figure = Figure(figsize=(size, size))
    axes = figure.subplots()
    axes.imshow(matrix + 1, cmap="Blues", norm=LogNorm())
    if classes <= 20:
        for (row, column), count in np.ndenumerate(matrix):
            if count:
                axes.text(column, row, str(count), ha="center", va="center", fontsize=6,
                          color="white" if row == column else "black")
    axes.set(xlabel="prediction", ylabel="true label", xticks=range(classes),
             yticks=range(classes))
    axes.tick_params(labelsize=7)
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    axes.set_title(f"confusion matrix ({matrix.sum():,} test examples, accuracy {accuracy:.4f})",
                   fontsize=9)
    return _png(figure)


def mistakes_figure(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                    count: int = 12) -> bytes:
    """The ``count`` wrong predictions made with the highest probability."""
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    confidence = probabilities[wrong, predictions[wrong]]
    chosen = wrong[np.argsort(-confidence, kind="stable")][:count]
    columns = min(6, max(1, len(chosen)))
    rows = max(1, -(-len(chosen) // columns))
    figure = Figure(figsize=(columns * 1.3, rows * 1.6 + 0.4))
    if len(chosen) == 0:
        axes = figure.subplots()
        axes.text(0.5, 0.5, "no mistakes on these examples", ha="center", va="center")
        axes.set_axis_off()
    _grid(figure, [images[i] for i in chosen],
          [f"{labels[i]} -> {predictions[i]} ({probabilities[i, predictions[i]]:.2f})"
           for i in chosen], columns, rows=rows)
    figure.suptitle("most confident mistakes: label -> prediction (probability)", fontsize=9)
    return _png(figure)


def explain_figures(run_dir: str | Path, examples: int = 2000, seed: int = 0) -> dict[str, bytes]:
    """Every figure of :data:`CAPTIONS` for a run, as ``{stem: png}``.

    Args:
        run_dir: a run directory with weights.
        examples: test examples evaluated (a fixed subset when fewer than the test set).
        seed: fixes that subset.
    """
    from convgrad.lab.metrics import fixed_subset

    _, model, data = load_trained(run_dir)
    images, labels = fixed_subset(data.test, examples, seed)
    images, labels = np.asarray(images), np.asarray(labels)
    probabilities = predict(model, images)
    predictions = probabilities.argmax(axis=1)
    figures: dict[str, bytes | None] = {
        "filters": filters_figure(model),
        "feature-maps": feature_maps_figure(model, images[:3]),
        "saliency": saliency_figure(model, images, labels, predictions),
        "confusion": confusion_figure(
            confusion_matrix(labels, predictions, probabilities.shape[1])
        ),
        "mistakes": mistakes_figure(images, labels, probabilities),
    }
    return {stem: png for stem, png in figures.items() if png is not None}


def explain_run(run_dir: str | Path, out: str | Path | None = None,
                examples: int = 2000) -> list[Path]:
    """Write ``<stem>.png`` for every figure and an ``explain.html`` showing them.

    Returns:
        The written paths (the PNGs, then the HTML page).
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "explain"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    parts = [f"<h1>convgrad explain {html.escape(str(run_dir))}</h1>"]
    for stem, png in explain_figures(run_dir, examples).items():
        path = out / f"{stem}.png"
        atomic_write(path, png)
        written.append(path)
        caption = html.escape(CAPTIONS[stem])
        parts.append(f'<figure><img src="{stem}.png" alt="{caption}">'
                     f"<figcaption>{caption}</figcaption></figure>")
    page = out / "explain.html"
    atomic_write(page, ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                        "<title>convgrad explain</title></head><body>\n" + "\n".join(parts)
                        + "\n</body></html>\n").encode())
    written.append(page)
    return written
