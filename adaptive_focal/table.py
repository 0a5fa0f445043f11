"""Deprecated: :class:`~adaptive_focal.GammaTable` moved to :mod:`adaptive_focal.gamma_forms`, with the other gamma
forms. Import it from ``adaptive_focal`` (or ``adaptive_focal.gamma_forms``); importing it from here still works
and warns. Old checkpoints pickled with this path load through the same name.

Example:
    >>> import warnings
    >>> import adaptive_focal
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     from adaptive_focal.table import GammaTable
    >>> GammaTable is adaptive_focal.GammaTable, [w.category.__name__ for w in caught]
    (True, ['DeprecationWarning'])
"""

from __future__ import annotations

import sys

__all__ = ["GammaTable"]

_MOVED = {"GammaTable": "adaptive_focal.gamma_forms"}


def _caller_in_package() -> bool:
    """Whether the import comes from another adaptive_focal module: modules that still import this path (they
    are switched to adaptive_focal.gamma_forms as their owners move them) must not make ``import adaptive_focal``
    warn. Import machinery frames are skipped."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
        frame = frame.f_back
    name = "" if frame is None else frame.f_globals.get("__name__", "")
    return name.startswith("adaptive_focal.") and name != __name__


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _caller_in_package():
        import warnings

        warnings.warn(f"adaptive_focal.table is deprecated: import {name} from adaptive_focal or {_MOVED[name]}",
                      DeprecationWarning, stacklevel=2)
    from . import gamma_forms

    return getattr(gamma_forms, name)
