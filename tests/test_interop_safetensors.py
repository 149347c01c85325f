"""cg.save / cg.load through safetensors: round trips, metadata, loading into the PyTorch twin,
and one-line errors naming the file and the fault for truncated, corrupt and mismatched files;
the optional-extra message when the library is missing."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REASON = "the interop tests need convgrad[interop]: pip install 'convgrad[interop]'"
safetensors_numpy = pytest.importorskip("safetensors.numpy", reason=REASON)

import convgrad as cg  # noqa: E402
from convgrad import nn  # noqa: E402
from convgrad.errors import DtypeError, ShapeError  # noqa: E402
from convgrad.interop import InteropError  # noqa: E402
from convgrad.interop.common import MissingExtraError  # noqa: E402
from convgrad.interop.safetensors import read_metadata  # noqa: E402
from convgrad.lab.datasets import dataset_geometry  # noqa: E402
from convgrad.lab.models import build_model  # noqa: E402
from convgrad.lab.spec import resolve_spec  # noqa: E402

SPECS = sorted(glob.glob(str(Path(cg.__file__).parent / "lab" / "specs" / "*.toml")))


def small_model() -> nn.Module:
    cg.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(3 * 3 * 3, 4))


def test_round_trip_of_a_module_with_metadata(tmp_path):
    model = small_model()
    path = cg.save(model, tmp_path / "w.safetensors", metadata={"note": "hello"})
    arrays = cg.load(path)
    assert sorted(arrays) == sorted(model.state_dict())  # safetensors orders by dtype, name
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(arrays[key], value)
        assert arrays[key].dtype == value.dtype
    metadata = read_metadata(path)
    assert metadata == {"convgrad_version": cg.__version__, "note": "hello"}
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file


def test_load_into_a_model_and_dicts_of_any_arrays(tmp_path):
    model, other = small_model(), small_model()
    for param in other.parameters():
        param.data[...] = 0
    cg.save(model.state_dict(), tmp_path / "w.safetensors")
    cg.load(tmp_path / "w.safetensors", model=other)
    x = cg.tensor(np.random.default_rng(0).random((2, 1, 6, 6)).astype(np.float32))
    np.testing.assert_array_equal(model(x).data, other(x).data)
    tensors = {"a": cg.tensor(np.arange(3.0)), "b": np.ones((2, 2), np.int64)}
    loaded = cg.load(cg.save(tensors, tmp_path / "d.safetensors"))
    assert loaded["b"].dtype == np.int64 and loaded["a"].dtype == np.float64


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.rsplit("/", 1)[-1])
def test_shipped_models_load_into_the_torch_twin_with_equal_outputs(path, tmp_path):
    torch = pytest.importorskip("torch", reason=REASON)
    from safetensors.torch import load_file

    from convgrad.interop.torch import to_torch

    spec = resolve_spec(path)
    input_shape, classes = dataset_geometry(spec.dataset)
    cg.manual_seed(0)
    model = build_model(spec.model, input_shape, classes).eval()
    file = cg.save(model, tmp_path / "m.safetensors",
                   metadata={"convgrad_spec": json.dumps(spec.model_dump(mode="json"))})
    cg.manual_seed(1)  # a differently initialised twin: the weights must come from the file
    twin = to_torch(build_model(spec.model, input_shape, classes)).eval()
    twin.load_state_dict(load_file(str(file)))
    x = np.random.default_rng(0).random((2, *input_shape)).astype(np.float32)
    expected = model(cg.tensor(x)).data
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(twin(torch.tensor(x)).detach().numpy(), expected,
                               rtol=1e-5, atol=1e-5 * scale)
    assert json.loads(read_metadata(file)["convgrad_spec"])["name"] == spec.name


def test_a_file_written_by_torch_loads(tmp_path):
    torch = pytest.importorskip("torch", reason=REASON)
    from safetensors.torch import save_file

    twin = torch.nn.Sequential(torch.nn.Linear(3, 2))
    save_file(twin.state_dict(), str(tmp_path / "t.safetensors"))
    model = nn.Sequential(nn.Linear(3, 2))
    cg.load(tmp_path / "t.safetensors", model=model)
    np.testing.assert_array_equal(model[0].weight.data, twin[0].weight.detach().numpy())


def test_truncated_and_foreign_files_name_the_file(tmp_path):
    path = cg.save(small_model(), tmp_path / "w.safetensors")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InteropError, match=r"truncated\.safetensors: not a valid safetensors file"):
        cg.load(truncated)
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(b"PK\x03\x04 this is a zip file, not safetensors")
    with pytest.raises(InteropError, match=r"foreign\.safetensors: not a valid safetensors file"):
        cg.load(foreign)
    with pytest.raises(InteropError, match=r"missing\.safetensors: no such file"):
        cg.load(tmp_path / "missing.safetensors")
    with pytest.raises(InteropError) as info:
        cg.load(truncated)
    assert "\n" not in str(info.value)


def test_wrong_shape_dtype_or_keys_name_file_and_key(tmp_path):
    model = small_model()
    state = model.state_dict()
    state["4.weight"] = np.zeros((4, 5), np.float32)
    cg.save(state, tmp_path / "shape.safetensors")
    with pytest.raises(ShapeError, match=r"shape\.safetensors: 4\.weight has shape \(4, 5\), "
                                         r"the model expects \(4, 27\)"):
        cg.load(tmp_path / "shape.safetensors", model=model)
    state = model.state_dict()
    state["0.bias"] = state["0.bias"].astype(np.float16)
    cg.save(state, tmp_path / "dtype.safetensors")
    with pytest.raises(DtypeError, match=r"dtype\.safetensors: 0\.bias has dtype float16, the "
                                         r"model expects float32"):
        cg.load(tmp_path / "dtype.safetensors", model=model)
    state = model.state_dict()
    state.pop("0.bias")
    cg.save(state, tmp_path / "keys.safetensors")
    with pytest.raises(InteropError, match=r"keys\.safetensors: keys do not match the model: "
                                           r"missing \['0\.bias'\]"):
        cg.load(tmp_path / "keys.safetensors", model=model)


def test_bad_metadata_is_refused(tmp_path):
    with pytest.raises(InteropError, match="metadata must map str to str"):
        cg.save(small_model(), tmp_path / "w.safetensors", metadata={"step": 3})


def test_without_the_extra_the_error_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'convgrad\[interop\]'"):
        cg.save(small_model(), tmp_path / "w.safetensors")
