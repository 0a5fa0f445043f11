"""Does an adaptive gamma add anything to logit adjustment? The analysis of the ``*-prior`` studies (issue 16).

Every arm of a study (sweeps/studies/prior.py) is compared with logit adjustment alone (``baseline=logit_adjusted``,
the reference), paired by seed: per seed the arm's run (a tuned arm: its trial with the best validation headline
metric, first by number on ties) minus the reference's run on the same seed, on the test set. For each arm and
metric the paired t 95% interval of the mean difference and its two-sided p-value, Holm-adjusted across the arms of
the study's table (one family per study and metric). The metrics: the data set's headline metric (balanced
accuracy; seg-toy mIoU), few-shot recall (``recall_few``), ECE and ECE after temperature scaling (multiclass data
sets only; seg-toy stores none of the last three). Higher is better for the first two, lower for the ECEs.

A derived arm, ``la+grid``, is what tuning the focal term's gamma over the grid buys: per seed the run with the
best validation headline metric among LA alone (gamma 0) and the fixed ``la+gamma=<g>`` arms (ties to the smaller
gamma), costing all of their runs. The cost column is training runs per seed.

A reduced study and its companion (``COMPANIONS``: the study that ran the rest of the full design beside it, on the
same seeds, with LA alone again) make one table: each companion arm is paired against the companion's own LA alone
(training is deterministic given the seed, so the two references should agree; ``reference_agreement`` records
the largest difference), and Holm's family is the whole table. The learned controllers' fair studies
(``LEARNED``, every arm holding out the same slice of the training set) are tables of their own, against their
own LA alone, which holds the slice out too; so are AdaFocal's fair studies (``ADAFOCAL``: its end-of-epoch
statistics on the balanced validation set, as published, or on the held-out slice, ``[slice]``).

These studies were not pre-registered: the analysis is exploratory, and the intervals are read as effect sizes, not
as confirmations.

    python -m research.prior [--results sweeps/results/trials] [--json research/results/prior.json]
                             [--readme research/README.md]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from adaptive_focal.compare.analysis import holm, paired_t
from adaptive_focal.compare.export import read_export, units_from_export
from adaptive_focal.compare.results import selected

from .outputs import publish

REFERENCE = "baseline=logit_adjusted"
GRID = "la+grid"
POLICY = "la+policy=flsd53"
TUNED_GAMMA = "la+gamma=tpe"
CB_CE = "baseline=cb_ce"
LEVEL, ALPHA = 0.95, 0.05
STUDIES = ("digits-lt-prior", "gauss-lt-prior", "mnist1d-lt-prior", "seg-toy-prior", "digits-lt-prior-long",
           "gauss-lt-prior-long", "mnist1d-lt-prior-long", "seg-toy-prior-long")
#: reduced study -> the study that ran the rest of its full design (read into the same table)
COMPANIONS = {"mnist1d-lt-prior": "mnist1d-lt-prior-policies", "seg-toy-prior": "seg-toy-prior-policies",
              "gauss-lt-prior-long": "gauss-lt-prior-long-policies",
              "mnist1d-lt-prior-long": "mnist1d-lt-prior-long-policies",
              "seg-toy-prior-long": "seg-toy-prior-long-policies"}
#: the learned controllers on LA, every arm holding out the same slice of the training set
LEARNED = tuple(f"{d}-prior{long}-learned" for long in ("", "-long")
                for d in ("digits-lt", "gauss-lt", "mnist1d-lt", "seg-toy"))
#: AdaFocal on LA reading its statistics on the validation set or on the held-out slice, every arm holding it out
REPLICATION = "gauss-lt-prior-long-adafocal-replication"
ADAFOCAL = ("gauss-lt-prior-adafocal", "gauss-lt-prior-long-adafocal", REPLICATION)
#: the replication's primary arms (research/preregistration_adafocal.md): Holm across these two
PRIMARY = ("la+policy=adafocal[slice]", "la+policy=adafocal+tpe[slice]")
#: metric key -> (label, higher is better); the headline metric comes first, from the export
SECONDARY = (("recall_few", "few-shot recall", True), ("ece", "ECE", False), ("ece_ts", "ECE after TS", False))
HEADLINE_LABELS = {"balanced_accuracy": "balanced accuracy", "miou": "mIoU", "map": "mAP"}
START, END = "<!-- prior:start -->", "<!-- prior:end -->"
RESULTS = Path(__file__).resolve().parents[1] / "sweeps" / "results" / "trials"


def _la_gamma(record: dict) -> float | None:
    """The focal term's fixed gamma of a fixed logit-adjusted arm without a policy (0 for LA alone); None for
    any other arm."""
    config = record.get("config") or {}
    if record.get("space") or config.get("loss") != "logit_adjusted" or config.get("policy", "none") != "none":
        return None
    return float((config.get("loss_kwargs") or {}).get("gamma", 0.0))


def grid_choice(units: dict, chosen: dict) -> dict:
    """seed -> the grid's run chosen on validation: among LA alone and the fixed ``la+gamma=<g>`` arms, the run
    with the best validation headline metric, ties to the smaller gamma; only seeds every grid arm ran. The run
    carries ``arm`` and ``gamma``."""
    metric = units["metric"]
    grid = {arm: _la_gamma(rec) for arm, rec in units["arms"].items() if _la_gamma(rec) is not None}
    if len(grid) < 2:
        return {}
    seeds = set.intersection(*(set(chosen.get(arm, {})) for arm in grid))
    out = {}
    for seed in sorted(seeds):
        options = []
        for arm, gamma in grid.items():
            value = (chosen[arm][seed]["val"] or {}).get(metric)
            options.append((-math.inf if value is None or not math.isfinite(value) else value, -gamma, arm))
        _, neg_gamma, arm = max(options)
        out[seed] = {**chosen[arm][seed], "arm": arm, "gamma": -neg_gamma}
    return out


def _runs_per_seed(units: dict, arm: str) -> float:
    per = units["units"].get(arm, {})
    return sum(len(ts) for ts in per.values()) / len(per) if per else 0.0


def _value(run: dict, key: str):
    v = (run.get("test") or {}).get(key)
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def differences(runs: dict, reference: dict, key: str) -> list:
    """``[(seed, arm minus reference), ...]`` of test ``key`` over the seeds where both runs have it."""
    out = []
    for seed in sorted(set(runs) & set(reference)):
        a, b = _value(runs[seed], key), _value(reference[seed], key)
        if a is not None and b is not None:
            out.append((seed, a - b))
    return out


def _reference(units: dict) -> tuple[dict, dict]:
    """``(selected runs of every arm, the reference's runs)`` of a study, or a ValueError naming what is wrong."""
    metric = units["metric"]
    if units.get("direction", "maximize") != "maximize":
        raise ValueError(f"study {units['study']!r}: its headline metric {metric!r} must be maximised, as the "
                         "*-prior studies' are")
    if REFERENCE not in units["arms"]:
        raise ValueError(f"study {units['study']!r} has no arm {REFERENCE!r} (logit adjustment alone), the "
                         f"reference of research.prior; its arms: {', '.join(units['arms'])}")
    chosen = selected(units)
    if not chosen.get(REFERENCE):
        raise ValueError(f"study {units['study']!r}: the reference arm {REFERENCE!r} has no completed run")
    return chosen, chosen[REFERENCE]


def _agreement(reference: dict, other: dict) -> dict:
    """How far two studies' LA-alone runs differ: seeds in common and the largest absolute difference of any
    stored test metric."""
    seeds = sorted(set(reference) & set(other))
    diffs = [abs(a - b) for s in seeds for k in (reference[s].get("test") or {})
             if (a := _value(reference[s], k)) is not None and (b := _value(other[s], k)) is not None]
    return {"seeds": len(seeds), "max_abs_diff": max(diffs) if diffs else None}


def analyse_study(units: dict, companions=()) -> dict:
    """The table of one study: every arm but the reference (and the derived grid arm after the fixed gammas),
    paired by seed against the reference; with ``companions`` (units of studies that ran more arms of the same
    design: same data set, overrides and metric, an LA alone of their own), their arms too, each paired against
    its own study's LA alone, in one Holm family. The baselines come last."""
    metric = units["metric"]
    chosen, reference = _reference(units)
    grid = grid_choice(units, chosen)
    grid_members = [a for a, rec in units["arms"].items() if _la_gamma(rec) is not None]
    order, runs, cost = [], {}, {}
    for arm in units["arms"]:
        if arm == REFERENCE:
            continue
        if arm == TUNED_GAMMA and grid:  # the grid chosen on validation, next to the fixed gammas
            order.append(GRID)
        order.append(arm)
        runs[arm], cost[arm] = chosen.get(arm, {}), _runs_per_seed(units, arm)
    if grid:
        if GRID not in order:
            order.append(GRID)
        runs[GRID], cost[GRID] = grid, sum(_runs_per_seed(units, a) for a in grid_members)
    refs = dict.fromkeys(order, reference)
    agreement, all_units = {}, [units]
    for comp in companions:
        for field in ("dataset", "overrides"):
            if comp["meta"].get(field) != units["meta"].get(field):
                raise ValueError(f"study {comp['study']!r} cannot join {units['study']!r}: its {field} "
                                 f"{comp['meta'].get(field)!r} differs from {units['meta'].get(field)!r}")
        if comp["metric"] != metric:
            raise ValueError(f"study {comp['study']!r} cannot join {units['study']!r}: its metric "
                             f"{comp['metric']!r} differs from {metric!r}")
        comp_chosen, comp_reference = _reference(comp)
        agreement[comp["study"]] = _agreement(reference, comp_reference)
        for arm in comp["arms"]:
            if arm == REFERENCE:
                continue
            if arm in runs:
                raise ValueError(f"arm {arm!r} is in both {units['study']!r} and {comp['study']!r}")
            order.append(arm)
            runs[arm], cost[arm], refs[arm] = comp_chosen.get(arm, {}), _runs_per_seed(comp, arm), comp_reference
        all_units.append(comp)
    order.sort(key=lambda arm: arm.startswith("baseline="))  # stable: the baselines last, the rest in order
    metrics = [(metric, HEADLINE_LABELS.get(metric, metric), True)]
    present = {k for r in reference.values() for k in (r.get("test") or {})}
    metrics += [m for m in SECONDARY if m[0] in present]

    rows = []
    for arm in order:
        row = {"arm": arm, "runs_per_seed": cost[arm], "seeds": len(runs[arm]), "mean": {}, "diff": {}}
        for key, _, _ in metrics:
            values = [v for v in (_value(r, key) for r in runs[arm].values()) if v is not None]
            row["mean"][key] = statistics.fmean(values) if values else None
            pairs = differences(runs[arm], refs[arm], key)
            t = paired_t([d for _, d in pairs], level=LEVEL)
            row["diff"][key] = {"n": t["n"], "mean": t["mean"], "low": t["low"], "high": t["high"], "p": t["p"]}
        rows.append(row)
    for key, _, _ in metrics:  # Holm across the arms of the table, per metric
        for row, p in zip(rows, holm([r["diff"][key]["p"] for r in rows])):
            row["diff"][key]["p_holm"] = p
    ref_means = {key: statistics.fmean(v for v in (_value(r, key) for r in reference.values()) if v is not None)
                 if any(_value(r, key) is not None for r in reference.values()) else None for key, _, _ in metrics}
    seconds = [t["seconds"] for u in all_units for per in u["units"].values() for ts in per.values() for t in ts
               if isinstance(t.get("seconds"), (int, float))]
    return {"study": units["study"], "companions": [c["study"] for c in companions],
            "reference_agreement": agreement, "dataset": units["meta"].get("dataset"), "metric": metric,
            "overrides": units["meta"].get("overrides", {}), "metrics": [list(m) for m in metrics],
            "seconds": {"runs": len(seconds), "median_per_run": statistics.median(seconds) if seconds else None,
                        "total": sum(seconds)},
            "reference": {"arm": REFERENCE, "seeds": len(reference), "mean": ref_means},
            "grid_gammas": {str(s): r["gamma"] for s, r in grid.items()},
            "tuned_gammas": _tuned_gammas(units, chosen), "rows": rows}


def _tuned_gammas(units: dict, chosen: dict) -> dict:
    """seed -> the gamma of ``la+gamma=tpe``'s selected trial (from the export's trial parameters), if stored."""
    params = units.get("params", {}).get(TUNED_GAMMA, {})
    return {str(s): params.get((s, r["number"])) for s, r in chosen.get(TUNED_GAMMA, {}).items()
            if params.get((s, r["number"])) is not None}


def load(path: Path, study: str) -> dict:
    """The units of an export, with ``params``: arm -> {(seed, trial number): sampled gamma} of ``la+gamma=tpe``."""
    units = units_from_export(path, study)
    params: dict = {}
    for t in read_export(path)["trials"]:
        if t["arm"] == TUNED_GAMMA and "gamma" in (t.get("params") or {}):
            params.setdefault(t["arm"], {})[(t["seed"], t["number"])] = t["params"]["gamma"]
    units["params"] = params
    return units


def replication(study: dict) -> list[dict]:
    """The pre-registered primary analysis of the replication (research/preregistration_adafocal.md): for each
    :data:`PRIMARY` arm the paired difference from LA alone on the headline metric, Holm's correction across the
    two, and whether it replicates (Holm-adjusted p below :data:`ALPHA` and a positive mean difference)."""
    metric = study["metric"]
    rows = {r["arm"]: r for r in study["rows"]}
    missing = [arm for arm in PRIMARY if arm not in rows]
    if missing:
        raise ValueError(f"study {study['study']!r} lacks the pre-registered arms {', '.join(missing)}")
    diffs = [rows[arm]["diff"][metric] for arm in PRIMARY]
    out = []
    for arm, d, p_holm in zip(PRIMARY, diffs, holm([d["p"] for d in diffs])):
        out.append({"arm": arm, "n": d["n"], "mean": d["mean"], "low": d["low"], "high": d["high"], "p": d["p"],
                    "p_holm": p_holm,
                    "replicates": p_holm is not None and p_holm < ALPHA and d["mean"] is not None and d["mean"] > 0})
    return out


def run(results: Path = RESULTS, studies=STUDIES, companions=None, learned=LEARNED, adafocal=ADAFOCAL) -> dict:
    """The analysis of every export found in ``results``: ``studies`` (each with its companion from
    ``companions``, default :data:`COMPANIONS`, when exported) and the fair studies, ``learned`` and
    ``adafocal``; ``missing`` lists the studies without an export."""
    results = Path(results)
    if not results.is_dir():
        raise ValueError(f"results folder {str(results)!r} does not exist")
    companions = COMPANIONS if companions is None else companions

    def path(study: str) -> Path:
        return results / f"{study}.json.gz"

    wanted = [*studies, *(companions[s] for s in studies if s in companions), *learned, *adafocal]
    missing = [s for s in wanted if not path(s).is_file()]
    found = [analyse_study(load(path(s), s), [load(path(c), c) for c in [companions.get(s)] if c and c not in missing])
             for s in studies if s not in missing]
    fair_adafocal = [analyse_study(load(path(s), s)) for s in adafocal if s not in missing]
    return {"reference": REFERENCE, "level": LEVEL, "alpha": ALPHA, "exploratory": True, "studies": found,
            "learned": [analyse_study(load(path(s), s)) for s in learned if s not in missing],
            "adafocal": fair_adafocal,
            "replication": next((replication(s) for s in fair_adafocal if s["study"] == REPLICATION), None),
            "missing": missing}


# ----------------------------------------------------------------------------------------------------------
# markdown
# ----------------------------------------------------------------------------------------------------------
def _f(v, signed=True, digits=3) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _p(v) -> str:
    if v is None:
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _cell(d: dict) -> str:
    """``+0.012 [-0.003, +0.027]``"""
    if d["mean"] is None:
        return "-"
    return f"{_f(d['mean'])} [{_f(d['low'])}, {_f(d['high'])}]"


def _verdict(d: dict, higher: bool) -> str:
    """better / worse (Holm-adjusted p below ALPHA, by the sign of the difference) or ``~``."""
    if d.get("p_holm") is None or d["p_holm"] >= ALPHA:
        return "~"
    return "better" if (d["mean"] > 0) == higher else "worse"


def _counts(study: dict, key: str, higher: bool) -> str:
    verdicts = [_verdict(r["diff"][key], higher) for r in study["rows"]]
    return f"{verdicts.count('better')} / {verdicts.count('worse')} of {len(verdicts)}"


def _best(study: dict, key: str) -> dict | None:
    rows = [r for r in study["rows"] if r["diff"][key]["mean"] is not None]
    return max(rows, key=lambda r: r["diff"][key]["mean"]) if rows else None


def _row(study: dict, arm: str) -> dict | None:
    return next((r for r in study["rows"] if r["arm"] == arm), None)


def study_label(study: dict) -> str:
    """The study's name, with its companions' suffixes: ``mnist1d-lt-prior + -policies``."""
    return " + ".join([study["study"], *(c.removeprefix(study["study"]) for c in study.get("companions", []))])


def _details(s: dict) -> list[str]:
    """The collapsed table of every arm of one study."""
    metrics = s["metrics"]
    head = " | ".join(f"{label} | p" for _, label, _ in metrics)
    ref = ", ".join(f"{label} {_f(s['reference']['mean'][key], False)}" for key, label, _ in metrics)
    chosen = ", ".join(f"{g:g}" for g in s["grid_gammas"].values())
    sec = s["seconds"]
    lines = ["", f"<details><summary>{study_label(s)} ({s['dataset']}"
                 f"{', ' + ', '.join(f'{k} {v}' for k, v in s['overrides'].items()) if s['overrides'] else ''}"
                 f"): LA alone {ref}</summary>", ""]
    for comp, agree in s.get("reference_agreement", {}).items():
        same = ("identical on every seed" if agree["max_abs_diff"] == 0 else
                f"largest difference of a test metric {agree['max_abs_diff']:.2g}")
        lines += [f"The arms of {comp} are paired against its own LA alone ({agree['seeds']} seeds; against this "
                  f"study's: {same}).", ""]
    lines += [f"Grid's gamma chosen on validation, per seed: {chosen or '-'}. {sec['runs']} runs, "
              f"{_f(sec['median_per_run'], False, 2)} s per run (median), {sec['total'] / 60:.1f} min in all "
              "(training time stored with each trial, one torch thread).", "",
              f"| arm | runs | {head} |", "|---|---:|" + "---|---:|" * len(metrics)]
    for r in s["rows"]:
        cells = " | ".join(f"{_cell(r['diff'][key])} | {_p(r['diff'][key]['p_holm'])}" for key, _, _ in metrics)
        lines.append(f"| {r['arm']} | {r['runs_per_seed']:g} | {cells} |")
    return lines + ["", "</details>"]


def markdown(out: dict) -> str:
    lines = ["Headline metric (test; seg-toy mIoU, else balanced accuracy): each arm minus logit adjustment alone, "
             "paired by seed (10 seeds, 2000-2009), mean and paired t 95% interval; *better / worse* counts the arms "
             f"whose Holm-adjusted p (across the arms of the study) is below {ALPHA}. Exploratory: not "
             "pre-registered.", "",
             "| study | LA alone | LA + grid (6 runs) | LA + gamma=tpe (4) | LA + FLSD-53 (1) | CB CE (1) | "
             "best arm by mean (runs/seed) | better / worse |", "|---|---:|---|---|---|---|---|---|"]
    for s in out["studies"]:
        key = s["metric"]
        cells = []
        for arm in (GRID, TUNED_GAMMA, POLICY, CB_CE):
            r = _row(s, arm)
            cells.append(_cell(r["diff"][key]) if r else "-")
        best = _best(s, key)
        best_cell = (f"{best['arm']} ({best['runs_per_seed']:g}): {_cell(best['diff'][key])}, p_Holm "
                     f"{_p(best['diff'][key]['p_holm'])}") if best else "-"
        lines.append(f"| {study_label(s)} | {_f(s['reference']['mean'][key], False)} | {' | '.join(cells)} | "
                     f"{best_cell} | {_counts(s, key, True)} |")
    lines += ["", "The focal term's other effects, the same differences for the grid and tuned gamma on LA: few-shot "
                  "recall (higher is better), ECE and ECE after temperature scaling (lower is better); multiclass "
                  "studies only.", "",
              "| study | arm | few-shot recall | ECE | ECE after TS |", "|---|---|---|---|---|"]
    for s in out["studies"]:
        keys = [k for k, _, _ in s["metrics"][1:]]
        if not keys:
            continue
        for arm in (GRID, TUNED_GAMMA):
            r = _row(s, arm)
            if r:
                cells = [_cell(r["diff"][k]) if k in keys else "-" for k, _, _ in SECONDARY]
                lines.append(f"| {study_label(s)} | {arm} | {' | '.join(cells)} |")
    fair = (("learned", "The learned controllers on LA (fair studies: every arm, LA alone included, trains without "
                         "the same stratified 10% of the training set, on which the controllers meta-train; gamma "
                         "starts at 2): each arm minus LA alone, Holm across the arms of a study."),
            ("adafocal", "AdaFocal on LA, reading its end-of-epoch statistics on the class-balanced validation set "
                         "(as published: labels no other arm has) or on the held-out training slice (`[slice]`), in "
                         "fair studies (every arm, LA alone included, trains without the same 10% slice): each arm "
                         "minus LA alone, Holm across the arms of a study."))
    for part, intro in fair:
        if not out.get(part):
            continue
        lines += ["", intro, "",
                  "| study | LA alone | arm (runs/seed) | headline | p_Holm | few-shot recall | ECE after TS |",
                  "|---|---:|---|---|---:|---|---|"]
        for s in out[part]:
            key = s["metric"]
            for r in s["rows"]:
                cells = [_cell(r["diff"][k]) if k in r["diff"] else "-" for k in ("recall_few", "ece_ts")]
                lines.append(f"| {study_label(s)} | {_f(s['reference']['mean'][key], False)} | {r['arm']} "
                             f"({r['runs_per_seed']:g}) | {_cell(r['diff'][key])} | {_p(r['diff'][key]['p_holm'])} | "
                             f"{' | '.join(cells)} |")
    if out.get("replication"):
        lines += ["", f"Pre-registered replication ({REPLICATION}, fresh seeds 3000-3009; "
                      "research/preregistration_adafocal.md): each `[slice]` arm minus LA alone, test balanced "
                      "accuracy, paired t 95% interval, Holm across the two.", "",
                  "| arm | seeds | difference | p | p_Holm | replicates |", "|---|---:|---|---:|---:|---|"]
        for r in out["replication"]:
            lines.append(f"| {r['arm']} | {r['n']} | {_cell(r)} | {_p(r['p'])} | {_p(r['p_holm'])} | "
                         f"{'yes' if r['replicates'] else 'no'} |")
    lines += ["", "Per study, every arm: mean difference from LA alone [95% interval] and Holm-adjusted p, per "
                  "metric (few-shot recall: higher is better; ECE: lower is better). *runs* is training runs per "
                  "seed; la+grid is the grid's best gamma chosen on validation per seed (LA alone included)."]
    for s in [*out["studies"], *out.get("learned", []), *out.get("adafocal", [])]:
        lines += _details(s)
    if out["missing"]:
        lines += ["", f"Not run: {', '.join(out['missing'])}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.prior", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS), help="folder of the exports (default %(default)s)")
    parser.add_argument("--json", help="write the analysis here")
    parser.add_argument("--readme", help=f"write the tables between {START} and {END} in this file")
    args = parser.parse_args(argv)
    try:
        out = run(Path(args.results))
    except ValueError as err:
        print(f"research.prior: error: {err}", file=sys.stderr)
        return 2
    if not (out["studies"] or out["learned"] or out["adafocal"]):
        print(f"research.prior: error: no *-prior export in {args.results} ({', '.join(STUDIES)})", file=sys.stderr)
        return 2
    return publish("research.prior", markdown(out), out, json_path=args.json, readme=args.readme, start=START,
                   end=END)


if __name__ == "__main__":
    sys.exit(main())
