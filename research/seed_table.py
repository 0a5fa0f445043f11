"""Cross-entropy vs a tuned focal loss, over seeds, on each data set's default configuration.

For each data set: cross-entropy for every seed; the focal loss's gamma chosen from a grid by the validation
headline metric of seed 0 (so the test set plays no part in the choice); then that gamma for every seed. The
table reports mean and standard deviation of the test headline metric (balanced accuracy, mAP for dense-det,
mean IoU for seg-toy) and the difference. Both losses run with the same seeds, so seed k of each shares its data
split, initialisation and batch order: the difference is taken per seed, and "separated" means that its mean
exceeds twice its standard error over seeds (the paired seed noise; the unpaired standard error of the two means,
which ignores the pairing, is stored as well).

    python -m research.seed_table [--datasets digits-lt ...] [--seeds 5] [--out FILE] [--readme research/README.md]
    python -m research.seed_table --from-json research/results/seed_table.json --readme research/README.md

``--readme`` rewrites the block between ``<!-- seed-table:start -->`` and ``<!-- seed-table:end -->`` of that
file with the table, so the README's numbers are generated, never typed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from adaptive_focal.compare.report import fill_block

from .evaluate import headline_metric
from .train import main

DATASETS = ["digits-lt", "mnist1d-lt", "gauss-lt", "dense-det", "seg-toy"]
GAMMAS = [0.5, 1.0, 2.0, 3.0]
START, END = "<!-- seed-table:start -->", "<!-- seed-table:end -->"


def run_dataset(dataset: str, seeds: int, gammas, threads: int | None) -> dict:
    metric = headline_metric(dataset)
    base = {"dataset": dataset, "threads": threads}
    t0 = time.perf_counter()
    ce_runs = [main({**base, "loss": "ce", "seed": s}) for s in range(seeds)]
    ce = [r["metrics"][metric] for r in ce_runs]
    tuning = {g: main({**base, "loss": "focal", "gamma": g, "seed": 0})["val_metrics"][metric] for g in gammas}
    best = tuned_gamma(tuning)
    focal = [main({**base, "loss": "focal", "gamma": best, "seed": s})["metrics"][metric] for s in range(seeds)]
    # the data set's resolved defaults (epochs, data set arguments, model...) of the runs, for provenance
    config = {"data": ce_runs[0]["data"],
              **{k: ce_runs[0]["config"][k] for k in ("model", "model_kwargs", "epochs", "batch_size", "lr",
                                                      "optimizer")}}
    return {"metric": metric, "config": config, "ce": ce, "focal": focal, "gamma": best, "tuning_val": tuning,
            **compare(ce, focal), "seconds": time.perf_counter() - t0}


def tuned_gamma(val_by_gamma: dict) -> float:
    """The gamma with the best validation metric; on a tie the smaller gamma (closer to cross-entropy)."""
    return max(val_by_gamma, key=lambda g: (val_by_gamma[g], -g))


def compare(ce: list[float], focal: list[float]) -> dict:
    """Focal minus cross-entropy, paired by seed: mean difference, its standard error over seeds, wins / losses
    of focal, whether the mean exceeds twice the standard error, and the unpaired standard error for reference."""
    if len(ce) != len(focal) or len(ce) < 2:
        raise ValueError(f"ce and focal need the same number (>= 2) of seeds, got {len(ce)} and {len(focal)}")
    diffs = [f - c for c, f in zip(ce, focal)]
    n = len(diffs)
    diff = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(n)
    return {"difference": diff, "standard_error": se, "separated": abs(diff) > 2 * se,
            "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs),
            "unpaired_standard_error": math.sqrt(statistics.variance(ce) / n + statistics.variance(focal) / n)}


def markdown(results: dict, seeds: int) -> str:
    lines = [
        f"| data set | test metric | cross-entropy | focal (tuned gamma) | focal - CE, paired (SE) | focal better / "
        f"worse | > 2 SE ({seeds} seeds) |",
        "|---|---|---:|---:|---:|:---:|:---:|",
    ]
    for dataset, r in results.items():
        def ms(v):
            return f"{statistics.fmean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.3f}"
        verdict = "no" if not r["separated"] else ("yes, focal better" if r["difference"] > 0 else "yes, CE better")
        lines.append(f"| {dataset} | {r['metric']} | {ms(r['ce'])} | {ms(r['focal'])} (gamma {r['gamma']:g}) | "
                     f"{r['difference']:+.3f} ({r['standard_error']:.3f}) | {r['wins']} / {r['losses']} | {verdict} |")
    return "\n".join(lines)


def main_cli(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--gammas", type=float, nargs="+", default=GAMMAS)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--readme", default=None)
    parser.add_argument("--from-json", default=None, help="rebuild the table from a stored --out file (no runs)")
    args = parser.parse_args(argv)
    if args.from_json:
        try:
            stored = json.loads(Path(args.from_json).read_text())
        except (OSError, ValueError) as err:
            raise SystemExit(
                f"--from-json {args.from_json!r}: not a readable --out file of this script ({err})") from None
        if not {"seeds", "gammas", "results"} <= set(stored):
            raise SystemExit(f"--from-json {args.from_json!r}: needs the keys seeds, gammas and results, got "
                             f"{sorted(stored)}")
        args.seeds, args.gammas = stored["seeds"], stored["gammas"]
        results = {d: {**r, **compare(r["ce"], r["focal"])} for d, r in stored["results"].items()}
    else:
        results = {}
        for dataset in args.datasets:
            results[dataset] = run_dataset(dataset, args.seeds, args.gammas, args.threads)
            print(f"{dataset}: {results[dataset]['seconds']:.0f} s", flush=True)
    table = markdown(results, args.seeds)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"seeds": args.seeds, "gammas": args.gammas, "results": results},
                                             indent=1))
    if args.readme:
        if not fill_block(args.readme, START, END, table):
            raise SystemExit(f"{args.readme} has no {START} ... {END} block to fill")
    return results


if __name__ == "__main__":
    main_cli()
