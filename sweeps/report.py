"""Leaderboards and the analysis of a study, from the storage alone.

The first table (``markdown``) is the minimal leaderboard: per arm, mean ± std over seeds of the test headline
metric. A fixed arm's value for a seed is its completed trial's test metric; a tuned arm's is the test metric of
the completed trial with the best validation headline metric (the test set plays no part in the choice). An arm
tuned across seeds selects one configuration for all seeds: the trial with the best mean validation headline
metric among its trials that evaluated every seed; its per-seed test metrics are the arm's values.

:func:`analyse` adds, per study (one data set each): paired comparisons of every arm with the best fixed gamma
(the fixed-gamma arm with the highest mean *validation* metric; pairs are seeds), with the Wilcoxon signed-rank
test and a seeded bootstrap confidence interval of the mean paired difference; the tuning-cost curve of the
TPE-tuned gamma (best-so-far validation metric against trials, averaged over seeds) with the default policies at
one run's cost; the Pareto front of test balanced accuracy against test ECE (multiclass data sets); and gamma
trajectories when trials store them (user attribute ``gamma_trajectory``, or ``gamma`` as research.train returns
it). :func:`write_outputs` writes ``report.md``, CSV and JSON files and PNG figures into a folder.

    python -m sweeps.report digits-lt [more studies] [--storage PATH|URL] [--out DIR] [--wandb disabled|offline|online]

``--storage`` may also be a :mod:`sweeps.export` file (``sweeps/results/trials/digits-lt.json.gz``) or a folder of
them (``sweeps/results/trials``): the committed results, read without the journals.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
import warnings
import zlib
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .runner import StorageError, open_storage, parse_unit_name

__all__ = ["WandbReportLogger", "analyse", "collect", "leaderboard", "load_units", "markdown", "paired_test",
           "pareto_front", "run_report", "selected", "wilcoxon_min_p", "write_outputs"]


def _record(t) -> dict:
    a = t.user_attrs
    return {"number": t.number, "state": t.state.name, "val": a.get("val_metrics"), "test": a.get("test_metrics"),
            "seconds": a.get("seconds"), "gamma": _trajectory(a)}


def _trajectory(attrs: dict):
    """``[(epoch, gamma), ...]`` from a ``gamma_trajectory`` or a research.train ``gamma`` attribute, else None
    (vector gammas are averaged)."""
    raw = attrs.get("gamma_trajectory")
    if raw is None and isinstance(attrs.get("gamma"), dict):
        raw = attrs["gamma"].get("epochs")
    if not raw:
        return None
    out = []
    for i, item in enumerate(raw, 1):
        if isinstance(item, dict):
            x, g = item.get("epoch", i), item.get("gamma")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            x, g = item
        else:
            x, g = i, item
        if isinstance(g, dict):
            g = g.get("values")
        flat = _flatten(g)
        if flat:
            out.append((float(x), statistics.fmean(flat)))
    return out or None


def _flatten(v) -> list:
    if isinstance(v, (list, tuple)):
        return [x for item in v for x in _flatten(item)]
    return [float(v)] if isinstance(v, (int, float)) and not isinstance(v, bool) else []


def study_summaries(storage, study_name: str) -> tuple[dict, dict]:
    """Every study in ``storage`` by name, and the manifest's user attributes of ``study_name`` (an error naming
    the stored studies when it is not there)."""
    names = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if study_name not in names:
        studies = sorted(n for n in names if "/" not in n)
        raise ValueError(f"no study {study_name!r} in this storage; studies there: "
                         f"{', '.join(studies) if studies else '(none)'}")
    return names, names[study_name].user_attrs


def stored_units(storage, study_name: str):
    """The manifest's user attributes of ``study_name`` and an iterator over its units in ``storage`` as
    ``(arm, seed, optuna.Study)``: ``seed`` None for the one unit of an arm tuned across seeds; studies that are
    not units of the manifest's arms are left out."""
    names, attrs = study_summaries(storage, study_name)

    def units():
        arms = attrs.get("arms") or {}
        across = {arm for arm, rec in arms.items() if rec.get("across_seeds")}
        for name in names:
            parsed = parse_unit_name(study_name, name)
            if parsed is None or parsed[0] not in arms or (parsed[1] is None) != (parsed[0] in across):
                continue
            yield parsed[0], parsed[1], optuna.load_study(study_name=name, storage=storage)

    return attrs, units()


def load_units(storage, study_name: str) -> dict:
    """``{"study", "dataset", "metric", "arms": {arm: {"config", "space"}}, "units": {arm: {seed: [trial, ...]}},
    "across_seeds": {arm: {"seeds", "trials"}}}`` where a trial is ``{"number", "state", "val", "test", "seconds",
    "gamma"}`` (COMPLETE and PRUNED trials, by number; ``gamma``: a trajectory ``[(epoch, gamma)]`` or None).

    For an arm tuned across seeds, ``units[arm][seed]`` holds one such record per trial that trained on that seed
    (``number`` is the trial's), and ``across_seeds[arm]`` the unit's ``seeds`` and its trials as ``{"number",
    "state", "seeds_evaluated", "pruned"}``. ``storage`` may also be the path of a :mod:`sweeps.export` file
    (``<study>.json.gz``), which gives the same structure without the journal."""
    from .export import is_export
    from .export import load_units as load_export

    if is_export(storage):
        return load_export(storage, study_name)
    attrs, stored = stored_units(storage, study_name)
    units: dict = {arm: {} for arm in attrs["arms"]}
    across = {arm: {"seeds": [], "trials": []} for arm, rec in attrs["arms"].items() if rec.get("across_seeds")}
    for arm, seed, unit in stored:
        trials = sorted(unit.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                        key=lambda t: t.number)
        if seed is not None:
            units[arm][seed] = [_record(t) for t in trials]
            continue
        seeds = list(unit.user_attrs.get("seeds") or [])
        across[arm] = {"seeds": seeds, "trials": [_across_record(t.number, t.state.name, t.user_attrs)
                                                  for t in trials]}
        units[arm] = {s: [] for s in seeds}
        for t in trials:
            for s, run in (t.user_attrs.get("per_seed") or {}).items():
                units[arm].setdefault(int(s), []).append(_seed_record(t.number, t.state.name, run))
    return {"study": study_name, "dataset": attrs["dataset"], "metric": attrs["metric"], "arms": attrs["arms"],
            "units": {arm: dict(sorted(u.items())) for arm, u in units.items()}, "across_seeds": across}


def _across_record(number: int, state: str, attrs: dict) -> dict:
    """A trial of an arm tuned across seeds, as :func:`load_units` lists it (``attrs``: its user attributes)."""
    return {"number": number, "state": state, "seeds_evaluated": list(attrs.get("seeds_evaluated") or []),
            "pruned": bool(attrs.get("pruned"))}


def _seed_record(number: int, state: str, run: dict) -> dict:
    """One seed's run inside a trial of an arm tuned across seeds, shaped like a per-seed trial record."""
    return {"number": number, "state": state, "val": run.get("val_metrics"), "test": run.get("test_metrics"),
            "seconds": run.get("seconds"), "gamma": _trajectory(run)}


def _completed(trials: list) -> list:
    return [t for t in trials if t["state"] == "COMPLETE" and t["test"] is not None]


def _full_trials(units: dict, arm: str) -> list[tuple]:
    """``[(mean validation metric, trial number), ...]`` of the completed trials of an arm tuned across seeds that
    evaluated every seed of its unit (by number); a NaN / missing validation value counts as -inf."""
    metric, info = units["metric"], units["across_seeds"][arm]
    seeds = set(info["seeds"])
    out = []
    for t in info["trials"]:
        if t["state"] != "COMPLETE" or not seeds or set(t["seeds_evaluated"]) != seeds:
            continue
        runs = {s: r for s in seeds for r in units["units"][arm].get(s, []) if r["number"] == t["number"]}
        if set(runs) != seeds or any(r["test"] is None for r in runs.values()):
            continue
        vals = [_num((runs[s]["val"] or {}).get(metric), float("-inf")) for s in sorted(seeds)]
        out.append((statistics.fmean(vals), t["number"]))
    return out


def selected(units: dict) -> dict:
    """``{arm: {seed: trial}}``: per seed the completed trial with the best validation headline metric (first
    by number on ties). For an arm tuned across seeds: every seed's run of the one trial with the best mean
    validation metric among those that evaluated every seed (first by number on ties)."""
    metric = units["metric"]
    out: dict = {}
    across = units.get("across_seeds") or {}
    for arm, per_seed in units["units"].items():
        out[arm] = {}
        if arm in across:
            full = _full_trials(units, arm)
            if full:
                best = max(full, key=lambda x: (x[0], -x[1]))[1]
                out[arm] = {s: r for s, rs in per_seed.items() for r in rs if r["number"] == best}
            continue
        for seed, trials in per_seed.items():
            done = _completed(trials)
            if done:
                out[arm][seed] = max(done, key=lambda t: (_num((t["val"] or {}).get(metric), float("-inf")),
                                                          -t["number"]))
    return out


def _num(v, default=None):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) else default


def _summary(units: dict) -> dict:
    metric, best = units["metric"], selected(units)
    return {"dataset": units["dataset"], "metric": metric,
            "arms": {arm: {seed: t["test"].get(metric) for seed, t in per.items()} for arm, per in best.items()},
            "trials": {arm: sum(len(_completed(ts)) for ts in per.values()) for arm, per in units["units"].items()}}


def collect(storage, study_name: str) -> dict:
    """``{"dataset", "metric", "arms": {arm: {seed: test value}}, "trials": {arm: completed trials}}``."""
    return _summary(load_units(storage, study_name))


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


def _storage_for(study_name: str, spec: str | None, connect_timeout: int = 5):
    """What :func:`load_units` reads for ``study_name``: an export file as its path (``spec`` ending in
    ``.json.gz``, or a folder holding ``<study>.json.gz``), else the opened Optuna storage (``spec`` or the
    study's default journal file)."""
    from .export import export_path, is_export
    from .runner import default_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = str(spec or default_storage(study_name))
    if "://" not in spec and Path(spec).is_dir():
        spec = str(export_path(spec, study_name))
    if is_export(spec):
        if not Path(spec).is_file():
            raise ValueError(f"no export file {spec!r}; write it with `python -m sweeps.export {study_name}`")
        return spec
    if "://" not in spec and not Path(spec).is_file():
        raise ValueError(f"no storage file {spec!r}; run `adaptive-focal sweep run {study_name}` first or pass "
                         "--storage")
    return open_storage(spec, connect_timeout=connect_timeout)


def report(study_name: str, storage_spec: str, *, connect_timeout: int = 5) -> str:
    storage = _storage_for(study_name, storage_spec, connect_timeout)
    return markdown(collect(storage, study_name), study_name)


__all__ += ["StorageError", "report"]


# ----------------------------------------------------------------------------------------------------------
# analysis
# ----------------------------------------------------------------------------------------------------------
N_BOOT = 10_000
BOOT_SEED = 0
CI_LEVEL = 0.95


def _mean_std(values: list) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _is_fixed_gamma(record: dict) -> bool:
    config = record.get("config", {})
    return (not record.get("space") and config.get("loss") == "focal" and "gamma" in config
            and config.get("policy", "none") in (None, "none") and config.get("sampler", "none") in (None, "none"))


def _is_default_policy(record: dict) -> bool:
    return not record.get("space") and record.get("config", {}).get("policy", "none") not in (None, "none")


def _is_tuned_gamma(record: dict) -> bool:
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


def paired_test(diffs, *, n_boot: int = N_BOOT, seed: int = BOOT_SEED, level: float = CI_LEVEL) -> dict:
    """Wilcoxon signed-rank test (``scipy.stats.wilcoxon`` with its defaults) and a percentile bootstrap CI
    of the mean of the paired differences ``diffs`` (``n_boot`` resamples from ``numpy`` seeded with ``seed``)."""
    import numpy as np
    from scipy import stats

    d = np.asarray([float(x) for x in diffs], dtype=float)
    out = {"n": int(d.size), "mean_diff": float(d.mean()) if d.size else None,
           "wins": int((d > 0).sum()), "ties": int((d == 0).sum()), "losses": int((d < 0).sum()),
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


def _tuning_curve(per_seed: dict, metric: str) -> list[dict]:
    """Best-so-far validation metric against the number of trials run (complete or pruned), mean over seeds."""
    curves = []
    for trials in per_seed.values():
        best, curve = None, []
        for t in trials:
            v = _num((t["val"] or {}).get(metric)) if t["state"] == "COMPLETE" else None
            if v is not None and (best is None or v > best):
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
    metric, info = units["metric"], units["across_seeds"][arm]
    n = len(info["seeds"])
    full = {number: mean for mean, number in _full_trials(units, arm)}
    rows, runs, best = [], 0, None
    for t in info["trials"]:
        runs += len(t["seeds_evaluated"])
        if t["number"] in full and (best is None or full[t["number"]] > best[0]):
            vals = [_num((r["val"] or {}).get(metric), float("-inf")) for rs in units["units"][arm].values()
                    for r in rs if r["number"] == t["number"]]
            best = (full[t["number"]], statistics.stdev(vals) if len(vals) > 1 else 0.0)
        rows.append({"trials": runs / n if n else None, "runs": runs, "best_val_mean": best[0] if best else None,
                     "best_val_std": best[1] if best else None, "seeds": n if best else 0})
    return rows


def analyse(units: dict, *, n_boot: int = N_BOOT, boot_seed: int = BOOT_SEED, level: float = CI_LEVEL) -> dict:
    """Everything the report shows for one study (see the module docstring); JSON-serialisable."""
    metric, arms, best = units["metric"], units["arms"], selected(units)
    summary = _summary(units)
    board = []
    for row in leaderboard(summary):
        arm, per = row["arm"], best[row["arm"]]
        val_mean, val_std = _mean_std([_num((t["val"] or {}).get(metric)) for t in per.values()])
        ece_mean, ece_std = _mean_std([_num(t["test"].get("ece")) for t in per.values()])
        secs = [_num(t["seconds"]) for ts in units["units"][arm].values() for t in _completed(ts)]
        secs = [x for x in secs if x is not None]
        kind = ("tuned across seeds" if arms[arm].get("across_seeds") else "tuned") if arms[arm].get("space") \
            else "fixed"
        board.append({**row, "kind": kind, "val_mean": val_mean,
                      "val_std": val_std, "ece_mean": ece_mean, "ece_std": ece_std,
                      "seconds_per_trial": statistics.fmean(secs) if secs else None,
                      "seconds_total": sum(secs) if secs else None})
    per_seed = [{"arm": arm, "seed": seed, "trial": t["number"], "val": _num((t["val"] or {}).get(metric)),
                 "test": _num(t["test"].get(metric)), "test_ece": _num(t["test"].get("ece"))}
                for arm, per in best.items() for seed, t in per.items()]

    # the reference: the fixed gamma with the best mean validation metric
    fixed = [r for r in board if _is_fixed_gamma(arms[r["arm"]]) and r["val_mean"] is not None]
    reference = max(fixed, key=lambda r: r["val_mean"])["arm"] if fixed else None
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
                           **paired_test(diffs, n_boot=n_boot, seed=seed, level=level)})

    # tuning cost: tuned-gamma curve(s), default policies at one run's cost, the gamma grid at its cost
    tuning = {arm: (_tuning_curve_across(units, arm) if arms[arm].get("across_seeds")
                    else _tuning_curve(units["units"][arm], metric))
              for arm in arms if _is_tuned_gamma(arms[arm])}
    defaults = []
    for arm in arms:
        if _is_default_policy(arms[arm]):
            mean, std = _mean_std([_num((t["val"] or {}).get(metric)) for t in best[arm].values()])
            if mean is not None:
                defaults.append({"arm": arm, "trials": 1, "val_mean": mean, "val_std": std})
    grid_arms = [a for a in arms if _is_fixed_gamma(arms[a])]
    grid_best = []
    for seed in sorted({s for a in grid_arms for s in best[a]}):
        vals = [_num((best[a][seed]["val"] or {}).get(metric)) for a in grid_arms if seed in best[a]]
        vals = [v for v in vals if v is not None]
        if vals:
            grid_best.append(max(vals))
    grid = None
    if grid_best:
        mean, std = _mean_std(grid_best)
        grid = {"arm": f"gamma grid (best of {len(grid_arms)})", "trials": len(grid_arms), "val_mean": mean,
                "val_std": std}

    pareto = None
    if metric == "balanced_accuracy":
        pts = [r for r in board if r["ece_mean"] is not None]
        front = set(pareto_front([(r["mean"], r["ece_mean"]) for r in pts]))
        pareto = [{"arm": r["arm"], "balanced_accuracy": r["mean"], "ece": r["ece_mean"], "front": i in front}
                  for i, r in enumerate(pts)]

    trajectories = {}
    for arm, per in best.items():
        series = {seed: t["gamma"] for seed, t in per.items() if t["gamma"]}
        if series:
            trajectories[arm] = {str(seed): [list(p) for p in traj] for seed, traj in series.items()}

    return {"study": units["study"], "dataset": units["dataset"], "metric": metric, "summary": summary,
            "leaderboard": board, "per_seed": per_seed, "reference": reference, "paired": paired,
            "tuning_cost": {"curves": tuning, "defaults": defaults, "grid": grid}, "pareto": pareto,
            "gamma_trajectories": trajectories, "ci_level": level, "n_boot": n_boot, "boot_seed": boot_seed}


# ----------------------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------------------
def _f(v, digits=3, signed=False):
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def analysis_markdown(a: dict, figures: dict | None = None) -> str:
    """The analysis tables of one study (without the first, minimal leaderboard)."""
    m, lines = a["metric"], []
    lines += [f"#### Leaderboard ({a['dataset']}): mean ± std over seeds", "",
              f"| rank | arm | kind | test {m} | val {m} | test ECE | seeds | completed trials | s / trial |",
              "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(a["leaderboard"], 1):
        ece = "-" if r["ece_mean"] is None else f"{r['ece_mean']:.3f} ± {r['ece_std']:.3f}"
        val = "-" if r["val_mean"] is None else f"{r['val_mean']:.3f} ± {r['val_std']:.3f}"
        lines.append(f"| {i} | {r['arm']} | {r['kind']} | {r['mean']:.3f} ± {r['std']:.3f} | {val} | {ece} | "
                     f"{r['seeds']} | {r['trials']} | {_f(r['seconds_per_trial'], 2)} |")
    lines.append("")
    if a["reference"] is None:
        lines += ["No fixed-gamma arm with results: no paired comparison.", ""]
    else:
        level = round(100 * a["ci_level"])
        lines += [(f"#### Paired by seed against the best fixed gamma, {a['reference']} (chosen by mean validation "
                  f"{m})"), "",
                  (f"| arm | seeds | mean diff (test {m}) | {level}% bootstrap CI | wins / ties / losses | "
                  "Wilcoxon p | min attainable p |"), "|---|---:|---:|---|---:|---:|---:|"]
        for r in a["paired"]:
            ci = "-" if r["ci_low"] is None else f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
            p = _f(r["wilcoxon_p"]) if r["wilcoxon_p"] is not None else (r["note"] or "-")
            lines.append(f"| {r['arm']} | {r['n']} | {_f(r['mean_diff'], signed=True)} | {ci} | "
                         f"{r['wins']} / {r['ties']} / {r['losses']} | {p} | {_f(r['wilcoxon_min_p'])} |")
        n_max = max((r["n"] for r in a["paired"]), default=0)
        lines += ["", (f"Differences are arm minus {a['reference']} on the same seed. Wilcoxon signed-rank: "
                  "scipy.stats.wilcoxon, two-sided, zero differences dropped; with n non-zero differences the "
                  f"exact test cannot give p below 2^(1-n) (n = {n_max}: {wilcoxon_min_p(n_max):.3g}), so with "
                  "few seeds a large p says little and 'significant' is out of reach. Bootstrap: percentile CI "
                  f"of the mean difference, {a['n_boot']} resamples of the seeds, seed {a['boot_seed']} + "
                  "crc32(arm); with few seeds it is narrow and optimistic."), ""]
    tc = a["tuning_cost"]
    if tc["curves"]:
        lines += [f"#### Tuning cost: best-so-far validation {m} against trials (mean over seeds)", ""]
        for arm, rows in tc["curves"].items():
            lines.append(f"- {arm}: " + ", ".join(f"{round(r['trials'], 2):g}: {_f(r['best_val_mean'])}"
                                                  for r in rows if r["trials"] is not None))
        for d in tc["defaults"] + ([tc["grid"]] if tc["grid"] else []):
            lines.append(f"- {d['arm']} at {d['trials']} run(s): {_f(d['val_mean'])} ± {_f(d['val_std'])}")
        if any(r["kind"] == "tuned across seeds" and r["arm"] in tc["curves"] for r in a["leaderboard"]):
            lines.append("- Arms tuned across seeds: x is training runs per seed (a pruned configuration costs "
                         "the seeds it ran), y the mean validation metric over every seed of the best configuration "
                         "so far that evaluated every seed.")
        lines.append("")
    if a["pareto"]:
        lines += ["#### Pareto front: test balanced accuracy (higher) vs test ECE (lower), arm means", "",
                  "| arm | balanced accuracy | ECE | on the front |", "|---|---:|---:|:---:|"]
        for r in sorted(a["pareto"], key=lambda r: (not r["front"], -r["balanced_accuracy"])):
            lines.append(f"| {r['arm']} | {r['balanced_accuracy']:.3f} | {r['ece']:.3f} | "
                         f"{'yes' if r['front'] else ''} |")
        lines.append("")
    if not a["gamma_trajectories"]:
        lines += ["Gamma trajectories: not stored in this study's trials (skipped).", ""]
    for caption, name in (figures or {}).items():
        lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines)


def _plots(a: dict, out: Path) -> dict:
    """PNG figures of one study into ``out``; returns ``{caption: file name}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures, stem, m = {}, a["study"].replace("/", "_"), a["metric"]

    def save(fig, suffix: str, caption: str) -> None:
        fig.tight_layout()
        name = f"{stem}_{suffix}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        figures[caption] = name

    tc = a["tuning_cost"]
    if tc["curves"] or tc["defaults"] or tc["grid"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, rows in tc["curves"].items():
            pts = [(r["trials"], r["best_val_mean"]) for r in rows if r["best_val_mean"] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{arm} (best so far)")
        for i, d in enumerate(tc["defaults"] + ([tc["grid"]] if tc["grid"] else []), len(tc["curves"])):
            color = f"C{i % 10}"
            ax.axhline(d["val_mean"], ls="--", lw=0.8, alpha=0.7, color=color)
            ax.plot([d["trials"]], [d["val_mean"]], marker="s", ls="", color=color, label=f"{d['arm']} (1 config)"
                    if d["trials"] == 1 else d["arm"])
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(xlabel="trials (runs)", ylabel=f"validation {m}", title=f"{a['study']}: tuning cost")
        ax.legend(fontsize=6)
        save(fig, "tuning_cost", "Tuning cost")
    if a["pareto"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        front = sorted((r for r in a["pareto"] if r["front"]), key=lambda r: r["ece"])
        for r in a["pareto"]:
            ax.scatter(r["ece"], r["balanced_accuracy"], color="C3" if r["front"] else "C0", s=18)
            ax.annotate(r["arm"], (r["ece"], r["balanced_accuracy"]), fontsize=6)
        if front:
            ax.plot([r["ece"] for r in front], [r["balanced_accuracy"] for r in front], color="C3", lw=1)
        ax.set(xlabel="test ECE (lower is better)", ylabel="test balanced accuracy",
               title=f"{a['study']}: Pareto front")
        save(fig, "pareto", "Pareto front")
    if a["gamma_trajectories"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (arm, series) in enumerate(a["gamma_trajectories"].items()):
            for j, traj in enumerate(series.values()):
                ax.plot([p[0] for p in traj], [p[1] for p in traj], color=f"C{i % 10}", lw=1,
                        label=arm if j == 0 else None)
        ax.set(xlabel="epoch", ylabel="gamma (mean over classes)", title=f"{a['study']}: gamma trajectories")
        ax.legend(fontsize=6)
        save(fig, "gamma", "Gamma trajectories")
    return figures


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})


def full_markdown(analyses: list[dict], figures: dict | None = None) -> str:
    """The minimal leaderboard of each study first, then its analysis."""
    parts = []
    for a in analyses:
        parts.append(markdown(a["summary"], a["study"]))
        parts.append("")
        parts.append(analysis_markdown(a, (figures or {}).get(a["study"])))
    return "\n".join(parts)


def write_outputs(analyses: list[dict], out_dir) -> dict:
    """Writes ``report.md``, ``leaderboard.csv``, ``per_seed.csv``, ``paired.csv``, ``tuning_cost.csv``,
    ``pareto.csv`` (multiclass), ``results.json`` and PNG figures into ``out_dir``; returns
    ``{"dir", "files", "figures": {study: {caption: file}}}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {a["study"]: _plots(a, out) for a in analyses}
    (out / "report.md").write_text(full_markdown(analyses, figures) + "\n")
    tables = {
        "leaderboard.csv": [{"study": a["study"], "dataset": a["dataset"], "metric": a["metric"], "rank": i, **r}
                            for a in analyses for i, r in enumerate(a["leaderboard"], 1)],
        "per_seed.csv": [{"study": a["study"], **r} for a in analyses for r in a["per_seed"]],
        "paired.csv": [{"study": a["study"], **r} for a in analyses for r in a["paired"]],
        "tuning_cost.csv": [{"study": a["study"], "arm": arm, **r} for a in analyses
                            for arm, rows in a["tuning_cost"]["curves"].items() for r in rows]
                           + [{"study": a["study"], "arm": d["arm"], "trials": d["trials"],
                               "best_val_mean": d["val_mean"], "best_val_std": d["val_std"]}
                              for a in analyses for d in a["tuning_cost"]["defaults"]
                              + ([a["tuning_cost"]["grid"]] if a["tuning_cost"]["grid"] else [])],
        "pareto.csv": [{"study": a["study"], **r} for a in analyses for r in (a["pareto"] or [])],
    }
    files = ["report.md"]
    for name, rows in tables.items():
        if rows:
            _write_csv(out / name, rows)
            files.append(name)
    (out / "results.json").write_text(json.dumps(analyses, indent=1, default=str))
    files.append("results.json")
    files += [f for figs in figures.values() for f in figs.values()]
    return {"dir": str(out), "files": files, "figures": figures}


# ----------------------------------------------------------------------------------------------------------
# W&B: our own small logger (not optuna-integration's deprecated callback)
# ----------------------------------------------------------------------------------------------------------
class WandbReportLogger:
    """Logs a report's leaderboards, paired tests and figures to one W&B run. ``mode`` must be given
    ("disabled", "offline", "online"); a W&B error warns and turns logging off, it never stops the report."""

    def __init__(self, mode: str, *, project: str = "adaptive_focal-sweeps", name: str | None = None,
                 dir=None, config: dict | None = None) -> None:
        if mode not in ("disabled", "offline", "online"):
            raise ValueError(f"wandb mode must be disabled, offline or online, got {mode!r}")
        import wandb

        self._wandb, self._failed = wandb, False
        self.run = wandb.init(project=project, name=name, mode=mode, dir=None if dir is None else str(dir),
                              config=dict(config or {}), reinit="finish_previous")

    def _guard(self, fn, *args):
        if self._failed:
            return
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001 - W&B must never stop the report
            self._failed = True
            warnings.warn(f"W&B logging failed ({err!r}); not logging the rest", RuntimeWarning, stacklevel=3)

    def table(self, key: str, rows: list[dict]) -> None:
        if not rows:
            return
        keys = list(dict.fromkeys(k for r in rows for k in r))
        data = [[json.dumps(r.get(k)) if isinstance(r.get(k), (list, dict)) else r.get(k) for k in keys]
                for r in rows]
        self._guard(lambda: self.run.log({key: self._wandb.Table(columns=keys, data=data)}))

    def image(self, key: str, path) -> None:
        self._guard(lambda: self.run.log({key: self._wandb.Image(str(path))}))

    def analyses(self, analyses: list[dict], written: dict | None = None) -> None:
        for a in analyses:
            self.table(f"{a['study']}/leaderboard", a["leaderboard"])
            self.table(f"{a['study']}/paired", a["paired"])
            if a["pareto"]:
                self.table(f"{a['study']}/pareto", a["pareto"])
            if written:
                for caption, name in written["figures"].get(a["study"], {}).items():
                    self.image(f"{a['study']}/{caption}", Path(written["dir"]) / name)

    def finish(self) -> None:
        self._guard(self.run.finish)


# ----------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------
def run_report(studies, storage: str | None = None, *, out=None, wandb_mode: str | None = None,
               n_boot: int = N_BOOT, boot_seed: int = BOOT_SEED, connect_timeout: int = 5) -> tuple:
    """Analyses ``studies`` (names in ``storage``, or each in its default journal file); writes ``out`` when
    given, logs to W&B when ``wandb_mode`` is given; returns ``(markdown, analyses, written or None)``."""
    analyses = []
    for name in studies:
        st = _storage_for(name, storage, connect_timeout)
        analyses.append(analyse(load_units(st, name), n_boot=n_boot, boot_seed=boot_seed))
    written = write_outputs(analyses, out) if out is not None else None
    if wandb_mode is not None:
        logger = WandbReportLogger(wandb_mode, name=f"report {' '.join(studies)}",
                                   dir=out, config={"studies": list(studies)})
        logger.analyses(analyses, written)
        logger.finish()
    return full_markdown(analyses), analyses, written


README_START, README_END = "<!-- leaderboards:start -->", "<!-- leaderboards:end -->"


def readme_block(analyses: list[dict], top: int = 12) -> str:
    """Per study: the ``top`` arms of the leaderboard with their paired difference from the best fixed gamma (the
    block ``--readme`` writes into a README)."""
    parts = []
    for a in analyses:
        paired = {r["arm"]: r for r in a["paired"]}
        seeds = max((r["seeds"] for r in a["leaderboard"]), default=0)
        parts.append(f"**{a['study']}** (test {a['metric']}, mean ± std over {seeds} seeds; best fixed gamma by "
                     f"validation: `{a['reference']}`; difference: paired by seed, 95% bootstrap CI)\n")
        parts.append(f"| rank | arm | test {a['metric']} | vs best fixed gamma | W/T/L | completed trials |")
        parts.append("|---:|---|---:|---:|---:|---:|")
        for rank, row in enumerate(a["leaderboard"][:top], 1):
            p = paired.get(row["arm"])
            if row["arm"] == a["reference"]:
                diff, wtl = "(reference)", ""
            elif p is None or not p["n"]:
                diff, wtl = "—", ""
            else:
                ci = "" if p["ci_low"] is None else f" [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]"
                diff, wtl = f"{p['mean_diff']:+.3f}{ci}", f"{p['wins']}/{p['ties']}/{p['losses']}"
            parts.append(f"| {rank} | {row['arm']} | {_f(row['mean'])} ± {_f(row['std'])} | {diff} | {wtl} "
                         f"| {row['trials']} |")
        parts.append("")
    return "\n".join(parts).rstrip()


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sweeps.report", description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="study names (one data set each)")
    parser.add_argument("--storage", help="journal file or database URL holding the studies, a sweeps.export "
                                          "file (<study>.json.gz) or a folder of them (default: each study's "
                                          "runs/sweeps/<study>.log)")
    parser.add_argument("--out", help="folder for report.md, CSV, JSON and PNG files")
    parser.add_argument("--wandb", choices=("disabled", "offline", "online"),
                        help="also log the tables and figures to W&B in this mode")
    parser.add_argument("--n-boot", type=int, default=N_BOOT)
    parser.add_argument("--boot-seed", type=int, default=BOOT_SEED)
    parser.add_argument("--readme", help=f"also write each study's top arms between {README_START} and "
                                         f"{README_END} in this file (e.g. sweeps/README.md)")
    parser.add_argument("--top", type=int, default=12, help="arms per study in the --readme block (default 12)")
    args = parser.parse_args(argv)
    if args.readme is not None:
        text = Path(args.readme).read_text() if Path(args.readme).is_file() else ""
        if README_START not in text or README_END not in text:
            print(f"sweeps.report: error: --readme {args.readme!r} has no {README_START} ... {README_END} block",
                  file=sys.stderr)
            return 2
    try:
        text, analyses, written = run_report(args.studies, args.storage, out=args.out, wandb_mode=args.wandb,
                                             n_boot=args.n_boot, boot_seed=args.boot_seed)
    except (ValueError, RuntimeError) as err:
        print(f"sweeps.report: error: {err}", file=sys.stderr)
        return 2
    if args.readme is not None:
        from research.seed_table import fill_block

        fill_block(args.readme, README_START, README_END, readme_block(analyses, args.top))
    print(text)
    if written:
        print(f"\nwrote {', '.join(written['files'])} to {written['dir']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
