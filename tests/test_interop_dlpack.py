"""DLPack: convgrad tensors and NumPy / PyTorch arrays are views of one memory (no copy); the
one-line error when the interop extra is missing."""

from __future__ import annotations

import numpy as np
import pytest

import convgrad as cg
from convgrad.interop import InteropError


def test_numpy_view_of_a_tensor_shares_memory():
    t = cg.tensor(np.arange(12.0).reshape(3, 4))
    view = np.from_dlpack(t)
    view[1, 2] = -5.0
    assert t.data[1, 2] == -5.0
    t.data[0, 0] = 9.0
    assert view[0, 0] == 9.0
    assert t.__dlpack_device__() == (1, 0)


def test_strided_tensors_keep_their_layout():
    base = np.arange(24.0).reshape(2, 3, 4).transpose(0, 2, 1)  # not C-contiguous
    t = cg.Tensor._wrap(base)
    view = np.from_dlpack(t)
    np.testing.assert_array_equal(view, base)
    view[1, 3, 2] = 100.0
    assert base[1, 3, 2] == 100.0


def test_from_dlpack_of_numpy_and_errors():
    array = np.zeros((2, 3), np.float32)
    t = cg.from_dlpack(array)
    t.data[1, 1] = 4.0
    assert array[1, 1] == 4.0 and not t.requires_grad
    with pytest.raises(InteropError, match=r"from_dlpack: expected an object with __dlpack__, "
                                           r"received list"):
        cg.from_dlpack([1, 2])


def test_torch_views_both_ways():
    torch = pytest.importorskip(
        "torch", reason="the interop tests need convgrad[interop]: pip install 'convgrad[interop]'"
    )
    t = cg.tensor(np.zeros((2, 2), np.float32))
    tt = torch.from_dlpack(t)
    tt[0, 1] = 3.0  # written through torch, read through convgrad
    assert t.data[0, 1] == 3.0
    source = torch.arange(6, dtype=torch.float64)
    c = cg.from_dlpack(source)
    c.data[2] = -1.0  # written through convgrad, read through torch
    assert source[2].item() == -1.0
    with pytest.raises(InteropError, match="from_dlpack: cannot import Tensor: .*detach"):
        cg.from_dlpack(torch.zeros(2, requires_grad=True))


@pytest.mark.parametrize("module, package", [("convgrad.interop.onnx", "onnx"),
                                             ("convgrad.interop.torch", "torch")])
def test_without_the_extra_importing_a_converter_names_it(module, package, monkeypatch):
    import importlib
    import sys

    from convgrad.interop.common import MissingExtraError

    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    message = (rf"^{module} needs the optional package '{package}': "
               r"pip install 'convgrad\[interop\]'$")
    with pytest.raises(MissingExtraError, match=message):
        importlib.import_module(module)


def test_the_core_lab_and_cli_never_import_the_extra():
    import subprocess
    import sys

    code = ("import sys, convgrad, convgrad.lab.runner, convgrad.cli\n"
            "convgrad.cli.build_parser()\n"
            "heavy = ('torch', 'onnx', 'onnxruntime', 'safetensors', 'tensorboardX',\n"
            "         'tensorboard')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
