"""Checkpoints: arrays in ``ckpt-<step>.npz`` (no pickle), everything else in ``manifest.json``.

Writing is crash-safe at every instant:

1. the arrays go to a temporary file in the run directory, flushed and fsynced, then renamed to
   ``ckpt-<step>.npz``;
2. the manifest (step, RNG state, data position, optimizer scalars, the npz's name and sha256)
   goes to a temporary file, fsynced, and is renamed over ``manifest.json``;
3. only then are older ``ckpt-*.npz`` files deleted.

A process killed anywhere leaves ``manifest.json`` pointing at a complete, checksummed npz: the
new one after step 2, the previous one before it.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from convgrad.files import atomic_open, atomic_write_json, sha256_file

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or does not match its checksum."""


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


def save_checkpoint(
    run_dir: Path,
    step: int,
    model_state: dict[str, np.ndarray],
    optimizer_state: dict[str, Any],
    extra: dict[str, Any],
) -> Path:
    """Write ``ckpt-<step>.npz`` and point ``manifest.json`` at it; delete older npz files.

    Args:
        run_dir: the run directory.
        step: optimizer steps taken.
        model_state: ``model.state_dict()``.
        optimizer_state: ``optimizer.state_dict()``.
        extra: JSON-serialisable run state (RNG state, data position, accumulators, ...).

    Returns:
        The npz path.
    """
    run_dir = Path(run_dir)
    optimizer_arrays, optimizer_scalars = flatten_optimizer_state(optimizer_state)
    arrays = {f"model/{name}": value for name, value in model_state.items()}
    arrays.update(optimizer_arrays)
    name = f"ckpt-{step:08d}.npz"
    target = run_dir / name
    with atomic_open(target) as handle:
        np.savez(handle, **arrays)
    manifest = {
        "format": FORMAT_VERSION,
        "step": int(step),
        "file": name,
        "sha256": sha256_file(target),
        "optimizer": optimizer_scalars,
        **extra,
    }
    atomic_write_json(run_dir / MANIFEST, manifest)
    for old in run_dir.glob("ckpt-*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return target


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Read the checkpoint ``manifest.json`` points at, verifying its checksum.

    Returns:
        ``(manifest, model_state, optimizer_state)``.

    Raises:
        CheckpointError: no manifest, a missing npz, or a checksum mismatch.
    """
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"no checkpoint in {run_dir} (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{manifest_path} is not valid JSON: {error}") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_path}: expected format {FORMAT_VERSION}, "
            f"received {manifest.get('format')!r}"
        )
    npz = run_dir / manifest["file"]
    if not npz.is_file():
        raise CheckpointError(f"{manifest_path} points at {npz.name}, which does not exist")
    digest = sha256_file(npz)
    if digest != manifest["sha256"]:
        raise CheckpointError(
            f"{npz.name}: sha256 {digest} does not match the manifest's {manifest['sha256']}"
        )
    with np.load(npz, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    model_state = {
        name.removeprefix("model/"): value for name, value in arrays.items()
        if name.startswith("model/")
    }
    optimizer_arrays = {
        name: value for name, value in arrays.items() if name.startswith("optimizer/")
    }
    optimizer_state = unflatten_optimizer_state(optimizer_arrays, manifest["optimizer"])
    return manifest, model_state, optimizer_state


def remove_orphans(run_dir: Path) -> None:
    """Delete temporary files and npz files the manifest does not point at (left by a kill)."""
    run_dir = Path(run_dir)
    keep = None
    manifest_path = run_dir / MANIFEST
    if manifest_path.is_file():
        with contextlib.suppress(json.JSONDecodeError, KeyError):
            keep = json.loads(manifest_path.read_text())["file"]
    for path in run_dir.glob(".*.tmp"):
        path.unlink(missing_ok=True)
    for path in run_dir.glob("ckpt-*.npz"):
        if path.name != keep:
            path.unlink(missing_ok=True)
