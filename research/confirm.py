"""The confirmatory analysis fixed by research/preregistration.md, on the ``*-confirm`` exports.

Per study (every arm untuned, one run per seed, seeds 1000-1019), with differences FLSD-53 minus the comparator,
paired by seed:

1. Primary, against *grid* (per seed the fixed gamma with the best validation headline metric, ties to the smaller
   gamma): the paired t 90% interval of the mean test headline difference and the verdict at the pre-registered
   margin of 0.01: *matches* (interval inside [-0.01, 0.01]: TOST at 0.05 per side), *not worse* (its lower end
   above -0.01), *worse* (its upper end below -0.01) or *inconclusive*.
2. Secondary, against grid, gamma = 2, cross-entropy (gamma = 0) and logit adjustment: paired t 95% intervals and
   two-sided p-values with Holm's correction across the comparisons of the study's table.
3. Calibration against cross-entropy (multiclass studies): test ECE before and after temperature scaling, paired t
   95% intervals, Holm across the two.

    python -m research.confirm [--results sweeps/results/trials] [--json research/results/confirm.json]
                               [--readme research/README.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from adaptive_focal.compare.analysis import holm, paired_t, tost
from adaptive_focal.compare.export import units_from_export

from .outputs import publish

POLICY = "policy=flsd53"
MARGIN, ALPHA, LEVEL = 0.01, 0.05, 0.95
STUDIES = ("digits-lt-confirm", "digits-lt-confirm-e30", "digits-lt-confirm-e60", "gauss-lt-confirm",
           "mnist1d-lt-confirm", "dense-det-confirm", "seg-toy-confirm")
COMPARATORS = (("grid", "grid (best of 6 by validation)"), ("gamma=2", "gamma = 2"), ("gamma=0", "cross-entropy"),
               ("baseline=logit_adjusted", "logit adjustment"))
START, END = "<!-- confirm:start -->", "<!-- confirm:end -->"
RESULTS = Path(__file__).resolve().parents[1] / "sweeps" / "results" / "trials"


def _one_run(units: dict, arm: str) -> dict:
    """seed -> the arm's single completed trial (every confirmatory arm is untuned)."""
    out = {}
    for seed, trials in units["units"].get(arm, {}).items():
        done = [t for t in trials if t["state"] == "COMPLETE" and t["test"] is not None]
        if done:
            out[seed] = done[0]
    return out


def grid_choice(units: dict) -> dict:
    """seed -> the grid's trial chosen on validation: the best validation headline metric among the six fixed
    gammas, ties to the smaller gamma."""
    metric = units["metric"]
    grid = {a: _one_run(units, a) for a, rec in units["arms"].items()
            if a.startswith("gamma=") and not rec.get("space")}
    seeds = set.intersection(*(set(runs) for runs in grid.values())) if grid else set()
    out = {}
    for seed in sorted(seeds):
        options = [(runs[seed]["val"][metric], -units["arms"][a]["config"]["gamma"], a) for a, runs in grid.items()]
        _, _, arm = max(options)
        out[seed] = {**grid[arm][seed], "arm": arm}
    return out


def verdict(interval: tuple, margin: float = MARGIN) -> str:
    """The pre-registered reading of the 90% interval (low, high) of the mean difference."""
    low, high = interval
    if low is None:
        return "no data"
    if -margin < low and high < margin:
        return "matches"
    if low > -margin:
        return "not worse"
    if high < -margin:
        return "worse"
    return "inconclusive"


def analyse_study(units: dict) -> dict:
    metric = units["metric"]
    policy = _one_run(units, POLICY)
    runs = {"grid": grid_choice(units)}
    for arm, _ in COMPARATORS[1:]:
        if arm in units["arms"]:
            runs[arm] = _one_run(units, arm)
    arms = {POLICY: policy, **runs}
    means = {a: {"mean": statistics.fmean(t["test"][metric] for t in r.values()),
                 "std": statistics.stdev(t["test"][metric] for t in r.values()) if len(r) > 1 else 0.0,
                 "seeds": len(r)} for a, r in arms.items() if r}

    def diffs(other: dict, key: str = metric) -> list:
        seeds = sorted(s for s in policy if s in other and policy[s]["test"].get(key) is not None
                       and other[s]["test"].get(key) is not None)
        return [policy[s]["test"][key] - other[s]["test"][key] for s in seeds]

    primary_d = diffs(runs["grid"])
    equivalence = tost(primary_d, MARGIN, ALPHA)
    primary = {"n": len(primary_d), "mean_diff": statistics.fmean(primary_d) if primary_d else None,
               "ci90": [equivalence["low"], equivalence["high"]], "tost_p": equivalence["p"],
               "verdict": verdict((equivalence["low"], equivalence["high"])),
               "grid_gammas": {str(s): t["arm"] for s, t in runs["grid"].items()}}
    secondary = []
    for arm, label in COMPARATORS:
        if arm not in runs:
            continue
        t = paired_t(diffs(runs[arm]), level=LEVEL)
        secondary.append({"comparator": arm, "label": label, "n": t["n"], "mean_diff": t["mean"],
                          "ci95": [t["low"], t["high"]], "p": t["p"]})
    for row, p in zip(secondary, holm([r["p"] for r in secondary])):
        row["p_holm"] = p
    calibration = []
    if "ece" in (next(iter(policy.values()))["test"] if policy else {}):
        for key, label in (("ece", "ECE"), ("ece_ts", "ECE after temperature scaling")):
            t = paired_t(diffs(runs["gamma=0"], key), level=LEVEL)
            calibration.append({"metric": key, "label": label, "n": t["n"], "mean_diff": t["mean"],
                                "ci95": [t["low"], t["high"]], "p": t["p"],
                                "policy_mean": statistics.fmean(x["test"][key] for x in policy.values()),
                                "ce_mean": statistics.fmean(x["test"][key] for x in runs["gamma=0"].values())})
        for row, p in zip(calibration, holm([r["p"] for r in calibration])):
            row["p_holm"] = p
    return {"study": units["study"], "dataset": units["meta"].get("dataset"), "metric": metric,
            "overrides": units["meta"].get("overrides", {}), "means": means, "primary": primary,
            "secondary": secondary, "calibration": calibration}


def run(results: Path = RESULTS) -> dict:
    missing = [s for s in STUDIES if not (results / f"{s}.json.gz").is_file()]
    found = [analyse_study(units_from_export(results / f"{s}.json.gz", s)) for s in STUDIES if s not in missing]
    counts = {}
    for a in found:
        counts[a["primary"]["verdict"]] = counts.get(a["primary"]["verdict"], 0) + 1
    return {"policy": POLICY, "margin": MARGIN, "alpha": ALPHA, "studies": found, "missing": missing,
            "verdicts": counts}


def _f(v, signed=True, digits=3) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def markdown(out: dict) -> str:
    lines = ["Primary: FLSD-53 (one untuned run) minus the grid's best gamma chosen on validation (six runs), test "
             f"headline metric, 20 paired seeds; margin ±{MARGIN}, 90% paired t interval.", "",
             "| study | metric | FLSD-53 | grid | difference | 90% interval | verdict |",
             "|---|---|---:|---:|---:|---|---|"]
    for a in out["studies"]:
        p, m = a["primary"], a["means"]
        lines.append(f"| {a['study']} | {a['metric']} | {m[POLICY]['mean']:.3f} ± {m[POLICY]['std']:.3f} | "
                     f"{m['grid']['mean']:.3f} ± {m['grid']['std']:.3f} | {_f(p['mean_diff'])} | "
                     f"[{_f(p['ci90'][0])}, {_f(p['ci90'][1])}] | {p['verdict']} |")
    lines += ["", "Secondary: FLSD-53 minus each comparator, paired t 95% intervals, p-values Holm-adjusted across "
                  "the comparisons of each study.", "",
              "| study | comparator | comparator mean | difference | 95% interval | p (Holm) |",
              "|---|---|---:|---:|---|---:|"]
    for a in out["studies"]:
        for r in a["secondary"]:
            mean = a["means"].get(r["comparator"], {}).get("mean")
            lines.append(f"| {a['study']} | {r['label']} | {_f(mean, False)} | {_f(r['mean_diff'])} | "
                         f"[{_f(r['ci95'][0])}, {_f(r['ci95'][1])}] | {_f(r['p_holm'], False)} |")
    cal = [(a, r) for a in out["studies"] for r in a["calibration"]]
    if cal:
        lines += ["", "Calibration: FLSD-53 minus cross-entropy, test ECE, paired t 95% intervals, Holm across the "
                      "two metrics of each study.", "",
                  "| study | metric | FLSD-53 | cross-entropy | difference | 95% interval | p (Holm) |",
                  "|---|---|---:|---:|---:|---|---:|"]
        for a, r in cal:
            lines.append(f"| {a['study']} | {r['label']} | {r['policy_mean']:.3f} | {r['ce_mean']:.3f} | "
                         f"{_f(r['mean_diff'])} | [{_f(r['ci95'][0])}, {_f(r['ci95'][1])}] | "
                         f"{_f(r['p_holm'], False)} |")
    if out["missing"]:
        lines += ["", f"Not run yet: {', '.join(out['missing'])}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.confirm", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--json", help="write the analysis here")
    parser.add_argument("--readme", help=f"write the tables between {START} and {END} in this file")
    args = parser.parse_args(argv)
    out = run(Path(args.results))
    return publish("research.confirm", markdown(out), out, json_path=args.json, readme=args.readme, start=START,
                   end=END)


if __name__ == "__main__":
    sys.exit(main())
