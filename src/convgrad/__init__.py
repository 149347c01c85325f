"""convgrad: convolutional networks from first principles in NumPy.

A PyTorch-shaped API (``import convgrad as cg``) over an engine whose every gradient is derived
by hand, plus the course's theory as executable checks and an MNIST lab.
"""

from convgrad import _startup, nn, optim  # noqa: F401  (_startup: Ctrl-C at start-up)
from convgrad._version import __version__
from convgrad.autograd import (
    Function,
    Tensor,
    cat,
    enable_grad,
    is_grad_enabled,
    no_grad,
    ones,
    ones_like,
    stack,
    tensor,
    zeros,
    zeros_like,
)
from convgrad.interop.dlpack import from_dlpack
from convgrad.interop.safetensors import load, save  # imports safetensors only when called
from convgrad.nn.summary import summary
from convgrad.parallel import get_num_threads, set_num_threads
from convgrad.random import get_rng_state, manual_seed, set_rng_state

float32 = "float32"
float64 = "float64"

__all__ = [
    "__version__",
    "Function",
    "Tensor",
    "cat",
    "enable_grad",
    "float32",
    "float64",
    "from_dlpack",
    "get_num_threads",
    "get_rng_state",
    "is_grad_enabled",
    "load",
    "manual_seed",
    "nn",
    "no_grad",
    "ones",
    "ones_like",
    "optim",
    "save",
    "set_num_threads",
    "set_rng_state",
    "stack",
    "summary",
    "tensor",
    "zeros",
    "zeros_like",
]
