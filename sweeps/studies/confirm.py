"""The confirmatory studies of research/preregistration.md: the pre-registered policy (FLSD-53, default arguments,
one run) against the fixed-gamma grid (six runs), and logit adjustment, on fresh seeds 1000-1019.

One study per data set at its default configuration, ``<dataset>-confirm``, and digits-lt also at 30 and 60 epochs
(``digits-lt-confirm-e30``, ``-e60``). Every arm is untuned (one run per seed), so nothing is pruned and budgets are
matched by construction. ``research/confirm.py`` analyses them as the pre-registration fixes.
"""

from ..spec import GAMMA_GRID, Arm, DatasetStudy

#: the pre-registered policy (research/preregistration.md)
POLICY = "flsd53"
FIRST_SEED, SEEDS = 1000, 20
#: (study name, data set, research.train overrides)
_PLAN = (
    ("digits-lt-confirm", "digits-lt", {}),
    ("digits-lt-confirm-e30", "digits-lt", {"epochs": 30}),
    ("digits-lt-confirm-e60", "digits-lt", {"epochs": 60}),
    ("gauss-lt-confirm", "gauss-lt", {}),
    ("mnist1d-lt-confirm", "mnist1d-lt", {}),
    ("dense-det-confirm", "dense-det", {}),
    ("seg-toy-confirm", "seg-toy", {}),
)


def arms(dataset: str) -> tuple:
    """The grid, the policy with its defaults, and logit adjustment (softmax only: not on dense-det)."""
    out = [Arm(f"gamma={g:g}", {"loss": "focal", "gamma": g}) for g in GAMMA_GRID]
    out.append(Arm(f"policy={POLICY}", {"loss": "focal", "policy": POLICY}))
    if dataset != "dense-det":
        out.append(Arm("baseline=logit_adjusted", {"loss": "logit_adjusted"}))
    return tuple(out)


#: study name -> DatasetStudy
STUDIES = {name: DatasetStudy(name=name, dataset=dataset, seeds=SEEDS, first_seed=FIRST_SEED, trials=1,
                              overrides=overrides, arms=arms(dataset))
           for name, dataset, overrides in _PLAN}
