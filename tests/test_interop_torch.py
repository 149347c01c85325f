"""convgrad.interop.to_torch / from_torch: every convgrad.nn class, shared towers, the shipped
experiments' networks; equal outputs, gradients and optimizer trajectories; state_dict of torch
tensors into convgrad; one-line errors for what cannot be converted."""

from __future__ import annotations

import glob
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="the interop tests need convgrad[interop]: pip install 'convgrad[interop]'"
)

import convgrad as cg  # noqa: E402
from convgrad import nn  # noqa: E402
from convgrad.interop.torch import (  # noqa: E402
    SameConv2d,
    TorchSplitShared,
    UnsupportedModuleError,
    from_torch,
    supported_classes,
    to_torch,
)
from convgrad.lab.datasets import dataset_geometry  # noqa: E402
from convgrad.lab.models import SplitShared, build_model  # noqa: E402
from convgrad.lab.spec import resolve_spec  # noqa: E402

torch.set_num_threads(1)
SPECS = sorted(glob.glob(str(
    __import__("pathlib").Path(cg.__file__).parent / "lab" / "specs" / "*.toml")))

# One example per class exported by convgrad.nn, built with PyTorch's argument names, and an
# input shape. Classes that other branches add are listed too; they are skipped until present.
FACTORIES = {
    "Linear": (lambda: nn.Linear(5, 3), (4, 5)),
    "Conv1d": (lambda: nn.Conv1d(3, 4, 4, stride=2, padding="same"), (2, 3, 9)),
    "Conv2d": (lambda: nn.Conv2d(2, 4, (4, 3), stride=2, padding="same", dilation=(1, 2)),
               (2, 2, 9, 8)),
    "ConvTranspose1d": (lambda: nn.ConvTranspose1d(3, 4, 3, stride=2, padding=1,
                                                   output_padding=1), (2, 3, 7)),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1,
                                                   output_padding=1, groups=2), (2, 4, 5, 6)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(3), (6, 3, 5)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3, eps=1e-3, momentum=0.2), (4, 3, 5, 5)),
    "MaxPool1d": (lambda: nn.MaxPool1d(3, 2, 1), (2, 3, 10)),
    "MaxPool2d": (lambda: nn.MaxPool2d(3, 2, 1), (2, 3, 9, 8)),
    "AvgPool1d": (lambda: nn.AvgPool1d(3, 2, 1), (2, 3, 10)),
    "AvgPool2d": (lambda: nn.AvgPool2d(2, 2, 1), (2, 3, 9, 8)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
    "AdaptiveMaxPool2d": (lambda: nn.AdaptiveMaxPool2d(3), (2, 3, 7, 8)),
    "ReLU": (lambda: nn.ReLU(), (3, 7)),
    "Sigmoid": (lambda: nn.Sigmoid(), (3, 7)),
    "Tanh": (lambda: nn.Tanh(), (3, 7)),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), (3, 7)),
    "ELU": (lambda: nn.ELU(0.7), (3, 7)),
    "GELU": (lambda: nn.GELU(approximate="tanh"), (3, 7)),
    "Softmax": (lambda: nn.Softmax(dim=1), (3, 4, 5)),
    "LogSoftmax": (lambda: nn.LogSoftmax(dim=-1), (3, 4, 5)),
    "Identity": (lambda: nn.Identity(), (3, 7)),
    "Dropout": (lambda: nn.Dropout(0.3), (3, 7)),
    "Flatten": (lambda: nn.Flatten(0, 1), (3, 4, 5)),
    "Sequential": (lambda: nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)), (3, 5)),
    "ModuleList": (lambda: nn.ModuleList([nn.Linear(5, 4), nn.ReLU()]), None),
    "CrossEntropyLoss": (lambda: nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=2), None),
}
RANDOM_IN_TRAINING = {"Dropout"}


def module_classes() -> list[str]:
    """Every Module subclass convgrad.nn exports (Module itself excluded)."""
    return sorted(
        name for name in nn.__all__
        if isinstance(getattr(nn, name), type) and issubclass(getattr(nn, name), nn.Module)
        and getattr(nn, name) is not nn.Module
    )


def randomise(module) -> None:
    """Non-trivial values in every torch parameter and buffer (positive variances)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype))
        for name, buffer in module.named_buffers():
            if buffer.dtype.is_floating_point:
                values = torch.rand(buffer.shape, generator=generator, dtype=buffer.dtype)
                buffer.copy_(values + 0.5 if "var" in name else values - 0.5)


def as_numpy(t) -> np.ndarray:
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.data


def compare(model, twin, shape, dtype=np.float64, training=False, tol=1e-10):
    """Outputs and the gradients of (output * upstream).sum() for input and parameters."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    model.train(training)
    twin.train(training)
    xc = cg.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    yc, yt = model(xc), twin(xt)
    np.testing.assert_allclose(as_numpy(yc), as_numpy(yt), rtol=tol, atol=tol)
    upstream = rng.standard_normal(yc.shape).astype(dtype)
    (yc * cg.tensor(upstream)).sum().backward()
    (yt * torch.tensor(upstream)).sum().backward()
    np.testing.assert_allclose(xc.grad.data, xt.grad.numpy(), rtol=tol, atol=tol)
    torch_params = dict(twin.named_parameters())
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad.data, torch_params[name].grad.numpy(),
                                   rtol=tol, atol=tol, err_msg=name)
    torch_state = twin.state_dict()
    for name, value in model.state_dict().items():  # buffers updated by a training forward
        np.testing.assert_allclose(np.asarray(value), torch_state[name].numpy(),
                                   rtol=tol, atol=tol, err_msg=name)


def test_every_exported_module_class_has_a_factory_and_a_converter():
    classes = module_classes()
    assert {"Conv2d", "Linear", "Sequential", "ModuleList", "MaxPool2d"} <= set(classes)
    missing = [name for name in classes if name not in FACTORIES]
    assert not missing, f"add a FACTORIES entry (and a converter) for {missing}"
    unsupported = [name for name in classes if name not in supported_classes()]
    assert not unsupported, f"convgrad.interop.torch has no converter for {unsupported}"


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_each_class_round_trips_with_equal_outputs_gradients_and_state(name):
    if getattr(nn, name, None) is None:
        pytest.skip(f"convgrad.nn.{name} does not exist in this version")
    factory, shape = FACTORIES[name]
    twin = to_torch(factory()).double()
    assert type(twin).__name__ == name or isinstance(twin, SameConv2d | torch.nn.Conv1d)
    randomise(twin)
    model = from_torch(twin)
    assert type(model) is getattr(nn, name)
    assert list(model.state_dict()) == list(twin.state_dict())
    back = to_torch(model)
    for key, value in twin.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    if shape is None:  # ModuleList has no forward; a loss takes two inputs (tested below)
        return
    compare(model, twin, shape)
    if name not in RANDOM_IN_TRAINING:
        model, twin = from_torch(twin), twin  # fresh gradients; twin's grads reset below
        twin.zero_grad()
        compare(model, twin, shape, training=True)


def test_float32_outputs_agree_to_1e_5():
    model = nn.Sequential(nn.Conv2d(3, 8, 4, stride=2, padding="same"), nn.ReLU(),
                          nn.AvgPool2d(3, 2, 1), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    twin = to_torch(model)
    compare(model, twin, (4, 3, 15, 15), dtype=np.float32, tol=1e-5)


def test_same_padding_with_stride_becomes_the_tf_same_twin():
    model = nn.Conv2d(1, 2, 4, stride=2, padding="same")
    twin = to_torch(model)
    assert isinstance(twin, SameConv2d)
    for size in (8, 9):  # even and odd inputs: different asymmetric pads
        compare(model.double(), twin.double(), (1, 1, size, size + 1))
    assert from_torch(twin).padding == "same"


def shared_model():
    tower = nn.Sequential(nn.Conv2d(1, 3, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(3 * 4 * 4, 6), nn.Tanh())
    head = nn.Sequential(nn.Dropout(0.4), nn.Linear(12, 4))
    return SplitShared(tower, head, axis="height", parts=2).double()


def test_shared_tower_stays_shared_and_matches():
    model = shared_model()
    twin = to_torch(model)
    assert isinstance(twin, TorchSplitShared)
    assert list(twin.state_dict()) == list(model.state_dict())
    compare(model, twin, (3, 1, 16, 8))  # the tower's gradient sums over both halves
    back = from_torch(twin)
    assert isinstance(back, SplitShared) and back.axis == "height" and back.parts == 2


def test_a_module_used_twice_is_one_module_after_conversion():
    layer = nn.Linear(4, 4)
    model = nn.Sequential(layer, nn.ReLU(), layer)
    twin = to_torch(model)
    assert twin[0] is twin[2]
    back = from_torch(twin)
    assert back[0] is back[2]
    assert len(list(back.parameters())) == 2


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_five_optimizer_steps_give_equal_weights(optimizer):
    cg.manual_seed(3)
    # No bias before BatchNorm: its gradient is zero up to rounding, which Adam's m / sqrt(v)
    # would turn into arbitrary steps (as in practice, BatchNorm's own bias replaces it).
    layers = [nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
              nn.MaxPool2d(2)]
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()
    twin = to_torch(model)
    if optimizer == "sgd":
        opt_c = cg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt_t = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    else:
        opt_c = cg.optim.Adam(model.parameters(), lr=1e-2)
        opt_t = torch.optim.Adam(twin.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((6, 1, 8, 8))
        labels = rng.integers(0, 3, 6)
        opt_c.zero_grad()
        opt_t.zero_grad()
        cg.nn.functional.cross_entropy(model(cg.tensor(x)), labels).backward()
        torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(labels)).backward()
        opt_c.step()
        opt_t.step()
    torch_state = twin.state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, torch_state[name].numpy(), rtol=1e-10, atol=1e-10,
                                   err_msg=name)


def test_a_torch_state_dict_loads_directly():
    twin = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(2 * 4 * 4, 3))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    model.load_state_dict(twin.state_dict())
    x = np.random.default_rng(0).random((2, 1, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(model(cg.tensor(x)).data,
                               twin(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.rsplit("/", 1)[-1])
def test_shipped_experiment_models_convert(path):
    spec = resolve_spec(path)
    input_shape, classes = dataset_geometry(spec.dataset)
    cg.manual_seed(0)
    model = build_model(spec.model, input_shape, classes).eval()
    twin = to_torch(model)
    x = np.random.default_rng(0).random((2, *input_shape)).astype(np.float32)
    expected = model(cg.tensor(x)).data
    got = twin(torch.tensor(x)).detach().numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
    back = from_torch(twin)
    for key, value in back.state_dict().items():
        np.testing.assert_array_equal(value, model.state_dict()[key])


class Custom(nn.Module):
    def forward(self, input):
        return input


def test_unsupported_module_names_its_class_and_path():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), Custom()))
    message = r"^cannot convert Custom at '1\.1' to PyTorch: no converter for this class$"
    with pytest.raises(UnsupportedModuleError, match=message):
        to_torch(model)
    with pytest.raises(UnsupportedModuleError, match=r"cannot convert LSTM at '0' from PyTorch"):
        from_torch(torch.nn.Sequential(torch.nn.LSTM(2, 2)))


def test_torch_attributes_convgrad_cannot_reproduce_are_refused():
    twin = torch.nn.Sequential(OrderedDict(pool=torch.nn.MaxPool2d(2, ceil_mode=True)))
    with pytest.raises(UnsupportedModuleError,
                       match=r"MaxPool2d at 'pool'.*ceil_mode=False, received ceil_mode=True"):
        from_torch(twin)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")
    with pytest.raises(UnsupportedModuleError, match="padding_mode='zeros'"):
        from_torch(conv)


def test_training_flags_follow_module_by_module():
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(2, 2))
    model[0].eval()
    twin = to_torch(model)
    assert twin.training and not twin[0].training and twin[1].training
    back = from_torch(twin)
    assert back.training and not back[0].training and back[1].training


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_loss_converts_with_its_options_and_gives_torch_loss(reduction):
    loss = nn.CrossEntropyLoss(label_smoothing=0.2, ignore_index=1, reduction=reduction)
    twin = to_torch(loss)
    assert (twin.label_smoothing, twin.ignore_index, twin.reduction) == (0.2, 1, reduction)
    back = from_torch(twin)
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4))
    target = np.array([0, 1, 3, 2, 1, 3])
    ours = back(cg.tensor(logits), target)
    theirs = twin(torch.tensor(logits), torch.tensor(target))
    np.testing.assert_allclose(as_numpy(ours), theirs.numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- the lab's model parts
STEM_SPEC = (__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"
             / "digit_sum_readings" / "digit-sum-fresh-stem.toml")


def sum_oracle(logits: np.ndarray, k: int) -> np.ndarray:
    """log p(s) in float64 by the definition: the convolution of the two softmaxes."""
    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    p1, p2 = softmax(logits[:, :k]), softmax(logits[:, k:])
    return np.log(np.stack([np.convolve(a, b) for a, b in zip(p1, p2, strict=True)]))


def confident_logits(k: int, rng) -> np.ndarray:
    """Rows whose digits are certain (logit gaps of 1000): most sums have log p(s) near -1000
    or -2000, and the large sums' rows of the gather table start with -inf."""
    digits = np.array([[k - 1, k - 1], [0, 0], [k - 1, 0], [3, 5]])
    logits = rng.standard_normal((len(digits), 2 * k))
    logits[np.arange(len(digits)), digits[:, 0]] += 1000.0
    logits[np.arange(len(digits)), k + digits[:, 1]] += 1000.0
    return logits


@pytest.mark.parametrize("k", [2, 3, 10])
def test_sum_distribution_twin_matches_convgrad_and_the_convolution(k):
    from convgrad.interop.torch import TorchSumDistribution, sum_index
    from convgrad.lab.models import SumDistribution

    model = SumDistribution(k)
    twin = to_torch(model)
    assert isinstance(twin, TorchSumDistribution) and twin.classes == k
    np.testing.assert_array_equal(twin.index.numpy(), model.index)
    np.testing.assert_array_equal(sum_index(k), model.index)
    assert list(twin.state_dict()) == list(model.state_dict()) == []
    compare(model, twin, (5, 2 * k))  # outputs and input gradients, float64
    logits = np.random.default_rng(2).standard_normal((5, 2 * k)) * 3
    out = twin(torch.tensor(logits)).numpy()
    np.testing.assert_allclose(out, sum_oracle(logits, k), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, rtol=1e-12)
    back = from_torch(twin.double().eval())
    assert type(back) is SumDistribution and back.classes == k and not back.training
    np.testing.assert_array_equal(back.index, model.index)


def test_sum_distribution_twin_stays_finite_for_confident_digits():
    from convgrad.lab.models import SumDistribution

    k = 10
    logits = confident_logits(k, np.random.default_rng(0))
    model, twin = SumDistribution(k), to_torch(SumDistribution(k))
    for dtype in (np.float64, np.float32):
        xt = torch.tensor(logits.astype(dtype), requires_grad=True)
        out = twin(xt)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(xt.grad).all()
        expected = model(cg.tensor(logits.astype(dtype))).data
        np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-6, atol=1e-6)
    # certain digits (9, 9): the sum 18 has log p = 0 and the sum 17 about -1000
    np.testing.assert_allclose(out[0, 18].item(), 0.0, atol=1e-6)
    assert -1002 < out[0, 17].item() < -998


def test_sum_distribution_twin_refuses_a_wrong_width():
    from convgrad.interop import InteropError
    from convgrad.lab.models import SumDistribution

    with pytest.raises(InteropError, match=r"TorchSumDistribution\(10\): expected input "
                                           r"\(N, 20\), received \(3, 19\)"):
        to_torch(SumDistribution(10))(torch.zeros(3, 19))


def test_split_shared_stem_converts_both_ways():
    stem = nn.Sequential(nn.Conv2d(1, 3, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2))
    tower = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4, 5), nn.Tanh())
    model = SplitShared(tower, nn.Linear(10, 4), axis="height", parts=2, stem=stem).double()
    twin = to_torch(model)
    assert isinstance(twin.stem, torch.nn.Sequential) and isinstance(twin.stem[0],
                                                                     torch.nn.Conv2d)
    assert list(twin.state_dict()) == list(model.state_dict())
    assert list(model.state_dict())[:2] == ["stem.0.weight", "stem.0.bias"]
    compare(model, twin, (3, 1, 8, 8))  # the stem's gradient flows through both halves
    back = from_torch(twin)
    assert isinstance(back, SplitShared) and isinstance(back.stem, nn.Sequential)
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value.numpy())
    assert from_torch(to_torch(shared_model())).stem is None


def test_the_stem_reading_of_digit_sum_converts():
    spec = resolve_spec(str(STEM_SPEC))
    input_shape, classes = dataset_geometry(spec.dataset)
    cg.manual_seed(0)
    model = build_model(spec.model, input_shape, classes).eval()
    assert model.stem is not None
    twin = to_torch(model)
    assert twin.stem is not None
    assert list(twin.state_dict()) == list(model.state_dict())
    x = np.random.default_rng(0).random((2, *input_shape)).astype(np.float32)
    expected = model(cg.tensor(x)).data
    got = twin(torch.tensor(x)).detach().numpy()
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
