"""TensorBoard event files for lab runs, written through ``tensorboardX``.

``metrics.jsonl`` stays the source of truth; the event files beside it are a view for
``tensorboard --logdir runs/``. One evaluation line becomes these scalars at its step:

=================  =====================================
``loss/train``     ``train_loss`` (mean since the last evaluation)
``accuracy/train`` ``train_acc``
``accuracy/test``  ``test_acc``
``lr``             the optimizer's learning rate
=================  =====================================

plus the first convolution's filters as an image (``filters/<parameter name>``, one tile per
output channel, each scaled to [0, 1]) and, once per writer, the hyperparameters (name, sweep
point, keep probability, seed, dataset, optimizer, learning rate, batch size, steps) through the
hparams plugin with ``accuracy/test``, ``accuracy/train`` and ``loss/train`` as its metrics, so
the points of a sweep or the seeds of an experiment can be compared side by side.

The runner makes a writer when ``convgrad run/reproduce --tensorboard`` was given (the flag sets
``CONVGRAD_TENSORBOARD=1``, which the worker processes of ``--jobs`` inherit); ``convgrad
export RUN_DIR --format tensorboard`` writes the same files from a finished run's
``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from convgrad.interop.common import require

ENVIRONMENT = "CONVGRAD_TENSORBOARD"
SCALARS = {"train_loss": "loss/train", "train_acc": "accuracy/train", "test_acc": "accuracy/test"}
HPARAM_METRICS = ("accuracy/test", "accuracy/train", "loss/train")


def requested() -> bool:
    """True when TensorBoard output was asked for (``--tensorboard`` or CONVGRAD_TENSORBOARD=1)."""
    return os.environ.get(ENVIRONMENT, "") not in ("", "0")


class _TensorBoardFlag(argparse.Action):
    """``--tensorboard``: record the request in the environment (seen by worker processes)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        try:
            require("tensorboardX", "--tensorboard")
        except ImportError as error:
            parser.error(str(error))
        os.environ[ENVIRONMENT] = "1"
        setattr(namespace, self.dest, True)


def add_tensorboard_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--tensorboard`` to a ``run``/``reproduce`` parser."""
    parser.add_argument(
        "--tensorboard", action=_TensorBoardFlag,
        help="also write TensorBoard event files beside metrics.jsonl (needs convgrad[interop])",
    )


def filters_image(state: Mapping[str, Any]) -> tuple[str, np.ndarray] | None:
    """The first 4-D weight of ``state`` (the first convolution) as a grid image.

    Each filter (C_out of them, input channels averaged) is scaled to [0, 1] on its own and
    placed in a grid of ceil(sqrt(C_out)) columns with 1-pixel gaps.

    Returns:
        ``(parameter name, (H, W) float32 image)``, or None when no 4-D weight exists.
    """
    for name, value in state.items():
        array = np.asarray(getattr(value, "data", value))
        if array.ndim == 4 and name.endswith("weight"):
            break
    else:
        return None
    filters = array.astype(np.float64).mean(axis=1)  # (C_out, kH, kW)
    low = filters.min(axis=(1, 2), keepdims=True)
    span = filters.max(axis=(1, 2), keepdims=True) - low
    filters = (filters - low) / np.where(span > 0, span, 1.0)
    count, height, width = filters.shape
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    grid = np.zeros((rows * (height + 1) + 1, columns * (width + 1) + 1), np.float32)
    for index in range(count):
        r, c = divmod(index, columns)
        top, left = 1 + r * (height + 1), 1 + c * (width + 1)
        grid[top : top + height, left : left + width] = filters[index]
    return name, grid


def hyperparameters(spec: Any) -> dict[str, Any]:
    """The hparams of a run: what distinguishes sweep points and seeds (None values dropped)."""
    from convgrad.lab.spec import dropout_of

    dropout = dropout_of(spec.model)
    values = {
        "name": spec.name,
        "point": spec.point or "-",
        "seed": int(spec.seed),
        "dataset": spec.dataset.kind,
        "optimizer": spec.optimizer.name,
        "lr": float(spec.optimizer.lr),
        "batch_size": int(spec.train.batch_size),
        "steps": int(spec.train.steps),
        "keep_prob": None if dropout is None else round(1 - dropout, 12),
    }
    return {key: value for key, value in values.items() if value is not None}


class TensorBoardWriter:
    """Event files for one run directory; the runner calls it at each evaluation and at the end.

    Args:
        run_dir: the run directory (the event files go beside ``metrics.jsonl``).
        spec: the run's :class:`~convgrad.lab.spec.ExperimentSpec`.
        start_step: the step a resumed run starts from; TensorBoard then discards the events
            an earlier session wrote after it (``purge_step = start_step + 1``), as
            ``metrics.jsonl`` drops its lines after the checkpoint.
        logdir: write there instead of ``run_dir``.
    """

    def __init__(
        self, run_dir: str | Path, spec: Any, start_step: int = 0, logdir: str | Path | None = None
    ) -> None:
        tensorboardx = require("tensorboardX", "TensorBoard output")
        self.spec = spec
        self.logdir = Path(logdir if logdir is not None else run_dir)
        self.writer = tensorboardx.SummaryWriter(
            str(self.logdir), purge_step=start_step + 1 if start_step > 0 else None, flush_secs=30,
            # tensorboardX names files by the second; two sessions within one second would
            # overwrite each other's file. Nanoseconds keep the names distinct and in order.
            filename_suffix=f".{time.time_ns()}",
        )
        self._write_hparams()

    def on_eval(
        self, step: int, metrics: Mapping[str, Any], model: Any = None, optimizer: Any = None
    ) -> None:
        """Scalars of one ``metrics.jsonl`` line, the learning rate and the first filters.

        Args:
            step: the optimizer step of the evaluation.
            metrics: the line (``train_loss``, ``train_acc``, ``test_acc``, ...).
            model: the model, for its first convolution's filters (skipped when None).
            optimizer: for the learning rate it uses now; default the spec's.
        """
        wall_time = metrics.get("wall_time")
        for key, tag in SCALARS.items():
            value = metrics.get(key)
            if value is not None:
                self.writer.add_scalar(tag, float(value), step)
        self.writer.add_scalar("lr", self._learning_rate(optimizer), step)
        if wall_time is not None:
            self.writer.add_scalar("time/wall_seconds", float(wall_time), step)
        if model is not None:
            self.add_filters(step, model.state_dict())

    def add_filters(self, step: int, state: Mapping[str, Any]) -> None:
        """The first convolution's filters as an image at ``step`` (see :func:`filters_image`)."""
        image = filters_image(state)
        if image is not None:
            name, grid = image
            self.writer.add_image(f"filters/{name}", grid, step, dataformats="HW")

    def _learning_rate(self, optimizer: Any) -> float:
        groups = getattr(optimizer, "param_groups", None)
        if groups:
            return float(groups[0]["lr"])
        defaults = getattr(optimizer, "defaults", None)
        if isinstance(defaults, Mapping) and "lr" in defaults:
            return float(defaults["lr"])
        return float(self.spec.optimizer.lr)

    def _write_hparams(self) -> None:
        """The hparams session: the spec's values; its metrics are the scalar tags above."""
        summary = require("tensorboardX.summary", "TensorBoard output")
        metric_dict = {tag: 0.0 for tag in HPARAM_METRICS}
        for proto in summary.hparams(hyperparameters(self.spec), metric_dict):
            self.writer.file_writer.add_summary(proto)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def writer_for(run_dir: Path, spec: Any, start_step: int = 0) -> TensorBoardWriter | None:
    """A writer when TensorBoard output was :func:`requested`, else None (for the runner)."""
    return TensorBoardWriter(run_dir, spec, start_step) if requested() else None


def has_event_files(folder: Path) -> bool:
    """True when ``folder`` already holds TensorBoard event files."""
    return any(Path(folder).glob("events.out.tfevents.*"))


def export_run(run_dir: str | Path, logdir: str | Path | None = None) -> Path:
    """Write event files for a finished (or stopped) run from its ``metrics.jsonl``.

    Scalars for every line, the hparams session and, when a checkpoint is there, its filters at
    its step.

    Args:
        run_dir: a run directory (``spec.json`` and ``metrics.jsonl``).
        logdir: where to write; default ``run_dir``.

    Returns:
        The folder the event file went to.
    """
    from convgrad.lab.checkpoint import CheckpointError, load_checkpoint
    from convgrad.lab.metrics import MetricsLog
    from convgrad.lab.spec import validate_spec

    run_dir = Path(run_dir)
    spec = validate_spec(json.loads((run_dir / "spec.json").read_text()),
                         source=f"{run_dir}/spec.json")
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    with TensorBoardWriter(run_dir, spec, logdir=logdir) as writer:
        for record in records:
            writer.on_eval(int(record["step"]), record)
        try:
            manifest, model_state, _ = load_checkpoint(run_dir)
        except CheckpointError:
            pass
        else:
            writer.add_filters(int(manifest["step"]), model_state)
    return writer.logdir
