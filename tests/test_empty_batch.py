"""An empty batch flows through every layer and its backward like PyTorch's does."""

from __future__ import annotations

import numpy as np
import torch

import convgrad as cg


def test_an_empty_batch_gives_empty_outputs_and_zero_parameter_gradients() -> None:
    layers = [
        (cg.nn.Conv2d(3, 4, 3, padding="same"), torch.nn.Conv2d(3, 4, 3, padding="same")),
        (cg.nn.Conv2d(3, 4, 3, stride=2, groups=1), torch.nn.Conv2d(3, 4, 3, stride=2)),
        (cg.nn.MaxPool2d(2), torch.nn.MaxPool2d(2)),
        (cg.nn.AvgPool2d(3, 2, 1), torch.nn.AvgPool2d(3, 2, 1)),
        (cg.nn.ReLU(), torch.nn.ReLU()),
    ]
    for ours, theirs in layers:
        x = cg.tensor(np.zeros((0, 3, 9, 9), dtype=np.float32), requires_grad=True)
        xt = torch.zeros((0, 3, 9, 9), requires_grad=True)
        y, yt = ours(x), theirs(xt)
        assert y.shape == tuple(yt.shape), ours
        y.sum().backward()
        assert x.grad.shape == (0, 3, 9, 9)
        for p in ours.parameters():
            assert not p.grad.data.any(), ours
    linear = cg.nn.Linear(5, 2)
    out = linear(cg.zeros(0, 5))
    assert out.shape == (0, 2)
