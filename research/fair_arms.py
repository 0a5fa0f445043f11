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
* ``gammanet``: where gammanet's development win (gauss-lt, meta batches from the balanced validation set) came
  from. Per data set and seed, all runs on the same training samples (``holdout_fraction`` = ``DEFAULT_HOLDOUT``):
  cross-entropy (the reference: the best fixed gamma on gauss-lt), fixed gamma 2 (gammanet's start), gammanet
  meta-trained on the held-out training slice (the default) and on the balanced validation set, and the control
  that spends the balanced validation labels on plain cross-entropy steps instead (``finetune_every``). Reported:
  mean final gamma, test balanced accuracy, and the paired t 95% interval of each variant minus cross-entropy with
  Holm's correction across the variants of a data set.

    python -m research.fair_arms holdout --seeds 5 --threads 1 \\
        --out research/results/fair_arms_holdout.json --readme research/README.md
    python -m research.fair_arms hypergradient --seeds 5 --threads 1 \\
        --out research/results/fair_arms_hypergradient.json --readme research/README.md
    python -m research.fair_arms gammanet --seeds 10 --threads 1 \\
        --out research/results/fair_arms_gammanet.json --readme research/README.md
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
#: the gammanet measurement's variants (the first is the reference); FINETUNE_EVERY as in sweeps.spec
GAMMANET_VARIANTS = {
    "cross-entropy": {"loss": "ce"},
    "fixed gamma 2": {"loss": "focal", "gamma": 2.0},
    "gammanet (training slice)": {"policy": "gammanet"},
    "gammanet (balanced validation)": {"policy": "gammanet", "meta_data": "val"},
    "fine-tune on balanced validation": {"loss": "focal", "gamma": 2.0, "finetune_every": 20, "meta_data": "val"},
}
#: measurement -> the README block it fills
BLOCKS = {
    "holdout": ("<!-- fair-arms-holdout:start -->", "<!-- fair-arms-holdout:end -->"),
    "hypergradient": ("<!-- fair-arms-hypergradient:start -->", "<!-- fair-arms-hypergradient:end -->"),
    "gammanet": ("<!-- fair-arms-gammanet:start -->", "<!-- fair-arms-gammanet:end -->"),
}


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return mean, se


def _final_gamma(result: dict) -> float:
    """The run's last gamma as one number: the value itself, or the mean of a per-class / per-bin gamma (a
    gammanet GammaTable) as :func:`adaptive_focal.gamma_forms.gamma_scalars` summarises it."""
    from adaptive_focal.gamma_forms import gamma_scalars

    epochs = result["gamma"]["epochs"]
    if not epochs:  # no policy: the loss's own gamma (cross-entropy has none: 0)
        return 0.0 if result["config"]["loss"] == "ce" else float(result["config"]["gamma"])
    scalars = gamma_scalars(epochs[-1]["gamma"])
    return float(scalars.get("gamma", scalars.get("gamma/mean", float("nan"))))


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
def _variants(variants: dict, datasets, seeds: int, threads: int | None, log=print) -> dict:
    """Every variant on every seed, all holding the same ``DEFAULT_HOLDOUT`` slice out of training."""
    out = {}
    for dataset in datasets:
        out[dataset] = {}
        for name, keys in variants.items():
            rows = []
            for seed in range(seeds):
                t0 = time.perf_counter()
                r = main({"dataset": dataset, "seed": seed, "threads": threads, "holdout_fraction": DEFAULT_HOLDOUT,
                          **keys})
                rows.append({"seed": seed, "gamma_end": _final_gamma(r),
                             "balanced_accuracy": r["metrics"]["balanced_accuracy"],
                             "seconds": time.perf_counter() - t0})
            out[dataset][name] = {"config": keys, "runs": rows}
            log(f"{dataset} {name}: gamma_end {[round(x['gamma_end'], 4) for x in rows]}, "
                f"balanced accuracy {[round(x['balanced_accuracy'], 4) for x in rows]}")
    return out


def hypergradient(datasets, seeds: int, threads: int | None, log=print) -> dict:
    return _variants(VARIANTS, datasets, seeds, threads, log)


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
# where gammanet's win came from
# ----------------------------------------------------------------------------------------------------------
def gammanet(datasets, seeds: int, threads: int | None, log=print) -> dict:
    return _variants(GAMMANET_VARIANTS, datasets, seeds, threads, log)


def gammanet_tests(variants: dict) -> dict:
    """One data set's variants against cross-entropy: ``{name: {"diffs", "t", "p_holm"}}`` with the per-seed
    differences, their paired t-analysis and the Holm-adjusted p across the variants."""
    from adaptive_focal.compare.analysis import holm, paired_t

    reference = next(iter(GAMMANET_VARIANTS))
    base = [r["balanced_accuracy"] for r in variants[reference]["runs"]]
    diffs = {name: [r["balanced_accuracy"] - b for r, b in zip(v["runs"], base)]
             for name, v in variants.items() if name != reference}
    tests = {name: paired_t(d) for name, d in diffs.items()}
    adjusted = holm([t["p"] for t in tests.values()])
    return {name: {"diffs": diffs[name], "t": tests[name], "p_holm": p} for name, p in zip(tests, adjusted)}


def gammanet_markdown(results: dict) -> str:
    lines = [("| data set | variant | final gamma | balanced accuracy | vs cross-entropy, paired | 95% t-interval | "
              "Holm p | better / worse |"), "|---|---|---:|---:|---:|---|---:|:---:|"]
    reference = next(iter(GAMMANET_VARIANTS))
    for dataset, variants in results.items():
        tests = gammanet_tests(variants)
        for name, v in variants.items():
            acc = statistics.fmean(r["balanced_accuracy"] for r in v["runs"])
            gamma = statistics.fmean(r["gamma_end"] for r in v["runs"])
            if name == reference:
                lines.append(f"| {dataset} | {name} | {gamma:.2f} | {acc:.4f} | — | — | — | — |")
                continue
            t, d, adjusted = tests[name]["t"], tests[name]["diffs"], tests[name]["p_holm"]
            p = "—" if adjusted is None else f"{adjusted:.3f}"
            lines.append(f"| {dataset} | {name} | {gamma:.2f} | {acc:.4f} | {t['mean']:+.4f} | "
                         f"[{t['low']:+.4f}, {t['high']:+.4f}] | {p} | {sum(x > 0 for x in d)} / "
                         f"{sum(x < 0 for x in d)} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------
MEASUREMENTS = {"holdout": (holdout, holdout_markdown), "hypergradient": (hypergradient, hypergradient_markdown),
                "gammanet": (gammanet, gammanet_markdown)}


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
