"""Learned gamma controllers against fixed gamma and the hand-designed controllers, over seeds (issue 6 evidence).

For each data set (its default configuration from :data:`research.train.DATASET_DEFAULTS`):

1. **Final metrics.** The fixed gamma is chosen from a grid by seed 0's validation headline metric (as
   :mod:`research.seed_table` does); then, for every seed, that fixed gamma, the hand-designed controllers that
   apply (``automated``, ``pi``; ``adafocal`` on softmax tasks, ``efl`` on dense-det) and the learned ones
   (``hypergradient``, ``gammanet``, ``bandit``, plus a normalised per-class hypergradient variant). Test headline
   metric (balanced accuracy; mAP for dense-det) and, for multiclass tasks, ECE, as mean ± std over seeds.
2. **Overhead.** Wall time per training step relative to fixed gamma, from a dedicated timing: the training-step
   loop of ``research/train.py`` (observe, forward, loss, backward, optimizer step, policy step; no epoch-end
   validation) rebuilt from its own helpers, ``--timing-steps`` steps after a warm-up, every method once per round
   in a rotating order, ``--timing-rounds`` rounds, so fixed and learned runs are interleaved on a noisy machine.
   The ratio is the median over rounds of (method / fixed gamma in the same round).
3. **Trajectory response.** For every learned controller, low vs high imbalance over the seeds: ``imbalance_ratio``
   1 vs 100 with the training-set size held equal (rho = 1 gets ``n_max`` = the rho = 100 total / C, so both
   runs take the same number of steps), and on dense-det also the background ratio 100 vs 1000 background
   anchors per positive (``n_max`` scaled so that the number of anchors is equal). The gamma summary is the mean
   of the global gamma (the mean over classes / bins for per-class and table forms), at the end of training and
   averaged over the second half of the logged steps; for per-class forms also class 0 (the most frequent) and
   class C-1 (the rarest).

    python -m research.learned_evidence [--datasets mnist1d-lt dense-det] [--seeds 5] [--threads 1]
        [--epochs N] [--out research/results/learned_evidence.json] [--readme research/README.md]

``--readme`` rewrites the block between ``<!-- learned-evidence:start -->`` and ``<!-- learned-evidence:end -->``
(appending a section with the block if the file has none), so the README's numbers are generated, never typed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from adaptive_focal.compare.report import fill_block

from . import datasets as _datasets
from .datasets import load_dataset, long_tail_counts
from .evaluate import headline_metric
from .seed_table import tuned_gamma
from .train import (
    Config,
    _batches,
    build_run,
    load_data,
    main,
    resolve_config,
    train_step,
)

DATASETS = ["mnist1d-lt", "dense-det"]
SHORT = {"balanced_accuracy": "bal. acc.", "map": "mAP", "miou": "mIoU"}
GAMMAS = [0.5, 1.0, 2.0, 3.0]
HAND = ["automated", "pi"]  # + adafocal (softmax tasks) or efl (dense-det)
#: learned controllers: name -> (policy, policy_kwargs); the seed is added to the seeded ones (per run seed)
LEARNED = {
    "hypergradient": ("hypergradient", {}),
    "gammanet": ("gammanet", {}),
    "bandit": ("bandit", {}),
    # not a default: the normalised step the hypergradient docstring recommends when the virtual step's lr is an
    # Adam-sized 3e-3 (the default step moves gamma by ~1e-3 there), one gamma per class
    "hypergradient-pc": ("hypergradient", {"per_class": True, "normalize": True, "meta_lr": 0.05, "clip": 3.0}),
}
SEEDED = ("gammanet", "bandit")  # policies with their own seed argument: given the run's seed
#: where the learned controllers draw their held-out batches from: the class-balanced validation set, as when the
#: committed table was made (research.train's default is now a slice held out of the training set; research/
#: README.md, "Fair arms"); ``overrides={"meta_data": "train_slice"}`` measures them under the new default
META_DATA = "val"
LOW_RHO, HIGH_RHO = 1.0, 100.0
LOW_BG, HIGH_BG = 100.0, 1000.0
START, END = "<!-- learned-evidence:start -->", "<!-- learned-evidence:end -->"
HEADING = "## Learned controllers (issue 6 evidence)"


# ----------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------
def _hand(dataset: str) -> list[str]:
    return HAND + (["efl"] if dataset == "dense-det" else ["adafocal"])


def _defaults(dataset: str) -> dict:
    """The data set builder's keyword defaults."""
    fn = _datasets._REGISTRY[dataset]
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def _normalised(dataset: str, kwargs: dict) -> dict:
    """kwargs without the entries equal to the builder's defaults (two spellings of one config share a key)."""
    defaults = _defaults(dataset)
    return {k: v for k, v in sorted(kwargs.items()) if k not in defaults or defaults[k] != v}


def _num_classes(dataset: str, kwargs: dict) -> int:
    return int(kwargs.get("num_classes", _defaults(dataset).get("num_classes", 10)))


def mean_std(values) -> tuple[float, float]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _fmt(values, digits: int = 3) -> str:
    m, s = mean_std(values)
    return "—" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


# ----------------------------------------------------------------------------------------------------------
# gamma summaries
# ----------------------------------------------------------------------------------------------------------
def gamma_summary(record, num_classes: int) -> dict:
    """A scalar summary of one logged gamma (plain Python: float, list, ``{"edges", "values"}`` or
    ``{"form", ...}``): ``mean`` (the global gamma, or the mean over classes / bins / terms) and, for per-class
    forms, ``frequent`` (class 0) and ``rare`` (class C-1); ``None`` where not per class."""
    if record is None:
        return {"mean": None, "frequent": None, "rare": None}
    if isinstance(record, dict):
        raw = record.get("values") if "values" in record else record.get("gammas")
    else:
        raw = record
    t = torch.as_tensor(raw, dtype=torch.float64)
    out = {"mean": float(t.mean()), "frequent": None, "rare": None}
    if isinstance(record, dict) and "values" in record:  # GammaTable: (C, B) per class, (B,) global
        per_class = t.mean(-1) if t.dim() == 2 and t.shape[0] == num_classes else None
    elif t.dim() >= 1 and t.shape[-1] == num_classes:  # (C,) per class; FocalMixture gammas (K, C)
        per_class = t.reshape(-1, num_classes).mean(0)
    else:
        per_class = None
    if per_class is not None and num_classes > 1:
        out["frequent"], out["rare"] = float(per_class[0]), float(per_class[-1])
    return out


def _summarise_run(result: dict, dataset: str, num_classes: int) -> dict:
    metric = headline_metric(dataset)
    steps, epochs = result["gamma"]["steps"], result["gamma"]["epochs"]
    cfg = result["config"]
    if epochs:
        final = epochs[-1]["gamma"]
    else:  # fixed gamma: no policy, no trajectory
        final = cfg["gamma"]
    fin = gamma_summary(final, num_classes)
    last = max((r["step"] for r in steps), default=0)
    half = [gamma_summary(r["gamma"], num_classes) for r in steps if r["step"] > last / 2]
    half_mean = {k: (statistics.fmean([h[k] for h in half]) if half and half[0][k] is not None else fin[k])
                 for k in ("mean", "frequent", "rare")}
    return {
        "seed": cfg["seed"],
        "metric": result["metrics"][metric],
        "val_metric": result["val_metrics"][metric],
        "ece": result["metrics"].get("ece"),
        "ece_ts": result["metrics"].get("ece_ts"),
        "seconds": result["seconds"],
        "gamma_final": final,
        "gamma_final_mean": fin["mean"], "gamma_final_frequent": fin["frequent"], "gamma_final_rare": fin["rare"],
        "gamma_half_mean": half_mean["mean"], "gamma_half_frequent": half_mean["frequent"],
        "gamma_half_rare": half_mean["rare"],
        "gamma_epochs_mean": [gamma_summary(r["gamma"], num_classes)["mean"] for r in epochs],
    }


# ----------------------------------------------------------------------------------------------------------
# runs (memoised: one config is trained once, whichever part of the study asks for it)
# ----------------------------------------------------------------------------------------------------------
class Runner:
    def __init__(self, threads: int | None, epochs: int | None, overrides: dict | None = None,
                 log=print) -> None:
        self.threads, self.epochs, self.overrides = threads, epochs, dict(overrides or {})
        self.cache: dict[str, dict] = {}
        self.log = log
        self.count = 0

    def config(self, dataset: str, kwargs: dict, seed: int, policy: str = "none", policy_kwargs=None,
               gamma: float | None = None) -> dict:
        cfg = {"dataset": dataset, "dataset_kwargs": _normalised(dataset, kwargs), "seed": seed,
               "policy": policy, "policy_kwargs": dict(policy_kwargs or {}), "threads": self.threads,
               "meta_data": META_DATA, **self.overrides}
        if gamma is not None:
            cfg["gamma"] = float(gamma)
        if self.epochs is not None:
            cfg["epochs"] = self.epochs
        return cfg

    def run(self, cfg: dict) -> dict:
        key = json.dumps(cfg, sort_keys=True)
        if key not in self.cache:
            t0 = time.perf_counter()
            result = main(cfg)
            num_classes = _num_classes(cfg["dataset"], cfg["dataset_kwargs"])
            self.cache[key] = _summarise_run(result, cfg["dataset"], num_classes)
            self.count += 1
            self.log(f"  [{self.count}] {cfg['dataset']} {cfg['policy']} {cfg['policy_kwargs'] or ''} "
                     f"{cfg['dataset_kwargs'] or ''} seed {cfg['seed']}: {self.cache[key]['metric']:.3f}, gamma "
                     f"{self.cache[key]['gamma_final_mean']:.3g}, {time.perf_counter() - t0:.1f} s")
        return self.cache[key]


def _learned_kwargs(name: str, seed, num_classes: int) -> tuple[str, dict]:
    policy, kwargs = LEARNED[name]
    kwargs = dict(kwargs)
    if kwargs.get("per_class"):
        kwargs["num_classes"] = num_classes
    if policy in SEEDED:
        kwargs["seed"] = seed
    return policy, kwargs


def _methods(dataset: str, best: float, learned, num_classes: int, hand=None) -> dict:
    """name -> (kind, policy, policy_kwargs(seed), gamma)"""
    out = {"fixed": ("fixed", "none", lambda s: {}, best)}
    for name in (_hand(dataset) if hand is None else [h for h in _hand(dataset) if h in hand]):
        out[name] = ("hand", name, lambda s: {}, None)
    for name in learned:
        out[name] = ("learned", LEARNED[name][0], (lambda s, n=name: _learned_kwargs(n, s, num_classes)[1]), None)
    return out


def _contrasts(dataset: str, base: dict) -> list[dict]:
    """Low vs high imbalance settings of the data set at an equal training-set size."""
    defaults = {**_defaults(dataset), **base}
    c = _num_classes(dataset, base)
    n_max = int(defaults["n_max"])
    total_high = sum(long_tail_counts(n_max, c, HIGH_RHO))
    out = [{
        "name": "imbalance_ratio", "label": f"rho {LOW_RHO:g} vs {HIGH_RHO:g}",
        "low": {**base, "imbalance_ratio": LOW_RHO, "n_max": max(1, round(total_high / c))},
        "high": {**base, "imbalance_ratio": HIGH_RHO, "n_max": n_max},
    }]
    if "background_ratio" in defaults:
        anchors = n_max * (1.0 + float(defaults["background_ratio"]))  # ~ anchors / class-0 positives: held equal
        out.append({
            "name": "background_ratio", "label": f"background {LOW_BG:g} vs {HIGH_BG:g} per positive",
            "low": {**base, "background_ratio": LOW_BG, "n_max": max(1, round(anchors / (1.0 + LOW_BG)))},
            "high": {**base, "background_ratio": HIGH_BG, "n_max": max(1, round(anchors / (1.0 + HIGH_BG)))},
        })
    return out


# ----------------------------------------------------------------------------------------------------------
# timing: the training-step loop of research/train.py, methods interleaved
# ----------------------------------------------------------------------------------------------------------
def _setup(cfg: Config, data, held_out):
    """What research.train.main builds before its loop, for ``cfg``: model, loss, optimizer, policy, callback."""
    torch.manual_seed(cfg.seed)
    run = build_run(cfg, data, held_out)
    from adaptive_focal.callbacks import GammaCallback, MemoryLogger
    callback = None if run.policy is None else GammaCallback(run.policy, loggers=[MemoryLogger()],
                                                             log_every=cfg.log_every)
    x_train, y_train = data.train
    return run.model, run.criterion, run.optimizer, run.policy, callback, x_train, y_train, run.y_fit


def _time_steps(cfg: Config, data, held_out, warmup: int, steps: int) -> float:
    """Seconds per training step over ``steps`` steps after ``warmup`` untimed ones (train.py's loop body)."""
    model, criterion, optimizer, policy, callback, x_train, y_train, y_fit = _setup(cfg, data, held_out)
    needs_stats = policy is not None and policy.needs_stats
    done, epoch, t0 = 0, 0, None
    while done < warmup + steps:
        for idx in _batches(x_train.shape[0], cfg, epoch, y_train, data.task):
            if done == warmup:
                t0 = time.perf_counter()
            if done == warmup + steps:
                break
            float(train_step(model, criterion, optimizer, policy, callback, x_train[idx], y_fit[idx], needs_stats))
            done += 1
        epoch += 1
    return (time.perf_counter() - t0) / steps


def time_methods(dataset: str, kwargs: dict, methods: dict, threads: int | None, rounds: int, warmup: int,
                 steps: int, overrides: dict | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    cfgs, data = {}, {}
    for name, (_, policy, pkw, gamma) in methods.items():
        over = {"dataset": dataset, "dataset_kwargs": kwargs, "seed": 0, "policy": policy, "policy_kwargs": pkw(0),
                "meta_data": META_DATA, **(overrides or {})}
        if gamma is not None:
            over["gamma"] = float(gamma)
        cfgs[name] = resolve_config(over)
        if cfgs[name].holdout_fraction not in data:  # the data set less any held-out slice
            data[cfgs[name].holdout_fraction] = load_data(cfgs[name])
    names = list(methods)
    per_step = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:  # rotating order
            per_step[n].append(_time_steps(cfgs[n], *data[cfgs[n].holdout_fraction], warmup, steps))
    out = {}
    for n in names:
        ratios = [a / b for a, b in zip(per_step[n], per_step["fixed"])]
        out[n] = {"ms_per_step": [1e3 * v for v in per_step[n]],
                  "median_ms_per_step": 1e3 * statistics.median(per_step[n]),
                  "ratio_per_round": ratios, "ratio_median": statistics.median(ratios)}
    return out


# ----------------------------------------------------------------------------------------------------------
# the study
# ----------------------------------------------------------------------------------------------------------
def run_dataset(dataset: str, seeds: int, gammas, runner: Runner, *, kwargs: dict | None = None,
                learned=tuple(LEARNED), hand=None, timing_rounds: int = 7, timing_warmup: int = 10,
                timing_steps: int = 100, contrast_seeds: int | None = None) -> dict:
    kwargs = dict(kwargs or {})
    metric = headline_metric(dataset)
    c = _num_classes(dataset, kwargs)
    t0 = time.perf_counter()
    load_dataset(dataset, seed=0, **kwargs)  # builds mnist1d-lt's generated pool (cached) before any timed run
    runner.log(f"{dataset}: tuning fixed gamma over {list(gammas)} on seed 0's validation {metric}")
    tuning = {float(g): runner.run(runner.config(dataset, kwargs, 0, gamma=g))["val_metric"] for g in gammas}
    best = tuned_gamma(tuning)
    methods = _methods(dataset, best, learned, c, hand)

    # final metrics: per seed, every method in turn (interleaved, so the runs' seconds share the machine's state)
    runs = {name: [] for name in methods}
    for s in range(seeds):
        for name, (_, policy, pkw, gamma) in methods.items():
            runs[name].append(runner.run(runner.config(dataset, kwargs, s, policy, pkw(s), gamma)))
    # median over seeds: robust to a run that paid for building a data set cache (or to a burst of load)
    fixed_seconds = statistics.median(r["seconds"] for r in runs["fixed"])
    table = {}
    for name, (kind, policy, pkw, gamma) in methods.items():
        rs = runs[name]
        table[name] = {
            "kind": kind, "policy": policy, "policy_kwargs": pkw("<seed>") if policy in SEEDED else pkw(0),
            "gamma": gamma, "metric": [r["metric"] for r in rs], "ece": [r["ece"] for r in rs],
            "ece_ts": [r["ece_ts"] for r in rs], "seconds": [r["seconds"] for r in rs],
            "run_seconds_ratio": statistics.median(r["seconds"] for r in rs) / fixed_seconds,
            "gamma_final_mean": [r["gamma_final_mean"] for r in rs],
            "gamma_half_mean": [r["gamma_half_mean"] for r in rs],
            "runs": rs,
        }

    runner.log(f"{dataset}: timing ({timing_rounds} rounds x {timing_steps} steps per method)")
    timing = time_methods(dataset, kwargs, methods, runner.threads, timing_rounds, timing_warmup, timing_steps,
                          {**runner.overrides, **({"epochs": runner.epochs} if runner.epochs else {})})

    # trajectory response
    contrasts = []
    for con in _contrasts(dataset, kwargs):
        runner.log(f"{dataset}: contrast {con['label']}")
        entry = {"name": con["name"], "label": con["label"], "low": con["low"], "high": con["high"],
                 "controllers": {}}
        n_seeds = seeds if contrast_seeds is None else contrast_seeds
        for name in learned:
            side = {}
            for which in ("low", "high"):
                side[which] = []
                for s in range(n_seeds):
                    policy, pkw = _learned_kwargs(name, s, c)
                    side[which].append(runner.run(runner.config(dataset, con[which], s, policy, pkw)))
            entry["controllers"][name] = {
                which: {key: [r[key] for r in side[which]] for key in
                        ("gamma_final_mean", "gamma_half_mean", "gamma_final_frequent", "gamma_final_rare",
                         "gamma_half_frequent", "gamma_half_rare", "metric")}
                for which in ("low", "high")}
            for which in ("low", "high"):
                entry["controllers"][name][which]["gamma_final"] = [r["gamma_final"] for r in side[which]]
            entry["controllers"][name]["verdict"] = _verdict(entry["controllers"][name])
        contrasts.append(entry)
    return {"metric": metric, "num_classes": c, "dataset_kwargs": kwargs, "tuning_val": tuning, "best_gamma": best,
            "methods": table, "timing": timing, "contrasts": contrasts, "seconds": time.perf_counter() - t0}


def _difference(low, high) -> tuple[float, float]:
    """high - low and its standard error over seeds."""
    lo = [v for v in low if v is not None]
    hi = [v for v in high if v is not None]
    if not lo or not hi:
        return float("nan"), float("nan")
    diff = statistics.fmean(hi) - statistics.fmean(lo)
    var = (statistics.variance(lo) / len(lo) if len(lo) > 1 else 0.0) + \
          (statistics.variance(hi) / len(hi) if len(hi) > 1 else 0.0)
    return diff, math.sqrt(var)


def _verdict(ctrl: dict) -> dict:
    out = {}
    for key in ("gamma_final_mean", "gamma_half_mean"):
        diff, se = _difference(ctrl["low"][key], ctrl["high"][key])
        if math.isnan(diff):
            word = "n/a"
        elif abs(diff) < 1e-3:
            word = "no change"
        elif se > 0 and abs(diff) <= 2 * se:
            word = "within noise"
        else:
            word = "higher" if diff > 0 else "lower"
        out[key] = {"difference": diff, "standard_error": se, "high_vs_low": word}
    return out


# ----------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------
def markdown(results: dict, seeds: int) -> str:
    lines = [
        (f"Final metrics ({seeds} seeds, mean ± std; ECE before temperature scaling; step time: median over "
         "interleaved rounds of the method's training-step time / fixed gamma's, same round; run time: whole "
         "runs incl. data and evaluation, median over seeds):"),
        "",
        "| data set | method | test metric | ECE | final gamma | step time vs fixed | run time vs fixed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for dataset, r in results.items():
        for name, m in r["methods"].items():
            label = f"fixed gamma {r['best_gamma']:g}" if name == "fixed" else f"{name} ({m['kind']})"
            ece = _fmt(m["ece"]) if r["metric"] == "balanced_accuracy" else "—"
            ratio = r["timing"][name]["ratio_median"]
            ms = r["timing"][name]["median_ms_per_step"]
            lines.append(f"| {dataset} | {label} | {SHORT.get(r['metric'], r['metric'])} {_fmt(m['metric'])} | "
                         f"{ece} | {_fmt(m['gamma_final_mean'], 2)} | {ratio:.2f}x ({ms:.1f} ms) | "
                         f"{m['run_seconds_ratio']:.2f}x |")
    lines += [
        "",
        ("Trajectory response (learned controllers; gamma: mean over classes / bins; 'end' = after the last epoch, "
         "'2nd half' = mean over the second half of the logged steps; class 0 = most frequent, class C-1 = rarest, "
         "at the end; verdict on '2nd half': high - low beyond 2 SE):"),
        "",
        ("| data set | contrast (low vs high) | controller | gamma end, low | gamma end, high | 2nd half, low | "
         "2nd half, high | class 0 / class C-1, high | higher under more imbalance? |"),
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for dataset, r in results.items():
        for con in r["contrasts"]:
            for name, ctrl in con["controllers"].items():
                lo, hi = ctrl["low"], ctrl["high"]
                per_class = (f"{_fmt(hi['gamma_final_frequent'], 2)} / {_fmt(hi['gamma_final_rare'], 2)}"
                             if hi["gamma_final_rare"] and hi["gamma_final_rare"][0] is not None else "—")
                v = ctrl["verdict"]["gamma_half_mean"]
                lines.append(
                    f"| {dataset} | {con['label']} | {name} | {_fmt(lo['gamma_final_mean'], 2)} | "
                    f"{_fmt(hi['gamma_final_mean'], 2)} | {_fmt(lo['gamma_half_mean'], 2)} | "
                    f"{_fmt(hi['gamma_half_mean'], 2)} | {per_class} | {v['high_vs_low']} "
                    f"({v['difference']:+.3f}, SE {v['standard_error']:.3f}) |")
    return "\n".join(lines)


def fill_readme(path, table: str, command: str) -> None:
    """Replaces the block between the markers with ``table`` (appends a section holding the block if absent)."""
    if not fill_block(path, START, END, table):
        path = Path(path)
        text = path.read_text() if path.exists() else ""
        sep = "" if text.endswith("\n\n") or not text else ("\n" if text.endswith("\n") else "\n\n")
        path.write_text(f"{text}{sep}{HEADING}\n\n`{command}`\n\n{START}\n{table}\n{END}\n")


def run_study(datasets, seeds: int = 5, gammas=GAMMAS, threads: int | None = None, epochs: int | None = None,
              learned=tuple(LEARNED), hand=None, dataset_kwargs: dict | None = None,
              overrides: dict | None = None,
              timing_rounds: int = 7, timing_warmup: int = 10, timing_steps: int = 100, contrast_seeds=None,
              out=None, readme=None, command: str = "", log=print) -> dict:
    """The whole study; ``dataset_kwargs`` (per data set) and ``overrides`` (config keys) shrink it for tests."""
    t0 = time.perf_counter()
    runner = Runner(threads, epochs, overrides, log=log)
    results = {}
    for dataset in datasets:
        results[dataset] = run_dataset(dataset, seeds, gammas, runner, kwargs=(dataset_kwargs or {}).get(dataset),
                                       learned=learned, hand=hand, timing_rounds=timing_rounds,
                                       timing_warmup=timing_warmup, timing_steps=timing_steps,
                                       contrast_seeds=contrast_seeds)
        log(f"{dataset}: {results[dataset]['seconds']:.0f} s")
    table = markdown(results, seeds)
    report = {"command": command, "seeds": seeds, "gammas": list(gammas), "threads": threads, "epochs": epochs,
              "overrides": overrides or {}, "learned": {n: list(LEARNED[n]) for n in learned},
              "timing": {"rounds": timing_rounds, "warmup": timing_warmup, "steps": timing_steps},
              "torch": torch.__version__, "runs": runner.count, "seconds": time.perf_counter() - t0,
              "results": results, "markdown": table}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1, default=float))
    if readme:
        fill_readme(readme, table, command)
    return report


def main_cli(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--gammas", type=float, nargs="+", default=GAMMAS)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="override every run's epochs (default: the "
                        "data set's DATASET_DEFAULTS)")
    parser.add_argument("--learned", nargs="+", default=list(LEARNED), choices=list(LEARNED))
    parser.add_argument("--timing-rounds", type=int, default=7)
    parser.add_argument("--timing-steps", type=int, default=100)
    parser.add_argument("--out", default=None)
    parser.add_argument("--readme", default=None)
    args = parser.parse_args(argv)
    command = "python -m research.learned_evidence " + " ".join(sys.argv[1:] if argv is None else argv)
    report = run_study(args.datasets, args.seeds, args.gammas, args.threads, args.epochs, tuple(args.learned),
                       timing_rounds=args.timing_rounds, timing_steps=args.timing_steps, out=args.out,
                       readme=args.readme, command=command.strip(), log=lambda m: print(m, flush=True))
    print(report["markdown"])
    return report


if __name__ == "__main__":
    main_cli()
