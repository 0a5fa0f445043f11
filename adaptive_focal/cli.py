"""The ``adaptive-focal`` command (also ``python -m adaptive_focal.cli``).

    adaptive-focal compare mytask.py:train --mode softmax --metric balanced_accuracy [--seeds K] [--trials N]
                           [--arms gamma=2 policy=pi ...] [--storage PATH|URL] [--out DIR] [run options]
    adaptive-focal sweep list [--studies SRC ...]
    adaptive-focal sweep run STUDY [--studies SRC ...] [--arms A ...] [--set KEY=VALUE ...] [run options]
    adaptive-focal sweep report STUDY [STUDY ...] [--storage PATH|URL|EXPORT|FOLDER] [--out DIR] [--wandb MODE]
    adaptive-focal sweep export STUDY [STUDY ...] [--storage PATH|URL] [--out DIR]
    adaptive-focal storage repair JOURNAL

``compare`` runs the comparison on your own training function (:mod:`adaptive_focal.compare`); ``sweep`` runs
studies defined in files (by default the ``sweeps/studies`` folder of the working directory, or ``--studies``).
The run options are :class:`adaptive_focal.compare.RunOptions`' fields, one option each. Everything is imported
when a command runs, so ``import adaptive_focal`` (and this module) stays light.

Example (the parser alone; :func:`main` runs the command):
    >>> args = parser().parse_args(["sweep", "run", "digits-lt", "--set", "epochs=1", "--workers", "2"])
    >>> args.command, args.action, args.study, args.settings, args.workers
    ('sweep', 'run', 'digits-lt', [('epochs', 1)], 2)
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "parser"]

EXIT_USAGE, EXIT_FAILED = 2, 1


# ----------------------------------------------------------------------------------------------------------
# options shared by commands
# ----------------------------------------------------------------------------------------------------------
def _run_option_specs():
    """``[(dest, flag, argparse kwargs), ...]``: one option per :class:`RunOptions` field (no Optuna import)."""
    from .compare.options import RunOptions

    out = []
    for f in RunOptions.cli_fields():
        meta = f.metadata
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        if f.type == "bool":
            out.append((f.name, flag, {"action": "store_false" if f.default else "store_true", "default": f.default,
                                       "help": meta["help"]}))
            continue
        typ = int if f.type.startswith("int") else float if f.type.startswith("float") else str
        shown = "" if f.default is None else f" (default {f.default})"
        kwargs = {"type": typ, "default": f.default, "metavar": meta.get("metavar"), "help": meta["help"] + shown}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        out.append((f.name, flag, kwargs))
    return out


def _add_run_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("run options")
    for dest, flag, kwargs in _run_option_specs():
        group.add_argument(flag, dest=dest, **kwargs)


def _run_options(args):
    from .compare.options import RunOptions

    return RunOptions(**{dest: getattr(args, dest) for dest, _, _ in _run_option_specs()})


def _add_report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="folder for the report: report.md, CSV, JSON and PNG files")
    p.add_argument("--wandb", choices=("disabled", "offline", "online"),
                   help="also log the report's tables and figures to W&B in this mode")
    _add_margin(p)


def _margin(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"--margin must be a positive number, got {text!r}")
    return value


def _add_margin(p: argparse.ArgumentParser) -> None:
    p.add_argument("--margin", type=_margin, metavar="DELTA",
                   help="equivalence margin, fixed before looking at the results: test whether each arm matches the "
                        "best fixed gamma within ±DELTA of the metric (TOST, Holm-adjusted over the arms)")


def _add_studies(p: argparse.ArgumentParser) -> None:
    p.add_argument("--studies", nargs="+", metavar="SRC",
                   help="study definitions: folders, .py files or modules (default: $ADAPTIVE_FOCAL_STUDIES, else "
                        "sweeps/studies in the working directory)")


def _key_value(text: str):
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set needs KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def parser() -> argparse.ArgumentParser:
    """The command line: one parser per command."""
    top = argparse.ArgumentParser(prog="adaptive-focal", description="adaptive_focal command line")
    sub = top.add_subparsers(dest="command", required=True)

    cmp_ = sub.add_parser("compare", help="compare fixed, tuned and adaptive gamma on your own training function",
                          description="Runs every arm on OBJECTIVE (a function `train(run) -> dict`, see "
                                      "adaptive_focal.compare.objective) for each seed and prints the leaderboard "
                                      "with each arm paired against the best fixed gamma.")
    cmp_.add_argument("objective", help="FILE.py:FUNCTION or MODULE:FUNCTION")
    cmp_.add_argument("--mode", required=True, choices=("softmax", "sigmoid"), help="the loss run.make_loss builds")
    cmp_.add_argument("--metric", required=True, help="the validation metric to select and rank on (a key of the "
                                                      "'val' dict the function returns)")
    cmp_.add_argument("--direction", choices=("maximize", "minimize"), default="maximize")
    cmp_.add_argument("--arms", nargs="+", metavar="ARM",
                      help="arm names: gamma=<number>, gamma=tpe, policy=<name>, policy=<name>+tpe (a tuned arm may "
                           "end in @seeds); default: the gamma grid, gamma=tpe and every policy for --mode")
    cmp_.add_argument("--learned", action="store_true",
                      help="include the learned controllers in the default arms (your function passes model=, "
                           "val_source= and optimizer= to run.make_policy)")
    cmp_.add_argument("--name", help="the study's name (default: the function's name)")
    cmp_.add_argument("--seeds", type=int, default=3, metavar="K", help="seeds per arm (default 3)")
    cmp_.add_argument("--trials", type=int, default=10, metavar="N", help="TPE trials per tuned arm and seed "
                                                                        "(default 10)")
    cmp_.add_argument("--storage", metavar="PATH|URL", help="journal file or database URL (default "
                                                             "runs/compare/<name>.log); the same command resumes")
    cmp_.add_argument("--out", help="folder for the report (default runs/compare/<name>)")
    cmp_.add_argument("--wandb", choices=("disabled", "offline", "online"),
                      help="also log the report's tables and figures to W&B in this mode")
    _add_margin(cmp_)
    group = cmp_.add_argument_group("run options")
    for dest, flag, kwargs in _run_option_specs():
        if dest not in ("storage", "seeds", "trials"):
            group.add_argument(flag, dest=dest, **kwargs)

    sweep = sub.add_parser("sweep", help="run and report studies defined in files (this repository's sweeps/)")
    ssub = sweep.add_subparsers(dest="action", required=True)
    lst = ssub.add_parser("list", help="list the studies")
    _add_studies(lst)
    run = ssub.add_parser("run", help="run (or resume) a study's arms x seeds, then print its leaderboard")
    run.add_argument("study", help="a study name (see `adaptive-focal sweep list`)")
    _add_studies(run)
    run.add_argument("--arms", nargs="+", metavar="ARM", help="run only these arms of the study")
    run.add_argument("--set", dest="settings", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                     help="override one of the study's settings for every trial (e.g. epochs=1; values read as "
                          "JSON when they parse)")
    run.add_argument("--epochs", type=int, help="the same as --set epochs=E")
    run.add_argument("--no-report", action="store_true", help="do not print the leaderboard at the end")
    _add_run_options(run)
    rep = ssub.add_parser("report", help="print studies' leaderboards (Markdown); with --out or --wandb also the "
                                         "full analysis")
    rep.add_argument("studies_", nargs="+", metavar="STUDY")
    rep.add_argument("--storage", help="journal file or database URL holding the studies, an export file "
                                       "(<study>.json.gz) or a folder of them (default: each study's "
                                       "runs/sweeps/<study>.log)")
    _add_report_options(rep)
    rep.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    rep.add_argument("--boot-seed", type=int, default=0)
    rep.add_argument("--readme", help="also write each study's top arms between <!-- leaderboards:start --> and "
                                      "<!-- leaderboards:end --> in this file")
    rep.add_argument("--top", type=int, default=12, help="arms per study in the --readme block (default 12)")
    exp = ssub.add_parser("export", help="write studies' finished trials to <out>/<study>.json.gz")
    exp.add_argument("studies_", nargs="+", metavar="STUDY")
    exp.add_argument("--storage", help="journal file or database URL (default: each study's runs/sweeps/<study>.log)")
    exp.add_argument("--out", default="sweeps/results/trials", help="folder (default %(default)s)")

    storage = sub.add_parser("storage", help="storage maintenance")
    stsub = storage.add_subparsers(dest="action", required=True)
    repair = stsub.add_parser("repair", help="repair a journal file damaged by a cut record (the original is kept "
                                             "as <file>.damaged)")
    repair.add_argument("journal")
    return top


# ----------------------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------------------
def _compare(args) -> int:
    from .compare.api import compare

    opts = {dest: getattr(args, dest) for dest, _, _ in _run_option_specs() if dest not in ("storage", "seeds",
                                                                                             "trials")}
    result = compare(args.objective, mode=args.mode, metric=args.metric, direction=args.direction, seeds=args.seeds,
                     trials=args.trials, arms=args.arms, learned=args.learned, name=args.name, storage=args.storage,
                     out=args.out, wandb=args.wandb, margin=args.margin, **opts)
    print(result.markdown)
    print(f"\nwrote {', '.join(result.files)} to {args.out or 'runs/compare/' + result.study.name}; trials in "
          f"{result.storage}")
    return 0


def _default_storage(name: str) -> str:
    from .compare.storage import default_storage

    return default_storage(name)


def _sweep(args) -> int:
    from .compare.studies import find_studies

    index = find_studies(args.studies if hasattr(args, "studies") else None)
    if args.action == "list":
        for name in index.names():
            s = index.load(name)
            across = f" ({len(s.across_seeds_arms)} tuned across seeds)" if s.across_seeds_arms else ""
            what = s.meta.get("dataset") or s.meta.get("objective") or s.objective
            print(f"{name}: {what}, {len(s.arms)} arms{across}, {s.seeds} seeds, {s.trials} trials per tuned arm")
        return 0
    if args.action == "export":
        from .compare.export import export_study, read_export

        for name in args.studies_:
            path = export_study(args.storage or _default_storage(name), name, args.out)
            data = read_export(path)
            print(f"{name}: {len(data['trials'])} trials -> {path}"
                  + (f" (not exported: {data['other_trials']})" if data["other_trials"] else ""))
        return 0
    if args.action == "report":
        from .compare.report import README_END, README_START, fill_block, readme_block, run_report

        if args.readme is not None:
            from pathlib import Path

            text = Path(args.readme).read_text() if Path(args.readme).is_file() else ""
            if README_START not in text or README_END not in text:
                raise ValueError(f"--readme {args.readme!r} has no {README_START} ... {README_END} block")
        text, analyses, written = run_report(args.studies_, args.storage, out=args.out, wandb_mode=args.wandb,
                                             n_boot=args.n_boot, boot_seed=args.boot_seed,
                                             default_storage=_default_storage, equivalence_margin=args.margin)
        if args.readme is not None:
            fill_block(args.readme, README_START, README_END, readme_block(analyses, args.top))
        if args.out is None and args.wandb is None:
            from .compare.report import markdown

            text = "\n\n".join(markdown(a["summary"], a["study"]) for a in analyses)
        print(text)
        if written:
            print(f"\nwrote the report to {args.out}")
        return 0
    # run
    from .compare.report import report
    from .compare.runner import run

    study = index.load(args.study)
    if args.arms:
        study = study.select_arms(args.arms)
    settings = dict(args.settings)
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if settings:
        study = study.with_settings(**settings)
    opts = _run_options(args)
    opts.storage = opts.storage or _default_storage(study.name)
    run(study, opts)
    if not args.no_report:
        print()
        print(report(study.name, opts.storage))
    return 0


def _storage(args) -> int:
    from .compare.storage import repair_journal

    result = repair_journal(args.journal)
    print(f"{args.journal}: kept {result['records']} records, removed {result['fragments']} cut fragment(s) "
          f"({result['bytes_removed']} bytes); the original is {args.journal}.damaged")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    commands = {"compare": _compare, "sweep": _sweep, "storage": _storage}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except ImportError as err:
        print(f"adaptive-focal: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - every error ends in one line; the trials' tracebacks were printed
        from_run = type(err).__name__ in ("TrialsFailedError",) or (
            isinstance(err, RuntimeError) and type(err).__name__ == "RuntimeError")
        if not isinstance(err, (ValueError, RuntimeError)):
            raise
        print(f"adaptive-focal: error: {err}", file=sys.stderr)
        return EXIT_FAILED if from_run else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

