"""The runner's explicit state and hooks: each hook's state_dict() is
checkpointed and resumed exactly; an LR scheduler and a TensorBoard writer plug in as hooks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import convgrad as cg  # noqa: E402
from convgrad.lab.checkpoint import load_checkpoint  # noqa: E402
from convgrad.lab.runner import (  # noqa: E402
    Checkpointer,
    DivergenceGuard,
    Evaluator,
    Hook,
    RunState,
    run_experiment,
)
from test_reliability_lab import assert_same_weights, tiny  # noqa: E402


class HalvingLR:
    """lr halves every 3 steps: a scheduler with state (torch's StepLR protocol)."""

    def __init__(self, optimizer) -> None:
        self.optimizer, self.count = optimizer, 0

    def step(self) -> None:
        self.count += 1
        if self.count % 3 == 0:
            for group in self.optimizer.param_groups:
                group["lr"] = group["lr"] / 2

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]


def test_a_scheduler_hook_is_checkpointed_and_resumes_bit_identically(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run_experiment(tiny(), whole, progress=False, scheduler=HalvingLR).ok
    assert run_experiment(tiny(), parts, progress=False, scheduler=HalvingLR,
                          stop_after=10).status == "stopped"
    manifest = load_checkpoint(parts, warn=lambda line: None)[0]
    assert manifest["scheduler"] == {"count": 10}
    assert manifest["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-3 / 8)
    assert run_experiment(tiny(), parts, resume=True, progress=False, scheduler=HalvingLR).ok
    assert_same_weights(whole, parts)
    plain = tmp_path / "plain"
    run_experiment(tiny(), plain, progress=False)
    assert not all(np.array_equal(a, b) for a, b in zip(
        load_checkpoint(plain, warn=lambda line: None)[1].values(),
        load_checkpoint(whole, warn=lambda line: None)[1].values(), strict=True))


def test_tensorboard_writer_logs_every_evaluation(tmp_path):
    pytest.importorskip("tensorboardX")
    assert run_experiment(tiny(), tmp_path, progress=False, tensorboard=True).ok
    events = list(tmp_path.glob("events.out.tfevents.*"))  # beside metrics.jsonl
    assert events and events[0].stat().st_size > 0


def test_run_state_and_hooks_round_trip_their_state():
    state = RunState(tiny(), step=7, loss_sum=1.5, loss_count=2, elapsed=3.0, train_time=1.0)
    saved = {**state.state_dict(), "step": 7}
    other = RunState(tiny())
    other.load_state_dict(saved)
    assert (other.step, other.loss_sum, other.loss_count, other.train_time) == (7, 1.5, 2, 1.0)
    assert other.elapsed == pytest.approx(saved["wall_time"])
    assert state.checkpointing is False and RunState(tiny(), step=10).evaluating
    guard = DivergenceGuard(run=None)
    guard.initial_loss = 2.5
    fresh = DivergenceGuard(run=None)
    fresh.load_state_dict(guard.state_dict())
    assert fresh.initial_loss == 2.5
    for hook in (Evaluator, Checkpointer, DivergenceGuard):
        assert issubclass(hook, Hook)


def test_a_convgrad_scheduler_plugs_in_and_resumes_bit_identically(tmp_path):
    def step_lr(optimizer):
        return cg.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run_experiment(tiny(), whole, progress=False, scheduler=step_lr).ok
    assert run_experiment(tiny(), parts, progress=False, scheduler=step_lr,
                          stop_after=10).status == "stopped"
    manifest = load_checkpoint(parts, warn=lambda line: None)[0]
    assert manifest["scheduler"]["last_epoch"] == 10
    assert manifest["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-3 / 4)
    assert run_experiment(tiny(), parts, resume=True, progress=False, scheduler=step_lr).ok
    assert_same_weights(whole, parts)
