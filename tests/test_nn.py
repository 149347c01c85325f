"""Module bookkeeping, initialisation and summary."""

from __future__ import annotations

import numpy as np
import pytest

import convgrad as cg
from convgrad import nn


def deep_mnist() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3136, 1024),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1024, 10),
    )


class SharedTower(nn.Module):
    """Two halves of an image through the same conv and linear layers, then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 5)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        top, bottom = x[:, :, :4, :], x[:, :, 4:, :]
        features = [self.fc(self.conv(half).relu().flatten(1)) for half in (top, bottom)]
        return self.head(cg.cat(features, dim=1))


def test_deep_mnist_has_the_tutorial_parameter_count_layer_by_layer():
    summary = cg.summary(deep_mnist(), (1, 1, 28, 28))
    assert summary.total_params == summary.trainable_params == 3_274_634
    assert [r.params for r in summary.rows if r.params] == [832, 51_264, 3_212_288, 10_250]
    assert summary.rows[-1].output_shape == (1, 10)
    assert "Total params: 3,274,634" in str(summary)


def test_shared_parameters_are_counted_and_optimised_once_and_get_summed_gradients():
    model = SharedTower()
    assert len(list(model.parameters())) == 6
    summary = cg.summary(model, (2, 1, 8, 4))
    assert summary.total_params == (2 * 9 + 2) + (32 * 5 + 5) + (10 * 3 + 3)
    conv_rows = [r for r in summary.rows if r.layer == "Conv2d"]
    assert [r.params for r in conv_rows] == [20, 0]  # the second use adds no parameters
    assert conv_rows[0].mult_adds == conv_rows[1].mult_adds > 0

    x = np.random.default_rng(0).standard_normal((2, 1, 8, 4)).astype(np.float32)
    loss = model(cg.tensor(x)).sum()
    loss.backward()
    # the shared weight's gradient equals the sum of the gradients of two unshared copies
    grads = []
    for half in (x[:, :, :4], x[:, :, 4:]):
        conv_copy = nn.Conv2d(1, 2, 3, padding=1)
        conv_copy.load_state_dict(model.conv.state_dict())
        fc_out = model.fc(conv_copy(cg.tensor(half)).relu().flatten(1))
        head_w = model.head.weight.data[:, :5] if not grads else model.head.weight.data[:, 5:]
        (fc_out @ cg.tensor(head_w.T)).sum().backward()
        grads.append(conv_copy.weight.grad.data)
    np.testing.assert_allclose(
        model.conv.weight.grad.data, grads[0] + grads[1], rtol=1e-4, atol=1e-5
    )


def test_state_dict_round_trip_and_errors():
    a, b = deep_mnist(), deep_mnist()
    b.load_state_dict(a.state_dict())
    assert all(np.array_equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    state = a.state_dict()
    assert list(state)[:2] == ["0.weight", "0.bias"]
    state["7.weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="size mismatch for 7.weight"):
        b.load_state_dict(state)
    del state["7.weight"]
    with pytest.raises(KeyError, match="missing keys"):
        b.load_state_dict(state)


def test_train_eval_switch_dropout_and_zero_grad():
    model = deep_mnist()
    assert model.training and model[9].training
    model.eval()
    assert not model[9].training
    x = cg.tensor(np.ones((2, 1024), np.float32))
    np.testing.assert_array_equal(model[9](x).data, x.data)
    model.train()
    dropped = model[9](cg.tensor(np.ones((100, 1024), np.float32))).data
    assert set(np.unique(dropped)) == {0.0, 2.0} and 0.45 < (dropped == 0).mean() < 0.55
    model[10](x).sum().backward()
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_repr_reads_like_pytorch():
    text = repr(deep_mnist())
    assert "(0): Conv2d(1, 32, kernel_size=(5, 5), stride=(1, 1), padding='same')" in text
    assert "(7): Linear(in_features=3136, out_features=1024, bias=True)" in text
    assert "(9): Dropout(p=0.5)" in text


def test_default_init_matches_pytorch_bounds_and_tf_init_is_truncated():
    cg.manual_seed(0)
    conv = nn.Conv2d(32, 64, 5)
    bound = 1 / np.sqrt(32 * 25)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.9 * bound  # uniform fills its range
    nn.init.tf_tutorial_init_(conv)
    w = conv.weight.data
    assert np.abs(w).max() <= 0.2 and 0.07 < w.std() < 0.1  # truncation shrinks std to ~0.088
    assert np.all(conv.bias.data == np.float32(0.1))


def test_manual_seed_makes_initialisation_reproducible():
    cg.manual_seed(42)
    a = nn.Linear(10, 10).weight.data.copy()
    cg.manual_seed(42)
    assert np.array_equal(a, nn.Linear(10, 10).weight.data)


def test_module_list_and_children():
    layers = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])
    assert len(layers) == 2 and len(list(layers.parameters())) == 2
    assert [type(c).__name__ for c in deep_mnist().children()][:3] == [
        "Conv2d",
        "ReLU",
        "MaxPool2d",
    ]
