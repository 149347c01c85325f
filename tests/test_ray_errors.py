"""``--ray`` and ``convgrad search`` errors that need no cluster (and no Ray at all)."""

from __future__ import annotations

import sys

import pytest

from convgrad.cli import main
from convgrad.lab import distributed

SPEC = """
name = "tiny"
[dataset]
kind = "synthetic"
train = 64
test = 32
height = 8
width = 8
[model]
layers = [{type = "flatten"}, {type = "linear"}]
[train]
steps = 4
eval_every = 2
"""


@pytest.fixture
def no_ray(monkeypatch):
    """Simulate an environment without Ray: ``import ray`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "ray", None)


@pytest.mark.parametrize("command", [
    ["run", "SPEC", "--ray"],
    ["run", "SPEC", "--ray", "auto"],
    ["reproduce", "--budget", "quick", "--ray", "--only", "one-conv"],
    ["search", "minimal-search"],
])
def test_ray_missing_is_a_one_line_error_naming_the_extra(no_ray, tmp_path, capsys, command):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    command = [str(spec) if part == "SPEC" else part for part in command]
    assert main([*command, "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "pip install 'convgrad[ray]'" in line
    assert not (tmp_path / "out").exists()


def test_import_ray_error_names_the_extra(no_ray):
    with pytest.raises(distributed.RayUnavailableError, match=r"convgrad\[ray\]"):
        distributed.import_ray()


def test_core_does_not_import_ray(no_ray, tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 0


def test_storage_that_does_not_exist_is_a_one_line_error(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    missing = tmp_path / "not-mounted"
    assert main(["run", str(spec), "--ray", "--storage", str(missing)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"--storage {missing}: expected an existing directory" in line
    assert not missing.exists()


def test_storage_and_out_must_agree_and_storage_needs_ray(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(SPEC)
    assert main(["run", str(spec), "--ray", "--storage", str(tmp_path),
                 "--out", str(tmp_path / "elsewhere")]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["reproduce", "--storage", str(tmp_path)]) == 2
    assert "--storage needs --ray" in capsys.readouterr().err
    assert main(["reproduce", "--ray", "--jobs", "2"]) == 2
    assert "--jobs and --ray" in capsys.readouterr().err
