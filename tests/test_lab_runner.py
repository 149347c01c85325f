"""The runner: files and schedule, exact resumption (in process and after SIGKILL), divergence,
and a short real run on MNIST."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convgrad.lab.checkpoint import load_checkpoint, sha256_file
from convgrad.lab.metrics import MetricsLog, strip_wall_time
from convgrad.lab.runner import RunExistsError, run_experiment
from convgrad.lab.spec import SpecError, validate_spec

REPO = Path(__file__).resolve().parents[1]


def spec_dict(**train):
    """A small CNN with dropout on synthetic 12x12 images (dropout exercises the RNG state)."""
    schedule = {"batch_size": 16, "steps": 30, "eval_every": 6, "checkpoint_every": 4,
                "eval_train_examples": 64, "eval_test_examples": 40}
    schedule.update(train)
    return {
        "name": "syn",
        "seed": 5,
        "dataset": {"kind": "synthetic", "train": 200, "test": 120, "height": 12, "width": 12,
                    "noise": 0.5},
        "model": {"layers": [
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": "same"},
            {"type": "relu"}, {"type": "maxpool"}, {"type": "dropout", "p": 0.3},
            {"type": "flatten"}, {"type": "linear", "out_features": 16}, {"type": "relu"},
            {"type": "dropout", "p": 0.5}, {"type": "linear"},
        ]},
        "optimizer": {"name": "adam", "lr": 3e-3},
        "train": schedule,
    }


def toml_text(data: dict, prefix: str = "") -> str:
    """A minimal TOML writer for the spec dicts of these tests."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in tables:
        if key == "model":
            layers = ", ".join(
                "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in layer.items()) + "}"
                for layer in value["layers"]
            )
            lines += ["[model]", f"layers = [{layers}]"]
        else:
            lines += [f"[{key}]", toml_text(value)]
    return "\n".join(lines) + "\n"


def final_state(run_dir: Path):
    manifest, model, optimizer = load_checkpoint(run_dir)
    return manifest, model, optimizer, strip_wall_time(MetricsLog(run_dir / "metrics.jsonl").read())


def assert_same_run(a: Path, b: Path) -> None:
    manifest_a, model_a, optim_a, metrics_a = final_state(a)
    manifest_b, model_b, optim_b, metrics_b = final_state(b)
    assert model_a.keys() == model_b.keys()
    for name in model_a:
        assert np.array_equal(model_a[name], model_b[name]), name
    assert optim_a["state"].keys() == optim_b["state"].keys()
    assert optim_a["param_groups"] == optim_b["param_groups"]
    for state_a, state_b in zip(optim_a["state"].values(), optim_b["state"].values(), strict=True):
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert np.array_equal(state_a[key], state_b[key]), key
    assert manifest_a["rng_state"] == manifest_b["rng_state"]
    assert manifest_a["loader"] == manifest_b["loader"]
    assert metrics_a == metrics_b
    result_a = json.loads((a / "result.json").read_text())
    result_b = json.loads((b / "result.json").read_text())
    assert result_a["test_acc"] == result_b["test_acc"]



def whole_killed_and_resumed(spec_path: Path, tmp_path: Path, env: dict) -> None:
    """Run ``spec_path`` uninterrupted into ``tmp_path/whole``; run it again into
    ``tmp_path/killed``, SIGKILL it once a checkpoint at step >= 20 (of 120) exists, resume it,
    and check that both runs ended the same (see :func:`assert_same_run`)."""
    base = [sys.executable, "-m", "convgrad", "run", str(spec_path), "--quiet", "--out"]
    whole = subprocess.run([*base, str(tmp_path / "whole")], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    command = [*base, str(tmp_path / "killed")]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    manifest = tmp_path / "killed" / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.is_file() and json.loads(manifest.read_text() or "{}").get("step", 0) >= 20:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = json.loads(manifest.read_text())["step"]
    assert 20 <= killed_at < 120
    assert not (tmp_path / "killed" / "result.json").exists()

    resumed = subprocess.run([*command, "--resume"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "whole", tmp_path / "killed")

def test_run_writes_metrics_on_schedule_and_a_result(tmp_path):
    outcome = run_experiment(validate_spec(spec_dict()), tmp_path, progress=False)
    assert outcome.ok
    records = MetricsLog(tmp_path / "metrics.jsonl").read()
    assert [r["step"] for r in records] == [6, 12, 18, 24, 30]
    assert set(records[0]) == {"step", "train_loss", "train_acc", "test_acc", "test_examples",
                               "wall_time", "lr"}
    assert [r["test_examples"] for r in records] == [40, 40, 40, 40, 120]  # last: whole test set
    result = json.loads((tmp_path / "result.json").read_text())
    for key in ("test_acc", "parameters", "steps", "wall_time", "samples_per_s", "status", "seed",
                "name"):
        assert key in result
    assert result["status"] == "completed" and result["test_acc"] == records[-1]["test_acc"]
    assert result["test_acc"] > 0.3  # above chance (0.1): the synthetic classes are learnable
    # the two newest generations are kept (train.keep_checkpoints = 2)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.npz")) == ["ckpt-00000028.npz",
                                                                   "ckpt-00000030.npz"]
    with pytest.raises(RunExistsError, match="--resume"):
        run_experiment(validate_spec(spec_dict()), tmp_path, progress=False)


def test_resume_in_process_is_bit_identical(tmp_path):
    spec = validate_spec(spec_dict())
    run_experiment(spec, tmp_path / "whole", progress=False)
    # stop after the checkpoints at 9 and 21 (between evaluations), resuming each time
    assert run_experiment(spec, tmp_path / "parts", stop_after=9, progress=False).status == (
        "stopped")
    assert run_experiment(spec, tmp_path / "parts", resume=True, stop_after=21,
                          progress=False).status == "stopped"
    assert run_experiment(spec, tmp_path / "parts", resume=True, progress=False).ok
    assert_same_run(tmp_path / "whole", tmp_path / "parts")


def test_resume_refuses_a_changed_spec(tmp_path):
    run_experiment(validate_spec(spec_dict()), tmp_path, stop_after=4, progress=False)
    changed = spec_dict()
    changed["optimizer"]["lr"] = 1e-2
    with pytest.raises(SpecError, match="differs.*optimizer"):
        run_experiment(validate_spec(changed), tmp_path, resume=True, progress=False)


def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path):
    # long enough (~several seconds) to be killed in the middle, checkpointing every 3 steps
    data = spec_dict(steps=120, eval_every=10, checkpoint_every=3)
    data["dataset"].update(height=28, width=28, train=400)
    data["model"]["layers"][0]["out_channels"] = 8
    spec_path = tmp_path / "syn.toml"
    spec_path.write_text(toml_text(data))
    # both runs with the same BLAS thread count: a different count may change float rounding
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    whole_killed_and_resumed(spec_path, tmp_path, env)
    steps = [r["step"] for r in MetricsLog(tmp_path / "killed" / "metrics.jsonl").read()]
    assert steps == list(range(10, 121, 10))  # no duplicated or missing lines


def test_nan_loss_stops_as_diverged_and_keeps_the_last_good_checkpoint(tmp_path):
    data = spec_dict(checkpoint_every=1)
    data["model"] = {"layers": [{"type": "flatten"}, {"type": "linear", "out_features": 16},
                                {"type": "linear"}]}
    data["optimizer"] = {"name": "sgd", "lr": 1e10}
    outcome = run_experiment(validate_spec(data), tmp_path, progress=False)
    assert outcome.status == "diverged"
    result = json.loads((tmp_path / "result.json").read_text())
    step = result["diverged_step"]
    assert result["status"] == "diverged" and f"diverged at step {step}" in result["message"]
    manifest, model, _ = load_checkpoint(tmp_path)  # checksum verified
    assert manifest["step"] == result["last_checkpoint_step"] < step
    assert all(np.isfinite(array).all() for array in model.values())
    assert sha256_file(tmp_path / manifest["file"]) == manifest["sha256"]


@pytest.fixture(scope="module")
def mnist_available():
    from convgrad.data import MNIST, DatasetError

    try:
        MNIST("train", download=False)
        MNIST("test", download=False)
    except (DatasetError, OSError) as error:
        pytest.skip(f"MNIST is not in the cache: {error}")


def test_short_real_run_on_mnist_learns(tmp_path, mnist_available):
    """A small CNN, 200 steps of 50 real MNIST digits, evaluated on all 10,000 test images."""
    data = {
        "name": "mnist-smoke",
        "dataset": {"kind": "mnist"},
        "model": {"builder": "minimal", "channels": [8, 16]},
        "optimizer": {"name": "adam", "lr": 3e-3},
        "train": {"batch_size": 50, "steps": 200, "eval_every": 100, "eval_train_examples": 500,
                  "eval_test_examples": 500},
    }
    outcome = run_experiment(validate_spec(data), tmp_path, progress=False)
    assert outcome.ok
    assert outcome.result["test_examples"] == 10_000
    assert outcome.result["test_acc"] > 0.85, outcome.result
