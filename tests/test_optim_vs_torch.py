"""convgrad.optim against torch.optim: the same parameters and gradients give the same weights.

Each step's gradient is computed from the library's *own* current weights (the gradient of a
quadratic bowl plus fixed noise), so any deviation in an update feeds into the next gradient
and compounds, as it would in training; float64 must then agree to 1e-12 after every step.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

import convgrad as cg
from torch_oracle import to_numpy

SHAPES = [(3, 4), (5,), (2, 3, 3)]
STEPS = 10

SGD_CONFIGS = {
    "plain": {"lr": 0.1},
    "momentum": {"lr": 0.1, "momentum": 0.9},
    "momentum-dampening": {"lr": 0.1, "momentum": 0.9, "dampening": 0.5},
    "nesterov": {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    "weight-decay": {"lr": 0.1, "weight_decay": 0.01},
    "everything": {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1, "nesterov": True},
}
ADAM_CONFIGS = {
    "default": {},
    "lr": {"lr": 0.05},
    "weight-decay": {"lr": 0.01, "weight_decay": 0.1},
    "betas-eps": {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6},
    "large-eps": {"lr": 0.1, "betas": (0.5, 0.9), "eps": 0.1, "weight_decay": 0.01},
}
CASES = [pytest.param("SGD", c, id=f"SGD-{n}") for n, c in SGD_CONFIGS.items()] + [
    pytest.param("Adam", c, id=f"Adam-{n}") for n, c in ADAM_CONFIGS.items()
]
FLOATS = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]


class Problem:
    """Initial weights, a target and per-step noise shared by both libraries."""

    def __init__(self, dtype: Any, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.initial = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        self.target = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        self.noise = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]

    def gradient(self, step: int, index: int, weight: np.ndarray) -> np.ndarray | None:
        """d/dw of ||w - target||^2 plus noise; the last parameter skips every third step."""
        if index == len(SHAPES) - 1 and step % 3 == 1:
            return None  # no gradient: both optimisers must leave it (and its state) alone
        return (2 * (weight - self.target[index]) + self.noise[step][index]).astype(self.dtype)


def torch_run(problem: Problem, name: str, config: dict, steps: range,
              state: tuple | None = None) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    params, optimizer = state or _torch_setup(problem, name, config)
    for step in steps:
        for index, p in enumerate(params):
            g = problem.gradient(step, index, p.detach().numpy())
            p.grad = None if g is None else torch.tensor(g)
        optimizer.step()
    return params, optimizer


def _torch_setup(problem: Problem, name: str, config: dict):
    params = [torch.tensor(w.copy(), requires_grad=True) for w in problem.initial]
    return params, getattr(torch.optim, name)(params, **config)


def cg_run(problem: Problem, params: list[cg.Tensor], optimizer: Any, steps: range) -> None:
    for step in steps:
        for index, p in enumerate(params):
            g = problem.gradient(step, index, p.data)
            p.grad = None if g is None else cg.tensor(g)
        optimizer.step()


def _cg_setup(problem: Problem, name: str, config: dict, weights: list[np.ndarray] | None = None):
    params = [cg.nn.Parameter(w.copy()) for w in (weights or problem.initial)]
    return params, getattr(cg.optim, name)(params, **config)


def _tolerance(dtype: Any) -> dict[str, float]:
    return {"atol": 1e-12, "rtol": 1e-12} if dtype == np.float64 else {"atol": 1e-5, "rtol": 1e-5}


def _assert_weights_equal(cg_params, torch_params, dtype, what: str) -> None:
    for index, (mine, theirs) in enumerate(zip(cg_params, torch_params, strict=True)):
        assert mine.dtype == dtype
        np.testing.assert_allclose(mine.data, to_numpy(theirs), **_tolerance(dtype),
                                   err_msg=f"parameter {index} {what}")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name, config", CASES)
def test_optimizer_steps_give_torch_optim_weights_after_every_step(name, config, dtype) -> None:
    problem = Problem(dtype)
    torch_params, torch_optimizer = _torch_setup(problem, name, config)
    cg_params, cg_optimizer = _cg_setup(problem, name, config)
    for step in range(STEPS):
        torch_run(problem, name, config, range(step, step + 1), (torch_params, torch_optimizer))
        cg_run(problem, cg_params, cg_optimizer, range(step, step + 1))
        _assert_weights_equal(cg_params, torch_params, dtype, f"after step {step + 1}")
    assert not np.allclose(cg_params[0].data, problem.initial[0])  # the weights did move


@pytest.mark.parametrize("name, config", CASES)
def test_optimizer_state_matches_torch_state(name, config) -> None:
    problem = Problem(np.float64)
    _, torch_optimizer = torch_run(problem, name, config, range(STEPS))
    cg_params, cg_optimizer = _cg_setup(problem, name, config)
    cg_run(problem, cg_params, cg_optimizer, range(STEPS))
    cg_state = cg_optimizer.state_dict()["state"]
    torch_state = torch_optimizer.state_dict()["state"]
    for index in range(len(SHAPES)):
        theirs, mine = torch_state.get(index, {}), cg_state.get(index, {})
        assert {k for k, v in theirs.items() if v is not None} == set(mine), f"param {index}"
        for key, value in theirs.items():
            if key == "step":
                assert mine["step"] == int(value.item()), f"param {index} step count"
            elif value is not None:
                np.testing.assert_allclose(mine[key], value.numpy(), atol=1e-12, rtol=1e-12,
                                           err_msg=f"param {index} {key}")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name, config", CASES)
def test_state_dict_round_trip_continues_exactly_like_an_uninterrupted_torch_run(
    name, config, dtype
) -> None:
    problem = Problem(dtype, seed=1)
    torch_params, _ = torch_run(problem, name, config, range(STEPS))
    first_params, first_optimizer = _cg_setup(problem, name, config)
    cg_run(problem, first_params, first_optimizer, range(4))
    saved = copy.deepcopy(first_optimizer.state_dict())
    # a fresh optimizer over fresh parameters that hold the checkpointed weights
    resumed_params, resumed_optimizer = _cg_setup(
        problem, name, {}, weights=[p.data for p in first_params]
    )
    resumed_optimizer.load_state_dict(saved)
    assert resumed_optimizer.param_groups[0].keys() == first_optimizer.param_groups[0].keys()
    for key, value in first_optimizer.param_groups[0].items():
        if key != "params":
            assert resumed_optimizer.param_groups[0][key] == value, key
    cg_run(problem, resumed_params, resumed_optimizer, range(4, STEPS))
    _assert_weights_equal(resumed_params, torch_params, dtype, "after resuming")
    # and the uninterrupted convgrad run agrees bit for bit with the resumed one
    cg_run(problem, first_params, first_optimizer, range(4, STEPS))
    for mine, resumed in zip(first_params, resumed_params, strict=True):
        np.testing.assert_array_equal(mine.data, resumed.data)


def test_loaded_optimizer_state_is_a_copy_not_shared_with_the_state_dict() -> None:
    problem = Problem(np.float64)
    params, optimizer = _cg_setup(problem, "Adam", {"lr": 0.1})
    cg_run(problem, params, optimizer, range(2))
    saved = optimizer.state_dict()
    other_params, other = _cg_setup(problem, "Adam", {"lr": 0.1},
                                    weights=[p.data for p in params])
    other.load_state_dict(saved)
    saved["state"][0]["exp_avg"][...] = 1e6  # scribbling on the checkpoint changes nothing
    cg_run(problem, params, optimizer, range(2, 4))
    cg_run(problem, other_params, other, range(2, 4))
    np.testing.assert_array_equal(params[0].data, other_params[0].data)


def test_sgd_on_a_model_trained_by_backward_matches_torch() -> None:
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                                      torch.nn.Linear(8, 3)).double()
    cg_model = cg.nn.Sequential(cg.nn.Linear(4, 8), cg.nn.Tanh(), cg.nn.Linear(8, 3)).double()
    cg_model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})
    torch_optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.9,
                                      nesterov=True, weight_decay=1e-3)
    cg_optimizer = cg.optim.SGD(cg_model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        x, y = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
        torch_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(torch_model(torch.tensor(x)), torch.tensor(y)).backward()
        torch_optimizer.step()
        cg_optimizer.zero_grad()
        cg.nn.functional.cross_entropy(cg_model(cg.tensor(x)), y).backward()
        cg_optimizer.step()
    for name, value in torch_model.state_dict().items():
        np.testing.assert_allclose(cg_model.state_dict()[name], value.numpy(), atol=1e-12,
                                   rtol=1e-12, err_msg=name)
