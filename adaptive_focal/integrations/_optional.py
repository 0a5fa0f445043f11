"""Imports an optional dependency with an error that says how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, feature: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{feature} needs the '{module}' package: pip install 'adaptive_focal[{extra}]' (or pip install {module})"
        ) from err
