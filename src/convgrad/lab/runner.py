"""The training loop: a pure function of (spec, seed, checkpoint).

Everything the next step depends on is in a checkpoint: weights, optimizer state, the global
generator (dropout), the data loader's position and the loss accumulated since the last
evaluation. Evaluations and checkpoints fall on fixed steps, and evaluation consumes no random
numbers, so a run killed at any instant and resumed ends bit-identical to one never interrupted.

A run directory holds::

    spec.json        the resolved spec (overrides applied)
    metrics.jsonl    one line per evaluation, see :mod:`convgrad.lab.metrics`
    manifest.json    the latest complete checkpoint, see :mod:`convgrad.lab.checkpoint`
    ckpt-<step>.npz  its arrays
    result.json      written when the run ends: completed or diverged
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import convgrad as cg
from convgrad.files import atomic_write_json
from convgrad.lab.checkpoint import (
    MANIFEST,
    CheckpointError,
    load_checkpoint,
    remove_orphans,
    save_checkpoint,
)
from convgrad.lab.datasets import Datasets, datasets_for, make_loader
from convgrad.lab.metrics import MetricsLog, accuracy, fixed_subset
from convgrad.lab.models import build_model, count_parameters
from convgrad.lab.selection import Selection
from convgrad.lab.spec import AdamSpec, ExperimentSpec, SpecError, dropout_of, validate_spec

COMPLETED, DIVERGED = "completed", "diverged"


class RunExistsError(SpecError):
    """The output directory already holds a run and ``resume`` was not asked for."""


@dataclass
class RunOutcome:
    """What :func:`run_experiment` returns: the status and the ``result.json`` content."""

    status: str
    run_dir: Path
    result: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True for a completed run."""
        return self.status == COMPLETED


def make_optimizer(spec: ExperimentSpec, model: cg.nn.Module) -> cg.optim.Optimizer:
    """The optimizer the spec names, over the model's distinct parameters."""
    options = spec.optimizer
    if isinstance(options, AdamSpec):
        return cg.optim.Adam(
            model.parameters(), lr=options.lr, betas=tuple(options.betas), eps=options.eps,
            weight_decay=options.weight_decay,
        )
    return cg.optim.SGD(
        model.parameters(), lr=options.lr, momentum=options.momentum,
        nesterov=options.nesterov, weight_decay=options.weight_decay,
    )


def _comparable(spec_data: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(spec_data))
    data["train"].pop("steps", None)
    return data


def _check_run_dir(run_dir: Path, spec: ExperimentSpec, resume: bool) -> bool:
    """Prepare ``run_dir``; True when a checkpoint is there to resume from."""
    spec_path = run_dir / "spec.json"
    occupied = spec_path.exists() or (run_dir / "metrics.jsonl").exists()
    if occupied and not resume:
        raise RunExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    if occupied and spec_path.exists():
        stored = json.loads(spec_path.read_text())
        current = spec.model_dump(mode="json")
        if _comparable(stored) != _comparable(current):
            changed = sorted(
                key for key in set(stored) | set(current)
                if _comparable(stored).get(key) != _comparable(current).get(key)
            )
            raise SpecError(
                f"cannot resume {run_dir}: the spec differs from the one the run started with "
                f"(in {', '.join(changed)}); only train.steps may change"
            )
    return (run_dir / MANIFEST).is_file()


def run_experiment(
    spec: ExperimentSpec,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool | None = None,
    datasets: Datasets | None = None,
    budget: str = "custom",
    stop_after: int | None = None,
) -> RunOutcome:
    """Train ``spec`` in ``run_dir``, evaluating and checkpointing on its schedule.

    Args:
        spec: an experiment without a sweep (use :meth:`ExperimentSpec.sweep_points`).
        run_dir: where the run's files go; created if needed.
        resume: continue from the checkpoint in ``run_dir`` (or start if there is none).
        progress: show a tqdm bar; default: when stderr is a terminal.
        datasets: use these instead of loading ``spec.dataset`` (tests, notebooks).
        budget: a label stored in ``result.json`` (quick, standard, full or custom).
        stop_after: return (status ``"stopped"``) after the checkpoint at this step, as if the
            process had been killed there; for tests of resumption.

    Returns:
        The outcome; ``result.json`` is written for completed and diverged runs.

    Raises:
        SpecError: a spec with a sweep, a model that does not fit the data, an occupied
            ``run_dir`` without ``resume``, or a resume with a different spec.
        CheckpointError: a corrupt checkpoint.
    """
    if spec.sweep is not None:
        raise SpecError("run_experiment: expected a single run; expand the sweep first")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    has_checkpoint = _check_run_dir(run_dir, spec, resume)
    result_path = run_dir / "result.json"
    if resume and result_path.is_file():
        previous = json.loads(result_path.read_text())
        if previous.get("status") == COMPLETED and previous.get("steps") == spec.train.steps:
            return RunOutcome(COMPLETED, run_dir, previous)
        result_path.unlink()
    atomic_write_json(run_dir / "spec.json", spec.model_dump(mode="json"))
    remove_orphans(run_dir)

    data = datasets or datasets_for(spec)
    cg.manual_seed(spec.seed)
    model = build_model(spec.model, data.input_shape, data.num_classes)
    optimizer = make_optimizer(spec, model)
    loader = make_loader(data, spec.train.batch_size, spec.seed)
    selection = Selection(run_dir, data.validation)
    train_eval = fixed_subset(data.train, spec.train.eval_train_examples, spec.seed)
    test_eval = fixed_subset(data.test, spec.train.eval_test_examples, spec.seed)
    log = MetricsLog(run_dir / "metrics.jsonl")

    step, loss_sum, loss_count, elapsed, train_time = 0, 0.0, 0, 0.0, 0.0
    if has_checkpoint:
        manifest, model_state, optimizer_state = load_checkpoint(run_dir)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        cg.set_rng_state(manifest["rng_state"])
        loader.load_state_dict(manifest["loader"])
        for key, now, what in (("blas_threads", blas_threads(), "BLAS threads"),
                               ("convgrad_threads", cg.get_num_threads(), "convgrad threads")):
            then = manifest.get(key)
            if then is not None and then != now:
                print(f"warning: {run_dir} was checkpointed with {then} {what}, resuming with "
                      f"{now}; float rounding may differ from an uninterrupted run",
                      file=sys.stderr)
        step = manifest["step"]
        loss_sum, loss_count = manifest["loss_sum"], manifest["loss_count"]
        elapsed, train_time = manifest["wall_time"], manifest["train_time"]
        if step > spec.train.steps:
            raise CheckpointError(
                f"{run_dir}: the checkpoint is at step {step}, beyond train.steps="
                f"{spec.train.steps}"
            )
    log.truncate_after(step)

    parameters = count_parameters(model)
    dropout = dropout_of(spec.model)
    base = {
        "name": spec.name,
        "point": spec.point,
        "keep_prob": None if dropout is None else round(1 - dropout, 12),
        "status": None,
        "budget": budget,
        "seed": spec.seed,
        "dataset": spec.dataset.kind,
        "steps": spec.train.steps,
        "batch_size": spec.train.batch_size,
        "parameters": parameters,
        "reference": spec.reference,
        "target": spec.target,
        "target_max": spec.target_max,
        "max_params": spec.max_params,
    }
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(
        total=spec.train.steps, initial=step, disable=not show, desc=spec.name, unit="step",
        dynamic_ncols=True, leave=True,
    )
    session_start = time.perf_counter()
    total = spec.train.steps
    last_train_acc = last_test_acc = None
    try:
        while step < total:
            images, labels = loader.next_batch()
            started = time.perf_counter()
            model.train()
            # overflow becomes inf/nan, which the check below reports as divergence
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                logits = model(cg.tensor(images))
                loss = cg.nn.functional.cross_entropy(logits, labels)
            value = float(loss.item())
            if not math.isfinite(value):
                return _diverged(run_dir, base, step + 1, value, elapsed, session_start)
            optimizer.zero_grad()
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss.backward()
                optimizer.step()
            train_time += time.perf_counter() - started
            step += 1
            loss_sum += value
            loss_count += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{value:.3f}", acc=last_test_acc, refresh=False)
            last = step == total
            if step % spec.train.eval_every == 0 or last:
                test_images, test_labels = (
                    (data.test.images, data.test.labels) if last else test_eval
                )
                last_train_acc = accuracy(model, *train_eval)
                last_test_acc = accuracy(model, np.asarray(test_images), np.asarray(test_labels))
                log.append({
                    "step": step,
                    "train_loss": loss_sum / max(1, loss_count),
                    "train_acc": last_train_acc,
                    "test_acc": last_test_acc,
                    "test_examples": len(test_labels),
                    "wall_time": round(elapsed + time.perf_counter() - session_start, 3),
                    **selection.evaluate(step, model),
                })
                loss_sum, loss_count = 0.0, 0
                bar.set_postfix(loss=f"{value:.3f}", acc=f"{last_test_acc:.4f}")
            if step % spec.checkpoint_interval == 0 or last:
                if not all(np.isfinite(p.data).all() for p in model.parameters()):
                    return _diverged(run_dir, base, step, float("nan"), elapsed, session_start)
                save_checkpoint(
                    run_dir, step, model.state_dict(), optimizer.state_dict(),
                    {
                        "rng_state": cg.get_rng_state(),
                        "loader": loader.state_dict(),
                        "loss_sum": loss_sum,
                        "loss_count": loss_count,
                        "wall_time": elapsed + time.perf_counter() - session_start,
                        "train_time": train_time,
                        "blas_threads": blas_threads(),
                        "convgrad_threads": cg.get_num_threads(),
                    },
                )
                if stop_after is not None and step >= stop_after and not last:
                    return RunOutcome("stopped", run_dir, {**base, "status": "stopped",
                                                           "steps_done": step})
    finally:
        bar.close()

    wall_time = elapsed + time.perf_counter() - session_start
    records = log.read()
    final = records[-1] if records else {}
    result = {
        **base,
        "status": COMPLETED,
        "steps_done": step,
        "test_acc": final.get("test_acc"),
        "train_acc": final.get("train_acc"),
        "test_examples": final.get("test_examples"),
        "wall_time": round(wall_time, 3),
        "train_time": round(train_time, 3),
        "samples_per_s": round(step * spec.train.batch_size / max(train_time, 1e-9), 1),
        "message": f"test accuracy {final.get('test_acc', float('nan')):.4f} after {step} steps",
    }
    result.update(selection.finish(model, data.test))
    atomic_write_json(result_path, result)
    return RunOutcome(COMPLETED, run_dir, result)


def blas_threads() -> int | None:
    """Threads of the BLAS library numpy uses (the largest, if several are loaded).

    Resumption is bit-exact only with the same count: BLAS may split a product's sum differently
    across threads, which changes float rounding.
    """
    from threadpoolctl import threadpool_info

    counts = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return max(counts) if counts else None


def _diverged(
    run_dir: Path, base: dict[str, Any], step: int, value: float, elapsed: float, start: float
) -> RunOutcome:
    manifest = run_dir / MANIFEST
    kept = json.loads(manifest.read_text())["step"] if manifest.is_file() else None
    message = (
        f"diverged at step {step}: the loss became {value}; "
        + (f"the last good checkpoint (step {kept}) is kept" if kept is not None
           else "no checkpoint had been written yet")
    )
    result = {
        **base,
        "status": DIVERGED,
        "diverged_step": step,
        "last_checkpoint_step": kept,
        "steps_done": step - 1,
        "test_acc": None,
        "wall_time": round(elapsed + time.perf_counter() - start, 3),
        "message": message,
    }
    atomic_write_json(run_dir / "result.json", result)
    return RunOutcome(DIVERGED, run_dir, result)


def run_spec(
    spec: ExperimentSpec,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool | None = None,
    budget: str = "custom",
) -> list[RunOutcome]:
    """Run a spec, each sweep point in its own subdirectory (``out_dir/keep-0.5``)."""
    outcomes = []
    for point, point_spec in spec.sweep_points():
        run_dir = Path(out_dir) / point if point else Path(out_dir)
        outcomes.append(run_experiment(point_spec, run_dir, resume=resume, progress=progress,
                                       budget=budget))
    return outcomes


def load_run_spec(run_dir: Path) -> ExperimentSpec:
    """The spec stored in a run directory."""
    return validate_spec(json.loads((Path(run_dir) / "spec.json").read_text()),
                         source=f"{run_dir}/spec.json")
