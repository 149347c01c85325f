"""convgrad: convolutional networks from first principles in NumPy.

A PyTorch-shaped API (``import convgrad as cg``) over an engine whose every gradient is derived
by hand, plus the course's theory as executable checks and an MNIST lab.
"""

from convgrad import _startup, nn, optim  # noqa: E402, F401  (_startup: Ctrl-C at start-up)
from convgrad import ops as _ops  # noqa: F401  (attaches the Tensor operators)
from convgrad.autograd import (
    Function,
    Tensor,
    enable_grad,
    is_grad_enabled,
    no_grad,
    ones,
    ones_like,
    tensor,
    zeros,
    zeros_like,
)
from convgrad.nn.summary import summary  # noqa: E402
from convgrad.ops import cat, stack
from convgrad.parallel import get_num_threads, set_num_threads
from convgrad.random import get_rng_state, manual_seed, set_rng_state

float32 = "float32"
float64 = "float64"
__version__ = "0.1.1"

__all__ = [
    "Function",
    "Tensor",
    "cat",
    "enable_grad",
    "float32",
    "float64",
    "get_num_threads",
    "get_rng_state",
    "is_grad_enabled",
    "manual_seed",
    "nn",
    "no_grad",
    "ones",
    "ones_like",
    "optim",
    "set_num_threads",
    "set_rng_state",
    "stack",
    "summary",
    "tensor",
    "zeros",
    "zeros_like",
]
