"""The lab: the course's MNIST experiments as specs, runs that resume exactly, and a report.

- :mod:`convgrad.lab.spec`: TOML specs validated by pydantic (:func:`resolve_spec`); each file
  is one experiment, with its order, cost hint, seeds, protocol and report figures.
- :mod:`convgrad.lab.models`: layer lists, named builders, the weight-sharing tower and the
  sum-of-digits head.
- :mod:`convgrad.lab.runner`: :func:`run_experiment`, checkpointed and exactly resumable.
- :mod:`convgrad.lab.selection`: best-on-validation weights (the validation protocol).
- :mod:`convgrad.lab.reproduce`: many runs (and seeds) in parallel processes.
- :mod:`convgrad.lab.report`: ``report.md`` and a self-contained ``report.html``.
- :mod:`convgrad.lab.explain`, :mod:`convgrad.lab.graph`: pictures of a trained run and of a
  network's computation graph.

The lab imports the engine and the data package, never the reverse.
"""

from convgrad.lab.models import SplitShared, build_model
from convgrad.lab.runner import RunOutcome, run_experiment, run_spec
from convgrad.lab.spec import (
    ExperimentSpec,
    SpecError,
    builtin_names,
    load_spec,
    resolve_spec,
    validate_spec,
)

__all__ = [
    "ExperimentSpec", "RunOutcome", "SpecError", "SplitShared", "build_model", "builtin_names",
    "load_spec", "resolve_spec", "run_experiment", "run_spec", "validate_spec",
]
