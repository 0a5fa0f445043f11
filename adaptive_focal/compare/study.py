"""What a comparison is: an objective, the arms it runs, seeds, a trial budget and the metric that selects.

A :class:`Study` names its objective by an import string (``"module:function"`` or ``"path/to/file.py:function"``,
see :mod:`adaptive_focal.compare.objective`) so that worker processes can load it themselves. Everything that
changes what a trial means (``meta``, the arms, the metric and its direction) is recorded in the storage when the
study is created and checked whenever it is run again: a study is never continued under other settings.

Subclasses add what their objective needs (the repository's studies add a data set and its arguments) by
overriding :meth:`Study.check_arm` and filling ``meta``.

Example:
    >>> from adaptive_focal.compare import Study, parse_arm
    >>> study = Study(name="demo", arms=(parse_arm("gamma=0"), parse_arm("gamma=tpe")), objective="mytask.py:train",
    ...               metric="balanced_accuracy", seeds=2, trials=4, mode="softmax")
    >>> study.seed_list()
    [0, 1]
    >>> manifest = study.manifest()  # what the storage records, and checks on every later run
    >>> manifest["metric"], manifest["directions"], manifest["arms"]["gamma=0"]
    ('balanced_accuracy', ['maximize'], {'config': {'loss': 'focal', 'gamma': 0.0}, 'space': {}})
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from .arms import Arm

__all__ = ["DIRECTIONS", "Study"]

DIRECTIONS = ("maximize", "minimize")


def _positive_int(owner: str, key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {key} must be a positive integer, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Study:
    """A comparison (see the module docstring).

    Attributes:
        name: the study's name in the storage (units are named ``"<name>/<arm>/seed<k>"``, and
            ``"<name>/<arm>/seeds"`` for an arm tuned across seeds); no ``/``.
        arms: the arms (:class:`~adaptive_focal.compare.Arm`), unique names.
        objective: the training function, ``"module:function"`` or ``"file.py:function"``.
        metric: the validation metric that selects (a key of the ``"val"`` dict the objective returns).
        direction: ``"maximize"`` or ``"minimize"`` the metric.
        seeds: the number of seeds per arm: ``first_seed``, ``first_seed + 1``, ... (the objective's ``run.seed``).
        first_seed: the first seed (0; a confirmatory study takes fresh seeds, e.g. 1000). Recorded in the
            manifest when it is not 0.
        trials: TPE trials per tuned arm and seed (per arm for an arm tuned across seeds).
        mode: the loss mode ``run.make_loss`` builds (``"softmax"`` / ``"sigmoid"``), or None when the objective
            builds its own loss.
        meta: JSON settings of the objective recorded in the manifest and checked on every run.
        trial_pause_s: sleep this long at the start of each trial (in a trial tuned across seeds, after its
            first seed): for tests of killed workers only.
    """

    name: str
    arms: tuple = ()
    objective: str = ""
    metric: str = ""
    direction: str = "maximize"
    seeds: int = 3
    first_seed: int = 0
    trials: int = 12
    mode: str | None = None
    meta: dict = field(default_factory=dict)
    trial_pause_s: float = 0.0

    def __post_init__(self):
        owner = f"study {self.name!r}"
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"study name must be a non-empty string without '/', got {self.name!r}")
        object.__setattr__(self, "arms", tuple(self.arms))
        if not self.arms:
            raise ValueError(f"{owner}: arms must name at least one arm")
        for arm in self.arms:
            if not isinstance(arm, Arm):
                raise ValueError(f"{owner}: arms must be Arm objects (see adaptive_focal.compare.parse_arm), got "
                                 f"{type(arm).__name__}")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"{owner}: arm names must be unique, got {names}")
        if not isinstance(self.objective, str) or ":" not in self.objective:
            raise ValueError(f"{owner}: objective must be 'module:function' or 'file.py:function', got "
                             f"{self.objective!r}")
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"{owner}: metric must name a validation metric, got {self.metric!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"{owner}: direction must be one of 'maximize', 'minimize', got {self.direction!r}")
        _positive_int(owner, "seeds", self.seeds)
        if not isinstance(self.first_seed, int) or isinstance(self.first_seed, bool) or self.first_seed < 0:
            raise ValueError(f"{owner}: first_seed must be a non-negative integer, got {self.first_seed!r}")
        _positive_int(owner, "trials", self.trials)
        if self.mode not in (None, "softmax", "sigmoid"):
            raise ValueError(f"{owner}: mode must be 'softmax', 'sigmoid' or None, got {self.mode!r}")
        try:
            json.dumps(self.meta, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{owner}: meta must hold JSON values only ({err})") from None
        for arm in self.arms:  # an arm the objective cannot run fails here, before anything is stored
            try:
                self.check_arm(arm)
            except ValueError as err:
                raise ValueError(f"{owner}, arm {arm.name!r}: {err}") from None
            if arm.across_seeds and self.seeds < 2:
                raise ValueError(f"{owner}, arm {arm.name!r}: an arm tuned across seeds needs seeds >= 2, got "
                                 f"seeds={self.seeds}")

    # -- for subclasses -----------------------------------------------------------------------------------------
    def check_arm(self, arm: Arm) -> None:
        """Raises ValueError when the objective cannot run ``arm`` (a policy that does not apply to ``mode``)."""
        if self.mode is not None and arm.policy is not None:
            from ..policies import policy_class

            if not policy_class(arm.policy).applies_to(self.mode):
                raise ValueError(f"policy {arm.policy!r} does not apply to mode={self.mode!r} losses")

    def with_settings(self, **settings) -> Study:
        """The study with some of its objective's settings changed for every trial (``--set KEY=VALUE``).
        The base class has none; a subclass that keeps settings in ``meta`` overrides this."""
        raise ValueError(f"study {self.name!r} has no settings to change (got {', '.join(sorted(settings))})")

    # -- derived ------------------------------------------------------------------------------------------------
    @property
    def across_seeds_arms(self) -> list[str]:
        """Names of the arms tuned across seeds."""
        return [a.name for a in self.arms if a.across_seeds]

    def seed_list(self, seeds: int | None = None) -> list[int]:
        """The seeds of ``seeds`` runs per arm (default: the study's number): ``first_seed`` onwards."""
        return list(range(self.first_seed, self.first_seed + (self.seeds if seeds is None else seeds)))

    def directions(self, multi_objective: bool = False) -> list[str]:
        """The unit studies' directions: the metric's, then ``"minimize"`` (validation ECE) when multi-objective."""
        return [self.direction, "minimize"] if multi_objective else [self.direction]

    def manifest(self, multi_objective: bool = False) -> dict:
        """What the storage records of the study, as JSON values (``format`` is added by the runner)."""
        out = {**self.meta, "directions": self.directions(multi_objective), "metric": self.metric,
               "arms": {a.name: a.record() for a in self.arms}}
        if self.first_seed:  # studies stored before the key existed start at 0 and match without it
            out["first_seed"] = self.first_seed
        return json.loads(json.dumps(out))

    def replace(self, **changes) -> Study:
        return dataclasses.replace(self, **changes)

    def select_arms(self, names) -> Study:
        """The study restricted to the arms ``names`` (an unknown name is an error naming the arms)."""
        known = {a.name: a for a in self.arms}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown arm(s) {', '.join(map(repr, unknown))} for study {self.name!r}; "
                             f"arms: {', '.join(known)}")
        return self.replace(arms=tuple(known[n] for n in names))
