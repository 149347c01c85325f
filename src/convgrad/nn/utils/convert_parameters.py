"""Parameters as one flat vector and back, as torch.nn.utils.parameters_to_vector."""

from __future__ import annotations

from collections.abc import Iterable

from convgrad.autograd import Tensor, cat
from convgrad.errors import ArgumentError, ArgumentTypeError, ShapeError


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """Concatenate the parameters, each flattened in C order, into one 1-D tensor.

    Differentiable like torch's (a concatenation of reshapes): the gradient of the vector
    flows back to each parameter.

    Args:
        parameters: tensors of any shapes.

    Returns:
        Tensor of shape ``(sum of numel,)``.

    See: torch.nn.utils.parameters_to_vector
    """
    parts = [p.reshape(-1) for p in parameters]
    if not parts:
        raise ArgumentError("parameters_to_vector: expected at least one parameter, got none")
    return cat(parts)


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Make each parameter's data the next ``numel`` entries of ``vec``, reshaped.

    Like torch, each parameter's ``.data`` becomes a view of ``vec``'s memory (so in-place
    updates of one change the other); entries of ``vec`` past the parameters are ignored.

    Args:
        vec: a 1-D tensor.
        parameters: the tensors to overwrite.

    Raises:
        ArgumentTypeError: vec is not a Tensor.
        ShapeError: vec is not 1-D or has fewer entries than the parameters.

    See: torch.nn.utils.vector_to_parameters
    """
    if not isinstance(vec, Tensor):
        raise ArgumentTypeError(
            f"vector_to_parameters: expected convgrad.Tensor, but got: {type(vec).__name__}"
        )
    if vec.ndim != 1:
        raise ShapeError(f"vector_to_parameters: expected a 1-D vec, received shape {vec.shape}")
    parameters = list(parameters)
    needed = sum(p.numel() for p in parameters)
    if needed > vec.numel():
        raise ShapeError(
            f"vector_to_parameters: the parameters need {needed} entries, vec has {vec.numel()}"
        )
    pointer = 0
    for p in parameters:
        n = p.numel()
        p.data = vec.data[pointer:pointer + n].reshape(p.shape)
        pointer += n
