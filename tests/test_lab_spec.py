"""Specs: the shipped experiments, validation errors with key paths, builders, weight sharing."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

import convgrad as cg
from convgrad import nn
from convgrad.lab.datasets import dataset_geometry
from convgrad.lab.models import SplitShared, build_model, count_parameters, digit_sum
from convgrad.lab.spec import (
    SpecError,
    builtin_dir,
    builtin_names,
    load_spec,
    resolve_spec,
    validate_spec,
)


def shipped_files():
    """``{name: parsed TOML}`` of every shipped spec file, read without the registry."""
    return {path.stem: tomllib.loads(path.read_text()) for path in builtin_dir().glob("*.toml")}


def tiny(**changes):
    """A valid spec dict on synthetic data, with top-level keys replaced."""
    data = {
        "name": "tiny",
        "dataset": {"kind": "synthetic", "train": 40, "test": 20, "height": 8, "width": 8},
        "model": {"layers": [{"type": "flatten"}, {"type": "linear"}]},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "train": {"batch_size": 10, "steps": 4, "eval_every": 2},
    }
    data.update(changes)
    return data


def shipped_model(name):
    spec = resolve_spec(name).sweep_points()[0][1]
    shape, classes = dataset_geometry(spec.dataset)
    cg.manual_seed(0)
    return spec, build_model(spec.model, shape, classes), shape


def test_every_shipped_file_is_registered_in_its_order():
    files = shipped_files()
    expected = sorted(files, key=lambda name: (files[name].get("order", 1000), name))
    assert builtin_names() == expected
    assert all(data["name"] == stem for stem, data in files.items())
    orders = [data["order"] for data in files.values()]
    assert len(set(orders)) == len(orders)  # no two experiments share a place


@pytest.mark.parametrize(
    "name, parameters",
    [("baseline", 3_274_634), ("linear", 3_274_634), ("one-conv", 63_250),
     ("full-nodropout", 3_274_634), ("few250-small", 963_438)],
)
def test_parameter_counts_match_the_course(name, parameters):
    _, model, shape = shipped_model(name)
    assert count_parameters(model) == parameters
    assert cg.summary(model, (1, *shape)).total_params == parameters


def test_minimal_network_is_under_twenty_thousand_parameters():
    spec, model, _ = shipped_model("minimal")
    assert count_parameters(model) <= spec.max_params == 20_000
    assert spec.target == 0.99


def test_linear_network_has_no_nonlinearity():
    _, model, _ = shipped_model("linear")
    kinds = {type(m).__name__ for m in model.modules()}
    assert not kinds & {"ReLU", "MaxPool2d", "Sigmoid", "Tanh"}
    assert "AvgPool2d" in kinds
    # affine in its input: f(a x + (1 - a) y) = a f(x) + (1 - a) f(y), in eval mode
    model.eval()
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 1, 1, 28, 28))
    with cg.no_grad():
        f = lambda v: model(cg.tensor(v.astype(np.float64))).data  # noqa: E731
        model.double()
        np.testing.assert_allclose(f(0.3 * x + 0.7 * y), 0.3 * f(x) + 0.7 * f(y), atol=1e-9)


def test_digit_sum_counts_the_shared_tower_once():
    spec, model, shape = shipped_model("digit-sum")
    assert isinstance(model, SplitShared)
    tower = count_parameters(model.tower)
    head = count_parameters(model.head)
    assert tower == 832 + 51_264 + 3136 * 1024 + 1024
    assert head == 2048 * 19 + 19
    assert count_parameters(model) == tower + head == 3_303_315
    assert cg.summary(model, (1, *shape)).total_params == tower + head
    assert count_parameters(digit_sum()) == tower + head  # the named builder is the same network


def test_shared_tower_gradient_is_the_sum_over_parts():
    cg.manual_seed(1)
    tower = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten())
    model = SplitShared(tower, nn.Linear(2 * 2 * 4 * 4, 3), axis="height", parts=2).double()
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 4))
    model(cg.tensor(x)).sum().backward()
    shared = tower[0].weight.grad.data.copy()
    # the same computation with two separate copies of the tower: the grads must add up
    halves = [x[:, :, :4], x[:, :, 4:]]
    grads = []
    for k, half in enumerate(halves):
        copy = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten()).double()
        copy.load_state_dict(tower.state_dict())
        other = tower(cg.tensor(halves[1 - k])).detach()
        features = [copy(cg.tensor(half)), other] if k == 0 else [other, copy(cg.tensor(half))]
        model.head(cg.cat(features, dim=1)).sum().backward()
        grads.append(copy[0].weight.grad.data)
    np.testing.assert_allclose(shared, grads[0] + grads[1], rtol=1e-10, atol=1e-12)


def test_sweep_points_set_dropout_to_one_minus_keep():
    spec = resolve_spec("few250-dropout")
    points = spec.sweep_points()
    assert [name for name, _ in points] == [f"keep-{k:g}" for k in (0.3, 0.5, 0.7, 0.9, 1.0)]
    assert [p.model.dropout for _, p in points] == [0.7, 0.5, 0.3, 0.1, 0.0]
    assert all(p.sweep is None and p.model.dropout_everywhere for _, p in points)
    _, keep_03 = points[0]
    cg.manual_seed(0)
    model = build_model(keep_03.model, (1, 28, 28), 10)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3 and all(d.p == 0.7 for d in dropouts)


def test_budgets_shorten_steps_and_evaluations():
    spec = resolve_spec("baseline")
    assert spec.with_overrides(budget="full").train.steps == 20_000
    quick = spec.with_overrides(budget="quick")
    assert quick.train.steps == spec.budget.quick
    assert quick.train.steps // quick.train.eval_every <= 10
    assert quick.train.eval_test_examples == 500
    assert spec.with_overrides(steps=7, seed=3).train.steps == 7


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"optimizer": {"name": "adam", "lr": 0}},
         r"optimizer\.lr: Input should be greater than 0"),
        ({"optimizer": {"name": "adagrad"}}, r"optimizer\.name: expected one of"),
        ({"train": {"steps": 4, "stepz": 3}}, r"train\.stepz: unknown key"),
        ({"train": {"eval_every": 2}}, r"train\.steps: Field required"),
        ({"dataset": {"kind": "subset"}}, r"dataset\.n: Field required"),
        ({"dataset": {"kind": "imagenet"}}, r"dataset\.kind: "),
        ({"model": {"layers": [{"type": "conv2d", "out_channels": 2}]}},
         r"model\.layers\[0\]\.kernel_size: Field required"),
        ({"model": {"layers": [{"type": "dropout", "p": 1.5}]}},
         r"model\.layers\[0\]\.p: Input should be less than 1"),
        ({"model": {"builder": "deep_mnist", "hiddn": 3}}, r"model\.hiddn: unknown key"),
        ({"model": {"split": {"axis": "depth"}, "tower": [{"type": "relu"}],
                    "head": [{"type": "linear"}]}}, r"model\.split\.axis: "),
        ({"sweep": {"keep_prob": [0.0]}}, r"sweep\.keep_prob\[0\]: Input should be greater than 0"),
        ({"seed": -1}, r"seed: Input should be greater than or equal to 0"),
        ({"colour": "red"}, r"colour: unknown key"),
    ],
)
def test_validation_errors_name_the_key_path(changes, expected):
    with pytest.raises(SpecError, match=expected):
        validate_spec(tiny(**changes))


def test_a_model_that_does_not_fit_names_the_layer():
    spec = validate_spec(tiny(model={"layers": [{"type": "conv2d", "out_channels": 2,
                                                 "kernel_size": 3}, {"type": "linear"}]}))
    with pytest.raises(SpecError, match=r"model\.layers\[1\]: linear expects .*flatten"):
        build_model(spec.model, (1, 8, 8), 10)
    spec = validate_spec(tiny(model={"layers": [{"type": "flatten"},
                                                {"type": "linear", "out_features": 3}]}))
    with pytest.raises(SpecError, match=r"expected an output of shape \(N, 10\)"):
        build_model(spec.model, (1, 8, 8), 10)


def test_spec_files_report_syntax_errors_and_unknown_names(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(SpecError, match="TOML syntax error"):
        load_spec(bad)
    with pytest.raises(SpecError, match="unknown experiment 'nope'.*baseline"):
        resolve_spec("nope")
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "missing.toml")
