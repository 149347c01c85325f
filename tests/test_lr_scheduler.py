"""convgrad.optim.lr_scheduler against torch.optim.lr_scheduler: the same learning rates (and
momenta) at every one of 1,000 steps, for two parameter groups, chained and sequential schedulers,
and a run resumed mid-way from a JSON round trip of the state dicts."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import convgrad as cg
from convgrad.errors import ArgumentError, ArgumentTypeError

STEPS = 1000

# name -> (optimizer name, optimizer options, build(lr_scheduler module, optimizer) -> scheduler)
Build = Callable[[Any, Any], Any]
CASES: dict[str, tuple[str, dict, Build]] = {
    "StepLR": ("SGD", {}, lambda m, o: m.StepLR(o, step_size=30, gamma=0.5)),
    "MultiStepLR": ("SGD", {}, lambda m, o: m.MultiStepLR(o, [100, 300, 300, 700], gamma=0.3)),
    "ExponentialLR": ("SGD", {}, lambda m, o: m.ExponentialLR(o, gamma=0.995)),
    "CosineAnnealingLR": ("SGD", {}, lambda m, o: m.CosineAnnealingLR(o, T_max=300,
                                                                      eta_min=1e-4)),
    "CosineAnnealingLR-zero-min": ("Adam", {}, lambda m, o: m.CosineAnnealingLR(o, T_max=1000)),
    "LinearLR-warmup": ("SGD", {}, lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=50)),
    "LinearLR-decay": ("Adam", {}, lambda m, o: m.LinearLR(o, 1.0, 0.05, total_iters=700)),
    "OneCycleLR-SGD-momentum": ("SGD", {"momentum": 0.9},
                                lambda m, o: m.OneCycleLR(o, max_lr=0.5, total_steps=STEPS)),
    "OneCycleLR-Adam-beta1-per-group": (
        "Adam", {}, lambda m, o: m.OneCycleLR(o, max_lr=[0.01, 0.003], total_steps=STEPS,
                                              base_momentum=[0.8, 0.85],
                                              max_momentum=0.95)),
    "OneCycleLR-linear-three-phase": (
        "AdamW", {}, lambda m, o: m.OneCycleLR(o, max_lr=0.02, epochs=10, steps_per_epoch=100,
                                               pct_start=0.25, anneal_strategy="linear",
                                               three_phase=True, div_factor=10.0,
                                               final_div_factor=100.0)),
    "OneCycleLR-RMSprop-no-momentum-cycle": (
        "RMSprop", {}, lambda m, o: m.OneCycleLR(o, max_lr=0.1, total_steps=STEPS + 7,
                                                 cycle_momentum=False, pct_start=0.5)),
    "SequentialLR-warmup-cosine": (
        "SGD", {}, lambda m, o: m.SequentialLR(
            o, [m.LinearLR(o, start_factor=0.01, total_iters=100),
                m.CosineAnnealingLR(o, T_max=900, eta_min=1e-5)], milestones=[100])),
    "SequentialLR-three": (
        "Adam", {}, lambda m, o: m.SequentialLR(
            o, [m.ExponentialLR(o, gamma=0.99), m.StepLR(o, step_size=50, gamma=0.7),
                m.LinearLR(o, start_factor=0.5, total_iters=100)], milestones=[200, 600])),
}


class Chained:
    """Two schedulers stepping one optimizer, each scaling what the other left."""

    def __init__(self, m: Any, o: Any) -> None:
        self.schedulers = [m.StepLR(o, step_size=70, gamma=0.5),
                           m.ExponentialLR(o, gamma=0.999),
                           m.CosineAnnealingLR(o, T_max=400)]

    def step(self) -> None:
        for scheduler in self.schedulers:
            scheduler.step()

    def get_last_lr(self) -> list[float]:
        return self.schedulers[-1].get_last_lr()

    def state_dict(self) -> list[dict]:
        return [s.state_dict() for s in self.schedulers]

    def load_state_dict(self, states: list[dict]) -> None:
        for scheduler, state in zip(self.schedulers, states, strict=True):
            scheduler.load_state_dict(state)


CASES["chained-Step-Exponential-Cosine"] = ("SGD", {}, Chained)


def _optimizer(library: Any, name: str, options: dict) -> Any:
    """Two groups with their own learning rates (0.1 and 0.02)."""
    if library is torch:
        params = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    else:
        params = [cg.nn.Parameter(np.zeros(2)), cg.nn.Parameter(np.zeros(3))]
    groups = [{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.02}]
    return getattr(library.optim, name)(groups, **options)


def _snapshot(optimizer: Any, scheduler: Any) -> list[Any]:
    """The learning rates, momenta and betas of every group, and get_last_lr()."""
    values: list[Any] = [float(v) for v in scheduler.get_last_lr()]
    for group in optimizer.param_groups:
        values.append(group["lr"])
        for key in ("momentum", "betas"):
            if key in group:
                values.append(tuple(group[key]) if key == "betas" else group[key])
    return values


def _run(library: Any, case: str, steps: int, resume_at: int | None = None) -> list[list[Any]]:
    name, options, build = CASES[case]
    module = library.optim.lr_scheduler
    optimizer = _optimizer(library, name, options)
    scheduler = build(module, optimizer)
    trace = [_snapshot(optimizer, scheduler)]
    for step in range(1, steps + 1):
        optimizer.step()
        scheduler.step()
        trace.append(_snapshot(optimizer, scheduler))
        if step == resume_at:  # a new process: rebuild both, load the JSON'd state dicts
            saved = json.loads(json.dumps({"optimizer": _json_optimizer(optimizer),
                                           "scheduler": scheduler.state_dict()}))
            optimizer = _optimizer(library, name, options)
            scheduler = build(module, optimizer)
            scheduler.load_state_dict(saved["scheduler"])
            optimizer.load_state_dict(saved["optimizer"])
            assert _snapshot(optimizer, scheduler) == trace[-1]
    return trace


def _json_optimizer(optimizer: Any) -> dict:
    state = optimizer.state_dict()
    return {"state": {}, "param_groups": state["param_groups"]}


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_learning_rates_as_torch_at_every_step(case) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notes on constructing schedulers
        theirs = _run(torch, case, STEPS)
    mine = _run(cg, case, STEPS)
    assert len(mine) == STEPS + 1
    for step, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        assert a == b, f"step {step}: {a} != {b}"
    assert len({tuple(values[:2]) for values in mine}) > 2  # the schedule does move


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_resumed_from_json_state_dicts_continues_the_same_sequence(case) -> None:
    uninterrupted = _run(cg, case, STEPS)
    resumed = _run(cg, case, STEPS, resume_at=437)
    assert resumed == uninterrupted


def test_a_state_dict_is_json_and_holds_no_optimizer() -> None:
    for case in CASES:
        name, options, build = CASES[case]
        scheduler = build(cg.optim.lr_scheduler, _optimizer(cg, name, options))
        state = scheduler.state_dict()
        assert json.loads(json.dumps(state)) == state, case
        assert "optimizer" not in json.dumps(state), case


def test_groups_gain_initial_lr_and_onecycle_keys_as_in_torch() -> None:
    mine = _optimizer(cg, "Adam", {})
    theirs = _optimizer(torch, "Adam", {})
    cg.optim.lr_scheduler.OneCycleLR(mine, max_lr=0.1, total_steps=10)
    torch.optim.lr_scheduler.OneCycleLR(theirs, max_lr=0.1, total_steps=10)
    for a, b in zip(mine.param_groups, theirs.param_groups, strict=True):
        for key in ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum", "lr",
                    "betas"):
            assert a[key] == b[key], key


def _metrics(seed: int, n: int) -> list[float]:
    """A loss that falls, then plateaus with noise, then jumps."""
    rng = np.random.default_rng(seed)
    curve = np.concatenate([np.linspace(2.0, 0.5, n // 3), np.full(n // 3, 0.5),
                            np.full(n - 2 * (n // 3), 0.7)])
    return list(curve + 1e-3 * rng.standard_normal(n))


PLATEAU = [
    {},
    {"mode": "max", "factor": 0.5, "patience": 3},
    {"threshold_mode": "abs", "threshold": 0.01, "patience": 5, "cooldown": 4},
    {"mode": "max", "threshold_mode": "abs", "threshold": 1e-3, "patience": 0},
    {"factor": 0.3, "patience": 2, "min_lr": [1e-3, 1e-4], "eps": 1e-6},
    {"factor": 0.2, "patience": 1, "min_lr": 5e-3, "cooldown": 2},
]


@pytest.mark.parametrize("options", PLATEAU, ids=lambda o: ",".join(f"{k}={v}" for k, v in
                                                                     o.items()) or "default")
def test_reduce_lr_on_plateau_reduces_like_torch(options) -> None:
    metrics = _metrics(0, 600)
    if options.get("mode") == "max":
        metrics = [-m for m in metrics]
    traces = []
    for library in (torch, cg):
        optimizer = _optimizer(library, "SGD", {})
        scheduler = library.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **options)
        trace = []
        for step, metric in enumerate(metrics):
            scheduler.step(metric)
            trace.append([*scheduler.get_last_lr(), scheduler.num_bad_epochs,
                          scheduler.cooldown_counter, scheduler.best, scheduler.last_epoch])
            if library is cg and step == 250:  # resume from JSON
                saved = json.loads(json.dumps(scheduler.state_dict()))
                groups = optimizer.state_dict()
                optimizer = _optimizer(cg, "SGD", {})
                optimizer.load_state_dict(groups)
                scheduler = cg.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **options)
                scheduler.load_state_dict(saved)
        traces.append(trace)
    assert traces[0] == traces[1]
    assert traces[1][-1][0] < 0.1  # it did reduce


def test_reduce_lr_on_plateau_accepts_a_one_element_tensor() -> None:
    optimizer = _optimizer(cg, "SGD", {})
    scheduler = cg.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0)
    scheduler.step(cg.tensor(1.0))
    scheduler.step(cg.tensor(np.array([2.0])))
    assert scheduler.get_last_lr() == pytest.approx([0.01, 0.002])


@pytest.mark.parametrize("case", ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
                                  "LinearLR-warmup"])
def test_step_with_an_epoch_uses_torchs_closed_form(case) -> None:
    traces = []
    for library in (torch, cg):
        name, options, build = CASES[case]
        optimizer = _optimizer(library, name, options)
        scheduler = build(library.optim.lr_scheduler, optimizer)
        trace = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for epoch in (5, 30, 31, 100, 299, 300, 301, 650, 20):
                optimizer.step()
                scheduler.step(epoch)
                trace.append(scheduler.get_last_lr())
        traces.append(trace)
    assert traces[0] == traces[1]


def test_warnings_like_torchs() -> None:
    optimizer = _optimizer(cg, "SGD", {})
    scheduler = cg.optim.lr_scheduler.StepLR(optimizer, 10)
    with pytest.warns(UserWarning, match=r"lr_scheduler.step\(\)` before `optimizer.step\(\)"):
        scheduler.step()
    with pytest.warns(UserWarning, match=r"please use `get_last_lr\(\)`"):
        scheduler.get_lr()
    optimizer = _optimizer(cg, "SGD", {})
    scheduler = cg.optim.lr_scheduler.StepLR(optimizer, 10)
    optimizer.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler.step()  # the right order: no warning


def _sgd() -> cg.optim.SGD:
    return _optimizer(cg, "SGD", {})


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: cg.optim.lr_scheduler.StepLR("not an optimizer", 3), ArgumentTypeError,
         "StepLR: str is not an Optimizer"),
        (lambda: cg.optim.lr_scheduler.StepLR(_sgd(), 3, last_epoch=5), ArgumentError,
         r"param 'initial_lr' is not specified in param_groups\[0\] when resuming"),
        (lambda: cg.optim.lr_scheduler.LinearLR(_sgd(), start_factor=0), ArgumentError,
         "Starting multiplicative factor expected to be greater than 0"),
        (lambda: cg.optim.lr_scheduler.LinearLR(_sgd(), end_factor=1.5), ArgumentError,
         "Ending multiplicative factor expected to be between 0 and 1"),
        (lambda: cg.optim.lr_scheduler.OneCycleLR(_sgd(), 0.1), ArgumentError,
         r"You must define either total_steps OR \(epochs AND steps_per_epoch\)"),
        (lambda: cg.optim.lr_scheduler.OneCycleLR(_sgd(), 0.1, total_steps=0), ArgumentError,
         "Expected positive integer total_steps, but got 0"),
        (lambda: cg.optim.lr_scheduler.OneCycleLR(_sgd(), 0.1, epochs=2, steps_per_epoch=-1),
         ArgumentError, "Expected positive integer steps_per_epoch, but got -1"),
        (lambda: cg.optim.lr_scheduler.OneCycleLR(_sgd(), 0.1, 10, pct_start=1), ArgumentError,
         "Expected float between 0 and 1 pct_start, but got 1"),
        (lambda: cg.optim.lr_scheduler.OneCycleLR(_sgd(), 0.1, 10, anneal_strategy="exp"),
         ArgumentError, "anneal_strategy must be one of 'cos' or 'linear', instead got exp"),
        (lambda: cg.optim.lr_scheduler.OneCycleLR(_sgd(), [0.1, 0.2, 0.3], 10), ArgumentError,
         "max_lr must have the same length as optimizer.param_groups. max_lr has 3 values"),
        (lambda: cg.optim.lr_scheduler.SequentialLR(_sgd(), [], []), ArgumentError,
         "SequentialLR expects at least one scheduler"),
        (lambda: _sequential_with_milestones([10, 20]), ArgumentError,
         "number of schedulers 2 and the number of milestones to be equal to 2"),
        (lambda: _sequential_with_plateau(), ArgumentError,
         "does not support `ReduceLROnPlateau`"),
        (lambda: _sequential_with_other_optimizer(), ArgumentError,
         "expects all schedulers to belong to the same optimizer"),
        (lambda: cg.optim.lr_scheduler.ReduceLROnPlateau(_sgd(), factor=1.0), ArgumentError,
         "Factor should be < 1.0"),
        (lambda: cg.optim.lr_scheduler.ReduceLROnPlateau(_sgd(), mode="median"), ArgumentError,
         "mode median is unknown"),
        (lambda: cg.optim.lr_scheduler.ReduceLROnPlateau(_sgd(), threshold_mode="x"),
         ArgumentError, "threshold mode x is unknown"),
        (lambda: cg.optim.lr_scheduler.ReduceLROnPlateau(_sgd(), min_lr=[0.0]), ArgumentError,
         "expected 2 min_lrs, got 1"),
    ],
)
def test_errors_where_torch_raises(build, error, message) -> None:
    with pytest.raises(error, match=message):
        build()


def _sequential_with_milestones(milestones: list[int]) -> Any:
    o = _sgd()
    m = cg.optim.lr_scheduler
    return m.SequentialLR(o, [m.StepLR(o, 3), m.StepLR(o, 4)], milestones)


def _sequential_with_plateau() -> Any:
    o = _sgd()
    m = cg.optim.lr_scheduler
    return m.SequentialLR(o, [m.StepLR(o, 3), m.ReduceLROnPlateau(o)], [5])


def _sequential_with_other_optimizer() -> Any:
    o = _sgd()
    m = cg.optim.lr_scheduler
    return m.SequentialLR(o, [m.StepLR(o, 3), m.StepLR(_sgd(), 3)], [5])


def test_one_cycle_raises_when_stepped_past_total_steps_and_needs_momentum() -> None:
    optimizer = _sgd()
    scheduler = cg.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=3)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    with pytest.raises(ArgumentError, match="Tried to step 4 times. The specified number of "
                                            "total steps is 3"):
        scheduler.step()

    class Plain(cg.optim.Optimizer):
        def __init__(self, params: Any) -> None:
            super().__init__(params, {"lr": 0.1})

    with pytest.raises(ArgumentError, match="optimizer must support momentum or beta1"):
        cg.optim.lr_scheduler.OneCycleLR(Plain([cg.nn.Parameter(np.ones(1))]), 0.1, 5)


def test_the_scheduled_learning_rate_drives_the_optimizer() -> None:
    """SGD under StepLR moves the weight by exactly the scheduled learning rates."""
    p = cg.nn.Parameter(np.zeros(1))
    optimizer = cg.optim.SGD([p], lr=1.0)
    scheduler = cg.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    used = []
    for _ in range(6):
        used.append(optimizer.param_groups[0]["lr"])
        p.grad = cg.tensor(np.ones(1))
        optimizer.step()
        scheduler.step()
    assert used == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert math.isclose(-p.data[0], sum(used))


RESUMING: dict[str, Build] = {
    "StepLR": lambda m, o: m.StepLR(o, 30, 0.5, last_epoch=99),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, [150, 200], last_epoch=99),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, 0.99, last_epoch=99),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, 300, 1e-4, last_epoch=99),
    "LinearLR": lambda m, o: m.LinearLR(o, 1.0, 0.05, 700, last_epoch=99),
}


@pytest.mark.parametrize("case", list(RESUMING))
def test_constructing_with_last_epoch_resumes_like_torch(case) -> None:
    """last_epoch=k with groups that already hold initial_lr (a resumed run), as in torch."""
    traces = []
    for library in (torch, cg):
        optimizer = _optimizer(library, "SGD", {})
        for group, lr in zip(optimizer.param_groups, (0.05, 0.01), strict=True):
            group["initial_lr"] = lr
        scheduler = RESUMING[case](library.optim.lr_scheduler, optimizer)
        trace = [_snapshot(optimizer, scheduler)]
        for _ in range(300):
            optimizer.step()
            scheduler.step()
            trace.append(_snapshot(optimizer, scheduler))
        traces.append(trace)
    assert traces[0] == traces[1]
