"""Parameter groups against torch.optim: every optimiser, several groups with their own
hyperparameters, changed learning rates and a group added mid-run give torch's weights.

As in test_optim_vs_torch.py, each step's gradient is computed from the library's own current
weights (a quadratic bowl plus fixed noise), so a deviation in one update compounds; float64
must agree to 1e-12 after every one of 20 steps, float32 to 1e-6.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import convgrad as cg
from torch_oracle import to_numpy

SHAPES = [(3, 4), (5,), (2, 3, 3), (4,)]
STEPS = 20
FLOATS = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]


def _tolerance(dtype: Any) -> dict[str, float]:
    return {"atol": 1e-12, "rtol": 1e-12} if dtype == np.float64 else {"atol": 1e-6, "rtol": 1e-6}


# (optimizer name, defaults, groups as (parameter indices, group options)); parameter 3 is added
# with add_param_group after step 5, with its own options.
CASES: dict[str, tuple[str, dict, list[tuple[list[int], dict]], dict]] = {
    "SGD-groups": ("SGD", {"lr": 0.05, "momentum": 0.5},
                   [([0, 1], {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
                    ([2], {"weight_decay": 0.1, "dampening": 0.3})],
                   {"lr": 0.02}),
    "SGD-maximize": ("SGD", {"lr": 0.01, "maximize": True, "weight_decay": 0.05},
                     [([0], {}), ([1, 2], {"momentum": 0.8})], {"momentum": 0.3}),
    "Adam-groups": ("Adam", {"lr": 0.01},
                    [([0], {"lr": 0.05, "betas": (0.8, 0.99)}),
                     ([1, 2], {"weight_decay": 0.1, "eps": 1e-3})],
                    {"lr": 0.02, "betas": (0.5, 0.9)}),
    "Adam-amsgrad-maximize": ("Adam", {"lr": 0.02, "amsgrad": True, "maximize": True},
                              [([0, 2], {}), ([1], {"amsgrad": False, "weight_decay": 0.01})],
                              {"amsgrad": True}),
    "AdamW-default": ("AdamW", {}, [([0, 1, 2], {})], {}),
    "AdamW-groups": ("AdamW", {"lr": 0.03, "weight_decay": 0.1},
                     [([0], {"weight_decay": 0.0}), ([1, 2], {"amsgrad": True, "lr": 0.05})],
                     {"weight_decay": 0.5}),
    "RMSprop-default": ("RMSprop", {}, [([0, 1, 2], {})], {}),
    "RMSprop-groups": ("RMSprop", {"lr": 0.01},
                       [([0], {"centered": True}), ([1], {"momentum": 0.9}),
                        ([2], {"centered": True, "momentum": 0.5, "weight_decay": 0.1})],
                       {"alpha": 0.9, "eps": 1e-4}),
    "RMSprop-small-alpha-maximize": ("RMSprop", {"lr": 0.001, "alpha": 0.3, "centered": True,
                                                 "maximize": True},
                                     [([0, 1, 2], {"momentum": 0.2})], {"centered": False}),
}


class Problem:
    """Initial weights, a target and per-step noise shared by both libraries."""

    def __init__(self, dtype: Any, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.initial = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        self.target = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        self.noise = [[rng.standard_normal(s).astype(dtype) for s in SHAPES]
                      for _ in range(STEPS)]

    def gradient(self, step: int, index: int, weight: np.ndarray) -> np.ndarray | None:
        """d/dw ||w - target||^2 plus noise; parameter 1 skips every fourth step."""
        if index == 1 and step % 4 == 2:
            return None
        return (2 * (weight - self.target[index]) + self.noise[step][index]).astype(self.dtype)


class Twin:
    """One library's parameters and optimizer, built from a case."""

    def __init__(self, library: Any, problem: Problem, case: str) -> None:
        name, defaults, groups, _ = CASES[case]
        self.torch = library is torch
        self.problem = problem
        if self.torch:
            self.params = [torch.tensor(w.copy(), requires_grad=True) for w in problem.initial]
        else:
            self.params = [cg.nn.Parameter(w.copy()) for w in problem.initial]
        specs = [{"params": [self.params[i] for i in indices], **options}
                 for indices, options in groups]
        self.optimizer = getattr(library.optim, name)(specs, **defaults)

    def weight(self, index: int) -> np.ndarray:
        return to_numpy(self.params[index]).copy()

    def run(self, steps: range, case: str) -> None:
        for step in steps:
            if step == 5:  # a new group mid-run, and a new learning rate for group 0
                self.optimizer.add_param_group({"params": [self.params[3]], **CASES[case][3]})
                self.optimizer.param_groups[0]["lr"] *= 0.5
            active = 3 if step < 5 else 4
            for index in range(active):
                g = self.problem.gradient(step, index, self.weight(index))
                if g is None:
                    self.params[index].grad = None
                else:
                    self.params[index].grad = torch.tensor(g) if self.torch else cg.tensor(g)
            self.optimizer.step()


def _assert_same_weights(mine: Twin, theirs: Twin, dtype: Any, what: str) -> None:
    for index in range(len(SHAPES)):
        assert mine.params[index].dtype == dtype
        np.testing.assert_allclose(mine.weight(index), theirs.weight(index),
                                   **_tolerance(dtype), err_msg=f"parameter {index} {what}")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", list(CASES))
def test_parameter_groups_give_torch_weights_after_every_step(case, dtype) -> None:
    problem = Problem(dtype)
    mine, theirs = Twin(cg, problem, case), Twin(torch, problem, case)
    for step in range(STEPS):
        theirs.run(range(step, step + 1), case)
        mine.run(range(step, step + 1), case)
        _assert_same_weights(mine, theirs, dtype, f"after step {step + 1}")
    for index in range(len(SHAPES)):
        assert not np.allclose(mine.weight(index), problem.initial[index]), index


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_has_torchs_layout_keys_and_values(case) -> None:
    problem = Problem(np.float64, seed=1)
    mine, theirs = Twin(cg, problem, case), Twin(torch, problem, case)
    mine.run(range(8), case)
    theirs.run(range(8), case)
    ours, torchs = mine.optimizer.state_dict(), theirs.optimizer.state_dict()
    assert set(ours) == {"state", "param_groups"}
    assert len(ours["param_groups"]) == len(torchs["param_groups"]) == len(CASES[case][2]) + 1
    for group, torch_group in zip(ours["param_groups"], torchs["param_groups"], strict=True):
        assert group["params"] == torch_group["params"]
        assert set(group) <= set(torch_group), set(group) - set(torch_group)
        for key, value in group.items():
            assert value == torch_group[key], key
    assert set(ours["state"]) == set(torchs["state"])
    for index, torch_entry in torchs["state"].items():
        entry = ours["state"][index]
        assert set(entry) == {k for k, v in torch_entry.items() if v is not None}, index
        for key, value in torch_entry.items():
            if key == "step":
                assert entry["step"] == int(value.item())
            elif value is not None:
                np.testing.assert_allclose(entry[key], value.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("as_numpy", [True, False], ids=["numpy-arrays", "torch-tensors"])
@pytest.mark.parametrize("case", ["SGD-groups", "Adam-amsgrad-maximize", "AdamW-groups",
                                  "RMSprop-groups"])
def test_a_torch_state_dict_loads_and_continues_like_torch(case, as_numpy) -> None:
    problem = Problem(np.float64, seed=2)
    theirs = Twin(torch, problem, case)
    theirs.run(range(9), case)
    saved = theirs.optimizer.state_dict()
    if as_numpy:
        saved = {
            "state": {i: {k: (v.numpy().copy() if isinstance(v, torch.Tensor) else v)
                          for k, v in entry.items()} for i, entry in saved["state"].items()},
            "param_groups": saved["param_groups"],
        }
    mine = Twin(cg, problem, case)
    mine.optimizer.add_param_group({"params": [mine.params[3]], **CASES[case][3]})
    for p, q in zip(mine.params, theirs.params, strict=True):
        p.data[...] = q.detach().numpy()
    mine.optimizer.load_state_dict(saved)
    assert mine.optimizer.param_groups[0]["lr"] == theirs.optimizer.param_groups[0]["lr"]
    for step in range(9, STEPS):
        for twin in (mine, theirs):
            for index in range(4):
                g = problem.gradient(step, index, twin.weight(index))
                twin.params[index].grad = (
                    None if g is None else torch.tensor(g) if twin.torch else cg.tensor(g)
                )
            twin.optimizer.step()
    _assert_same_weights(mine, theirs, np.float64, "after loading torch's state")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_round_trip_continues_bit_for_bit(case, dtype) -> None:
    problem = Problem(dtype, seed=3)
    first = Twin(cg, problem, case)
    first.run(range(7), case)
    saved = first.optimizer.state_dict()
    second = Twin(cg, problem, case)
    second.optimizer.add_param_group({"params": [second.params[3]], **CASES[case][3]})
    for p, q in zip(second.params, first.params, strict=True):
        p.data[...] = q.data
    second.optimizer.load_state_dict(saved)
    order = [p for group in second.optimizer.param_groups for p in group["params"]]
    for key, value in saved["state"].items():  # the loaded arrays are copies
        for name, array in value.items():
            if isinstance(array, np.ndarray):
                array[...] = 1e6
                assert not np.any(second.optimizer.state[order[key]][name] == 1e6)
    for step in range(7, STEPS):
        for twin in (first, second):
            for index in range(4):
                g = problem.gradient(step, index, twin.weight(index))
                twin.params[index].grad = None if g is None else cg.tensor(g)
            twin.optimizer.step()
    for p, q in zip(first.params, second.params, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_adamw_decays_the_weights_directly_where_adam_adds_the_decay_to_the_gradient() -> None:
    w = np.array([2.0, -3.0])
    for name, expected in (("AdamW", w * (1 - 0.1 * 0.5)), ("Adam", None)):
        p = cg.nn.Parameter(w.copy())
        optimizer = getattr(cg.optim, name)([p], lr=0.1, weight_decay=0.5)
        p.grad = cg.tensor(np.zeros(2))
        optimizer.step()
        if expected is not None:  # zero gradient: only the decoupled decay moves p
            np.testing.assert_allclose(p.data, expected, rtol=1e-15)
        else:  # the decay went through Adam's normalisation: a step of about lr each
            np.testing.assert_allclose(p.data, w - 0.1 * np.sign(w), rtol=1e-6)


def test_loading_keeps_adamw_decoupled_and_fills_keys_the_saved_groups_lack() -> None:
    p = cg.nn.Parameter(np.ones(3))
    adam = cg.optim.Adam([p], lr=0.1, weight_decay=0.5)
    saved = adam.state_dict()
    del saved["param_groups"][0]["amsgrad"]
    adamw = cg.optim.AdamW([cg.nn.Parameter(np.ones(3))])
    adamw.load_state_dict(saved)
    group = adamw.param_groups[0]
    assert group["decoupled_weight_decay"] is True
    assert group["amsgrad"] is False and group["lr"] == 0.1 and group["weight_decay"] == 0.5


def test_step_with_a_closure_returns_its_loss_and_zero_grad_modes() -> None:
    p = cg.nn.Parameter(np.array([1.0, 2.0]))
    optimizer = cg.optim.SGD([p], lr=0.1)

    def closure() -> cg.Tensor:
        optimizer.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert float(loss.item()) == 5.0
    np.testing.assert_allclose(p.data, [0.8, 1.6])
    optimizer.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.data, [0.0, 0.0])
    optimizer.zero_grad()
    assert p.grad is None


def test_a_group_lr_change_takes_effect_at_the_next_step() -> None:
    p = cg.nn.Parameter(np.array([1.0]))
    optimizer = cg.optim.SGD([p], lr=0.1)
    optimizer.param_groups[0]["lr"] = 0.5
    p.grad = cg.tensor(np.array([1.0]))
    optimizer.step()
    np.testing.assert_allclose(p.data, [0.5])


def test_repr_lists_each_group_like_torch() -> None:
    p = cg.nn.Parameter(np.ones(2))
    q = torch.ones(2, requires_grad=True)
    mine = cg.optim.SGD([p], lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD([q], lr=0.1, momentum=0.9)
    lines = repr(mine).splitlines()
    assert lines[:2] == ["SGD (", "Parameter Group 0"] and lines[-1] == ")"
    assert set(lines[2:-1]) <= set(repr(theirs).splitlines())


@pytest.mark.parametrize("name, options", [
    ("AdamW", {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}),
    ("Adam", {"lr": 1e-2, "maximize": True, "amsgrad": True}),
    ("RMSprop", {"lr": 1e-3, "centered": True, "momentum": 0.9, "weight_decay": 0.1}),
])
def test_chunked_threaded_updates_give_the_serial_bits_and_torchs_weights(
    name, options, monkeypatch
) -> None:
    from convgrad import parallel

    rng = np.random.default_rng(4)
    w0 = rng.standard_normal((128, 257)).astype(np.float32)
    grads = [rng.standard_normal(w0.shape).astype(np.float32) for _ in range(5)]
    before = cg.get_num_threads()

    def run(chunk: int, n_threads: int) -> list[np.ndarray]:
        monkeypatch.setattr(cg.optim.optimizer, "CHUNK_ELEMENTS", chunk)
        monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
        cg.set_num_threads(n_threads)
        w = cg.nn.Parameter(w0.copy())
        optimizer = getattr(cg.optim, name)([w], **options)
        trajectory = []
        for g in grads:
            w.grad = cg.tensor(g)
            optimizer.step()
            trajectory.append(w.data.copy())
        return trajectory

    try:
        whole = run(1 << 30, 1)
        chunked = run(1000, 3)  # 33 chunks, the last one short, on 3 threads
    finally:
        cg.set_num_threads(before)
    for a, b in zip(whole, chunked, strict=True):
        assert np.array_equal(a, b)
    theirs = torch.tensor(w0.copy(), requires_grad=True)
    optimizer = getattr(torch.optim, name)([theirs], **options)
    for g, ours in zip(grads, chunked, strict=True):
        theirs.grad = torch.tensor(g)
        optimizer.step()
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["SGD-groups", "Adam-amsgrad-maximize", "AdamW-groups",
                                  "RMSprop-groups"])
def test_our_state_dict_loads_into_torch_and_continues_alike(case) -> None:
    problem = Problem(np.float64, seed=5)
    mine = Twin(cg, problem, case)
    mine.run(range(9), case)
    saved = mine.optimizer.state_dict()
    saved["state"] = {i: {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v)
                          for k, v in entry.items()} for i, entry in saved["state"].items()}
    theirs = Twin(torch, problem, case)
    theirs.optimizer.add_param_group({"params": [theirs.params[3]], **CASES[case][3]})
    with torch.no_grad():
        for p, q in zip(theirs.params, mine.params, strict=True):
            p.copy_(torch.tensor(q.data))
    theirs.optimizer.load_state_dict(saved)
    for step in range(9, STEPS):
        for twin in (mine, theirs):
            for index in range(4):
                g = problem.gradient(step, index, twin.weight(index))
                twin.params[index].grad = (
                    None if g is None else torch.tensor(g) if twin.torch else cg.tensor(g)
                )
            twin.optimizer.step()
    _assert_same_weights(mine, theirs, np.float64, "after torch loaded our state")
