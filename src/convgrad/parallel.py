"""convgrad's kernels on several cores.

NumPy releases the GIL inside its loops, so one large elementwise operation, copy or per-slice
computation split into parts runs on several threads at once. convgrad uses it for its hot
paths: activations, pooling, the convolution's patch copies and the optimizers' updates (about
1.5x faster on 2 cores), and the convolution and linear products, each part one
single-threaded BLAS call. Keeping the BLAS's own threads out of it matters: after a
multi-threaded call, OpenBLAS's idle workers spin for a while on the cores that the next
kernels need (measured on 2 cores, Deep MNIST at batch 256: 432-466 ms per training step with
the products on convgrad's threads, 492-514 ms with the linear layers left to the BLAS's).

Every run with the same thread count gives the same bits: the parts are fixed by the shapes and
the thread count, and partial sums are added in a fixed order. Across thread counts, the
elementwise kernels, copies and optimizer updates still give the same bits; the matrix
products may differ in the last bits, because a single-threaded BLAS call and a multi-threaded
one need not round alike (OpenBLAS's do not).

``cg.set_num_threads(n)`` sets the count (default: the CPUs this process may run on), like
``torch.set_num_threads``; 1 turns the threads off.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from convgrad.errors import ArgumentError

T = TypeVar("T")

MIN_PARALLEL_BYTES = 1 << 20
"""Below about this many bytes of work a thread hand-off (tens of microseconds) costs more than
the second core saves: such work runs in the calling thread."""


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_threads = _default_threads()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_local = threading.local()


def _forget_pool() -> None:
    """In a forked child: the parent's worker threads do not exist there; start afresh."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def get_num_threads() -> int:
    """The number of threads convgrad's kernels use."""
    return _threads


def set_num_threads(n: int) -> None:
    """Use n threads (n >= 1) for convgrad's kernels: activations, pooling, patch copies and
    optimizer updates, and the convolution and linear products, whose BLAS calls are made
    single-threaded while they run on these threads. With n == 1 the products use the BLAS's
    own threads (threadpoolctl.threadpool_limits or OPENBLAS_NUM_THREADS set those)."""
    global _threads, _pool
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ArgumentError(f"set_num_threads: expected an int >= 1, got {n!r}")
    with _pool_lock:
        if n != _threads and _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _threads = n


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_threads - 1, thread_name_prefix="convgrad")
        return _pool


class _Job:
    """One parallel_for call: its parts, taken by the threads from their queues (see _queues),
    and the count of parts not yet finished."""

    __slots__ = ("fn", "left", "lock", "done", "error")

    def __init__(self, fn: Callable[[Any], None], count: int) -> None:
        self.fn = fn
        self.left = count
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self, queue: Iterator[Any]) -> None:
        """Call fn on the parts this thread takes from queue; after a failure anywhere, the
        remaining parts are only counted off."""
        _local.inside = True
        try:
            for part in queue:  # next() on a shared iterator is atomic under the GIL
                if self.error is None:
                    try:
                        self.fn(part)
                    except BaseException as exc:  # re-raised in the calling thread
                        with self.lock:
                            if self.error is None:
                                self.error = exc
                with self.lock:
                    self.left -= 1
                    if self.left == 0:
                        self.done.set()
        finally:
            _local.inside = False


def _queues(parts: Sequence[T], workers: int) -> list[Iterator[T]]:
    """Where each thread takes its parts: one iterator shared by all, so that a thread that is
    slowed (another process on its core, a part that takes longer) takes fewer of them. Which
    thread computes a part never changes its result, so the bits do not depend on it."""
    shared = iter(parts)
    return [shared] * workers


def parallel_for(
    parts: Sequence[T], fn: Callable[[T], None], nbytes: int, blas: bool = False
) -> None:
    """Call fn(part) for every part, the parts spread over get_num_threads() threads.

    The threads take the parts in order from one shared queue, each taking the next one when it
    is free (the calling thread among them, starting at once); the call returns when every part
    is done. A worker that wakes after the others have taken everything does nothing, so small
    jobs do not wait for a thread to wake. fn must only write memory that no other part writes,
    and its result must not depend on the thread that runs it. Exceptions propagate (the first
    one raised; the parts not yet started are skipped). Runs serially for small work (nbytes <
    MIN_PARALLEL_BYTES), with one thread, and inside a part (no nesting).

    Args:
        parts: the work items (e.g. slices of the batch).
        fn: called once per part.
        nbytes: about how many bytes the whole job touches (decides whether threads pay off).
        blas: the parts call the BLAS (matrix products). When they run on several threads the
            BLAS is made single-threaded meanwhile (our threads already use the cores), which
            also keeps its idle worker threads from spinning on the cores our threads need.
    """
    workers = min(_threads, len(parts))
    if workers < 2 or nbytes < MIN_PARALLEL_BYTES or getattr(_local, "inside", False):
        # With several convgrad threads the products are single-threaded BLAS calls whether
        # they are split or not, so that their bits never depend on the size of the work or on
        # what another user thread is doing with the (process-wide) BLAS thread count.
        switch = blas and _threads > 1 and not getattr(_local, "inside", False)
        with _single_threaded_blas() if switch else contextlib.nullcontext():
            for part in parts:
                fn(part)
        return
    job = _Job(fn, len(parts))
    queues = _queues(parts, workers)
    with _single_threaded_blas() if blas else contextlib.nullcontext():
        pool = _get_pool()
        for queue in queues[1:]:
            pool.submit(job.run, queue)
        job.run(queues[0])
        job.done.wait()
    if job.error is not None:
        raise job.error


_blas_controllers: list | None = None
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved: list[int] = []


def _controllers() -> list:
    global _blas_controllers
    if _blas_controllers is None:
        from threadpoolctl import ThreadpoolController

        _blas_controllers = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_controllers


class _SingleThreadedBlas:
    """Set every loaded BLAS to one thread while at least one caller is inside.

    The BLAS thread count is process-wide, so the switch is too: a reference count under a lock.
    The first caller to enter saves each library's count and sets it to 1; the last one to
    leave restores the saved counts. Callers in several user threads at once therefore never
    restore a count another one set (which used to leave OpenBLAS at 1 thread for good).

    A plain class rather than a generator-based context manager: it is entered once per
    parallel section (a few dozen times per training step); measured, the whole switch took
    about 7 microseconds as a generator and about 5.7 as a class (the two BLAS calls about 1).
    """

    __slots__ = ()

    def __enter__(self) -> None:
        global _blas_users, _blas_saved
        with _blas_lock:
            controllers = _controllers()
            if _blas_users == 0:
                _blas_saved = [c.get_num_threads() for c in controllers]
                for c in controllers:
                    _set_blas_threads(c, 1)
            _blas_users += 1

    def __exit__(self, *exc_info: object) -> None:
        global _blas_users, _blas_saved
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for c, n in zip(_controllers(), _blas_saved, strict=True):
                    _set_blas_threads(c, n)
                _blas_saved = []


_SINGLE_THREADED_BLAS = _SingleThreadedBlas()


def _single_threaded_blas() -> _SingleThreadedBlas:
    """The context manager that keeps every loaded BLAS at one thread while it is entered."""
    return _SINGLE_THREADED_BLAS


def _set_blas_threads(controller: object, n: int) -> None:
    """Set a BLAS's thread count from whichever user thread holds ``_blas_lock``.

    threadpoolctl's ``set_num_threads`` for OpenBLAS (pthreads) silently ignores calls from any
    thread but the first one that used it (its "controlling thread"), so a switch made from a
    second user thread would not happen; ``_blas_lock`` already serialises every change convgrad
    makes, so the library's own setter is called directly where threadpoolctl exposes it.
    """
    setter = getattr(controller, "_real_set_num_threads", None) or controller.set_num_threads
    setter(n)


def _forget_blas_users() -> None:
    """In a forked child no thread of the parent is inside the switch (its count was copied)."""
    global _blas_lock, _blas_users
    _blas_lock, _blas_users = threading.Lock(), 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_blas_users)


def thread_buffer(store: threading.local, size: int, dtype: np.dtype) -> np.ndarray:
    """A flat scratch array of at least ``size`` elements, one per thread for a given store (a
    ``threading.local()`` the caller creates for one job): parts running on different threads
    never share it, parts running on the same thread reuse it."""
    buffer = getattr(store, "buffer", None)
    if buffer is None or buffer.size < size or buffer.dtype != dtype:
        buffer = store.buffer = np.empty(size, dtype=dtype)
    return buffer


def split(n: int, pieces: int | None = None) -> list[slice]:
    """range(n) cut into ``pieces`` (default: the thread count) contiguous, near-equal slices
    (fewer when n < pieces; one empty slice when n == 0)."""
    pieces = max(1, min(n, pieces or _threads))
    return [slice(n * k // pieces, n * (k + 1) // pieces) for k in range(pieces)]


def split_batch(n: int, bytes_per_item: int, limit: int) -> list[slice]:
    """Split range(n) into the fewest balanced slices of whole items (images, rows) of at most
    limit bytes each (one item per slice when a single item exceeds it)."""
    if n <= 0:
        return []
    per_slice = max(1, min(n, limit // max(bytes_per_item, 1)))
    count = -(-n // per_slice)
    per_slice = -(-n // count)  # balance the slices
    return [slice(i, min(i + per_slice, n)) for i in range(0, n, per_slice)]


def copyto(target: np.ndarray, source: np.ndarray) -> None:
    """np.copyto(target, source) (same shapes), split along the first axis over the threads."""
    if target.ndim == 0 or target.shape[0] < 2 or getattr(_local, "inside", False):
        np.copyto(target, source)
        return
    parts = split(target.shape[0])
    parallel_for(parts, lambda s: np.copyto(target[s], source[s]), target.nbytes)


CHUNK_BYTES = 1 << 20
"""Row chunks for :func:`for_rows` hold about this many bytes: small enough that the
temporaries of a multi-pass kernel stay in the cache, large enough that the per-chunk Python
overhead (microseconds) is negligible."""


def for_rows(fn: Callable[[slice], None], x: np.ndarray) -> None:
    """Call fn(rows) over chunks of x's first axis (about CHUNK_BYTES each), on the threads.

    For elementwise kernels: fn(s) reads x[s] (and arrays of x's shape) and writes out[s] only.
    A 0-d x, or one with a single row, is one call fn(slice(None)) in this thread.
    """
    if x.ndim == 0 or x.shape[0] < 2:
        fn(slice(None))
        return
    parallel_for(split_batch(x.shape[0], x.nbytes // x.shape[0], CHUNK_BYTES), fn, x.nbytes)
