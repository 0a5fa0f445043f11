"""Arms: the ways of setting gamma that a comparison runs side by side.

An arm is a fixed configuration run once per seed (``gamma=2``, ``policy=pi`` with its defaults) or a search space
tuned by TPE (``gamma=tpe``, ``policy=pi+tpe``). Its ``config`` is what the objective receives as ``run.config``:
``{"loss": "focal", "gamma": 2.0}`` or ``{"loss": "focal", "policy": "pi", "policy_kwargs": {...}}``, with the
tuned parameters written into it for each trial (``space`` maps a parameter name to the config key it sets and
its search-space entry). Arms named ``<arm>@seeds`` are tuned once across the seeds instead of once per seed
(see :mod:`adaptive_focal.compare.runner`).

Example:
    >>> from adaptive_focal.compare import parse_arm
    >>> parse_arm("gamma=2").config
    {'loss': 'focal', 'gamma': 2.0}
    >>> arm = parse_arm("policy=pi+tpe")
    >>> arm.config, sorted(arm.space)
    ({'loss': 'focal', 'policy': 'pi'}, ['pi.gamma_init', 'pi.ki', 'pi.kp', 'pi.setpoint'])
    >>> parse_arm("gamma=tpe@seeds").across_seeds
    True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

__all__ = ["GAMMA_GRID", "GAMMA_SPACE", "WILCOXON_P", "Arm", "across_seeds", "default_arms", "parse_arm",
           "spec_tuple"]

#: the fixed-gamma grid of the default comparison; gamma = 0 is cross-entropy
GAMMA_GRID = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
#: the range TPE tunes a fixed gamma over (``gamma=tpe``)
GAMMA_SPACE = ("float", 0.0, 5.0, False)
#: default p-value threshold of the Wilcoxon pruner of arms tuned across seeds (Optuna's default)
WILCOXON_P = 0.1
#: policies that are never arms of their own: ``constant`` is what the fixed-gamma arms are
_NOT_ARMS = ("constant",)
_ACROSS = "@seeds"


def spec_tuple(spec) -> tuple:
    """A search-space entry in the tuple form study manifests store: ``("float", low, high, log)``,
    ``("int", low, high)`` or ``("categorical", choices)``; ``spec`` is such a tuple (or list) or a search-space
    parameter (:mod:`adaptive_focal.policies.space`)."""
    from ..policies.space import as_param

    return tuple(as_param(spec).as_tuple())


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison.

    Attributes:
        name: unique within a study, without ``/``.
        config: what the objective receives as ``run.config`` (JSON values).
        space: tuned parameters, ``name -> (config key, entry)``: the config key is ``"gamma"``,
            ``"policy_kwargs.<name>"`` or ``"loss_kwargs.<name>"`` (set inside that dict of the config; the
            runner's ``NESTED_KEYS``) or any top-level key the objective reads, the entry as :func:`spec_tuple`
            returns.
        across_seeds: tuned once across the seeds (one TPE study whose trials run every seed, pruned by
            ``WilcoxonPruner(p_threshold=wilcoxon_p)``), by convention named ``<arm>@seeds``.
        wilcoxon_p: the pruner's threshold; only for arms tuned across seeds.
    """

    name: str
    config: dict
    space: dict = field(default_factory=dict)
    across_seeds: bool = False
    wilcoxon_p: float = WILCOXON_P

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"arm name must be a non-empty string without '/', got {self.name!r}")
        if not isinstance(self.config, dict):
            raise ValueError(f"arm {self.name!r}: config must be a dict, got {type(self.config).__name__}")
        try:
            json.dumps(self.config, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"arm {self.name!r}: config must hold JSON values only ({err})") from None
        for pname, entry in self.space.items():
            key = entry[0] if isinstance(entry, (tuple, list)) and len(entry) == 2 else None
            if not isinstance(key, str) or not key:
                raise ValueError(f"arm {self.name!r}: space entry {pname!r} must be (config key, search-space "
                                 f"entry), got {entry!r}")
            spec_tuple(entry[1])
        if not isinstance(self.across_seeds, bool):
            raise ValueError(f"arm {self.name!r}: across_seeds must be True or False, got {self.across_seeds!r}")
        if self.across_seeds and not self.space:
            raise ValueError(f"arm {self.name!r}: across_seeds needs a tuned arm (a search space); a fixed arm has "
                             "nothing to tune")
        p = self.wilcoxon_p
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 < p < 1.0:
            raise ValueError(f"arm {self.name!r}: wilcoxon_p must be a number in (0, 1), got {p!r}")
        if p != WILCOXON_P and not self.across_seeds:
            raise ValueError(f"arm {self.name!r}: wilcoxon_p={p!r} applies only to arms tuned across seeds "
                             "(across_seeds=True)")

    @property
    def tuned(self) -> bool:
        return bool(self.space)

    @property
    def policy(self) -> str | None:
        """The gamma policy the arm runs (None for a fixed or tuned gamma)."""
        name = self.config.get("policy", "none")
        return None if name in (None, "none") else name

    def record(self) -> dict:
        """What a study's manifest records of the arm (JSON types). Arms not tuned across seeds keep the record
        they always had (``config`` and ``space``), so studies stored before such arms existed still match."""
        out = {"config": self.config, "space": {k: [key, list(spec_tuple(spec))] for k, (key, spec) in
                                                self.space.items()}}
        if self.across_seeds:
            out.update(across_seeds=True, wilcoxon_p=self.wilcoxon_p)
        return json.loads(json.dumps(out))


def across_seeds(arm: Arm, wilcoxon_p: float = WILCOXON_P) -> Arm:
    """``arm`` (a tuned arm) tuned once across the seeds, named ``<arm>@seeds``."""
    return Arm(f"{arm.name}{_ACROSS}", arm.config, arm.space, across_seeds=True, wilcoxon_p=wilcoxon_p)


def _policy_space(name: str) -> dict:
    from ..policies import policy_class

    return {f"{name}.{k}": (f"policy_kwargs.{k}", spec_tuple(v)) for k, v in policy_class(name).search_space.items()}


def _policy_arms(name: str) -> list[Arm]:
    arms = [Arm(f"policy={name}", {"loss": "focal", "policy": name})]
    space = _policy_space(name)
    if space:
        arms.append(Arm(f"policy={name}+tpe", {"loss": "focal", "policy": name}, space))
    return arms


def parse_arm(name: str) -> Arm:
    """The arm called ``name``: ``gamma=<number>``, ``gamma=tpe``, ``policy=<name>`` (the policy's defaults),
    ``policy=<name>+tpe`` (tuned over its search space), each tuned arm optionally ending in ``@seeds``."""
    if not isinstance(name, str):
        raise ValueError(f"an arm name must be a string, got {name!r}")
    base, across = (name[:-len(_ACROSS)], True) if name.endswith(_ACROSS) else (name, False)
    kind, sep, value = base.partition("=")
    arm = None
    if sep and kind == "gamma" and value == "tpe":
        arm = Arm("gamma=tpe", {"loss": "focal"}, {"gamma": ("gamma", GAMMA_SPACE)})
    elif sep and kind == "gamma":
        try:
            gamma = float(value)
        except ValueError:
            gamma = math.nan
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"arm {name!r}: gamma must be a non-negative number or 'tpe', got {value!r}")
        arm = Arm(f"gamma={gamma:g}", {"loss": "focal", "gamma": gamma})
    elif sep and kind == "policy":
        from ..policies import list_policies

        policy, plus, tuned = value.partition("+")
        if policy not in list_policies() or policy in _NOT_ARMS:
            raise ValueError(f"arm {name!r}: unknown policy {policy!r}; policies: "
                             f"{', '.join(p for p in list_policies() if p not in _NOT_ARMS)}")
        if plus and tuned != "tpe":
            raise ValueError(f"arm {name!r}: a policy arm is 'policy=<name>' or 'policy=<name>+tpe', got "
                             f"'+{tuned}'")
        arms = {a.name: a for a in _policy_arms(policy)}
        arm = arms.get(base)
        if arm is None:
            raise ValueError(f"arm {name!r}: policy {policy!r} has no search space to tune; use "
                             f"'policy={policy}'")
    if arm is None:
        raise ValueError(f"unknown arm {name!r}: arms are 'gamma=<number>', 'gamma=tpe', 'policy=<name>' and "
                         "'policy=<name>+tpe', a tuned arm optionally ending in '@seeds'")
    if across:
        if not arm.tuned:
            raise ValueError(f"arm {name!r}: only a tuned arm (gamma=tpe, policy=<name>+tpe) can be tuned across "
                             "seeds")
        arm = across_seeds(arm)
    return arm


def default_arms(mode: str | None = None, *, learned: bool = True, exclude=(), grid=GAMMA_GRID) -> list[Arm]:
    """The default comparison: the fixed-gamma ``grid``, ``gamma=tpe``, and every registered policy with its
    defaults (``policy=<name>``) and tuned over its search space (``policy=<name>+tpe``).

    Args:
        mode: ``"softmax"`` or ``"sigmoid"`` keeps only the policies that apply to that loss mode; None keeps
            every policy (an objective that picks the loss mode per policy).
        learned: include the policies that need the model and held-out data (``requires`` names ``model``): the
            objective must pass ``model=``, ``val_source=`` and ``optimizer=`` to ``run.make_policy`` for them.
        exclude: policy names to leave out.
        grid: the fixed gammas.
    """
    from ..policies import list_policies, policy_class

    if mode not in (None, "softmax", "sigmoid"):
        raise ValueError(f"mode must be 'softmax', 'sigmoid' or None, got {mode!r}")
    arms = [Arm(f"gamma={g:g}", {"loss": "focal", "gamma": float(g)}) for g in grid]
    arms.append(parse_arm("gamma=tpe"))
    for name in list_policies():
        cls = policy_class(name)
        if name in _NOT_ARMS or name in exclude:
            continue
        if mode is not None and not cls.applies_to(mode):
            continue
        if not learned and "model" in getattr(cls, "requires", ()):
            continue
        arms += _policy_arms(name)
    return arms

