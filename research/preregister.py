"""The pre-registered choice of ONE default gamma policy, made on development data only.

The development data are the committed full comparisons on the five CPU data sets
(``sweeps/results/trials/<dataset>.json.gz``: seeds 0-4, every policy with its defaults). The rule, fixed in
``research/preregistration.md`` before any confirmatory run:

1. Candidates: the policies that a user can run without tuning and without extra data on any loss: a default arm
   (``policy=<name>``) in all five studies, applicable to both softmax and sigmoid losses, and not a learned
   controller (those need held-out labelled batches the other arms do not get).
2. Per data set, each candidate's score is the mean over the development seeds of its *validation* headline
   metric (balanced accuracy, mAP on dense-det, mean IoU on seg-toy); candidates are ranked per data set (1 =
   best; ties share the mean rank).
3. The chosen policy has the lowest mean rank over the five data sets; ties are broken by the larger mean over data
   sets of (its validation score minus that of the best fixed gamma chosen by mean validation score), then by name.

Test metrics play no part. ``python -m research.preregister`` prints the ranking and the choice (and
``--json FILE`` writes them), so the choice can be recomputed from the committed files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

DATASETS = ("digits-lt", "gauss-lt", "mnist1d-lt", "dense-det", "seg-toy")
RESULTS = Path(__file__).resolve().parents[1] / "sweeps" / "results" / "trials"


def _val_means(units: dict) -> dict:
    """Arm -> mean over seeds of the selected trial's validation headline metric (untuned arms only)."""
    from adaptive_focal.compare.results import selected

    metric, out = units["metric"], {}
    for arm, per in selected(units).items():
        values = [t["val"].get(metric) for t in per.values() if t["val"] and t["val"].get(metric) is not None]
        if values and not units["arms"][arm].get("space"):
            out[arm] = statistics.fmean(values)
    return out


def _ranks(scores: dict) -> dict:
    """Rank 1 = highest score; ties share the mean of the ranks they span."""
    ordered = sorted(scores.values(), reverse=True)
    return {k: statistics.fmean(i + 1 for i, v in enumerate(ordered) if v == s) for k, s in scores.items()}


def candidates(per_dataset: dict) -> list[str]:
    import adaptive_focal as af

    names = None
    for arms in per_dataset.values():
        present = {a.split("=", 1)[1] for a in arms if a.startswith("policy=")}
        names = present if names is None else names & present
    return sorted(n for n in names or () if af.policy_class(n).applies_to("softmax")
                  and af.policy_class(n).applies_to("sigmoid") and "model" not in af.policy_class(n).requires)


def choose(results: Path = RESULTS) -> dict:
    from adaptive_focal.compare.analysis import is_fixed_gamma
    from adaptive_focal.compare.export import units_from_export

    per_dataset, gaps = {}, {}
    for dataset in DATASETS:
        units = units_from_export(results / f"{dataset}.json.gz", dataset)
        means = _val_means(units)
        per_dataset[dataset] = means
        fixed = {a: v for a, v in means.items() if is_fixed_gamma(units["arms"][a])}
        gaps[dataset] = max(fixed.values())
    names = candidates(per_dataset)
    table = {}
    for dataset, means in per_dataset.items():
        scores = {n: means[f"policy={n}"] for n in names}
        ranks = _ranks(scores)
        for n in names:
            row = table.setdefault(n, {"ranks": {}, "val": {}, "gap_to_best_fixed": {}})
            row["ranks"][dataset] = ranks[n]
            row["val"][dataset] = scores[n]
            row["gap_to_best_fixed"][dataset] = scores[n] - gaps[dataset]
    for row in table.values():
        row["mean_rank"] = statistics.fmean(row["ranks"].values())
        row["mean_gap"] = statistics.fmean(row["gap_to_best_fixed"].values())
    order = sorted(table, key=lambda n: (table[n]["mean_rank"], -table[n]["mean_gap"], n))
    return {"candidates": names, "ranking": [{"policy": n, **table[n]} for n in order], "chosen": order[0],
            "datasets": list(DATASETS), "development_seeds": "the committed studies' seeds (0-4)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.preregister", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS), help="folder of the development exports")
    parser.add_argument("--json", help="also write the ranking here")
    args = parser.parse_args(argv)
    out = choose(Path(args.results))
    print("| policy | mean rank | " + " | ".join(DATASETS) + " | mean val minus best fixed gamma |")
    print("|---|---:|" + "---:|" * len(DATASETS) + "---:|")
    for row in out["ranking"]:
        cells = " | ".join(f"{row['ranks'][d]:g} ({row['val'][d]:.3f})" for d in DATASETS)
        print(f"| {row['policy']} | {row['mean_rank']:.2f} | {cells} | {row['mean_gap']:+.4f} |")
    print(f"\nchosen: {out['chosen']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
