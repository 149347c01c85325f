"""Where Winograd's minimal filtering pays: its kernels against the patch matrix's, interleaved.

For each convolution shape (batch, input and output channels, image size, kernel) the forward
(the correlation) and the weight gradient are timed on both routes, calls alternating in one
process, medians of --repeats; a ratio above 1 means Winograd is faster. The shapes cover
Deep MNIST's second layer (32 -> 64 at 14x14, and 64 -> 32, its input gradient), fewer
channels, 3x3 kernels and small batches: the crossovers behind ``MIN_CHANNELS`` and
``MIN_TILES`` in convgrad/kernels/winograd.py.

Usage:
    python benchmarks/bench_winograd.py [--repeats 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# (batch, C_in, C_out, H = W, kernel)
SHAPES = [
    (50, 32, 64, 14, 5), (256, 32, 64, 14, 5), (50, 64, 32, 14, 5), (256, 64, 32, 14, 5),
    (50, 16, 16, 14, 5), (50, 8, 16, 28, 5), (50, 64, 64, 14, 3), (256, 32, 32, 28, 3),
    (1, 32, 64, 14, 5), (2, 32, 64, 14, 5), (4, 32, 64, 14, 5), (8, 32, 64, 14, 5),
    (16, 32, 64, 14, 5),
]


def compare(batch: int, c_in: int, c_out: int, size: int, kernel: int,
            repeats: int) -> dict[str, float]:
    """Median seconds of the forward and the weight gradient on each route."""
    from convgrad.kernels import conv, winograd
    from convgrad.kernels.conv_arith import ConvGeometry, nchw_to_nhwc, pad_nhwc

    rng = np.random.default_rng(0)
    pad = kernel // 2
    pads = ((pad, pad), (pad, pad))
    geometry = ConvGeometry((size, size), (kernel, kernel), (1, 1), pads, (1, 1), 1,
                            (size, size))
    x = rng.standard_normal((batch, c_in, size, size), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in, kernel, kernel), dtype=np.float32) * 0.05
    xp = pad_nhwc(nchw_to_nhwc(x), pads)
    dout = rng.standard_normal((batch * size * size, c_out), dtype=np.float32)
    calls = {
        "forward": lambda: conv._correlate_nhwc(xp, w, geometry),
        "weight gradient": lambda: conv._weight_grad(xp, dout, w.shape, geometry, True),
    }
    spent: dict[str, list[float]] = {}
    for step in range(repeats + 2):
        for route in ("winograd", "patch"):
            winograd.ENABLED = route == "winograd"
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                if step >= 2:
                    spent.setdefault(f"{route} {name}", []).append(time.perf_counter() - start)
    return {key: float(np.median(v)) for key, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from threadpoolctl import threadpool_info, threadpool_limits

    import convgrad as cg
    from convgrad.kernels import winograd

    threadpool_limits(args.threads)
    cg.set_num_threads(args.threads)
    kernels = sorted({str(info.get("architecture")) for info in threadpool_info()
                      if info.get("user_api") == "blas"})
    print(f"threads={args.threads}  BLAS kernel: {', '.join(kernels)}  (ms, medians of "
          f"{args.repeats}; ratio = patch matrix / Winograd)")
    print(f"{'batch':>6}{'C_in':>6}{'C_out':>6}{'size':>6}{'k':>3}{'fwd patch':>11}"
          f"{'fwd wino':>10}{'ratio':>7}{'dW patch':>10}{'dW wino':>9}{'ratio':>7}")
    minimum = winograd.MIN_TILES
    winograd.MIN_TILES = 1  # the batch-size crossover is what is being measured
    try:
        for shape in SHAPES:
            t = compare(*shape, args.repeats)
            fwd = t["patch forward"] / t["winograd forward"]
            dw = t["patch weight gradient"] / t["winograd weight gradient"]
            print(f"{shape[0]:6}{shape[1]:6}{shape[2]:6}{shape[3]:6}{shape[4]:3}"
                  f"{t['patch forward'] * 1e3:11.2f}{t['winograd forward'] * 1e3:10.2f}{fwd:7.2f}"
                  f"{t['patch weight gradient'] * 1e3:10.2f}"
                  f"{t['winograd weight gradient'] * 1e3:9.2f}{dw:7.2f}")
    finally:
        winograd.MIN_TILES, winograd.ENABLED = minimum, True


if __name__ == "__main__":
    main()
