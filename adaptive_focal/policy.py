"""Deprecated: the gamma-policy base class and registry moved to adaptive_focal.policies.base.

Import from there or from ``adaptive_focal``; this module re-exports the old names (and, for a deprecation
period, any other attribute of the new modules) and warns when first imported.
"""

import warnings as _warnings

from .policies import base as _base
from .policies.base import GammaPolicy, create_policy, list_policies, policy_class, register_policy

_warnings.warn(
    "adaptive_focal.policy is deprecated: import from adaptive_focal.policies.base (or adaptive_focal) instead",
    DeprecationWarning, stacklevel=2,
)

__all__ = ["GammaPolicy", "create_policy", "list_policies", "policy_class", "register_policy"]
_MODULES = (_base,)


def __getattr__(name):
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
