"""Optimizer errors: raised where torch.optim raises, with messages that say what was wrong."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch
from torch.optim.optimizer import required as torch_required

import convgrad as cg
from convgrad.errors import ArgumentError, ArgumentTypeError, ShapeError


def _params(n: int = 2) -> list[cg.nn.Parameter]:
    return [cg.nn.Parameter(np.ones((i + 2,))) for i in range(n)]


def _torch_params(n: int = 2) -> list[torch.Tensor]:
    return [torch.ones(i + 2, requires_grad=True) for i in range(n)]


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("SGD", {"lr": -0.1}, "SGD: invalid learning rate: -0.1"),
        ("SGD", {"momentum": -1}, "SGD: invalid momentum value: -1"),
        ("SGD", {"weight_decay": -1}, "SGD: invalid weight_decay value: -1"),
        ("SGD", {"nesterov": True}, "SGD: Nesterov momentum requires a momentum and zero"),
        ("SGD", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "zero dampening"),
        ("Adam", {"lr": -1e-3}, "Adam: invalid learning rate: -0.001"),
        ("Adam", {"eps": -1.0}, "Adam: invalid epsilon value: -1.0"),
        ("Adam", {"betas": (1.0, 0.9)}, "Adam: invalid beta parameter at index 0: 1.0"),
        ("Adam", {"betas": (0.9, -0.1)}, "Adam: invalid beta parameter at index 1: -0.1"),
        ("Adam", {"weight_decay": -0.1}, "Adam: invalid weight_decay value: -0.1"),
        ("AdamW", {"weight_decay": -0.1}, "AdamW: invalid weight_decay value: -0.1"),
        ("AdamW", {"betas": (0.9, 1.5)}, "AdamW: invalid beta parameter at index 1: 1.5"),
        ("RMSprop", {"lr": -1}, "RMSprop: invalid learning rate: -1"),
        ("RMSprop", {"eps": -1}, "RMSprop: invalid epsilon value: -1"),
        ("RMSprop", {"momentum": -1}, "RMSprop: invalid momentum value: -1"),
        ("RMSprop", {"weight_decay": -1}, "RMSprop: invalid weight_decay value: -1"),
        ("RMSprop", {"alpha": -0.5}, "RMSprop: invalid alpha value: -0.5"),
    ],
)
def test_invalid_hyperparameters_raise_where_torch_raises(name, kwargs, message) -> None:
    with pytest.raises(ValueError):
        getattr(torch.optim, name)(_torch_params(), **kwargs)
    with pytest.raises(ArgumentError, match=re.escape(message)):
        getattr(cg.optim, name)(_params(), **kwargs)


def _both_raise(build: Any, error: type, message: str) -> None:
    """build(library, params) raises in torch (same builtin type) and in convgrad (message)."""
    builtin = TypeError if issubclass(error, TypeError) else ValueError
    with pytest.raises(builtin):
        build(torch, _torch_params(3))
    with pytest.raises(error, match=message):
        build(cg, _params(3))


def test_a_parameter_in_two_groups() -> None:
    _both_raise(lambda lib, p: lib.optim.SGD([{"params": p[:2]}, {"params": p[1:]}], lr=0.1),
                ArgumentError, "SGD: some parameters appear in more than one parameter group")


def test_add_param_group_with_a_parameter_already_there() -> None:
    def build(lib: Any, p: list) -> None:
        optimizer = lib.optim.Adam(p[:2])
        optimizer.add_param_group({"params": [p[0]], "lr": 0.5})

    _both_raise(build, ArgumentError, "Adam: some parameters appear in more than one")


def test_an_empty_parameter_list() -> None:
    _both_raise(lambda lib, p: lib.optim.Adam([]), ArgumentError,
                "Adam: optimizer got an empty parameter list")


def test_a_set_of_parameters() -> None:
    _both_raise(lambda lib, p: lib.optim.Adam([{"params": set(p)}]), ArgumentTypeError,
                "ordered collections.*Please use a list instead")


def test_a_bare_tensor_as_params() -> None:
    _both_raise(lambda lib, p: lib.optim.RMSprop(p[0]), ArgumentTypeError,
                "params argument given to the optimizer should be an iterable of Tensors or "
                "dicts, but got")


def test_a_non_tensor_parameter() -> None:
    _both_raise(lambda lib, p: lib.optim.SGD([p[0], 3.0], lr=0.1), ArgumentTypeError,
                "optimizer can only optimize Tensors, but one of the params is float")


def test_a_group_that_is_not_a_dict() -> None:
    def build(lib: Any, p: list) -> None:
        lib.optim.SGD(p[:1], lr=0.1).add_param_group(p[1:])

    _both_raise(build, ArgumentTypeError, "param_group must be a dict, but got list")


def test_a_non_leaf_tensor() -> None:
    def build(lib: Any, p: list) -> None:
        lib.optim.SGD([p[0] * 2], lr=0.1)

    _both_raise(build, ArgumentError, "can't optimize a non-leaf Tensor")


def test_a_group_missing_a_required_hyperparameter() -> None:
    class Plain(cg.optim.Optimizer):
        def __init__(self, params: Any, lr: Any = cg.optim.required) -> None:
            super().__init__(params, {"lr": lr})

    class TorchPlain(torch.optim.Optimizer):
        def __init__(self, params: Any, lr: Any = torch_required) -> None:
            super().__init__(params, {"lr": lr})

    with pytest.raises(ValueError, match="required optimization parameter lr"):
        TorchPlain([{"params": _torch_params(1)}])
    with pytest.raises(ArgumentError, match="Plain: parameter group didn't specify a value of "
                                            "required optimization parameter lr"):
        Plain([{"params": _params(1)}])
    assert Plain([{"params": _params(1), "lr": 0.3}]).param_groups[0]["lr"] == 0.3
    with pytest.raises(ArgumentError, match="needs a 'params' entry"):
        Plain([{"lr": 0.3}])


def test_duplicate_parameters_in_a_group_warn_and_are_optimised_once() -> None:
    p = _params(1)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        optimizer = cg.optim.SGD([p[0], p[0]], lr=0.5)
    assert len(optimizer.param_groups[0]["params"]) == 1
    p[0].grad = cg.tensor(np.ones(2))
    optimizer.step()
    np.testing.assert_array_equal(p[0].data, [0.5, 0.5])


def _stepped(n_groups: int = 2, sizes: tuple = (2, 3)) -> cg.optim.Adam:
    params = [cg.nn.Parameter(np.ones(s)) for s in sizes]
    groups = ([{"params": params}] if n_groups == 1
              else [{"params": [p]} for p in params])
    optimizer = cg.optim.Adam(groups)
    for p in params:
        p.grad = cg.tensor(np.ones(p.shape))
    optimizer.step()
    return optimizer


def test_loading_a_state_with_another_number_of_groups() -> None:
    saved = _stepped(2).state_dict()
    with pytest.raises(ArgumentError, match=r"Adam.load_state_dict: loaded state dict has a "
                                            r"different number of parameter groups: 2 saved, 1"):
        _stepped(1).load_state_dict(saved)


def test_loading_a_state_whose_group_sizes_differ() -> None:
    optimizer = _stepped(2)
    optimizer.add_param_group({"params": [cg.nn.Parameter(np.ones(1))]})
    saved = optimizer.state_dict()
    other = _stepped(2)
    other.add_param_group({"params": [cg.nn.Parameter(np.ones(1)), cg.nn.Parameter(np.ones(1))]})
    with pytest.raises(ArgumentError, match=r"doesn't match the size of optimizer's group: "
                                            r"group 2 has 1 parameters saved, 2 in the optimizer"):
        other.load_state_dict(saved)


def test_loading_a_state_whose_arrays_have_other_shapes() -> None:
    saved = _stepped(2, (2, 3)).state_dict()
    with pytest.raises(ShapeError, match=r"parameter 1 'exp_avg' has shape \(3,\), the parameter "
                                         r"has shape \(4,\)"):
        _stepped(2, (2, 4)).load_state_dict(saved)


def test_loading_something_that_is_not_a_state_dict() -> None:
    with pytest.raises(ArgumentError, match=r"expected a state dict with 'state' and "
                                            r"'param_groups', received keys \['defaults'"):
        _stepped().load_state_dict({"defaults": {}, "state": []})
    saved = _stepped().state_dict()
    saved["state"][7] = saved["state"][0]
    with pytest.raises(ArgumentError, match="state for parameter 7, which no saved group lists"):
        _stepped().load_state_dict(saved)
