"""``convgrad.nn.utils``: gradient clipping and flat parameter vectors, as ``torch.nn.utils``."""

from convgrad.nn.utils.clip_grad import clip_grad_norm_, clip_grad_value_
from convgrad.nn.utils.convert_parameters import parameters_to_vector, vector_to_parameters

__all__ = [
    "clip_grad_norm_",
    "clip_grad_value_",
    "parameters_to_vector",
    "vector_to_parameters",
]
