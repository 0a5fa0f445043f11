"""Composition: a sequence of policies that hand over to each other at milestones.

The sequence is itself a policy with the one signature, so any policies chain, schedules and controllers alike
(torch's ``SequentialLR`` cannot chain ``ReduceLROnPlateau``, whose ``step`` takes the metric: here every policy
takes its feedback as the argument of ``step`` / ``epoch_end``).
"""

from __future__ import annotations

from ..loss import FocalLoss
from ..stats import BatchStats
from .base import GammaPolicy, RunContext, register_policy
from .feedback import AutomatedGamma
from .schedules import _UNITS, LinearGamma, _check_milestones

__all__ = ["SequentialGamma"]


@register_policy("sequential")
class SequentialGamma(GammaPolicy):
    """Hands over from one policy to the next at milestones (e.g. a warm-up schedule into a controller).

    ``policies[i]`` is in charge from ``milestones[i - 1]`` (in ``unit``s) until ``milestones[i]``. Every call is
    forwarded to the policy in charge only; the others keep their state. All policies must drive the same loss.
    Statistics that are not finite are skipped by the policy in charge (``skipped_batches`` sums the policies').

    Built from a :class:`~adaptive_focal.RunContext` (``requires`` its ``steps_per_epoch``), the default sequence
    is a linear warm-up from 0 to the run's base gamma over the first epoch, then the automated focal loss.

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

    requires = ("steps_per_epoch",)

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """A linear warm-up from 0 to the run's base gamma over the first epoch, then ``automated``."""
        if context.steps_per_epoch is None:
            return {}
        end = {} if context.gamma is None else {"end": context.gamma}
        warmup = LinearGamma(loss, start=0.0, total=context.steps_per_epoch, **end)
        return {"policies": [warmup, AutomatedGamma(loss)], "milestones": [context.steps_per_epoch]}

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

    @property
    def skipped_batches(self) -> int:
        return sum(p.skipped_batches for p in self.policies)

    def _write_from(self, policy: GammaPolicy) -> None:
        last = policy.get_last_gamma()
        if last is not None:
            self._write(last)

    def step(self, stats: BatchStats | None = None) -> None:
        policy = self.current
        policy._check_stats("stats", stats, required=policy.needs_stats)
        policy.step(stats)
        self.step_count += 1
        if self.current is not policy:  # handed over: the new policy's gamma applies from now on
            self._write_from(self.current)
        else:
            self._last_gamma = policy.get_last_gamma()

    def epoch_end(self, val_stats: BatchStats | None = None) -> None:
        policy = self.current
        policy._check_stats("val_stats", val_stats, required=policy.needs_validation)
        policy.epoch_end(val_stats)
        self.epoch += 1
        if self.current is not policy:
            self._write_from(self.current)
        else:
            self._last_gamma = policy.get_last_gamma()

    # -- state: the policies' own states, each loaded all or nothing after all of them were checked -------------
    def extra_state(self) -> dict:
        return {"policies": [p.state_dict() for p in self.policies]}

    def check_extra_state(self, state: dict) -> None:
        states = state.get("policies")
        if not isinstance(states, list) or len(states) != len(self.policies):
            raise ValueError(f"state['policies'] must hold {len(self.policies)} policy states")
        for i, (policy, sub) in enumerate(zip(self.policies, states)):
            try:
                policy._check_state(sub)
            except (TypeError, ValueError) as err:
                raise ValueError(f"state['policies'][{i}] ({policy.name!r}): {err}") from None

    def load_extra_state(self, state: dict) -> None:
        for policy, sub in zip(self.policies, state["policies"]):
            policy.load_state_dict(sub)

    def _check_state(self, state) -> tuple:
        checked = super()._check_state(state)
        step_count, epoch, _, last = checked
        t = step_count if self.unit == "step" else epoch
        # the sequence's gamma is that of the policy in charge at the saved step: of that policy's form and shape
        self.policies[sum(1 for m in self.milestones if t >= m)]._checked_last_gamma(last)
        return checked

    def _checked_last_gamma(self, last):
        return self._valid_gamma(last)  # (checked against the policy in charge by _check_state)
