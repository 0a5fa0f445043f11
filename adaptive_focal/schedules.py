"""Deprecated: the schedules moved to adaptive_focal.policies.schedules, adaptive_focal.policies.sequential.

Import from there or from ``adaptive_focal``; this module re-exports the old names (and, for a deprecation
period, any other attribute of the new modules) and warns when first imported.
"""

import warnings as _warnings

from .policies import schedules as _schedules
from .policies import sequential as _sequential
from .policies.schedules import (
    ConstantGamma,
    CosineGamma,
    CyclicalFocal,
    ExponentialGamma,
    FLSc531,
    LinearGamma,
    Schedule,
    StepGamma,
)
from .policies.sequential import SequentialGamma

_warnings.warn(
    "adaptive_focal.schedules is deprecated: import from adaptive_focal.policies.schedules (SequentialGamma: "
    "adaptive_focal.policies.sequential) or from adaptive_focal instead",
    DeprecationWarning, stacklevel=2,
)

__all__ = [
    "ConstantGamma", "CosineGamma", "CyclicalFocal", "ExponentialGamma", "FLSc531", "LinearGamma", "Schedule",
    "StepGamma", "SequentialGamma",
]
_MODULES = (_schedules, _sequential)


def __getattr__(name):
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
