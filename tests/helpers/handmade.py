"""A study written directly with Optuna (no runner): varied values, pruned trials in the tuned arm, a missing seed
and gamma trajectories on the policy arm; the report and export tests check the analysis against it."""

from __future__ import annotations

from adaptive_focal.compare.storage import open_storage

ARMS = {
    "gamma=0": {"config": {"loss": "focal", "gamma": 0.0}, "space": {}},
    "gamma=1": {"config": {"loss": "focal", "gamma": 1.0}, "space": {}},
    "gamma=2": {"config": {"loss": "focal", "gamma": 2.0}, "space": {}},
    "gamma=tpe": {"config": {"loss": "focal"}, "space": {"gamma": ["gamma", ["float", 0.0, 5.0, False]]}},
    "policy=pi": {"config": {"loss": "focal", "policy": "pi"}, "space": {}},
    "baseline=cb_ce": {"config": {"loss": "cb_ce"}, "space": {}},
}
SEEDS, TRIALS = 4, 5
LEVELS = {"gamma=0": 0.60, "gamma=1": 0.65, "gamma=2": 0.63, "gamma=tpe": 0.66, "policy=pi": 0.64,
          "baseline=cb_ce": 0.70}


def _metrics(rng, level):
    import numpy as np

    return {"balanced_accuracy": float(np.clip(level + rng.normal(0, 0.03), 0, 1)),
            "ece": float(abs(rng.normal(0.1, 0.04)))}


def write_handmade(path, name: str = "hm") -> str:
    """Writes the study ``name`` into a journal at ``path``; returns the path."""
    import numpy as np
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = open_storage(str(path))
    manifest = optuna.create_study(storage=st, study_name=name)
    for key, value in (("dataset", "digits-lt"), ("metric", "balanced_accuracy"), ("arms", ARMS), ("format", 1)):
        manifest.set_user_attr(key, value)
    rng = np.random.default_rng(123)
    for arm, rec in ARMS.items():
        for seed in range(SEEDS):
            if arm == "baseline=cb_ce" and seed == 3:
                continue  # a missing seed: paired on 3 seeds only
            unit = optuna.create_study(storage=st, study_name=f"{name}/{arm}/seed{seed}", direction="maximize")
            for k in range(TRIALS if rec["space"] else 1):
                val, test = _metrics(rng, LEVELS[arm]), _metrics(rng, LEVELS[arm])
                attrs = {"arm": arm, "seed": seed, "config": rec["config"], "seconds": 0.5}
                params, dists = {}, {}
                if rec["space"]:
                    params, dists = {"gamma": float(rng.uniform(0, 5))}, {"gamma": FloatDistribution(0, 5)}
                if rec["space"] and k % 3 == 1:  # pruned: no metrics
                    unit.add_trial(create_trial(state=TrialState.PRUNED, params=params, distributions=dists,
                                                user_attrs=attrs, intermediate_values={1: val["balanced_accuracy"]}))
                    continue
                attrs.update(val_metrics=val, test_metrics=test)
                if arm == "policy=pi":
                    attrs["gamma_trajectory"] = [[e, 2.0 + 0.1 * e * (seed + 1)] for e in range(1, 4)]
                unit.add_trial(create_trial(value=val["balanced_accuracy"], params=params, distributions=dists,
                                            user_attrs=attrs))
    return str(path)
