"""Compare gamma policies on your own training code: which gamma, or which policy, and is it worth it?

Install with ``pip install "adaptive_focal[compare]"`` (Optuna, SciPy and Matplotlib). Write a training function
against the :class:`Run` contract (:mod:`adaptive_focal.compare.objective`), then run every arm on it::

    adaptive-focal compare mytask.py:train --mode softmax --metric balanced_accuracy --seeds 3

or from Python, :func:`compare`. Each arm (a fixed gamma of a grid, gamma tuned by TPE, each policy that applies to
the loss mode with its defaults and tuned over its search space) runs for the same seeds; tuned arms select on the
validation metric only; the report ranks the arms and pairs each, seed by seed, with the best fixed gamma.

The pieces, one module each:

* :mod:`~adaptive_focal.compare.arms`: :class:`Arm`, :func:`parse_arm`, :func:`default_arms`;
* :mod:`~adaptive_focal.compare.study`: :class:`Study`, what is compared and how it is recorded;
* :mod:`~adaptive_focal.compare.objective`: the contract of your function, :class:`Run`;
* :mod:`~adaptive_focal.compare.storage`: journal files and databases, repaired and retried;
* :mod:`~adaptive_focal.compare.runner`: set-up, workers, heartbeats, retries (:func:`run`, :class:`RunOptions`);
* :mod:`~adaptive_focal.compare.results`, :mod:`~adaptive_focal.compare.analysis`,
  :mod:`~adaptive_focal.compare.report`, :mod:`~adaptive_focal.compare.export`: what the trials say;
* :mod:`~adaptive_focal.compare.studies`: study definitions found in files and folders (``adaptive-focal sweep``);
* :mod:`~adaptive_focal.compare.api`: :func:`compare`.

``import adaptive_focal`` imports none of this; the modules that need Optuna import it when they are imported.
"""

from __future__ import annotations

import importlib

from .arms import GAMMA_GRID, Arm, across_seeds, default_arms, parse_arm
from .objective import ObjectiveError, Run, load_objective
from .options import RunOptions
from .study import Study

__all__ = ["GAMMA_GRID", "Arm", "Comparison", "ObjectiveError", "Run", "RunOptions", "StorageError", "Study",
           "StudyMismatchError", "TrialsFailedError", "across_seeds", "compare", "default_arms", "load_objective",
           "open_storage", "parse_arm", "run"]

#: names imported on first use: they need Optuna (the ``compare`` extra)
_LAZY = {
    "Comparison": "api", "compare": "api",
    "StudyMismatchError": "runner", "TrialsFailedError": "runner", "run": "runner",
    "StorageError": "storage", "open_storage": "storage",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
