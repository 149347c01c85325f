"""The optimizer base class: parameter groups, per-parameter state and PyTorch's state_dict layout.

Like ``torch.optim.Optimizer``:

- ``params`` is an iterable of tensors (one group) or of dicts, each a parameter group with
  ``"params"`` and its own hyperparameters (``lr``, ``weight_decay``, ``betas``, ...); keys a
  group leaves out take the optimizer's ``defaults``. ``optimizer.param_groups`` is that list of
  dicts, and a step reads every hyperparameter from it, so ``group["lr"] = ...`` (what the
  learning-rate schedulers do) takes effect at the next step.
- ``optimizer.state`` maps a parameter to its state (``{"step": 3, "exp_avg": ndarray, ...}``).
- ``state_dict()`` is ``{"state": {index: {...}}, "param_groups": [{..., "params": [index]}]}``,
  indices counting the parameters in group order, exactly torch's layout, so a torch optimizer's
  ``state_dict()`` loads here once its tensors are NumPy arrays (or as is: tensors are read with
  ``np.asarray``).

Updates are in place (``out=`` NumPy calls); the elementwise ones run on chunks of the flattened
parameter spread over convgrad's threads (:func:`in_chunks`), which gives the same bits as one
call on the whole array.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

import numpy as np

from convgrad.autograd import Tensor, enable_grad
from convgrad.errors import ArgumentError, ArgumentTypeError, ShapeError
from convgrad.parallel import parallel_for

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


class _RequiredParameter:
    """Singleton marking a hyperparameter that every parameter group must give (torch's
    ``torch.optim.optimizer.required``)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class Optimizer:
    """Base class of the optimizers: parameter groups, state, ``state_dict``, ``zero_grad``.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups
            (``{"params": [...], "lr": 0.1, ...}``).
        defaults: hyperparameter values for the keys a group does not give; a value of
            :data:`required` makes the key mandatory in every group.

    Attributes:
        defaults: the constructor's hyperparameters.
        param_groups: list of dicts, each with ``"params"`` (a list of tensors) and every
            hyperparameter.
        state: ``{parameter: {name: ndarray or number}}``, filled by ``step``.

    Raises:
        ArgumentTypeError: ``params`` is a bare tensor, a set, or holds a non-tensor.
        ArgumentError: an empty parameter list, a parameter in two groups, a group without a
            required hyperparameter.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap each subclass's ``step`` so that schedulers can tell whether it was called (to
        warn, as torch does, when ``scheduler.step()`` comes before ``optimizer.step()``)."""
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "_records_call", False):

            @functools.wraps(step)
            def recorded_step(self: Optimizer, *args: Any, **kw: Any) -> Any:
                self._opt_called = True
                return step(self, *args, **kw)

            recorded_step._records_call = True  # type: ignore[attr-defined]
            cls.step = recorded_step  # type: ignore[method-assign]

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        name = type(self).__name__
        if isinstance(params, Tensor):
            raise ArgumentTypeError(
                f"{name}: params argument given to the optimizer should be an iterable of "
                f"Tensors or dicts, but got {_typename(params)}"
            )
        self.defaults = dict(defaults)
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._opt_called = False
        groups: list[Any] = list(params)
        if not groups:
            raise ArgumentError(f"{name}: optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            lines += [f"    {key}: {group[key]}" for key in sorted(group) if key != "params"]
        return "\n".join(lines) + "\n)"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (a dict with ``"params"`` and optional hyperparameters), e.g. to
        unfreeze layers during fine-tuning. Missing hyperparameters take ``defaults``.

        Raises:
            ArgumentTypeError: not a dict; params a set or holding a non-tensor.
            ArgumentError: no ``"params"``; a required hyperparameter missing; a parameter
                already in another group.
        """
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise ArgumentTypeError(
                f"{name}: param_group must be a dict, but got {_typename(param_group)}"
            )
        if "params" not in param_group:
            raise ArgumentError(f"{name}: a parameter group needs a 'params' entry, got keys "
                                f"{sorted(param_group)}")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set | frozenset):
            raise ArgumentTypeError(
                f"{name}: optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a list "
                "instead."
            )
        params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise ArgumentTypeError(
                    f"{name}: optimizer can only optimize Tensors, but one of the params is "
                    f"{_typename(p)}"
                )
            if not p.is_leaf:
                raise ArgumentError(f"{name}: can't optimize a non-leaf Tensor")
        for key, default in self.defaults.items():
            if default is required and key not in group:
                raise ArgumentError(
                    f"{name}: parameter group didn't specify a value of required optimization "
                    f"parameter {key}"
                )
            group.setdefault(key, default)
        distinct: dict[int, Tensor] = {}
        for p in params:
            distinct.setdefault(id(p), p)
        if len(distinct) != len(params):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; each is "
                "optimised once",
                stacklevel=3,
            )
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        if any(i in taken for i in distinct):
            raise ArgumentError(
                f"{name}: some parameters appear in more than one parameter group"
            )
        group["params"] = list(distinct.values())
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (default) or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.data[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; returns ``closure()`` if given."""
        raise NotImplementedError

    def _closure_loss(self, closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with enable_grad():
            return closure()

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state in torch's layout.

        Returns:
            ``{"state": {index: {name: value}}, "param_groups": [{hyperparameters...,
            "params": [index, ...]}]}``; parameters are numbered from 0 in group order, only
            parameters with state appear in ``"state"``. Arrays are copies (torch returns
            references), so a saved state is not changed by later steps.
        """
        index_of: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index_of.setdefault(id(p), len(index_of))
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {
            index_of[id(p)]: {
                k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()
            }
            for p, s in self.state.items()
            if id(p) in index_of
        }
        return {"state": state, "param_groups": copy.deepcopy(groups)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (this library's or torch's, tensors read with np.asarray).

        Group hyperparameters are replaced by the saved ones (keys the saved groups lack keep
        this optimizer's defaults); arrays are copied and cast to their parameter's dtype;
        ``step`` becomes an int.

        Raises:
            ArgumentError: a missing key, or a different number of groups or of parameters in a
                group.
            ShapeError: a state array whose shape is not its parameter's.
        """
        name = f"{type(self).__name__}.load_state_dict"
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ArgumentError(
                    f"{name}: expected a state dict with 'state' and 'param_groups', "
                    f"received keys {sorted(state_dict)}"
                )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ArgumentError(
                f"{name}: loaded state dict has a different number of parameter groups: "
                f"{len(saved_groups)} saved, {len(self.param_groups)} in the optimizer"
            )
        for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups,
                                                   strict=True)):
            if len(group["params"]) != len(saved["params"]):
                raise ArgumentError(
                    f"{name}: loaded state dict contains a parameter group that doesn't match "
                    f"the size of optimizer's group: group {index} has {len(saved['params'])} "
                    f"parameters saved, {len(group['params'])} in the optimizer"
                )
        parameter_of = dict(zip(
            chain.from_iterable(g["params"] for g in saved_groups),
            chain.from_iterable(g["params"] for g in self.param_groups),
            strict=True,
        ))
        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for key, entry in state_dict["state"].items():
            index = int(key) if isinstance(key, str) and key.isdigit() else key
            if index not in parameter_of:
                raise ArgumentError(
                    f"{name}: state for parameter {key!r}, which no saved group lists "
                    f"(indices {sorted(parameter_of)})"
                )
            p = parameter_of[index]
            state[p] = {
                k: _state_value(v, p, k, f"{name}: parameter {index}")
                for k, v in entry.items()
                if v is not None
            }
        groups = []
        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            loaded = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            if isinstance(loaded.get("betas"), list):
                loaded["betas"] = tuple(loaded["betas"])
            for k, default in self.defaults.items():
                loaded.setdefault(k, default)
            loaded["params"] = group["params"]
            groups.append(loaded)
        self.state = state
        self.param_groups = groups


def _state_value(value: Any, p: Tensor, key: str, where: str) -> Any:
    """A saved state entry as this library holds it: arrays copied in p's dtype and shape,
    ``step`` an int (torch keeps a float tensor), other numbers as they are."""
    if not isinstance(value, np.ndarray | int | float) and hasattr(value, "__array__"):
        value = np.asarray(value)  # a torch tensor or a 0-d array
    if key == "step":
        number = float(np.asarray(value).item())
        return int(number) if number.is_integer() else number
    if isinstance(value, np.ndarray) and value.ndim > 0:
        if value.shape != p.shape:
            raise ShapeError(
                f"{where} '{key}' has shape {value.shape}, the parameter has shape {p.shape}"
            )
        return np.array(value, dtype=p.dtype if value.dtype.kind == "f" else value.dtype)
    if isinstance(value, np.ndarray):
        return value.item()
    return copy.deepcopy(value)


def _typename(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def check_nonnegative(owner: str, **values: float) -> None:
    """Raise ArgumentError naming the first negative hyperparameter (torch's 'Invalid ...')."""
    for key, value in values.items():
        if not value >= 0.0:
            raise ArgumentError(f"{owner}: invalid {key}: {value} (expected >= 0)")


CHUNK_ELEMENTS = 1 << 18
"""Elementwise updates run on chunks of this many elements (1 MB of float32), spread over
convgrad's threads. An update is a dozen NumPy passes, each with a few microseconds of call
overhead per chunk: smaller chunks stay in the core's own cache but pay that overhead more
often. Adam on Deep MNIST's 3.27M parameters, 2 cores (AMD EPYC), interleaved A/B of the
optimizer's time per step: 64K-element chunks 1.36x slower than 256K, 128K 1.01-1.06x,
512K 1.08-1.11x."""


def in_chunks(update: Callable[..., None], *arrays: np.ndarray) -> None:
    """update(*chunks) on matching chunks of the flattened arrays (all C-contiguous, same shape),
    else once on the whole arrays. Elementwise updates give the same bits either way."""
    size = arrays[0].size
    if size <= CHUNK_ELEMENTS or not all(a.flags.c_contiguous for a in arrays):
        update(*arrays)
        return
    flat = [a.reshape(-1) for a in arrays]
    chunks = [slice(i, i + CHUNK_ELEMENTS) for i in range(0, size, CHUNK_ELEMENTS)]
    nbytes = sum(a.nbytes for a in arrays)
    parallel_for(chunks, lambda c: update(*(f[c] for f in flat)), nbytes)
