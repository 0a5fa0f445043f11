"""The numbers of a comparison: leaderboard, paired differences from the best fixed gamma, tuning cost, Pareto front.

Everything here works on :func:`~adaptive_focal.compare.results.load_units` output and returns plain,
JSON-serialisable values:

* the **leaderboard**: per arm, the mean ± std over seeds of the metric of each seed's selected trial (the *test*
  metric when the objective returns test metrics, else the validation metric, which then flatters the tuned arms
  that were selected on it), and the budget it spent: training runs completed, pruned, and configurations stopped
  across seeds;
* **paired comparisons** of every arm with the *best fixed gamma* (the fixed-gamma arm with the best mean
  validation metric), seed by seed: mean difference, wins / ties / losses, the paired t-interval and t-test
  (:func:`paired_t`), Holm's adjustment of the t-test p-values over the arms of the table (:func:`holm`), the exact
  Wilcoxon signed-rank p (:func:`wilcoxon_exact_p`), and with an equivalence margin fixed in advance the TOST
  equivalence test (:func:`tost`). A comparison over fewer than :data:`CONFIRMATORY_SEEDS` paired seeds is flagged
  exploratory. The percentile bootstrap interval of the mean difference (``ci_low``, ``ci_high``) and scipy's
  default Wilcoxon p (``wilcoxon_p``) are kept as before for the paper's committed tables; the report no longer
  shows the bootstrap, which over 5 paired seeds excludes 0 about 16% of the time when there is no difference;
* the **tuning cost** of a tuned gamma (best-so-far validation metric against trials run), with each default
  policy at the cost of one run and the fixed-gamma grid at the cost of its size;
* the **Pareto front** of the metric against the test ECE, when the trials report ECE;
* the **gamma trajectories** of the selected trials.
"""

from __future__ import annotations

import math
import statistics
import warnings
import zlib

from .results import _num, better, completed, full_trials, selected

__all__ = ["BOOT_SEED", "CI_LEVEL", "CONFIRMATORY_SEEDS", "N_BOOT", "analyse", "budget", "collect", "holm",
           "leaderboard", "paired_t", "paired_test", "pareto_front", "tost", "wilcoxon_exact_p", "wilcoxon_min_p"]

N_BOOT = 10_000
BOOT_SEED = 0
#: the confidence level of the paired intervals; 1 - CI_LEVEL is the level of Holm's family-wise error and of TOST
CI_LEVEL = 0.95
#: the fewest paired seeds for a confirmatory claim (Research protocol v2); a comparison over fewer is exploratory
CONFIRMATORY_SEEDS = 10


def _mean_std(values: list) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _has_test(units: dict) -> bool:
    return any(t["test"] is not None for per in units["units"].values() for ts in per.values() for t in ts)


def budget(units: dict, arm: str) -> dict:
    """The training runs ``arm`` spent (a run: one configuration trained on one seed): ``runs`` finished,
    ``completed`` (the runs a selection can choose from), ``pruned`` (stopped by the per-epoch pruner: they cost
    part of a run and return nothing) and, for an arm tuned across seeds, ``configs`` tried and ``configs_stopped``
    (stopped by the Wilcoxon pruner before their last seed; their runs are completed runs, and the seeds they did
    not reach were never started). Failed runs are not in the units (see ``other_trials``)."""
    per = units["units"][arm]
    runs = [t for ts in per.values() for t in ts]
    across = (units.get("across_seeds") or {}).get(arm)
    return {"runs": len(runs), "completed": sum(len(completed(ts)) for ts in per.values()),
            "pruned": sum(t["state"] == "PRUNED" for t in runs),
            "configs": len(across["trials"]) if across else None,
            "configs_stopped": sum(bool(t["pruned"]) for t in across["trials"]) if across else None}


def collect(units: dict) -> dict:
    """``{"metric", "direction", "split", "meta", "arms": {arm: {seed: value}}, "trials": {arm: completed runs},
    "budget": {arm: budget}}``: the value each seed's selected trial scores on ``split`` ("test" when the trials
    hold test metrics, else "val"), the completed runs per arm and each arm's :func:`budget`."""
    metric, best = units["metric"], selected(units)
    split = "test" if _has_test(units) else "val"
    budgets = {arm: budget(units, arm) for arm in units["units"]}
    return {"metric": metric, "direction": units.get("direction", "maximize"), "split": split,
            "meta": units.get("meta", {}),
            "arms": {arm: {seed: _num((t[split] or {}).get(metric)) for seed, t in per.items()}
                     for arm, per in best.items()},
            "trials": {arm: b["completed"] for arm, b in budgets.items()}, "budget": budgets}


def leaderboard(data: dict) -> list[dict]:
    """Arms by mean value over seeds, best first: ``{"arm", "mean", "std", "seeds", "trials", "runs",
    "runs_completed", "runs_pruned", "configs_stopped"}`` (``trials`` is ``runs_completed``; see :func:`budget`)."""
    rows = []
    for arm, per_seed in data["arms"].items():
        values = [v for v in per_seed.values() if v is not None]
        if not values:
            continue
        b = (data.get("budget") or {}).get(arm) or {}
        rows.append({"arm": arm, "mean": statistics.fmean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "seeds": len(values), "trials": data["trials"][arm], "runs": b.get("runs"),
                     "runs_completed": b.get("completed"), "runs_pruned": b.get("pruned"),
                     "configs_stopped": b.get("configs_stopped")})
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


def _differences(diffs) -> list[float]:
    return [float(x) for x in diffs]


def paired_t(diffs, level: float = CI_LEVEL) -> dict:
    """The paired t-analysis of the differences ``diffs`` (arm minus reference, one per seed).

    With n differences of mean m and sample standard deviation s (divisor n - 1), the standard error is
    se = s / sqrt(n) and the degrees of freedom df = n - 1; the ``level`` interval is m ± t_{(1+level)/2, df} se
    and the two-sided p-value of "the mean difference is 0" is 2 P(T_df > |m / se|).

    Returns:
        ``{"n", "mean", "sd", "se", "df", "low", "high", "t", "p"}``. With fewer than 2 differences only ``n`` and
        ``mean`` are set (the rest None). Differences that do not vary (s = 0) give the interval [m, m] and no
        ``t`` or ``p``: the statistic is undefined there.
    """
    from scipy import stats

    d = _differences(diffs)
    n = len(d)
    out = {"n": n, "mean": statistics.fmean(d) if d else None, "sd": None, "se": None, "df": None, "low": None,
           "high": None, "t": None, "p": None}
    if n < 2:
        return out
    m, sd = out["mean"], statistics.stdev(d)
    se, df = sd / math.sqrt(n), n - 1
    half = float(stats.t.ppf((1.0 + level) / 2.0, df)) * se
    out.update(sd=sd, se=se, df=df, low=m - half, high=m + half)
    if se > 0:
        t = m / se
        out.update(t=t, p=min(1.0, 2.0 * float(stats.t.sf(abs(t), df))))
    return out


def wilcoxon_exact_p(diffs) -> float | None:
    """The two-sided p-value of the Wilcoxon signed-rank test from its exact null distribution.

    Zero differences are dropped (Wilcoxon's convention, scipy's ``zero_method="wilcox"``); tied absolute
    differences get their average rank. Under the null hypothesis (the differences are symmetric about 0) each of
    the 2^n sign assignments of those ranks is equally likely, and W+ (the sum of the ranks of the positive
    differences) is counted over all of them, so the distribution stays exact with ties, where
    ``scipy.stats.wilcoxon(method="exact")`` rounds the statistic. p = min(1, 2 min(P(W+ <= w), P(W+ >= w))).
    Without ties or zeros this is scipy's exact p; with them, scipy's exact sign-flip permutation p (its default
    for n <= 13). None when every difference is 0 (or there are none).
    """
    import numpy as np
    from scipy import stats

    d = np.asarray([x for x in _differences(diffs) if x != 0.0], dtype=float)
    if d.size == 0:
        return None
    doubled = np.rint(2.0 * stats.rankdata(np.abs(d))).astype(int)  # average ranks are multiples of 1/2
    w = int(doubled[d > 0].sum())
    dist = np.zeros(int(doubled.sum()) + 1)  # P(2 W+ = k), built up one rank at a time
    dist[0] = 1.0
    for r in doubled:  # the rank's sign is - (adds 0) or + (adds r), each with probability 1/2
        plus = np.zeros_like(dist)
        plus[r:] = dist[:-r]
        dist = 0.5 * (dist + plus)
    return float(min(1.0, 2.0 * min(dist[:w + 1].sum(), dist[w:].sum())))


def holm(pvalues) -> list:
    """Holm's step-down adjustment of the p-values of a family of m tests.

    With the p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    min(1, max_{j <= i} (m - j + 1) p_(j)); rejecting where the adjusted p <= alpha keeps the family-wise error
    rate at alpha whatever the dependence between the tests. An adjusted p is never below its raw p, never above
    1, and never below the adjusted p of a smaller raw p. Returned in the input order; None entries (tests not
    made) stay None and do not count in m.

    Example:
        >>> [round(p, 2) for p in holm([0.01, 0.04, 0.03, 0.20])]
        [0.04, 0.09, 0.09, 0.2]
    """
    pvalues = list(pvalues)
    pairs = sorted(((float(p), i) for i, p in enumerate(pvalues) if p is not None), key=lambda x: x[0])
    m, out, running = len(pairs), [None] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(pairs):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def _alpha(level: float) -> float:
    return round(1.0 - level, 12)


def tost(diffs, margin: float, alpha: float = _alpha(CI_LEVEL)) -> dict:
    """Two one-sided paired t-tests (TOST) of equivalence within ±``margin``.

    The arm is equivalent to the reference when both "mean difference <= -margin" and "mean difference >=
    margin" are rejected at ``alpha``: p_lower = P(T_df > (m + margin) / se), p_upper = P(T_df < (m - margin) /
    se), p = max(p_lower, p_upper), equivalent when p <= alpha. Equivalently, the (1 - 2 alpha) t-interval
    m ± t_{1-alpha, df} se lies inside [-margin, margin]. The margin must be fixed before looking at the results.

    Returns:
        ``{"margin", "alpha", "p_lower", "p_upper", "p", "low", "high", "equivalent"}`` (``low``, ``high``: the
        (1 - 2 alpha) interval); p-values, interval and verdict None with fewer than 2 differences.
    """
    from scipy import stats

    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a positive number, got {margin!r}")
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    t = paired_t(diffs, level=1.0 - 2.0 * alpha)
    out = {"margin": float(margin), "alpha": alpha, "p_lower": None, "p_upper": None, "p": None, "low": t["low"],
           "high": t["high"], "equivalent": None}
    if t["df"] is None:
        return out
    m, se, df = t["mean"], t["se"], t["df"]
    if se > 0:
        p_lower = float(stats.t.sf((m + margin) / se, df))
        p_upper = float(stats.t.cdf((m - margin) / se, df))
    else:  # no variation: each one-sided test is decided by the mean alone
        p_lower, p_upper = float(m <= -margin), float(m >= margin)
    p = max(p_lower, p_upper)
    out.update(p_lower=p_lower, p_upper=p_upper, p=p, equivalent=p <= alpha)
    return out


def paired_test(diffs, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED, level: float = CI_LEVEL,
                direction: str = "maximize", margin: float | None = None) -> dict:
    """The paired comparison of one arm with the reference from the per-seed differences ``diffs``.

    A win is a difference that is better in ``direction`` (positive when maximising). The keys:

    * ``n``, ``mean_diff``, ``wins``, ``ties``, ``losses``;
    * the paired t-analysis (:func:`paired_t`): ``sd_diff``, ``df``, the ``level`` interval ``t_low``,
      ``t_high``, and ``t_p`` (two-sided, mean difference 0);
    * ``wilcoxon_exact_p`` (:func:`wilcoxon_exact_p`) and ``wilcoxon_min_p``, the smallest p the exact test can
      give with these seeds;
    * ``exploratory``: fewer than :data:`CONFIRMATORY_SEEDS` paired seeds;
    * with ``margin``: TOST equivalence within ±``margin`` at alpha = 1 - ``level`` (:func:`tost`): ``tost_p``,
      the (1 - 2 alpha) interval ``tost_low``, ``tost_high``, and ``tost_equivalent`` (for this arm alone; the
      report's verdict adjusts ``tost_p`` over the table, see :func:`analyse`); None without a margin;
    * kept for the paper's committed tables: ``wilcoxon_p`` (``scipy.stats.wilcoxon`` with its defaults), the
      percentile bootstrap interval ``ci_low``, ``ci_high`` of the mean at ``ci_level`` (``n_boot`` resamples
      from ``numpy`` seeded with ``seed``), and ``note``.
    """
    import numpy as np
    from scipy import stats

    d = np.asarray(_differences(diffs), dtype=float)
    s = -1.0 if direction == "minimize" else 1.0
    out = {"n": int(d.size), "mean_diff": float(d.mean()) if d.size else None,
           "wins": int((s * d > 0).sum()), "ties": int((d == 0).sum()), "losses": int((s * d < 0).sum()),
           "wilcoxon_p": None, "wilcoxon_min_p": wilcoxon_min_p(int((d != 0).sum())), "ci_low": None,
           "ci_high": None, "ci_level": level, "n_boot": n_boot, "boot_seed": seed, "note": ""}
    t = paired_t(d.tolist(), level=level)
    out.update(sd_diff=t["sd"], df=t["df"], t_low=t["low"], t_high=t["high"], t_p=t["p"],
               wilcoxon_exact_p=wilcoxon_exact_p(d.tolist()), exploratory=bool(d.size < CONFIRMATORY_SEEDS),
               margin=None if margin is None else float(margin), tost_p=None, tost_low=None, tost_high=None,
               tost_equivalent=None)
    if margin is not None:
        e = tost(d.tolist(), margin, alpha=_alpha(level))
        out.update(tost_p=e["p"], tost_low=e["low"], tost_high=e["high"], tost_equivalent=e["equivalent"])
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


def analyse(units: dict, *, n_boot: int = N_BOOT, boot_seed: int = BOOT_SEED, level: float = CI_LEVEL,
            equivalence_margin: float | None = None) -> dict:
    """Everything the report shows for one study (see the module docstring); JSON-serialisable.

    Each paired row holds :func:`paired_test`'s keys and, adjusted by :func:`holm` over the rows of the table (the
    arms compared with the reference), ``holm_p`` (of ``t_p``) and, with ``equivalence_margin``, ``tost_holm_p``
    and the verdict ``equivalent`` (``tost_holm_p`` <= alpha): the arm matches the reference within
    ±``equivalence_margin``, a margin that must be fixed before the results are seen. alpha is 1 - ``level``.
    """
    if equivalence_margin is not None:
        tost([0.0, 0.0], equivalence_margin)  # a bad margin fails here, naming itself
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
                           **paired_test(diffs, n_boot=n_boot, seed=seed, level=level, direction=direction,
                                         margin=equivalence_margin)})
    alpha = _alpha(level)
    for row, p, e in zip(paired, holm([r["t_p"] for r in paired]), holm([r["tost_p"] for r in paired])):
        row.update(holm_p=p, tost_holm_p=e, equivalent=None if e is None else e <= alpha)

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
            "gamma_trajectories": trajectories, "ci_level": level, "n_boot": n_boot, "boot_seed": boot_seed,
            "alpha": alpha, "equivalence_margin": None if equivalence_margin is None else float(equivalence_margin),
            "confirmatory_seeds": CONFIRMATORY_SEEDS,
            "exploratory": any(r["exploratory"] for r in paired) if paired else None,
            "holm_family": sum(r["t_p"] is not None for r in paired),
            "pruner": units.get("meta", {}).get("pruner"), "other_trials": dict(units.get("other_trials") or {})}
