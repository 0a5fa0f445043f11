"""Optuna: sample a gamma policy and its hyperparameters in a trial, and report a validation metric for pruning.

Every policy class declares its ``search_space`` (:mod:`adaptive_focal.policies.space` parameters), the loss modes
it applies to (``modes``) and what it needs of the run (``requires``); :func:`suggest_policy` offers the policies
that apply to the loss and can be built for the run, samples one (a fixed gamma, ``"constant"``, is always among
the choices) and then its hyperparameters, named ``"<policy>.<param>"`` so that the parameters of different
policies never collide in a study, and builds it with the run's defaults (:class:`~adaptive_focal.RunContext`).
:class:`PruningReporter` sends a metric to ``trial.report`` each epoch and raises ``optuna.TrialPruned`` when the
study's pruner says so.

Example:
    >>> import optuna
    >>> import adaptive_focal as af
    >>> from adaptive_focal.integrations.optuna import suggest_policy
    >>> def objective(trial):
    ...     loss = af.FocalLoss("softmax")
    ...     context = af.RunContext(epochs=3, steps_per_epoch=20, gamma=2.0)
    ...     policy = suggest_policy(trial, loss, policies=["constant", "pi", "linear"], context=context)
    ...     return float(loss.gamma)  # a real objective trains and returns a validation metric
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    >>> study.optimize(objective, n_trials=3)
    >>> "policy" in study.best_params and len(study.trials)
    3
"""

from __future__ import annotations

from ..loss import FocalLoss
from ..policies import GammaPolicy, RunContext, create_policy, list_policies, policy_class
from ._optional import require

optuna = require("optuna", "optuna", "adaptive_focal.integrations.optuna")

__all__ = ["PruningReporter", "default_candidates", "suggest_policy"]

_EMPTY = RunContext()


def _unmet(name: str, mode: str | None, fixed: dict, context: RunContext) -> str | None:
    """Why the policy ``name`` cannot be offered (None when it can)."""
    cls = policy_class(name)
    if mode is not None and not cls.applies_to(mode):
        return f"it applies to {' and '.join(cls.modes)} losses, not {mode}"
    missing = cls.missing_requirements(context, fixed.get(name, {}))
    if missing:
        return (f"it needs fixed={{{name!r}: {{{missing[0]!r}: ...}}}} or context=RunContext({missing[0]}=...) "
                f"to be built")
    return None


def default_candidates(fixed: dict | None = None, *, mode: str | None = None,
                       context: RunContext | None = None) -> list[str]:
    """Every registered policy that applies to a loss of ``mode`` (any mode when None) and can be built from
    ``context`` and the ``fixed`` arguments (the fields of its ``requires``)."""
    fixed, context = fixed or {}, context or _EMPTY
    return [name for name in list_policies() if _unmet(name, mode, fixed, context) is None]


def suggest_policy(trial, loss: FocalLoss, policies=None, fixed: dict | None = None,
                   context: RunContext | None = None) -> GammaPolicy:
    """Samples a policy and its hyperparameters in ``trial`` and builds it for ``loss``.

    Args:
        trial: an ``optuna.Trial``.
        loss: the :class:`~adaptive_focal.FocalLoss` the policy will drive; only policies that apply to its mode
            are offered.
        policies: candidate names (default: :func:`default_candidates` for the loss's mode and ``context``);
            ``"constant"`` (a tuned fixed gamma) is added if missing, so every study compares against the
            fixed-gamma baseline. A name that does not apply to the loss or cannot be built is an error.
        fixed: per-policy arguments that are not searched, e.g. ``{"pi": {"gamma_max": 4.0},
            "classwise_adafocal": {"num_classes": 10}}``; they override sampled values and run defaults.
        context: the run (:class:`~adaptive_focal.RunContext`): its length, classes, base gamma, model, ... The
            policy is built with ``create_policy(name, loss, context=context, **sampled, **fixed)``, so schedules
            span the run rather than their own defaults.

    Returns:
        The built policy; the trial's params hold ``"policy"`` and ``"<policy>.<param>"`` entries.
    """
    if not isinstance(loss, FocalLoss):
        raise TypeError(f"loss must be an adaptive_focal.FocalLoss, got {type(loss).__name__}")
    if context is not None and not isinstance(context, RunContext):
        raise TypeError(f"context must be a RunContext or None, got {type(context).__name__}")
    fixed = dict(fixed or {})
    known = list_policies()
    for name in fixed:
        if name not in known:
            raise ValueError(f"fixed has arguments for unknown policy {name!r}; available: {', '.join(known)}")
    names = default_candidates(fixed, mode=loss.mode, context=context) if policies is None else list(policies)
    for name in names:
        if name not in known:
            raise ValueError(f"unknown policy {name!r} in policies; available: {', '.join(known)}")
        why = _unmet(name, loss.mode, fixed, context or _EMPTY)
        if why is not None:
            raise ValueError(f"policy {name!r} cannot be offered for this {loss.mode} loss: {why}")
    if "constant" not in names:
        names.append("constant")
    name = trial.suggest_categorical("policy", sorted(names))
    kwargs = {param: spec.suggest(trial, f"{name}.{param}") for param, spec in policy_class(name).search_space.items()}
    kwargs.update(fixed.get(name, {}))
    return create_policy(name, loss, context=context, **kwargs)


class PruningReporter:
    """Reports a validation metric to the trial each epoch and prunes unpromising trials.

    ``report(value, epoch)`` calls ``trial.report`` and raises ``optuna.TrialPruned`` when
    ``trial.should_prune()``. Multi-objective studies cannot prune (Optuna's ``trial.report`` refuses them), so
    there it only records the value in the trial's user attributes.
    """

    def __init__(self, trial, name: str = "val_metric") -> None:
        self.trial = trial
        self.name = name
        self._multi = len(trial.study.directions) > 1

    def report(self, value: float, epoch: int) -> None:
        value = float(value)
        if self._multi:
            self.trial.set_user_attr(f"{self.name}@{epoch}", value)
            return
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.name}={value:.6g}")
