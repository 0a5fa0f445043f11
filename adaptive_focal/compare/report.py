r"""The report of a comparison: Markdown, CSV, JSON and PNG files, and optionally a W&B run holding the same.

:func:`markdown` is the minimal leaderboard (per arm, mean ± std over seeds of the metric of each seed's selected
trial); :func:`analysis_markdown` adds the tables of :func:`~adaptive_focal.compare.analysis.analyse`;
:func:`write_outputs` writes ``report.md``, ``leaderboard.csv``, ``per_seed.csv``, ``paired.csv``,
``tuning_cost.csv``, ``pareto.csv``, ``results.json`` and PNG figures into a folder; :func:`run_report` does it
all for studies named in a storage (or export files); :func:`fill_block` writes generated Markdown between two
markers of a README.

Example (:func:`fill_block` on a scratch file):
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     readme = pathlib.Path(tmp, "README.md")
    ...     _ = readme.write_text("# Results\n<!-- start -->\n(old)\n<!-- end -->\n")
    ...     fill_block(readme, "<!-- start -->", "<!-- end -->", "| arm | mean |")
    ...     print(readme.read_text(), end="")
    True
    # Results
    <!-- start -->
    | arm | mean |
    <!-- end -->
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

from .analysis import (
    BOOT_SEED,
    CONFIRMATORY_SEEDS,
    N_BOOT,
    analyse,
    collect,
    leaderboard,
    wilcoxon_min_p,
)
from .export import export_path, is_export
from .results import load_units

__all__ = ["README_END", "README_START", "WandbReportLogger", "analysis_markdown", "fill_block", "full_markdown",
           "markdown", "readme_block", "report", "run_report", "storage_for", "write_outputs"]


def _f(v, digits=3, signed=False):
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _p(v) -> str:
    """A p-value: 3 decimals, or 2 significant digits below 0.001; "-" when there is none."""
    if v is None:
        return "-"
    return f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"


def _title(study_name: str, meta: dict) -> str:
    what = meta.get("dataset") or meta.get("objective")
    return f"{study_name} ({what})" if what else study_name


def markdown(data: dict, study_name: str) -> str:
    """The minimal leaderboard of :func:`~adaptive_focal.compare.analysis.collect` output."""
    rows = leaderboard(data)
    split, m = data.get("split", "test"), data["metric"]
    lower = " (lower is better)" if data.get("direction") == "minimize" else ""
    lines = [f"### {_title(study_name, data.get('meta') or {})}: {split} {m}{lower}, mean ± std over seeds", "",
             f"| rank | arm | {split} {m} | seeds | completed runs | pruned runs |", "|---:|---|---:|---:|---:|---:|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['arm']} | {r['mean']:.3f} ± {r['std']:.3f} | {r['seeds']} | {r['trials']} | "
                     f"{_count(r.get('runs_pruned'))} |")
    missing = [a for a in data["arms"] if a not in {r["arm"] for r in rows}]
    if missing:
        lines += ["", f"No completed trial yet: {', '.join(missing)}."]
    if split == "val":
        lines += ["", "The objective returned no test metrics: these are the validation values the tuned arms were "
                      "selected on, which flatters them (return a 'test' dict for an unbiased comparison)."]
    return "\n".join(lines)


def _count(v) -> str:
    return "-" if v is None else str(v)


#: what the manifest's ``pruner`` says about the arms tuned per seed (no key: ``median``, see the runner)
_PRUNERS = {
    None: "`median` (the manifest records no pruner), MedianPruner from the first epoch; a study made before "
          "`--pruner` existed may instead have been run with `--no-prune`",
    "median": "`median`, MedianPruner from the first epoch",
    "late": "`late`, MedianPruner only in the last fifth of the reported epochs",
    "none": "`none`, every run trains to its end",
}


def _budget_lines(a: dict) -> list[str]:
    """What the arms spent, the pruner, and which arms pruning left with fewer completed runs."""
    board = a["leaderboard"]
    lines = [("Budget: a run is one configuration trained on one seed; completed runs are the ones a selection can "
              "choose from, pruned runs were stopped early by the pruner and return nothing.")]
    if any(r["kind"] == "tuned" for r in board):
        lines[0] += f" Pruner of the arms tuned per seed: {_PRUNERS.get(a.get('pruner'), a.get('pruner'))}."
    short = [r for r in board if r.get("runs_pruned")]
    if short:
        shown = ", ".join(f"{r['arm']} {r['runs_completed']} of {r['runs']} ({r['runs_pruned']} pruned)"
                          for r in sorted(short, key=lambda r: (r["runs_completed"], r["arm"])))
        full = [r for r in board if r["kind"] == "tuned" and not r.get("runs_pruned")]
        lines.append(f"Pruning left {'this arm' if len(short) == 1 else 'these arms'} fewer completed runs than "
                     f"started: {shown}"
                     + (f", while {', '.join(r['arm'] for r in full)} completed every run" if full else "")
                     + ". Budgets are matched in runs started, not in completed runs: an arm with fewer "
                       "completed runs had fewer configurations to select from.")
    for r in board:
        if r.get("configs_stopped"):
            lines.append(f"The Wilcoxon pruner stopped {r['configs_stopped']} configuration(s) of {r['arm']} before "
                         f"their last seed ({r['runs_completed']} completed runs; seeds not reached were never "
                         "started).")
    other = a.get("other_trials") or {}
    if other.get("FAIL"):
        lines.append(f"{other['FAIL']} run(s) of this study failed (stored as FAIL with their error, not counted "
                     "above; running the study again retries them).")
    if other.get("WAITING") or other.get("RUNNING"):
        lines.append(f"The study is not finished: {other.get('WAITING', 0)} run(s) waiting, "
                     f"{other.get('RUNNING', 0)} running.")
    return [" ".join(lines), ""]


def _paired_lines(a: dict) -> list[str]:
    """The paired table against the best fixed gamma, and what its statistics are."""
    m, s, ref, rows = a["metric"], a["split"], a["reference"], a["paired"]
    level, alpha, margin = round(100 * a["ci_level"]), a.get("alpha", 0.05), a.get("equivalence_margin")
    head = (f"| arm | seeds | mean diff ({s} {m}) | {level}% t-interval | t-test p | Holm p | Wilcoxon exact p | "
            "wins / ties / losses |")
    rule = "|---|---:|---:|---|---:|---:|---:|---:|"
    if margin is not None:
        head += f" TOST p (Holm), ±{margin:g} | within ±{margin:g} |"
        rule += "---:|:---:|"
    lines = [f"#### Paired by seed against the best fixed gamma, {ref} (chosen by mean validation {m})", "", head,
             rule]
    for r in rows:
        ci = "-" if r.get("t_low") is None else f"[{r['t_low']:+.3f}, {r['t_high']:+.3f}]"
        tp = _p(r.get("t_p")) if r.get("t_p") is not None or r.get("sd_diff") != 0 else "no variation"
        line = (f"| {r['arm']} | {r['n']} | {_f(r['mean_diff'], signed=True)} | {ci} | {tp} | "
                f"{_p(r.get('holm_p'))} | {_p(r.get('wilcoxon_exact_p'))} | "
                f"{r['wins']} / {r['ties']} / {r['losses']} |")
        if margin is not None:
            verdict = "-" if r.get("equivalent") is None else ("yes" if r["equivalent"] else "no")
            line += f" {_p(r.get('tost_holm_p'))} | {verdict} |"
        lines.append(line)
    k = a.get("holm_family", len(rows))
    ns = [r["n"] for r in rows if r["n"]]
    n_max = max(ns, default=0)
    text = [f"Differences are arm minus {ref} on the same seed; a win is better in the metric's direction.",
            (f"{level}% t-interval: mean ± t(n-1) sd / sqrt(n) of the n paired differences; t-test p: two-sided, "
             "for a mean difference of 0."),
            (f"Holm p: the t-test p-values adjusted by Holm's step-down method over the {k} arms of this table: an "
             f"arm differs from {ref} when its Holm p <= {alpha:g}, with a family-wise error of {alpha:g}.")]
    text.append("Wilcoxon exact p: the signed-rank test, two-sided, zero differences dropped (Wilcoxon's "
                "convention), tied differences at their average rank, p from the exact distribution over the "
                f"2^n sign flips. With n non-zero differences it cannot go below 2^(1-n) (n = {n_max}: "
                f"{wilcoxon_min_p(n_max):.3g})")
    if k and wilcoxon_min_p(n_max) > alpha / k:
        text[-1] += (f", above Holm's first threshold {alpha:g}/{k} = {alpha / k:.2g}: no Wilcoxon result here "
                     "could survive the adjustment")
    text[-1] += "."
    if margin is not None:
        text.append(f"Equivalence: two one-sided paired t-tests (TOST) at {alpha:g} against a margin of ±{margin:g} "
                    f"fixed before the results; 'yes' when the TOST p, Holm-adjusted over the table, is <= "
                    f"{alpha:g}: the arm matches {ref} within ±{margin:g}. For one arm alone this is its "
                    f"{round(100 * (1 - 2 * alpha))}% t-interval lying inside [-{margin:g}, {margin:g}]; 'no' means "
                    "equivalence is not shown, not that the arm differs.")
    if a.get("exploratory"):
        low = min(ns, default=0)
        text.append(f"**Exploratory**: these comparisons pair fewer than {CONFIRMATORY_SEEDS} seeds (n = "
                    f"{low if low == n_max else f'{low} to {n_max}'}); the protocol asks for at least "
                    f"{CONFIRMATORY_SEEDS} paired seeds before a difference or an equivalence is a confirmatory "
                    "claim.")
    text.append("The percentile bootstrap interval of earlier reports is not shown: over 5 paired seeds a 95% "
                "bootstrap interval excludes 0 about 16% of the time when there is no difference, where the "
                "t-interval keeps its 5%. It is still computed (`ci_low`, `ci_high` in paired.csv and results.json) "
                "only because the paper's committed tables were made with it.")
    return lines + [""] + [f"- {t}" for t in text] + [""]


def analysis_markdown(a: dict, figures: dict | None = None) -> str:
    """The analysis tables of one study (without the first, minimal leaderboard)."""
    m, s, lines = a["metric"], a["split"], []
    title = a.get("dataset") or a["study"]
    lines += [f"#### Leaderboard ({title}): mean ± std over seeds", "",
              (f"| rank | arm | kind | {s} {m} | val {m} | {s} ECE | seeds | completed runs | pruned runs | "
               "s / run |"), "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(a["leaderboard"], 1):
        ece = "-" if r["ece_mean"] is None else f"{r['ece_mean']:.3f} ± {r['ece_std']:.3f}"
        val = "-" if r["val_mean"] is None else f"{r['val_mean']:.3f} ± {r['val_std']:.3f}"
        lines.append(f"| {i} | {r['arm']} | {r['kind']} | {r['mean']:.3f} ± {r['std']:.3f} | {val} | {ece} | "
                     f"{r['seeds']} | {r['trials']} | {_count(r.get('runs_pruned'))} | "
                     f"{_f(r['seconds_per_trial'], 2)} |")
    lines.append("")
    lines += _budget_lines(a)
    if a["reference"] is None:
        lines += ["No fixed-gamma arm with results: no paired comparison.", ""]
    else:
        lines += _paired_lines(a)
    tc = a["tuning_cost"]
    if tc["curves"]:
        lines += [f"#### Tuning cost: best-so-far validation {m} against trials (mean over seeds)", ""]
        for arm, rows in tc["curves"].items():
            lines.append(f"- {arm}: " + ", ".join(f"{round(r['trials'], 2):g}: {_f(r['best_val_mean'])}"
                                                  for r in rows if r["trials"] is not None))
        for d in tc["defaults"] + ([tc["grid"]] if tc["grid"] else []):
            lines.append(f"- {d['arm']} at {d['trials']} run(s): {_f(d['val_mean'])} ± {_f(d['val_std'])}")
        if any(r["kind"] == "tuned across seeds" and r["arm"] in tc["curves"] for r in a["leaderboard"]):
            lines.append("- Arms tuned across seeds: x is training runs per seed (a pruned configuration costs "
                         "the seeds it ran), y the mean validation metric over every seed of the best configuration "
                         "so far that evaluated every seed.")
        lines.append("")
    if a["pareto"]:
        hi = "higher" if a["direction"] == "maximize" else "lower"
        name = m.replace("_", " ")
        lines += [f"#### Pareto front: {s} {name} ({hi}) vs {s} ECE (lower), arm means", "",
                  f"| arm | {name} | ECE | on the front |", "|---|---:|---:|:---:|"]
        sign = 1 if a["direction"] == "maximize" else -1
        for r in sorted(a["pareto"], key=lambda r: (not r["front"], -sign * r[m])):
            lines.append(f"| {r['arm']} | {r[m]:.3f} | {r['ece']:.3f} | {'yes' if r['front'] else ''} |")
        lines.append("")
    if not a["gamma_trajectories"]:
        lines += ["Gamma trajectories: not stored in this study's trials (skipped).", ""]
    for caption, name in (figures or {}).items():
        lines += [f"![{caption}]({name})", ""]
    return "\n".join(lines)


def _plots(a: dict, out: Path) -> dict:
    """PNG figures of one study into ``out``; returns ``{caption: file name}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures, stem, m, s = {}, a["study"].replace("/", "_"), a["metric"], a["split"]

    def save(fig, suffix: str, caption: str) -> None:
        fig.tight_layout()
        name = f"{stem}_{suffix}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        figures[caption] = name

    tc = a["tuning_cost"]
    if tc["curves"] or tc["defaults"] or tc["grid"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, rows in tc["curves"].items():
            pts = [(r["trials"], r["best_val_mean"]) for r in rows if r["best_val_mean"] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{arm} (best so far)")
        for i, d in enumerate(tc["defaults"] + ([tc["grid"]] if tc["grid"] else []), len(tc["curves"])):
            color = f"C{i % 10}"
            ax.axhline(d["val_mean"], ls="--", lw=0.8, alpha=0.7, color=color)
            ax.plot([d["trials"]], [d["val_mean"]], marker="s", ls="", color=color, label=f"{d['arm']} (1 config)"
                    if d["trials"] == 1 else d["arm"])
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(xlabel="trials (runs)", ylabel=f"validation {m}", title=f"{a['study']}: tuning cost")
        ax.legend(fontsize=6)
        save(fig, "tuning_cost", "Tuning cost")
    if a["pareto"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        front = sorted((r for r in a["pareto"] if r["front"]), key=lambda r: r["ece"])
        for r in a["pareto"]:
            ax.scatter(r["ece"], r[m], color="C3" if r["front"] else "C0", s=18)
            ax.annotate(r["arm"], (r["ece"], r[m]), fontsize=6)
        if front:
            ax.plot([r["ece"] for r in front], [r[m] for r in front], color="C3", lw=1)
        ax.set(xlabel=f"{s} ECE (lower is better)", ylabel=f"{s} {m.replace('_', ' ')}",
               title=f"{a['study']}: Pareto front")
        save(fig, "pareto", "Pareto front")
    if a["gamma_trajectories"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (arm, series) in enumerate(a["gamma_trajectories"].items()):
            for j, traj in enumerate(series.values()):
                ax.plot([p[0] for p in traj], [p[1] for p in traj], color=f"C{i % 10}", lw=1,
                        label=arm if j == 0 else None)
        ax.set(xlabel="epoch", ylabel="gamma (mean over classes)", title=f"{a['study']}: gamma trajectories")
        ax.legend(fontsize=6)
        save(fig, "gamma", "Gamma trajectories")
    return figures


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})


def full_markdown(analyses: list[dict], figures: dict | None = None) -> str:
    """The minimal leaderboard of each study first, then its analysis."""
    parts = []
    for a in analyses:
        parts.append(markdown(a["summary"], a["study"]))
        parts.append("")
        parts.append(analysis_markdown(a, (figures or {}).get(a["study"])))
    return "\n".join(parts)


def write_outputs(analyses: list[dict], out_dir) -> dict:
    """Writes ``report.md``, ``leaderboard.csv``, ``per_seed.csv``, ``paired.csv``, ``tuning_cost.csv``,
    ``pareto.csv`` (when the trials report ECE), ``results.json`` and PNG figures into ``out_dir``; returns
    ``{"dir", "files", "figures": {study: {caption: file}}}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {a["study"]: _plots(a, out) for a in analyses}
    (out / "report.md").write_text(full_markdown(analyses, figures) + "\n")
    tables = {
        "leaderboard.csv": [{"study": a["study"], "dataset": a["dataset"], "metric": a["metric"], "rank": i, **r}
                            for a in analyses for i, r in enumerate(a["leaderboard"], 1)],
        "per_seed.csv": [{"study": a["study"], **r} for a in analyses for r in a["per_seed"]],
        "paired.csv": [{"study": a["study"], **r} for a in analyses for r in a["paired"]],
        "tuning_cost.csv": [{"study": a["study"], "arm": arm, **r} for a in analyses
                            for arm, rows in a["tuning_cost"]["curves"].items() for r in rows]
                           + [{"study": a["study"], "arm": d["arm"], "trials": d["trials"],
                               "best_val_mean": d["val_mean"], "best_val_std": d["val_std"]}
                              for a in analyses for d in a["tuning_cost"]["defaults"]
                              + ([a["tuning_cost"]["grid"]] if a["tuning_cost"]["grid"] else [])],
        "pareto.csv": [{"study": a["study"], **r} for a in analyses for r in (a["pareto"] or [])],
    }
    files = ["report.md"]
    for name, rows in tables.items():
        if rows:
            _write_csv(out / name, rows)
            files.append(name)
    (out / "results.json").write_text(json.dumps(analyses, indent=1, default=str))
    files.append("results.json")
    files += [f for figs in figures.values() for f in figs.values()]
    return {"dir": str(out), "files": files, "figures": figures}


# ----------------------------------------------------------------------------------------------------------
# W&B: a small logger of our own (optuna-integration's W&B callback is deprecated)
# ----------------------------------------------------------------------------------------------------------
class WandbReportLogger:
    """Logs a report's leaderboards, paired tests and figures to one W&B run. ``mode`` must be given
    ("disabled", "offline", "online"); a W&B error warns and turns logging off, it never stops the report."""

    def __init__(self, mode: str, *, project: str = "adaptive_focal-sweeps", name: str | None = None,
                 dir=None, config: dict | None = None) -> None:
        if mode not in ("disabled", "offline", "online"):
            raise ValueError(f"wandb mode must be disabled, offline or online, got {mode!r}")
        import wandb

        self._wandb, self._failed = wandb, False
        self.run = wandb.init(project=project, name=name, mode=mode, dir=None if dir is None else str(dir),
                              config=dict(config or {}), reinit="finish_previous")

    def _guard(self, fn, *args):
        if self._failed:
            return
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001 - W&B must never stop the report
            self._failed = True
            warnings.warn(f"W&B logging failed ({err!r}); not logging the rest", RuntimeWarning, stacklevel=3)

    def table(self, key: str, rows: list[dict]) -> None:
        if not rows:
            return
        keys = list(dict.fromkeys(k for r in rows for k in r))
        data = [[json.dumps(r.get(k)) if isinstance(r.get(k), (list, dict)) else r.get(k) for k in keys]
                for r in rows]
        self._guard(lambda: self.run.log({key: self._wandb.Table(columns=keys, data=data)}))

    def image(self, key: str, path) -> None:
        self._guard(lambda: self.run.log({key: self._wandb.Image(str(path))}))

    def analyses(self, analyses: list[dict], written: dict | None = None) -> None:
        for a in analyses:
            self.table(f"{a['study']}/leaderboard", a["leaderboard"])
            self.table(f"{a['study']}/paired", a["paired"])
            if a["pareto"]:
                self.table(f"{a['study']}/pareto", a["pareto"])
            if written:
                for caption, name in written["figures"].get(a["study"], {}).items():
                    self.image(f"{a['study']}/{caption}", Path(written["dir"]) / name)

    def finish(self) -> None:
        self._guard(self.run.finish)


# ----------------------------------------------------------------------------------------------------------
# from a storage
# ----------------------------------------------------------------------------------------------------------
def storage_for(study_name: str, spec, *, default=None, connect_timeout: int = 5):
    """What :func:`~adaptive_focal.compare.results.load_units` reads for ``study_name``: an export file as its path
    (``spec`` ending in ``.json.gz``, or a folder holding ``<study>.json.gz``), else the Optuna storage ``spec``
    (or ``default``) opened for reading."""
    from .storage import is_url, open_storage

    spec = spec if spec is not None else default
    if spec is None:
        raise ValueError(f"no storage given for study {study_name!r}")
    spec = str(spec)
    if not is_url(spec) and Path(spec).is_dir():
        folder, spec = spec, str(export_path(spec, study_name))
        if not Path(spec).is_file():
            found = sorted(p.name for p in Path(folder).glob("*.json.gz"))
            raise ValueError(f"no export of study {study_name!r} in folder {folder!r} (it holds: "
                             f"{', '.join(found) or 'no exports'})")
    if is_export(spec):
        if not Path(spec).is_file():
            raise ValueError(f"no export file {spec!r}")
        return spec
    if not is_url(spec) and not Path(spec).is_file():
        raise ValueError(f"no storage file {spec!r}; run the study first or pass --storage")
    return open_storage(spec, connect_timeout=connect_timeout, write=False)


def report(study_name: str, storage_spec, *, connect_timeout: int = 5) -> str:
    """The minimal leaderboard of ``study_name`` from its storage (or export)."""
    units = load_units(storage_for(study_name, storage_spec, connect_timeout=connect_timeout), study_name)
    return markdown(collect(units), study_name)


def run_report(studies, storage=None, *, out=None, wandb_mode: str | None = None, n_boot: int = N_BOOT,
               boot_seed: int = BOOT_SEED, connect_timeout: int = 5, default_storage=None,
               equivalence_margin: float | None = None) -> tuple:
    """Analyses ``studies`` (names in ``storage``, or each in ``default_storage(name)``); writes ``out`` when
    given, logs to W&B when ``wandb_mode`` is given; returns ``(markdown, analyses, written or None)``. With
    ``equivalence_margin`` (fixed before looking at the results) each arm is also tested for equivalence with the
    best fixed gamma within ±margin (TOST; see :func:`~adaptive_focal.compare.analysis.analyse`)."""
    analyses = []
    for name in studies:
        st = storage_for(name, storage, default=None if default_storage is None else default_storage(name),
                         connect_timeout=connect_timeout)
        analyses.append(analyse(load_units(st, name), n_boot=n_boot, boot_seed=boot_seed,
                                equivalence_margin=equivalence_margin))
    written = write_outputs(analyses, out) if out is not None else None
    if wandb_mode is not None:
        logger = WandbReportLogger(wandb_mode, name=f"report {' '.join(studies)}",
                                   dir=out, config={"studies": list(studies)})
        logger.analyses(analyses, written)
        logger.finish()
    return full_markdown(analyses), analyses, written


README_START, README_END = "<!-- leaderboards:start -->", "<!-- leaderboards:end -->"


def readme_block(analyses: list[dict], top: int = 12) -> str:
    """Per study: the ``top`` arms of the leaderboard with their paired difference from the best fixed gamma (the
    block ``--readme`` writes into a README)."""
    parts = []
    for a in analyses:
        paired = {r["arm"]: r for r in a["paired"]}
        seeds = max((r["seeds"] for r in a["leaderboard"]), default=0)
        level = round(100 * a["ci_level"])
        note = (f"; exploratory: fewer than {CONFIRMATORY_SEEDS} seeds" if a.get("exploratory") else "")
        parts.append(f"**{a['study']}** ({a['split']} {a['metric']}, mean ± std over {seeds} seeds; best fixed "
                     f"gamma by validation: `{a['reference']}`; difference: paired by seed, {level}% t-interval, "
                     f"t-test p Holm-adjusted over the {a.get('holm_family', len(paired))} arms compared{note})\n")
        parts.append(f"| rank | arm | {a['split']} {a['metric']} | vs best fixed gamma | Holm p | W/T/L | "
                     "completed runs (pruned) |")
        parts.append("|---:|---|---:|---:|---:|---:|---:|")
        for rank, row in enumerate(a["leaderboard"][:top], 1):
            p = paired.get(row["arm"])
            holm_p = ""
            if row["arm"] == a["reference"]:
                diff, wtl = "(reference)", ""
            elif p is None or not p["n"]:
                diff, wtl = "—", ""
            else:
                ci = "" if p.get("t_low") is None else f" [{p['t_low']:+.3f}, {p['t_high']:+.3f}]"
                diff, wtl, holm_p = f"{p['mean_diff']:+.3f}{ci}", f"{p['wins']}/{p['ties']}/{p['losses']}", \
                    _p(p.get("holm_p"))
            pruned = f" ({row['runs_pruned']})" if row.get("runs_pruned") else ""
            parts.append(f"| {rank} | {row['arm']} | {_f(row['mean'])} ± {_f(row['std'])} | {diff} | {holm_p} | "
                         f"{wtl} | {row['trials']}{pruned} |")
        parts.append("")
    return "\n".join(parts).rstrip()


def fill_block(path, start: str, end: str, body: str) -> bool:
    """Replaces what stands between the markers ``start`` and ``end`` in the file with ``body``; False (and the
    file untouched) when the markers are missing."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{body}\n{end}{tail}")
    return True
