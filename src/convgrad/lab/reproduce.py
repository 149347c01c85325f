"""Run many experiments (and sweep points), one at a time or in parallel processes.

With ``jobs`` > 1 each run goes to a process of a spawn-started pool whose BLAS and convgrad
kernels are limited to ``max(1, cores // jobs)`` threads (threadpoolctl, cg.set_num_threads):
on a small machine several single-threaded runs use the cores better than one run whose
kernels are too small to keep two threads busy.
Longest runs are submitted first, so the pool ends with the short ones.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from convgrad.lab.spec import BUDGETS, ExperimentSpec, builtin_names, resolve_spec, validate_spec


@dataclass(frozen=True)
class Task:
    """One run: a spec without a sweep, its directory and how to run it."""

    spec: ExperimentSpec
    run_dir: Path
    resume: bool = False
    budget: str = "custom"
    keep_checkpoints: int | None = None

    @property
    def label(self) -> str:
        """``name``, ``name/point``, ``name/seed-1`` or ``name/seed-1/point`` (as run_dir)."""
        parts = [self.spec.name]
        if self.run_dir.name.startswith("seed-") or self.run_dir.parent.name.startswith("seed-"):
            parts.append(f"seed-{self.spec.seed}")
        if self.spec.point:
            parts.append(self.spec.point)
        return "/".join(parts)

    @property
    def cost(self) -> float:
        """Estimated seconds of training (the spec's ``ms_per_example`` hint), for ordering."""
        per_example = self.spec.ms_per_example / 1000
        return self.spec.train.steps * self.spec.train.batch_size * per_example


def tasks_for(
    spec: ExperimentSpec,
    out_dir: Path,
    *,
    resume: bool = False,
    budget: str = "custom",
    keep_checkpoints: int | None = None,
    seeds: int | None = None,
) -> list[Task]:
    """One task per seed and sweep point (``out_dir/seed-1/keep-0.5``), or one in ``out_dir``.

    Args:
        keep_checkpoints: checkpoint generations each run keeps; None: the spec's.
        seeds: run seeds 0 .. seeds - 1 (overrides the spec's ``seeds``); None: the spec's.
    """
    tasks = []
    for seed_dir, seed_spec in spec.seed_points(seeds):
        for point, point_spec in seed_spec.sweep_points():
            run_dir = Path(out_dir) / seed_dir / point
            tasks.append(Task(point_spec, run_dir, resume, budget, keep_checkpoints))
    return tasks


def suite_tasks(
    budget: str,
    out_dir: Path,
    *,
    names: Sequence[str] | None = None,
    resume: bool = True,
    seeds: int | None = None,
) -> list[Task]:
    """The tasks of every registered experiment under ``budget``, in ``out_dir/<name>``."""
    if budget not in BUDGETS:
        raise ValueError(f"expected budget in {list(BUDGETS)}, received {budget!r}")
    tasks = []
    for name in names or builtin_names():
        spec = resolve_spec(name).with_overrides(budget=budget)
        tasks += tasks_for(spec, Path(out_dir) / name, resume=resume, budget=budget, seeds=seeds)
    return tasks


PARENT_POLL_S = 0.5
"""How often a pool worker checks that the process that started it is still alive."""


def _end_with_parent(parent: int) -> None:
    """Pool worker initializer: end this process as soon as ``parent`` is gone.

    A parent killed outright (SIGKILL, an out-of-memory kill) cannot stop its workers, and
    orphaned workers would go on training for nobody. Ending one at any instant is safe: every
    file a run writes is written atomically, its lock dies with it, and the run resumes exactly.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="convgrad-parent-watch", daemon=True).start()


def _run_task(payload: dict[str, Any], threads: int | None, progress: bool) -> dict[str, Any]:
    """Worker: run one task with BLAS and convgrad limited to ``threads``; never raises."""
    import convgrad as cg
    from convgrad.errors import RunLockedError
    from convgrad.lab.runner import run_experiment

    if threads is not None:
        cg.set_num_threads(threads)

    spec = validate_spec(payload["spec"])
    started = time.perf_counter()
    try:
        with threadpool_limits(limits=threads):
            outcome = run_experiment(
                spec, payload["run_dir"], resume=payload["resume"], progress=progress,
                budget=payload["budget"], keep_checkpoints=payload.get("keep_checkpoints"),
            )
        return {**outcome.result, "status": outcome.status, "run_dir": str(outcome.run_dir)}
    except RunLockedError as error:  # another process is writing this run: not a failure of it
        return {
            "name": spec.name, "point": spec.point, "status": "locked",
            "run_dir": payload["run_dir"], "message": str(error),
            "wall_time": time.perf_counter() - started,
        }
    except Exception as error:  # reported as a failed run; the suite goes on
        return {
            "name": spec.name, "point": spec.point, "status": "failed",
            "run_dir": payload["run_dir"], "message": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(), "wall_time": time.perf_counter() - started,
        }


def run_tasks(
    tasks: Sequence[Task],
    jobs: int = 1,
    *,
    progress: bool | None = None,
    say: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``tasks``, ``jobs`` at a time, each with ``max(1, cores // jobs)`` threads.

    Args:
        tasks: the runs.
        jobs: parallel processes; 1 runs in this process.
        progress: tqdm bars (only with jobs == 1); default: when stderr is a terminal.
        say: called with one line as each run ends.

    Returns:
        One result dict per task, in the order of ``tasks`` (status completed, diverged or
        failed; ``message`` says why).
    """
    say = say or (lambda line: None)
    cores = os.cpu_count() or 1
    jobs = max(1, min(int(jobs), len(tasks) or 1))
    threads = max(1, cores // jobs)
    payloads = [
        {"spec": t.spec.model_dump(mode="json"), "run_dir": str(t.run_dir), "resume": t.resume,
         "budget": t.budget, "keep_checkpoints": t.keep_checkpoints}
        for t in tasks
    ]
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    show = sys.stderr.isatty() if progress is None else progress
    if jobs == 1:
        for index, (task, payload) in enumerate(zip(tasks, payloads, strict=True)):
            results[index] = _run_task(payload, None, show)
            say(_summary_line(task, results[index]))
        return results  # type: ignore[return-value]
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].cost)
    context = multiprocessing.get_context("spawn")
    # each worker watches this process once, for all the tasks it runs
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                               initializer=_end_with_parent, initargs=(os.getpid(),))
    try:
        # Workers start with SIGINT ignored (inherited through exec): a Ctrl-C reaches the whole
        # process group, and only this process should react to it, with one line, not one
        # traceback per worker. Each worker's run-directory lock is released when it is ended.
        # A SIGTERM (kill, a job scheduler's stop) ends this process through the cleanup below,
        # so that the workers end with it.
        with _sigint_ignored():
            futures = {pool.submit(_run_task, payloads[i], threads, False): i for i in order}
        with _sigterm_exits():
            for future in as_completed(futures):
                index = futures[future]
                results[index] = future.result()
                say(_summary_line(tasks[index], results[index]))
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results  # type: ignore[return-value]


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT meanwhile (in the main thread; elsewhere signal handlers cannot change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """Meanwhile, SIGTERM raises SystemExit(143) (128 + SIGTERM) in the main thread, so that
    ``finally`` and ``except`` blocks run; elsewhere signal handlers cannot change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _summary_line(task: Task, result: dict[str, Any]) -> str:
    accuracy = result.get("test_acc")
    shown = f"test accuracy {accuracy:.4f}" if isinstance(accuracy, float) else result.get(
        "message", ""
    )
    wall = result.get("wall_time") or 0.0
    return f"{task.label:<24} {result['status']:<9} {shown} ({wall:.0f} s)"
