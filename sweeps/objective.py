"""The objective of this repository's studies: one :func:`research.train.main` run per trial.

The trial's research.train config is the study's data set and overrides, the run's seed and the arm's config (with
its tuned values). The validation headline metric is reported after every epoch (for pruning) and the run's
validation and test metrics, seconds, gamma trajectory and full config are returned to the engine, which stores
them with the trial.
"""

from __future__ import annotations

import json

__all__ = ["config_for", "train"]


def config_for(run) -> dict:
    """The research.train config of ``run`` (a :class:`adaptive_focal.compare.Run` of a DatasetStudy)."""
    study = run.study
    return {"dataset": study.dataset, "dataset_kwargs": dict(study.dataset_kwargs), "seed": run.seed,
            "threads": run.threads, **json.loads(json.dumps(study.overrides)), **run.config}


def train(run) -> dict:
    from research.train import main

    config = config_for(run)
    metric = run.study.metric

    def on_epoch(epoch, val_metrics, record):
        value = val_metrics.get(metric)
        if value is not None:
            run.report(epoch, value)

    result = main(config, epoch_callback=on_epoch)
    return {"val": result["val_metrics"], "test": result["metrics"], "seconds": result["seconds"],
            "gamma_trajectory": (result.get("gamma") or {}).get("epochs", []), "config": config}
