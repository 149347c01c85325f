"""Interleaved A/B of convgrad kernel variants on Deep MNIST training steps.

Two copies of the same network (same weights, same batches) train side by side, one step each in
turn: A under a variant (an earlier path, or another setting), B with the code as it is. On a
shared, loaded machine only such interleaved ratios mean anything. Prints the median step time
of each, the ratio A / B (> 1: the current code is faster), the load, and whether both copies
end with the same bits (they must, unless the variant changes the arithmetic's order).

Usage:
    python benchmarks/bench_ab.py [--variant min_parallel_256k ...] [--batch 50 256] [--steps 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator

import numpy as np


@contextlib.contextmanager
def _swapped(owner: object, name: str, value: object) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def variants() -> dict[str, tuple[str, Callable[[], contextlib.AbstractContextManager]]]:
    """name -> (what A runs, a context manager that puts A's path in place)."""
    from convgrad import parallel
    from convgrad.kernels import conv, winograd
    from convgrad.nn import functional as cg_functional
    from convgrad.nn import layers

    new_weight_grad = conv._weight_grad

    def weight_grad_row_sum_db(xp, dout_mat, weight_shape, geometry, need_db=False):
        dw, _ = new_weight_grad(xp, dout_mat, weight_shape, geometry)
        return dw, dout_mat.sum(axis=0) if need_db else None

    table = {
        "db_row_sum": (
            "conv bias gradient as dout_mat.sum(axis=0) (before; changes db's last bits)",
            lambda: _swapped(conv, "_weight_grad", weight_grad_row_sum_db),
        ),
    }
    table["pool_then_relu_ops"] = (
        "ReLU + max pool run as the pool, then the ReLU: two ops (B: one fused op)",
        lambda: _swapped(layers, "_pooled_relu",
                         lambda pool: lambda x: cg_functional.relu(pool(x))),
    )
    table["relu_before_pool"] = (
        "ReLU then max pool, as written (B: the pool first, the ReLU on its output)",
        lambda: _swapped(layers, "_pool_first", lambda activation, pool: False),
    )
    table["patch_matrix"] = (
        "every convolution by its patch matrix (B: Winograd F(2x2, 5x5) where it applies)",
        lambda: _swapped(winograd, "ENABLED", False),
    )
    from convgrad.optim import optimizer

    for elements in (1 << 16, 1 << 17, 1 << 19):
        table[f"chunk_{elements >> 10}k"] = (
            f"optimizer updates on chunks of {elements >> 10}K elements "
            f"(B: {optimizer.CHUNK_ELEMENTS >> 10}K)",
            lambda elements=elements: _swapped(optimizer, "CHUNK_ELEMENTS", elements),
        )
    for size in (256 << 10, 512 << 10, 2 << 20, 4 << 20):
        table[f"min_parallel_{size >> 10}k"] = (
            f"MIN_PARALLEL_BYTES = {size >> 10} KiB (B: {parallel.MIN_PARALLEL_BYTES >> 10})",
            lambda size=size: _swapped(parallel, "MIN_PARALLEL_BYTES", size),
        )

    def static_queues(parts, workers):
        return [iter(parts[s]) for s in parallel.split(len(parts), workers)]

    table["static_parts"] = (
        "each thread runs a fixed contiguous group of the parts (B: the threads take the parts "
        "from one shared queue)",
        lambda: _swapped(parallel, "_queues", static_queues),
    )
    from convgrad.kernels import linear

    table["column_parts_1"] = (
        f"linear products in one column block per thread (B: {linear.PARTS_PER_THREAD})",
        lambda: _swapped(linear, "PARTS_PER_THREAD", 1),
    )
    from convgrad.kernels import pool

    for size in (512 << 10, 1 << 20, 4 << 20):
        table[f"pool_slice_{size >> 10}k"] = (
            f"pooling on slices of {size >> 10} KiB (B: {pool.POOL_SLICE_BYTES >> 10} KiB)",
            lambda size=size: _swapped(pool, "POOL_SLICE_BYTES", size),
        )
    return table


def run(variant: str, batch: int, steps: int) -> None:
    from bench_deep_mnist import build_convgrad, make_batches

    import convgrad as cg

    description, patch = variants()[variant]
    models = [build_convgrad(), build_convgrad()]
    optimizers = [cg.optim.Adam(m.parameters(), lr=1e-4) for m in models]
    generators = [np.random.default_rng(7), np.random.default_rng(7)]

    def step(k: int, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
        """(step, forward, backward, optimizer) seconds."""
        start = time.perf_counter()
        optimizers[k].zero_grad()
        with _generator(generators[k]):
            loss = cg.nn.functional.cross_entropy(models[k](cg.Tensor._wrap(x)), y)
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizers[k].step()
        end = time.perf_counter()
        return end - start, forward - start, backward - forward, end - backward

    times: list[list[tuple[float, float, float, float]]] = [[], []]
    for i, (x, y) in enumerate(make_batches(batch, steps + 2)):
        for k in (0, 1) if i % 2 else (1, 0):  # alternate which goes first
            with patch() if k == 0 else contextlib.nullcontext():
                spent = step(k, x, y)
            if i >= 2:
                times[k].append(spent)
    (a, a_fwd, a_bwd, a_opt), (b, b_fwd, b_bwd, b_opt) = (
        np.median(np.array(t), axis=0) for t in times
    )
    same = all(np.array_equal(p.data, q.data)
               for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True))
    print(f"{variant:24} b{batch:<4} A {a * 1e3:8.2f} ms  B {b * 1e3:8.2f} ms  A/B {a / b:5.3f}  "
          f"(forward {a_fwd / b_fwd:5.3f}, backward {a_bwd / b_bwd:5.3f}, optimizer "
          f"{a_opt / b_opt:5.3f})  same bits: {same}  "
          f"load {os.getloadavg()[0]:.1f}   A = {description}")


def run_conv_backward(variant: str, repeats: int) -> None:
    """The A/B on conv2d_backward alone, for Deep MNIST's two convolutions at batch 50 and 256
    (dout laid out as the network hands it over: an NCHW view of channels-last memory)."""
    from convgrad.kernels import conv

    description, patch = variants()[variant]
    rng = np.random.default_rng(0)
    for c_in, c_out, size in ((1, 32, 28), (32, 64, 14)):
        for batch in (50, 256):
            x = rng.standard_normal((batch, c_in, size, size)).astype(np.float32)
            w = rng.standard_normal((c_out, c_in, 5, 5)).astype(np.float32)
            b = np.zeros(c_out, dtype=np.float32)
            _, cache = conv.conv2d_forward(x, w, b, (1, 1), ((2, 2), (2, 2)), (1, 1), 1,
                                           (size, size))
            dout = rng.standard_normal((batch, size, size, c_out)).astype(np.float32)
            dout = dout.transpose(0, 3, 1, 2)
            need_dx = c_in > 1
            times: list[list[float]] = [[], []]
            for i in range(repeats):
                for k in (0, 1) if i % 2 else (1, 0):
                    with patch() if k == 0 else contextlib.nullcontext():
                        start = time.perf_counter()
                        conv.conv2d_backward(dout, cache, need_dx, True)
                        times[k].append(time.perf_counter() - start)
            a, b_ = (float(np.median(t)) for t in times)
            print(f"{variant:16} conv {c_in}->{c_out} b{batch:<4} backward A {a * 1e3:7.2f} ms  "
                  f"B {b_ * 1e3:7.2f} ms  A/B {a / b_:5.3f}  load {os.getloadavg()[0]:.1f}  "
                  f"A = {description}")


@contextlib.contextmanager
def _generator(generator: np.random.Generator) -> Iterator[None]:
    """Run the network's dropout on this generator (each copy its own, same seed)."""
    import convgrad.random as cg_random

    with _swapped(cg_random, "_generator", generator):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", nargs="+", default=None)
    parser.add_argument("--batch", type=int, nargs="+", default=[50, 256])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conv-backward", action="store_true",
                        help="A/B conv2d_backward alone (--steps repeats per shape)")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    import convgrad as cg

    threadpool_limits(args.threads)
    cg.set_num_threads(args.threads)
    if args.conv_backward:
        for variant in args.variant or ["db_row_sum"]:
            run_conv_backward(variant, args.steps)
        return
    for variant in args.variant or list(variants()):
        for batch in args.batch:
            run(variant, batch, args.steps)


if __name__ == "__main__":
    main()
