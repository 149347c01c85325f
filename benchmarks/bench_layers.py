"""Where a convgrad training step's time goes: per layer, inside and outside the matrix products.

A profiling pass over the Deep MNIST network (called by bench_deep_mnist.py, or run alone):

* every layer's forward (the module call) and backward (its Functions' backward, attributed
  through the op's context) is timed on the main thread, and so are the loss and the optimizer;
* every BLAS call the kernels make (``np.matmul`` in convgrad.kernels.conv, .linear and
  .winograd: its channel products; its tile transforms count as outside), on any thread, is
  timed on the thread that makes it, and booked to the layer running at that moment;
* every parallel section (convgrad.parallel.parallel_for) is timed on the main thread, and the
  work of each thread inside it, so the main thread's wait on the workers splits into the
  workers' useful work and hand-off / idle time;
* the peak of the machine: a large float32 GEMM (sgemm) timed with 1 and with 2 BLAS threads.

The profiling pass changes nothing in the arithmetic: it swaps in timing wrappers around the
same functions and puts the originals back afterwards. Its timers cost a few microseconds per
call, so the profiled step is slightly slower than the unprofiled one printed beside it.

Usage:
    python benchmarks/bench_layers.py [--batch 50 256] [--steps 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np

LAYERS = ("conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "loss", "optimizer")
"""Row names; pool1/pool2 include the ReLU before them (Sequential runs the two as one op: the
pool, then the ReLU on its output), fc1 the flatten, ReLU and dropout."""

MODULE_LAYER = ("conv1", "conv1", "pool1", "conv2", "conv2", "pool2", "fc1", "fc1", "fc1", "fc1",
                "fc2")
"""The layer row of each child of bench_deep_mnist.build_convgrad()'s Sequential."""


def layer_flops(batch: int) -> dict[str, tuple[float, float]]:
    """Multiply-add FLOPs (2 per multiply-add) of the products of each layer: (forward, backward).

    conv1 needs no input gradient (its input is the data), so its backward is the weight
    gradient alone; the other layers' backward is the weight and the input gradient, each as
    many FLOPs as the forward.
    """
    conv1 = 2.0 * batch * 28 * 28 * 32 * 25
    conv2 = 2.0 * batch * 14 * 14 * 64 * 25 * 32
    fc1 = 2.0 * batch * 3136 * 1024
    fc2 = 2.0 * batch * 1024 * 10
    return {"conv1": (conv1, conv1), "conv2": (conv2, 2 * conv2), "fc1": (fc1, 2 * fc1),
            "fc2": (fc2, 2 * fc2)}


def gemm_peak(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a size^3 float32 product through NumPy's BLAS with that many BLAS threads
    (the best of ``repeats``: the machine's peak, not its typical speed under load)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    out = np.empty_like(a)
    best = float("inf")
    with threadpool_limits(threads, user_api="blas"):
        np.matmul(a, b, out=out)
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


class _TimedNumpy:
    """Stands in for the ``np`` of a kernel module: every attribute is NumPy's, except matmul,
    which is timed and booked to the current layer (on whichever thread calls it)."""

    def __init__(self, profiler: Profiler) -> None:
        self._profiler = profiler

    def __getattr__(self, name: str):
        return getattr(np, name)

    def matmul(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return np.matmul(*args, **kwargs)
        finally:
            self._profiler.book_blas(time.perf_counter() - start)


class Profiler:
    """Timers for one profiled training step at a time; see the module docstring."""

    def __init__(self) -> None:
        self.layer = "other"
        self.lock = threading.Lock()
        self.forward: dict[str, float] = defaultdict(float)
        self.backward: dict[str, float] = defaultdict(float)
        self.blas: dict[tuple[str, str], float] = defaultdict(float)  # (layer, pass) -> s
        self.phase = "forward"
        self.sections = 0
        self.section_wall = 0.0  # main thread, inside parallel sections
        self.main_work = 0.0  # main thread's own part of the sections
        self.worker_work = 0.0  # the workers' parts
        self.ctx_layer: dict[int, str] = {}

    def reset(self) -> None:
        self.__init__()

    def book_blas(self, seconds: float) -> None:
        with self.lock:
            self.blas[(self.layer, self.phase)] += seconds

    @contextlib.contextmanager
    def timing(self, layer: str, phase: str) -> Iterator[None]:
        previous = self.layer, self.phase
        self.layer, self.phase = layer, phase
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            (self.forward if phase == "forward" else self.backward)[layer] += spent
            self.layer, self.phase = previous

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Swap the timing wrappers in (kernels' np, Functions' backward, parallel sections)."""
        from convgrad import ops, parallel
        from convgrad.engine import Function
        from convgrad.kernels import conv, linear, pool, winograd
        from convgrad.optim import optimizer

        saved: list[tuple[object, str, object, bool]] = []

        def swap(owner: object, name: str, value: object) -> None:
            own = name in vars(owner) if isinstance(owner, type) else True
            saved.append((owner, name, vars(owner).get(name), own))
            setattr(owner, name, value)

        timed_np = _TimedNumpy(self)
        swap(conv, "np", timed_np)
        swap(linear, "np", timed_np)
        swap(winograd, "np", timed_np)  # its channel products; its transforms are not counted
        profiler = self
        original_run = parallel._Job.run
        original_parallel_for = parallel.parallel_for

        def run(job, queue):
            start = time.perf_counter()
            try:
                original_run(job, queue)
            finally:
                spent = time.perf_counter() - start
                with profiler.lock:
                    if threading.current_thread() is threading.main_thread():
                        profiler.main_work += spent
                    else:
                        profiler.worker_work += spent

        def parallel_for(parts, fn, nbytes, blas=False):
            if getattr(parallel._local, "inside", False):
                return original_parallel_for(parts, fn, nbytes, blas)
            start = time.perf_counter()
            try:
                original_parallel_for(parts, fn, nbytes, blas)
            finally:
                profiler.sections += 1
                profiler.section_wall += time.perf_counter() - start

        swap(parallel._Job, "run", run)
        for module in (parallel, conv, linear, pool, optimizer, winograd):
            swap(module, "parallel_for", parallel_for)
        functions = [value for value in vars(ops).values()
                     if isinstance(value, type) and issubclass(value, Function)]
        originals = [function.backward for function in functions]  # bound before any swap
        for function, backward in zip(functions, originals, strict=True):
            swap(function, "backward", staticmethod(self._timed_backward(backward)))
        try:
            yield
        finally:
            for owner, name, value, own in reversed(saved):
                if own:
                    setattr(owner, name, value)
                else:
                    delattr(owner, name)

    def _timed_backward(self, backward):
        def timed(ctx, grad_output):
            with self.timing(self.ctx_layer.get(id(ctx), "other"), "backward"):
                return backward(ctx, grad_output)

        return timed

    def record(self, tensor, layer: str) -> None:
        """Book the backward of the op that made tensor to layer."""
        node = getattr(tensor, "_node", None)
        if node is not None and node.ctx is not None:
            self.ctx_layer[id(node.ctx)] = layer


def profiled_step(profiler: Profiler, model, optimizer, x: np.ndarray, y: np.ndarray) -> float:
    """One training step with every layer timed; returns the step's wall time (s)."""
    import convgrad as cg

    start = time.perf_counter()
    optimizer.zero_grad()
    from convgrad.nn.layers import _steps

    h = cg.Tensor._wrap(x)
    for index, step in _steps(list(model)):  # what Sequential.forward runs (ReLU + pool fused)
        layer = MODULE_LAYER[index]
        with profiler.timing(layer, "forward"):
            h = step(h)
        profiler.record(h, layer)
    with profiler.timing("loss", "forward"):
        loss = cg.nn.functional.cross_entropy(h, y)
    profiler.record(loss, "loss")
    loss.backward()
    with profiler.timing("optimizer", "forward"):
        optimizer.step()
    return time.perf_counter() - start


def profile(batch: int, steps: int, threads: int) -> dict:
    """Median per-layer times over ``steps`` profiled steps (after 2 unprofiled warm-up steps)."""
    from bench_deep_mnist import build_convgrad, make_batches

    import convgrad as cg

    model = build_convgrad()
    optimizer = cg.optim.Adam(model.parameters(), lr=1e-4)
    batches = make_batches(batch, steps + 2, seed=1)
    for x, y in batches[:2]:
        optimizer.zero_grad()
        cg.nn.functional.cross_entropy(model(cg.Tensor._wrap(x)), y).backward()
        optimizer.step()
    profiler = Profiler()
    records = []
    with profiler.installed():
        for x, y in batches[2:]:
            profiler.reset()
            wall = profiled_step(profiler, model, optimizer, x, y)
            records.append({
                "wall": wall,
                "forward": dict(profiler.forward),
                "backward": dict(profiler.backward),
                "blas": dict(profiler.blas),
                "section_wall": profiler.section_wall,
                "main_work": profiler.main_work,
                "worker_work": profiler.worker_work,
                "sections": profiler.sections,
            })

    def median(get) -> float:
        return float(np.median([get(r) for r in records]))

    result = {
        "batch": batch, "threads": threads,
        "wall": median(lambda r: r["wall"]),
        "section_wall": median(lambda r: r["section_wall"]),
        "main_work": median(lambda r: r["main_work"]),
        "worker_work": median(lambda r: r["worker_work"]),
        "sections": median(lambda r: r["sections"]),
        "blas_total": median(lambda r: sum(r["blas"].values())),
        "layers": {},
    }
    for layer in LAYERS:
        result["layers"][layer] = {
            "forward": median(lambda r, k=layer: r["forward"].get(k, 0.0)),
            "backward": median(lambda r, k=layer: r["backward"].get(k, 0.0)),
            "blas_forward": median(lambda r, k=layer: r["blas"].get((k, "forward"), 0.0)),
            "blas_backward": median(lambda r, k=layer: r["blas"].get((k, "backward"), 0.0)),
        }
    return result


def print_profile(result: dict, peak1: float, peak2: float) -> None:
    """The per-layer table (ms, GFLOP/s against the sgemm peak) and the step's overhead split."""
    batch, threads = result["batch"], result["threads"]
    flops = layer_flops(batch)
    peak = peak2 if threads >= 2 else peak1
    print(f"\nper layer, convgrad training step, batch {batch}, {threads} threads "
          f"(median of profiled steps; GEMM peak {peak:.1f} GFLOP/s)")
    print(f"{'layer':10}{'fwd ms':>9}{'bwd ms':>9}{'fwd GF/s':>10}{'bwd GF/s':>10}"
          f"{'fwd %pk':>9}{'bwd %pk':>9}{'BLAS ms':>9}{'outside':>9}")
    total_time = 0.0
    for layer in LAYERS:
        row = result["layers"][layer]
        fwd, bwd = row["forward"], row["backward"]
        total_time += fwd + bwd
        blas = row["blas_forward"] + row["blas_backward"]  # thread-seconds in BLAS calls
        # share of the layer's core-time (wall x threads) outside the products
        outside = 1 - blas / (threads * (fwd + bwd)) if fwd + bwd > 0 else 0.0
        if layer in flops:
            ff, fb = flops[layer]
            gf, gb = ff / fwd / 1e9 if fwd else 0.0, fb / bwd / 1e9 if bwd else 0.0
            print(f"{layer:10}{fwd * 1e3:9.2f}{bwd * 1e3:9.2f}{gf:10.1f}{gb:10.1f}"
                  f"{100 * gf / peak:8.0f}%{100 * gb / peak:8.0f}%{blas * 1e3:9.2f}"
                  f"{100 * outside:8.0f}%")
        else:
            print(f"{layer:10}{fwd * 1e3:9.2f}{bwd * 1e3:9.2f}{'-':>10}{'-':>10}{'-':>9}{'-':>9}"
                  f"{blas * 1e3:9.2f}{100 * outside:8.0f}%")
    print("  (GF/s count a direct convolution's multiply-adds; a layer on the Winograd route "
          "does 9/25 of them,\n   so its effective rate can pass the GEMM peak)")
    wall = result["wall"]
    total_flops = sum(f + b for f, b in flops.values())
    blas = result["blas_total"]
    print(f"{'step':10}{wall * 1e3:18.2f}{total_flops / wall / 1e9:10.1f} GFLOP/s overall "
          f"({100 * total_flops / wall / 1e9 / peak:.0f}% of peak); "
          f"layers account for {total_time * 1e3:.1f} ms")
    print(f"  time inside BLAS calls: {blas * 1e3:.1f} thread-ms of {threads * wall * 1e3:.1f} "
          f"core-ms -> {100 * (1 - blas / (threads * wall)):.0f}% of the step's core-time is "
          "outside the products (overhead)")
    section, main, worker = result["section_wall"], result["main_work"], result["worker_work"]
    if threads >= 2 and section > 0:
        wait = section - main
        idle = threads * section - main - worker
        print(f"  parallel sections: {result['sections']:.0f} per step, {section * 1e3:.1f} ms "
              f"wall ({100 * section / wall:.0f}% of the step); main thread: own parts "
              f"{main * 1e3:.1f} ms, waiting on workers {wait * 1e3:.1f} ms; workers' useful "
              f"work {worker * 1e3:.1f} ms; hand-off + idle {idle * 1e3:.1f} thread-ms "
              f"({100 * idle / (threads * section):.0f}% of the sections' core-time)")
        serial = wall - section
        print(f"  outside parallel sections (one thread: Python, autograd, small kernels): "
              f"{serial * 1e3:.1f} ms ({100 * serial / wall:.0f}% of the step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[50, 256])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    import convgrad as cg

    threadpool_limits(args.threads)
    cg.set_num_threads(args.threads)
    peak1, peak2 = gemm_peak(1), gemm_peak(2)
    print(f"sgemm 2048^3 float32 peak: {peak1:.1f} GFLOP/s (1 thread), {peak2:.1f} GFLOP/s "
          "(2 threads)")
    for batch in args.batch:
        print_profile(profile(batch, args.steps, args.threads), peak1, peak2)


if __name__ == "__main__":
    main()
