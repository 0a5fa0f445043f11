"""The default comparison on digits-lt: gamma grid, TPE-tuned gamma, every applicable policy (defaults and TPE-tuned
over its search space) and the imbalance baselines, 5 seeds, 10 TPE trials per tuned arm and seed."""

from ..spec import DatasetStudy

STUDY = DatasetStudy(name="digits-lt", dataset="digits-lt", seeds=5, trials=10)
