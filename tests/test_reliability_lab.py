"""No run can lose or mix its data: generations, locking, divergence, resume that changes nothing.

Each test names the defect it covers; each failed on the code before the fix (see the report).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convgrad.errors import CheckpointError, ConvgradError, MetricsError, RunLockedError
from convgrad.files import exclusive_lock, lock_holder
from convgrad.lab.checkpoint import (
    NonFiniteError,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
)
from convgrad.lab.metrics import MetricsLog, strip_wall_time
from convgrad.lab.report import collect_runs
from convgrad.lab.runner import RunExistsError, run_experiment
from convgrad.lab.spec import SpecError, load_spec, validate_spec

REPO = Path(__file__).resolve().parents[1]


def spec_dict(**train) -> dict:
    """A tiny CNN with dropout on synthetic 10x10 images: a run takes well under a second."""
    schedule = {"batch_size": 8, "steps": 20, "eval_every": 5, "checkpoint_every": 5,
                "eval_train_examples": 32, "eval_test_examples": 20}
    schedule.update(train)
    return {
        "name": "tiny",
        "seed": 3,
        "dataset": {"kind": "synthetic", "train": 64, "test": 40, "height": 10, "width": 10},
        "model": {"layers": [
            {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": "same"},
            {"type": "relu"}, {"type": "maxpool"}, {"type": "dropout", "p": 0.2},
            {"type": "flatten"}, {"type": "linear"},
        ]},
        "optimizer": {"name": "adam", "lr": 3e-3},
        "train": schedule,
    }


def tiny(**train):
    return validate_spec(spec_dict(**train))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (lock file aside) -> sha256: to prove nothing changed."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file() and path.name != ".convgrad.lock"
    }


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(run_dir, warn=lambda line: None)[1]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert np.array_equal(wa[key], wb[key]), key
    assert strip_wall_time(MetricsLog(a / "metrics.jsonl").read()) == strip_wall_time(
        MetricsLog(b / "metrics.jsonl").read())


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The uninterrupted 20-step run every resumed run must match."""
    run_dir = tmp_path_factory.mktemp("whole")
    assert run_experiment(tiny(), run_dir, progress=False).ok
    return run_dir


def stopped_at_10(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    assert run_experiment(tiny(), run_dir, stop_after=10, progress=False).status == "stopped"
    return run_dir


# ---------------------------------------------- a damaged manifest never deletes a checkpoint
def test_damaged_manifest_keeps_the_npz_and_resume_rebuilds_the_index(tmp_path, whole, capfd):
    run_dir = stopped_at_10(tmp_path)
    (run_dir / "manifest.json").write_text('{"format": 1, "st')
    assert (run_dir / "ckpt-00000010.npz").is_file()
    assert run_experiment(tiny(), run_dir, resume=True, progress=False).ok
    err = capfd.readouterr().err
    assert "manifest.json: not valid JSON" in err and "rebuilding the index" in err
    assert_same_weights(whole, run_dir)


def test_manifest_naming_a_missing_file_deletes_nothing(tmp_path, whole, capfd):
    run_dir = stopped_at_10(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["generations"][0]["file"] = manifest["file"] = "ckpt-00000099.npz"
    manifest["generations"][0]["step"] = manifest["step"] = 99
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert run_experiment(tiny(), run_dir, resume=True, progress=False).ok
    assert "skipping checkpoint ckpt-00000099.npz (step 99): does not exist" in (
        capfd.readouterr().err)
    assert_same_weights(whole, run_dir)


# ------------------------------------------------------------------- checkpoint generations
def test_two_generations_are_kept_and_a_damaged_newest_falls_back(tmp_path, whole, capfd):
    run_dir = stopped_at_10(tmp_path)
    assert sorted(p.name for p in run_dir.glob("ckpt-*.npz")) == [
        "ckpt-00000005.npz", "ckpt-00000010.npz"]
    newest = run_dir / "ckpt-00000010.npz"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the middle
    newest.write_bytes(bytes(data))
    assert run_experiment(tiny(), run_dir, resume=True, progress=False).ok
    err = capfd.readouterr().err
    assert "skipping checkpoint ckpt-00000010.npz (step 10): sha256" in err
    assert_same_weights(whole, run_dir)  # resumed from step 5, not from step 0


def test_truncated_newest_without_manifest_falls_back_to_the_previous(tmp_path, whole, capfd):
    run_dir = stopped_at_10(tmp_path)
    (run_dir / "manifest.json").unlink()
    newest = run_dir / "ckpt-00000010.npz"
    newest.write_bytes(newest.read_bytes()[:-100])
    manifest, _, _ = load_checkpoint(run_dir)
    assert manifest["step"] == 5
    assert "ckpt-00000010.npz" in capfd.readouterr().err
    assert run_experiment(tiny(), run_dir, resume=True, progress=False).ok
    assert_same_weights(whole, run_dir)


def test_keep_checkpoints_is_configurable_by_spec_and_argument(tmp_path):
    run_experiment(tiny(keep_checkpoints=3), tmp_path / "spec", progress=False)
    assert len(list((tmp_path / "spec").glob("ckpt-*.npz"))) == 3
    assert [g.step for g in read_manifest(tmp_path / "spec")] == [20, 15, 10]
    run_experiment(tiny(), tmp_path / "arg", progress=False, keep_checkpoints=1)
    assert [p.name for p in (tmp_path / "arg").glob("ckpt-*.npz")] == ["ckpt-00000020.npz"]


def test_no_usable_generation_is_an_error_that_deletes_nothing(tmp_path):
    run_dir = stopped_at_10(tmp_path)
    for path in run_dir.glob("ckpt-*.npz"):
        path.write_bytes(b"PK\x03\x04 not an archive")
    before = snapshot(run_dir)
    with pytest.raises(CheckpointError, match="no usable checkpoint.*ckpt-00000010.npz"):
        run_experiment(tiny(), run_dir, resume=True, progress=False)
    assert snapshot(run_dir) == before


# ---------------------------------------------------------------------- one writer per run
def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with exclusive_lock(run_dir):
        assert lock_holder(run_dir) == str(os.getpid())
        with pytest.raises(RunLockedError, match=f"{run_dir} is in use.*{os.getpid()}"):
            run_experiment(tiny(), run_dir, progress=False)
    assert lock_holder(run_dir) is None
    assert run_experiment(tiny(), run_dir, progress=False).ok


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    code = ("import sys, time; from convgrad.files import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_cli_exit_status_3_names_directory_and_pid_and_sigkill_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec_path = tmp_path / "tiny.json"
    spec_path.write_text(json.dumps(spec_dict()))
    holder = _hold_lock(run_dir)
    try:
        command = [sys.executable, "-m", "convgrad", "run", str(tmp_path / "tiny.toml"),
                   "--quiet", "--out", str(run_dir)]
        (tmp_path / "tiny.toml").write_text(_toml(spec_dict()))
        second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 3, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and str(run_dir) in lines[0] and str(holder.pid) in lines[0]
        runs = collect_runs(tmp_path)
        assert [r.result["status"] for r in runs] == []  # no spec.json yet: not a run
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    third = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr


def _toml(data: dict) -> str:
    lines, tables = [], []
    for key, value in data.items():
        (tables if isinstance(value, dict) else lines).append((key, value))
    out = [f"{k} = {json.dumps(v)}" for k, v in lines]
    for key, value in tables:
        out.append(f"[{key}]")
        for k, v in value.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                items = ", ".join("{" + ", ".join(f"{a} = {json.dumps(b)}" for a, b in item.items())
                                  + "}" for item in v)
                out.append(f"{k} = [{items}]")
            else:
                out.append(f"{k} = {json.dumps(v)}")
    return "\n".join(out) + "\n"


def test_report_lists_a_run_in_progress_as_running(tmp_path, whole):
    run_dir = tmp_path / "run"
    stopped = stopped_at_10(tmp_path)
    assert stopped == run_dir
    holder = _hold_lock(run_dir)
    try:
        runs = collect_runs(tmp_path)
        assert [(r.run_dir, r.result["status"]) for r in runs] == [(run_dir, "running")]
        assert str(holder.pid) in runs[0].result["message"]
        from convgrad.cli import main

        assert main(["report", str(tmp_path)]) == 0
        assert f"running (process {holder.pid})" in (tmp_path / "report.md").read_text()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert collect_runs(tmp_path) == []  # interrupted, nobody running it, no result yet


# ------------------------------------------------------------------------------ divergence
def test_huge_finite_loss_is_divergence_and_nothing_non_finite_is_saved(tmp_path):
    data = spec_dict(steps=40, checkpoint_every=1)
    data["optimizer"] = {"name": "adam", "lr": 1e6}
    outcome = run_experiment(validate_spec(data), tmp_path, progress=False)
    assert outcome.status == "diverged", outcome.result
    assert "ceiling" in outcome.result["message"] or "inf or nan" in outcome.result["message"]
    for path in tmp_path.glob("ckpt-*.npz"):
        with np.load(path, allow_pickle=False) as archive:
            assert all(np.isfinite(archive[k]).all() for k in archive.files if k != "meta")


def test_non_finite_optimizer_state_is_divergence_even_below_the_loss_ceiling(
    tmp_path, monkeypatch
):
    """An inf in Adam's second moment (a squared gradient overflowing float32) with a finite
    loss: injected after the 7th update through the optimizer's own state_dict API."""
    import convgrad as cg

    original = cg.optim.Adam.step
    calls = []

    def step(self):
        original(self)
        calls.append(1)
        if len(calls) == 7:
            state = self.state_dict()
            entries = state["state"]
            first = entries[0] if isinstance(entries, list) else entries[next(iter(entries))]
            arrays = [k for k, v in first.items() if isinstance(v, np.ndarray) and v.ndim]
            key = next((k for k in arrays if "sq" in k), arrays[-1])  # the second moment
            first[key].flat[0] = np.inf
            self.load_state_dict(state)

    monkeypatch.setattr(cg.optim.Adam, "step", step)
    outcome = run_experiment(tiny(), tmp_path, progress=False)
    assert outcome.status == "diverged", outcome.result
    assert outcome.result["diverged_step"] == 10  # found at the next checkpoint, not saved
    assert "inf or nan in optimizer/" in outcome.result["message"]
    manifest, _, optimizer = load_checkpoint(tmp_path)
    assert manifest["step"] == outcome.result["last_checkpoint_step"] == 5


def test_save_checkpoint_refuses_inf_and_nan(tmp_path):
    state = {"state": {0: {"step": 1, "exp_avg": np.array([np.inf])}},
             "param_groups": [{"lr": 0.1, "params": [0]}]}
    extra = {"rng_state": {}, "loader": {}, "loss_sum": 0.0, "loss_count": 0, "wall_time": 0.0,
             "train_time": 0.0}
    with pytest.raises(NonFiniteError, match="optimizer/0/exp_avg"):
        save_checkpoint(tmp_path, 1, {"w": np.ones(1)}, state, extra)
    with pytest.raises(NonFiniteError, match="scalars"):
        save_checkpoint(tmp_path, 1, {"w": np.ones(1)},
                        {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
                        {**extra, "loss_sum": float("nan")})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------- a refused resume changes nothing
def test_bad_middle_metrics_line_refuses_with_its_number_and_changes_nothing(tmp_path):
    run_dir = stopped_at_10(tmp_path)
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n{not json\n" + lines[1] + "\n")
    with pytest.raises(MetricsError, match=r"metrics.jsonl: line 2: not valid JSON"):
        MetricsLog(path).read()
    before = snapshot(run_dir)
    with pytest.raises(MetricsError, match="line 2"):
        run_experiment(tiny(), run_dir, resume=True, progress=False)
    assert snapshot(run_dir) == before


def test_torn_last_metrics_line_is_still_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "test_acc": 0.5}\n{"step": 10, "te')
    assert MetricsLog(path).read() == [{"step": 5, "test_acc": 0.5}]


def test_refused_resume_with_fewer_steps_touches_nothing(tmp_path, whole):
    run_dir = tmp_path / "done"
    assert run_experiment(tiny(), run_dir, progress=False).ok
    before = snapshot(run_dir)
    with pytest.raises(CheckpointError, match="step 20, beyond train.steps=10"):
        run_experiment(tiny(steps=10), run_dir, resume=True, progress=False)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("field, value", [
    ("step", -5), ("step", "10"), ("step", True), ("file", "../outside.npz"),
    ("file", "/tmp/ckpt-00000010.npz"), ("sha256", "abc"), ("format", 7),
])
def test_every_manifest_field_is_validated(tmp_path, whole, capfd, field, value):
    run_dir = stopped_at_10(tmp_path)
    outside = tmp_path / "outside.npz"
    np.savez(outside, evil=np.zeros(1))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest[field] = value
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=field):
        read_manifest(run_dir)
    assert run_experiment(tiny(), run_dir, resume=True, progress=False).ok
    assert "rebuilding the index" in capfd.readouterr().err
    assert_same_weights(whole, run_dir)  # resumed from the real step 10, not -5 or outside


def test_fresh_run_refuses_a_directory_that_is_not_a_run(tmp_path):
    stray = tmp_path / "ckpt-00000007.npz"
    stray.write_bytes(b"mine")
    (tmp_path / "notes.txt").write_text("keep me")
    for resume in (False, True):
        with pytest.raises(RunExistsError, match="not a convgrad run.*ckpt-00000007.npz, notes"):
            run_experiment(tiny(), tmp_path, resume=resume, progress=False)
    assert stray.read_bytes() == b"mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        ".convgrad.lock", "ckpt-00000007.npz", "notes.txt"]


# --------------------------------------------------------------------- one-line errors (lab)
def _rewrite_newest(run_dir: Path, change) -> None:
    """Rewrite every generation's arrays with ``change`` and re-index them (valid sha256s)."""
    from convgrad.files import sha256_file

    manifest = json.loads((run_dir / "manifest.json").read_text())
    for entry in manifest["generations"]:
        path = run_dir / entry["file"]
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        change(arrays)
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        entry["sha256"] = sha256_file(path)
    manifest["sha256"] = manifest["generations"][0]["sha256"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def test_npz_missing_a_parameter_is_a_one_line_error_naming_the_file(tmp_path):
    run_dir = stopped_at_10(tmp_path)
    _rewrite_newest(run_dir, lambda arrays: arrays.pop(
        next(k for k in arrays if k.startswith("model/"))))
    with pytest.raises(CheckpointError, match=r"ckpt-00000010.npz: does not fit the model: "
                                              r"missing parameters \['0.bias'\]|0.weight"):
        run_experiment(tiny(), run_dir, resume=True, progress=False)


def test_optimizer_array_of_the_wrong_shape_is_an_error_naming_the_file(tmp_path):
    run_dir = stopped_at_10(tmp_path)

    def widen(arrays):
        key = next(k for k in arrays if k.startswith("optimizer/") and arrays[k].ndim)
        arrays[key] = np.zeros((*arrays[key].shape, 2), arrays[key].dtype)

    _rewrite_newest(run_dir, widen)
    with pytest.raises(CheckpointError, match=r"ckpt-00000010.npz: optimizer/\d+/\w+: expected "
                                              r"shape"):
        run_experiment(tiny(), run_dir, resume=True, progress=False)


@pytest.mark.parametrize("text", ['{"format": 2}', "[1, 2]", '{"format": 2, "generations": [7]}',
                                  "\xff\xfe"])
def test_manifest_without_step_or_of_the_wrong_type_is_rebuilt_not_a_traceback(
    tmp_path, whole, text
):
    run_dir = stopped_at_10(tmp_path)
    (run_dir / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(CheckpointError, match="manifest.json"):
        read_manifest(run_dir)
    assert run_experiment(tiny(), run_dir, resume=True, progress=False).ok
    assert_same_weights(whole, run_dir)


def test_result_json_that_is_a_list_is_a_one_line_error_and_skipped_by_report(tmp_path):
    run_dir = tmp_path / "done"
    assert run_experiment(tiny(), run_dir, progress=False).ok
    (run_dir / "result.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="result.json: expected a JSON object"):
        run_experiment(tiny(), run_dir, resume=True, progress=False)
    assert collect_runs(tmp_path) == []


def test_spec_file_that_is_not_utf8_is_a_spec_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b'name = "x\xff"\n')
    with pytest.raises(SpecError, match="bad.toml: not UTF-8"):
        load_spec(path)


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "steps", True, "steps: expected a number, received true"),
    ("train", "eval_every", False, "eval_every: expected a number"),
    ("optimizer", "lr", float("inf"), "optimizer.lr: Input should be a finite number"),
    ("optimizer", "lr", float("nan"), "optimizer.lr: Input should be a finite number"),
    ("optimizer", "lr", True, "lr: expected a number"),
])
def test_booleans_and_non_finite_numbers_are_refused(section, key, value, message):
    data = spec_dict()
    data[section][key] = value
    with pytest.raises(SpecError, match=message):
        validate_spec(data)


def test_every_new_error_is_a_convgrad_error():
    from convgrad.lab import checkpoint

    assert checkpoint.CheckpointError is CheckpointError
    for error in (CheckpointError, RunLockedError, MetricsError, NonFiniteError):
        assert issubclass(error, ConvgradError)


def test_sigint_during_start_up_is_one_line_and_status_130(tmp_path):
    (tmp_path / "tiny.toml").write_text(_toml(spec_dict(steps=100000)))
    command = [sys.executable, "-m", "convgrad", "run", str(tmp_path / "tiny.toml"), "--quiet",
               "--out", str(tmp_path / "run")]
    for delay in (0.1, 0.25, 0.4, 0.6, 0.9):  # during the imports, the spec, the data, the loop
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert err.strip() == "convgrad: interrupted", err
        if (tmp_path / "run").exists():
            import shutil

            shutil.rmtree(tmp_path / "run")


def test_a_format_1_checkpoint_of_an_older_version_still_resumes(tmp_path, whole):
    """Before generations, the metadata lived in the manifest and the npz held arrays only."""
    from convgrad.files import sha256_file

    run_dir = stopped_at_10(tmp_path)
    path = run_dir / "ckpt-00000010.npz"
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    (run_dir / "ckpt-00000005.npz").unlink()
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    manifest = {**meta, "format": 1, "file": path.name, "sha256": sha256_file(path)}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert run_experiment(tiny(), run_dir, resume=True, progress=False).ok
    assert_same_weights(whole, run_dir)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_parallel_runs_end_with_the_process_that_started_them(tmp_path, how):
    """Killing `convgrad run --jobs 2` (politely or not) leaves no worker training for nobody:
    within seconds both runs' locks are free, and the runs resume from their checkpoints."""
    data = spec_dict(steps=10**7, eval_every=10**6, checkpoint_every=50)
    data["seeds"] = [0, 1]
    (tmp_path / "long.toml").write_text(_toml(data))
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "convgrad", "run", str(tmp_path / "long.toml"), "--quiet",
               "--jobs", "2", "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seeds = [out / "seed-0", out / "seed-1"]
    deadline = time.monotonic() + 120
    while not all(lock_holder(d) for d in seeds):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    workers = {lock_holder(d) for d in seeds}
    assert str(process.pid) not in workers  # each run is written by a worker process
    process.send_signal(how)
    process.communicate(timeout=60)
    if how == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while any(lock_holder(d) for d in seeds):
        assert time.monotonic() < deadline, f"workers still hold {[lock_holder(d) for d in seeds]}"
        time.sleep(0.2)
