"""Deprecated: the learned controllers moved to adaptive_focal.policies.learned.

Import from there or from ``adaptive_focal``; this module re-exports the old names (and, for a deprecation
period, any other attribute of the new modules) and warns when first imported.
"""

import warnings as _warnings

from .policies import learned as _learned
from .policies.learned import BanditGamma, GammaNet, HypergradientGamma
from .policies.learned import bandit as _learned_bandit
from .policies.learned import common as _learned_common
from .policies.learned import gammanet as _learned_gammanet
from .policies.learned import hypergradient as _learned_hypergradient

_warnings.warn(
    "adaptive_focal.learned is deprecated: import from adaptive_focal.policies.learned (or adaptive_focal) instead",
    DeprecationWarning, stacklevel=2,
)

__all__ = ["BanditGamma", "GammaNet", "HypergradientGamma"]
_MODULES = (_learned, _learned_common, _learned_hypergradient, _learned_gammanet, _learned_bandit)


def __getattr__(name):
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
