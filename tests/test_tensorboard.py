"""TensorBoard output of the lab (``--tensorboard``) and ``convgrad export``: event files read
back with TensorBoard's own EventAccumulator hold metrics.jsonl's values; exported safetensors
and ONNX files reproduce the run's model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

REASON = "the interop tests need convgrad[interop]: pip install 'convgrad[interop]'"
pytest.importorskip("tensorboardX", reason=REASON)
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator", reason=REASON
)

import convgrad as cg  # noqa: E402
from convgrad.cli import main  # noqa: E402
from convgrad.lab.checkpoint import load_checkpoint  # noqa: E402
from convgrad.lab.tensorboard import ENVIRONMENT, filters_image  # noqa: E402

SPEC = """\
name = "syn"
seed = 5
[dataset]
kind = "synthetic"
train = 160
test = 80
height = 12
width = 12
noise = 0.5
[model]
layers = [{type = "conv2d", out_channels = 4, kernel_size = 4, stride = 2, padding = "same"},
          {type = "relu"}, {type = "maxpool", kernel_size = 2, padding = 1},
          {type = "dropout", p = 0.3}, {type = "flatten"}, {type = "linear"}]
[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9
[train]
batch_size = 16
steps = 12
eval_every = 4
eval_train_examples = 48
eval_test_examples = 40
"""
SWEEP = "[sweep]\nkeep_prob = [0.5, 1.0]\n"


def accumulator(folder: Path):
    acc = event_accumulator.EventAccumulator(
        str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def hparams_of(acc) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    values = {}
    for key, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    return values


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_events_match_metrics(folder: Path, run_dir: Path, lr: float) -> None:
    acc = accumulator(folder)
    records = metrics(run_dir)
    for key, tag in (("train_loss", "loss/train"), ("train_acc", "accuracy/train"),
                     ("test_acc", "accuracy/test")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in records]
        np.testing.assert_allclose([e.value for e in events], [r[key] for r in records],
                                   rtol=1e-6)
    lrs = [e.value for e in acc.Scalars("lr")]
    assert len(lrs) == len(records) and lrs == pytest.approx([lr] * len(records))
    images = acc.Tags()["images"]
    assert images == ["filters/0.weight"]
    assert acc.Images(images[0])[-1].width > 0


@pytest.fixture
def no_env(monkeypatch):
    """The --tensorboard flag sets an environment variable: restore it after the test."""
    monkeypatch.setenv(ENVIRONMENT, "0")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One run without TensorBoard output (module-scoped: the export tests only read it)."""
    folder = tmp_path_factory.mktemp("run")
    (folder / "syn.toml").write_text(SPEC)
    assert main(["run", str(folder / "syn.toml"), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def test_run_with_tensorboard_writes_events_beside_metrics(tmp_path, no_env, capsys):
    (tmp_path / "syn.toml").write_text(SPEC + SWEEP)
    out = tmp_path / "runs"
    assert main(["run", str(tmp_path / "syn.toml"), "--out", str(out), "--quiet",
                 "--tensorboard"]) == 0
    for point, keep in (("keep-0.5", 0.5), ("keep-1", 1.0)):
        run_dir = out / point
        assert list(run_dir.glob("events.out.tfevents.*"))
        assert_events_match_metrics(run_dir, run_dir, lr=0.05)
        hparams = hparams_of(accumulator(run_dir))
        assert hparams["keep_prob"] == pytest.approx(keep)
        assert hparams["point"] == point and hparams["seed"] == 5
        assert hparams["optimizer"] == "sgd" and hparams["lr"] == pytest.approx(0.05)


def test_without_the_flag_no_event_files(finished_run):
    assert not list(finished_run.glob("events.out.tfevents.*"))


def test_export_tensorboard_from_metrics(finished_run, tmp_path, capsys):
    assert main(["export", str(finished_run), "--format", "tensorboard",
                 "--out", str(tmp_path / "tb")]) == 0
    assert_events_match_metrics(tmp_path / "tb", finished_run, lr=0.05)
    assert hparams_of(accumulator(tmp_path / "tb"))["name"] == "syn"
    assert main(["export", str(finished_run), "--format", "tensorboard",
                 "--out", str(tmp_path / "tb")]) == 2
    assert "already holds TensorBoard event files" in capsys.readouterr().err


def test_filters_image_tiles_each_filter():
    weight = np.arange(5 * 2 * 3 * 3, dtype=np.float32).reshape(5, 2, 3, 3)
    name, grid = filters_image({"features.0.weight": weight, "x.weight": np.zeros((2, 2))})
    assert name == "features.0.weight"
    assert grid.shape == (2 * 4 + 1, 3 * 4 + 1)  # 3 columns, 2 rows, 1-pixel gaps
    assert grid.min() == 0.0 and grid.max() == 1.0
    assert filters_image({"fc.weight": np.zeros((2, 3))}) is None


def test_export_safetensors_and_onnx_reproduce_the_model(finished_run, tmp_path):
    pytest.importorskip("onnxruntime", reason=REASON)
    import onnxruntime as ort

    from convgrad.interop.safetensors import read_metadata
    from convgrad.lab.models import build_model
    from convgrad.lab.runner import load_run_spec

    weights, graph = tmp_path / "w.safetensors", tmp_path / "m.onnx"
    assert main(["export", str(finished_run), "--format", "safetensors", "--out",
                 str(weights)]) == 0
    assert main(["export", str(finished_run), "--format", "onnx", "--out", str(graph)]) == 0
    metadata = read_metadata(weights)
    assert json.loads(metadata["convgrad_spec"])["name"] == "syn"
    assert metadata["step"] == "12" and metadata["checkpoint"] == "final"
    _, state, _ = load_checkpoint(finished_run)
    spec = load_run_spec(finished_run)
    model = build_model(spec.model, (1, 12, 12), 10)
    cg.load(weights, model=model)
    for key, value in state.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)
    x = np.random.default_rng(0).random((7, 1, 12, 12)).astype(np.float32)
    expected = model.eval()(cg.tensor(x)).data
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5,
                               atol=1e-5)


def test_export_best_needs_the_best_checkpoint(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    records = metrics(run)
    best = max(records, key=lambda r: (r["test_acc"], r["step"]))
    status = main(["export", str(run), "--format", "safetensors", "--which", "best"])
    if best["step"] == records[-1]["step"]:
        assert status == 0 and (run / "model-best.safetensors").is_file()
    records[0]["test_acc"] = 2.0  # make the first evaluation the best one
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["export", str(run), "--format", "onnx", "--which", "best"]) == 2
    assert f"the best evaluation is at step {records[0]['step']}" in capsys.readouterr().err


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "safetensors"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a run directory (no spec.json)" in err
    assert main(["export", str(tmp_path), "--format", "tensorboard"]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_a_resumed_run_keeps_each_step_once(tmp_path, monkeypatch):
    from convgrad.lab.runner import run_experiment
    from convgrad.lab.spec import resolve_spec
    from convgrad.lab.tensorboard import TensorBoardWriter

    monkeypatch.setenv(ENVIRONMENT, "1")
    (tmp_path / "syn.toml").write_text(SPEC.replace("eval_every = 4", "eval_every = 2\n"
                                                    "checkpoint_every = 4"))
    spec = resolve_spec(str(tmp_path / "syn.toml"))
    run_dir = tmp_path / "run"
    assert run_experiment(spec, run_dir, progress=False, stop_after=4).status == "stopped"
    # as if killed after logging step 6 but before the checkpoint at step 8
    with TensorBoardWriter(run_dir, spec, start_step=4) as stale:
        stale.writer.add_scalar("accuracy/test", 123.0, 6)
    assert run_experiment(spec, run_dir, resume=True, progress=False).ok
    events = accumulator(run_dir).Scalars("accuracy/test")
    assert [e.step for e in events] == [2, 4, 6, 8, 10, 12]
    assert 123.0 not in [e.value for e in events]
    assert_events_match_metrics(run_dir, run_dir, lr=0.05)
