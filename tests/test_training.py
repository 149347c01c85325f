"""A short real training run: a small CNN learns to tell the orientation of bars."""

from __future__ import annotations

import numpy as np

import convgrad as cg
import convgrad.nn.functional as F
from convgrad import nn


def oriented_bars(n: int, seed: int, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 1, size, size) of one bar of length 5 - horizontal, vertical, diagonal or
    anti-diagonal (the label, 0..3) - at a random position, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.normal(0, 0.2, (n, 1, size, size)).astype(np.float32)
    steps = {0: (0, 1), 1: (1, 0), 2: (1, 1), 3: (1, -1)}
    for i, label in enumerate(labels):
        dy, dx = steps[int(label)]
        y, x = (_start(rng, step, size) for step in (dy, dx))
        for t in range(5):
            images[i, 0, y + t * dy, x + t * dx] += 1.0
    return images, labels


def _start(rng: np.random.Generator, step: int, size: int) -> int:
    """A start coordinate from which 5 pixels in direction step stay inside the image."""
    low, high = (4, size) if step < 0 else (0, size - 4 * step)
    return int(rng.integers(low, high))


def test_small_cnn_learns_oriented_bars_above_95_percent():
    cg.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 9, 32),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(32, 4),
    )
    optimizer = cg.optim.Adam(model.parameters(), lr=3e-3)
    x_train, y_train = oriented_bars(2000, seed=1)
    x_test, y_test = oriented_bars(500, seed=2)
    rng = np.random.default_rng(3)
    for _ in range(300):
        batch = rng.integers(0, len(y_train), 32)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(cg.tensor(x_train[batch])), y_train[batch])
        loss.backward()
        optimizer.step()
    model.eval()
    with cg.no_grad():
        accuracy = (model(cg.tensor(x_test)).argmax(1).data == y_test).mean()
    assert accuracy > 0.95, f"test accuracy {accuracy:.3f}"
