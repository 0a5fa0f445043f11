"""Weights & Biases: a GammaCallback logger for gamma, batch statistics, validation calibration and recall.

:class:`WandbLogger` plugs into :class:`~adaptive_focal.callbacks.GammaCallback`. It records gamma every logged step
(a scalar as ``gamma``; per-class or per-bin gammas as ``gamma/<i>`` series, or their mean, min and max when there
are more than 64), the training statistics as ``train/*``, and at each epoch end the validation metrics as
``val/*`` (ECE, accuracy, balanced accuracy, mean p_t, mean loss) with a reliability-diagram table and plot and a
per-class recall table. The policy's name and hyperparameters go into the run config, and ``define_metric`` ties
the series to ``step`` / ``epoch`` and gives summaries a direction (lowest ECE and loss, highest accuracy).

Without an explicit ``mode``, the mode is ``WANDB_MODE`` if set, else ``"online"`` only when an API key is
configured and ``"offline"`` otherwise, so a machine without credentials never waits for a network. A W&B error
never stops training: the logger warns once and stops logging.

Example:
    >>> import os, tempfile
    >>> import adaptive_focal as af
    >>> from adaptive_focal.integrations.wandb import WandbLogger
    >>> policy = af.create_policy("pi", af.FocalLoss("softmax"), setpoint=0.6)
    >>> logger = WandbLogger(policy, mode="disabled")  # "offline" writes wandb/offline-run-*/ files
    >>> logger.log_step({"step": 1, "epoch": 0, "gamma": 2.1})
    >>> logger.finish()
"""

from __future__ import annotations

import math
import netrc
import os
import warnings

from ._optional import require

wandb = require("wandb", "wandb", "adaptive_focal.integrations.wandb")

__all__ = ["WandbLogger", "resolve_mode"]

_MODES = ("online", "offline", "disabled")
_MAX_SERIES = 64


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str | None = None) -> str:
    """The W&B mode to use: ``mode``, else ``WANDB_MODE``, else online with credentials and offline without."""
    if mode is None:
        mode = os.environ.get("WANDB_MODE") or ("online" if _has_credentials() else "offline")
    if mode == "dryrun":
        mode = "offline"
    if mode not in _MODES:
        raise ValueError(f"mode must be one of 'online', 'offline', 'disabled', got {mode!r}")
    return mode


def _gamma_items(gamma) -> dict:
    if gamma is None:
        return {}
    if isinstance(gamma, (int, float)):
        return {"gamma": float(gamma)}
    values = gamma["values"] if isinstance(gamma, dict) else gamma
    flat = _flatten(values)
    if not flat:
        return {}
    items = {"gamma/mean": sum(flat) / len(flat), "gamma/min": min(flat), "gamma/max": max(flat)}
    if len(flat) <= _MAX_SERIES:
        items.update({f"gamma/{i}": v for i, v in enumerate(flat)})
    return items


def _flatten(values) -> list[float]:
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in _flatten(item)]
    return [float(values)]


def _scalars(prefix: str, record: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class WandbLogger:
    """Logs a GammaCallback's records to a W&B run (a new one, or ``run`` if given).

    Args:
        policy: the policy being logged; its name and ``hparams()`` go into the run config.
        run: an existing ``wandb`` run to log into (then ``project``, ``name``, ``mode``, ``dir`` are ignored).
        project, name, dir: passed to ``wandb.init``.
        mode: "online", "offline" or "disabled"; see :func:`resolve_mode` for the default.
        config: more run config (e.g. the training config).
        tables: log the reliability and per-class recall tables at epoch ends.
    """

    def __init__(self, policy=None, *, run=None, project: str = "adaptive_focal", name: str | None = None,
                 mode: str | None = None, dir=None, config: dict | None = None, tables: bool = True) -> None:
        self.tables = bool(tables)
        self._failed = False
        self._own_run = run is None
        if run is None:
            run = wandb.init(project=project, name=name, mode=resolve_mode(mode), dir=None if dir is None else str(dir),
                             config=dict(config or {}))
        elif config:
            run.config.update(dict(config), allow_val_change=True)
        self.run = run
        if policy is not None:
            run.config.update({"policy": policy.name,
                               **{f"policy.{k}": v for k, v in policy.hparams().items()}}, allow_val_change=True)
        run.define_metric("step")
        run.define_metric("epoch")
        run.define_metric("gamma*", step_metric="step")
        run.define_metric("train/*", step_metric="step")
        run.define_metric("val/*", step_metric="epoch")
        for key, summary in (("val/ece", "min"), ("val/mean_loss", "min"), ("val/accuracy", "max"),
                             ("val/balanced_accuracy", "max")):
            run.define_metric(key, step_metric="epoch", summary=summary)

    # -- the GammaLogger interface -------------------------------------------------------------------------
    def log_step(self, record: dict) -> None:
        data = {"step": record["step"], **_gamma_items(record.get("gamma"))}
        data.update(_scalars("train", record.get("train", {})))
        self._log(data)

    def log_epoch(self, record: dict) -> None:
        val = record.get("val", {})
        data = {"epoch": record["epoch"], "step": record["step"], **_gamma_items(record.get("gamma"))}
        data.update(_scalars("val", val))
        if self.tables and "bins" in val:
            data.update(self._reliability(val["bins"]))
        if self.tables and "classes" in val:
            data["val/per_class"] = self._per_class(val["classes"])
        self._log(data)

    def finish(self) -> None:
        """Finishes the run when this logger started it."""
        if self._own_run and not self._failed:
            try:
                self.run.finish()
            except Exception as err:  # noqa: BLE001 - W&B must never stop training
                self._fail(err)

    # -- helpers -----------------------------------------------------------------------------------------------
    def _log(self, data: dict) -> None:
        if self._failed:
            return
        try:
            self.run.log(data)
        except Exception as err:  # noqa: BLE001 - W&B must never stop training
            self._fail(err)

    def _fail(self, err: Exception) -> None:
        self._failed = True
        warnings.warn(f"adaptive_focal: W&B logging failed ({err!r}); logging to W&B is off for the rest of the run",
                      RuntimeWarning, stacklevel=3)

    @staticmethod
    def _reliability(bins: dict) -> dict:
        edges, counts = bins["edges"], bins["count"]
        rows = []
        for b, n in enumerate(counts):
            conf = bins["confidence_sum"][b] / n if n else math.nan
            acc = bins["correct_sum"][b] / n if n else math.nan
            rows.append([edges[b], edges[b + 1], conf, acc, n])
        table = wandb.Table(columns=["bin_low", "bin_high", "confidence", "accuracy", "count"], data=rows)
        plot = wandb.plot.line(table, "confidence", "accuracy", title="Reliability diagram (validation)")
        return {"val/reliability": table, "val/reliability_plot": plot}

    @staticmethod
    def _per_class(classes: dict) -> wandb.Table:
        recall = classes.get("recall", [math.nan] * len(classes["count"]))
        rows = [[c, n, r, p] for c, (n, r, p) in enumerate(zip(classes["count"], recall, classes["mean_pt"]))]
        return wandb.Table(columns=["class", "count", "recall", "mean_pt"], data=rows)
