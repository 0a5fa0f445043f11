"""Experiment reports for adaptive-gamma runs: a W&B Report, and the same content written locally.

:func:`build_report` assembles a W&B Report (through ``wandb_workspaces``' reports API) for a set of runs or a
sweep: gamma trajectories, validation metrics over epochs, the reliability-diagram tables and a comparison table
of the runs. Building needs no network; :func:`save_report` uploads it and needs a logged-in, online W&B.
:func:`write_local_report` writes what the report shows as Markdown with PNG figures, readable without a W&B
account; :func:`load_offline_runs` reads runs logged by :class:`~adaptive_focal.integrations.wandb.WandbLogger`
back from their offline files.

Example:
    >>> from adaptive_focal.integrations.wandb_report import build_report
    >>> report = build_report(project="adaptive-focal", entity="my-team", run_ids=["abc123", "def456"])
    >>> report.title
    'Adaptive gamma: policy comparison'
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..gamma_forms import summary_keys
from ._optional import require

require("wandb", "wandb", "adaptive_focal.integrations.wandb_report")
wr = require("wandb_workspaces.reports.v2", "reports", "adaptive_focal.integrations.wandb_report")

__all__ = ["RunData", "build_report", "load_offline_runs", "save_report", "write_local_report"]

_VAL_METRICS = ("val/ece", "val/balanced_accuracy", "val/accuracy", "val/mean_loss")


@dataclass
class RunData:
    """What the local report needs from one run."""

    run_id: str
    name: str
    config: dict
    summary: dict
    history: list[dict] = field(default_factory=list)
    run_dir: Path | None = None

    @property
    def policy(self) -> str:
        return str(self.config.get("policy", "unknown"))

    def series(self, key: str, x: str) -> tuple[list[float], list[float]]:
        rows = [r for r in self.history if key in r and x in r and isinstance(r[key], (int, float))]
        return [r[x] for r in rows], [r[key] for r in rows]


def _inspect(path: Path, summary: bool):
    args = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)]
    if summary:
        args.insert(5, "--summary")
    out = subprocess.run(args, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "WANDB_MODE": "offline"})
    if out.returncode != 0:
        raise RuntimeError(f"could not read the W&B run at {path}: {out.stderr.strip()}")
    if summary:
        return json.loads(out.stdout)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def load_offline_runs(paths) -> list[RunData]:
    """Reads offline runs (``wandb/offline-run-*`` folders, or a ``wandb`` folder holding several) from disk."""
    runs = []
    for path in map(Path, paths):
        dirs = sorted(path.glob("offline-run-*")) if path.name == "wandb" else [path]
        for run_dir in dirs:
            info = _inspect(run_dir, summary=True)
            history = [r["history"]["item"] for r in _inspect(run_dir, summary=False) if r.get("type") == "history"]
            runs.append(RunData(run_id=info["run_id"], name=info.get("name") or info["run_id"],
                                config=info.get("config", {}), summary=info.get("summary", {}),
                                history=history, run_dir=run_dir))
    if not runs:
        raise ValueError(f"no W&B runs found under {[str(p) for p in paths]}")
    return runs


def _summary_value(summary: dict, key: str):
    value = summary.get(key)
    if isinstance(value, dict):  # define_metric summaries store {"min": ...} / {"max": ...}
        value = value.get("min", value.get("max"))
    return value if isinstance(value, (int, float)) else None


def comparison_rows(runs: list[RunData]) -> list[dict]:
    """One row per run: policy, its hyperparameters and the best validation metrics."""
    rows = []
    for run in runs:
        hparams = {k.split(".", 1)[1]: v for k, v in run.config.items() if k.startswith("policy.")}
        row = {"run": run.name, "policy": run.policy,
               "hyperparameters": ", ".join(f"{k}={v}" for k, v in sorted(hparams.items()))}
        for key in _VAL_METRICS:
            row[key] = _summary_value(run.summary, key)
        rows.append(row)
    return sorted(rows, key=lambda r: (math.inf if r["val/ece"] is None else r["val/ece"]))


def _markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no runs)"
    keys = list(rows[0])
    fmt = lambda v: "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def build_report(project: str, entity: str, run_ids=None, sweep_id: str | None = None, runs=None,
                 title: str = "Adaptive gamma: policy comparison", description: str | None = None):
    """A W&B Report (not saved) comparing runs of ``entity/project``, by run id or by sweep.

    Panels: gamma per step, validation ECE, balanced accuracy, accuracy and loss per epoch (grouped by the run
    config's ``policy``), the runs' reliability-diagram and per-class tables, and a comparison table (from
    ``runs``, e.g. :func:`load_offline_runs`, when given).
    """
    if not entity or not project:
        raise ValueError(f"entity and project are required, got entity={entity!r}, project={project!r}")
    if run_ids is not None and sweep_id is not None:
        raise ValueError("give run_ids or sweep_id, not both")
    filters = None
    if run_ids is not None:
        ids = ", ".join(f"'{i}'" for i in run_ids)
        filters = f"Run.ID in [{ids}]"
    elif sweep_id is not None:
        filters = f"Run.sweep == '{sweep_id}'"
    runset = wr.Runset(entity=entity, project=project, name="runs", filters=filters or "",
                       groupby=["config.policy"])
    panels = [wr.LinePlot(title="gamma", x="step", y=list(summary_keys()))]
    panels += [wr.LinePlot(title=key, x="epoch", y=[key]) for key in _VAL_METRICS]
    panels += [wr.WeavePanelSummaryTable(table_name="val/reliability"),
               wr.WeavePanelSummaryTable(table_name="val/per_class")]
    blocks = [wr.H1(title),
              wr.P(description or "Gamma trajectories, validation calibration and accuracy of adaptive-gamma "
                                  "policies against fixed gamma, logged by adaptive_focal."),
              wr.PanelGrid(runsets=[runset], panels=panels)]
    if runs:
        blocks += [wr.H2("Comparison (best validation values)"),
                   wr.MarkdownBlock(_markdown_table(comparison_rows(runs)))]
    return wr.Report(project=project, entity=entity, title=title, description=description or "", blocks=blocks)


def save_report(report) -> str:
    """Uploads the report (needs an online, logged-in W&B) and returns its URL."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        raise RuntimeError(f"saving a W&B Report needs the W&B server, but WANDB_MODE={os.environ['WANDB_MODE']}; "
                           "use write_local_report for an offline copy")
    report.save()
    return report.url


def _read_table(run: RunData, key: str) -> dict | None:
    ref = run.summary.get(key)
    if not isinstance(ref, dict) or "path" not in ref or run.run_dir is None:
        return None
    path = run.run_dir / "files" / ref["path"]
    if not path.exists():
        return None
    return json.loads(path.read_text())


def write_local_report(runs: list[RunData], out_dir, title: str = "Adaptive gamma: policy comparison") -> Path:
    """Writes ``report.md`` and PNG figures of what :func:`build_report` shows into ``out_dir``."""
    plt = require("matplotlib.pyplot", "reports", "write_local_report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colors = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def color(policy):
        return colors.setdefault(policy, palette[len(colors) % len(palette)])

    figures = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for run in runs:
        for key in summary_keys():  # what shows this run's gamma form over time (two lines for an asymmetric one)
            xs, ys = run.series(key, "step")
            if ys:
                part = key.split("/")[1] if key.count("/") and not key.endswith("gamma/mean") else ""
                ax.plot(xs, ys, label=f"{run.name} ({run.policy}) {part}".rstrip(), color=color(run.policy),
                        linestyle="--" if part == "negative" else "-")
    ax.set(xlabel="step", ylabel="gamma", title="gamma trajectories")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gamma.png", dpi=110)
    plt.close(fig)
    figures.append(("Gamma trajectories", "gamma.png"))

    fig, axes = plt.subplots(1, len(_VAL_METRICS), figsize=(4 * len(_VAL_METRICS), 3.2))
    for ax, key in zip(axes, _VAL_METRICS):
        for run in runs:
            xs, ys = run.series(key, "epoch")
            ax.plot(xs, ys, marker="o", label=run.name, color=color(run.policy))
        ax.set(xlabel="epoch", title=key)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "validation.png", dpi=110)
    plt.close(fig)
    figures.append(("Validation metrics per epoch", "validation.png"))

    tables = [(run, _read_table(run, "val/reliability")) for run in runs]
    tables = [(run, t) for run, t in tables if t]
    if tables:
        fig, axes = plt.subplots(1, len(tables), figsize=(3.4 * len(tables), 3.4), squeeze=False)
        for ax, (run, table) in zip(axes[0], tables):
            cols = table["columns"]
            conf = [r[cols.index("confidence")] for r in table["data"]]
            acc = [r[cols.index("accuracy")] for r in table["data"]]
            ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
            ax.plot(conf, acc, marker="o", color=color(run.policy))
            ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=run.name)
        fig.suptitle("Reliability diagrams (last validation)")
        fig.tight_layout()
        fig.savefig(out / "reliability.png", dpi=110)
        plt.close(fig)
        figures.append(("Reliability diagrams (last validation)", "reliability.png"))

    lines = [f"# {title}", "", f"{len(runs)} runs; policies: {', '.join(sorted({r.policy for r in runs}))}.", "",
             "## Comparison (best validation values)", "", _markdown_table(comparison_rows(runs)), ""]
    for caption, name in figures:
        lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
