"""The lab's subcommands: ``run``, ``list``, ``report`` and ``reproduce``.

Exit status: 0 done; 1 a run diverged or failed (including a write error, whose message names
the file); 2 a usage, spec, checkpoint or metrics error (the message, on stderr, names the file or
key path; no traceback); 3 the run directory is locked by another convgrad process (the message
names the directory and that process's PID); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from convgrad.lab import distributed, search
from convgrad.lab.cli_common import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
    _command_line,
    _error,
    _exit_status,
    _non_negative,
    _positive,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run``, ``list``, ``report`` and ``reproduce`` to the ``convgrad`` command."""
    run = subparsers.add_parser(
        "run", help="train one experiment (a shipped name or a spec file)",
        description="Train one experiment. Evaluations go to DIR/metrics.jsonl, checkpoints to "
        "DIR/manifest.json + DIR/ckpt-<step>.npz, the outcome to DIR/result.json; a sweep runs "
        "each point in DIR/<point>. Exit status: 0 completed; 1 diverged or failed; 2 a usage, "
        "spec, checkpoint or metrics error; 3 DIR is locked by another convgrad process; 130 "
        "interrupted.",
    )
    run.add_argument("experiment", metavar="NAME|SPEC.toml")
    run.add_argument("--steps", type=_positive, help="optimizer steps (overrides the spec)")
    run.add_argument("--seed", type=_non_negative, help="seed (overrides the spec)")
    run.add_argument("--eval-every", type=_positive, help="steps between evaluations")
    run.add_argument("--budget", choices=("quick", "standard", "full"),
                     help="use the spec's step count for this budget (default: full)")
    run.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its last checkpoint")
    run.add_argument("--jobs", type=_positive, default=1,
                     help="sweep points to run in parallel processes (default: 1)")
    run.add_argument("--keep-checkpoints", type=_positive, metavar="K",
                     help="checkpoint generations to keep (default: train.keep_checkpoints, 2)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_seeds(run)
    run.set_defaults(func=cmd_run)
    _add_tensorboard(run)
    distributed.add_ray_arguments(run, what="sweep point")

    listing = subparsers.add_parser("list", help="list the shipped experiments")
    listing.set_defaults(func=cmd_list)

    report = subparsers.add_parser(
        "report", help="write report.md and report.html for the runs in a directory"
    )
    report.add_argument("directory", type=Path, metavar="DIR")
    report.set_defaults(func=cmd_report)

    reproduce = subparsers.add_parser(
        "reproduce", help="run every shipped experiment under a budget, then the report",
        description="quick: under 10 minutes on 2 cores; standard: under an hour; full: the "
        "course protocol (many hours). Finished runs in --out are kept; interrupted ones resume.",
    )
    reproduce.add_argument("--budget", choices=("quick", "standard", "full"), default="standard")
    reproduce.add_argument("--out", type=Path, help="directory (default: runs/reproduce-<budget>)")
    reproduce.add_argument("--jobs", type=_positive, default=1,
                           help="runs in parallel processes (default: 1)")
    reproduce.add_argument("--only", nargs="+", metavar="NAME", help="only these experiments")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_seeds(reproduce)
    reproduce.set_defaults(func=cmd_reproduce)
    distributed.add_ray_arguments(reproduce, what="run")
    search.register(subparsers)
    _add_tensorboard(reproduce)
    _register_export(subparsers)
    register_pictures(subparsers)


def _add_tensorboard(parser: argparse.ArgumentParser) -> None:
    """``--tensorboard`` on run/reproduce (see convgrad.lab.tensorboard)."""
    from convgrad.lab.tensorboard import add_tensorboard_flag

    add_tensorboard_flag(parser)


def _register_export(subparsers: argparse._SubParsersAction) -> None:
    """``convgrad export`` (see convgrad.lab.export)."""
    from convgrad.lab.export import register as register_export

    register_export(subparsers)


def cmd_run(args: argparse.Namespace) -> int:
    """``convgrad run``."""
    if args.ray is not None or args.storage is not None:
        return distributed.cmd_run(args)
    from convgrad.errors import ConvgradError, RunLockedError
    from convgrad.lab.reproduce import run_tasks, tasks_for
    from convgrad.lab.spec import SpecError, resolve_spec

    try:
        spec = resolve_spec(args.experiment)
        spec = spec.with_overrides(
            budget=args.budget, steps=args.steps, seed=args.seed, eval_every=args.eval_every
        )
    except SpecError as error:
        _error(str(error))
        return EXIT_USAGE
    out = args.out or Path("runs") / spec.name
    keep = getattr(args, "keep_checkpoints", None)
    tasks = tasks_for(spec, out, resume=args.resume, budget=args.budget or "custom",
                      keep_checkpoints=keep, seeds=args.seeds)
    if args.jobs > 1 and len(tasks) > 1:
        results = run_tasks(tasks, args.jobs, progress=False, say=print)
        return _exit_status(results)
    from convgrad.lab.runner import run_experiment

    status = EXIT_OK
    for task in tasks:
        try:
            outcome = run_experiment(
                task.spec, task.run_dir, resume=task.resume,
                progress=False if args.quiet else None, budget=task.budget,
                keep_checkpoints=keep,
            )
        except RunLockedError as error:
            _error(str(error))
            return EXIT_LOCKED
        except ConvgradError as error:
            _error(str(error))
            return EXIT_USAGE
        except (OSError, MemoryError) as error:
            _error(f"{task.label} failed: {error}")
            return EXIT_FAILED
        result = outcome.result
        if outcome.ok:
            print(f"{task.label}: {result['message']} -> {task.run_dir}")
        else:
            _error(f"{task.label}: {result['message']}")
            status = EXIT_FAILED
    return status


def cmd_list(args: argparse.Namespace) -> int:
    """``convgrad list``: the shipped experiments with their parameters, steps and references."""
    from convgrad.lab.report import experiment_table

    print(experiment_table())
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """``convgrad report DIR``."""
    from convgrad.errors import ConvgradError
    from convgrad.lab.report import write_report

    if not args.directory.is_dir():
        _error(f"{args.directory} is not a directory")
        return EXIT_USAGE
    try:
        markdown, html = write_report(args.directory)
    except (FileNotFoundError, ConvgradError) as error:
        _error(str(error))
        return EXIT_USAGE
    except OSError as error:
        _error(f"cannot write the report in {args.directory}: {error}")
        return EXIT_FAILED
    print(f"wrote {markdown} and {html}")
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``convgrad reproduce``: every shipped experiment under a budget, then the report."""
    if args.ray is not None or args.storage is not None:
        return distributed.cmd_reproduce(args)
    from convgrad.lab.report import write_report
    from convgrad.lab.reproduce import run_tasks, suite_tasks
    from convgrad.lab.spec import SpecError, builtin_names

    out = args.out or Path("runs") / f"reproduce-{args.budget}"
    names = args.only
    if names:
        unknown = sorted(set(names) - set(builtin_names()))
        if unknown:
            _error(f"--only: unknown experiments {unknown}; expected some of {builtin_names()}")
            return EXIT_USAGE
    try:
        tasks = suite_tasks(args.budget, out, names=names, resume=True, seeds=args.seeds)
    except SpecError as error:
        _error(str(error))
        return EXIT_USAGE
    print(f"convgrad reproduce --budget {args.budget}: {len(tasks)} runs, {args.jobs} at a time, "
          f"in {out}")
    started = time.perf_counter()
    results = run_tasks(tasks, args.jobs, progress=False if args.quiet else None, say=print)
    print(f"all runs ended after {time.perf_counter() - started:.0f} s")
    try:
        markdown, html = write_report(out, command=_command_line(args, out))
    except OSError as error:
        _error(f"cannot write the report in {out}: {error}")
        return EXIT_FAILED
    print(f"wrote {markdown} and {html}")
    return _exit_status(results)


# ---------------------------------------------------------------------------------- seeds
def _add_seeds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seeds", type=_positive, metavar="N",
        help="run each experiment with seeds 0..N-1, each in DIR/seed-<s> (overrides the "
        "spec's seeds); the report gives mean ± std",
    )


# ---------------------------------------------------------------------------------- pictures
def register_pictures(subparsers: argparse._SubParsersAction) -> None:
    """Add ``explain`` and ``graph``."""
    explain = subparsers.add_parser(
        "explain", help="pictures of a trained run: filters, feature maps, saliency, confusions",
        description="Write RUN_DIR/explain/*.png (first-layer filters, feature maps, saliency "
        "maps, confusion matrix, most confident mistakes) and explain.html.",
    )
    explain.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    explain.add_argument("--out", type=Path, help="folder (default: RUN_DIR/explain)")
    explain.set_defaults(func=cmd_explain)

    graph = subparsers.add_parser(
        "graph", help="draw a model's computation graph (SVG through graphviz's dot)",
        description="Modules, shapes and shared parameters (drawn once) of an experiment's "
        "network. Writes NAME.dot, and NAME.svg when graphviz's `dot` is installed.",
    )
    graph.add_argument("experiment", metavar="NAME|SPEC.toml")
    graph.add_argument("--out", type=Path, help="folder (default: the current one)")
    graph.set_defaults(func=cmd_graph)


def cmd_explain(args: argparse.Namespace) -> int:
    """``convgrad explain RUN_DIR``."""
    from convgrad.lab.explain import explain_run
    from convgrad.lab.spec import SpecError

    try:
        written = explain_run(args.run_dir, args.out)
    except (SpecError, FileNotFoundError) as error:
        _error(str(error))
        return EXIT_USAGE
    print(f"wrote {len(written)} files to {written[0].parent}")
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    """``convgrad graph NAME|SPEC``."""
    from convgrad.lab.graph import write_graph
    from convgrad.lab.spec import SpecError

    try:
        result = write_graph(args.experiment, args.out or Path("."))
    except SpecError as error:
        _error(str(error))
        return EXIT_USAGE
    print(result.message)
    return EXIT_OK
