"""The TOML is the single source of an experiment: a new file is listed, ordered, reproduced
and reported; the schema's strictness (integers, finite floats) and its derived tag table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convgrad.cli import main
from convgrad.lab.reproduce import Task, suite_tasks
from convgrad.lab.spec import (
    SPECS_ENV,
    SpecError,
    builtin_names,
    load_spec,
    registry,
    resolve_spec,
    union_tags,
    validate_spec,
)

REPO = Path(__file__).resolve().parents[1]

NEW = """
name = "zz-new"
description = "a new experiment added as one file"
order = {order}
ms_per_example = 0.5
target = 0.2
[dataset]
kind = "synthetic"
train = 60
test = 30
height = 8
width = 8
[model]
layers = [{{type = "flatten"}}, {{type = "linear"}}]
[optimizer]
name = "adam"
lr = 1e-2
[train]
batch_size = 10
steps = 40
eval_every = 20
[budget]
quick = 6
[report]
section = "beyond"
plots = ["curves"]
"""


@pytest.fixture
def new_specs(tmp_path, monkeypatch):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "zz-new.toml").write_text(NEW.format(order=2))
    monkeypatch.setenv(SPECS_ENV, str(folder))
    return folder


def tiny(**changes):
    data = {
        "name": "tiny",
        "dataset": {"kind": "synthetic", "train": 40, "test": 20, "height": 8, "width": 8},
        "model": {"layers": [{"type": "flatten"}, {"type": "linear"}]},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "train": {"batch_size": 10, "steps": 4, "eval_every": 2},
    }
    data.update(changes)
    return data


def test_a_new_file_is_listed_in_its_order(new_specs, capsys):
    names = builtin_names()
    shipped = [name for name in names if name != "zz-new"]
    # order = 2 puts it between the shipped experiments of order 1 and 2, before the later ones
    assert names.index("zz-new") == sum(1 for n in shipped if registry()[n].order <= 2)
    assert resolve_spec("zz-new").description == "a new experiment added as one file"
    assert main(["list"]) == 0
    assert "zz-new" in capsys.readouterr().out


def test_a_new_file_is_reproduced_and_reported(new_specs, tmp_path, capsys):
    out = tmp_path / "suite"
    status = main(["reproduce", "--budget", "quick", "--only", "zz-new", "--out", str(out),
                   "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads((out / "zz-new" / "result.json").read_text())
    assert result["steps_done"] == 6 and result["status"] == "completed"
    page = (out / "report.html").read_text()
    assert "zz-new" in page and "Beyond the course" in page


def test_the_cost_hint_comes_from_the_spec(new_specs, tmp_path):
    (task,) = suite_tasks("full", tmp_path, names=["zz-new"])
    assert task.cost == pytest.approx(40 * 10 * 0.5 / 1000)
    baseline = Task(resolve_spec("baseline"), tmp_path)
    assert baseline.cost == pytest.approx(20000 * 50 * 4.6 / 1000)


def test_a_file_whose_name_differs_from_its_stem_is_refused(new_specs):
    (new_specs / "other.toml").write_text(NEW.format(order=3))
    with pytest.raises(SpecError, match=r"name: expected 'other'.*received 'zz-new'"):
        builtin_names()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"train": {"steps": True}}, r"train\.steps: expected a number, received true"),
        ({"train": {"steps": 4.0}}, r"train\.steps: Input should be a valid integer"),
        ({"optimizer": {"name": "adam", "lr": float("inf")}}, r"optimizer\.lr: .*finite"),
        ({"optimizer": {"name": "sgd", "lr": float("nan")}}, r"optimizer\.lr: .*finite"),
        ({"seeds": [0, 0]}, r"seeds: .*distinct seeds"),
        ({"protocol": "test"}, r"protocol: Input should be 'course' or 'validation'"),
        ({"report": {"plots": ["pie"]}}, r"report\.plots\.\[0\]|report\.plots\[0\]"),
    ],
)
def test_strict_counts_finite_floats_and_new_fields(changes, message):
    data = tiny()
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    with pytest.raises(SpecError, match=message):
        validate_spec(data)


def test_the_tag_table_is_derived_from_the_schema():
    tags = union_tags()
    assert {"conv2d", "sum_distribution", "digit-pairs", "adam", "deep_mnist",
            "layer-list", "split-tower", "named-builder"} <= tags
    # keys of the schema are not tags (they are real path parts)
    assert not {"height", "layers", "tower", "lr"} & tags
    data = tiny(model={"split": {"parts": 2}, "stem": [{"type": "conv2d"}], "tower": [
        {"type": "flatten"}], "head": [{"type": "linear"}]})
    with pytest.raises(SpecError, match=r"model\.stem\[0\]\.out_channels: Field required"):
        validate_spec(data)


def test_seed_points_give_one_spec_per_seed():
    spec = validate_spec(tiny(seeds=[3, 4]))
    points = spec.seed_points()
    assert [(d, s.seed, s.seeds) for d, s in points] == [("seed-3", 3, None), ("seed-4", 4, None)]
    assert [d for d, _ in spec.seed_points(2)] == ["seed-0", "seed-1"]
    assert validate_spec(tiny()).seed_points() == [("", validate_spec(tiny()))]
    assert spec.with_overrides(seed=7).seed_points()[0][1].seed == 7  # --seed: that seed only
    assert len(spec.with_overrides(seed=7).seed_points()) == 1


def test_the_digit_sum_readings_differ_from_the_course_spec_only_where_they_say():
    folder = REPO / "benchmarks" / "digit_sum_readings"
    course = resolve_spec("digit-sum").model_dump(mode="json")
    changed = {}
    for path in sorted(folder.glob("*.toml")):
        reading = load_spec(path).model_dump(mode="json")
        changed[path.stem] = sorted(
            f"{key}.{sub}" for key in course if isinstance(course[key], dict)
            for sub in set(course[key]) | set(reading[key])
            if course[key].get(sub) != reading[key].get(sub)
        )
    assert changed == {
        "digit-sum-fresh": ["dataset.sampling"],
        "digit-sum-fresh-adam1e-3": ["dataset.sampling", "model.init", "optimizer.lr"],
        "digit-sum-fresh-dropout": ["dataset.sampling", "model.head"],
        "digit-sum-fresh-stem": ["dataset.sampling", "model.stem", "model.tower"],
    }
