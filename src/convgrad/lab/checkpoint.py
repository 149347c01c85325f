"""Checkpoints: generations of ``ckpt-<step>.npz`` (no pickle), indexed by ``manifest.json``.

Each generation is one npz holding the model's and the optimizer's arrays *and* its own metadata
(``meta``: a JSON document stored as a uint8 array, with the step, the optimizer's scalars, the RNG
state, the data position and the accumulators). ``manifest.json`` is only an index: the newest
generations, newest first, each with its step, file name and sha256. The last ``keep`` generations
(2 by default) are kept, so a damaged newest file still leaves one to resume from.

Writing is crash-safe at every instant:

1. every array is checked to be finite (an inf or nan is never saved: :class:`NonFiniteError`);
2. the npz goes to a temporary file in the run directory, flushed and fsynced, then renamed to
   ``ckpt-<step>.npz``;
3. the manifest goes to a temporary file, fsynced, and is renamed over ``manifest.json``;
4. only then are generations older than the ``keep`` newest deleted.

Reading (:func:`load_checkpoint`) verifies before it trusts: the manifest's fields (types,
ranges, ``file`` a plain ``ckpt-<step>.npz`` name inside the run directory), each generation's
sha256, the zip members' CRCs, the embedded metadata (its step must equal the file's) and the
arrays' finiteness. It takes the newest generation that passes and says on stderr which ones it
skipped and why. A manifest that is missing or unreadable is rebuilt from the npz files' embedded
metadata. ``np.load`` runs with ``allow_pickle=False``: nothing is ever unpickled. Nothing here
deletes a file that a fallback could still use: :func:`remove_orphans` removes only temporary
files.
"""

from __future__ import annotations

import json
import math
import re
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convgrad.errors import CheckpointError
from convgrad.files import atomic_open, atomic_write_json, sha256_file

MANIFEST = "manifest.json"
FORMAT_VERSION = 2
"""2: generations with embedded metadata. 1 (a single npz, metadata in the manifest) still loads."""
DEFAULT_KEEP = 2
META_KEY = "meta"
CHECKPOINT_NAME = re.compile(r"ckpt-(\d{8,})\.npz")
_SHA256 = re.compile(r"[0-9a-f]{64}")

__all__ = [
    "DEFAULT_KEEP", "FORMAT_VERSION", "MANIFEST", "CheckpointError", "Generation",
    "NonFiniteError", "checkpoint_files", "flatten_optimizer_state", "has_checkpoint",
    "load_checkpoint", "nonfinite_entries", "optimizer_parameter_count", "read_manifest",
    "remove_orphans", "save_checkpoint", "unflatten_optimizer_state",
]


class NonFiniteError(CheckpointError):
    """A checkpoint would hold inf or nan values; it is not written."""


def flatten_optimizer_state(
    state: dict[str, Any],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` (torch's layout) into named arrays and JSON scalars.

    Returns:
        ``arrays``: ``"optimizer/<index>/<key>" -> ndarray`` for every array-valued entry;
        ``scalars``: ``{"param_groups": [...], "state": {"<index>": {key: number}}}`` for the
        rest (tuples such as ``betas`` become lists, parameter indices string keys).
    """
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        plain = {}
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"optimizer/{index}/{key}"] = value
            else:
                plain[key] = value.item() if isinstance(value, np.generic) else value
        scalars[str(index)] = plain
    groups = [
        {key: list(value) if isinstance(value, tuple) else value for key, value in group.items()}
        for group in state["param_groups"]
    ]
    return arrays, {"param_groups": groups, "state": scalars}


def unflatten_optimizer_state(
    arrays: dict[str, np.ndarray], scalars: dict[str, Any]
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`: ``optimizer.state_dict()``'s layout.

    Also reads checkpoints written before parameter groups (``{"defaults": {...}, "state":
    [{...}, ...]}``, one entry per parameter), as a single group over all parameters.
    """
    if "defaults" in scalars:  # the layout before parameter groups
        entries = scalars["state"]
        groups = [{**scalars["defaults"], "params": list(range(len(entries)))}]
        state = {index: dict(entry) for index, entry in enumerate(entries)}
    else:
        groups = [dict(group) for group in scalars["param_groups"]]
        state = {int(index): dict(entry) for index, entry in scalars["state"].items()}
    for name, value in arrays.items():
        _, index, key = name.split("/", 2)
        state.setdefault(int(index), {})[key] = value
    groups = [
        {key: tuple(value) if isinstance(value, list) and key != "params" else value
         for key, value in group.items()}
        for group in groups
    ]
    return {"state": {index: entry for index, entry in state.items() if entry},
            "param_groups": groups}


def optimizer_parameter_count(scalars: Any) -> int | None:
    """How many parameters the optimizer scalars of a checkpoint describe, or None when they are
    not in one of the two layouts :func:`unflatten_optimizer_state` reads (checked before use).
    """
    if not isinstance(scalars, dict):
        return None
    if "defaults" in scalars:  # the layout before parameter groups
        entries = scalars.get("state")
        if not isinstance(scalars["defaults"], dict) or not isinstance(entries, list) or not all(
            isinstance(entry, dict) for entry in entries
        ):
            return None
        return len(entries)
    groups, state = scalars.get("param_groups"), scalars.get("state")
    if not isinstance(groups, list) or not groups or not isinstance(state, dict):
        return None
    indices: list[int] = []
    for group in groups:
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in params
        ):
            return None
        indices.extend(params)
    if sorted(indices) != list(range(len(indices))):
        return None
    for key, entry in state.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) < len(indices)) or not (
            isinstance(entry, dict)
        ):
            return None
    return len(indices)


def checkpoint_name(step: int) -> str:
    """``ckpt-<step>.npz`` with the step zero-padded to 8 digits."""
    return f"ckpt-{step:08d}.npz"


def nonfinite_entries(arrays: dict[str, np.ndarray], scalars: Any = None) -> list[str]:
    """Names of the float arrays holding inf or nan, and ``"scalars"`` if any JSON number does."""
    bad = [
        name for name, value in arrays.items()
        if np.issubdtype(np.asarray(value).dtype, np.inexact) and not np.isfinite(value).all()
    ]
    if scalars is not None and not _finite_json(scalars):
        bad.append("scalars")
    return bad


def _finite_json(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_json(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite_json(v) for v in value)
    return True


@dataclass(frozen=True)
class Generation:
    """One manifest entry: a checkpoint file and what it must hash to."""

    step: int
    file: str
    sha256: str | None  # None: found on disk, not listed by a readable manifest


def save_checkpoint(
    run_dir: Path,
    step: int,
    model_state: dict[str, np.ndarray],
    optimizer_state: dict[str, Any],
    extra: dict[str, Any],
    keep: int = DEFAULT_KEEP,
) -> Path:
    """Write generation ``ckpt-<step>.npz``, index it in ``manifest.json``, keep ``keep`` newest.

    Args:
        run_dir: the run directory.
        step: optimizer steps taken (>= 0).
        model_state: ``model.state_dict()``.
        optimizer_state: ``optimizer.state_dict()``.
        extra: JSON-serialisable run state (RNG state, data position, accumulators, ...).
        keep: generations to keep (>= 1); older npz files are deleted after the manifest is
            written.

    Returns:
        The npz path.

    Raises:
        NonFiniteError: an array or number is inf or nan (nothing is written).
    """
    run_dir = Path(run_dir)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise CheckpointError(f"save_checkpoint: expected keep >= 1, received {keep!r}")
    optimizer_arrays, optimizer_scalars = flatten_optimizer_state(optimizer_state)
    arrays = {f"model/{name}": np.asarray(value) for name, value in model_state.items()}
    arrays.update(optimizer_arrays)
    meta = {"format": FORMAT_VERSION, "step": int(step), "optimizer": optimizer_scalars, **extra}
    bad = nonfinite_entries(arrays, meta)
    if bad:
        raise NonFiniteError(
            f"{run_dir}: not saving the checkpoint of step {step}: inf or nan in "
            f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
        )
    encoded = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    name = checkpoint_name(step)
    target = run_dir / name
    with atomic_open(target) as handle:
        np.savez(handle, **arrays, **{META_KEY: encoded})
    new = Generation(int(step), name, sha256_file(target))
    try:
        previous = read_manifest(run_dir)
    except CheckpointError:
        # no readable index (a fresh run, or one resumed from a rebuilt index): the files on
        # disk are the previous generations; their zip CRCs are still checked when loaded
        older = [(found, path) for found, path in checkpoint_files(run_dir) if found < step]
        previous = [Generation(found, path.name, sha256_file(path)) for found, path in older[:keep]]
    generations = [new] + [
        g for g in previous if g.step < new.step and (run_dir / g.file).is_file()
    ]
    generations = generations[:keep]
    atomic_write_json(run_dir / MANIFEST, {
        "format": FORMAT_VERSION,
        "step": new.step,
        "file": new.file,
        "sha256": new.sha256,
        "generations": [
            {"step": g.step, "file": g.file, "sha256": g.sha256} for g in generations
        ],
    })
    # Older than every kept generation: a fallback can no longer reach them. Files with a larger
    # step (a generation skipped as damaged on resume) are left for the next save to replace.
    oldest = generations[-1].step
    for step_found, path in checkpoint_files(run_dir):
        if step_found < oldest:
            path.unlink(missing_ok=True)
    return target


def checkpoint_files(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``ckpt-<step>.npz`` in ``run_dir``, newest first."""
    found = []
    for path in Path(run_dir).glob("ckpt-*.npz"):
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def has_checkpoint(run_dir: Path) -> bool:
    """True when ``run_dir`` holds a manifest or a checkpoint file (usable or not)."""
    return (Path(run_dir) / MANIFEST).exists() or bool(checkpoint_files(run_dir))


def _plain_int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_generation(entry: Any, where: str) -> Generation:
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: expected an object, received {type(entry).__name__}")
    step, file, digest = entry.get("step"), entry.get("file"), entry.get("sha256")
    if not _plain_int(step):
        raise CheckpointError(f"{where}.step: expected an integer >= 0, received {step!r}")
    if not isinstance(file, str) or CHECKPOINT_NAME.fullmatch(file) is None:
        raise CheckpointError(
            f"{where}.file: expected a plain name ckpt-<step>.npz inside the run directory, "
            f"received {file!r}"
        )
    if int(CHECKPOINT_NAME.fullmatch(file).group(1)) != step:
        raise CheckpointError(f"{where}: file {file} does not match step {step}")
    if not isinstance(digest, str) or _SHA256.fullmatch(digest) is None:
        raise CheckpointError(f"{where}.sha256: expected 64 hex digits, received {digest!r}")
    return Generation(step, file, digest)


def read_manifest(run_dir: Path) -> list[Generation]:
    """The generations ``manifest.json`` lists, newest first, every field validated.

    Raises:
        CheckpointError: no manifest, or one that is not valid (the message names the key).
    """
    path = Path(run_dir) / MANIFEST
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read it ({error.strerror or error})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, received {type(data).__name__}")
    version = data.get("format")
    if version == 1:
        generations = [_check_generation(data, str(path))]
    elif version == FORMAT_VERSION:
        entries = data.get("generations")
        if not isinstance(entries, list) or not entries:
            raise CheckpointError(f"{path}: generations: expected a non-empty list, "
                                  f"received {entries!r:.80}")
        generations = [
            _check_generation(entry, f"{path}: generations[{index}]")
            for index, entry in enumerate(entries)
        ]
        if [g.step for g in generations] != sorted({g.step for g in generations}, reverse=True):
            raise CheckpointError(f"{path}: generations: expected distinct steps, newest first")
        top = _check_generation(data, str(path))
        if top != generations[0]:
            raise CheckpointError(f"{path}: step/file/sha256 differ from generations[0]")
    else:
        raise CheckpointError(
            f"{path}: format: expected 1 or {FORMAT_VERSION}, received {version!r:.40}"
        )
    return generations


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an npz, never unpickling; zip CRCs are checked as members are read."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
            RuntimeError, NotImplementedError, OverflowError, MemoryError) as error:
        raise CheckpointError(f"{path.name}: not a readable npz archive ({error})") from None


def _check_meta(arrays: dict[str, np.ndarray], name: str, step: int,
                legacy: dict[str, Any] | None) -> dict[str, Any]:
    if META_KEY in arrays:
        raw = arrays[META_KEY]
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise CheckpointError(f"{name}: {META_KEY}: expected a 1-d uint8 array")
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise CheckpointError(f"{name}: {META_KEY}: not valid JSON ({error})") from None
    elif legacy is not None:
        meta = legacy
    else:
        raise CheckpointError(f"{name}: no embedded {META_KEY} (and no format-1 manifest)")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{name}: {META_KEY}: expected a JSON object")
    if not _plain_int(meta.get("step")) or meta["step"] != step:
        raise CheckpointError(
            f"{name}: {META_KEY}.step is {meta.get('step')!r:.40}, the file name says {step}"
        )
    for key, kind in (("rng_state", dict), ("loader", dict), ("optimizer", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{name}: {META_KEY}.{key}: expected an object, "
                                  f"received {meta.get(key)!r:.60}")
    if optimizer_parameter_count(meta["optimizer"]) is None:
        raise CheckpointError(
            f"{name}: {META_KEY}.optimizer: expected param_groups (list of objects with a "
            "params list of integers) and state (object of objects keyed by parameter index)"
        )
    for key in ("loss_sum", "wall_time", "train_time"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ) or (key != "loss_sum" and value < 0):
            raise CheckpointError(f"{name}: {META_KEY}.{key}: expected a finite number, "
                                  f"received {value!r:.40}")
    if not _plain_int(meta.get("loss_count")):
        raise CheckpointError(f"{name}: {META_KEY}.loss_count: expected an integer >= 0, "
                              f"received {meta.get('loss_count')!r:.40}")
    if not _finite_json(meta):
        raise CheckpointError(f"{name}: {META_KEY}: holds inf or nan")
    return meta


def _load_generation(
    run_dir: Path, generation: Generation, legacy: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    path = run_dir / generation.file
    if not path.is_file():
        raise CheckpointError(f"{generation.file}: does not exist")
    if generation.sha256 is not None:
        digest = sha256_file(path)
        if digest != generation.sha256:
            raise CheckpointError(
                f"{generation.file}: sha256 {digest} does not match the manifest's "
                f"{generation.sha256}"
            )
    arrays = _read_npz(path)
    meta = _check_meta(arrays, generation.file, generation.step, legacy)
    bad = nonfinite_entries({k: v for k, v in arrays.items() if k != META_KEY})
    if bad:
        raise CheckpointError(f"{generation.file}: inf or nan in {', '.join(bad[:5])}")
    model_state, optimizer_arrays = {}, {}
    for key, value in arrays.items():
        if key.startswith("model/"):
            model_state[key.removeprefix("model/")] = value
        elif key.startswith("optimizer/"):
            parts = key.split("/", 2)
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= (
                optimizer_parameter_count(meta["optimizer"]) or 0
            ):
                raise CheckpointError(f"{generation.file}: unexpected optimizer array {key!r}")
            optimizer_arrays[key] = value
        elif key != META_KEY:
            raise CheckpointError(f"{generation.file}: unexpected array {key!r}")
    try:
        optimizer_state = unflatten_optimizer_state(optimizer_arrays, meta["optimizer"])
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as error:
        raise CheckpointError(f"{generation.file}: optimizer state: {error!r}") from None
    manifest = {**meta, "file": generation.file, "sha256": sha256_file(path)}
    return manifest, model_state, optimizer_state


def load_checkpoint(
    run_dir: Path, warn: Callable[[str], None] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Load the newest checkpoint generation that verifies.

    Candidates are the manifest's generations (each checked against its sha256) and, when the
    manifest is missing or invalid, every ``ckpt-<step>.npz`` (checked by its zip CRCs and its
    embedded metadata). Each one skipped is reported through ``warn`` (default: a line on
    stderr) with the reason.

    Args:
        run_dir: the run directory.
        warn: called with one line per skipped generation or rebuilt manifest.

    Returns:
        ``(manifest, model_state, optimizer_state)``; ``manifest`` is the generation's embedded
        metadata plus its ``file`` and ``sha256``.

    Raises:
        CheckpointError: no generation verifies (the message lists each one and why).
    """
    run_dir = Path(run_dir)
    if warn is None:
        def warn(line: str) -> None:
            print(f"warning: {line}", file=sys.stderr)
    legacy = None
    try:
        candidates = read_manifest(run_dir)
        listed = {g.file for g in candidates}
        data = json.loads((run_dir / MANIFEST).read_text())
        legacy = data if data.get("format") == 1 else None
        # files newer than the manifest's newest (a save killed between npz and manifest) are
        # not listed: they are complete (renamed only once fsynced) but unverified; skip them.
        extra = [
            Generation(step, path.name, None) for step, path in checkpoint_files(run_dir)
            if path.name not in listed and step < candidates[-1].step
        ]
        candidates = candidates + extra
    except CheckpointError as error:
        found = checkpoint_files(run_dir)
        if not found:
            raise CheckpointError(f"no checkpoint in {run_dir}: {error}") from None
        warn(f"{error}; rebuilding the index from the embedded metadata of "
             f"{', '.join(path.name for _, path in found)}")
        candidates = [Generation(step, path.name, None) for step, path in found]
    failures = []
    for generation in candidates:
        try:
            loaded = _load_generation(
                run_dir, generation, legacy if generation is candidates[0] else None
            )
        except CheckpointError as error:
            failures.append(str(error))
            warn(f"{run_dir}: skipping checkpoint {generation.file} (step {generation.step}): "
                 f"{str(error).removeprefix(generation.file + ': ')}")
            continue
        return loaded
    raise CheckpointError(
        f"no usable checkpoint in {run_dir}: " + "; ".join(failures)
    )


def remove_orphans(run_dir: Path) -> None:
    """Delete the temporary files a killed write left (``.<name>.<hex>.tmp``); nothing else.

    Checkpoint files are never removed here: only :func:`save_checkpoint` prunes generations,
    after a newer one is safely written.
    """
    for path in Path(run_dir).glob(".*.tmp"):
        path.unlink(missing_ok=True)
