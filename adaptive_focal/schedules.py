"""Open-loop gamma schedules: gamma is a closed-form function ``gamma_at(t)`` of the step or epoch count.

They ignore the statistics (``step(stats)`` only counts), so ``gamma_at`` is also what a plot of the schedule
shows. ``unit="step"`` advances on ``step()``, ``unit="epoch"`` on ``epoch_end()``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from .gamma_forms import FocalMixture
from .loss import FocalLoss
from .policy import GammaPolicy, _check_number, register_policy

__all__ = [
    "ConstantGamma", "CosineGamma", "CyclicalFocal", "ExponentialGamma", "FLSc531", "LinearGamma", "Schedule",
    "SequentialGamma", "StepGamma",
]

_UNITS = ("step", "epoch")


class Schedule(GammaPolicy):
    """Base of the open-loop schedules: subclasses define ``gamma_at(t)`` and ``_hyper()``."""

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

    def _compute(self, stats):
        return self.gamma_at(self.step_count + 1) if self.unit == "step" else None

    def _compute_epoch(self, val_stats):
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

    search_space = {"gamma": ("float", 0.0, 5.0, False)}

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

    search_space = {"start": ("float", 0.0, 5.0, False), "end": ("float", 0.0, 5.0, False)}

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

    search_space = {"start": ("float", 0.0, 5.0, False), "end": ("float", 0.0, 5.0, False)}

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

    search_space = {"start": ("float", 0.0, 5.0, False), "factor": ("float", 0.1, 1.0, False)}

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

    search_space = {"start": ("float", 0.0, 5.0, False), "factor": ("float", 0.99, 1.0, False)}

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
    search_space = {"gamma_hc": ("float", 0.0, 5.0, False), "gamma_lc": ("float", 0.0, 5.0, False),
                    "factor": ("float", 1.0, 8.0, False)}

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

    def _compute(self, stats):
        return self._blend(self.step_count + 1) if self.unit == "step" else None

    def _compute_epoch(self, val_stats):
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


@register_policy("sequential")
class SequentialGamma(GammaPolicy):
    """Hands over from one policy to the next at milestones (e.g. a warm-up schedule into a controller).

    ``policies[i]`` is in charge from ``milestones[i - 1]`` (in ``unit``s) until ``milestones[i]``. Every call is
    forwarded to the policy in charge only; the others keep their state. All policies must drive the same loss.

    Example:
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> loss = FocalLoss("softmax")
        >>> warmup = create_policy("linear", loss, start=0.0, end=2.0, total=2)
        >>> hold = create_policy("constant", loss, gamma=2.0)
        >>> policy = create_policy("sequential", loss, policies=[warmup, hold], milestones=[2])
        >>> for _ in range(3):
        ...     policy.step()
        >>> policy.get_last_gamma()
        2.0
    """

    def __init__(self, loss: FocalLoss, policies=(), milestones=(), unit: str = "step") -> None:
        super().__init__(loss)
        policies = list(policies)
        if len(policies) < 1 or not all(isinstance(p, GammaPolicy) for p in policies):
            raise ValueError(f"policies must be a non-empty list of GammaPolicy objects, got {policies!r}")
        if any(p.loss is not loss for p in policies):
            raise ValueError("every policy given to 'sequential' must drive the same FocalLoss as the sequence")
        ms = _check_milestones(milestones)
        if len(ms) != len(policies) - 1:
            raise ValueError(
                f"milestones must have len(policies) - 1 = {len(policies) - 1} entries, got {len(ms)}"
            )
        if unit not in _UNITS:
            raise ValueError(f"unit must be one of 'step', 'epoch', got {unit!r}")
        self.policies, self.milestones, self.unit = policies, ms, unit
        self.needs_validation = any(p.needs_validation for p in policies)
        self.needs_stats = any(p.needs_stats for p in policies)  # so callers know to compute them every step
        self._write_from(self.current)

    @property
    def index(self) -> int:
        t = self.step_count if self.unit == "step" else self.epoch
        return sum(1 for m in self.milestones if t >= m)

    @property
    def current(self) -> GammaPolicy:
        return self.policies[self.index]

    def _write_from(self, policy: GammaPolicy) -> None:
        last = policy.get_last_gamma()
        if last is not None:
            self._write(last)

    def step(self, stats=None) -> None:
        policy = self.current
        policy._check_stats("stats", stats, required=policy.needs_stats)
        policy.step(stats)
        self.step_count += 1
        if self.current is not policy:  # handed over: the new policy's gamma applies from now on
            self._write_from(self.current)
        else:
            self._last_gamma = policy.get_last_gamma()

    def epoch_end(self, val_stats=None) -> None:
        policy = self.current
        policy._check_stats("val_stats", val_stats, required=policy.needs_validation)
        policy.epoch_end(val_stats)
        self.epoch += 1
        if self.current is not policy:
            self._write_from(self.current)
        else:
            self._last_gamma = policy.get_last_gamma()

    def _state(self) -> dict:
        return {"policies": [p.state_dict() for p in self.policies]}

    def _load_state(self, state: dict) -> None:
        states = state.get("policies")
        if not isinstance(states, list) or len(states) != len(self.policies):
            raise ValueError(f"state['policies'] must hold {len(self.policies)} policy states")
        for policy, sub in zip(self.policies, states):
            policy.load_state_dict(sub)


def _check_milestones(milestones) -> tuple[int, ...]:
    try:
        ms = tuple(milestones)
    except TypeError:
        raise ValueError(f"milestones must be a sequence of increasing positive integers, got {milestones!r}") from None
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ms) or list(ms) != sorted(set(ms)):
        raise ValueError(f"milestones must be strictly increasing positive integers, got {milestones!r}")
    return ms
