"""Deprecated: the feedback controllers moved to adaptive_focal.policies.feedback, adaptive_focal.policies.schedules.

Import from there or from ``adaptive_focal``; this module re-exports the old names (and, for a deprecation
period, any other attribute of the new modules) and warns when first imported.
"""

import warnings as _warnings

from .policies import feedback as _feedback
from .policies import schedules as _schedules
from .policies.feedback import AdaptiveAsymmetry, AutomatedGamma, EqualizedFocal, PIGamma
from .policies.schedules import FLSD53

_warnings.warn(
    "adaptive_focal.controllers is deprecated: import from adaptive_focal.policies.feedback (FLSD53: "
    "adaptive_focal.policies.schedules) or from adaptive_focal instead",
    DeprecationWarning, stacklevel=2,
)

__all__ = ["AdaptiveAsymmetry", "AutomatedGamma", "EqualizedFocal", "PIGamma", "FLSD53"]
_MODULES = (_feedback, _schedules)


def __getattr__(name):
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
