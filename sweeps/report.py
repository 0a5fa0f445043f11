"""A minimal leaderboard from the storage alone: per arm, mean ± std over seeds of the test headline metric.

A fixed arm's value for a seed is its completed trial's test metric; a tuned arm's is the test metric of the
completed trial with the best validation headline metric (the test set plays no part in the choice).
"""

from __future__ import annotations

import statistics

import optuna
from optuna.trial import TrialState

from .runner import StorageError, open_storage

__all__ = ["collect", "leaderboard", "markdown"]


def collect(storage, study_name: str) -> dict:
    """``{"dataset", "metric", "arms": {arm: {seed: test value}}, "trials": {arm: completed trials}}``."""
    names = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if study_name not in names:
        studies = sorted(n for n in names if "/" not in n)
        raise ValueError(f"no study {study_name!r} in this storage; studies there: "
                         f"{', '.join(studies) if studies else '(none)'}")
    attrs = names[study_name].user_attrs
    metric = attrs["metric"]
    arms: dict = {arm: {} for arm in attrs["arms"]}
    counts: dict = {arm: 0 for arm in attrs["arms"]}
    prefix = f"{study_name}/"
    for name in names:
        if not name.startswith(prefix):
            continue
        arm, _, seed = name[len(prefix):].rpartition("/seed")
        if arm not in arms:
            continue
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,))
        trials = [t for t in trials if t.user_attrs.get("test_metrics") is not None]
        counts[arm] += len(trials)
        if not trials:
            continue
        best = max(trials, key=lambda t: (t.user_attrs["val_metrics"].get(metric) or float("-inf"), -t.number))
        arms[arm][int(seed)] = best.user_attrs["test_metrics"].get(metric)
    return {"dataset": attrs["dataset"], "metric": metric, "arms": arms, "trials": counts}


def leaderboard(data: dict) -> list[dict]:
    rows = []
    for arm, per_seed in data["arms"].items():
        values = [v for v in per_seed.values() if v is not None]
        if not values:
            continue
        rows.append({"arm": arm, "mean": statistics.fmean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "seeds": len(values), "trials": data["trials"][arm]})
    return sorted(rows, key=lambda r: -r["mean"])


def markdown(data: dict, study_name: str) -> str:
    rows = leaderboard(data)
    lines = [f"### {study_name} ({data['dataset']}): test {data['metric']}, mean ± std over seeds", "",
             f"| rank | arm | test {data['metric']} | seeds | completed trials |", "|---:|---|---:|---:|---:|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['arm']} | {r['mean']:.3f} ± {r['std']:.3f} | {r['seeds']} | {r['trials']} |")
    missing = [a for a in data["arms"] if a not in {r["arm"] for r in rows}]
    if missing:
        lines += ["", f"No completed trial yet: {', '.join(missing)}."]
    return "\n".join(lines)


def report(study_name: str, storage_spec: str, *, connect_timeout: int = 5) -> str:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_spec, connect_timeout=connect_timeout)
    return markdown(collect(storage, study_name), study_name)


__all__ += ["report", "StorageError"]
