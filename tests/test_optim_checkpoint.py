"""The lab's checkpoint split of an optimizer state (arrays to npz, scalars to JSON) and back."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import convgrad as cg
from convgrad.lab.checkpoint import flatten_optimizer_state, unflatten_optimizer_state


def _through_files(state: dict) -> dict:
    """flatten, write the arrays as npz and the scalars as JSON, read both, unflatten."""
    arrays, scalars = flatten_optimizer_state(state)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        loaded = {name: archive[name] for name in archive.files}
    return unflatten_optimizer_state(loaded, json.loads(json.dumps(scalars)))


def _model_and_optimizer(name: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = [cg.nn.Parameter(rng.standard_normal(s).astype(np.float32))
              for s in ((4, 3), (3,), (5, 2))]
    groups = [{"params": params[:2], "lr": 0.01}, {"params": params[2:], "weight_decay": 0.1}]
    options = {"SGD": {"lr": 0.1, "momentum": 0.9}, "Adam": {"amsgrad": True, "betas": (0.8, 0.9)},
               "AdamW": {}, "RMSprop": {"centered": True, "momentum": 0.5}}[name]
    return params, getattr(cg.optim, name)(groups, **options)


def _steps(params: list, optimizer, steps: range) -> None:
    for step in steps:
        rng = np.random.default_rng(step)
        for index, p in enumerate(params):
            skip = index == 1 and step < 2  # parameter 1 has no state for the first steps
            p.grad = None if skip else cg.tensor(rng.standard_normal(p.shape).astype(p.dtype))
        optimizer.step()


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_a_checkpointed_state_resumes_bit_for_bit(name) -> None:
    params, optimizer = _model_and_optimizer(name)
    _steps(params, optimizer, range(3))
    restored = _through_files(optimizer.state_dict())
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    assert restored["state"].keys() == original["state"].keys()
    other_params, other = _model_and_optimizer(name, seed=1)
    for p, q in zip(other_params, params, strict=True):
        p.data[...] = q.data
    other.load_state_dict(restored)
    _steps(params, optimizer, range(3, 8))
    _steps(other_params, other, range(3, 8))
    for p, q in zip(params, other_params, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_the_layout_before_parameter_groups_still_loads() -> None:
    """Checkpoints written before parameter groups: {"defaults": ..., "state": [per param]}."""
    params, optimizer = _model_and_optimizer("Adam")
    _steps(params, optimizer, range(3))
    now = optimizer.state_dict()
    arrays = {f"optimizer/{index}/{key}": value for index, entry in now["state"].items()
              for key, value in entry.items() if isinstance(value, np.ndarray)}
    old_scalars = {
        "defaults": {"lr": 0.01, "betas": [0.8, 0.9], "eps": 1e-8, "weight_decay": 0.0},
        "state": [{"step": now["state"][index]["step"]} for index in range(3)],
    }
    restored = unflatten_optimizer_state(arrays, old_scalars)
    assert restored["param_groups"] == [{"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-8,
                                         "weight_decay": 0.0, "params": [0, 1, 2]}]
    single = cg.optim.Adam([cg.nn.Parameter(p.data.copy()) for p in params])
    single.load_state_dict(restored)
    group = single.param_groups[0]
    assert group["amsgrad"] is False and group["maximize"] is False  # filled from defaults
    assert group["betas"] == (0.8, 0.9) and group["lr"] == 0.01
    for index, p in enumerate(group["params"]):
        np.testing.assert_array_equal(single.state[p]["exp_avg"], now["state"][index]["exp_avg"])
