"""The ``adaptive-focal`` command (also ``python -m adaptive_focal.cli``).

    adaptive-focal sweep run digits-lt [--trials N] [--seeds K] [--workers N] [--storage URL|PATH]
    adaptive-focal sweep report digits-lt [--storage URL|PATH] [--out DIR] [--wandb disabled|offline|online]
    adaptive-focal sweep list

Sweeps need the repository's ``sweeps`` and ``research`` packages (run from the repository root) and Optuna;
they are imported only when a sweep command runs, so ``import adaptive_focal`` never imports them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-focal", description="adaptive_focal command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="Optuna studies over gamma policies and baselines")
    ssub = sweep.add_subparsers(dest="action", required=True)

    run = ssub.add_parser("run", help="run (or resume) a study's arms x seeds")
    run.add_argument("study", help="a study name (see `adaptive-focal sweep list`)")
    run.add_argument("--trials", type=int, help="TPE trials per tuned arm and seed, or per arm for arms tuned "
                                                "across seeds (default: the study's)")
    run.add_argument("--seeds", type=int, help="seeds per arm (default: the study's)")
    run.add_argument("--workers", type=int, default=1, help="parallel worker processes on this machine")
    run.add_argument("--storage", help="a journal file path (default runs/sweeps/<study>.log) or a database URL "
                                       "such as postgresql://user@host/db for workers on many machines")
    run.add_argument("--arms", nargs="+", help="run only these arms")
    run.add_argument("--epochs", type=int, help="override every trial's epochs")
    run.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    run.add_argument("--multi-objective", action="store_true",
                     help="maximise the validation headline metric and minimise validation ECE (no pruning)")
    run.add_argument("--no-prune", action="store_true", help="no pruning: neither MedianPruner on the per-epoch "
                                                             "validation metric nor, for arms tuned across seeds, "
                                                             "WilcoxonPruner over the seeds")
    run.add_argument("--heartbeat-interval", type=float, default=10.0)
    run.add_argument("--grace-period", type=float, default=30.0)
    run.add_argument("--quiet", action="store_true", help="no per-trial progress lines")
    run.add_argument("--no-report", action="store_true", help="do not print the leaderboard at the end")

    rep = ssub.add_parser("report", help="print a study's leaderboard (Markdown) from its storage; with --out "
                                         "or --wandb also the full analysis (python -m sweeps.report)")
    rep.add_argument("study")
    rep.add_argument("--storage", help="as for run")
    rep.add_argument("--out", help="folder for the full report: report.md, CSV, JSON and PNG files")
    rep.add_argument("--wandb", choices=("disabled", "offline", "online"),
                     help="also log the report's tables and figures to W&B in this mode")

    ssub.add_parser("list", help="list the studies")
    return parser


def _import_sweeps():
    """sweeps/ and research/ live in the repository, next to the package; a console script does not have the
    working directory on sys.path, so add it when it is the repository root."""
    try:
        import sweeps.studies  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name not in ("sweeps", "research") or not (Path.cwd() / "sweeps" / "studies").is_dir():
            raise ImportError("the sweep commands need the repository's sweeps/ and research/ packages: run "
                              "adaptive-focal from the repository root") from err
        sys.path.insert(0, str(Path.cwd()))


def _sweep(args) -> int:
    _import_sweeps()
    from sweeps.studies import list_studies, load_study  # lazy: needs optuna and research

    if args.action == "list":
        for name in list_studies():
            s = load_study(name)
            across = f" ({len(s.across_seeds_arms)} tuned across seeds)" if s.across_seeds_arms else ""
            print(f"{name}: {s.dataset}, {len(s.arms)} arms{across}, {s.seeds} seeds, {s.trials} trials per tuned "
                  "arm")
        return 0
    from sweeps import report as report_mod
    from sweeps import runner

    study = load_study(args.study)
    storage = args.storage or runner.default_storage(study.name)
    if args.action == "report":
        if "://" not in storage and not Path(storage).is_file():
            raise ValueError(f"no storage file {storage!r}; run `adaptive-focal sweep run {args.study}` first or "
                             "pass --storage")
        if args.out is None and args.wandb is None:
            print(report_mod.report(study.name, storage))
            return 0
        markdown, _, written = report_mod.run_report([study.name], storage, out=args.out, wandb_mode=args.wandb)
        print(markdown)
        if written:
            print(f"\nwrote the report to {args.out}")
        return 0
    if args.arms:
        study = study.select_arms(args.arms)
    if args.epochs is not None:
        study = study.replace(overrides={**study.overrides, "epochs": args.epochs})
    opts = runner.RunOptions(storage=storage, seeds=args.seeds, trials=args.trials, workers=args.workers,
                             heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
                             multi_objective=args.multi_objective, prune=not args.no_prune, threads=args.threads,
                             progress=not args.quiet)
    runner.run(study, opts)
    if not args.no_report:
        print()
        print(report_mod.report(study.name, storage))
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "sweep":
            return _sweep(args)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, ImportError) as err:  # StorageError and StudyMismatchError included
        print(f"adaptive-focal: error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
