"""Evaluation and the append-only ``metrics.jsonl`` log.

Each evaluation appends one JSON line::

    {"step": 1000, "train_loss": 0.21, "train_acc": 0.95, "test_acc": 0.96,
     "test_examples": 2000, "wall_time": 81.2}

- ``train_loss``: mean training loss over the steps since the previous line;
- ``train_acc``: accuracy on a fixed subset of the training set (``train.eval_train_examples``),
  in eval mode (no dropout);
- ``test_acc``: accuracy on a fixed subset of the test set (``train.eval_test_examples``) during
  training, and on the *whole* test set at the last step; ``test_examples`` says which;
- ``wall_time``: seconds of training so far, summed over resumed sessions (the only field that
  differs between an interrupted run and an uninterrupted one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

import convgrad as cg
from convgrad import nn

WALL_TIME_FIELDS = ("wall_time",)


def accuracy(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 200
) -> float:
    """Fraction of ``images`` classified as ``labels``, in eval mode, without autograd.

    Consumes no random numbers (dropout is off in eval mode), so evaluating never changes what
    training does next.

    Args:
        images: (N, H, W) uint8.
        labels: (N,) int.
    """
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with cg.no_grad():
            for start in range(0, len(labels), batch_size):
                batch = images[start : start + batch_size].astype(np.float32)[:, None] / 255
                logits = model(cg.tensor(batch)).data
                correct += int((logits.argmax(axis=1) == labels[start : start + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / max(1, len(labels))


def fixed_subset(dataset: Any, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples of ``dataset`` at positions fixed by ``seed`` (all of it when n >= N or 0)."""
    images, labels = np.asarray(dataset.images), np.asarray(dataset.labels)
    if n <= 0 or n >= len(labels):
        return images, labels
    indices = np.sort(np.random.default_rng([seed, 7919]).choice(len(labels), n, replace=False))
    return images[indices], labels[indices]


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, appended and fsynced line by line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        """Every complete line (a torn last line, from a kill mid-write, is ignored)."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def truncate_after(self, step: int) -> None:
        """Keep only the lines with ``step <= step``: what a checkpoint at ``step`` had seen."""
        kept = [record for record in self.read() if record["step"] <= step]
        payload = "".join(json.dumps(record) + "\n" for record in kept)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with open(temporary, "w") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def append(self, record: dict[str, Any]) -> None:
        """Append one line and fsync it."""
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def strip_wall_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records without their wall-time fields (for comparing two runs)."""
    return [{k: v for k, v in r.items() if k not in WALL_TIME_FIELDS} for r in records]
