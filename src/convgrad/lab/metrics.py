"""Evaluation and the append-only ``metrics.jsonl`` log.

Each evaluation appends one JSON line::

    {"step": 1000, "train_loss": 0.21, "train_acc": 0.95, "test_acc": 0.96,
     "test_examples": 2000, "wall_time": 81.2}

- ``train_loss``: mean training loss over the steps since the previous line;
- ``train_acc``: accuracy on a fixed subset of the training set (``train.eval_train_examples``),
  in eval mode (no dropout);
- ``test_acc``: accuracy on a fixed subset of the test set (``train.eval_test_examples``) during
  training, and on the *whole* test set at the last step; ``test_examples`` says which;
- ``lr``: the learning rate of the step just taken (first parameter group; a schedule moves it);
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
from convgrad.errors import MetricsError
from convgrad.files import atomic_write, with_filename

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
        """Every record, in order.

        A torn last line (no newline: a kill mid-write) is ignored. Any other line that is not a
        JSON object with an integer ``step`` >= 0 is an error: later lines are never dropped.

        Raises:
            MetricsError: the file is unreadable or holds a bad line (its number is given).
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as error:
            raise MetricsError(f"{self.path}: cannot read it ({error.strerror or error})") from None
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        records = []
        for number, line in enumerate(lines, start=1):
            records.append(self._parse(line, number))
        if torn:
            try:
                records.append(self._parse(torn, len(lines) + 1))
            except MetricsError:
                pass  # a line cut short by a kill; truncate_after drops it
        return records

    def _parse(self, line: bytes, number: int) -> dict[str, Any]:
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise MetricsError(f"{self.path}: line {number}: not valid JSON ({error})") from None
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise MetricsError(
                f"{self.path}: line {number}: expected an object with an integer step >= 0, "
                f"received {line[:80].decode('utf-8', 'replace')!r}"
            )
        return record

    def truncate_after(self, step: int) -> None:
        """Keep only the lines with ``step <= step``: what a checkpoint at ``step`` had seen.

        Raises:
            MetricsError: a bad line (nothing is changed then).
        """
        kept = [record for record in self.read() if record["step"] <= step]
        payload = "".join(json.dumps(record) + "\n" for record in kept)
        atomic_write(self.path, payload.encode())

    def append(self, record: dict[str, Any]) -> None:
        """Append one line and fsync it."""
        try:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record, allow_nan=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise with_filename(error, self.path) from None


def strip_wall_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records without their wall-time fields (for comparing two runs)."""
    return [{k: v for k, v in r.items() if k not in WALL_TIME_FIELDS} for r in records]
