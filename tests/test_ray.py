"""The lab on a local Ray cluster (127.0.0.1, 2 CPUs, no dashboard), shared by the session.

Runs through Ray must equal the same runs without Ray, bit for bit, also when the worker running
one is SIGKILLed (found by its process title, ``ray::convgrad:<run>``) or the driver is
interrupted and the command is repeated with ``--resume``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs Ray: pip install 'convgrad[ray]'")
psutil = pytest.importorskip("psutil", reason="needs psutil (installed with 'convgrad[ray]')")

from convgrad.cli import main  # noqa: E402
from convgrad.lab import distributed  # noqa: E402
from convgrad.lab.checkpoint import MANIFEST, load_checkpoint  # noqa: E402
from convgrad.lab.reproduce import _run_task, tasks_for  # noqa: E402
from convgrad.lab.spec import load_spec  # noqa: E402

pytestmark = pytest.mark.ray
SRC = Path(__file__).resolve().parents[1] / "src"
TIMING = {"wall_time", "train_time", "samples_per_s"}


@pytest.fixture(scope="session")
def ray_cluster():
    """One local cluster for every Ray test of the session; the CLI reuses this connection."""
    with distributed.connect("local", num_cpus=2) as connected:
        yield connected.get_runtime_context().gcs_address


def write_spec(folder: Path, name: str, steps: int, *, every: int = 10, sweep: bool = True,
               size: int = 12, channels: int = 4) -> Path:
    """A synthetic experiment small enough for tests; with ``sweep``, two runs."""
    sweep_table = "[sweep]\nkeep_prob = [0.5, 1.0]\n" if sweep else ""
    text = f"""
name = "{name}"
seed = 3
[dataset]
kind = "synthetic"
train = 256
test = 128
height = {size}
width = {size}
[model]
layers = [{{type = "conv2d", out_channels = {channels}, kernel_size = 3}}, {{type = "relu"}},
          {{type = "maxpool"}}, {{type = "flatten"}}, {{type = "dropout", p = 0.5}},
          {{type = "linear"}}]
[optimizer]
name = "adam"
lr = 0.01
[train]
batch_size = 16
steps = {steps}
eval_every = {every}
eval_train_examples = 64
eval_test_examples = 64
{sweep_table}"""
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def run_locally(spec_path: Path, out: Path) -> list[Path]:
    """The same runs without Ray: one after another in this process, 1 thread each."""
    tasks = tasks_for(load_spec(spec_path), out)
    for task in tasks:
        payload = {"spec": task.spec.model_dump(mode="json"), "run_dir": str(task.run_dir),
                   "resume": False, "budget": "custom"}
        assert _run_task(payload, 1, False)["status"] == "completed"
    return [task.run_dir for task in tasks]


def assert_same_run(ours: Path, reference: Path) -> None:
    """result.json and metrics.jsonl equal up to timings; final weights and optimizer state
    equal bit for bit."""
    result = json.loads((ours / "result.json").read_text())
    expected = json.loads((reference / "result.json").read_text())
    assert {k: v for k, v in result.items() if k not in TIMING} == {
        k: v for k, v in expected.items() if k not in TIMING}

    def metrics(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]

    assert metrics(ours) == metrics(reference)
    manifest, weights, optimizer = load_checkpoint(ours)
    manifest_ref, weights_ref, optimizer_ref = load_checkpoint(reference)
    assert manifest["step"] == manifest_ref["step"]
    assert (manifest["blas_threads"], manifest["convgrad_threads"]) == (
        manifest_ref["blas_threads"], manifest_ref["convgrad_threads"])
    assert weights.keys() == weights_ref.keys()
    for key in weights:
        np.testing.assert_array_equal(weights[key], weights_ref[key], err_msg=key)
    assert optimizer["param_groups"] == optimizer_ref["param_groups"]
    assert optimizer["state"].keys() == optimizer_ref["state"].keys()
    for index, state_ref in optimizer_ref["state"].items():
        for key in state_ref:
            np.testing.assert_array_equal(optimizer["state"][index][key], state_ref[key],
                                          err_msg=f"{index}.{key}")


def test_two_runs_through_ray_equal_the_same_runs_without_ray(ray_cluster, tmp_path, capsys):
    spec = write_spec(tmp_path, "pair", steps=30)
    references = run_locally(spec, tmp_path / "local")
    status = main(["run", str(spec), "--ray", "local", "--out", str(tmp_path / "ray")])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "[1/2]" in printed and "[2/2]" in printed  # one line per run
    for reference in references:
        assert_same_run(tmp_path / "ray" / reference.name, reference)


def find_worker(label: str) -> psutil.Process | None:
    """The Ray worker process whose title names the run (``ray::convgrad:<label>``)."""
    title = "ray::" + distributed.task_name(label)
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].strip() == title:
            return process
    return None


def checkpoint_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / MANIFEST).read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_worker_is_retried_and_resumes_to_the_uninterrupted_result(ray_cluster, tmp_path):
    spec_path = write_spec(tmp_path, "long", steps=600, every=10, sweep=False, size=20,
                           channels=8)
    reference = run_locally(spec_path, tmp_path / "local")[0]
    tasks = tasks_for(load_spec(spec_path), tmp_path / "ray")
    results: list = []
    driver = threading.Thread(
        target=lambda: results.extend(distributed.run_tasks_on_ray(tasks, max_retries=2)))
    driver.start()
    run_dir, victim = tasks[0].run_dir, None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim is None:
        worker = find_worker("long")
        if worker is not None and 30 <= checkpoint_step(run_dir) < 400:
            victim = worker.pid
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.02)
    driver.join(timeout=300)
    assert victim is not None, "never saw the worker between checkpoints 30 and 400"
    assert not driver.is_alive()
    (result,) = results
    assert result["status"] == "completed", result
    assert result["worker_pid"] != victim
    assert result["resumed_from"] is not None and result["resumed_from"] >= 30
    assert_same_run(run_dir, reference)


def test_interrupted_driver_leaves_resumable_runs_that_resume_completes(
    ray_cluster, tmp_path, capsys
):
    spec = write_spec(tmp_path, "driver", steps=500, every=10, size=20, channels=8)
    references = run_locally(spec, tmp_path / "local")
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "convgrad", "run", str(spec), "--ray", ray_cluster,
               "--out", str(out)]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    run_dirs = [out / reference.name for reference in references]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and driver.poll() is None:
        if all(20 <= checkpoint_step(run_dir) for run_dir in run_dirs):
            break
        time.sleep(0.05)
    assert driver.poll() is None, driver.communicate()
    driver.send_signal(signal.SIGINT)
    stdout, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stdout + stderr
    assert "--resume" in stderr
    unfinished = [d for d in run_dirs if not (d / "result.json").exists()]
    assert unfinished, "the runs ended before the interrupt"
    for run_dir in run_dirs:
        manifest, _, _ = load_checkpoint(run_dir)  # a complete, checksummed checkpoint
        assert manifest["step"] >= 20
    assert main(["run", str(spec), "--ray", ray_cluster, "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["run", str(spec), "--ray", ray_cluster, "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resumed at step" in printed
    for run_dir, reference in zip(run_dirs, references, strict=True):
        assert_same_run(run_dir, reference)


def test_failed_run_makes_the_driver_exit_non_zero_naming_it(ray_cluster, tmp_path, capsys):
    spec = write_spec(tmp_path, "broken", steps=20, sweep=False)
    out = tmp_path / "ray"
    out.mkdir()
    (out / "ckpt-00000010.npz").write_bytes(b"not an npz")
    (out / MANIFEST).write_text(json.dumps({"step": 10, "file": "ckpt-00000010.npz"}))
    status = main(["run", str(spec), "--ray", "local", "--out", str(out), "--resume"])
    captured = capsys.readouterr()
    assert status == 1
    assert "broken" in captured.err and "failed" in captured.err


def test_unreachable_address_fails_within_the_timeout(ray_cluster, tmp_path, capsys):
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    spec = write_spec(tmp_path, "nowhere", steps=10, sweep=False)
    # a fresh process: this one is already connected to the fixture's cluster
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "convgrad", "run", str(spec), "--ray", f"ray://127.0.0.1:{port}",
         "--out", str(tmp_path / "out")],
        env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert time.monotonic() - started < 60
    (line,) = completed.stderr.strip().splitlines()
    assert f"cannot reach the Ray cluster at 'ray://127.0.0.1:{port}'" in line


def test_connect_refuses_a_malformed_address():
    from convgrad.lab.distributed import ClusterError, parse_address

    assert parse_address("ray://10.0.0.5:10001") == ("client", "10.0.0.5", 10001)
    assert parse_address("127.0.0.1:6379") == ("gcs", "127.0.0.1", 6379)
    assert parse_address("auto") == ("auto", None, None)
    with pytest.raises(ClusterError, match="expected 'local', 'auto'.*received 'somewhere'"):
        parse_address("somewhere")
    with pytest.raises(ClusterError, match="received 'ray://host'"):
        parse_address("ray://host")


def test_reproduce_on_ray_writes_the_run_directories_and_the_report(ray_cluster, tmp_path, capsys):
    storage = tmp_path / "shared"
    storage.mkdir()
    status = main(["reproduce", "--budget", "quick", "--only", "one-conv", "--ray", "local",
                   "--storage", str(storage), "--quiet"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "[1/1] one-conv" in printed
    result = json.loads((storage / "one-conv" / "result.json").read_text())
    assert result["status"] == "completed" and result["budget"] == "quick"
    report = (storage / "report.md").read_text()
    assert "one-conv" in report and "--ray local" in report
    assert (storage / "report.html").is_file()
