"""Fake finished runs (the files a run leaves, without training) for the report tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from convgrad.lab.datasets import dataset_geometry
from convgrad.lab.models import build_model, count_parameters
from convgrad.lab.spec import builtin_names, resolve_spec


def fake_run(run_dir: Path, spec, accuracy: float, parameters: int, seed: int = 0) -> None:
    """spec.json, metrics.jsonl and result.json of a completed run reaching ``accuracy``."""
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps(spec.model_dump(mode="json")))
    steps = spec.train.steps
    with open(run_dir / "metrics.jsonl", "w") as handle:
        for k, step in enumerate(range(steps // 4, steps + 1, steps // 4), start=1):
            handle.write(json.dumps({"step": step, "train_loss": 1.0 / k, "train_acc": 0.8 + k / 25,
                                     "test_acc": accuracy - (4 - k) / 50, "test_examples": 10000,
                                     "wall_time": 10.0 * k}) + "\n")
    keep = None if spec.point == "" else float(spec.point.removeprefix("keep-"))
    result = {"name": spec.name, "point": spec.point, "keep_prob": keep, "status": "completed",
              "budget": "quick", "seed": seed, "dataset": spec.dataset.kind, "steps": steps,
              "steps_done": steps, "batch_size": 50, "parameters": parameters,
              "reference": spec.reference, "target": spec.target, "target_max": spec.target_max,
              "max_params": spec.max_params, "test_acc": accuracy, "train_acc": 0.96,
              "test_examples": 10000, "wall_time": 40.0, "samples_per_s": 250.0}
    (run_dir / "result.json").write_text(json.dumps(result))


def fake_suite(root: Path, names: Sequence[str] | None = None) -> Path:
    """A fake quick-budget run of each registered experiment (each sweep point) under root."""
    for index, name in enumerate(names or builtin_names()):
        spec = resolve_spec(name).with_overrides(budget="quick")
        for point, point_spec in spec.sweep_points():
            shape, classes = dataset_geometry(point_spec.dataset)
            parameters = count_parameters(build_model(point_spec.model, shape, classes))
            run_dir = root / name / point if point else root / name
            fake_run(run_dir, point_spec, 0.9 + index / 100, parameters)
    return root
