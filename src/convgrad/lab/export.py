"""``convgrad export RUN_DIR --format safetensors|onnx|tensorboard``: a run's weights or metrics
in the ecosystem's formats (needs ``convgrad[interop]``).

- ``safetensors``: the checkpoint's model weights, with the spec (``convgrad_spec``, JSON), the
  step and the convgrad version as metadata; loads with ``safetensors.torch.load_file`` into
  ``convgrad.interop.to_torch(model)``.
- ``onnx``: the spec's network with those weights, batch size symbolic, checked by
  ``onnx.checker``.
- ``tensorboard``: event files from ``metrics.jsonl`` (see :mod:`convgrad.lab.tensorboard`); a
  directory of runs (a sweep) exports each run.

``--which final`` takes the checkpoint ``manifest.json`` points at; ``--which best`` the one of
the evaluation with the highest ``test_acc`` in ``metrics.jsonl``, which must still be on disk.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from convgrad.interop.common import InteropError, MissingExtraError

FORMATS = {"safetensors": ".safetensors", "onnx": ".onnx", "tensorboard": ""}


class ExportError(InteropError):
    """A run directory that cannot be exported (names the directory and the reason)."""


def _checkpoint(run_dir: Path, which: str) -> tuple[int, dict[str, np.ndarray]]:
    """(step, model state) of the final or best checkpoint, through the lab's load_checkpoint."""
    from convgrad.lab.checkpoint import load_checkpoint
    from convgrad.lab.metrics import MetricsLog

    if which == "final":
        manifest, model_state, _ = load_checkpoint(run_dir)
        return int(manifest["step"]), model_state
    records = [r for r in MetricsLog(run_dir / "metrics.jsonl").read()
               if r.get("test_acc") is not None]
    if not records:
        raise ExportError(f"{run_dir}: --which best needs evaluations in metrics.jsonl, found none")
    best = max(records, key=lambda r: (r["test_acc"], r["step"]))["step"]
    if "step" in inspect.signature(load_checkpoint).parameters:
        manifest, model_state, _ = load_checkpoint(run_dir, step=best)
    else:
        manifest, model_state, _ = load_checkpoint(run_dir)
    if int(manifest["step"]) != int(best):
        raise ExportError(
            f"{run_dir}: the best evaluation is at step {best}, but the checkpoint kept is at "
            f"step {manifest['step']}; export --which final"
        )
    return int(best), model_state


def _model(run_dir: Path, model_state: dict[str, np.ndarray]) -> tuple[Any, tuple[int, ...]]:
    from convgrad.lab.datasets import dataset_geometry
    from convgrad.lab.models import build_model
    from convgrad.lab.runner import load_run_spec

    spec = load_run_spec(run_dir)
    input_shape, num_classes = dataset_geometry(spec.dataset)
    model = build_model(spec.model, input_shape, num_classes)
    model.load_state_dict(model_state)
    return model.eval(), input_shape


def export_run(
    run_dir: str | Path, format: str, out: str | Path | None = None, which: str = "final"
) -> list[Path]:
    """Export one run (or, for tensorboard, every run below ``run_dir``).

    Args:
        run_dir: a run directory (``spec.json``, ``metrics.jsonl``, a checkpoint).
        format: ``safetensors``, ``onnx`` or ``tensorboard``.
        out: the file (or, for tensorboard, folder) to write; default ``RUN_DIR/model-<which>
            .<ext>`` or ``RUN_DIR`` itself for tensorboard.
        which: ``final`` or ``best`` checkpoint (weights formats only).

    Returns:
        The paths written.

    Raises:
        ExportError: not a run directory, an unknown format, event files already in the target.
        CheckpointError: a missing or corrupt checkpoint.
    """
    run_dir = Path(run_dir)
    if format not in FORMATS:
        raise ExportError(f"expected format in {sorted(FORMATS)}, received {format!r}")
    if format == "tensorboard":
        return _export_tensorboard(run_dir, out)
    if not (run_dir / "spec.json").is_file():
        raise ExportError(f"{run_dir} is not a run directory (no spec.json)")
    step, model_state = _checkpoint(run_dir, which)
    target = Path(out) if out is not None else run_dir / f"model-{which}{FORMATS[format]}"
    if format == "safetensors":
        from convgrad.interop.safetensors import save

        spec_text = json.dumps(json.loads((run_dir / "spec.json").read_text()),
                               separators=(",", ":"))
        save(model_state, target, {"convgrad_spec": spec_text, "step": str(step),
                                   "checkpoint": which})
        return [target]
    from convgrad.interop.onnx import export

    model, input_shape = _model(run_dir, model_state)
    export(model, np.zeros((1, *input_shape), np.float32), target)
    return [target]


def _export_tensorboard(run_dir: Path, out: str | Path | None) -> list[Path]:
    from convgrad.lab.tensorboard import export_run as export_events
    from convgrad.lab.tensorboard import has_event_files

    if (run_dir / "metrics.jsonl").is_file():
        runs = [run_dir]
    else:
        runs = sorted(p.parent for p in run_dir.glob("*/metrics.jsonl"))
        if not runs:
            raise ExportError(f"{run_dir}: no metrics.jsonl in it or in its subdirectories")
    written = []
    for run in runs:
        target = Path(out) / run.relative_to(run_dir) if out is not None else run
        if has_event_files(target):
            raise ExportError(
                f"{target} already holds TensorBoard event files; remove them or pass --out"
            )
        written.append(export_events(run, target))
    return written


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``convgrad`` command."""
    parser = subparsers.add_parser(
        "export", help="write a run's weights (safetensors, onnx) or metrics (tensorboard)",
        description="Export a finished run. safetensors/onnx: the final or best checkpoint's "
        "weights (default RUN_DIR/model-<which>.<ext>); tensorboard: event files from "
        "metrics.jsonl (default in RUN_DIR). Needs pip install 'convgrad[interop]'.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--out", type=Path, help="output file (folder for tensorboard)")
    parser.add_argument("--which", choices=("final", "best"), default="final",
                        help="which checkpoint's weights (default: final)")
    parser.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """``convgrad export``: 0 written, 2 a usage, missing-extra or file error."""
    from convgrad.lab.checkpoint import CheckpointError
    from convgrad.lab.spec import SpecError

    try:
        paths = export_run(args.run_dir, args.format, args.out, args.which)
    except (InteropError, MissingExtraError, CheckpointError, SpecError, OSError) as error:
        print(f"convgrad: error: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0
