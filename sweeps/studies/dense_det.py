"""The default comparison on dense-det: gamma grid, TPE-tuned gamma, every applicable policy (defaults and TPE-tuned
over its search space) and the imbalance baselines, 5 seeds, 4 TPE trials per tuned arm and seed."""

from ..spec import DatasetStudy

STUDY = DatasetStudy(name="dense-det", dataset="dense-det", seeds=5, trials=4)
