"""The fixed-gamma grid against the imbalance ratio: does the best fixed gamma grow with rho?

One study per data set and ratio, ``<dataset>-rho<rho>`` (e.g. ``digits-lt-rho100``): the gamma grid of
:data:`sweeps.spec.GAMMA_GRID` (gamma = 0 is cross-entropy) on the data set with ``imbalance_ratio=rho``, 5 seeds,
everything else at the data set's defaults. The validation and test sets do not depend on rho, so the studies differ
only in the training set.
"""

from ..spec import GAMMA_GRID, Arm, DatasetStudy

#: data sets and imbalance ratios of the grid
DATASETS = ("digits-lt", "gauss-lt")
RATIOS = (1, 10, 100)


def _study(dataset: str, rho: int) -> DatasetStudy:
    arms = tuple(Arm(f"gamma={g:g}", {"loss": "focal", "gamma": g}) for g in GAMMA_GRID)
    return DatasetStudy(name=f"{dataset}-rho{rho}", dataset=dataset, seeds=5, trials=1,
                 dataset_kwargs={"imbalance_ratio": float(rho)}, arms=arms)


#: study name -> DatasetStudy
STUDIES = {f"{d}-rho{r}": _study(d, r) for d in DATASETS for r in RATIOS}
