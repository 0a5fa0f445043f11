"""Deprecated: adaFocal moved to adaptive_focal.policies.adafocal.

Import from there or from ``adaptive_focal``; this module re-exports the old names (and, for a deprecation
period, any other attribute of the new modules) and warns when first imported.
"""

import warnings as _warnings

from .policies import adafocal as _adafocal
from .policies.adafocal import AdaFocal, ClasswiseAdaFocal, adafocal_update, equal_mass_edges

_warnings.warn(
    "adaptive_focal.controllers_adafocal is deprecated: import from adaptive_focal.policies.adafocal (or "
    "adaptive_focal) instead",
    DeprecationWarning, stacklevel=2,
)

__all__ = ["AdaFocal", "ClasswiseAdaFocal", "adafocal_update", "equal_mass_edges"]
_MODULES = (_adafocal,)


def __getattr__(name):
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
