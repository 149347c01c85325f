"""The lab on a Ray cluster: every run (each sweep point, each experiment) is one Ray task.

``convgrad run NAME --ray [ADDRESS]`` and ``convgrad reproduce --budget B --ray [ADDRESS]`` send
each run to a Ray task that asks for ``num_cpus = k`` (``--cpus-per-run``, default 1) and limits
convgrad's kernels and the BLAS to ``k`` threads, exactly like a process of the local pool
(:func:`convgrad.lab.reproduce._run_task` is the task body). The thread count decides the last
bits of every float sum, so a run gets the same ``k`` on every attempt; its checkpoints record it.

Fault tolerance is the runner's exact resume: a run directory always holds a complete checkpoint,
and every attempt of a task starts with ``resume=True`` (the driver checks beforehand that a run
that should start fresh finds its directory empty). When a worker process or a node dies, Ray
submits the task again (``--max-retries`` times) and the new attempt continues from the last
checkpoint, ending bit-identical to an uninterrupted run. When the driver is interrupted, its tasks
are cancelled; every run directory is left resumable and the same command with ``--resume``
continues them.

Run directories live under ``--storage`` (default ``--out``), which every node and the driver must
reach (a shared filesystem): workers write them, the driver reads them for the report.

Ray is an optional dependency (``pip install 'convgrad[ray]'``); it is imported only here, and only
when ``--ray`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from convgrad.errors import ArgumentError
from convgrad.lab.checkpoint import MANIFEST

RAY_EXTRA = "convgrad[ray]"
CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_RETRIES = 3
LOCAL_START_ATTEMPTS = 3
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class RayUnavailableError(ArgumentError):
    """``--ray`` was asked for but Ray is not installed."""


class ClusterError(ArgumentError):
    """The Ray cluster could not be reached or started."""


def import_ray() -> Any:
    """``import ray``, or a one-line error naming the extra that installs it.

    Raises:
        RayUnavailableError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            f"--ray needs Ray, which is not installed: pip install '{RAY_EXTRA}'"
        ) from None
    return ray


# ---------------------------------------------------------------------------------- cluster
def _probe(host: str, port: int, timeout: float, address: str) -> None:
    """Open and close a TCP connection: an unreachable cluster fails fast instead of hanging."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise ClusterError(
            f"cannot reach the Ray cluster at {address!r}: {reason} (within {timeout:g} s)"
        ) from None


def parse_address(address: str) -> tuple[str, str | None, int | None]:
    """``(kind, host, port)``: kind ``local``, ``auto``, ``client`` (``ray://host:port``) or
    ``gcs`` (``host:port`` of a head node's GCS).

    Raises:
        ClusterError: anything else.
    """
    if address in ("local", "auto"):
        return address, None, None
    client = address.startswith("ray://")
    parts = urlsplit(address if client else f"//{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise ClusterError(
            f"--ray: expected 'local', 'auto', 'ray://HOST:PORT' or 'HOST:PORT', received "
            f"{address!r}"
        )
    return ("client" if client else "gcs"), host, port


@contextlib.contextmanager
def connect(
    address: str = "local",
    *,
    num_cpus: int | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Iterator[Any]:
    """Connect to (or start) a Ray cluster for the duration of a ``with`` block.

    Args:
        address: ``local`` starts a cluster on this machine (127.0.0.1, no dashboard) and stops
            it at the end; ``auto`` joins the cluster started on this machine with ``ray start``;
            ``ray://HOST:PORT`` connects through the Ray client; ``HOST:PORT`` joins a head
            node's GCS. If this process is already connected, that connection is used and kept.
        num_cpus: CPUs of a ``local`` cluster (default: all).
        timeout: seconds to wait for a remote address to accept a connection.

    Yields:
        The ``ray`` module.

    Raises:
        RayUnavailableError: Ray is not installed.
        ClusterError: the address is malformed or unreachable, or no cluster runs for ``auto``.
    """
    kind, host, port = parse_address(address)
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if host is not None and port is not None:
        _probe(host, port, timeout, address)
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if kind == "local":
        options.update(
            address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
            _node_ip_address="127.0.0.1",
        )
    else:
        options["address"] = address
    # a local start is tried again: on a loaded machine Ray's raylet can time out waiting for
    # its agent processes to start
    attempts = LOCAL_START_ATTEMPTS if kind == "local" else 1
    for attempt in range(1, attempts + 1):
        try:
            loopback = kind == "local" or _is_loopback(host)
            with _local_environment(ray, local=loopback):
                ray.init(**options)
            break
        except Exception as error:  # Ray raises bare Exceptions too (a raylet that never started)
            with contextlib.suppress(Exception):
                ray.shutdown()
            if attempt == attempts:
                text = str(error).strip()
                first = text.splitlines()[0] if text else type(error).__name__
                raise ClusterError(f"cannot connect to Ray at {address!r}: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _local_environment(ray: Any, local: bool) -> Iterator[None]:
    """What a cluster on this machine (started here, or joined at a loopback address) sees
    while ``ray.init`` starts or joins it.

    - This convgrad's source root first on PYTHONPATH: a worker whose working directory differs
      (Tune trials run in their own directory) must not import another installed convgrad.
    - Loopback only: Ray replaces 127.0.0.1 with the machine's network address unless clusters
      are "disabled" (its switch for single-machine clusters on macOS and Windows), so a local
      cluster would otherwise advertise itself on the network, and a driver joining it at
      127.0.0.1 would look for its node under the network address and not find it.
    """
    if not local:
        yield
        return
    import convgrad

    constants = ray._private.ray_constants
    root = str(Path(convgrad.__file__).resolve().parents[1])
    keys = ("PYTHONPATH", constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
    saved = {key: os.environ.get(key) for key in keys}
    paths = [root] + [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p and p != root]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    os.environ[constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    enabled, constants.ENABLE_RAY_CLUSTER = constants.ENABLE_RAY_CLUSTER, False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = enabled
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------------- tasks
def task_name(label: str) -> str:
    """The Ray task name of a run (``convgrad:baseline/keep-0.5``); a busy worker process shows
    it as its title (``ray::convgrad:...``), which is how a person, or a test, finds its PID."""
    return f"convgrad:{label}"


def _checkpoint_step(run_dir: str | Path) -> int | None:
    try:
        return int(json.loads((Path(run_dir) / MANIFEST).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_attempt(payload: dict[str, Any], threads: int) -> dict[str, Any]:
    """The body of a Ray task: one attempt of one run, resuming from its last checkpoint.

    Returns the local pool's result dict plus ``resumed_from`` (the checkpoint step this attempt
    started from, None for a fresh start) and ``worker_pid``.
    """
    from convgrad.lab.reproduce import _run_task

    resumed_from = _checkpoint_step(payload["run_dir"])
    result = _run_task({**payload, "resume": True}, threads, False)
    return {**result, "resumed_from": resumed_from, "worker_pid": os.getpid()}


def preflight(tasks: Sequence[Any]) -> None:
    """Refuse, as the runner would, a run that should start fresh in an occupied directory.

    Every Ray attempt runs with ``resume=True`` (a retry must continue the first attempt's
    checkpoints), so this check happens once, in the driver, before anything is submitted.

    Raises:
        RunExistsError: a task without ``resume`` whose directory already holds a run.
    """
    from convgrad.lab.runner import RunExistsError

    for task in tasks:
        run_dir = Path(task.run_dir)
        if not task.resume and ((run_dir / "spec.json").exists()
                                or (run_dir / "metrics.jsonl").exists()):
            raise RunExistsError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another "
                "--out"
            )


def run_tasks_on_ray(
    tasks: Sequence[Any],
    *,
    cpus_per_run: int = 1,
    max_retries: int = DEFAULT_MAX_RETRIES,
    say: Callable[[str], None] | None = None,
    poll_s: float = 0.5,
) -> list[dict[str, Any]]:
    """Run ``tasks`` (:class:`convgrad.lab.reproduce.Task`) as Ray tasks on the connected cluster.

    Args:
        tasks: the runs; the longest are submitted first.
        cpus_per_run: ``num_cpus`` of each task and the thread count of its kernels and BLAS.
        max_retries: attempts after a worker or node died (application errors are not retried:
            they are reported as failed runs).
        say: called with one line as each run ends.
        poll_s: how often the driver wakes up (and can be interrupted).

    Returns:
        One result dict per task, in the order of ``tasks``, as :func:`run_tasks` returns them,
        plus ``resumed_from`` and ``worker_pid``.

    Raises:
        KeyboardInterrupt: after cancelling every unfinished task (their run directories stay
            resumable).
    """
    from convgrad.lab.reproduce import _summary_line

    ray = import_ray()
    say = say or (lambda line: None)
    preflight(tasks)
    remote = ray.remote(num_cpus=cpus_per_run, max_retries=max_retries, retry_exceptions=False)(
        _run_attempt
    )
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].cost)
    pending: dict[Any, int] = {}
    submitted: dict[int, float] = {}
    for index in order:
        task = tasks[index]
        payload = {"spec": task.spec.model_dump(mode="json"), "run_dir": str(task.run_dir),
                   "resume": True, "budget": task.budget}
        ref = remote.options(name=task_name(task.label)).remote(payload, cpus_per_run)
        pending[ref] = index
        submitted[index] = time.perf_counter()
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    done = 0
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
            for ref in ready:
                index = pending.pop(ref)
                task = tasks[index]
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:
                    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                    result = {
                        "name": task.spec.name, "point": task.spec.point, "status": "failed",
                        "run_dir": str(task.run_dir),
                        "message": f"{type(error).__name__} after {max_retries} retries: {first}",
                        "wall_time": time.perf_counter() - submitted[index],
                    }
                results[index] = result
                done += 1
                resumed = result.get("resumed_from")
                note = f" (resumed at step {resumed})" if resumed else ""
                say(f"[{done}/{len(tasks)}] {_summary_line(task, result)}{note}")
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------------------------- command line
def add_ray_arguments(parser: argparse.ArgumentParser, *, what: str = "run") -> None:
    """``--ray [ADDRESS]``, ``--storage``, ``--max-retries`` and ``--cpus-per-run``."""
    from convgrad.lab.cli_common import _non_negative, _positive

    group = parser.add_argument_group(
        "Ray", f"each {what} as a Ray task; needs pip install '{RAY_EXTRA}'"
    )
    group.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="run on Ray: 'local' (default: start a cluster on this machine), 'auto' (the "
        "cluster started here with 'ray start'), 'ray://HOST:PORT' or 'HOST:PORT'",
    )
    group.add_argument(
        "--storage", type=Path, metavar="DIR",
        help="existing directory, reachable from every node and the driver, that holds the run "
        "directories (default: --out)",
    )
    group.add_argument(
        "--max-retries", type=_non_negative, default=DEFAULT_MAX_RETRIES, metavar="N",
        help=f"attempts after a worker or node dies; each resumes from the last checkpoint "
        f"(default: {DEFAULT_MAX_RETRIES})",
    )
    group.add_argument(
        "--cpus-per-run", type=_positive, default=1, metavar="K",
        help="CPUs each run reserves and the threads its kernels and BLAS use (default: 1)",
    )


def _error(message: str) -> None:
    print(f"convgrad: error: {message}", file=sys.stderr)


def _storage(args: argparse.Namespace, default: Path) -> Path:
    """The root of the run directories: ``--storage`` (which must exist) or ``--out``."""
    storage, out = getattr(args, "storage", None), getattr(args, "out", None)
    if storage is None:
        return out or default
    if out is not None and Path(out).resolve() != Path(storage).resolve():
        raise ArgumentError(f"--storage {storage} and --out {out}: give one of them")
    if not Path(storage).is_dir():
        raise ArgumentError(
            f"--storage {storage}: expected an existing directory shared by every node, "
            "received a path that does not exist"
            if not Path(storage).exists() else f"--storage {storage}: not a directory"
        )
    return Path(storage)


def _check_options(args: argparse.Namespace) -> None:
    if getattr(args, "storage", None) is not None and args.ray is None:
        raise ArgumentError("--storage needs --ray")
    if args.ray is not None and getattr(args, "jobs", 1) > 1:
        raise ArgumentError("--jobs and --ray: give one (Ray runs as many runs as the cluster's "
                            "CPUs allow)")


def _run_and_report(
    args: argparse.Namespace, tasks: Sequence[Any], heading: str
) -> list[dict[str, Any]] | int:
    """Connect, run ``tasks``, and turn errors into one-line messages (an exit status)."""
    from convgrad.lab.runner import RunExistsError

    try:
        preflight(tasks)
        started = time.perf_counter()
        with connect(args.ray) as ray:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            print(f"{heading}: {len(tasks)} runs on Ray ({cpus} CPUs, {args.cpus_per_run} per "
                  f"run, {args.max_retries} retries; connected in "
                  f"{time.perf_counter() - started:.1f} s)", flush=True)
            if cpus and args.cpus_per_run > cpus:
                raise ClusterError(f"--cpus-per-run {args.cpus_per_run}: the cluster has only "
                                   f"{cpus} CPUs")
            return run_tasks_on_ray(
                tasks, cpus_per_run=args.cpus_per_run, max_retries=args.max_retries,
                say=lambda line: print(line, flush=True),
            )
    except (RayUnavailableError, ClusterError, RunExistsError) as error:
        _error(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted; every run directory is resumable: rerun the same command with "
               "--resume")
        return EXIT_INTERRUPTED


def cmd_run(args: argparse.Namespace) -> int:
    """``convgrad run NAME --ray [ADDRESS]``: each sweep point as a Ray task."""
    from convgrad.lab.cli_common import _exit_status
    from convgrad.lab.reproduce import tasks_for
    from convgrad.lab.spec import SpecError, resolve_spec

    try:
        _check_options(args)
        spec = resolve_spec(args.experiment).with_overrides(
            budget=args.budget, steps=args.steps, seed=args.seed, eval_every=args.eval_every
        )
        out = _storage(args, Path("runs") / spec.name)
    except (SpecError, ArgumentError) as error:
        _error(str(error))
        return EXIT_USAGE
    tasks = tasks_for(spec, out, resume=args.resume, budget=args.budget or "custom")
    results = _run_and_report(args, tasks, f"convgrad run {spec.name}")
    if isinstance(results, int):
        return results
    return _exit_status(results)


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``convgrad reproduce --budget B --ray [ADDRESS]``: every run as a Ray task, then the
    report, exactly as a local reproduction writes it."""
    from convgrad.lab.cli_common import _command_line, _exit_status
    from convgrad.lab.report import write_report
    from convgrad.lab.reproduce import suite_tasks
    from convgrad.lab.spec import SpecError, builtin_names

    try:
        _check_options(args)
        out = _storage(args, Path("runs") / f"reproduce-{args.budget}")
        if args.only:
            unknown = sorted(set(args.only) - set(builtin_names()))
            if unknown:
                raise ArgumentError(f"--only: unknown experiments {unknown}; expected some of "
                                    f"{builtin_names()}")
        tasks = suite_tasks(args.budget, out, names=args.only, resume=True)
    except (SpecError, ArgumentError) as error:
        _error(str(error))
        return EXIT_USAGE
    started = time.perf_counter()
    results = _run_and_report(args, tasks, f"convgrad reproduce --budget {args.budget}")
    if isinstance(results, int):
        return results
    print(f"all runs ended after {time.perf_counter() - started:.0f} s")
    markdown, html = write_report(out, command=_command_line(args, out) + f" --ray {args.ray}")
    print(f"wrote {markdown} and {html}")
    return _exit_status(results)
