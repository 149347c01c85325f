"""Claims 6 and 8: parameter and constraint counts, and the linearised network as one affine map.

Counts come from ``convgrad.summary`` run on real modules, never from a formula alone; the affine
map of claim 8 is read off the network by pushing the zero image and the 784 basis images
through it in float64.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

import convgrad as cg
from convgrad import nn
from convgrad.theory.base import Check, Result

__all__ = ["EXPECTED_COUNTS", "LINEAR_NETWORK", "PARAM_COUNTS", "affine_map",
           "deep_mnist_network"]


def deep_mnist_network(relu: bool = True, pooling: str = "max") -> nn.Sequential:
    """The Deep MNIST network of the TensorFlow tutorial (3,274,634 parameters).

    conv 5x5x32 'same' -> pool 2 -> conv 5x5x64 'same' -> pool 2 -> flatten (3136) ->
    linear 1024 -> dropout 0.5 -> linear 10, with a ReLU after each conv and the first linear.

    Args:
        relu: keep the ReLUs (False gives the course's linearised network).
        pooling: "max" or "avg" (2x2, stride 2).

    Returns:
        A Sequential mapping (N, 1, 28, 28) to (N, 10) logits.
    """
    pool = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pooling]
    act = nn.ReLU if relu else nn.Identity
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding="same"), act(), pool(2),
        nn.Conv2d(32, 64, 5, padding="same"), act(), pool(2),
        nn.Flatten(), nn.Linear(3136, 1024), act(), nn.Dropout(0.5), nn.Linear(1024, 10),
    )


# ----------------------------------------------------------------------- 6. counts
EXPECTED_COUNTS: dict[str, int] = {
    "rgb_conv_96x5x5": 7_296,
    "fc_4x4x256_to_4x4x256": 16_781_312,
    "deep_mnist_conv1": 832,
    "deep_mnist_conv2": 51_264,
    "deep_mnist_fc1": 3_212_288,
    "deep_mnist_fc2": 10_250,
    "deep_mnist_total": 3_274_634,
    "one_conv_conv": 520,
    "one_conv_linear": 62_730,
    "one_conv_total": 63_250,
    "constraints_10000x1000": 10_000_000,
}

_HAND = {
    "rgb_conv_96x5x5": "96 filters x (5*5*3) + 96 biases",
    "fc_4x4x256_to_4x4x256": "4096 x 4096 + 4096",
    "deep_mnist_conv1": "32 x (5*5*1) + 32",
    "deep_mnist_conv2": "64 x (5*5*32) + 64",
    "deep_mnist_fc1": "3136 x 1024 + 1024 (3136 = 7*7*64)",
    "deep_mnist_fc2": "1024 x 10 + 10",
    "deep_mnist_total": "832 + 51,264 + 3,212,288 + 10,250",
    "one_conv_conv": "8 x (8*8*1) + 8",
    "one_conv_linear": "6272 x 10 + 10 (6272 = 28*28*8)",
    "one_conv_total": "520 + 62,730",
    "constraints_10000x1000": "one equation f(x_n)_c = onehot(y_n)_c per image n and class c",
}


def _measured_counts() -> dict[str, int]:
    """Every count of claim 6, from cg.summary on real modules."""
    counts: dict[str, int] = {}
    counts["rgb_conv_96x5x5"] = cg.summary(nn.Conv2d(3, 96, 5), (1, 3, 32, 32)).total_params
    fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 256, 4 * 4 * 256))
    counts["fc_4x4x256_to_4x4x256"] = cg.summary(fc, (1, 256, 4, 4)).total_params
    deep = cg.summary(deep_mnist_network(), (1, 1, 28, 28))
    per_layer = [row.params for row in deep.rows if row.params]
    names = ("deep_mnist_conv1", "deep_mnist_conv2", "deep_mnist_fc1", "deep_mnist_fc2")
    counts.update(zip(names, per_layer + [-1] * (4 - len(per_layer)), strict=False))
    counts["deep_mnist_total"] = deep.total_params
    one_conv = nn.Sequential(nn.Conv2d(1, 8, 8, padding="same"), nn.ReLU(), nn.Flatten(),
                             nn.Linear(6272, 10))
    one = cg.summary(one_conv, (1, 1, 28, 28))
    per_layer = [row.params for row in one.rows if row.params]
    counts["one_conv_conv"], counts["one_conv_linear"] = (per_layer + [-1, -1])[:2]
    counts["one_conv_total"] = one.total_params
    # constraints: the classifier's outputs over the whole data set, one equation each ...
    images, classes = 10_000, 1_000
    head = cg.summary(nn.Sequential(nn.Flatten(), nn.Linear(4, classes)), (images, 1, 2, 2))
    outputs = int(np.prod(head.rows[-1].output_shape))
    # ... the same number as entries of the one-hot target matrix they must match
    labels = np.arange(images) % classes
    one_hot = np.zeros((images, classes), dtype=bool)
    one_hot[np.arange(images), labels] = True
    counts["constraints_10000x1000"] = outputs if outputs == one_hot.size else -1
    return counts


def _param_counts(expected: Mapping[str, int] = EXPECTED_COUNTS) -> Result:
    """Claim 6. Args: expected, the claimed count for every key of EXPECTED_COUNTS."""
    measured = _measured_counts()
    keys = list(measured) + [k for k in expected if k not in measured]
    lines = [f"{'count':<24} {'claimed':>12} {'cg.summary':>12}  by hand"]
    errors = []
    for key in keys:
        claim, actual = expected.get(key), measured.get(key)
        if claim is None or actual is None:
            errors.append(float("inf"))
            lines.append(f"{key:<24} {claim if claim is not None else 'missing':>12} "
                         f"{actual if actual is not None else 'missing':>12}  FAILS")
            continue
        errors.append(float(abs(claim - actual)))
        mark = "" if claim == actual else "  FAILS"
        lines.append(f"{key:<24} {claim:>12,} {actual:>12,}  {_HAND.get(key, '')}{mark}")
    error = max(errors)
    return Result(error == 0.0, error, 0.0, "\n".join(lines),
                  {key: float(value) for key, value in measured.items()})


PARAM_COUNTS = Check(
    name="param_counts",
    number=6,
    statement="Parameter and constraint counts of the course's layers and networks (cg.summary)",
    formula=(
        "conv: C_out (kH kW C_in) + C_out;  linear: n_in n_out + n_out;\n"
        "constraints of a data set: N examples x C outputs."
    ),
    compute=_param_counts,
)


# ----------------------------------------------------------------------- 8. linear network
def affine_map(network: nn.Module, inputs: int = 784, shape: tuple[int, ...] = (1, 28, 28),
               chunk: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Read (A, c) off a network assumed affine: c = net(0), row i of A = net(e_i) - c.

    If the network is x -> x A + c, this is exact; if it is not, the pair still exists and the
    comparison of net(x) with x A + c on other inputs shows how far from affine it is.

    Args:
        network: maps (N, *shape) to (N, C), float64, in eval mode.
        inputs: prod(shape), the dimension of vec(x).
        chunk: images per forward pass (bounds the im2col memory).

    Returns:
        A: (inputs, C). c: (C,).
    """
    basis = np.concatenate([np.zeros((1, inputs)), np.eye(inputs)]).reshape(-1, *shape)
    with cg.no_grad():
        out = np.concatenate([network(cg.tensor(basis[i:i + chunk])).numpy()
                              for i in range(0, len(basis), chunk)])
    c = out[0]
    return out[1:] - c, c


def _linear_network(relu: bool = False, pooling: str = "avg", samples: int = 32,
                    tolerance: float = 1e-9) -> Result:
    """Claim 8. Args: relu, pooling choose the network ("max" or "avg"); samples, the random
    images compared; tolerance, relative to max(1, output scale).
    """
    network = deep_mnist_network(relu=relu, pooling=pooling).double().eval()
    params = sum(p.numel() for p in network.parameters())
    a, c = affine_map(network)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(samples, 784))
    with cg.no_grad():
        out = network(cg.tensor(x.reshape(samples, 1, 28, 28))).numpy()
    affine = x @ a + c
    discrepancy = float(np.abs(out - affine).max())
    scale = float(np.abs(out).max())
    relative = discrepancy / max(scale, 1e-300)
    allowed = tolerance * max(1.0, scale)  # absolute in float64 rounding units of O(1) outputs
    passed = discrepancy <= allowed
    kind = ("ReLUs" if relu else "no ReLUs") + f", {pooling} pooling, dropout in eval mode"
    details = "\n".join([
        f"network: Deep MNIST with {kind}; {params:,} parameters, random weights, float64",
        "c = net(0); A[i] = net(e_i) - c for the 784 basis images (785 forward passes)",
        f"A: {a.shape[0]}x{a.shape[1]}, c: {c.shape[0]}  ({a.size + c.size:,} numbers)",
        f"on {samples} random images: max |net(x) - (x A + c)| = {discrepancy:.2e} "
        f"(outputs up to {scale:.2e}; relative {relative:.1e})",
        ("affine: the whole network is one linear classifier x -> x A + c, so it can do no "
         "better than logistic regression" if passed else
         "not affine: the network is not one matrix and bias, so it is more than a linear "
         "classifier"),
    ])
    return Result(passed, discrepancy, allowed, details,
                  {"max_abs_diff": discrepancy, "output_scale": scale, "relative": relative})


LINEAR_NETWORK = Check(
    name="linear_network",
    number=8,
    statement="Deep MNIST without ReLUs (average pooling) is one affine map x -> x A + c",
    formula=(
        "conv, average pooling, flatten, linear and eval-mode dropout are affine, and so is\n"
        "their composition: net(x) = vec(x) A + c with A (784x10) and c (10)."
    ),
    compute=_linear_network,
)
