"""Speed of a transposed convolution: convgrad's ConvTranspose2d against PyTorch's.

A DCGAN-style 2x upsampling layer, ConvTranspose2d(32, 16, kernel_size=4, stride=2, padding=1)
on (64, 32, 14, 14) -> (64, 16, 28, 28), float32. Both layers get the same weights and inputs;
their calls alternate in one process (so both see the same machine state), and the script prints
the median time of each and the ratio torch / convgrad (above 1: convgrad is faster), for the
forward pass alone and for forward + backward (input, weight and bias gradients).

Usage:
    python benchmarks/bench_conv_transpose.py [--steps 15] [--threads 2]

Needs torch (the test extra): pip install -e '.[test]'.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="timed calls per library")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for torch, convgrad and the BLAS")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    import convgrad as cg

    threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)
    cg.set_num_threads(args.threads)
    cg.manual_seed(0)
    ours = cg.nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
    theirs = torch.nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
    theirs.load_state_dict({k: torch.tensor(np.array(v)) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32, 14, 14)).astype(np.float32)
    upstream = rng.standard_normal((64, 16, 28, 28)).astype(np.float32)

    def convgrad_step(backward: bool):
        def run():
            if not backward:
                with cg.no_grad():
                    return ours(cg.tensor(x)), None
            inp = cg.tensor(x, requires_grad=True)
            out = ours(inp)
            out.backward(upstream)
            ours.zero_grad()
            return out, inp.grad

        return run

    def torch_step(backward: bool):
        def run():
            if not backward:
                with torch.no_grad():
                    return theirs(torch.tensor(x)), None
            inp = torch.tensor(x, requires_grad=True)
            out = theirs(inp)
            out.backward(torch.tensor(upstream))
            theirs.zero_grad()
            return out, inp.grad

        return run

    out, dx = convgrad_step(True)()
    out_t, dx_t = torch_step(True)()
    print(f"threads={args.threads}  torch {torch.__version__}  numpy {np.__version__}")
    print("ConvTranspose2d(32, 16, kernel_size=4, stride=2, padding=1), input (64, 32, 14, 14)")
    print(f"outputs agree to {np.abs(out.data - out_t.detach().numpy()).max():.2e}, input "
          f"gradients to {np.abs(dx.data - dx_t.numpy()).max():.2e} (max abs diff, float32)")
    print(f"{'':24}{'convgrad':>10}{'torch':>10}{'ratio':>8}   (ms, median; ratio torch/convgrad)")
    for name, backward in (("forward", False), ("forward + backward", True)):
        a, b = convgrad_step(backward), torch_step(backward)
        times_a, times_b = [], []
        for step in range(args.steps + 3):  # 3 warm-up calls each
            start = time.perf_counter()
            a()
            middle = time.perf_counter()
            b()
            end = time.perf_counter()
            if step >= 3:
                times_a.append(middle - start)
                times_b.append(end - middle)
        ma, mb = np.median(times_a) * 1e3, np.median(times_b) * 1e3
        print(f"{name:24}{ma:10.1f}{mb:10.1f}{mb / ma:8.2f}")


if __name__ == "__main__":
    main()
