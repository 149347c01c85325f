"""Speed and memory of the TensorFlow "Deep MNIST" network: convgrad against PyTorch.

All networks get the same initial weights and the same batches; their training steps alternate
in one process (so all see the same machine state): convgrad, PyTorch with its default Adam
(foreach) and PyTorch with ``Adam(fused=True)``. The script prints samples/s from the median
step time of each and the ratios convgrad / PyTorch, at batch 50 and 256, for the conv-BN-ReLU
variant (BatchNorm2d after each convolution) at batch 256, inference at batch 1000 and the
latency of one image (batch 1). Peak memory is measured in two fresh subprocesses (one per
library), as the growth of the peak resident set size over the process's size after building
the model and the data, during a few training steps at batch 256. Last, the per-layer profile
of bench_layers.py (per-layer GFLOP/s against a float32 GEMM peak timed in the same run, and the
share of the step spent outside the matrix products).

It prints the CPU, the load, OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE and the kernel OpenBLAS chose
(threadpoolctl). To compare OpenBLAS's own choice of kernel, unset both for this command only:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_deep_mnist.py``.

Usage:
    python benchmarks/bench_deep_mnist.py [--steps 20] [--threads 2] [--batchnorm-only]
        [--no-layers] [--turn 1] [--settle-ms 0]

Needs torch (the test extra): pip install -e '.[test]'.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time

import numpy as np


def build_convgrad(seed: int = 0, batchnorm: bool = False):
    """The baseline; with batchnorm=True a BatchNorm2d follows each convolution (conv-BN-ReLU)."""
    import convgrad as cg

    nn = cg.nn
    cg.manual_seed(seed)
    norm = (lambda c: [nn.BatchNorm2d(c)]) if batchnorm else (lambda c: [])
    model = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding="same"),
        *norm(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding="same"),
        *norm(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3136, 1024),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1024, 10),
    )
    nn.init.tf_tutorial_init_(model)
    return model


def build_torch(state: dict[str, np.ndarray], batchnorm: bool = False):
    """The torch twin of build_convgrad, loaded from its state_dict (BatchNorm buffers too)."""
    import torch
    from torch import nn

    norm = (lambda c: [nn.BatchNorm2d(c)]) if batchnorm else (lambda c: [])
    model = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding="same"),
        *norm(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding="same"),
        *norm(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3136, 1024),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1024, 10),
    )
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    return model


def make_batches(batch: int, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch))
        for _ in range(count)
    ]


def convgrad_stepper(model):
    import convgrad as cg

    optimizer = cg.optim.Adam(model.parameters(), lr=1e-4)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        optimizer.zero_grad()
        loss = cg.nn.functional.cross_entropy(model(cg.Tensor._wrap(x)), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def torch_stepper(model, fused: bool = False):
    """A PyTorch training step; fused=True uses Adam's fused (one kernel per step) CPU path."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused or None)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


SETTLE = 0.0
"""Seconds to pause before each timed step or forward pass (--settle-ms): long enough, and the
threads a library left spinning after its last call (PyTorch's OpenMP workers busy-wait for a
while after each parallel region) are idle again before the other library's step starts."""


def settle() -> None:
    if SETTLE > 0:
        time.sleep(SETTLE)


TURN = 1
"""Consecutive steps (or forward passes) each library takes per turn (--turn). 1 is strict
alternation, where each convgrad step starts right after a PyTorch one; with N > 1 only the
first step of each turn follows the other library, the rest follow the library's own step, as
in a program that uses one library. Both see the same batches and, turn by turn, the same
machine state."""


def _turns(items: list) -> list[list]:
    """items cut into consecutive turns of TURN."""
    return [items[i : i + TURN] for i in range(0, len(items), TURN)]


def _timed_turns(calls: dict, items: list) -> dict[str, float]:
    """calls[name](item) for every item, the names taking turns of TURN consecutive items each;
    returns the median seconds per call of each name."""
    spent: dict[str, list[float]] = {name: [] for name in calls}
    for turn in _turns(items):
        for name, call in calls.items():
            for item in turn:
                settle()
                start = time.perf_counter()
                call(item)
                spent[name].append(time.perf_counter() - start)
    return {name: float(np.median(times)) for name, times in spent.items()}


def time_alternating(steppers: dict, batches: list, warmup: int = 2) -> dict[str, float]:
    """Every stepper trains on every batch, the steppers taking turns of TURN batches (one step
    each in turn by default); returns the median seconds per step of each.

    Every stepper trains its own copy of the same initial weights on the same batches, so all
    see the same work and, turn by turn, the same machine state.
    """
    for x, y in batches[:warmup]:
        for step in steppers.values():
            step(x, y)
    calls = {name: (lambda batch, step=step: step(*batch)) for name, step in steppers.items()}
    return _timed_turns(calls, batches[warmup:])


def train_row(batch: int, steps: int, batchnorm: bool = False) -> dict[str, float]:
    """Median seconds per training step: convgrad, torch (default Adam), torch (fused Adam)."""
    model_cg = build_convgrad(batchnorm=batchnorm)
    state = model_cg.state_dict()
    steppers = {
        "convgrad": convgrad_stepper(model_cg),
        "torch": torch_stepper(build_torch(state, batchnorm)),
        "torch fused": torch_stepper(build_torch(state, batchnorm), fused=True),
    }
    return time_alternating(steppers, make_batches(batch, steps + 2))


def inference(model_cg, model_torch, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per forward pass (eval mode, no graph) of each library, taking turns."""
    import torch

    import convgrad as cg

    x = np.random.default_rng(1).random((batch, 1, 28, 28), dtype=np.float32)
    model_cg.eval()
    model_torch.eval()
    with cg.no_grad(), torch.no_grad():
        out_cg = model_cg(cg.Tensor._wrap(x)).data
        out_t = model_torch(torch.from_numpy(x)).numpy()
        forwards = {"convgrad": lambda _: model_cg(cg.Tensor._wrap(x)),
                    "torch": lambda _: model_torch(torch.from_numpy(x))}
        result = _timed_turns(forwards, list(range(repeats)))
    result["max_abs_diff"] = float(np.abs(out_cg - out_t).max())
    return result


def memory_child(library: str, batch: int, steps: int, threads: int) -> None:
    """Run in a subprocess: print the peak-RSS growth (MiB) while training.

    The base is the resident size after importing the library and building the model and the
    batches, before the first step; the growth of the peak over it is what training needs
    (activations, gradients, optimizer state, workspaces). The absolute peak is printed too.
    """
    import convgrad as cg

    cg.set_num_threads(threads)
    model = build_convgrad()
    if library == "torch":
        import torch

        torch.set_num_threads(threads)
        model = build_torch(model.state_dict())
        step = torch_stepper(model)
    else:
        step = convgrad_stepper(model)
    batches = make_batches(batch, steps)
    base = _current_rss_kib()
    for x, y in batches:
        step(x, y)
    peak = _status_kib("VmHWM")
    print(json.dumps({"growth_mib": (peak - base) / 1024, "peak_mib": peak / 1024}))


def _current_rss_kib() -> int:
    """The resident set size now (not the peak so far)."""
    return _status_kib("VmRSS")


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB. VmHWM is this process image's peak resident size
    (unlike ru_maxrss, which a child started by fork + exec inherits from its parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (this benchmark needs Linux)")


def measure_memory(batch: int, threads: int, steps: int = 4) -> dict[str, float]:
    result = {}
    for library in ("convgrad", "torch"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                library,
                "--batch",
                str(batch),
                "--steps",
                str(steps),
                "--threads",
                str(threads),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        result[library] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _print_rows(rows: list[tuple[str, int, dict[str, float]]]) -> None:
    """Samples/s (batch / median seconds per step) and the ratios convgrad / torch."""
    print(f"{'':22}{'convgrad':>10}{'torch':>10}{'fused':>10}{'/torch':>8}{'/fused':>8}"
          "   (samples/s from median step times; fused = torch Adam(fused=True))")
    for name, batch, times in rows:
        rate = {k: batch / v for k, v in times.items()}
        fused = rate.get("torch fused")
        print(f"{name:22}{rate['convgrad']:10.1f}{rate['torch']:10.1f}"
              + (f"{fused:10.1f}" if fused else f"{'-':>10}")
              + f"{rate['convgrad'] / rate['torch']:8.2f}"
              + (f"{rate['convgrad'] / fused:8.2f}" if fused else f"{'-':>8}"))


def _print_setup(threads: int) -> None:
    """Versions, CPU, load, and the BLAS kernel OpenBLAS chose (threadpoolctl's report)."""
    import os
    import platform

    import torch
    from threadpoolctl import threadpool_info

    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                   cpu)
    print(f"threads={threads} (torch, convgrad, BLAS)  torch {torch.__version__}  "
          f"numpy {np.__version__}  CPU: {cpu}, {os.cpu_count()} logical")
    env = {k: os.environ.get(k, "(unset)") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print("environment: " + "  ".join(f"{k}={v}" for k, v in env.items())
          + f"  load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    print(f"protocol: steps interleaved in one process, {TURN} per library per turn"
          + (" (strict alternation)" if TURN == 1 else "")
          + (f", {SETTLE * 1e3:g} ms pause before each" if SETTLE else ""))
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            print(f"BLAS: {info.get('internal_api')} {info.get('version')} "
                  f"kernel={info.get('architecture')} threading={info.get('threading_layer')} "
                  f"({info.get('filepath')})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20,
                        help="timed (median) steps per training row")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for both: torch.set_num_threads, cg.set_num_threads, BLAS")
    parser.add_argument("--memory-child", choices=["convgrad", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--batchnorm-only", action="store_true",
                        help="only the conv-BN-ReLU training line")
    parser.add_argument("--no-layers", action="store_true",
                        help="skip the per-layer profile (bench_layers.py)")
    parser.add_argument("--settle-ms", type=float, default=0.0,
                        help="pause this long before each timed step or forward pass (see SETTLE)")
    parser.add_argument("--turn", type=int, default=1,
                        help="consecutive steps each library takes per turn (see TURN)")
    args = parser.parse_args()
    if args.turn < 1:
        parser.error(f"--turn must be at least 1, got {args.turn}")
    global SETTLE, TURN
    SETTLE, TURN = args.settle_ms / 1000, args.turn
    if args.memory_child:
        memory_child(args.memory_child, args.batch, args.steps, args.threads)
        return

    import torch
    from threadpoolctl import threadpool_limits

    import convgrad as cg

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    cg.set_num_threads(args.threads)
    _print_setup(args.threads)
    started = time.perf_counter()
    rows = []
    for batch in () if args.batchnorm_only else (50, 256):
        rows.append((f"train batch {batch}", batch, train_row(batch, args.steps)))
    # conv-BN-ReLU: the baseline with BatchNorm2d after each convolution, same weights in torch
    rows.append(("train conv-BN b256", 256, train_row(256, args.steps, batchnorm=True)))
    if args.batchnorm_only:
        _print_rows(rows)
        return
    model_cg = build_convgrad()
    model_t = build_torch(model_cg.state_dict())
    inf = inference(model_cg, model_t, 1000, max(5, args.steps // 4))
    rows.append(("inference batch 1000", 1000, inf))
    latency = inference(model_cg, model_t, 1, 5 * args.steps)
    rows.append(("inference batch 1", 1, latency))
    _print_rows(rows)
    print(f"inference batch 1 latency (median): convgrad {latency['convgrad'] * 1e3:.2f} ms, "
          f"torch {latency['torch'] * 1e3:.2f} ms")
    print(f"inference outputs agree to {inf['max_abs_diff']:.2e} (max abs diff, float32)")
    mem = measure_memory(256, args.threads)
    ours, theirs = mem["convgrad"]["growth_mib"], mem["torch"]["growth_mib"]
    print(f"{'train memory b256':22}{ours:10.1f}MB{theirs:10.1f}MB{ours / theirs:8.2f}"
          "   (peak RSS growth while training)")
    ours, theirs = mem["convgrad"]["peak_mib"], mem["torch"]["peak_mib"]
    print(f"{'process peak RSS b256':22}{ours:10.1f}MB{theirs:10.1f}MB{ours / theirs:8.2f}"
          "   (whole process, library included)")
    if not args.no_layers:
        import bench_layers

        peak1, peak2 = bench_layers.gemm_peak(1), bench_layers.gemm_peak(2)
        print(f"\nsgemm 2048^3 float32 peak: {peak1:.1f} GFLOP/s (1 thread), {peak2:.1f} "
              "GFLOP/s (2 threads)")
        if args.threads >= 2 and peak2 < 1.5 * peak1:
            print("  (the 2-thread sgemm is under 1.5x the 1-thread one: the other core was busy "
                  "with other processes, so the '%pk' columns below are against a low peak)")
        for batch in (50, 256):
            bench_layers.print_profile(bench_layers.profile(batch, 5, args.threads), peak1, peak2)
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s  load average now "
          f"{__import__('os').getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
