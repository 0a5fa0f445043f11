"""This repository's studies: the comparison of :mod:`adaptive_focal.compare` on the research data sets.

A :class:`DatasetStudy` is an :class:`adaptive_focal.compare.Study` whose objective is :func:`sweeps.objective.train`
(:func:`research.train.main` on a research data set): it adds the data set, its arguments and the research.train
config overrides of every trial, which its manifest records (as every study stored before the engine moved into
the package did). Its arms are the engine's arms plus the class-imbalance baselines of research/baselines.py
(:func:`default_arms`); an arm's config is a set of research.train config keys.

Everything generic (arms, storage, workers, report, export) is :mod:`adaptive_focal.compare`; this module only
says what a study on a research data set is.

Fair arms (research protocol v2). The learned controllers draw labelled held-out batches; in a study built by
:func:`fair_study` every arm sees the same labelled data: research.train's ``holdout_fraction`` is set for every
arm (each trains without the same stratified slice of the training set) and the learned controllers meta-train
on that slice (:func:`learned_arms`: ``policy=<name>``); the variant on the class-balanced validation set is a
separate arm (``policy=<name>[val]``), next to the controls that spend the same held-out batches on plain
cross-entropy steps instead of on gamma (:func:`control_arms`: ``control=finetune[val]``,
``control=finetune``). The studies defined before (``sweeps/studies``) keep their arms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from adaptive_focal.compare import GAMMA_GRID, Arm, Study, across_seeds, parse_arm
from adaptive_focal.compare import default_arms as engine_arms

__all__ = [
    "BASELINES", "FAIR_LEARNED", "FINETUNE_EVERY", "GAMMA_GRID", "HOLDOUT_FRACTION", "LEARNED", "Arm", "DatasetStudy",
    "Study", "across_seeds", "control_arms", "default_arms", "fair_arms", "fair_study", "headline", "learned_arms",
    "logit_adjusted_arm",
]

#: class-imbalance baselines of research/baselines.py
BASELINES = ("cb_focal", "cb_ce", "logit_adjusted", "ghm")
#: arms left out per data set: per-class weights and logit adjustment on multi-label targets (research/train.py
#: refuses them). AdaFocal runs on sigmoid losses since the sigmoid statistics carry confidence bins, but the
#: committed dense-det study was defined without it and its manifest fixes its arms, so it stays out here.
_NOT_APPLICABLE = {"dense-det": ("adafocal", "classwise_adafocal", "cb_focal", "cb_ce", "logit_adjusted")}
#: the objective of every study here
OBJECTIVE = "sweeps.objective:train"
#: the learned controllers (the policies that draw held-out batches)
LEARNED = ("hypergradient", "gammanet", "bandit")
#: the learned controllers among the default arms of a fair study: the hypergradient's defaults leave gamma at its
#: start, 2 (research/README.md, "Does the default hypergradient move gamma?"); learned_arms(LEARNED) adds it
FAIR_LEARNED = ("gammanet", "bandit")
#: research.train's holdout_fraction in a fair study, for every arm (its default hold-out for a learned controller)
HOLDOUT_FRACTION = 0.1
#: the fine-tuning control's interval: one held-out batch per 20 training steps, as hypergradient's and gammanet's
#: default meta step (``every=20``) draws
FINETUNE_EVERY = 20


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


def logit_adjusted_arm(arm: Arm) -> Arm:
    """``arm`` (an engine arm on focal loss: ``gamma=<g>``, ``gamma=tpe``, ``policy=<name>[+tpe]``) on the
    logit-adjusted loss (focal loss of ``logits + tau * log prior``, Menon et al. 2021), named ``la+<arm>``.

    research.train's ``logit_adjusted`` loss takes its focal term's gamma from ``loss_kwargs``, so a fixed gamma
    moves to ``loss_kwargs.gamma`` and ``gamma=tpe`` tunes ``loss_kwargs.gamma``; a policy drives that focal term
    from research.train's ``gamma`` (its start, 2 by default) and keeps its search space.

    Example:
        >>> from adaptive_focal.compare import parse_arm
        >>> logit_adjusted_arm(parse_arm("gamma=tpe")).space["gamma"][0]
        'loss_kwargs.gamma'
    """
    if arm.config.get("loss", "focal") != "focal" or arm.across_seeds:
        raise ValueError(f"logit_adjusted_arm: arm {arm.name!r} must be a per-seed arm on focal loss (gamma=<g>, "
                         f"gamma=tpe, policy=<name>, policy=<name>+tpe), got config {arm.config}")
    config = {k: v for k, v in arm.config.items() if k != "gamma"}
    config["loss"] = "logit_adjusted"
    policy = arm.policy
    if "gamma" in arm.config:
        if policy is None:
            config["loss_kwargs"] = {**config.get("loss_kwargs", {}), "gamma": arm.config["gamma"]}
        else:
            config["gamma"] = arm.config["gamma"]
    space = {name: (("loss_kwargs.gamma" if key == "gamma" and policy is None else key), spec)
             for name, (key, spec) in arm.space.items()}
    return Arm(f"la+{arm.name}", config, space)


def learned_arms(policies=FAIR_LEARNED, *, tuned: bool = True) -> list[Arm]:
    """The learned controllers' arms of a fair study, per policy: ``policy=<name>`` (its defaults, meta batches
    from the slice held out of the training set), ``policy=<name>+tpe`` (tuned over its search space, the same
    meta batches; with ``tuned``) and ``policy=<name>[val]`` (its defaults, meta batches from the class-balanced
    validation set: labels the other arms do not see)."""
    arms = []
    for name in policies:
        if name not in LEARNED:
            raise ValueError(f"learned_arms: policies must be among {', '.join(LEARNED)}, got {name!r}")
        config = {"loss": "focal", "policy": name, "meta_data": "train_slice"}
        arms.append(Arm(f"policy={name}", config))
        if tuned:  # the engine's search space for the policy
            arms.append(Arm(f"policy={name}+tpe", config, parse_arm(f"policy={name}+tpe").space))
        arms.append(Arm(f"policy={name}[val]", {**config, "meta_data": "val"}))
    return arms


def control_arms() -> list[Arm]:
    """What the held-out labels buy without any gamma: fixed gamma 2 (the learned controllers' start) and, after
    every ``FINETUNE_EVERY``-th training step, one plain cross-entropy step on the next held-out batch, from the
    class-balanced validation set (``control=finetune[val]``, the labels of ``policy=<name>[val]``) or from the
    held-out training slice (``control=finetune``, the labels of ``policy=<name>``)."""
    config = {"loss": "focal", "gamma": 2.0, "finetune_every": FINETUNE_EVERY}
    return [Arm("control=finetune[val]", {**config, "meta_data": "val"}),
            Arm("control=finetune", {**config, "meta_data": "train_slice"})]


def fair_arms(dataset: str) -> list[Arm]:
    """The full comparison on ``dataset`` with fair arms: :func:`default_arms` with the learned controllers'
    arms replaced by :func:`learned_arms` (the hypergradient left out: its defaults do not move gamma) and the
    :func:`control_arms` added. For a study whose every arm holds out the same slice (:func:`fair_study`)."""
    skip = _NOT_APPLICABLE.get(dataset, ())
    arms = engine_arms(None, learned=False, exclude=skip)
    return (arms + learned_arms(tuple(p for p in FAIR_LEARNED if p not in skip)) + control_arms()
            + [Arm(f"baseline={b}", {"loss": b}) for b in BASELINES if b not in skip])


def fair_study(*, name: str, dataset: str, arms=(), overrides: dict | None = None, **fields) -> DatasetStudy:
    """A :class:`DatasetStudy` in which every arm sees the same labelled data: ``holdout_fraction`` =
    ``HOLDOUT_FRACTION`` in the overrides of every trial (every arm trains without the same slice of the training
    set, which the learned controllers' ``policy=<name>`` arms meta-train on) and, without ``arms``, the arms of
    :func:`fair_arms`. ``fields`` are the other fields of DatasetStudy (``seeds``, ``trials``, ...)."""
    overrides = {"holdout_fraction": HOLDOUT_FRACTION, **(overrides or {})}
    return DatasetStudy(name=name, dataset=dataset, arms=tuple(arms) or tuple(fair_arms(dataset)),
                        overrides=overrides, **fields)


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
            if not (key == "gamma" or key.startswith(("policy_kwargs.", "loss_kwargs."))):
                raise ValueError(f"space entries must set 'gamma', 'policy_kwargs.<name>' or 'loss_kwargs.<name>', "
                                 f"got {key!r}")
        cfg = resolve_config({"dataset": self.dataset, **self.overrides, **arm.config})
        sets_gamma = "gamma" in arm.config or any(entry[0] == "gamma" for entry in arm.space.values())
        if cfg.loss == "logit_adjusted" and cfg.policy == "none" and sets_gamma:
            # research.train's logit-adjusted loss reads its focal term's gamma from loss_kwargs; the top-level
            # gamma is only a policy's starting point, so an arm setting it without a policy would run plain LA
            raise ValueError(f"arm {arm.name!r}: loss 'logit_adjusted' without a policy ignores 'gamma'; set or tune "
                             "'loss_kwargs.gamma' (logit_adjusted_arm does)")

    def with_settings(self, **settings) -> DatasetStudy:
        """The study with research.train config ``settings`` (e.g. ``epochs=1``) for every trial."""
        from research.train import resolve_config

        resolve_config({"dataset": self.dataset, **self.overrides, **settings})  # unknown keys fail here
        return dataclasses.replace(self, overrides={**self.overrides, **settings})
