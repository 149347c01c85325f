"""Exception types raised by convgrad.

Every error a user can cause is one of these, so that a mistake in a model, a data file or a spec
reads as a sentence that names the thing, what was expected and what was received, never as a bare
NumPy traceback. All are ``ValueError`` or ``TypeError`` subclasses so generic handlers still work.
"""

from __future__ import annotations


class ConvgradError(Exception):
    """Base class of every convgrad error."""


class ShapeError(ConvgradError, ValueError):
    """An input has the wrong shape or number of channels for the layer or op it was given to."""


class ArgumentError(ConvgradError, ValueError):
    """An argument is out of range or inconsistent (stride 0, groups not dividing channels, ...)."""


class DtypeError(ConvgradError, TypeError):
    """An input has a dtype the op does not accept (for example float labels for cross_entropy)."""


class GradError(ConvgradError, RuntimeError):
    """Autograd was used in a way that cannot produce a gradient (backward on a non-scalar, ...)."""


class ArgumentTypeError(ConvgradError, TypeError):
    """An argument of the wrong kind (a set where order matters, a non-tensor parameter, ...)."""


class CheckpointError(ConvgradError, ValueError):
    """A checkpoint or run directory that is missing, corrupt, or does not fit the run."""


class RunLockedError(ConvgradError, RuntimeError):
    """Another process holds the lock of a run directory (it is writing that run now)."""


class MetricsError(ConvgradError, ValueError):
    """A ``metrics.jsonl`` line that is not a metrics record (the message gives its number)."""
