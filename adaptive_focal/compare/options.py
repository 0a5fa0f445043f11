"""How a study is run: :class:`RunOptions` (storage, budget, workers, pruning, heartbeats, retries).

Kept apart from the runner, which needs Optuna, so that the command line can offer these options (one per field)
without importing it.

Example:
    >>> from adaptive_focal.compare import RunOptions
    >>> RunOptions(workers=2, pruner="late").epoch_pruner
    'late'
    >>> RunOptions(pruner="late", multi_objective=True).epoch_pruner  # Optuna cannot prune multi-objective runs
    'none'
    >>> RunOptions(heartbeat_interval=30.0)
    Traceback (most recent call last):
        ...
    ValueError: grace_period (30.0) must be longer than heartbeat_interval (30.0), or live trials would be retried
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["DEFAULT_PRUNER", "PRUNERS", "RunOptions"]

#: how the trials of arms tuned per seed can be pruned on the metric they report each epoch
#: (:mod:`adaptive_focal.compare.runner`): ``"none"``, ``"late"`` (only in the last fifth of the reported epochs)
#: or ``"median"`` (from the first epoch: the protocol of the studies committed before the option existed)
PRUNERS = ("none", "late", "median")
#: no pruning: a per-epoch pruner stops configurations that learn slowly, which for gamma is a bias (small gammas
#: start slower and may end best), and leaves arms with unequal numbers of completed runs
DEFAULT_PRUNER = "none"


def _opt(default, help: str, *, flag: str | None = None, metavar: str | None = None, cli: bool = True, **kw):
    """A RunOptions field with what the command line needs to offer it."""
    return field(default=default, metadata={"help": help, "flag": flag, "metavar": metavar, "cli": cli, **kw})


@dataclass
class RunOptions:
    """How to run a study. The command line offers every field with ``cli`` set (one option per field)."""

    storage: str | None = _opt(None, "a journal file path (default runs/sweeps/<study>.log) or a database URL such "
                                     "as postgresql://user@host/db for workers on several machines",
                               metavar="PATH|URL")
    seeds: int | None = _opt(None, "seeds per arm (default: the study's)", metavar="K")
    trials: int | None = _opt(None, "TPE trials per tuned arm and seed, or per arm for arms tuned across seeds "
                                    "(default: the study's)", metavar="N")
    workers: int = _opt(1, "parallel worker processes on this machine", metavar="W")
    threads: int = _opt(1, "torch threads per worker")
    multi_objective: bool = _opt(False, "maximise the metric and minimise the validation ECE (no pruning)")
    pruner: str = _opt(DEFAULT_PRUNER, "how trials of arms tuned per seed are pruned on the validation metric they "
                                       "report each epoch: none (every run trains to its end, so gamma is never "
                                       "judged by how fast it learns and every arm completes its budget), late "
                                       "(MedianPruner, only in the last fifth of the reported epochs) or median "
                                       "(MedianPruner from the first epoch, the protocol of the committed studies)",
                       choices=PRUNERS)
    prune: bool = _opt(True, "no pruning at all: --pruner none, and no WilcoxonPruner over the seeds for arms tuned "
                             "across seeds", flag="--no-prune")
    heartbeat_interval: float = _opt(10.0, "seconds between a running trial's heartbeats", metavar="S")
    grace_period: float = _opt(30.0, "seconds without a heartbeat after which a trial is retried elsewhere",
                               metavar="S")
    max_retry: int = _opt(3, "how often a trial whose worker died is retried", metavar="N")
    retry_seconds: float = _opt(60.0, "how long a dropped database connection is retried before a worker stops",
                                metavar="S")
    connect_timeout: int = _opt(5, "seconds before an unreachable database is an error", metavar="S")
    progress: bool = _opt(True, "no per-trial progress lines", flag="--quiet")

    def __post_init__(self):
        for key in ("seeds", "trials"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        for key in ("workers", "threads", "max_retry"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "max_retry" else 1):
                raise ValueError(f"{key} must be a {'non-negative' if key == 'max_retry' else 'positive'} integer, "
                                 f"got {value!r}")
        for key in ("heartbeat_interval", "grace_period", "retry_seconds", "connect_timeout"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{key} must be a positive number of seconds, got {value!r}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"pruner must be one of {', '.join(map(repr, PRUNERS))}, got {self.pruner!r}")
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(f"grace_period ({self.grace_period}) must be longer than heartbeat_interval "
                             f"({self.heartbeat_interval}), or live trials would be retried")

    @property
    def epoch_pruner(self) -> str:
        """The pruner the trials of arms tuned per seed run under: ``pruner``, or ``"none"`` without pruning
        (``prune`` False) and in multi-objective runs (Optuna cannot prune those)."""
        return "none" if not self.prune or self.multi_objective else self.pruner

    @classmethod
    def cli_fields(cls) -> list:
        """The fields the command line offers, with their ``help``, ``flag`` and ``metavar`` metadata."""
        return [f for f in fields(cls) if f.metadata.get("cli")]
