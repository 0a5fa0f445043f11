"""The measurements behind research/README.md's "Fair arms" (research protocol v2, item 1).

* ``holdout``: what holding a slice out of the training set costs every arm. Per data set, fraction and seed,
  cross-entropy trained without a stratified ``holdout_fraction`` of the training set against the same seed
  without hold-out: the slice's size and the paired difference of the test balanced accuracy.
* ``hypergradient``: does the default ``hypergradient`` policy move gamma? Per data set and seed, research.train's
  default run of the policy (gamma starts at 2) and some variants, all on the same training samples
  (``holdout_fraction`` = research.train's ``DEFAULT_HOLDOUT`` for every run, as in a fair study), against fixed
  gamma 2 on the same seed:

  - ``default``: the policy's defaults, meta batches from the held-out training slice (research.train's default);
  - ``default, val``: the same with meta batches from the balanced validation set (the old protocol);
  - ``meta_lr=100``: the top of the policy's search space for ``meta_lr`` (what its tuned arm can reach);
  - ``normalize``: ``normalize=True, meta_lr=0.05, clip=3``, the scale-free step of the policy's docstring.

  Reported: mean and largest ``|gamma_end - 2|`` over seeds, the mean final gamma, the test balanced accuracy and
  its paired difference from fixed gamma 2 (standard error over seeds).

    python -m research.fair_arms holdout --seeds 5 --threads 1 \\
        --out research/results/fair_arms_holdout.json --readme research/README.md
    python -m research.fair_arms hypergradient --seeds 5 --threads 1 \\
        --out research/results/fair_arms_hypergradient.json --readme research/README.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from .train import DEFAULT_HOLDOUT, load_data, main, resolve_config

DATASETS = ["digits-lt", "gauss-lt"]
#: hold-out fractions measured against none
FRACTIONS = [0.05, 0.1, 0.2]
#: variant -> research.train config keys (besides data set, seed and hold-out)
VARIANTS = {
    "fixed gamma 2": {"loss": "focal", "gamma": 2.0},
    "default": {"policy": "hypergradient"},
    "default, val": {"policy": "hypergradient", "meta_data": "val"},
    "meta_lr=100": {"policy": "hypergradient", "policy_kwargs": {"meta_lr": 100.0}},
    "normalize": {"policy": "hypergradient", "policy_kwargs": {"normalize": True, "meta_lr": 0.05, "clip": 3.0}},
}
#: measurement -> the README block it fills
BLOCKS = {
    "holdout": ("<!-- fair-arms-holdout:start -->", "<!-- fair-arms-holdout:end -->"),
    "hypergradient": ("<!-- fair-arms-hypergradient:start -->", "<!-- fair-arms-hypergradient:end -->"),
}


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return mean, se


def _final_gamma(result: dict) -> float:
    epochs = result["gamma"]["epochs"]
    return float(epochs[-1]["gamma"]) if epochs else float(result["config"]["gamma"])


# ----------------------------------------------------------------------------------------------------------
# what the hold-out costs
# ----------------------------------------------------------------------------------------------------------
def holdout(datasets, seeds: int, threads: int | None, fractions=FRACTIONS, log=print) -> dict:
    out = {}
    for dataset in datasets:
        out[dataset] = {}
        for fraction in [0.0, *fractions]:
            rows = []
            for seed in range(seeds):
                cfg = {"dataset": dataset, "seed": seed, "threads": threads, "loss": "ce",
                       "holdout_fraction": fraction}
                data, held_out = load_data(resolve_config(cfg))
                r = main(cfg)
                rows.append({"seed": seed, "train": len(data.y_train), "held_out": 0 if held_out is None else
                             len(held_out[1]), "balanced_accuracy": r["metrics"]["balanced_accuracy"]})
            out[dataset][str(fraction)] = rows
            log(f"{dataset} holdout {fraction}: {[round(x['balanced_accuracy'], 4) for x in rows]}")
    return out


def holdout_markdown(results: dict) -> str:
    lines = [("| data set | holdout_fraction | held out | left for training | CE balanced accuracy | "
              "vs no hold-out, paired (SE) |"), "|---|---:|---:|---:|---:|---:|"]
    for dataset, by_fraction in results.items():
        base = [r["balanced_accuracy"] for r in by_fraction["0.0"]]
        for fraction, rows in by_fraction.items():
            acc = [r["balanced_accuracy"] for r in rows]
            diff = "—" if fraction == "0.0" else "{:+.4f} ({:.4f})".format(*_mean_se([a - b for a, b in
                                                                                      zip(acc, base)]))
            lines.append(f"| {dataset} | {float(fraction):g} | {rows[0]['held_out']} | {rows[0]['train']} | "
                         f"{statistics.fmean(acc):.4f} | {diff} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# does the default hypergradient move gamma?
# ----------------------------------------------------------------------------------------------------------
def hypergradient(datasets, seeds: int, threads: int | None, log=print) -> dict:
    out = {}
    for dataset in datasets:
        out[dataset] = {}
        for name, keys in VARIANTS.items():
            rows = []
            for seed in range(seeds):
                t0 = time.perf_counter()
                r = main({"dataset": dataset, "seed": seed, "threads": threads, "holdout_fraction": DEFAULT_HOLDOUT,
                          **keys})
                rows.append({"seed": seed, "gamma_end": _final_gamma(r),
                             "balanced_accuracy": r["metrics"]["balanced_accuracy"],
                             "seconds": time.perf_counter() - t0})
            out[dataset][name] = {"config": keys, "runs": rows}
            log(f"{dataset} {name}: gamma_end {[round(x['gamma_end'], 4) for x in rows]}")
    return out


def hypergradient_markdown(results: dict) -> str:
    lines = [("| data set | variant | mean \\|gamma_end - 2\\| | largest | final gamma | balanced accuracy | "
              "vs fixed gamma 2, paired (SE) |"), "|---|---|---:|---:|---:|---:|---:|"]
    for dataset, variants in results.items():
        fixed = [r["balanced_accuracy"] for r in variants["fixed gamma 2"]["runs"]]
        for name, v in variants.items():
            dev = [abs(r["gamma_end"] - 2.0) for r in v["runs"]]
            acc = [r["balanced_accuracy"] for r in v["runs"]]
            gamma = statistics.fmean([r["gamma_end"] for r in v["runs"]])
            diff = "—" if name == "fixed gamma 2" else "{:+.4f} ({:.4f})".format(
                *_mean_se([a - f for a, f in zip(acc, fixed)]))
            lines.append(f"| {dataset} | {name} | {statistics.fmean(dev):.4f} | {max(dev):.4f} | {gamma:.3f} | "
                         f"{statistics.fmean(acc):.4f} | {diff} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------
MEASUREMENTS = {"holdout": (holdout, holdout_markdown), "hypergradient": (hypergradient, hypergradient_markdown)}


def main_cli(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measurement", choices=list(MEASUREMENTS))
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the per-seed results here (JSON)")
    parser.add_argument("--readme", default=None, help="replace the measurement's block in this file")
    args = parser.parse_args(argv)
    measure, markdown = MEASUREMENTS[args.measurement]
    results = measure(args.datasets, args.seeds, args.threads)
    table = markdown(results)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"measurement": args.measurement, "seeds": args.seeds,
                                              "results": results, "markdown": table}, indent=1))
    if args.readme:
        from adaptive_focal.compare.report import fill_block

        start, end = BLOCKS[args.measurement]
        if not fill_block(args.readme, start, end, table):
            raise SystemExit(f"{args.readme} has no {start} ... {end} block to fill")


if __name__ == "__main__":
    main_cli()
