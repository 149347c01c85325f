"""The global random number generator behind initialisation and dropout.

``convgrad.manual_seed(s)`` resets it, like ``torch.manual_seed``. Its state is a JSON-serialisable
dict (PCG64's), so the lab can checkpoint and restore it for bit-exact resumption.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_generator = np.random.Generator(np.random.PCG64(0))


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the global generator; returns it."""
    global _generator
    _generator = np.random.Generator(np.random.PCG64(int(seed)))
    return _generator


def default_generator() -> np.random.Generator:
    """The generator used by init functions and dropout."""
    return _generator


def get_rng_state() -> dict[str, Any]:
    """The global generator's state (a JSON-serialisable dict)."""
    return _generator.bit_generator.state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a state returned by :func:`get_rng_state`."""
    _generator.bit_generator.state = state
