"""What a study is: a data set, seeds, a trial budget and the arms compared on it.

An *arm* is one way of training: a fixed configuration (a gamma of the grid, a policy with its default settings,
an imbalance baseline) run once per seed, or a search space tuned by TPE. A tuned arm is tuned either per seed
(the default: ``trials`` trials per seed, the report takes per seed the test metric of the best validation trial)
or, with ``across_seeds=True``, once across the seeds: each of its ``trials`` trials evaluates one configuration on
the seeds one after another, Optuna's ``WilcoxonPruner`` stops a configuration that is significantly worse than
the best so far, and the report takes the configuration with the best mean validation metric over every seed.
Every arm runs through :func:`research.train.main`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

#: the fixed-gamma grid; gamma = 0 is cross-entropy
GAMMA_GRID = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
#: class-imbalance baselines of research/baselines.py
BASELINES = ("cb_focal", "cb_ce", "logit_adjusted", "ghm")
#: test / validation headline metric per data set (balanced accuracy otherwise)
HEADLINE = {"dense-det": "map", "seg-toy": "miou"}
#: policies left out of the arms: ``constant`` is the fixed-gamma arms; ``sequential`` has nothing to tune and
#: its default is a warm-up into ``automated``
_SKIP_POLICIES = ("constant",)
#: not applicable per data set (softmax calibration on a sigmoid task; per-class weights or logit adjustment on
#: multi-label targets), as research/train.py refuses them
#: default p-value threshold of the Wilcoxon pruner of arms tuned across seeds (Optuna's default)
WILCOXON_P = 0.1
_NOT_APPLICABLE = {"dense-det": ("adafocal", "classwise_adafocal", "cb_focal", "cb_ce", "logit_adjusted")}


@dataclass(frozen=True)
class Arm:
    """One arm: ``config`` overrides for research.train, and (tuned arms) a search space of config keys.

    ``space`` maps a parameter name to ``(config_key, spec)`` where ``spec`` is a policy ``search_space`` entry
    (``("float", low, high, log)``, ``("int", low, high)``, ``("categorical", choices)``) and ``config_key`` is
    ``"gamma"`` or ``"policy_kwargs.<name>"``.

    Tuned across seeds (``across_seeds=True``, by convention a name ending in ``@seeds``): one TPE study for the
    arm whose trials each run the sampled configuration on every seed, pruned by ``WilcoxonPruner(p_threshold=
    wilcoxon_p)`` over the seeds (see sweeps/README.md). ``wilcoxon_p`` applies to such arms only.
    """

    name: str
    config: dict
    space: dict = field(default_factory=dict)
    across_seeds: bool = False
    wilcoxon_p: float = WILCOXON_P

    @property
    def tuned(self) -> bool:
        return bool(self.space)

    def record(self) -> dict:
        """What the storage's manifest records of the arm (JSON types). Other arms keep the record they always
        had (``config`` and ``space``), so studies stored before across-seeds arms existed still match."""
        out = {"config": self.config, "space": self.space}
        if self.across_seeds:
            out.update(across_seeds=True, wilcoxon_p=self.wilcoxon_p)
        return json.loads(json.dumps(out))


def across_seeds(arm: Arm, wilcoxon_p: float = WILCOXON_P) -> Arm:
    """``arm`` (a tuned arm) tuned once across the seeds, named ``<arm>@seeds``."""
    return Arm(f"{arm.name}@seeds", arm.config, arm.space, across_seeds=True, wilcoxon_p=wilcoxon_p)


def headline(dataset: str) -> str:
    return HEADLINE.get(dataset, "balanced_accuracy")


def default_arms(dataset: str) -> list[Arm]:
    """The comparison of issue 7 on ``dataset``: the gamma grid, TPE-tuned gamma, every applicable policy with its
    defaults and tuned over its ``search_space``, and the imbalance baselines."""
    import adaptive_focal as af

    skip = _NOT_APPLICABLE.get(dataset, ())
    arms = [Arm(f"gamma={g:g}", {"loss": "focal", "gamma": g}) for g in GAMMA_GRID]
    arms.append(Arm("gamma=tpe", {"loss": "focal"}, {"gamma": ("gamma", ("float", 0.0, 5.0, False))}))
    for name in af.list_policies():
        if name in _SKIP_POLICIES or name in skip:
            continue
        arms.append(Arm(f"policy={name}", {"loss": "focal", "policy": name}))
        space = af.policy_class(name).search_space
        if space:
            arms.append(Arm(f"policy={name}+tpe", {"loss": "focal", "policy": name},
                            {f"{name}.{k}": (f"policy_kwargs.{k}", tuple(v)) for k, v in space.items()}))
    arms += [Arm(f"baseline={b}", {"loss": b}) for b in BASELINES if b not in skip]
    return arms


@dataclass(frozen=True)
class Study:
    """A study definition (one file per study under ``sweeps/studies``).

    Attributes:
        name: the study's name in the storage (the unit studies are named ``"<name>/<arm>/seed<k>"``, and
            ``"<name>/<arm>/seeds"`` for an arm tuned across seeds).
        dataset: a research.datasets name; ``dataset_kwargs`` are passed to it.
        seeds: seeds 0 .. seeds-1 per arm.
        trials: TPE trials per tuned arm and seed (per arm for an arm tuned across seeds; each such trial runs
            up to ``seeds`` trainings).
        overrides: research.train config keys for every trial (e.g. epochs, threads) to keep trials short.
        arms: the arms; ``None``: :func:`default_arms` of the data set.
        trial_pause_s: sleep this long at the start of each trial; in a trial of an arm tuned across seeds, after
            its first seed (tests of killed workers only).
    """

    name: str
    dataset: str
    seeds: int = 3
    trials: int = 12
    dataset_kwargs: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    arms: tuple | None = None
    trial_pause_s: float = 0.0

    def __post_init__(self):
        from research.datasets import list_datasets

        if self.dataset not in list_datasets():
            raise ValueError(f"study {self.name!r}: dataset must be one of {', '.join(list_datasets())}, "
                             f"got {self.dataset!r}")
        for key in ("seeds", "trials"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"study {self.name!r}: {key} must be a positive integer, got {value!r}")
        if self.arms is None:
            object.__setattr__(self, "arms", tuple(default_arms(self.dataset)))
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"study {self.name!r}: arm names must be unique, got {names}")
        if "/" in self.name:
            raise ValueError(f"study name must not contain '/', got {self.name!r}")
        from research.train import resolve_config

        for arm in self.arms:  # unknown policy / loss / config keys fail here, before anything is stored
            if "/" in arm.name:
                raise ValueError(f"arm name must not contain '/', got {arm.name!r}")
            try:
                resolve_config({"dataset": self.dataset, **self.overrides, **arm.config})
            except ValueError as err:
                raise ValueError(f"study {self.name!r}, arm {arm.name!r}: {err}") from None
            if not isinstance(arm.across_seeds, bool):
                raise ValueError(f"study {self.name!r}, arm {arm.name!r}: across_seeds must be True or False, "
                                 f"got {arm.across_seeds!r}")
            if arm.across_seeds:
                if not arm.tuned:
                    raise ValueError(f"study {self.name!r}, arm {arm.name!r}: across_seeds needs a tuned arm (a "
                                     "search space); a fixed arm has nothing to tune")
                if self.seeds < 2:
                    raise ValueError(f"study {self.name!r}, arm {arm.name!r}: an arm tuned across seeds needs "
                                     f"seeds >= 2, got seeds={self.seeds}")
            p = arm.wilcoxon_p
            if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 < p < 1.0:
                raise ValueError(f"study {self.name!r}, arm {arm.name!r}: wilcoxon_p must be a number in (0, 1), "
                                 f"got {p!r}")
            if p != WILCOXON_P and not arm.across_seeds:
                raise ValueError(f"study {self.name!r}, arm {arm.name!r}: wilcoxon_p={p!r} applies only to arms "
                                 "tuned across seeds (across_seeds=True)")
            for pname, entry in arm.space.items():
                key = entry[0] if isinstance(entry, (tuple, list)) and len(entry) == 2 else None
                if not (isinstance(key, str) and (key == "gamma" or key.startswith("policy_kwargs."))):
                    raise ValueError(f"study {self.name!r}, arm {arm.name!r}: space entry {pname!r} must be "
                                     f"(config key 'gamma' or 'policy_kwargs.<name>', spec), got {entry!r}")

    @property
    def metric(self) -> str:
        return headline(self.dataset)

    @property
    def across_seeds_arms(self) -> list[str]:
        """Names of the arms tuned across seeds."""
        return [a.name for a in self.arms if a.across_seeds]

    def replace(self, **changes) -> "Study":
        return dataclasses.replace(self, **changes)

    def select_arms(self, names) -> "Study":
        """The study restricted to the arms ``names`` (an unknown name is an error naming the arms)."""
        known = {a.name: a for a in self.arms}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown arm(s) {', '.join(map(repr, unknown))} for study {self.name!r}; "
                             f"arms: {', '.join(known)}")
        return self.replace(arms=tuple(known[n] for n in names))
