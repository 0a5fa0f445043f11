"""Sweep throughput on the journal file storage: trials per minute with 1 and 2 worker processes, and the
storage overhead per trial.

A study of very short trials (digits-lt shrunk to a few samples per class, 1 epoch, the fixed-gamma arms x many
seeds, so no TPE sampling) is set up in a fresh journal file per measurement; worker processes are started
(spawn), import everything and run one warm-up training outside the study, then start together on a signal, each
running :func:`adaptive_focal.compare.runner.work` (the same loop as ``adaptive-focal sweep run --workers N``).
Throughput is trials / (time from the start signal until every worker has returned); process start-up is excluded
for both worker counts. The runs alternate 1 worker, 2 workers, 1, 2, ... so that changes in the machine's load
hit both.

Storage overhead: the same study with a no-op objective (``research.train.main`` replaced in the workers by a
function that returns fixed metrics at once) measures what the runner and storage cost per trial (claiming,
heartbeat thread, user attributes, ``tell``, scanning the units); with real trials, the share of worker time not
spent inside ``research.train.main`` (its ``seconds`` user attribute) is reported as well.

    python -m sweeps.bench_throughput [--seeds 10] [--repeats 2] [--epochs 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = {"n_max": 30, "n_val_per_class": 4, "n_test_per_class": 6}


def _study(seeds: int, epochs: int):
    from sweeps.spec import GAMMA_GRID, Arm, DatasetStudy

    arms = tuple(Arm(f"gamma={g:g}", {"loss": "focal", "gamma": g}) for g in GAMMA_GRID)
    return DatasetStudy(name="bench", dataset="digits-lt", seeds=seeds, trials=1, dataset_kwargs=TINY,
                        overrides={"epochs": epochs, "batch_size": 64}, arms=arms)


def _noop(config, epoch_callback=None):
    metrics = {"balanced_accuracy": 0.5, "ece": 0.1, "accuracy": 0.5}
    return {"config": config, "metrics": metrics, "val_metrics": dict(metrics), "history": [],
            "gamma": {"steps": [], "epochs": []}, "seconds": 0.0}


def _worker(study, opts, worker_id, units, noop, ready, go, results):
    import optuna
    import torch

    import research.train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(opts.threads)
    research.train.main({"dataset": study.dataset, "dataset_kwargs": dict(study.dataset_kwargs), "epochs": 1,
                         "threads": opts.threads})  # warm-up: imports, data set generation, first-call costs
    if noop:
        research.train.main = _noop
    from adaptive_focal.compare import runner

    ready.release()
    go.wait()
    start = time.perf_counter()
    counts = runner.work(study, opts, worker_id, units=units)
    results.put((worker_id, time.perf_counter() - start, counts))


def measure(workers: int, *, seeds: int, epochs: int, noop: bool, root: Path, tag: str) -> dict:
    import optuna

    from adaptive_focal.compare import runner
    from adaptive_focal.compare.options import RunOptions
    from adaptive_focal.compare.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(seeds, epochs)
    log = root / f"{tag}.log"
    opts = RunOptions(storage=str(log), workers=workers, progress=False, prune=False)
    storage = open_storage(str(log))
    units = runner.setup(storage, study, seeds=seeds, trials=1)
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(study, opts, i, units, noop, ready, go, results))
             for i in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    load = os.getloadavg()[0]
    start, start_clock = time.perf_counter(), time.time()
    go.set()
    done = [results.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    trials = optuna.get_all_study_summaries(storage)
    complete = sum(s.n_trials for s in trials if s.study_name.startswith("bench/"))
    train_s, last = 0.0, start_clock
    for _, _, name in units:
        for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            train_s += float(t.user_attrs.get("seconds") or 0.0)
            last = max(last, t.datetime_complete.timestamp())
    span = last - start_clock  # until the last trial completed (the workers' final idle poll excluded)
    n = sum(c["complete"] for _, _, c in done)
    assert n == len(units) == complete, (n, len(units), complete)
    busy = sum(s for _, s, _ in done)  # worker-seconds
    return {"workers": workers, "noop": noop, "trials": n, "wall_s": wall, "trials_per_min": 60.0 * n / wall,
            "span_s": span, "trials_per_min_to_last": 60.0 * n / span,
            "worker_s_per_trial": busy / n, "train_s_per_trial": train_s / n,
            "overhead_share": max(0.0, 1.0 - train_s / busy) if busy else None, "load1_at_start": load}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.bench_throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per arm (6 arms: 6 x seeds trials per run)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="alternating 1-worker / 2-worker pairs")
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    print(f"cpus {os.cpu_count()}, load average at start {os.getloadavg()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="af-bench-") as tmp:
        for noop in (False, True):
            for r in range(args.repeats):
                for workers in (1, 2):
                    row = measure(workers, seeds=args.seeds, epochs=args.epochs, noop=noop, root=Path(tmp),
                                  tag=f"{'noop' if noop else 'train'}-{workers}w-{r}")
                    rows.append(row)
                    print(f"{'no-op' if noop else 'train'} {workers} worker(s), run {r + 1}: {row['trials']} trials "
                          f"in {row['wall_s']:.2f} s = {row['trials_per_min']:.0f} trials/min (to the last "
                          f"completed trial {row['span_s']:.2f} s = {row['trials_per_min_to_last']:.0f}/min); "
                          f"worker time per trial {1000 * row['worker_s_per_trial']:.0f} ms, of which training "
                          f"{1000 * row['train_s_per_trial']:.0f} ms (load {row['load1_at_start']:.2f})", flush=True)
    summary = {}
    for noop in (False, True):
        kind = "noop" if noop else "train"
        sel = {w: [r for r in rows if r["noop"] == noop and r["workers"] == w] for w in (1, 2)}
        per = {w: 60.0 * sum(r["trials"] for r in sel[w]) / sum(r["wall_s"] for r in sel[w]) for w in (1, 2)}
        last = {w: 60.0 * sum(r["trials"] for r in sel[w]) / sum(r["span_s"] for r in sel[w]) for w in (1, 2)}
        summary[kind] = {"trials_per_min_1w": per[1], "trials_per_min_2w": per[2], "speedup": per[2] / per[1],
                         "to_last_1w": last[1], "to_last_2w": last[2], "speedup_to_last": last[2] / last[1],
                         "worker_ms_per_trial_1w": 1000 * statistics.fmean(
                             r["worker_s_per_trial"] for r in rows if r["noop"] == noop and r["workers"] == 1)}
    train1 = [r for r in rows if not r["noop"] and r["workers"] == 1]
    summary["train"]["train_ms_per_trial"] = 1000 * statistics.fmean(r["train_s_per_trial"] for r in train1)
    summary["train"]["overhead_share_1w"] = statistics.fmean(r["overhead_share"] for r in train1)
    print()
    print("| objective | 1 worker (trials/min) | 2 workers (trials/min) | speed-up | to the last trial: 1 / 2 "
          "workers (trials/min) | speed-up | worker ms / trial (1 worker) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, s in summary.items():
        print(f"| {kind} | {s['trials_per_min_1w']:.0f} | {s['trials_per_min_2w']:.0f} | {s['speedup']:.2f}x | "
              f"{s['to_last_1w']:.0f} / {s['to_last_2w']:.0f} | {s['speedup_to_last']:.2f}x | "
              f"{s['worker_ms_per_trial_1w']:.0f} |")
    t = summary["train"]
    print(f"\ntraining inside a trial: {t['train_ms_per_trial']:.0f} ms; runner + storage share of a 1-worker "
          f"trial: {100 * t['overhead_share_1w']:.0f}% (no-op trial: {summary['noop']['worker_ms_per_trial_1w']:.0f}"
          f" ms); load average at the end {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary, "argv": sys.argv}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
