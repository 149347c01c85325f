"""Module buffers, register_parameter, state_dict keys, dtype casts, forward hooks, mult-adds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convgrad as cg
from convgrad import nn
from convgrad.lab.models import deep_mnist


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("scale", np.full(2, 2.0, np.float32))
        self.register_buffer("steps", np.array(0, np.int64))
        self.register_buffer("scratch", np.zeros(2, np.float32), persistent=False)
        self.register_buffer("absent", None)
        self.register_parameter("extra", None)

    def forward(self, x):
        self.steps.data += 1
        return self.linear(x) * self.scale


def test_buffers_are_listed_saved_and_restored_with_torch_style_keys():
    model = nn.Sequential(nn.Identity(), Counter())
    assert [n for n, _ in model.named_buffers()] == ["1.scale", "1.steps", "1.scratch"]
    assert len(list(model.buffers())) == 3
    assert [n for n, _ in model.named_parameters()] == ["1.linear.weight", "1.linear.bias"]
    state = model.state_dict()
    # torch's order: a module's parameters, then its persistent buffers, then its children
    assert list(state) == ["1.scale", "1.steps", "1.linear.weight", "1.linear.bias"]
    model(cg.tensor(np.ones((4, 3), np.float32)))
    assert model[1].steps.item() == 1
    copy = nn.Sequential(nn.Identity(), Counter())
    copy.load_state_dict(model.state_dict())
    assert copy[1].steps.item() == 1 and copy[1].steps.dtype == np.int64
    np.testing.assert_array_equal(copy[1].linear.weight.data, model[1].linear.weight.data)


def test_state_dict_order_matches_torch_for_a_nested_model():
    class TorchCounter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)
            self.register_buffer("scale", torch.full((2,), 2.0))
            self.register_buffer("steps", torch.tensor(0))
            self.register_buffer("scratch", torch.zeros(2), persistent=False)
            self.register_buffer("absent", None)
            self.register_parameter("extra", None)

    theirs = torch.nn.Sequential(torch.nn.Identity(), TorchCounter())
    mine = nn.Sequential(nn.Identity(), Counter())
    assert list(mine.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in mine.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    mine.load_state_dict(theirs.state_dict())  # torch tensors accepted directly


def test_load_state_dict_reports_missing_and_unexpected_keys():
    model = Counter()
    state = model.state_dict()
    del state["steps"]
    state["stray"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['steps'\], unexpected keys \['stray'\]"):
        model.load_state_dict(state)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["steps"] and result.unexpected_keys == ["stray"]
    state = model.state_dict()
    state["scratch"] = np.zeros(2)  # non-persistent: not expected
    with pytest.raises(KeyError, match=r"unexpected keys \['scratch'\]"):
        model.load_state_dict(state)
    with pytest.raises(ValueError, match=r"size mismatch for scale"):
        model.load_state_dict({**model.state_dict(), "scale": np.zeros(3)})


def test_to_double_and_float_cast_float_buffers_only():
    model = Counter().double()
    assert model.linear.weight.dtype == np.float64
    assert model.scale.dtype == np.float64 and model.scratch.dtype == np.float64
    assert model.steps.dtype == np.int64
    assert model.state_dict()["scale"].dtype == np.float64
    model.float()
    assert model.scale.dtype == np.float32 and model.steps.dtype == np.int64
    bn = nn.BatchNorm2d(3).to(np.float64)
    assert bn.running_mean.dtype == bn.running_var.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64


def test_buffer_assignment_and_registration_rules():
    model = Counter()
    model.scale = np.ones(2, np.float32)  # assigning to a buffer name updates the buffer
    assert isinstance(model.scale, cg.Tensor) and model._buffers["scale"] is model.scale
    model.absent = cg.tensor([1.0])
    assert [n for n, _ in model.named_buffers()][-1] == "absent"
    with pytest.raises(TypeError, match="cannot assign str object to buffer 'scale'"):
        model.scale = "x"
    with pytest.raises(KeyError, match="attribute 'training' already exists"):
        model.register_buffer("training", np.zeros(1))
    with pytest.raises(
        KeyError, match=r'buffer name must not be empty or contain ".", received \W+a\.b'
    ):
        model.register_buffer("a.b", np.zeros(1))
    with pytest.raises(TypeError, match="parameter 'p'"):
        model.register_parameter("p", cg.tensor([1.0]))
    model.register_parameter("gain", nn.Parameter(np.ones(1, np.float32)))
    assert "gain" in dict(model.named_parameters())
    model.gain = None  # a registered parameter set to None stays registered, as in torch
    assert "gain" in model._parameters and "gain" not in dict(model.named_parameters())
    del model.scale
    assert "scale" not in model.state_dict()


def test_forward_hooks_fire_in_order_can_replace_values_and_are_removed():
    model = nn.Linear(2, 2)
    calls = []
    h1 = model.register_forward_pre_hook(lambda m, args: calls.append(("pre", args[0].shape)))
    h2 = model.register_forward_hook(lambda m, args, out: calls.append(("post", out.shape)))
    double_input = model.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    zero_output = model.register_forward_hook(lambda m, args, out: out * 0)
    x = cg.tensor(np.ones((3, 2), np.float32))
    out = model(x)
    assert calls == [("pre", (3, 2)), ("post", (3, 2))]
    np.testing.assert_array_equal(out.data, 0)
    zero_output.remove()
    np.testing.assert_allclose(
        model(x).data, (2 * x.data) @ model.weight.data.T + model.bias.data, rtol=1e-6
    )
    double_input.remove()
    h1.remove()
    h2.remove()
    h2.remove()  # removing twice is harmless
    calls.clear()
    model(x)
    assert calls == []
    with model.register_forward_hook(lambda m, a, o: calls.append("ctx")):
        model(x)
    model(x)
    assert calls == ["ctx"]


def test_hooks_are_per_module():
    a, b = nn.ReLU(), nn.ReLU()
    seen = []
    a.register_forward_hook(lambda m, args, out: seen.append(m))
    b(cg.tensor([1.0]))
    a(cg.tensor([1.0]))
    assert seen == [a]


def test_summary_leaves_no_hook_behind_and_mult_adds_are_unchanged():
    model = deep_mnist()
    result = cg.summary(model, (1, 1, 28, 28))
    assert all(not m._forward_hooks for m in model.modules())
    by_layer = [(r.layer, r.mult_adds) for r in result.rows if r.mult_adds]
    # the per-layer counts of the isinstance chain this method replaced
    assert by_layer == [
        ("Conv2d", 28 * 28 * 32 * 25),
        ("Conv2d", 14 * 14 * 64 * 32 * 25),
        ("Linear", 1024 * 3136),
        ("Linear", 10 * 1024),
    ]
    assert result.mult_adds == sum(m for _, m in by_layer)


def test_default_mult_adds_is_zero_and_modules_may_define_their_own():
    class Scale(nn.Module):
        def forward(self, x):
            return x * 2

        def mult_adds(self, input_shape, output_shape):
            return int(np.prod(output_shape))

    assert nn.ReLU().mult_adds((1, 2), (1, 2)) == 0
    rows = cg.summary(nn.Sequential(Scale(), nn.ReLU()), (2, 5)).rows
    assert [r.mult_adds for r in rows] == [10, 0]
