"""Open-loop policies: gamma is a fixed function of the training clock and reads no statistics.

The schedules' gamma is a closed-form ``gamma_at(t)`` of the step or epoch count, so ``gamma_at`` is also what a
plot of the schedule shows; ``unit="step"`` advances on ``step()``, ``unit="epoch"`` on ``epoch_end()``. FLSD-53
is open-loop too: a fixed gamma per p_t band, written once as a :class:`~adaptive_focal.GammaTable` that the loss
looks each sample up in. Their ``run_defaults`` place them on the run: ramps over its length, milestones at
fractions of its epochs, around its base gamma.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..gamma_forms import FocalMixture, GammaTable
from ..loss import FocalLoss
from .base import GammaPolicy, RunContext, _check_number, register_policy
from .space import Float

__all__ = [
    "ConstantGamma", "CosineGamma", "CyclicalFocal", "ExponentialGamma", "FLSD53", "FLSc531", "LinearGamma",
    "Schedule", "StepGamma",
]

_UNITS = ("step", "epoch")


class Schedule(GammaPolicy):
    """Base of the closed-form schedules: a subclass defines ``gamma_at(t)`` and calls ``_start()`` at the end
    of its ``__init__``."""

    unit_default: ClassVar[str] = "step"

    def __init__(self, loss: FocalLoss, unit: str | None = None) -> None:
        super().__init__(loss)
        unit = self.unit_default if unit is None else unit
        if unit not in _UNITS:
            raise ValueError(f"unit must be one of 'step', 'epoch', got {unit!r}")
        self.unit = unit

    def _start(self) -> None:
        """Writes gamma_at(0); called at the end of each subclass's __init__, once its settings are checked."""
        self._write(self.gamma_at(0))

    @property
    def t(self) -> int:
        """The schedule's clock: optimizer steps or completed epochs."""
        return self.step_count if self.unit == "step" else self.epoch

    def gamma_at(self, t: int) -> float:
        raise NotImplementedError

    def compute(self, stats):
        return self.gamma_at(self.step_count + 1) if self.unit == "step" else None

    def compute_epoch(self, val_stats):
        return self.gamma_at(self.epoch) if self.unit == "epoch" else None


@register_policy("constant")
class ConstantGamma(Schedule):
    """A fixed gamma (the tuned fixed-gamma baseline of Lin et al., 2017).

    Example:
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> policy = create_policy("constant", FocalLoss("sigmoid"), gamma=1.5)
        >>> policy.gamma_at(1000)
        1.5
    """

    search_space = {"gamma": Float(0.0, 5.0)}

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """The run's base gamma."""
        return {} if context.gamma is None else {"gamma": context.gamma}

    def __init__(self, loss: FocalLoss, gamma: float = 2.0, unit: str | None = None) -> None:
        super().__init__(loss, unit)
        self.gamma = _check_number("gamma", gamma, -20.0, 20.0)
        self._start()

    def gamma_at(self, t: int) -> float:
        return self.gamma


class _Ramp(Schedule):
    """From ``start`` to ``end`` over ``total`` steps (or epochs), then constant; subclasses shape the way."""

    def __init__(self, loss: FocalLoss, start: float, end: float, total: int, unit: str | None) -> None:
        super().__init__(loss, unit)
        self.start = _check_number("start", start, -20.0, 20.0)
        self.end = _check_number("end", end, -20.0, 20.0)
        self.total = _check_number("total", total, 1, integer=True)
        self._start()

    def gamma_at(self, t: int) -> float:
        return self._between(min(max(t, 0), self.total) / self.total)

    def _between(self, frac: float) -> float:
        raise NotImplementedError


@register_policy("linear")
class LinearGamma(_Ramp):
    """Linear ramp from ``start`` to ``end`` over ``total`` steps (or epochs), then constant.

    Example:
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> policy = create_policy("linear", FocalLoss("sigmoid"), start=0.0, end=2.0, total=4)
        >>> [policy.gamma_at(t) for t in range(6)]
        [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    """

    search_space = {"start": Float(0.0, 5.0), "end": Float(0.0, 5.0)}

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """From 0 to the run's base gamma over the first half of the run."""
        out = {} if context.gamma is None else {"start": 0.0, "end": context.gamma}
        if context.total_steps is not None:
            out["total"] = max(1, context.total_steps // 2)
        return out

    def __init__(self, loss: FocalLoss, start: float = 0.0, end: float = 2.0, total: int = 1000,
                 unit: str | None = None) -> None:
        super().__init__(loss, start, end, total, unit)

    def _between(self, frac: float) -> float:
        return self.start + (self.end - self.start) * frac


@register_policy("cosine")
class CosineGamma(_Ramp):
    """Half-cosine from ``start`` to ``end`` over ``total`` steps (or epochs), then constant.

    Example:
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> policy = create_policy("cosine", FocalLoss("sigmoid"), start=3.0, end=1.0, total=2)
        >>> [round(policy.gamma_at(t), 6) for t in range(4)]
        [3.0, 2.0, 1.0, 1.0]
    """

    search_space = {"start": Float(0.0, 5.0), "end": Float(0.0, 5.0)}

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """From twice the run's base gamma to half of it over the whole run."""
        out = {} if context.gamma is None else {"start": 2.0 * context.gamma, "end": context.gamma / 2.0}
        if context.total_steps is not None:
            out["total"] = context.total_steps
        return out

    def __init__(self, loss: FocalLoss, start: float = 3.0, end: float = 1.0, total: int = 1000,
                 unit: str | None = None) -> None:
        super().__init__(loss, start, end, total, unit)

    def _between(self, frac: float) -> float:
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * frac))


@register_policy("step")
class StepGamma(Schedule):
    """``start`` multiplied by ``factor`` at each milestone (like ``StepLR``/``MultiStepLR``).

    The decay factor is called ``factor`` (not ``gamma``, which would collide with the focal gamma).

    Example:
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> policy = create_policy("step", FocalLoss("sigmoid"), start=4.0, milestones=[2, 4], factor=0.5)
        >>> [policy.gamma_at(t) for t in range(6)]
        [4.0, 4.0, 2.0, 2.0, 1.0, 1.0]
    """

    search_space = {"start": Float(0.0, 5.0), "factor": Float(0.1, 1.0)}

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """Twice the run's base gamma, halved at half of the run's epochs."""
        out = {} if context.gamma is None else {"start": 2.0 * context.gamma}
        if context.epochs is not None:
            out.update(milestones=[max(1, context.epochs // 2)], unit="epoch")
        out["factor"] = 0.5
        return out

    def __init__(self, loss: FocalLoss, start: float = 2.0, milestones=(), factor: float = 0.5,
                 unit: str | None = None) -> None:
        super().__init__(loss, unit)
        self.start = _check_number("start", start, -20.0, 20.0)
        self.factor = _check_number("factor", factor, 0.0, low_open=True)
        self.milestones = _check_milestones(milestones)
        self._start()

    def gamma_at(self, t: int) -> float:
        passed = sum(1 for m in self.milestones if t >= m)
        return self.start * self.factor ** passed


@register_policy("exponential")
class ExponentialGamma(Schedule):
    """``start * factor**t``, clipped to ``[gamma_min, gamma_max]``.

    Example:
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> policy = create_policy("exponential", FocalLoss("sigmoid"), start=4.0, factor=0.5, gamma_min=1.0)
        >>> [policy.gamma_at(t) for t in range(4)]
        [4.0, 2.0, 1.0, 1.0]
    """

    search_space = {"start": Float(0.0, 5.0), "factor": Float(0.99, 1.0)}

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """Twice the run's base gamma, decaying to a quarter of that by the end of the run."""
        out = {} if context.gamma is None else {"start": 2.0 * context.gamma}
        if context.total_steps is not None:
            out["factor"] = 0.25 ** (1.0 / max(1, context.total_steps))
        out["gamma_min"] = 0.0
        return out

    def __init__(self, loss: FocalLoss, start: float = 2.0, factor: float = 0.999, gamma_min: float = 0.0,
                 gamma_max: float = 20.0, unit: str | None = None) -> None:
        super().__init__(loss, unit)
        self.start = _check_number("start", start, -20.0, 20.0)
        self.factor = _check_number("factor", factor, 0.0, low_open=True)
        self.gamma_min = _check_number("gamma_min", gamma_min, -20.0, 20.0)
        self.gamma_max = _check_number("gamma_max", gamma_max, self.gamma_min, 20.0)
        self._start()

    def gamma_at(self, t: int) -> float:
        # computed in log space so that large t neither overflows nor underflows before clipping
        if self.start == 0.0:
            value = 0.0
        else:
            log_mag = math.log(abs(self.start)) + t * math.log(self.factor)
            value = math.copysign(math.exp(min(log_mag, 50.0)), self.start)
        return min(max(value, self.gamma_min), self.gamma_max)


@register_policy("flsc531")
class FLSc531(Schedule):
    """FLSc-531 (Mukhoti et al., 2020, "Calibrating Deep Neural Networks using Focal Loss"): gamma 5, then 3 from
    ``milestones[0]``, then 1 from ``milestones[1]`` (epochs; the paper's CIFAR schedule is 100 and 250).

    Example:
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> policy = create_policy("flsc531", FocalLoss("softmax"), milestones=(2, 4))
        >>> [policy.gamma_at(t) for t in range(6)]
        [5.0, 5.0, 3.0, 3.0, 1.0, 1.0]
    """

    unit_default = "epoch"

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """The paper's milestones (100 and 250 of 350 epochs) as thirds of the run's epochs."""
        if context.epochs is None:
            return {}
        return {"milestones": (max(1, context.epochs // 3), max(2, (2 * context.epochs) // 3))}

    def __init__(self, loss: FocalLoss, milestones=(100, 250), unit: str | None = None) -> None:
        super().__init__(loss, unit)
        ms = _check_milestones(milestones)
        if len(ms) != 2:
            raise ValueError(f"milestones must be two increasing positive integers, got {milestones!r}")
        self.milestones = ms
        self._start()

    def gamma_at(self, t: int) -> float:
        return 5.0 if t < self.milestones[0] else (3.0 if t < self.milestones[1] else 1.0)


@register_policy("cyclical")
class CyclicalFocal(Schedule):
    """Cyclical focal loss (Smith, 2022, "Cyclical Focal Loss", arXiv:2202.08978), per epoch by default.

    The loss blends a high-confidence (inverse focal) term and the focal term,
    ``L = xi * L_hc + (1 - xi) * L_fl`` with ``L_hc = -(1 + p_t)**gamma_hc log(p_t)`` and
    ``L_fl = -(1 - p_t)**gamma_lc log(p_t)``, and ``xi`` cycles with the epoch ``e`` out of ``total`` epochs and the
    cyclical factor ``f_c = factor``:

        xi = 1 - f_c * e / total                      if f_c * e <= total
        xi = (f_c * e / total - 1) / (f_c - 1)        otherwise

    so training starts on the high-confidence term (xi = 1), reaches the focal loss at ``e = total / f_c`` and
    returns to the high-confidence term by the end (``factor = 1`` goes from one to the other once). The policy
    writes a :class:`~adaptive_focal.FocalMixture` with gammas ``(gamma_lc, -gamma_hc)`` and weights
    ``(1 - xi, xi)``. Defaults are the authors' CIFAR settings (gamma_hc 3, gamma_lc 2, f_c 4; the official code's
    README). The authors' code divides by ``total - 1`` rather than ``total``; this follows the paper's equation.

    Example:
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> loss = FocalLoss("softmax")
        >>> policy = create_policy("cyclical", loss, total=8, factor=4)
        >>> [policy.xi_at(e) for e in range(0, 9, 2)]
        [1.0, 0.0, 0.3333333333333333, 0.6666666666666666, 1.0]
        >>> policy.epoch_end()
        >>> loss.gamma.weights.tolist()  # (1 - xi, xi) after one epoch
        [0.5, 0.5]
    """

    unit_default = "epoch"
    search_space = {"gamma_hc": Float(0.0, 5.0), "gamma_lc": Float(0.0, 5.0), "factor": Float(1.0, 8.0)}

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """One cycle over the run's epochs."""
        return {} if context.epochs is None else {"total": context.epochs}

    def __init__(self, loss: FocalLoss, total: int = 200, gamma_hc: float = 3.0, gamma_lc: float = 2.0,
                 factor: float = 4.0, unit: str | None = None) -> None:
        super().__init__(loss, unit)
        self.total = _check_number("total", total, 1, integer=True)
        self.gamma_hc = _check_number("gamma_hc", gamma_hc, 0.0, 20.0)
        self.gamma_lc = _check_number("gamma_lc", gamma_lc, 0.0, 20.0)
        self.factor = _check_number("factor", factor, 1.0)
        self._start()

    def xi_at(self, t: int) -> float:
        """The weight of the high-confidence term after ``t`` epochs (or steps); constant after ``total``."""
        r = self.factor * min(max(t, 0), self.total) / self.total
        xi = 1.0 - r if r <= 1.0 else (r - 1.0) / (self.factor - 1.0)
        return min(max(xi, 0.0), 1.0)  # rounding can leave (r - 1) / (f_c - 1) a hair above 1

    def gamma_at(self, t: int) -> FocalMixture:
        """The mixture in force after ``t`` epochs (or steps); writing it copies into the loss's mixture in place."""
        xi = self.xi_at(t)
        return FocalMixture([self.gamma_lc, -self.gamma_hc], [1.0 - xi, xi])

    def compute(self, stats):
        return self._blend(self.step_count + 1) if self.unit == "step" else None

    def compute_epoch(self, val_stats):
        return self._blend(self.epoch) if self.unit == "epoch" else None

    def _blend(self, t: int):
        """Sets the loss's own two-term mixture to ``gamma_at(t)`` in place, without building a module (this runs
        every step with ``unit="step"``); a new mixture when the loss holds another form."""
        current = self.loss.gamma
        if not (isinstance(current, FocalMixture) and current.gammas.shape == (2,) and current.weights.shape == (2,)):
            return self.gamma_at(t)
        xi = self.xi_at(t)
        with torch.no_grad():  # fills with Python numbers: no host-device copy, no synchronisation
            current.gammas[0].fill_(self.gamma_lc)
            current.gammas[1].fill_(-self.gamma_hc)
            current.weights[0].fill_(1.0 - xi)
            current.weights[1].fill_(xi)
        return current


@register_policy("flsd53")
class FLSD53(GammaPolicy):
    """FLSD-53 (Mukhoti et al., 2020, "Calibrating Deep Neural Networks using Focal Loss"), sample-dependent.

    gamma = 5 for p_t < 0.2 and 3 above; here generalised to three bands: ``gamma_low`` for
    ``p_t < thresholds[0]``, ``gamma_mid`` for ``thresholds[0] <= p_t < thresholds[1]`` and ``gamma_base`` above
    (the defaults 5, 3, 3 with thresholds 0.2, 0.5 are the paper's rule). It writes a :class:`GammaTable` once
    and reads no statistics (it is open-loop: the loss looks each sample up by its detached p_t).

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> loss = FocalLoss("softmax")
        >>> policy = create_policy("flsd53", loss)
        >>> loss.gamma.lookup(torch.tensor([0.1, 0.3, 0.9]))
        tensor([5., 3., 3.])
    """

    search_space = {"gamma_low": Float(2.0, 8.0), "gamma_mid": Float(1.0, 5.0), "gamma_base": Float(0.0, 5.0)}

    def __init__(self, loss: FocalLoss, gamma_low: float = 5.0, gamma_mid: float = 3.0, gamma_base: float = 3.0,
                 thresholds=(0.2, 0.5)) -> None:
        super().__init__(loss)
        values = [_check_number(n, v, 0.0, 20.0) for n, v in
                  (("gamma_low", gamma_low), ("gamma_mid", gamma_mid), ("gamma_base", gamma_base))]
        th = tuple(thresholds)
        if len(th) != 2 or not all(isinstance(v, (int, float)) for v in th) or not 0.0 < th[0] < th[1] < 1.0:
            raise ValueError(f"thresholds must be two increasing numbers in (0, 1), got {thresholds!r}")
        self.table_edges = (0.0, float(th[0]), float(th[1]), 1.0)
        self.table_values = tuple(values)
        self._write(GammaTable(self.table_edges, self.table_values))


def _check_milestones(milestones) -> tuple[int, ...]:
    try:
        ms = tuple(milestones)
    except TypeError:
        raise ValueError(f"milestones must be a sequence of increasing positive integers, got {milestones!r}") from None
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ms) or list(ms) != sorted(set(ms)):
        raise ValueError(f"milestones must be strictly increasing positive integers, got {milestones!r}")
    return ms
