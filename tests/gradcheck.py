"""Central-difference gradient checking for Tensor functions (float64), used by the tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import convgrad as cg
from convgrad.reference import numerical_gradient


def check_gradients(
    fn: Callable[..., cg.Tensor],
    *inputs: np.ndarray,
    seed: int = 0,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    reseed: int | None = None,
) -> None:
    """Assert that autograd's gradients of <fn(*inputs), r> match central differences.

    r is a random upstream gradient, so every output element is checked, not just their sum.
    Args:
        fn: takes Tensors, returns a Tensor.
        inputs: float64 arrays; a gradient is checked for each.
        reseed: reseed the global RNG before every evaluation (for dropout's mask).
    """
    rng = np.random.default_rng(seed)
    arrays = [np.array(a, dtype=np.float64) for a in inputs]

    def evaluate(*arrs: np.ndarray, requires_grad: bool = False):
        if reseed is not None:
            cg.manual_seed(reseed)
        tensors = [cg.tensor(a, requires_grad=requires_grad) for a in arrs]
        return fn(*tensors), tensors

    out, _ = evaluate(*arrays)
    dout = rng.standard_normal(out.shape)
    out, tensors = evaluate(*arrays, requires_grad=True)
    out.backward(dout)
    for index, array in enumerate(arrays):

        def f(value: np.ndarray, index: int = index) -> np.ndarray:
            args = list(arrays)
            args[index] = value
            return evaluate(*args)[0].data

        expected = numerical_gradient(f, array.copy(), dout)
        got = tensors[index].grad
        assert got is not None, f"input {index} received no gradient"
        np.testing.assert_allclose(
            got.data, expected, atol=atol, rtol=rtol, err_msg=f"gradient of input {index}"
        )
