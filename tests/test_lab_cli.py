"""The lab's command line: exit codes 0 / 1 / 2 and messages that name the problem."""

from __future__ import annotations

import json

import pytest

from convgrad.cli import main
from convgrad.lab.spec import builtin_names

SPEC = """
name = "cli-syn"
[dataset]
kind = "synthetic"
train = 60
test = 30
height = 8
width = 8
[model]
layers = [{type = "flatten"}, {type = "linear", out_features = 12}, {type = "relu"},
          {type = "linear"}]
[optimizer]
name = "adam"
lr = 1e-2
[train]
batch_size = 10
steps = 6
eval_every = 3
"""


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_run_succeeds_then_refuses_to_overwrite_then_resumes(tmp_path, capsys):
    spec = tmp_path / "syn.toml"
    spec.write_text(SPEC)
    out = tmp_path / "run"
    status, stdout, _ = run(capsys, "run", str(spec), "--out", str(out), "--quiet")
    assert status == 0 and "test accuracy" in stdout
    assert json.loads((out / "result.json").read_text())["status"] == "completed"
    status, _, err = run(capsys, "run", str(spec), "--out", str(out), "--quiet")
    assert status == 2 and "--resume" in err and "Traceback" not in err
    status, _, _ = run(capsys, "run", str(spec), "--out", str(out), "--quiet", "--resume")
    assert status == 0
    # more steps on resume extend the run
    status, _, _ = run(capsys, "run", str(spec), "--out", str(out), "--quiet", "--resume",
                       "--steps", "9")
    assert status == 0
    assert json.loads((out / "result.json").read_text())["steps_done"] == 9


def test_invalid_spec_exits_2_naming_the_key(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.replace("lr = 1e-2", "lr = -1").replace("eval_every = 3", "evry = 3"))
    status, _, err = run(capsys, "run", str(spec), "--out", str(tmp_path / "x"))
    assert status == 2
    assert "optimizer.lr: Input should be greater than 0" in err
    assert "train.evry: unknown key" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_unknown_experiment_and_bad_arguments_exit_2(tmp_path, capsys):
    status, _, err = run(capsys, "run", "no-such-experiment", "--out", str(tmp_path / "x"))
    assert status == 2 and "unknown experiment 'no-such-experiment'" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "baseline", "--steps", "0"])
    assert exit_info.value.code == 2
    assert "expected an integer >= 1" in capsys.readouterr().err
    status, _, err = run(capsys, "report", str(tmp_path / "missing"))
    assert status == 2 and "is not a directory" in err
    status, _, err = run(capsys, "reproduce", "--only", "nope", "--out", str(tmp_path / "r"))
    assert status == 2 and "unknown experiments ['nope']" in err


def test_diverged_run_exits_1_naming_the_step(tmp_path, capsys):
    spec = tmp_path / "nan.toml"
    spec.write_text(SPEC.replace('name = "adam"\nlr = 1e-2', 'name = "sgd"\nlr = 1e10')
                    .replace('{type = "relu"},\n          ', ""))
    status, _, err = run(capsys, "run", str(spec), "--out", str(tmp_path / "nan"), "--quiet")
    assert status == 1
    assert "diverged at step" in err and "Traceback" not in err
    result = json.loads((tmp_path / "nan" / "result.json").read_text())
    assert result["status"] == "diverged" and f"step {result['diverged_step']}" in err


def test_list_shows_every_experiment_with_parameters(capsys):
    status, stdout, _ = run(capsys, "list")
    assert status == 0
    for name in builtin_names():
        assert name in stdout
    assert "3,274,634" in stdout and "63,250" in stdout and "0.9920" in stdout


def test_sweep_runs_each_point_in_parallel_processes(tmp_path, capsys):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SPEC.replace('{type = "relu"},', '{type = "relu"}, {type = "dropout"},')
                    + "[sweep]\nkeep_prob = [0.5, 1.0]\n")
    status, stdout, err = run(capsys, "run", str(spec), "--out", str(tmp_path / "s"), "--jobs",
                              "2")
    assert status == 0, err
    for point in ("keep-0.5", "keep-1"):
        result = json.loads((tmp_path / "s" / point / "result.json").read_text())
        assert result["status"] == "completed" and result["point"] == point
    assert "keep-0.5" in stdout and "keep-1" in stdout


def test_top_level_command_has_every_subcommand():
    from convgrad.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"run", "list", "report", "reproduce", "data", "verify", "jacobian"} <= set(commands)
