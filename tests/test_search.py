"""``convgrad search``: the [search] table, trial drawing, refusal over max_params, outputs, and a
small search on a local Ray cluster whose best spec ``convgrad run`` accepts."""

from __future__ import annotations

import csv
import importlib.util
import tomllib
from pathlib import Path

import numpy as np
import pytest

from convgrad.cli import main
from convgrad.lab import distributed
from convgrad.lab.search import (
    Trial,
    count_spec_parameters,
    draw_trials,
    load_search,
    pick_best,
    to_toml,
    validation_datasets,
)
from convgrad.lab.spec import SpecError, load_spec, validate_spec

requires_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                  reason="needs Ray: pip install 'convgrad[ray]'")

SEARCH = """
name = "tiny-search"
seed = 1
[dataset]
kind = "synthetic"
train = 320
test = 64
height = 16
width = 16
[model]
builder = "minimal"
channels = [4]
[optimizer]
name = "adam"
lr = 0.01
[train]
batch_size = 16
steps = 12
eval_every = 3
eval_train_examples = 32
eval_test_examples = 32
[search]
samples = 4
seed = 2
grace_period = 1
reduction_factor = 2
max_params = 5000
target = 0.9
validation = 64
[search.space]
"model.channels" = { choice = [[2], [4], [64, 64]] }
"optimizer.lr" = { loguniform = [1e-3, 3e-2] }
"""


def write(tmp_path: Path, text: str = SEARCH, name: str = "search.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_search_table_is_validated_with_key_paths(tmp_path):
    spec, search = load_search(write(tmp_path))
    assert spec.name == "tiny-search" and search.samples == 4
    assert search.space["optimizer.lr"].loguniform == (1e-3, 3e-2)
    with pytest.raises(SpecError, match=r"expected a \[search\] table"):
        load_search(write(tmp_path, SEARCH.split("[search]")[0]))
    with pytest.raises(SpecError, match=r"search.space.'model.width': no key 'model.width'"):
        load_search(write(tmp_path, SEARCH + '"model.width" = { choice = [1] }\n'))
    bad = SEARCH.replace("{ loguniform = [1e-3, 3e-2] }", "{ loguniform = [3e-2, 1e-3] }")
    with pytest.raises(SpecError, match=r"search.space.optimizer.lr.*low < high"):
        load_search(write(tmp_path, bad))
    two = SEARCH.replace("{ loguniform = [1e-3, 3e-2] }", "{ uniform = [0, 1], choice = [1] }")
    with pytest.raises(SpecError, match="exactly one of"):
        load_search(write(tmp_path, two))
    with pytest.raises(SpecError, match=r"search.samples: Input should be greater than 0"):
        load_search(write(tmp_path, SEARCH.replace("samples = 4", "samples = 0")))
    with pytest.raises(SpecError, match="unknown search 'nothing'.*minimal-search"):
        load_search("nothing")


def test_spec_schema_still_refuses_search_outside_convgrad_search(tmp_path):
    with pytest.raises(SpecError, match="search: unknown key"):
        load_spec(write(tmp_path))


def test_trials_are_drawn_from_the_seed_and_refused_over_max_params(tmp_path):
    spec, search = load_search(write(tmp_path))
    trials = draw_trials(spec, search)
    again = draw_trials(spec, search)
    assert [t.settings for t in trials] == [t.settings for t in again]
    assert len(trials) == 4
    for trial in trials:
        assert 1e-3 <= trial.settings["optimizer.lr"] <= 3e-2
        assert trial.parameters == count_spec_parameters(trial.spec)
        assert (trial.refused is not None) == (trial.parameters > 5000)
    refused = [t for t in trials if t.refused]
    assert refused and all(t.settings["model.channels"] == [64, 64] for t in refused)
    assert "parameters > max_params 5,000" in refused[0].refused
    other = draw_trials(spec, search.model_copy(update={"seed": 3}))
    assert [t.settings for t in other] != [t.settings for t in trials]


def test_the_validation_split_is_the_labs_held_out_split_never_the_test_set(tmp_path):
    from convgrad.lab.datasets import load_datasets

    spec, search = load_search(write(tmp_path))
    split = validation_datasets(spec.dataset, 64)
    lab = load_datasets(spec.dataset, 64)  # what protocol = "validation" holds out
    full = load_datasets(spec.dataset)
    assert len(split.train) == 256 and len(split.test) == 64 and split.validation is None
    assert (split.test.images == lab.validation.images).all()
    assert (split.train.labels == lab.train.labels).all()
    train_rows = {row.tobytes() for row in np.asarray(split.train.images)}
    assert not any(row.tobytes() in train_rows for row in np.asarray(split.test.images))
    test_rows = {row.tobytes() for row in np.asarray(full.test.images)}
    assert not any(row.tobytes() in test_rows for row in np.asarray(split.test.images))
    with pytest.raises(SpecError, match="search.validation: expected fewer.*320"):
        validation_datasets(spec.dataset, 320)


def test_best_is_the_smallest_reaching_the_target_else_the_most_accurate():
    def trial(index: int, parameters: int, accuracy: float | None) -> Trial:
        return Trial(index, {}, None, parameters, val_acc=accuracy)

    trials = [trial(0, 900, 0.95), trial(1, 500, 0.92), trial(2, 300, 0.80), trial(3, 10, None)]
    assert pick_best(trials, 0.9).index == 1
    assert pick_best(trials, 0.99).index == 0
    assert pick_best(trials, None).index == 0
    assert pick_best([trial(0, 1, None)], 0.9) is None


def test_to_toml_round_trips_a_spec(tmp_path):
    spec = validate_spec(tomllib.loads(SEARCH.split("[search]")[0]))
    data = spec.model_dump(mode="json", exclude_none=True)
    data["description"] = 'quotes " and \\ backslash'
    text = to_toml(data)
    assert tomllib.loads(text) == data
    baseline = load_spec(Path(distributed.__file__).with_name("specs") / "digit-sum.toml")
    dumped = baseline.model_dump(mode="json", exclude_none=True)
    assert validate_spec(tomllib.loads(to_toml(dumped))) == baseline


def test_shipped_minimal_search_loads_and_refuses_large_networks():
    spec, search = load_search("minimal-search")
    assert search.max_params == 20000 and search.target == 0.99
    assert search.validation == 5000
    trials = draw_trials(spec, search, budget="quick")
    assert len(trials) == search.samples
    assert any(t.refused for t in trials) and any(not t.refused for t in trials)
    assert all(t.parameters <= 20000 for t in trials if not t.refused)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local cluster (or the one another Ray test module of this session already started)."""
    with distributed.connect("local", num_cpus=2) as connected:
        yield connected


@requires_ray
@pytest.mark.ray
def test_small_search_ends_with_a_best_spec_that_convgrad_run_accepts(
    ray_cluster, tmp_path, capsys
):
    spec_path = write(tmp_path)
    out = tmp_path / "search"
    assert main(["search", str(spec_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("trials.csv", "trials.md", "search.png", "best.toml"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 4
    refused = [row for row in rows if row["status"] == "refused"]
    trained = [row for row in rows if row["status"] != "refused"]
    assert refused and trained
    for row in refused:  # refused, never trained: no run directory, no accuracy
        assert int(row["parameters"]) > 5000 and row["val_acc"] == ""
        assert not (out / "trials" / row["trial"]).exists()
        assert f"{row['trial']} refused" in printed
    for row in trained:
        assert row["status"] in ("completed", "stopped")
        assert 0.0 <= float(row["val_acc"]) <= 1.0
        records = (out / "trials" / row["trial"] / "metrics.jsonl").read_text().splitlines()
        assert len(records) == int(row["steps"]) // 3
        assert f"{row['trial']} {row['status']}" in printed
    best = load_spec(out / "best.toml")
    assert best.name == "tiny-search-best" and best.train.steps == 12
    assert best.dataset.kind == "synthetic" and best.dataset.train == 320  # the whole train set
    assert main(["run", str(out / "best.toml"), "--out", str(tmp_path / "best"), "--quiet"]) == 0
    assert (tmp_path / "best" / "result.json").is_file()
    assert main(["search", str(spec_path), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
