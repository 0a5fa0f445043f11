"""Optuna: sample a gamma policy and its hyperparameters in a trial, and report a validation metric for pruning.

Every policy class declares its ``search_space``; :func:`suggest_policy` samples a policy name (a fixed gamma,
``"constant"``, is always among the choices) and then that policy's hyperparameters, named ``"<policy>.<param>"``
so that the parameters of different policies never collide in a study. :class:`PruningReporter` sends a metric to
``trial.report`` each epoch and raises ``optuna.TrialPruned`` when the study's pruner says so.

Example:
    >>> import optuna
    >>> import adaptive_focal as af
    >>> from adaptive_focal.integrations.optuna import suggest_policy
    >>> def objective(trial):
    ...     loss = af.FocalLoss("softmax")
    ...     policy = suggest_policy(trial, loss, policies=["constant", "pi"])
    ...     return float(loss.gamma)  # a real objective trains and returns a validation metric
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    >>> study.optimize(objective, n_trials=3)
    >>> "policy" in study.best_params and len(study.trials)
    3
"""

from __future__ import annotations

from ..loss import FocalLoss
from ..policy import GammaPolicy, _REGISTRY, create_policy, list_policies
from ._optional import require

optuna = require("optuna", "optuna", "adaptive_focal.integrations.optuna")

__all__ = ["PruningReporter", "default_candidates", "suggest_policy"]

#: policies that cannot be built from hyperparameters alone (they need other policies, the number of classes, or
#: the model and data of the learned controllers)
_NEEDS_ARGUMENTS = {"sequential": "policies", "classwise_adafocal": "num_classes", "hypergradient": "model",
                    "gammanet": "model", "bandit": "model"}


def default_candidates(fixed: dict | None = None) -> list[str]:
    """Every registered policy that can be built from its search space plus ``fixed`` arguments."""
    fixed = fixed or {}
    return [name for name in list_policies()
            if name not in _NEEDS_ARGUMENTS or _NEEDS_ARGUMENTS[name] in fixed.get(name, {})]


def _suggest(trial, name: str, spec):
    kind = spec[0]
    if kind == "float":
        _, low, high, log = spec
        return trial.suggest_float(name, low, high, log=log)
    if kind == "int":
        return trial.suggest_int(name, spec[1], spec[2])
    if kind == "categorical":
        return trial.suggest_categorical(name, list(spec[1]))
    raise ValueError(f"unknown search-space kind {kind!r} for {name}")


def suggest_policy(trial, loss: FocalLoss, policies=None, fixed: dict | None = None) -> GammaPolicy:
    """Samples a policy and its hyperparameters in ``trial`` and builds it for ``loss``.

    Args:
        trial: an ``optuna.Trial``.
        loss: the :class:`~adaptive_focal.FocalLoss` the policy will drive.
        policies: candidate names (default: :func:`default_candidates`); ``"constant"`` (a tuned fixed gamma) is
            added if missing, so every study compares against the fixed-gamma baseline.
        fixed: per-policy arguments that are not searched, e.g. ``{"linear": {"total": 5000},
            "classwise_adafocal": {"num_classes": 10}}``.

    Returns:
        The built policy; the trial's params hold ``"policy"`` and ``"<policy>.<param>"`` entries.
    """
    fixed = dict(fixed or {})
    for name in fixed:
        if name not in _REGISTRY:
            raise ValueError(f"fixed has arguments for unknown policy {name!r}; available: {', '.join(list_policies())}")
    names = default_candidates(fixed) if policies is None else list(policies)
    for name in names:
        if name not in _REGISTRY:
            raise ValueError(f"unknown policy {name!r} in policies; available: {', '.join(list_policies())}")
        if name in _NEEDS_ARGUMENTS and _NEEDS_ARGUMENTS[name] not in fixed.get(name, {}):
            raise ValueError(
                f"policy {name!r} needs fixed={{{name!r}: {{{_NEEDS_ARGUMENTS[name]!r}: ...}}}} to be built"
            )
    if "constant" not in names:
        names.append("constant")
    name = trial.suggest_categorical("policy", sorted(names))
    kwargs = {param: _suggest(trial, f"{name}.{param}", spec) for param, spec in _REGISTRY[name].search_space.items()}
    kwargs.update(fixed.get(name, {}))
    return create_policy(name, loss, **kwargs)


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
