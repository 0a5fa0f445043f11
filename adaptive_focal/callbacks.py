"""GammaCallback: drives a gamma policy from a plain PyTorch training loop and forwards what it sees to loggers.

The callback adds the bookkeeping a loop needs around a policy: it calls ``policy.step`` after each optimizer step
and ``policy.epoch_end`` at each epoch end, turns gamma and the statistics into plain Python records every
``log_every`` steps (the only place values are read back from the device), hands them to any number of loggers,
and saves and restores the whole state. A logger that raises is dropped with one warning: logging never stops
training.

Example:
    >>> import torch
    >>> import adaptive_focal as af
    >>> from adaptive_focal.callbacks import GammaCallback, MemoryLogger
    >>> model = torch.nn.Linear(4, 3)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> criterion = af.FocalLoss("softmax", gamma=2.0)
    >>> history = MemoryLogger()
    >>> callback = GammaCallback(af.create_policy("pi", criterion, setpoint=0.6), loggers=[history], log_every=1)
    >>> for step in range(3):
    ...     x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    ...     loss, stats = criterion(model(x), y, return_stats=True)
    ...     optimizer.zero_grad()
    ...     loss.backward()
    ...     optimizer.step()
    ...     callback.on_train_batch_end(stats)
    >>> with torch.no_grad():
    ...     _, val_stats = criterion(model(torch.randn(16, 4)), torch.randint(0, 3, (16,)), return_stats=True)
    >>> callback.on_epoch_end(val_stats)
    >>> len(history.steps), [key in history.epochs[0]["val"] for key in ("ece", "accuracy", "bins", "classes")]
    (3, [True, True, True, True])
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from .gamma_forms import gamma_record, gamma_scalars
from .metrics import ece_from_stats
from .policies import GammaPolicy
from .stats import BatchStats

__all__ = ["GammaCallback", "GammaLogger", "JSONLinesLogger", "MemoryLogger", "gamma_record", "gamma_scalars",
           "stats_record"]


@runtime_checkable
class GammaLogger(Protocol):
    """What the callback calls. Records are plain dicts of Python numbers, lists and strings."""

    def log_step(self, record: dict) -> None: ...

    def log_epoch(self, record: dict) -> None: ...


def stats_record(stats: BatchStats, detail: bool = False) -> dict:
    """The summary numbers of a BatchStats, with ECE and accuracy when they carry confidence bins.

    Softmax statistics: ECE, accuracy and balanced accuracy of the samples. Sigmoid statistics: ECE and accuracy
    of the elements, each a binary prediction (see :func:`~adaptive_focal.metrics.ece_from_stats`); a balanced
    accuracy would need each label's positives, which the statistics do not split. With ``detail`` it also holds
    per-class lists (``classes``: count, mean p_t and, for softmax, recall) and the per-confidence-bin sums a
    reliability diagram needs (``bins``).
    """
    record = {
        "count": int(stats.count),
        "mean_pt": float(stats.mean_pt),
        "mean_loss": float(stats.mean_loss),
        "mean_grad_norm": float(stats.mean_grad_norm),
    }
    calibration = stats.conf_count is not None and stats.conf_sum is not None and stats.correct_sum is not None
    softmax = calibration and stats.mode == "softmax" and stats.class_conf_count is not None
    if calibration:
        record["ece"] = float(ece_from_stats(stats))
        record["accuracy"] = float(stats.correct_sum.sum() / stats.count.clamp_min(1))
    if softmax:
        per_class = stats.class_conf_count.sum(1).to(torch.float64)
        recall = stats.class_correct_sum.sum(1).to(torch.float64) / per_class.clamp_min(1)
        present = per_class > 0
        record["balanced_accuracy"] = float(recall[present].mean()) if bool(present.any()) else float("nan")
    if detail:
        classes = {"count": stats.class_count.tolist(), "mean_pt": stats.class_mean_pt.tolist()}
        if softmax:
            classes["recall"] = torch.where(present, recall, torch.full_like(recall, float("nan"))).tolist()
        if calibration:
            record["bins"] = {"edges": stats.edges.tolist(), "count": stats.conf_count.tolist(),
                              "confidence_sum": stats.conf_sum.tolist(), "correct_sum": stats.correct_sum.tolist()}
        record["classes"] = classes
    return record


class GammaCallback:
    """Runs ``policy`` in a plain training loop and logs gamma and statistics.

    Args:
        policy: any :class:`~adaptive_focal.GammaPolicy` (from :func:`~adaptive_focal.create_policy`).
        loggers: objects with ``log_step(record)`` and ``log_epoch(record)`` (see :class:`GammaLogger`).
        log_every: log every this many optimizer steps (reading values back from an accelerator synchronises,
            so keep it above 1 on GPUs). Epoch ends are always logged.
        max_logger_failures: a logger that raises this many times in a row is dropped for the rest of the run
            (one that raises and then recovers misses only the records it raised on).
    """

    def __init__(self, policy: GammaPolicy, loggers=(), log_every: int = 10, max_logger_failures: int = 3) -> None:
        if not isinstance(policy, GammaPolicy):
            raise TypeError(f"policy must be a GammaPolicy (see adaptive_focal.create_policy), got "
                            f"{type(policy).__name__}")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be a positive integer, got {log_every!r}")
        loggers = list(loggers)
        for logger in loggers:
            if not isinstance(logger, GammaLogger):
                raise TypeError(f"loggers must have log_step(record) and log_epoch(record), got "
                                f"{type(logger).__name__}")
        if isinstance(max_logger_failures, bool) or not isinstance(max_logger_failures, int) or max_logger_failures < 1:
            raise ValueError(f"max_logger_failures must be a positive integer, got {max_logger_failures!r}")
        self.policy = policy
        self.loggers = loggers
        self.log_every = log_every
        self.max_logger_failures = max_logger_failures
        self._failures: dict[int, int] = {}  # id(logger) -> consecutive failures

    def on_train_batch_end(self, stats: BatchStats | None = None) -> None:
        """Call after ``optimizer.step()`` with the batch's statistics (``return_stats=True``)."""
        self.policy.step(stats)
        if self.loggers and self.policy.step_count % self.log_every == 0:
            record = {"step": self.policy.step_count, "epoch": self.policy.epoch,
                      "gamma": gamma_record(self.policy.get_last_gamma())}
            if stats is not None:
                record["train"] = stats_record(stats)
            self._emit("log_step", record)

    def on_epoch_end(self, val_stats: BatchStats | None = None) -> None:
        """Call at the end of each epoch, with validation statistics when the policy needs them."""
        self.policy.epoch_end(val_stats)
        if self.loggers:
            record = {"step": self.policy.step_count, "epoch": self.policy.epoch,
                      "gamma": gamma_record(self.policy.get_last_gamma())}
            if val_stats is not None:
                record["val"] = stats_record(val_stats, detail=True)
            self._emit("log_epoch", record)

    def _emit(self, method: str, record: dict) -> None:
        """Hands ``record`` to every logger. A logger that raises misses that record and is tried again with the
        next one (a tracker that drops for a moment loses only what it raised on); after
        ``max_logger_failures`` failures in a row it is dropped for the rest of the run. A logger warns when it
        starts failing and when it is dropped; training never stops for a logger."""
        for logger in list(self.loggers):
            key = id(logger)
            try:
                getattr(logger, method)(record)
                self._failures.pop(key, None)
            except Exception as err:  # noqa: BLE001 - a logger must never stop training
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                name = type(logger).__name__
                if failures >= self.max_logger_failures:
                    warnings.warn(f"adaptive_focal: logger {name} failed {failures} times in a row ({err!r}); it is "
                                  "dropped for the rest of the run", RuntimeWarning, stacklevel=3)
                    self.loggers.remove(logger)
                    self._failures.pop(key, None)
                elif failures == 1:
                    warnings.warn(f"adaptive_focal: logger {name} failed ({err!r}); it missed this record and is "
                                  f"dropped if it fails {self.max_logger_failures} times in a row",
                                  RuntimeWarning, stacklevel=3)

    def state_dict(self) -> dict:
        """The policy's state and each logger's (where it has ``state_dict``), with explicit keys."""
        return {
            "policy": self.policy.state_dict(),
            "log_every": self.log_every,
            "loggers": [logger.state_dict() if hasattr(logger, "state_dict") else None for logger in self.loggers],
        }

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or "policy" not in state:
            raise ValueError("state must be a GammaCallback.state_dict() (a dict with a 'policy' entry)")
        logger_states = state.get("loggers", [])
        if len(logger_states) not in (0, len(self.loggers)):
            raise ValueError(f"state holds {len(logger_states)} logger states, this callback has "
                             f"{len(self.loggers)} loggers")
        self.policy.load_state_dict(state["policy"])
        for logger, sub in zip(self.loggers, logger_states):
            if sub is not None and hasattr(logger, "load_state_dict"):
                logger.load_state_dict(sub)


class MemoryLogger:
    """Keeps the records in lists (``steps``, ``epochs``): for notebooks, tests and plots."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.epochs: list[dict] = []

    def log_step(self, record: dict) -> None:
        self.steps.append(record)

    def log_epoch(self, record: dict) -> None:
        self.epochs.append(record)

    def state_dict(self) -> dict:
        return {"steps": list(self.steps), "epochs": list(self.epochs)}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.epochs = list(state.get("steps", [])), list(state.get("epochs", []))


class JSONLinesLogger:
    """Appends one JSON object per record to ``path`` (``{"kind": "step" | "epoch", ...}``): readable without
    any tracker, and safe to resume (records are appended, never rewritten)."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, kind: str, record: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"kind": kind, **record}) + "\n")

    def log_step(self, record: dict) -> None:
        self._write("step", record)

    def log_epoch(self, record: dict) -> None:
        self._write("epoch", record)
