"""What a study is: a data set, seeds, a trial budget and the arms compared on it.

An *arm* is one way of training: a fixed configuration (a gamma of the grid, a policy with its default settings,
an imbalance baseline) run once per seed, or a search space tuned by TPE with ``trials`` trials per seed (model
selection on the validation headline metric; the report takes the test metric of the best validation trial).
Every arm runs through :func:`research.train.main`.
"""

from __future__ import annotations

import dataclasses
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
_NOT_APPLICABLE = {"dense-det": ("adafocal", "classwise_adafocal", "cb_focal", "cb_ce", "logit_adjusted")}


@dataclass(frozen=True)
class Arm:
    """One arm: ``config`` overrides for research.train, and (tuned arms) a search space of config keys.

    ``space`` maps a parameter name to ``(config_key, spec)`` where ``spec`` is a policy ``search_space`` entry
    (``("float", low, high, log)``, ``("int", low, high)``, ``("categorical", choices)``) and ``config_key`` is
    ``"gamma"`` or ``"policy_kwargs.<name>"``.
    """

    name: str
    config: dict
    space: dict = field(default_factory=dict)

    @property
    def tuned(self) -> bool:
        return bool(self.space)


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
        name: the study's name in the storage (the unit studies are named ``"<name>/<arm>/seed<k>"``).
        dataset: a research.datasets name; ``dataset_kwargs`` are passed to it.
        seeds: seeds 0 .. seeds-1 per arm.
        trials: TPE trials per tuned arm and seed.
        overrides: research.train config keys for every trial (e.g. epochs, threads) to keep trials short.
        arms: the arms; ``None``: :func:`default_arms` of the data set.
        trial_pause_s: sleep this long at the start of each trial (tests of killed workers only).
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
            for pname, entry in arm.space.items():
                key = entry[0] if isinstance(entry, (tuple, list)) and len(entry) == 2 else None
                if not (isinstance(key, str) and (key == "gamma" or key.startswith("policy_kwargs."))):
                    raise ValueError(f"study {self.name!r}, arm {arm.name!r}: space entry {pname!r} must be "
                                     f"(config key 'gamma' or 'policy_kwargs.<name>', spec), got {entry!r}")

    @property
    def metric(self) -> str:
        return headline(self.dataset)

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
