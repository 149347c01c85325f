"""The training loop: a pure function of (spec, seed, checkpoint).

Everything the next step depends on is in a checkpoint: weights, optimizer state, the global
generator (dropout), the data loader's position and the loss accumulated since the last
evaluation. Evaluations and checkpoints fall on fixed steps, and evaluation consumes no random
numbers, so a run killed at any instant and resumed ends bit-identical to one never interrupted.

A run directory holds::

    .convgrad.lock   held (fcntl.flock) by the process writing the run, for the whole run
    spec.json        the resolved spec (overrides applied)
    metrics.jsonl    one line per evaluation, see :mod:`convgrad.lab.metrics`
    manifest.json    the index of the checkpoint generations, see :mod:`convgrad.lab.checkpoint`
    ckpt-<step>.npz  the last ``train.keep_checkpoints`` generations (2 by default)
    result.json      written when the run ends: completed or diverged

Safety rules: the directory is locked before anything in it is read; everything a resume needs
(spec, result, metrics, the checkpoint and whether it fits the model) is read and verified before
any file is changed, so a refused command changes nothing; a run diverges on an inf or nan loss,
on a loss above ``train.loss_ceiling_factor`` times the first loss (at least 1), or on an inf or
nan in the parameters or the optimizer state, and such values are never saved.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import convgrad as cg
from convgrad.data import DataLoader
from convgrad.errors import CheckpointError, ConvgradError
from convgrad.files import atomic_write_json, exclusive_lock
from convgrad.lab.checkpoint import (
    NonFiniteError,
    flatten_optimizer_state,
    has_checkpoint,
    load_checkpoint,
    nonfinite_entries,
    read_manifest,
    remove_orphans,
    save_checkpoint,
)
from convgrad.lab.datasets import Datasets, datasets_for, make_loader
from convgrad.lab.metrics import MetricsLog, accuracy, fixed_subset
from convgrad.lab.models import build_model, count_parameters
from convgrad.lab.selection import Selection
from convgrad.lab.spec import (
    AdamSpec,
    AdamWSpec,
    CosineSpec,
    ExperimentSpec,
    ExponentialSpec,
    LinearScheduleSpec,
    MultiStepSpec,
    OneCycleSpec,
    RmspropSpec,
    SpecError,
    StepSpec,
    dropout_of,
    validate_spec,
)
from convgrad.lab.tensorboard import requested as tensorboard_requested

COMPLETED, DIVERGED = "completed", "diverged"
RUN_FILES = ("spec.json", "metrics.jsonl", "manifest.json", "result.json")
"""Names that only a convgrad run writes (with ``ckpt-*.npz``)."""
# Fields that may differ between the spec a run started with and the one resuming it.
_RESUMABLE_CHANGES = ("steps", "keep_checkpoints")


class RunExistsError(SpecError):
    """The output directory already holds a run (or other files) and ``resume`` was not asked."""


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


def parameter_groups(spec: ExperimentSpec, model: cg.nn.Module) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one, or with ``decay_bias_and_norm = false`` two, the
    parameters of rank >= 2 (weights of convolutions and linear layers) with the spec's
    ``weight_decay`` and those of rank <= 1 (biases, BatchNorm's weight and bias) without."""
    parameters = list(model.parameters())
    options = spec.optimizer
    if options.decay_bias_and_norm:
        return [{"params": parameters}]
    return [{"params": [p for p in parameters if p.ndim >= 2]},
            {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0}]


def make_optimizer(spec: ExperimentSpec, model: cg.nn.Module) -> cg.optim.Optimizer:
    """The optimizer the spec names, over the model's distinct parameters
    (:func:`parameter_groups`)."""
    options = spec.optimizer
    groups = parameter_groups(spec, model)
    if isinstance(options, AdamSpec | AdamWSpec):
        cls = cg.optim.AdamW if isinstance(options, AdamWSpec) else cg.optim.Adam
        return cls(groups, lr=options.lr, betas=tuple(options.betas), eps=options.eps,
                   weight_decay=options.weight_decay)
    if isinstance(options, RmspropSpec):
        return cg.optim.RMSprop(
            groups, lr=options.lr, alpha=options.alpha, eps=options.eps,
            weight_decay=options.weight_decay, momentum=options.momentum,
            centered=options.centered,
        )
    return cg.optim.SGD(
        groups, lr=options.lr, momentum=options.momentum,
        nesterov=options.nesterov, weight_decay=options.weight_decay,
    )


def make_scheduler(spec: ExperimentSpec, optimizer: cg.optim.Optimizer) -> Any:
    """The learning-rate scheduler of ``spec.scheduler`` on ``optimizer`` (None without one).

    A OneCycle cycle and a cosine period default to the run's ``train.steps``, and OneCycle's
    ``max_lr`` to the optimizer's ``lr``.
    """
    from convgrad.optim import lr_scheduler

    schedule, steps = spec.scheduler, spec.train.steps
    if schedule is None:
        return None
    if isinstance(schedule, OneCycleSpec):
        options = schedule.model_dump(exclude={"kind", "max_lr", "total_steps"})
        return lr_scheduler.OneCycleLR(
            optimizer, max_lr=schedule.max_lr or spec.optimizer.lr,
            total_steps=schedule.total_steps or steps, **options,
        )
    if isinstance(schedule, CosineSpec):
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=schedule.T_max or steps,
                                              eta_min=schedule.eta_min)
    if isinstance(schedule, StepSpec):
        return lr_scheduler.StepLR(optimizer, schedule.step_size, gamma=schedule.gamma)
    if isinstance(schedule, MultiStepSpec):
        return lr_scheduler.MultiStepLR(optimizer, schedule.milestones, gamma=schedule.gamma)
    if isinstance(schedule, ExponentialSpec):
        return lr_scheduler.ExponentialLR(optimizer, schedule.gamma)
    if isinstance(schedule, LinearScheduleSpec):
        return lr_scheduler.LinearLR(optimizer, schedule.start_factor, schedule.end_factor,
                                     schedule.total_iters)
    raise SpecError(f"scheduler: unsupported kind {schedule!r}")  # pragma: no cover


def _comparable(spec_data: dict[str, Any], keep_steps: bool = False) -> dict[str, Any]:
    data = json.loads(json.dumps(spec_data))
    for key in _RESUMABLE_CHANGES:
        if not (keep_steps and key == "steps"):
            data["train"].pop(key, None)
    return data


def _read_json_object(path: Path, error: type[ConvgradError]) -> dict[str, Any]:
    """A file holding one JSON object, or ``error`` naming the file and the fault."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as fault:
        raise error(f"{path}: cannot read it ({fault.strerror or fault})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as fault:
        raise error(f"{path}: not valid JSON ({fault})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object, received {type(value).__name__}")
    return value


def _check_run_dir(run_dir: Path, spec: ExperimentSpec, resume: bool) -> bool:
    """Check what ``run_dir`` holds, changing nothing; True when it holds a run to resume."""
    found = sorted(path.name for path in run_dir.iterdir() if not path.name.startswith("."))
    if not found:
        return False
    spec_path = run_dir / "spec.json"
    if not spec_path.is_file():
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise RunExistsError(
            f"{run_dir} is not empty and is not a convgrad run (no spec.json); it holds {shown}; "
            "choose an empty or new --out"
        )
    if not resume:
        raise RunExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    stored = validate_spec(_read_json_object(spec_path, SpecError), source=str(spec_path))
    stored_data, current = stored.model_dump(mode="json"), spec.model_dump(mode="json")
    # a schedule as long as the run (OneCycle, cosine) fixes train.steps too
    fixed = stored.schedule_follows_steps or spec.schedule_follows_steps
    before, now = _comparable(stored_data, fixed), _comparable(current, fixed)
    if before != now:
        changed = sorted(key for key in set(before) | set(now) if before.get(key) != now.get(key))
        allowed = ("only train.keep_checkpoints may change (the scheduler's length is "
                   "train.steps)" if fixed else
                   "only train.steps and train.keep_checkpoints may change")
        raise SpecError(
            f"cannot resume {run_dir}: the spec differs from the one the run started with "
            f"(in {', '.join(changed)}); {allowed}"
        )
    return True


def _restore(
    manifest: dict[str, Any],
    model_state: dict[str, np.ndarray],
    optimizer_state: dict[str, Any],
    model: cg.nn.Module,
    optimizer: cg.optim.Optimizer,
    loader: DataLoader,
) -> None:
    """Load a checkpoint into the run's objects, checking first that it fits them."""
    name = manifest["file"]
    own = model.state_dict()
    missing = sorted(set(own) - set(model_state))
    unexpected = sorted(set(model_state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{name}: does not fit the model: missing parameters {missing}, unexpected "
            f"{unexpected}"
        )
    for key, value in own.items():
        if model_state[key].shape != np.shape(value):
            raise CheckpointError(
                f"{name}: parameter {key}: expected shape {np.shape(value)}, received "
                f"{model_state[key].shape}"
            )
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    listed = sum(len(group["params"]) for group in optimizer_state.get("param_groups", []))
    if listed != len(parameters):
        raise CheckpointError(
            f"{name}: optimizer state for {listed} parameters, the model has "
            f"{len(parameters)}"
        )
    for index, entry in optimizer_state.get("state", {}).items():
        parameter = parameters[index]
        for key, value in entry.items():
            if isinstance(value, np.ndarray) and value.ndim and value.shape != parameter.shape:
                raise CheckpointError(
                    f"{name}: optimizer/{index}/{key}: expected shape {parameter.shape}, "
                    f"received {value.shape}"
                )
    try:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        loader.load_state_dict(manifest["loader"])
        cg.set_rng_state(manifest["rng_state"])
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, OverflowError) as error:
        raise CheckpointError(f"{name}: does not fit the run: {error!r}") from None


def _nonfinite_state(model: cg.nn.Module, optimizer: cg.optim.Optimizer) -> list[str]:
    """Names of the parameters and optimizer arrays holding inf or nan."""
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    arrays.update(flatten_optimizer_state(optimizer.state_dict())[0])
    return nonfinite_entries(arrays)


def run_experiment(
    spec: ExperimentSpec,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool | None = None,
    datasets: Datasets | None = None,
    budget: str = "custom",
    stop_after: int | None = None,
    keep_checkpoints: int | None = None,
    scheduler: Callable[[cg.optim.Optimizer], Any] | None = None,
    tensorboard: bool = False,
) -> RunOutcome:
    """Train ``spec`` in ``run_dir``, evaluating and checkpointing on its schedule.

    The loop is short: forward, the divergence guard's loss check, backward and update, then
    the hooks in order (:class:`DivergenceGuard`, :class:`Evaluator`, :class:`ProgressBar`,
    :class:`TensorBoardHook`, :class:`SchedulerStep`, :class:`Checkpointer`), each with
    ``on_step_end(state)`` and ``state_dict()``; :class:`RunState` holds the loop's own state.

    The directory is locked (:func:`convgrad.files.exclusive_lock`) for the whole call.

    Args:
        spec: an experiment without a sweep (use :meth:`ExperimentSpec.sweep_points`).
        run_dir: where the run's files go; created if needed.
        resume: continue from the checkpoint in ``run_dir`` (or start if there is none).
        progress: show a tqdm bar; default: when stderr is a terminal.
        datasets: use these instead of loading ``spec.dataset`` (tests, notebooks).
        budget: a label stored in ``result.json`` (quick, standard, full or custom).
        stop_after: return (status ``"stopped"``) after the checkpoint at this step, as if the
            process had been killed there; for tests of resumption.
        keep_checkpoints: generations to keep; default ``spec.train.keep_checkpoints`` (2).
        scheduler: ``scheduler(optimizer)`` builds an LR scheduler (``step()``,
            ``state_dict()``, ``load_state_dict()``), stepped after every update and resumed
            exactly; for programmatic use. A spec's ``[scheduler]`` table is built by
            :func:`make_scheduler` and stepped the same way; giving both is refused.
        tensorboard: also write TensorBoard event files beside ``metrics.jsonl`` (as does
            ``--tensorboard``, which sets ``CONVGRAD_TENSORBOARD=1``).

    Returns:
        The outcome; ``result.json`` is written for completed and diverged runs.

    Raises:
        SpecError: a spec with a sweep, a model that does not fit the data, both a
            ``scheduler`` argument and a ``[scheduler]`` table in the spec, an occupied
            ``run_dir`` without ``resume`` (:class:`RunExistsError`), or a resume with a
            different spec.
        RunLockedError: another process is writing ``run_dir``.
        CheckpointError: no checkpoint generation verifies, or one that does not fit the run.
        MetricsError: a bad line in ``metrics.jsonl`` (its number is given).
    """
    if spec.sweep is not None:
        raise SpecError("run_experiment: expected a single run; expand the sweep first")
    if scheduler is not None and spec.scheduler is not None:
        raise SpecError(
            f"run_experiment: the spec has a [scheduler] table ({spec.scheduler.kind}) and a "
            "scheduler argument was given; pass one of them"
        )
    keep = spec.train.keep_checkpoints if keep_checkpoints is None else keep_checkpoints
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise SpecError(f"keep_checkpoints: expected an integer >= 1, received {keep!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(run_dir):
        return _run_locked(spec, run_dir, resume, progress, datasets, budget, stop_after, keep,
                           scheduler, tensorboard)


# ------------------------------------------------------------------------------ run state
@dataclass
class RunState:
    """What the loop knows besides the model, the optimizer and the loader; hooks read it.

    Attributes:
        spec: the experiment.
        step: optimizer steps taken (after ``on_step_end``: including this one).
        loss: this step's training loss.
        loss_sum, loss_count: losses since the last evaluation (their mean is logged).
        elapsed: wall-clock seconds of earlier sessions (a resumed run continues the sum).
        train_time: seconds spent in forward, backward and update, all sessions.
        session_start: ``time.perf_counter()`` when this session's loop began.
        outcome: set by a hook to end the run (diverged, stopped) after this step.
    """

    spec: ExperimentSpec
    step: int = 0
    loss: float = math.nan
    loss_sum: float = 0.0
    loss_count: int = 0
    elapsed: float = 0.0
    train_time: float = 0.0
    session_start: float = field(default_factory=time.perf_counter)
    outcome: RunOutcome | None = None

    @property
    def last(self) -> bool:
        """This is the run's last step."""
        return self.step == self.spec.train.steps

    @property
    def evaluating(self) -> bool:
        """An evaluation falls on this step (every ``train.eval_every`` steps and the last)."""
        return self.step % self.spec.train.eval_every == 0 or self.last

    @property
    def checkpointing(self) -> bool:
        """A checkpoint falls on this step (every ``checkpoint_interval`` steps and the last)."""
        return self.step % self.spec.checkpoint_interval == 0 or self.last

    def wall_time(self) -> float:
        """Seconds of training so far, all sessions."""
        return self.elapsed + time.perf_counter() - self.session_start

    def state_dict(self) -> dict[str, Any]:
        """The loop's part of a checkpoint (the step is saved by the checkpointer)."""
        return {"loss_sum": self.loss_sum, "loss_count": self.loss_count,
                "wall_time": self.wall_time(), "train_time": self.train_time}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (and the step) from a verified checkpoint's metadata."""
        self.step = state["step"]
        self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]
        self.elapsed, self.train_time = state["wall_time"], state["train_time"]


class Hook:
    """A piece of the loop run after every optimizer step, in the order given.

    ``on_step_end(state)`` may set ``state.outcome`` to end the run; ``state_dict()`` is saved
    in every checkpoint (keys must be distinct across hooks) and handed back to
    ``load_state_dict`` on resume, so a hook with state resumes exactly.
    """

    def on_step_end(self, state: RunState) -> None:
        """Called after the update of step ``state.step``."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state to checkpoint (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint's metadata (which holds every hook's keys)."""

    def close(self) -> None:
        """Called once when the loop ends, however it ends."""


class DivergenceGuard(Hook):
    """Ends the run as diverged on an inf/nan loss, a loss above the ceiling, or an inf/nan in
    the parameters or the optimizer state (checked on evaluation and checkpoint steps, so a
    non-finite value is never evaluated or saved).

    The ceiling is ``train.loss_ceiling_factor`` times the run's first loss (at least 1).
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.initial_loss: float | None = None

    def check_loss(self, state: RunState, value: float) -> bool:
        """Before the update: False (and ``state.outcome`` set) when ``value`` diverged."""
        if self.initial_loss is None and math.isfinite(value):
            self.initial_loss = value
        factor = state.spec.train.loss_ceiling_factor
        ceiling = factor * max(self.initial_loss or 1.0, 1.0)
        if math.isfinite(value) and value <= ceiling:
            return True
        reason = (f"the loss became {value}" if not math.isfinite(value) else
                  f"the loss became {value:.4g}, above the ceiling {ceiling:.4g} "
                  f"(train.loss_ceiling_factor={factor:g} x the first loss, at least 1)")
        state.outcome = self.run.diverged(state, state.step + 1, reason)
        return False

    def on_step_end(self, state: RunState) -> None:
        if not (state.evaluating or state.checkpointing):
            return
        bad = _nonfinite_state(self.run.model, self.run.optimizer)
        if bad:
            reason = f"inf or nan in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} " \
                     "after the update"
            state.outcome = self.run.diverged(state, state.step, reason)

    def state_dict(self) -> dict[str, Any]:
        return {"initial_loss": self.initial_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stored = state.get("initial_loss")
        if isinstance(stored, float) and math.isfinite(stored):
            self.initial_loss = stored


class Evaluator(Hook):
    """On evaluation steps: accuracy on the fixed subsets (the whole test set at the last step),
    one line appended to ``metrics.jsonl`` (with ``lr``, the first parameter group's learning
    rate of the step just taken); resets the loss accumulator."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        spec, data = run.spec, run.data
        self.train_eval = fixed_subset(data.train, spec.train.eval_train_examples, spec.seed)
        self.test_eval = fixed_subset(data.test, spec.train.eval_test_examples, spec.seed)
        self.last_test_acc: float | None = None

    def on_step_end(self, state: RunState) -> None:
        if not state.evaluating:
            return
        model, data = self.run.model, self.run.data
        test_images, test_labels = (
            (np.asarray(data.test.images), np.asarray(data.test.labels)) if state.last
            else self.test_eval
        )
        train_acc = accuracy(model, *self.train_eval)
        self.last_test_acc = accuracy(model, test_images, test_labels)
        self.run.log.append({
            "step": state.step,
            "train_loss": state.loss_sum / max(1, state.loss_count),
            "train_acc": train_acc,
            "test_acc": self.last_test_acc,
            "test_examples": len(test_labels),
            "wall_time": round(state.wall_time(), 3),
            "lr": float(self.run.optimizer.param_groups[0]["lr"]),
            **self.run.selection.evaluate(state.step, model),
        })
        state.loss_sum, state.loss_count = 0.0, 0


class ProgressBar(Hook):
    """A tqdm bar on stderr (off when ``show`` is False)."""

    def __init__(self, state: RunState, show: bool, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.bar = tqdm(total=state.spec.train.steps, initial=state.step, disable=not show,
                        desc=state.spec.name, unit="step", dynamic_ncols=True, leave=True)

    def on_step_end(self, state: RunState) -> None:
        self.bar.update(1)
        acc = self.evaluator.last_test_acc
        if state.evaluating and acc is not None:
            self.bar.set_postfix(loss=f"{state.loss:.3f}", acc=f"{acc:.4f}")
        elif state.step % 10 == 0:
            self.bar.set_postfix(loss=f"{state.loss:.3f}", acc=acc, refresh=False)

    def close(self) -> None:
        self.bar.close()


class SchedulerStep(Hook):
    """Calls ``scheduler.step()`` after every optimizer step (torch's order); its
    ``state_dict()`` goes into the checkpoint under ``"scheduler"``."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def on_step_end(self, state: RunState) -> None:
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "scheduler" not in state:
            raise CheckpointError(f"{state.get('file')}: no scheduler state to resume")
        self.scheduler.load_state_dict(state["scheduler"])


class TensorBoardHook(Hook):
    """Writes each evaluation to TensorBoard event files beside ``metrics.jsonl`` (scalars, the
    learning rate, the first layer's filters; see :mod:`convgrad.lab.tensorboard`), after the
    evaluator. On resume, events after the checkpoint's step are purged, so the curves of an
    interrupted run equal those of an uninterrupted one."""

    def __init__(self, run: _Run, start_step: int) -> None:
        from convgrad.lab.tensorboard import TensorBoardWriter

        self.run = run
        self.board = TensorBoardWriter(run.run_dir, run.spec, start_step)

    def on_step_end(self, state: RunState) -> None:
        if state.evaluating:
            self.board.on_eval(state.step, self.run.log.read()[-1], self.run.model,
                               self.run.optimizer)

    def close(self) -> None:
        self.board.close()


class Checkpointer(Hook):
    """On checkpoint steps: a generation with the model, the optimizer, the RNG, the loader's
    position, the loop state and every hook's ``state_dict()``; ends the run with status
    "stopped" after the checkpoint at ``stop_after`` (tests of resumption)."""

    def __init__(self, run: _Run, hooks: list[Hook], keep: int, stop_after: int | None) -> None:
        self.run, self.hooks, self.keep, self.stop_after = run, hooks, keep, stop_after

    def on_step_end(self, state: RunState) -> None:
        if not state.checkpointing or state.outcome is not None:
            return
        run = self.run
        extra = {"rng_state": cg.get_rng_state(), "loader": run.loader.state_dict(),
                 **state.state_dict(), "blas_threads": blas_threads(),
                 "convgrad_threads": cg.get_num_threads()}
        for hook in self.hooks:
            extra.update(hook.state_dict())
        try:
            save_checkpoint(run.run_dir, state.step, run.model.state_dict(),
                            run.optimizer.state_dict(), extra, keep=self.keep)
        except NonFiniteError as error:
            state.outcome = run.diverged(state, state.step, str(error))
            return
        if self.stop_after is not None and state.step >= self.stop_after and not state.last:
            state.outcome = RunOutcome("stopped", run.run_dir, {**run.base, "status": "stopped",
                                                                "steps_done": state.step})


@dataclass
class _Run:
    """The objects of one run that the hooks share."""

    spec: ExperimentSpec
    run_dir: Path
    data: Datasets
    model: cg.nn.Module
    optimizer: cg.optim.Optimizer
    loader: DataLoader
    log: MetricsLog
    base: dict[str, Any]
    selection: Selection

    def diverged(self, state: RunState, step: int, reason: str) -> RunOutcome:
        """Write ``result.json`` for a run that diverged at ``step``."""
        return _diverged(self.run_dir, self.base, step, reason, state.elapsed,
                         state.session_start)

    def completed(self, state: RunState) -> RunOutcome:
        """Write ``result.json`` for a run that reached its last step."""
        records = self.log.read()
        final = records[-1] if records else {}
        step, batch_size = state.step, self.spec.train.batch_size
        result = {
            **self.base,
            "status": COMPLETED,
            "steps_done": step,
            "test_acc": final.get("test_acc"),
            "train_acc": final.get("train_acc"),
            "test_examples": final.get("test_examples"),
            "wall_time": round(state.wall_time(), 3),
            "train_time": round(state.train_time, 3),
            "samples_per_s": round(step * batch_size / max(state.train_time, 1e-9), 1),
            "message": f"test accuracy {final.get('test_acc', float('nan')):.4f} after {step} "
                       "steps",
        }
        result.update(self.selection.finish(self.model, self.data.test))
        atomic_write_json(self.run_dir / "result.json", result)
        return RunOutcome(COMPLETED, self.run_dir, result)


def _result_base(spec: ExperimentSpec, model: cg.nn.Module, budget: str) -> dict[str, Any]:
    dropout = dropout_of(spec.model)
    return {
        "name": spec.name,
        "point": spec.point,
        "keep_prob": None if dropout is None else round(1 - dropout, 12),
        "status": None,
        "budget": budget,
        "seed": spec.seed,
        "dataset": spec.dataset.kind,
        "steps": spec.train.steps,
        "batch_size": spec.train.batch_size,
        "parameters": count_parameters(model),
        "reference": spec.reference,
        "target": spec.target,
        "target_max": spec.target_max,
        "max_params": spec.max_params,
    }


def _run_locked(
    spec: ExperimentSpec,
    run_dir: Path,
    resume: bool,
    progress: bool | None,
    datasets: Datasets | None,
    budget: str,
    stop_after: int | None,
    keep: int,
    scheduler: Callable[[cg.optim.Optimizer], Any] | None = None,
    tensorboard: bool = False,
) -> RunOutcome:
    # ---- read and verify everything, changing nothing
    resuming = _check_run_dir(run_dir, spec, resume)
    result_path = run_dir / "result.json"
    if resuming and result_path.is_file():
        previous = _read_json_object(result_path, CheckpointError)
        if previous.get("status") == COMPLETED and previous.get("steps") == spec.train.steps:
            return RunOutcome(COMPLETED, run_dir, previous)

    data = datasets or datasets_for(spec)
    cg.manual_seed(spec.seed)
    model = build_model(spec.model, data.input_shape, data.num_classes)
    optimizer = make_optimizer(spec, model)
    loader = make_loader(data, spec.train.batch_size, spec.seed, spec.train.augment)
    log = MetricsLog(run_dir / "metrics.jsonl")
    log.read()  # a bad line refuses the resume here, before any file changes
    run = _Run(spec, run_dir, data, model, optimizer, loader, log,
               _result_base(spec, model, budget), Selection(run_dir, data.validation))
    state = RunState(spec)
    guard = DivergenceGuard(run)
    evaluator = Evaluator(run)
    resumable: list[Hook] = [guard]
    if scheduler is not None:
        resumable.append(SchedulerStep(scheduler(optimizer)))
    elif spec.scheduler is not None:
        resumable.append(SchedulerStep(make_scheduler(spec, optimizer)))

    if resuming and has_checkpoint(run_dir):
        manifest, model_state, optimizer_state = load_checkpoint(run_dir)
        if manifest["step"] > spec.train.steps:
            raise CheckpointError(
                f"{run_dir}: the checkpoint is at step {manifest['step']}, beyond train.steps="
                f"{spec.train.steps}; nothing was changed"
            )
        _restore(manifest, model_state, optimizer_state, model, optimizer, loader)
        for hook in resumable:
            hook.load_state_dict(manifest)
        for key, now, what in (("blas_threads", blas_threads(), "BLAS threads"),
                               ("convgrad_threads", cg.get_num_threads(), "convgrad threads")):
            then = manifest.get(key)
            if then is not None and then != now:
                print(f"warning: {run_dir} was checkpointed with {then} {what}, resuming with "
                      f"{now}; float rounding may differ from an uninterrupted run",
                      file=sys.stderr)
        state.load_state_dict(manifest)

    # ---- from here on the run's files change
    result_path.unlink(missing_ok=True)
    atomic_write_json(run_dir / "spec.json", spec.model_dump(mode="json"))
    remove_orphans(run_dir)
    log.truncate_after(state.step)

    show = sys.stderr.isatty() if progress is None else progress
    hooks: list[Hook] = [guard, evaluator, ProgressBar(state, show, evaluator)]
    if tensorboard or tensorboard_requested():  # before the scheduler: the step's own lr
        hooks.append(TensorBoardHook(run, state.step))
    hooks += resumable[1:]
    hooks.append(Checkpointer(run, list(hooks), keep, stop_after))
    state.session_start = time.perf_counter()
    try:
        while state.step < spec.train.steps:
            images, labels = loader.next_batch()
            started = time.perf_counter()
            model.train()
            # overflow becomes inf/nan, which the guard reports as divergence
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss = cg.nn.functional.cross_entropy(
                    model(cg.tensor(images)), labels, label_smoothing=spec.train.label_smoothing
                )
            state.loss = float(loss.item())
            if not guard.check_loss(state, state.loss):
                return state.outcome  # type: ignore[return-value]
            optimizer.zero_grad()
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss.backward()
                optimizer.step()
            state.train_time += time.perf_counter() - started
            state.step += 1
            state.loss_sum += state.loss
            state.loss_count += 1
            for hook in hooks:
                hook.on_step_end(state)
                if state.outcome is not None:
                    return state.outcome
    finally:
        for hook in hooks:
            hook.close()
    return run.completed(state)


def blas_threads() -> int | None:
    """Threads of the BLAS library numpy uses (the largest, if several are loaded).

    Resumption is bit-exact only with the same count: BLAS may split a product's sum differently
    across threads, which changes float rounding.
    """
    from threadpoolctl import threadpool_info

    counts = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return max(counts) if counts else None


def _diverged(
    run_dir: Path, base: dict[str, Any], step: int, reason: str, elapsed: float, start: float
) -> RunOutcome:
    try:
        kept: int | None = read_manifest(run_dir)[0].step
    except CheckpointError:
        kept = None
    message = (
        f"diverged at step {step}: {reason}; "
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
    keep_checkpoints: int | None = None,
) -> list[RunOutcome]:
    """Run a spec, each sweep point in its own subdirectory (``out_dir/keep-0.5``)."""
    outcomes = []
    for point, point_spec in spec.sweep_points():
        run_dir = Path(out_dir) / point if point else Path(out_dir)
        outcomes.append(run_experiment(point_spec, run_dir, resume=resume, progress=progress,
                                       budget=budget, keep_checkpoints=keep_checkpoints))
    return outcomes


def load_run_spec(run_dir: Path) -> ExperimentSpec:
    """The spec stored in a run directory.

    Raises:
        SpecError: no readable, valid ``spec.json``.
    """
    path = Path(run_dir) / "spec.json"
    return validate_spec(_read_json_object(path, SpecError), source=str(path))
