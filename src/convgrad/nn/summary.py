"""``convgrad.summary(model, input_shape)``: per-layer output shapes, parameters and mult-adds.

It runs one forward pass on zeros under ``no_grad`` with a forward hook on every leaf module
(removed afterwards). A parameter shared by several layers (or used by one layer several times) is
counted once, where it first appears; mult-adds count every use, since shared weights still do
their arithmetic each time. Each layer counts its own mult-adds (:meth:`Module.mult_adds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convgrad.autograd import Tensor, no_grad
from convgrad.nn.module import Module


@dataclass
class SummaryRow:
    """One call of a leaf module during the forward pass."""

    name: str
    layer: str
    output_shape: tuple[int, ...]
    params: int  # parameters first counted at this row
    mult_adds: int


@dataclass
class Summary:
    """Numbers of a model summary; ``str()`` prints the table."""

    rows: list[SummaryRow] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()
    total_params: int = 0
    trainable_params: int = 0
    mult_adds: int = 0

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    def __str__(self) -> str:
        header = ("Layer (type)", "Output shape", "Param #", "Mult-adds")
        body = [
            (
                f"{r.name} ({r.layer})",
                str(list(r.output_shape)),
                f"{r.params:,}",
                f"{r.mult_adds:,}",
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(4)]
        rule = "-" * (sum(widths) + 6)

        def fmt(row: tuple[str, ...]) -> str:
            return "  ".join(
                row[i].ljust(widths[i]) if i < 2 else row[i].rjust(widths[i]) for i in range(4)
            )

        lines = [rule, fmt(header), "=" * len(rule), *map(fmt, body), "=" * len(rule)]
        lines += [
            f"Input shape: {list(self.input_shape)}",
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.non_trainable_params:,}",
            f"Total mult-adds: {self.mult_adds:,}",
            rule,
        ]
        return "\n".join(lines)


def summary(
    model: Module,
    input_shape: tuple[int, ...] | list[int],
    dtype: Any = np.float32,
    verbose: bool = False,
) -> Summary:
    """Summarise a model by running it once on zeros of ``input_shape`` (batch included).

    Args:
        model: any Module.
        input_shape: e.g. (1, 1, 28, 28).
        verbose: print the table.

    Returns:
        A :class:`Summary` with ``rows``, ``total_params``, ``trainable_params`` and ``mult_adds``.
    """
    names = {id(m): name or type(m).__name__ for name, m in model.named_modules()}
    counted: set[int] = set()
    result = Summary(input_shape=tuple(input_shape))

    def hook(module: Module, inputs: tuple, output: Any) -> None:
        if any(True for _ in module.children()):
            return
        new = 0
        for param in module.parameters():
            if id(param) not in counted:
                counted.add(id(param))
                new += param.numel()
        shape = tuple(output.shape) if isinstance(output, Tensor) else ()
        first = inputs[0] if inputs else None
        in_shape = tuple(first.shape) if isinstance(first, Tensor) else None
        result.rows.append(
            SummaryRow(
                names.get(id(module), type(module).__name__),
                type(module).__name__,
                shape,
                new,
                module.mult_adds(in_shape, shape if isinstance(output, Tensor) else None),
            )
        )

    was_training = model.training
    model.eval()
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with no_grad():
            model(Tensor(np.zeros(tuple(input_shape), dtype=dtype)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # parameters never touched by a forward (unused layers) still belong to the model
    params = list(model.parameters())
    result.total_params = sum(p.numel() for p in params)
    result.trainable_params = sum(p.numel() for p in params if p.requires_grad)
    result.mult_adds = sum(r.mult_adds for r in result.rows)
    if verbose:
        print(result)
    return result
