"""Deep MNIST's two convolutions alone: convgrad's kernels against PyTorch's (oneDNN), per pass.

For each layer (conv1: 1 -> 32 channels on 28x28, conv2: 32 -> 64 on 14x14, both 5x5 'same')
and batch, the script times the forward, the weight + bias gradient and the whole backward
(input gradient too; conv1's is never needed in the network) of both libraries, calls
alternating in one process, and prints the medians and the ratios torch / convgrad (above 1:
convgrad is faster). convgrad's kernels get channels-last inputs, as inside its networks.

PyTorch's OpenMP worker threads busy-wait for a while after each parallel region (libgomp's
default), on the cores the next call needs; convgrad's threads block when idle. Run it twice to
see what that costs the call after a PyTorch one:

    python benchmarks/bench_conv_vs_torch.py
    OMP_WAIT_POLICY=passive python benchmarks/bench_conv_vs_torch.py   # PyTorch's threads sleep

Usage:
    python benchmarks/bench_conv_vs_torch.py [--batch 50 256] [--steps 30] [--threads 2]

Needs torch (the test extra): pip install -e '.[test]'.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

LAYERS = {"conv1": (1, 32, 28), "conv2": (32, 64, 14)}
"""name -> (input channels, output channels, image size); 5x5 kernels, padding 2."""


def time_layer(c_in: int, c_out: int, size: int, batch: int, steps: int) -> dict[str, float]:
    """Median seconds of each pass of each library, their calls alternating."""
    import torch

    from convgrad.kernels import conv

    rng = np.random.default_rng(0)
    x = np.ascontiguousarray(rng.standard_normal((batch, size, size, c_in), dtype=np.float32))
    dout = rng.standard_normal((batch, size, size, c_out), dtype=np.float32)
    x, dout = x.transpose(0, 3, 1, 2), dout.transpose(0, 3, 1, 2)  # NCHW views, channels-last
    w = (rng.standard_normal((c_out, c_in, 5, 5)) / (5 * np.sqrt(c_in))).astype(np.float32)
    b = rng.standard_normal(c_out, dtype=np.float32)
    geometry = ((1, 1), ((2, 2), (2, 2)), (1, 1), 1, (size, size))
    _, cache = conv.conv2d_forward(x, w, b, *geometry)
    tx = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    tw, tb = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
    tdout = torch.from_numpy(np.ascontiguousarray(dout))
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=2)

    def torch_forward() -> None:
        with torch.no_grad():
            torch.nn.functional.conv2d(tx, tw, tb, padding=2)

    calls = {
        ("forward", "convgrad"): lambda: conv.conv2d_forward(x, w, b, *geometry),
        ("forward", "torch"): torch_forward,
        ("weight grad", "convgrad"): lambda: conv.conv2d_backward(dout, cache, need_dx=False),
        ("weight grad", "torch"): lambda: torch.autograd.grad(ty, (tw, tb), tdout,
                                                              retain_graph=True),
        ("backward", "convgrad"): lambda: conv.conv2d_backward(dout, cache),
        ("backward", "torch"): lambda: torch.autograd.grad(ty, (tx, tw, tb), tdout,
                                                           retain_graph=True),
    }
    spent: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    for round_ in range(steps + 3):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            if round_ >= 3:  # warm-up rounds
                spent[key].append(time.perf_counter() - start)
    return {f"{phase}|{library}": float(np.median(times))
            for (phase, library), times in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[50, 256])
    parser.add_argument("--steps", type=int, default=30, help="timed calls per pass and library")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for torch, convgrad and the BLAS")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    import convgrad as cg

    threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)
    cg.set_num_threads(args.threads)
    print(f"threads={args.threads}  torch {torch.__version__}  OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}  OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'layer':8}{'batch':>6}  {'pass':12}{'convgrad ms':>12}{'torch ms':>10}"
          f"{'torch/convgrad':>16}")
    for batch in args.batch:
        for name, (c_in, c_out, size) in LAYERS.items():
            result = time_layer(c_in, c_out, size, batch, args.steps)
            for phase in ("forward", "weight grad", "backward"):
                ours, theirs = result[f"{phase}|convgrad"], result[f"{phase}|torch"]
                print(f"{name:8}{batch:6d}  {phase:12}{ours * 1e3:12.2f}{theirs * 1e3:10.2f}"
                      f"{theirs / ours:16.2f}")


if __name__ == "__main__":
    main()
