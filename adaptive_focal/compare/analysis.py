"""The numbers of a comparison: leaderboard, paired differences from the best fixed gamma, tuning cost, Pareto front.

Everything here works on :func:`~adaptive_focal.compare.results.load_units` output and returns plain,
JSON-serialisable values:

* the **leaderboard**: per arm, the mean ± std over seeds of the metric of each seed's selected trial (the *test*
  metric when the objective returns test metrics, else the validation metric, which then flatters the tuned arms
  that were selected on it);
* **paired comparisons** of every arm with the *best fixed gamma* (the fixed-gamma arm with the best mean
  validation metric), seed by seed: mean difference, wins / ties / losses (a win is better in the metric's
  direction), the Wilcoxon signed-rank test and a seeded percentile-bootstrap interval of the mean difference;
* the **tuning cost** of a tuned gamma (best-so-far validation metric against trials run), with each default
  policy at the cost of one run and the fixed-gamma grid at the cost of its size;
* the **Pareto front** of the metric against the test ECE, when the trials report ECE;
* the **gamma trajectories** of the selected trials.
"""

from __future__ import annotations

import statistics
import warnings
import zlib

from .results import _num, better, completed, full_trials, selected

__all__ = ["CI_LEVEL", "N_BOOT", "BOOT_SEED", "analyse", "collect", "leaderboard", "pareto_front", "paired_test",
           "wilcoxon_min_p"]

N_BOOT = 10_000
BOOT_SEED = 0
CI_LEVEL = 0.95


def _mean_std(values: list) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _has_test(units: dict) -> bool:
    return any(t["test"] is not None for per in units["units"].values() for ts in per.values() for t in ts)


def collect(units: dict) -> dict:
    """``{"metric", "direction", "split", "meta", "arms": {arm: {seed: value}}, "trials": {arm: completed trials}}``:
    the
    value each seed's selected trial scores on ``split`` ("test" when the trials hold test metrics, else "val")."""
    metric, best = units["metric"], selected(units)
    split = "test" if _has_test(units) else "val"
    return {"metric": metric, "direction": units.get("direction", "maximize"), "split": split,
            "meta": units.get("meta", {}),
            "arms": {arm: {seed: _num((t[split] or {}).get(metric)) for seed, t in per.items()}
                     for arm, per in best.items()},
            "trials": {arm: sum(len(completed(ts)) for ts in per.values()) for arm, per in units["units"].items()}}


def leaderboard(data: dict) -> list[dict]:
    """Arms by mean value over seeds, best first: ``{"arm", "mean", "std", "seeds", "trials"}``."""
    rows = []
    for arm, per_seed in data["arms"].items():
        values = [v for v in per_seed.values() if v is not None]
        if not values:
            continue
        rows.append({"arm": arm, "mean": statistics.fmean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "seeds": len(values), "trials": data["trials"][arm]})
    return sorted(rows, key=lambda r: -better(data.get("direction", "maximize"), r["mean"]))


def is_fixed_gamma(record: dict) -> bool:
    """An arm that trains with one fixed gamma and nothing else (no policy, no resampling, not tuned)."""
    config = record.get("config", {})
    return (not record.get("space") and config.get("loss", "focal") == "focal" and "gamma" in config
            and config.get("policy", "none") in (None, "none") and config.get("sampler", "none") in (None, "none"))


def is_default_policy(record: dict) -> bool:
    return not record.get("space") and record.get("config", {}).get("policy", "none") not in (None, "none")


def is_tuned_gamma(record: dict) -> bool:
    space = record.get("space") or {}
    return bool(space) and all(entry[0] == "gamma" for entry in space.values())


def pareto_front(points) -> list[int]:
    """Indices (in input order) of the points ``(higher is better, lower is better)`` that no other point
    dominates (at least as good in both and strictly better in one). Points with a None/NaN are left out."""
    pts = [(i, float(a), float(b)) for i, (a, b) in enumerate(points)
           if _num(a) is not None and _num(b) is not None]
    front = []
    for i, a, b in pts:
        if not any((a2 >= a and b2 <= b) and (a2 > a or b2 < b) for j, a2, b2 in pts if j != i):
            front.append(i)
    return front


def wilcoxon_min_p(n: int) -> float:
    """The smallest two-sided p-value the exact signed-rank test can give with ``n`` non-zero differences."""
    return min(1.0, 2.0 ** (1 - n)) if n > 0 else 1.0


def paired_test(diffs, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED, level: float = CI_LEVEL,
                direction: str = "maximize") -> dict:
    """Wilcoxon signed-rank test (``scipy.stats.wilcoxon`` with its defaults) and a percentile bootstrap CI of the
    mean of the paired differences ``diffs`` (``n_boot`` resamples from ``numpy`` seeded with ``seed``). A win is
    a difference that is better in ``direction`` (positive when maximising)."""
    import numpy as np
    from scipy import stats

    d = np.asarray([float(x) for x in diffs], dtype=float)
    s = -1.0 if direction == "minimize" else 1.0
    out = {"n": int(d.size), "mean_diff": float(d.mean()) if d.size else None,
           "wins": int((s * d > 0).sum()), "ties": int((d == 0).sum()), "losses": int((s * d < 0).sum()),
           "wilcoxon_p": None, "wilcoxon_min_p": wilcoxon_min_p(int((d != 0).sum())), "ci_low": None,
           "ci_high": None, "ci_level": level, "n_boot": n_boot, "boot_seed": seed, "note": ""}
    if d.size == 0:
        out["note"] = "no paired seeds"
        return out
    if np.all(d == 0):
        out["note"] = "all paired differences are 0"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    out["ci_low"], out["ci_high"] = float(lo), float(hi)
    return out


def _tuning_curve(per_seed: dict, metric: str, direction: str) -> list[dict]:
    """Best-so-far validation metric against the number of trials run (complete or pruned), mean over seeds."""
    curves = []
    for trials in per_seed.values():
        best, curve = None, []
        for t in trials:
            v = _num((t["val"] or {}).get(metric)) if t["state"] == "COMPLETE" else None
            if v is not None and (best is None or better(direction, v) > better(direction, best)):
                best = v
            curve.append(best)
        curves.append(curve)
    rows = []
    for k in range(1, max((len(c) for c in curves), default=0) + 1):
        vals = [c[k - 1] for c in curves if len(c) >= k and c[k - 1] is not None]
        mean, std = _mean_std(vals)
        rows.append({"trials": k, "best_val_mean": mean, "best_val_std": std, "seeds": len(vals)})
    return rows


def _tuning_curve_across(units: dict, arm: str) -> list[dict]:
    """Best-so-far mean validation metric (over every seed, of the trials that evaluated every seed) against the
    training runs spent, by trial number; ``trials`` is runs per seed (a pruned configuration costs the seeds it
    ran), ``runs`` the total, ``best_val_std`` the std over seeds of the best trial's validation metric."""
    metric, info, direction = units["metric"], units["across_seeds"][arm], units.get("direction", "maximize")
    n = len(info["seeds"])
    full = {number: mean for mean, number in full_trials(units, arm)}
    rows, runs, best = [], 0, None
    for t in info["trials"]:
        runs += len(t["seeds_evaluated"])
        if t["number"] in full and (best is None or better(direction, full[t["number"]]) > better(direction,
                                                                                                   best[0])):
            vals = [_num((r["val"] or {}).get(metric), float("nan")) for rs in units["units"][arm].values()
                    for r in rs if r["number"] == t["number"]]
            best = (full[t["number"]], statistics.stdev(vals) if len(vals) > 1 else 0.0)
        rows.append({"trials": runs / n if n else None, "runs": runs, "best_val_mean": best[0] if best else None,
                     "best_val_std": best[1] if best else None, "seeds": n if best else 0})
    return rows


def analyse(units: dict, *, n_boot: int = N_BOOT, boot_seed: int = BOOT_SEED, level: float = CI_LEVEL) -> dict:
    """Everything the report shows for one study (see the module docstring); JSON-serialisable."""
    metric, arms, best = units["metric"], units["arms"], selected(units)
    direction = units.get("direction", "maximize")
    summary = collect(units)
    split = summary["split"]
    board = []
    for row in leaderboard(summary):
        arm, per = row["arm"], best[row["arm"]]
        val_mean, val_std = _mean_std([_num((t["val"] or {}).get(metric)) for t in per.values()])
        ece_mean, ece_std = _mean_std([_num((t[split] or {}).get("ece")) for t in per.values()])
        secs = [_num(t["seconds"]) for ts in units["units"][arm].values() for t in completed(ts)]
        secs = [x for x in secs if x is not None]
        kind = ("tuned across seeds" if arms[arm].get("across_seeds") else "tuned") if arms[arm].get("space") \
            else "fixed"
        board.append({**row, "kind": kind, "val_mean": val_mean,
                      "val_std": val_std, "ece_mean": ece_mean, "ece_std": ece_std,
                      "seconds_per_trial": statistics.fmean(secs) if secs else None,
                      "seconds_total": sum(secs) if secs else None})
    per_seed = [{"arm": arm, "seed": seed, "trial": t["number"], "val": _num((t["val"] or {}).get(metric)),
                 split: _num((t[split] or {}).get(metric)), f"{split}_ece": _num((t[split] or {}).get("ece"))}
                for arm, per in best.items() for seed, t in per.items()]

    # the reference: the fixed gamma with the best mean validation metric
    fixed = [r for r in board if is_fixed_gamma(arms[r["arm"]]) and r["val_mean"] is not None]
    reference = max(fixed, key=lambda r: better(direction, r["val_mean"]))["arm"] if fixed else None
    paired = []
    if reference is not None:
        ref = summary["arms"][reference]
        for row in board:
            arm = row["arm"]
            if arm == reference:
                continue
            mine = summary["arms"][arm]
            seeds = sorted(s for s in mine if s in ref and _num(mine[s]) is not None and _num(ref[s]) is not None)
            diffs = [mine[s] - ref[s] for s in seeds]
            seed = (boot_seed + zlib.crc32(arm.encode())) % 2 ** 32
            paired.append({"arm": arm, "reference": reference, "seeds": seeds, "diffs": diffs,
                           **paired_test(diffs, n_boot=n_boot, seed=seed, level=level, direction=direction)})

    # tuning cost: tuned-gamma curve(s), default policies at one run's cost, the gamma grid at its cost
    tuning = {arm: (_tuning_curve_across(units, arm) if arms[arm].get("across_seeds")
                    else _tuning_curve(units["units"][arm], metric, direction))
              for arm in arms if is_tuned_gamma(arms[arm])}
    defaults = []
    for arm in arms:
        if is_default_policy(arms[arm]):
            mean, std = _mean_std([_num((t["val"] or {}).get(metric)) for t in best[arm].values()])
            if mean is not None:
                defaults.append({"arm": arm, "trials": 1, "val_mean": mean, "val_std": std})
    grid_arms = [a for a in arms if is_fixed_gamma(arms[a])]
    grid_best = []
    for seed in sorted({s for a in grid_arms for s in best[a]}):
        vals = [_num((best[a][seed]["val"] or {}).get(metric)) for a in grid_arms if seed in best[a]]
        vals = [v for v in vals if v is not None]
        if vals:
            grid_best.append(max(vals, key=lambda v: better(direction, v)))
    grid = None
    if grid_best:
        mean, std = _mean_std(grid_best)
        grid = {"arm": f"gamma grid (best of {len(grid_arms)})", "trials": len(grid_arms), "val_mean": mean,
                "val_std": std}

    pareto = None
    pts = [r for r in board if r["ece_mean"] is not None]
    if pts and metric != "ece":
        front = set(pareto_front([(better(direction, r["mean"]), r["ece_mean"]) for r in pts]))
        pareto = [{"arm": r["arm"], metric: r["mean"], "ece": r["ece_mean"], "front": i in front}
                  for i, r in enumerate(pts)]

    trajectories = {}
    for arm, per in best.items():
        series = {seed: t["gamma"] for seed, t in per.items() if t["gamma"]}
        if series:
            trajectories[arm] = {str(seed): [list(p) for p in traj] for seed, traj in series.items()}

    return {"study": units["study"], "meta": units.get("meta", {}), "dataset": units.get("meta", {}).get("dataset"),
            "metric": metric, "direction": direction, "split": split, "summary": summary, "leaderboard": board,
            "per_seed": per_seed, "reference": reference, "paired": paired,
            "tuning_cost": {"curves": tuning, "defaults": defaults, "grid": grid}, "pareto": pareto,
            "gamma_trajectories": trajectories, "ci_level": level, "n_boot": n_boot, "boot_seed": boot_seed}
