"""The per-layer profiler of benchmarks/bench_layers.py measures without changing anything.

It swaps timing wrappers into the kernels (their ``np``, every Function's backward, the parallel
sections): a profiled training step must give the same bits as an unprofiled one, book every
layer's time and products, and leave every swapped name as it found it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import convgrad as cg
from convgrad import ops, parallel
from convgrad.kernels import conv, linear, winograd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench_layers = pytest.importorskip("bench_layers")
bench_deep_mnist = pytest.importorskip("bench_deep_mnist")


def _names() -> dict[str, object]:
    """Everything the profiler swaps, as it is now."""
    names = {"conv.np": conv.np, "linear.np": linear.np, "Job.run": vars(parallel._Job)["run"],
             "parallel_for": parallel.parallel_for, "conv.parallel_for": conv.parallel_for,
             "winograd.np": winograd.np, "winograd.parallel_for": winograd.parallel_for}
    for name, value in vars(ops).items():
        if isinstance(value, type) and issubclass(value, cg.engine.Function):
            names[name] = vars(value).get("backward")
    return names


@pytest.mark.parametrize("threads", [1, 3])
def test_profiled_step_same_bits_and_restores(threads: int) -> None:
    previous = cg.get_num_threads()
    cg.set_num_threads(threads)
    try:
        x, y = bench_deep_mnist.make_batches(4, 1, seed=2)[0]
        models = [bench_deep_mnist.build_convgrad(), bench_deep_mnist.build_convgrad()]
        optimizers = [cg.optim.Adam(m.parameters(), lr=1e-3) for m in models]
        before = _names()
        profiler = bench_layers.Profiler()
        cg.manual_seed(5)
        with profiler.installed():
            wall = bench_layers.profiled_step(profiler, models[0], optimizers[0], x, y)
        assert _names() == before
        cg.manual_seed(5)  # the same dropout mask
        optimizers[1].zero_grad()
        cg.nn.functional.cross_entropy(models[1](cg.Tensor._wrap(x)), y).backward()
        optimizers[1].step()
    finally:
        cg.set_num_threads(previous)
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)
    for layer in ("conv1", "conv2", "fc1", "fc2", "pool1", "loss"):
        assert profiler.forward[layer] > 0 and profiler.backward[layer] > 0, layer
    assert profiler.forward["optimizer"] > 0
    for layer in ("conv1", "conv2", "fc1", "fc2"):  # each product booked to its own layer
        assert profiler.blas[(layer, "forward")] > 0 and profiler.blas[(layer, "backward")] > 0
    assert not any(key[0] in ("pool1", "pool2", "loss", "other") for key in profiler.blas)
    total = sum(profiler.forward.values()) + sum(profiler.backward.values())
    assert total <= wall


def test_layer_flops() -> None:
    flops = bench_layers.layer_flops(2)
    assert flops["conv1"] == (2 * 2 * 784 * 32 * 25,) * 2  # no input gradient for the data
    assert flops["fc1"] == (2 * 2 * 3136 * 1024, 2 * 2 * 2 * 3136 * 1024)


@pytest.mark.parametrize("turn", [1, 3])
def test_alternating_timer_gives_each_library_the_same_batches_in_turns(turn, monkeypatch) -> None:
    monkeypatch.setattr(bench_deep_mnist, "TURN", turn)
    calls: list[tuple[str, int]] = []

    def stepper(name):
        return lambda x, y: calls.append((name, int(x)))

    batches = [(np.array(i), None) for i in range(2 + 6)]
    medians = bench_deep_mnist.time_alternating({"a": stepper("a"), "b": stepper("b")}, batches)
    assert set(medians) == {"a", "b"}
    timed = calls[4:]  # after two warm-up batches, each library once per batch
    expected = [(name, 2 + t + k) for t in range(0, 6, turn) for name in "ab" for k in range(turn)]
    assert timed == expected
