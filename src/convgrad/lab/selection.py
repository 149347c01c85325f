"""Model selection on a validation split: keep the weights that are best on it.

Under ``protocol = "validation"`` the runner calls :meth:`Selection.evaluate` at each evaluation
and :meth:`Selection.finish` at the end. The best weights so far live in the run directory
(``best.npz`` with ``best.json`` naming their step and validation accuracy, both written
atomically), so a resumed run selects exactly what an uninterrupted one does: evaluations are
deterministic, every validation accuracy is kept in ``best.json``'s history, and an evaluation
replaces the best only when it is strictly better than every *earlier* step's (so a history left
by a session killed after its checkpoint still gives the uninterrupted run's decisions). The
test set is evaluated once, on the selected weights; it never takes part in the choice.

Under the course protocol (``protocol = "course"``) both calls do nothing: the course evaluates
its last weights on the test set.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from convgrad import nn
from convgrad.files import atomic_write, atomic_write_json
from convgrad.lab.metrics import accuracy

BEST_WEIGHTS, BEST_INFO = "best.npz", "best.json"


class Selection:
    """Best-on-validation weights of one run (a no-op without a validation split).

    Args:
        run_dir: the run directory.
        validation: the validation split (``.images``, ``.labels``) or None for the course
            protocol.
    """

    def __init__(self, run_dir: str | Path, validation: Any | None) -> None:
        self.run_dir = Path(run_dir)
        self.validation = validation

    @property
    def active(self) -> bool:
        """True under the validation protocol."""
        return self.validation is not None

    def best(self) -> dict[str, Any] | None:
        """``{"step", "val_acc", "history"}`` of the best weights so far, or None."""
        path = self.run_dir / BEST_INFO
        return json.loads(path.read_text()) if path.is_file() else None

    def evaluate(self, step: int, model: nn.Module) -> dict[str, Any]:
        """Validation accuracy at ``step``; saves the weights when strictly better than the best.

        Returns:
            ``{"val_acc": a}`` to add to the metrics line, or ``{}`` under the course protocol.
        """
        if not self.active:
            return {}
        value = accuracy(model, np.asarray(self.validation.images),
                         np.asarray(self.validation.labels))
        info = self.best() or {"step": None, "val_acc": None, "history": {}}
        history = info["history"]
        earlier = [v for s, v in history.items() if int(s) < step]
        history[str(step)] = value
        if not earlier or value > max(earlier):
            buffer = io.BytesIO()
            np.savez(buffer, **{k: np.asarray(v) for k, v in model.state_dict().items()})
            atomic_write(self.run_dir / BEST_WEIGHTS, buffer.getvalue())
            info["step"], info["val_acc"] = step, value
        atomic_write_json(self.run_dir / BEST_INFO, info)
        return {"val_acc": value}

    def finish(self, model: nn.Module, test: Any) -> dict[str, Any]:
        """Test accuracy of the selected weights (``model`` keeps its last weights).

        Returns:
            ``{"protocol", "selected_step", "val_acc", "test_acc", "message"}`` to merge into
            the result (``test_acc`` is the selected weights'), or
            ``{"protocol": "course"}``.
        """
        if not self.active:
            return {"protocol": "course"}
        best = self.best()
        if best is None or best["step"] is None:
            return {"protocol": "validation"}
        last = model.state_dict()
        with np.load(self.run_dir / BEST_WEIGHTS, allow_pickle=False) as stored:
            model.load_state_dict({key: stored[key] for key in stored.files})
        try:
            test_acc = accuracy(model, np.asarray(test.images), np.asarray(test.labels))
        finally:
            model.load_state_dict(last)
        return {"protocol": "validation", "selected_step": best["step"],
                "val_acc": best["val_acc"], "test_acc": test_acc,
                "message": f"test accuracy {test_acc:.4f} of the weights best on validation "
                           f"(step {best['step']}, validation accuracy {best['val_acc']:.4f})"}
