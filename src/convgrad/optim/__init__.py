"""``convgrad.optim``: optimisers with PyTorch's names, arguments, update rules and state layout.

``SGD``, ``Adam``, ``AdamW``, ``RMSprop`` over parameter groups, and ``lr_scheduler`` (StepLR,
MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR, OneCycleLR, SequentialLR,
ReduceLROnPlateau). Optimisers never live inside layers.
"""

from convgrad.optim import lr_scheduler
from convgrad.optim.adam import Adam
from convgrad.optim.adamw import AdamW
from convgrad.optim.optimizer import Optimizer, required
from convgrad.optim.rmsprop import RMSprop
from convgrad.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler", "required"]
