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

# GammaTable is served by the module __getattr__ below (with its warning), which pyflakes cannot see
__all__ = ["GammaTable"]  # noqa: F822

_MOVED = {"GammaTable": "adaptive_focal.gamma_forms"}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(f"adaptive_focal.table is deprecated: import {name} from adaptive_focal or {_MOVED[name]}",
                  DeprecationWarning, stacklevel=2)
    from . import gamma_forms

    return getattr(gamma_forms, name)
