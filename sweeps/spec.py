"""This repository's studies: the comparison of :mod:`adaptive_focal.compare` on the research data sets.

A :class:`DatasetStudy` is an :class:`adaptive_focal.compare.Study` whose objective is :func:`sweeps.objective.train`
(:func:`research.train.main` on a research data set): it adds the data set, its arguments and the research.train
config overrides of every trial, which its manifest records (as every study stored before the engine moved into
the package did). Its arms are the engine's arms plus the class-imbalance baselines of research/baselines.py
(:func:`default_arms`); an arm's config is a set of research.train config keys.

Everything generic (arms, storage, workers, report, export) is :mod:`adaptive_focal.compare`; this module only
says what a study on a research data set is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from adaptive_focal.compare import GAMMA_GRID, Arm, Study, across_seeds
from adaptive_focal.compare import default_arms as engine_arms

__all__ = ["BASELINES", "GAMMA_GRID", "Arm", "DatasetStudy", "Study", "across_seeds", "default_arms", "headline"]

#: class-imbalance baselines of research/baselines.py
BASELINES = ("cb_focal", "cb_ce", "logit_adjusted", "ghm")
#: arms that do not apply per data set (softmax calibration on a sigmoid task; per-class weights or logit adjustment
#: on multi-label targets), as research/train.py refuses them
_NOT_APPLICABLE = {"dense-det": ("adafocal", "classwise_adafocal", "cb_focal", "cb_ce", "logit_adjusted")}
#: the objective of every study here
OBJECTIVE = "sweeps.objective:train"


def headline(dataset: str) -> str:
    """The data set's headline metric (what tuned arms select on): :func:`research.evaluate.headline_metric`."""
    from research.evaluate import headline_metric

    return headline_metric(dataset)


def default_arms(dataset: str) -> list[Arm]:
    """The full comparison on ``dataset``: the engine's default arms (the gamma grid, TPE-tuned gamma, every
    policy with its defaults and tuned over its search space; research.train picks a sigmoid loss for the
    sigmoid-only policies) less those that do not apply, and the imbalance baselines."""
    skip = _NOT_APPLICABLE.get(dataset, ())
    arms = engine_arms(None, learned=True, exclude=skip)
    return arms + [Arm(f"baseline={b}", {"loss": b}) for b in BASELINES if b not in skip]


@dataclass(frozen=True, kw_only=True)
class DatasetStudy(Study):
    """A study on a research data set (one file per study under ``sweeps/studies``).

    Attributes:
        dataset: a research.datasets name; ``dataset_kwargs`` are passed to it.
        overrides: research.train config keys for every trial (e.g. epochs) to keep trials short; ``threads`` is
            not recorded (it does not change results).
        arms: the arms; empty: :func:`default_arms` of the data set.
        The engine's fields (``seeds``, ``trials``, ...) as :class:`adaptive_focal.compare.Study`; ``objective``
        and ``metric`` are set from the data set.
    """

    dataset: str = ""
    dataset_kwargs: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        from research.datasets import list_datasets

        if self.dataset not in list_datasets():
            raise ValueError(f"study {self.name!r}: dataset must be one of {', '.join(list_datasets())}, "
                             f"got {self.dataset!r}")
        if not self.arms:
            object.__setattr__(self, "arms", tuple(default_arms(self.dataset)))
        object.__setattr__(self, "objective", self.objective or OBJECTIVE)
        object.__setattr__(self, "metric", self.metric or headline(self.dataset))
        object.__setattr__(self, "meta", {"dataset": self.dataset, "dataset_kwargs": dict(self.dataset_kwargs),
                                          "overrides": {k: v for k, v in self.overrides.items() if k != "threads"}})
        super().__post_init__()

    def check_arm(self, arm: Arm) -> None:
        """research.train must accept the arm's config (an unknown policy, loss or key fails before anything is
        stored)."""
        from research.train import resolve_config

        for entry in arm.space.values():
            key = entry[0]
            if not (key == "gamma" or key.startswith("policy_kwargs.")):
                raise ValueError(f"space entries must set 'gamma' or 'policy_kwargs.<name>', got {key!r}")
        resolve_config({"dataset": self.dataset, **self.overrides, **arm.config})

    def with_settings(self, **settings) -> DatasetStudy:
        """The study with research.train config ``settings`` (e.g. ``epochs=1``) for every trial."""
        from research.train import resolve_config

        resolve_config({"dataset": self.dataset, **self.overrides, **settings})  # unknown keys fail here
        return dataclasses.replace(self, overrides={**self.overrides, **settings})
