"""Search-space parameters: what a policy declares in ``search_space`` for a tuner to sample.

Three small frozen dataclasses, checked when built, each able to draw itself from an Optuna trial without importing
Optuna (``suggest`` only calls the trial's ``suggest_float`` / ``suggest_int`` / ``suggest_categorical``):

* :class:`Float` ``(low, high, log=False)``, :class:`Int` ``(low, high)``, :class:`Categorical` ``(choices)``;
* ``as_tuple()`` gives the plain tuple a study manifest stores, ``("float", low, high, log)``, ``("int", low, high)``
  or ``("categorical", choices)``, and :func:`as_param` turns such a tuple (or a list read back from JSON) into the
  parameter again, so stored studies keep matching.

Example:
    >>> from adaptive_focal.policies.space import Float, as_param
    >>> rate = Float(1e-3, 1.0, log=True)
    >>> rate.as_tuple()
    ('float', 0.001, 1.0, True)
    >>> as_param(["float", 0.001, 1.0, True]) == rate
    True
    >>> Float(1.0, 0.5)
    Traceback (most recent call last):
    ...
    ValueError: Float: high must be >= low=1.0, got 0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

__all__ = ["Categorical", "Float", "Int", "Param", "as_param"]


def _number(owner: str, name: str, value, integer: bool = False):
    ok = isinstance(value, int) if integer else isinstance(value, Real)
    if isinstance(value, bool) or not ok or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{owner}: {name} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class Float:
    """A float in ``[low, high]``, sampled on a log scale when ``log`` (then ``low`` must be > 0)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        low = _number("Float", "low", self.low)
        high = _number("Float", "high", self.high)
        if high < low:
            raise ValueError(f"Float: high must be >= low={low}, got {self.high!r}")
        if not isinstance(self.log, bool):
            raise ValueError(f"Float: log must be True or False, got {self.log!r}")
        if self.log and low <= 0:
            raise ValueError(f"Float: low must be > 0 with log=True, got {self.low!r}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def suggest(self, trial, name: str) -> float:
        """``trial.suggest_float(name, low, high, log=log)``."""
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def as_tuple(self) -> tuple:
        return ("float", self.low, self.high, self.log)

    def __contains__(self, value) -> bool:
        return isinstance(value, Real) and not isinstance(value, bool) and self.low <= value <= self.high

    def __iter__(self):  # ``tuple(param)`` and unpacking give the stored form, as the tuples of earlier releases did
        return iter(self.as_tuple())


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]``."""

    low: int
    high: int

    def __post_init__(self) -> None:
        low = _number("Int", "low", self.low, integer=True)
        high = _number("Int", "high", self.high, integer=True)
        if high < low:
            raise ValueError(f"Int: high must be >= low={low}, got {self.high!r}")

    def suggest(self, trial, name: str) -> int:
        """``trial.suggest_int(name, low, high)``."""
        return trial.suggest_int(name, self.low, self.high)

    def as_tuple(self) -> tuple:
        return ("int", self.low, self.high)

    def __contains__(self, value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def __iter__(self):
        return iter(self.as_tuple())


_PLAIN = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (None, bools, numbers or strings, as Optuna stores them), kept as a tuple."""

    choices: tuple

    def __post_init__(self) -> None:
        if isinstance(self.choices, (str, bytes)) or not hasattr(self.choices, "__iter__"):
            raise ValueError(f"Categorical: choices must be a sequence, got {self.choices!r}")
        choices = tuple(self.choices)
        if not choices:
            raise ValueError("Categorical: choices must not be empty")
        bad = [c for c in choices if not isinstance(c, _PLAIN)]
        if bad:
            raise ValueError(f"Categorical: choices must be None, bools, numbers or strings, got {bad!r}")
        object.__setattr__(self, "choices", choices)

    def suggest(self, trial, name: str):
        """``trial.suggest_categorical(name, choices)``."""
        return trial.suggest_categorical(name, list(self.choices))

    def as_tuple(self) -> tuple:
        return ("categorical", self.choices)

    def __contains__(self, value) -> bool:
        return value in self.choices

    def __iter__(self):
        return iter(self.as_tuple())


Param = Float | Int | Categorical
_KINDS = {"float": Float, "int": Int, "categorical": Categorical}


def as_param(spec: Any) -> Param:
    """The parameter object for ``spec``: a :class:`Float`, :class:`Int` or :class:`Categorical` (returned as it is)
    or its ``as_tuple()`` form as a tuple or list (``("float", low, high, log)``, ``("int", low, high)``,
    ``("categorical", choices)``).

    Raises:
        ValueError: naming ``spec`` when it is neither.
    """
    if isinstance(spec, (Float, Int, Categorical)):
        return spec
    if isinstance(spec, (tuple, list)) and spec and spec[0] in _KINDS:
        kind, args = spec[0], tuple(spec[1:])
        arity = {"float": (3,), "int": (2,), "categorical": (1,)}[kind]
        if len(args) in arity:
            try:
                return _KINDS[kind](*args)
            except (TypeError, ValueError) as err:
                raise ValueError(f"search-space spec {spec!r} is not valid: {err}") from None
    raise ValueError(
        f"a search-space spec must be Float(low, high, log), Int(low, high), Categorical(choices) or one of the "
        f"tuples ('float', low, high, log), ('int', low, high), ('categorical', choices); got {spec!r}"
    )
