"""Tuning once across seeds on digits-lt: the fixed-gamma grid, gamma tuned by TPE per seed (the protocol of the
other studies) and across seeds, and the ``pi`` and ``gammanet`` policies tuned across seeds; 8 seeds, 10 TPE
trials per tuned arm (per seed for ``gamma=tpe``, in all for the ``@seeds`` arms).

An ``@seeds`` arm is tuned the way a practitioner tunes one gamma for a data set: each trial trains the sampled
configuration on the seeds one after another and Optuna's ``WilcoxonPruner`` (p < 0.1, one-sided, against the
best trial so far) stops it early when it is significantly worse. With n seeds evaluated the exact one-sided test
cannot go below p = 2^-n, so at p < 0.1 a configuration can be stopped after 4 seeds at the earliest; 8 seeds
leave it 4 chances (after 4, 5, 6 and 7 seeds), where the 5 seeds of the other studies would leave one.
"""

from ..spec import GAMMA_GRID, DatasetStudy, across_seeds, default_arms

_DEFAULT = {a.name: a for a in default_arms("digits-lt")}
ARMS = (tuple(_DEFAULT[f"gamma={g:g}"] for g in GAMMA_GRID) + (_DEFAULT["gamma=tpe"],)
        + tuple(across_seeds(_DEFAULT[name]) for name in ("gamma=tpe", "policy=pi+tpe", "policy=gammanet+tpe")))

STUDY = DatasetStudy(name="digits-lt-across-seeds", dataset="digits-lt", seeds=8, trials=10, arms=ARMS)
