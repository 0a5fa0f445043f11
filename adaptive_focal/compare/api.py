"""``compare()``: the whole comparison on your own training function, in one call.

Example (``mytask.py`` holds ``def train(run) -> dict``, see :mod:`adaptive_focal.compare.objective`)::

    from adaptive_focal.compare import compare

    result = compare("mytask.py:train", mode="softmax", metric="balanced_accuracy", seeds=3, trials=10)
    print(result.markdown)                 # the leaderboard and the paired comparison
    result.paired["policy=pi"]["mean_diff"]   # the arm minus the best fixed gamma, seed by seed

The study that :func:`compare` runs, without running it:

    >>> from adaptive_focal.compare.api import objective_study
    >>> study = objective_study("mytask:train", mode="softmax", metric="balanced_accuracy",
    ...                         arms=["gamma=0", "gamma=2", "policy=pi"])
    >>> study.name, [arm.name for arm in study.arms], study.seeds
    ('train', ['gamma=0', 'gamma=2', 'policy=pi'], 3)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .arms import Arm, default_arms, parse_arm
from .objective import ObjectiveError, resolve_objective
from .study import Study

__all__ = ["Comparison", "compare", "objective_study"]


@dataclass
class Comparison:
    """What :func:`compare` returns.

    Attributes:
        study: the study that ran.
        leaderboard: per arm, best first: ``{"arm", "mean", "std", "seeds", "trials", "kind", "val_mean", ...}``.
        reference: the best fixed gamma (by mean validation metric), which ``paired`` compares against.
        paired: arm -> ``{"mean_diff", "t_low", "t_high", "holm_p", "wins", "ties", "losses", "equivalent", ...}``
            (see :func:`~adaptive_focal.compare.analysis.paired_test`).
        analysis: everything :func:`~adaptive_focal.compare.analysis.analyse` computed.
        markdown: the report as Markdown.
        files: the files written into ``out`` (``report.md``, CSV, JSON, PNG).
        storage: where the trials are stored (run the same call again to resume or top up).
    """

    study: Study
    leaderboard: list
    reference: str | None
    paired: dict
    analysis: dict
    markdown: str
    files: list = field(default_factory=list)
    storage: str = ""

    def __str__(self) -> str:
        return self.markdown


def _objective_label(spec: str) -> str:
    target, _, func = spec.rpartition(":")
    return f"{Path(target).name}:{func}" if target.endswith(".py") else spec


def objective_study(objective: str, *, mode: str, metric: str, direction: str = "maximize", seeds: int = 3,
                    trials: int = 10, arms=None, learned: bool = False, name: str | None = None) -> Study:
    """The :class:`Study` that :func:`compare` runs (arms by name, or the default arms for ``mode``)."""
    if mode not in ("softmax", "sigmoid"):
        raise ValueError(f"mode must be 'softmax' or 'sigmoid', got {mode!r}")
    spec = resolve_objective(objective)
    if arms is None:
        chosen = default_arms(mode, learned=learned)
    else:
        if isinstance(arms, str):
            raise ValueError(f"arms must be a list of arm names, got the string {arms!r}")
        chosen = [a if isinstance(a, Arm) else parse_arm(a) for a in arms]
    name = name or spec.rpartition(":")[2]
    return Study(name=name, arms=tuple(chosen), objective=spec, metric=metric, direction=direction, seeds=seeds,
                 trials=trials, mode=mode, meta={"objective": _objective_label(spec), "mode": mode})


def compare(objective, *, mode: str, metric: str, direction: str = "maximize", seeds: int = 3, trials: int = 10,
            arms=None, learned: bool = False, name: str | None = None, storage: str | None = None,
            out: str | None = None, wandb: str | None = None, margin: float | None = None,
            **options) -> Comparison:
    """Runs every arm on ``objective`` for ``seeds`` seeds and reports them against the best fixed gamma.

    Args:
        objective: ``"file.py:function"`` or ``"module:function"`` (see :mod:`adaptive_focal.compare.objective`).
        mode: ``"softmax"`` or ``"sigmoid"``: the loss ``run.make_loss()`` builds; the default arms keep only the
            policies that apply to it.
        metric: the validation metric that tuned arms select on and the report ranks by.
        direction: ``"maximize"`` or ``"minimize"`` the metric.
        seeds: seeds per arm (arms are paired by seed).
        trials: TPE trials per tuned arm and seed.
        arms: arm names (``"gamma=2"``, ``"gamma=tpe"``, ``"policy=pi"``, ``"policy=pi+tpe"``, ...) or
            :class:`Arm` objects; default: :func:`~adaptive_focal.compare.default_arms` for ``mode``.
        learned: include the learned controllers in the default arms (the objective must pass ``model=``,
            ``val_source=`` and ``optimizer=`` to ``run.make_policy``).
        name: the study's name (default: the function's name).
        storage: journal file or database URL (default ``runs/compare/<name>.log``); the same call again
            resumes.
        out: folder for the report files (default ``runs/compare/<name>``).
        wandb: also log the report to W&B in this mode (``"offline"``, ``"online"``, ``"disabled"``).
        margin: an equivalence margin fixed in advance: each arm is tested for matching the best fixed gamma
            within ±margin of the metric (TOST, Holm-adjusted over the arms; ``paired[arm]["equivalent"]``).
        **options: :class:`~adaptive_focal.compare.RunOptions` fields (``workers``, ``pruner``, ``prune``, ...).
    """
    from .analysis import tost
    from .options import RunOptions
    from .report import analysis_markdown, markdown, run_report
    from .runner import run

    if margin is not None:
        tost([0.0, 0.0], margin)  # a bad margin fails before anything runs
    if not isinstance(objective, str):
        raise ObjectiveError("objective must be named 'file.py:function' or 'module:function' (worker processes "
                             f"load it by that name), got {type(objective).__name__}")
    study = objective_study(objective, mode=mode, metric=metric, direction=direction, seeds=seeds, trials=trials,
                            arms=arms, learned=learned, name=name)
    storage = storage or str(Path("runs") / "compare" / f"{study.name}.log")
    out = out or str(Path("runs") / "compare" / study.name)
    opts = RunOptions(storage=storage, **{"progress": False, **options})
    run(study, opts)
    _, analyses, written = run_report([study.name], storage, out=out, wandb_mode=wandb, equivalence_margin=margin)
    a = analyses[0]
    text = markdown(a["summary"], study.name) + "\n\n" + analysis_markdown(a)
    return Comparison(study=study, leaderboard=a["leaderboard"], reference=a["reference"],
                      paired={r["arm"]: r for r in a["paired"]}, analysis=a, markdown=text,
                      files=list(written["files"]) if written else [], storage=storage)
