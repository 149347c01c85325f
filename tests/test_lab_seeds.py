"""Seeds (one run directory per seed), the validation protocol (selection never looks at the
test set, resumes exactly), fresh digit pairs and the sum-distribution head of digit-sum-plus."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import convgrad as cg
from convgrad.cli import main
from convgrad.data import FreshDigitPairs
from convgrad.errors import ArgumentError
from convgrad.lab.datasets import ArrayData, carve, load_datasets
from convgrad.lab.explain import load_trained
from convgrad.lab.metrics import accuracy
from convgrad.lab.models import SplitShared, SumDistribution, build_model, count_parameters
from convgrad.lab.reproduce import tasks_for
from convgrad.lab.runner import run_experiment
from convgrad.lab.spec import resolve_spec, validate_spec
from gradcheck import check_gradients

SPEC = """
name = "seeded"
seeds = [0, 1]
[dataset]
kind = "synthetic"
train = 60
test = 30
height = 8
width = 8
[model]
layers = [{type = "flatten"}, {type = "linear"}]
[optimizer]
name = "adam"
lr = 1e-2
[train]
batch_size = 10
steps = 4
eval_every = 2
"""


def synthetic_spec(**changes):
    data = {
        "name": "val",
        "seed": 3,
        "protocol": "validation",
        "validation_examples": 50,
        "dataset": {"kind": "synthetic", "train": 250, "test": 80, "height": 10, "width": 10,
                    "noise": 0.8},
        "model": {"layers": [
            {"type": "flatten"}, {"type": "linear", "out_features": 16}, {"type": "relu"},
            {"type": "dropout", "p": 0.3}, {"type": "linear"},
        ]},
        "optimizer": {"name": "adam", "lr": 3e-2},
        "train": {"batch_size": 16, "steps": 24, "eval_every": 3, "checkpoint_every": 6},
    }
    data.update(changes)
    return validate_spec(data)


def test_spec_seeds_and_the_seeds_option_run_one_directory_per_seed(tmp_path, capsys):
    spec_path = tmp_path / "seeded.toml"
    spec_path.write_text(SPEC)
    assert main(["run", str(spec_path), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    results = [json.loads((tmp_path / "a" / f"seed-{s}" / "result.json").read_text())
               for s in (0, 1)]
    assert [r["seed"] for r in results] == [0, 1]
    assert main(["run", str(spec_path), "--out", str(tmp_path / "b"), "--seeds", "3",
                 "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["seed-0", "seed-1", "seed-2"]
    # seed 0 of both is the same run
    a = json.loads((tmp_path / "a" / "seed-0" / "result.json").read_text())
    b = json.loads((tmp_path / "b" / "seed-0" / "result.json").read_text())
    assert a["test_acc"] == b["test_acc"]
    assert main(["report", str(tmp_path / "b")]) == 0
    assert "± " in (tmp_path / "b" / "report.md").read_text()


def test_seeds_and_sweep_points_nest(tmp_path):
    spec = resolve_spec("few250-dropout").with_overrides(budget="quick")
    tasks = tasks_for(spec, tmp_path, seeds=2)
    assert len(tasks) == 2 * len(spec.sweep.keep_prob)
    assert tasks[0].run_dir == tmp_path / "seed-0" / "keep-0.3"
    assert tasks[-1].label == "few250-dropout/seed-1/keep-1"


def test_validation_is_carved_from_the_training_set_never_the_test_set():
    spec = synthetic_spec()
    data = load_datasets(spec.dataset, 50)
    whole = load_datasets(spec.dataset)
    assert len(data.validation.labels) == 50 and len(data.train.labels) == 200
    np.testing.assert_array_equal(data.test.images, whole.test.images)  # test set untouched
    together = np.concatenate([data.train.images, data.validation.images])
    assert sorted(map(bytes, together)) == sorted(map(bytes, whole.train.images))
    with pytest.raises(Exception, match="validation_examples: expected fewer than the 250"):
        carve(whole.train, 250)


def test_the_validation_protocol_reports_the_test_accuracy_of_the_best_validation_weights(
    tmp_path,
):
    spec = synthetic_spec()
    outcome = run_experiment(spec, tmp_path / "run", progress=False)
    result = outcome.result
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    history = {int(step): value for step, value in best["history"].items()}
    assert sorted(history) == list(range(3, 25, 3))
    first_best = min(s for s, v in history.items() if v == max(history.values()))
    assert result["protocol"] == "validation" and result["selected_step"] == first_best
    assert result["val_acc"] == max(history.values())
    # the reported test accuracy is that of the selected weights, recomputed here
    _, model, data = load_trained(tmp_path / "run")
    assert accuracy(model, data.test.images, data.test.labels) == result["test_acc"]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert all("val_acc" in record for record in metrics)


def test_the_selection_resumes_exactly(tmp_path):
    spec = synthetic_spec()
    run_experiment(spec, tmp_path / "whole", progress=False)
    assert run_experiment(spec, tmp_path / "parts", stop_after=6, progress=False).status == (
        "stopped")
    # a session killed after an evaluation but before its checkpoint leaves a history ahead
    info = json.loads((tmp_path / "whole" / "best.json").read_text())
    ahead = json.loads((tmp_path / "parts" / "best.json").read_text())
    ahead["history"]["9"] = info["history"]["9"]
    (tmp_path / "parts" / "best.json").write_text(json.dumps(ahead))
    assert run_experiment(spec, tmp_path / "parts", resume=True, progress=False).ok
    whole = json.loads((tmp_path / "whole" / "result.json").read_text())
    parts = json.loads((tmp_path / "parts" / "result.json").read_text())
    for key in ("test_acc", "val_acc", "selected_step"):
        assert whole[key] == parts[key]
    with np.load(tmp_path / "whole" / "best.npz") as a, np.load(tmp_path / "parts" /
                                                                "best.npz") as b:
        for key in a.files:
            assert np.array_equal(a[key], b[key])


def test_course_protocol_is_unchanged(tmp_path):
    result = run_experiment(synthetic_spec(protocol="course"), tmp_path, progress=False).result
    assert result["protocol"] == "course" and "selected_step" not in result
    assert not (tmp_path / "best.json").exists()


# ---------------------------------------------------------------------------------- fresh pairs
def digits(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return ArrayData(rng.integers(0, 256, (n, 4, 3), dtype=np.uint8), rng.integers(0, 10, n))


def test_fresh_pairs_are_a_pure_function_of_seed_and_batch_and_resume():
    base = digits()
    stream = FreshDigitPairs(base, 5, seed=2)
    batches = [stream.next_batch() for _ in range(4)]
    images, labels = batches[0]
    assert images.shape == (5, 1, 8, 3) and images.dtype == np.float32 and labels.shape == (5,)
    pairs = stream.pair_indices(0)
    np.testing.assert_array_equal(labels, base.labels[pairs].sum(axis=1))
    np.testing.assert_array_equal(images[:, 0, :4], base.images[pairs[:, 0]] / np.float32(255))
    np.testing.assert_array_equal(images[:, 0, 4:], base.images[pairs[:, 1]] / np.float32(255))
    assert not np.array_equal(batches[0][1], batches[1][1]) or not np.array_equal(
        batches[0][0], batches[1][0])
    resumed = FreshDigitPairs(base, 5, seed=0)
    resumed.load_state_dict({"batches": 2, "seed": 2})
    for expected in batches[2:]:
        got = resumed.next_batch()
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    assert stream.state_dict() == {"batches": 4, "seed": 2}
    with pytest.raises(ArgumentError, match="expected a non-negative integer batches"):
        resumed.load_state_dict({"batches": -1, "seed": 0})
    with pytest.raises(ArgumentError, match="batch_size >= 1"):
        FreshDigitPairs(base, 0)


# ---------------------------------------------------------------------------------- the sum head
def torch_sum_distribution(logits: torch.Tensor, k: int) -> torch.Tensor:
    first = torch.log_softmax(logits[:, :k], 1)
    second = torch.log_softmax(logits[:, k:], 1)
    outer = first[:, :, None] + second[:, None, :]
    return torch.stack([
        torch.logsumexp(torch.stack([outer[:, i, s - i] for i in range(k) if 0 <= s - i < k],
                                    1), 1)
        for s in range(2 * k - 1)
    ], 1)


@pytest.mark.parametrize("k, scale", [(10, 1.0), (10, 30.0), (3, 5.0), (1, 1.0)])
def test_sum_distribution_matches_torch_forward_and_backward(k, scale):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((6, 2 * k)) * scale
    upstream = rng.standard_normal((6, 2 * k - 1))
    ours = cg.tensor(x, requires_grad=True, dtype=np.float64)
    out = SumDistribution(k)(ours)
    (out * cg.tensor(upstream, dtype=np.float64)).sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    expected = torch_sum_distribution(theirs, k)
    (expected * torch.tensor(upstream)).sum().backward()
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.grad.data, theirs.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.exp(out.data).sum(axis=1), 1.0, rtol=1e-12)


def test_sum_distribution_gradcheck_and_errors():
    head = SumDistribution(4)
    check_gradients(head, np.random.default_rng(0).standard_normal((3, 8)))
    with pytest.raises(Exception, match=r"SumDistribution\(4\): expected input \(N, 8\)"):
        head(cg.tensor(np.zeros((2, 7), dtype=np.float32)))


def test_digit_sum_plus_is_the_tower_to_ten_logits_and_the_parameter_free_head():
    spec = resolve_spec("digit-sum-plus")
    model = build_model(spec.model, (1, 56, 28), 19)
    assert isinstance(model, SplitShared) and isinstance(model.head[0], SumDistribution)
    # the head adds no parameter: the tower is baseline-plus's network, counted once
    plus = resolve_spec("baseline-plus")
    assert count_parameters(model) == count_parameters(build_model(plus.model, (1, 28, 28), 10))
    assert count_parameters(model) == 3_275_754
    assert spec.protocol == "validation" and spec.dataset.sampling == "fresh"
    assert spec.target == 0.985 and spec.report.section == "beyond"
    stem = resolve_spec("digit-sum").model_copy(update={})
    assert stem.dataset.sampling == "fixed"
