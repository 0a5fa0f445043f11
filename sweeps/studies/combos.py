"""Focal loss combined with resampling: does it still help once the sampler rebalances the classes?

One study per data set, ``<dataset>-combos`` (e.g. ``digits-lt-combos``): cross-entropy (gamma 0) and focal loss at
gamma 1 and 2, each with the plain sampler, square-root resampling and class-balanced resampling (Kang et al.,
2020, "Decoupling Representation and Classifier for Long-Tailed Recognition"), 5 seeds, everything else at the data
set's defaults. The loss-level combinations (class-balanced weights, logit adjustment) are arms of the main studies.
"""

from ..spec import Arm, DatasetStudy

#: data sets (multiclass: resampling by class needs one class per sample)
DATASETS = ("digits-lt", "gauss-lt", "mnist1d-lt")
GAMMAS = (0.0, 1.0, 2.0)
SAMPLERS = ("none", "sqrt", "class_balanced")


def _arm(gamma: float, sampler: str) -> Arm:
    name = f"gamma={gamma:g}" + ("" if sampler == "none" else f"+{sampler}")
    return Arm(name, {"loss": "focal", "gamma": gamma, "sampler": sampler})


def _study(dataset: str) -> DatasetStudy:
    arms = tuple(_arm(g, s) for s in SAMPLERS for g in GAMMAS)
    return DatasetStudy(name=f"{dataset}-combos", dataset=dataset, seeds=5, trials=1, arms=arms)


#: study name -> DatasetStudy
STUDIES = {f"{d}-combos": _study(d) for d in DATASETS}
