"""convgrad.interop.onnx.export: onnx.checker accepts every file and onnxruntime's outputs equal
convgrad's (float32, 1e-5 relative to the output's scale) for generated models, every shipped
experiment's network and the modules other branches add; dynamic batch; Dropout vanishes."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

REASON = "the interop tests need convgrad[interop]: pip install 'convgrad[interop]'"
onnx = pytest.importorskip("onnx", reason=REASON)
ort = pytest.importorskip("onnxruntime", reason=REASON)

import convgrad as cg  # noqa: E402
from convgrad import nn  # noqa: E402
from convgrad.interop import InteropError  # noqa: E402
from convgrad.interop.onnx import UnsupportedModuleError, export  # noqa: E402
from convgrad.lab.datasets import dataset_geometry  # noqa: E402
from convgrad.lab.models import SplitShared, build_model  # noqa: E402
from convgrad.lab.spec import resolve_spec  # noqa: E402

SPECS = sorted(glob.glob(str(Path(cg.__file__).parent / "lab" / "specs" / "*.toml")))


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def check(model, shape, tmp_path, batches=(3,), opset=17, name="model.onnx"):
    """Export on batch 1, run onnxruntime on other batch sizes, compare with convgrad."""
    rng = np.random.default_rng(0)
    path = tmp_path / name
    proto = export(model, rng.random((1, *shape[1:])).astype(np.float32), path, opset=opset)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    model.eval()
    for batch in batches:
        x = rng.standard_normal((batch, *shape[1:])).astype(np.float32)
        expected = model(cg.tensor(x)).data
        got = run_onnx(path, x)
        assert got.shape == expected.shape
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
    return proto


def ops(proto) -> list[str]:
    return [node.op_type for node in proto.graph.node]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.rsplit("/", 1)[-1])
def test_shipped_experiment_models(path, tmp_path):
    spec = resolve_spec(path)
    input_shape, classes = dataset_geometry(spec.dataset)
    cg.manual_seed(0)
    model = build_model(spec.model, input_shape, classes)
    proto = check(model, (1, *input_shape), tmp_path, batches=(2, 5))
    assert "Dropout" not in ops(proto)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_digit_sum_tower_is_one_set_of_initialisers_used_twice(tmp_path):
    tower = nn.Sequential(nn.Conv2d(1, 3, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(3 * 4 * 4, 6), nn.ReLU())
    model = SplitShared(tower, nn.Sequential(nn.Dropout(0.5), nn.Linear(12, 5)))
    proto = check(model, (1, 1, 16, 8), tmp_path, batches=(1, 4))
    names = [init.name for init in proto.graph.initializer if init.dims and len(init.dims) > 1]
    assert len(names) == len(set(names)) == 3  # conv weight, tower linear, head linear
    conv_weight = [n.input[1] for n in proto.graph.node if n.op_type == "Conv"]
    assert len(conv_weight) == 2 and conv_weight[0] == conv_weight[1]
    assert "Dropout" not in ops(proto)


@pytest.mark.parametrize("size", [8, 9])
def test_tf_same_padding_even_kernel_stride_two_is_asymmetric(size, tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 3, 4, stride=2, padding="same"), nn.Tanh())
    proto = check(model, (1, 2, size, size + 1), tmp_path)
    pads = [list(a.ints) for n in proto.graph.node for a in n.attribute if a.name == "pads"][0]
    # total = (ceil(n/2) - 1) * 2 + 4 - n: 2 for n = 8 (1, 1) and 3 for n = 9 (1, 2)
    expected_h = (1, 1) if size == 8 else (1, 2)
    expected_w = (1, 2) if size == 8 else (1, 1)
    assert pads == [expected_h[0], expected_w[0], expected_h[1], expected_w[1]]


def test_generated_models_with_pooling_padding_1d_and_flatten(tmp_path):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1, groups=1), nn.Sigmoid(),
        nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2, 1, 1), nn.Flatten(), nn.Linear(4 * 6 * 6, 6),
    )
    check(model, (1, 3, 17, 17), tmp_path, batches=(1, 2))
    model_1d = nn.Sequential(nn.Conv1d(2, 4, 4, stride=2, padding="same", groups=2), nn.ReLU(),
                             nn.MaxPool1d(2, 2, 1), nn.AvgPool1d(3, 1, 1), nn.Flatten(0, 1))
    check(model_1d, (1, 2, 11), tmp_path, batches=(1,))
    model_3d = nn.Sequential(nn.Linear(6, 4))  # Linear on (N, L, features): MatMul + Add
    check(model_3d, (1, 5, 6), tmp_path, batches=(2,))


OPTIONAL = {
    "BatchNorm2d": lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU()),
    "BatchNorm1d": lambda: nn.Sequential(nn.Flatten(), nn.Linear(2 * 7 * 7, 5),
                                         nn.BatchNorm1d(5)),
    "ConvTranspose2d": lambda: nn.Sequential(
        nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2)),
    "ConvTranspose1d": lambda: nn.Sequential(nn.Flatten(2, 3),
                                             nn.ConvTranspose1d(2, 3, 4, stride=3, padding=2)),
    "AdaptiveAvgPool2d": lambda: nn.Sequential(nn.AdaptiveAvgPool2d((3, 2))),
    "AdaptiveMaxPool2d": lambda: nn.Sequential(nn.AdaptiveMaxPool2d(7)),
    "LeakyReLU": lambda: nn.Sequential(nn.LeakyReLU(0.3)),
    "ELU": lambda: nn.Sequential(nn.ELU(0.5)),
    "GELU": lambda: nn.Sequential(nn.GELU(), nn.GELU(approximate="tanh")),
    "Softmax": lambda: nn.Sequential(nn.Softmax(dim=1)),
    "LogSoftmax": lambda: nn.Sequential(nn.LogSoftmax(dim=-1)),
}


def randomise_state(model) -> None:
    """Random parameters and positive running variances through load_state_dict."""
    rng = np.random.default_rng(4)
    state = model.state_dict()
    for key, value in state.items():
        value = np.asarray(value)
        if value.dtype.kind == "f":
            state[key] = (rng.random(value.shape) + 0.5 if "var" in key
                          else rng.standard_normal(value.shape)).astype(value.dtype)
    model.load_state_dict(state)


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_modules_added_by_the_engine(name, tmp_path):
    if getattr(nn, name, None) is None:
        pytest.skip(f"convgrad.nn.{name} does not exist in this version")
    model = OPTIONAL[name]()
    randomise_state(model)
    proto = check(model, (1, 2, 7, 7), tmp_path, batches=(1, 3))
    if name == "BatchNorm2d":
        assert "BatchNormalization" in ops(proto)


def test_opset_18_reduce_axes_as_inputs(tmp_path):
    if getattr(nn, "AdaptiveAvgPool2d", None) is None:
        pytest.skip("convgrad.nn.AdaptiveAvgPool2d does not exist in this version")
    check(nn.Sequential(nn.AdaptiveAvgPool2d((2, 3))), (1, 2, 7, 7), tmp_path, opset=18)


def test_static_batch_when_asked(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    proto = export(model, np.zeros((3, 2, 2), np.float32), tmp_path / "m.onnx",
                   dynamic_batch=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3


class Custom(nn.Module):
    def forward(self, input):
        return input


def test_unsupported_module_and_opset_errors(tmp_path):
    model = nn.Sequential(nn.ReLU(), nn.Sequential(Custom()))
    with pytest.raises(UnsupportedModuleError, match=r"^cannot export Custom at '1\.0' to ONNX"):
        export(model, np.zeros((1, 2), np.float32), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(InteropError, match="expected opset >= 13, received opset=11"):
        export(nn.ReLU(), np.zeros((1, 2), np.float32), tmp_path / "m.onnx", opset=11)


def test_the_model_keeps_its_training_mode(tmp_path):
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 2))
    export(model, np.zeros((1, 3), np.float32), tmp_path / "m.onnx")
    assert model.training


# ---------------------------------------------------------------------- the lab's model parts
STEM_SPEC = (Path(__file__).resolve().parents[1] / "benchmarks" / "digit_sum_readings"
             / "digit-sum-fresh-stem.toml")


def confident_logits(k: int, rng) -> np.ndarray:
    """Certain digits (logit gaps of 1000): the large sums' rows of the gather table start
    with -inf and their other terms are far below float32's exp range."""
    digits = np.array([[k - 1, k - 1], [0, 0], [k - 1, 0], [1, 2], [k - 1, k - 2]])
    logits = rng.standard_normal((len(digits), 2 * k))
    logits[np.arange(len(digits)), digits[:, 0]] += 1000.0
    logits[np.arange(len(digits)), k + digits[:, 1]] += 1000.0
    return logits.astype(np.float32)


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("k", [3, 10])
def test_sum_distribution_matches_convgrad_also_for_confident_digits(k, opset, tmp_path):
    from convgrad.lab.models import SumDistribution

    model = SumDistribution(k)
    proto = check(model, (1, 2 * k), tmp_path, batches=(1, 6), opset=opset)
    assert {"Gather", "ConstantOfShape", "LogSoftmax", "ReduceMax"} <= set(ops(proto))
    assert proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 2 * k - 1
    x = confident_logits(k, np.random.default_rng(1))
    got = run_onnx(tmp_path / "model.onnx", x)
    expected = model(cg.tensor(x)).data
    assert np.isfinite(got).all() and np.isfinite(expected).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[0, 2 * k - 2], 0.0, atol=1e-5)  # (K-1, K-1) is certain


def test_split_shared_stem_runs_before_the_split(tmp_path):
    stem = nn.Sequential(nn.Conv2d(1, 3, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2))
    tower = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4, 5), nn.Tanh())
    model = SplitShared(tower, nn.Linear(10, 4), axis="height", parts=2, stem=stem)
    randomise_state(model)
    proto = check(model, (1, 1, 8, 8), tmp_path, batches=(1, 3))
    conv = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(conv) == 1 and conv[0].input[0] == "input"  # once, on the whole image
    assert ops(proto).count("Gemm") == 3  # the tower twice, the head once


def test_the_stem_reading_of_digit_sum_exports(tmp_path):
    spec = resolve_spec(str(STEM_SPEC))
    input_shape, classes = dataset_geometry(spec.dataset)
    cg.manual_seed(0)
    model = build_model(spec.model, input_shape, classes)
    assert model.stem is not None
    check(model, (1, *input_shape), tmp_path, batches=(2,))
