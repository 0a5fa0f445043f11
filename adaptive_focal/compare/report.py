"""The report of a comparison: Markdown, CSV, JSON and PNG files, and optionally a W&B run holding the same.

:func:`markdown` is the minimal leaderboard (per arm, mean ± std over seeds of the metric of each seed's selected
trial); :func:`analysis_markdown` adds the tables of :func:`~adaptive_focal.compare.analysis.analyse`;
:func:`write_outputs` writes ``report.md``, ``leaderboard.csv``, ``per_seed.csv``, ``paired.csv``,
``tuning_cost.csv``, ``pareto.csv``, ``results.json`` and PNG figures into a folder; :func:`run_report` does it
all for studies named in a storage (or export files); :func:`fill_block` writes generated Markdown between two
markers of a README.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

from .analysis import BOOT_SEED, N_BOOT, analyse, collect, leaderboard, wilcoxon_min_p
from .export import export_path, is_export
from .results import load_units

__all__ = ["README_END", "README_START", "WandbReportLogger", "analysis_markdown", "fill_block", "full_markdown",
           "markdown", "readme_block", "report", "run_report", "storage_for", "write_outputs"]


def _f(v, digits=3, signed=False):
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _title(study_name: str, meta: dict) -> str:
    what = meta.get("dataset") or meta.get("objective")
    return f"{study_name} ({what})" if what else study_name


def markdown(data: dict, study_name: str) -> str:
    """The minimal leaderboard of :func:`~adaptive_focal.compare.analysis.collect` output."""
    rows = leaderboard(data)
    split, m = data.get("split", "test"), data["metric"]
    lower = " (lower is better)" if data.get("direction") == "minimize" else ""
    lines = [f"### {_title(study_name, data.get('meta') or {})}: {split} {m}{lower}, mean ± std over seeds", "",
             f"| rank | arm | {split} {m} | seeds | completed trials |", "|---:|---|---:|---:|---:|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['arm']} | {r['mean']:.3f} ± {r['std']:.3f} | {r['seeds']} | {r['trials']} |")
    missing = [a for a in data["arms"] if a not in {r["arm"] for r in rows}]
    if missing:
        lines += ["", f"No completed trial yet: {', '.join(missing)}."]
    if split == "val":
        lines += ["", "The objective returned no test metrics: these are the validation values the tuned arms were "
                      "selected on, which flatters them (return a 'test' dict for an unbiased comparison)."]
    return "\n".join(lines)


def analysis_markdown(a: dict, figures: dict | None = None) -> str:
    """The analysis tables of one study (without the first, minimal leaderboard)."""
    m, s, lines = a["metric"], a["split"], []
    title = a.get("dataset") or a["study"]
    lines += [f"#### Leaderboard ({title}): mean ± std over seeds", "",
              f"| rank | arm | kind | {s} {m} | val {m} | {s} ECE | seeds | completed trials | s / trial |",
              "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(a["leaderboard"], 1):
        ece = "-" if r["ece_mean"] is None else f"{r['ece_mean']:.3f} ± {r['ece_std']:.3f}"
        val = "-" if r["val_mean"] is None else f"{r['val_mean']:.3f} ± {r['val_std']:.3f}"
        lines.append(f"| {i} | {r['arm']} | {r['kind']} | {r['mean']:.3f} ± {r['std']:.3f} | {val} | {ece} | "
                     f"{r['seeds']} | {r['trials']} | {_f(r['seconds_per_trial'], 2)} |")
    lines.append("")
    if a["reference"] is None:
        lines += ["No fixed-gamma arm with results: no paired comparison.", ""]
    else:
        level = round(100 * a["ci_level"])
        lines += [(f"#### Paired by seed against the best fixed gamma, {a['reference']} (chosen by mean validation "
                  f"{m})"), "",
                  (f"| arm | seeds | mean diff ({s} {m}) | {level}% bootstrap CI | wins / ties / losses | "
                  "Wilcoxon p | min attainable p |"), "|---|---:|---:|---|---:|---:|---:|"]
        for r in a["paired"]:
            ci = "-" if r["ci_low"] is None else f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
            p = _f(r["wilcoxon_p"]) if r["wilcoxon_p"] is not None else (r["note"] or "-")
            lines.append(f"| {r['arm']} | {r['n']} | {_f(r['mean_diff'], signed=True)} | {ci} | "
                         f"{r['wins']} / {r['ties']} / {r['losses']} | {p} | {_f(r['wilcoxon_min_p'])} |")
        n_max = max((r["n"] for r in a["paired"]), default=0)
        lines += ["", (f"Differences are arm minus {a['reference']} on the same seed. Wilcoxon signed-rank: "
                  "scipy.stats.wilcoxon, two-sided, zero differences dropped; with n non-zero differences the "
                  f"exact test cannot give p below 2^(1-n) (n = {n_max}: {wilcoxon_min_p(n_max):.3g}), so with "
                  "few seeds a large p says little and 'significant' is out of reach. Bootstrap: percentile CI "
                  f"of the mean difference, {a['n_boot']} resamples of the seeds, seed {a['boot_seed']} + "
                  "crc32(arm); with few seeds it is narrow and optimistic."), ""]
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
               boot_seed: int = BOOT_SEED, connect_timeout: int = 5, default_storage=None) -> tuple:
    """Analyses ``studies`` (names in ``storage``, or each in ``default_storage(name)``); writes ``out`` when
    given, logs to W&B when ``wandb_mode`` is given; returns ``(markdown, analyses, written or None)``."""
    analyses = []
    for name in studies:
        st = storage_for(name, storage, default=None if default_storage is None else default_storage(name),
                         connect_timeout=connect_timeout)
        analyses.append(analyse(load_units(st, name), n_boot=n_boot, boot_seed=boot_seed))
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
        parts.append(f"**{a['study']}** ({a['split']} {a['metric']}, mean ± std over {seeds} seeds; best fixed "
                     f"gamma by validation: `{a['reference']}`; difference: paired by seed, 95% bootstrap CI)\n")
        parts.append(f"| rank | arm | {a['split']} {a['metric']} | vs best fixed gamma | W/T/L | completed trials |")
        parts.append("|---:|---|---:|---:|---:|---:|")
        for rank, row in enumerate(a["leaderboard"][:top], 1):
            p = paired.get(row["arm"])
            if row["arm"] == a["reference"]:
                diff, wtl = "(reference)", ""
            elif p is None or not p["n"]:
                diff, wtl = "—", ""
            else:
                ci = "" if p["ci_low"] is None else f" [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]"
                diff, wtl = f"{p['mean_diff']:+.3f}{ci}", f"{p['wins']}/{p['ties']}/{p['losses']}"
            parts.append(f"| {rank} | {row['arm']} | {_f(row['mean'])} ± {_f(row['std'])} | {diff} | {wtl} "
                         f"| {row['trials']} |")
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
