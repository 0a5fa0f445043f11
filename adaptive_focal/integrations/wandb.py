"""Weights & Biases: a GammaCallback logger for gamma, batch statistics, validation calibration and recall.

:class:`WandbLogger` plugs into :class:`~adaptive_focal.callbacks.GammaCallback`. It records gamma every logged step
as :func:`~adaptive_focal.gamma_forms.gamma_scalars` gives it for every form (a scalar as ``gamma``; per-class or
per-bin gammas as their mean, min and max and, up to 64 values, one ``gamma/<i>`` series each; a mixture's
weight-averaged gamma, terms and weights; an asymmetric gamma's ``gamma/positive`` and ``gamma/negative``), the
training statistics as ``train/*``, and at each epoch end the validation metrics as ``val/*`` (ECE, accuracy,
balanced accuracy, mean p_t, mean loss) with a reliability-diagram table and plot and a per-class recall table. The
policy's name and hyperparameters go into the run config, and ``define_metric`` ties the series to ``step`` /
``epoch`` and gives summaries a direction (lowest ECE and loss, highest accuracy).

W&B never stops training:

* Without an explicit ``mode``, the mode is ``WANDB_MODE`` if set, else ``"online"`` only when W&B has an API key
  (:func:`has_credentials`, which looks where ``wandb`` itself does, without a network) and ``"offline"``
  otherwise.
* Online without an API key, or when the server cannot be reached or the run does not start within
  ``init_timeout`` seconds (``WANDB_INIT_TIMEOUT``, else 15; W&B's own default is 90), the logger warns once and
  logs offline (``wandb sync`` uploads the run later). A TCP connection to the server is tried first, within the
  same time, so that no network, a closed port or an unknown host is seen without waiting on wandb, which may take
  longer than its ``init_timeout`` when it cannot reach the server (it first looks up the account for its "logged
  in" message, with timeouts of its own). If even an offline run cannot start, the logger warns and logs nothing.
* A W&B error while logging warns once and stops logging to W&B.

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
import socket
import threading
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlsplit

from ..gamma_forms import gamma_scalars
from ._optional import require

wandb = require("wandb", "wandb", "adaptive_focal.integrations.wandb")

__all__ = ["WandbLogger", "has_credentials", "resolve_mode"]

_MODES = ("online", "offline", "disabled")
#: seconds an online run may take to log in and reach the server before the logger goes offline
DEFAULT_INIT_TIMEOUT = 15.0


def _netrc_file() -> Path:
    """The .netrc file wandb reads: ``$NETRC``, else ``~/.netrc``, else ``~/_netrc``."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    home = Path("~").expanduser()
    return next((path for path in (home / ".netrc", home / "_netrc") if path.exists()), home / ".netrc")


def _server_hosts(base_url: str) -> list[str]:
    """The netrc machine names of the W&B server at ``base_url``: its host (with the port, as ``wandb login``
    writes it) and, for a proxy such as CoreWeave Forge in front of W&B (wandb's default server), the upstream
    API's host."""
    urls = [base_url]
    try:  # where this wandb keeps the mapping (no public name for it)
        from wandb.sdk.lib.urls import forge_upstream_url

        urls.append(forge_upstream_url(base_url))
    except (ImportError, ValueError):
        pass
    return list(dict.fromkeys(netloc for url in urls if (netloc := urlsplit(url).netloc)))


def _settings():
    """wandb's settings as ``wandb.init`` will start from them (env vars, settings files, ``wandb login --host``),
    or None when they cannot be read."""
    try:
        return wandb.setup().settings
    except Exception:  # noqa: BLE001 - unreadable settings: the callers fall back to the defaults
        return None


def _base_url() -> str:
    settings = _settings()
    return str(settings.base_url) if settings is not None else os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def has_credentials() -> bool:
    """Whether W&B has credentials to log in with, found where ``wandb`` looks for them (no network, no prompt).

    In wandb's order: ``WANDB_API_KEY``, an identity token file (``WANDB_IDENTITY_TOKEN_FILE``), the ``api_key``
    setting, or a .netrc entry (``$NETRC``, ``~/.netrc`` or ``~/_netrc``) for the configured server: the
    ``base_url`` of wandb's settings, which is ``WANDB_BASE_URL`` or the host saved by ``wandb login --host``.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    settings = _settings()
    if settings is not None and (settings.api_key or getattr(settings, "identity_token_file", None)):
        return True
    try:
        saved = netrc.netrc(str(_netrc_file()))
    except (OSError, netrc.NetrcParseError):
        return False
    return any((entry := saved.authenticators(host)) is not None and entry[2] for host in _server_hosts(_base_url()))


def _unreachable(base_url: str, timeout: float) -> str | None:
    """Why the server at ``base_url`` cannot be reached (no TCP connection within ``timeout`` seconds, name
    resolution included), or None when it can, or when a proxy carries the traffic (then wandb's own timeouts
    judge). wandb alone may wait longer than its ``init_timeout`` for an unreachable server (it first resolves the
    account for its "logged in" message, with a fixed timeout of its own)."""
    parts = urlsplit(base_url)
    host = parts.hostname
    if not host or (urllib.request.getproxies() and not urllib.request.proxy_bypass(host)):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"cannot connect to {host}:{port} ({err!r})")

    probe = threading.Thread(target=connect, name="adaptive_focal-wandb-probe", daemon=True)  # a stuck name
    probe.start()                                                                          # lookup is left behind
    probe.join(timeout)
    return outcome[0] if outcome else f"no connection to {host}:{port} within {timeout:g} s"


def resolve_mode(mode: str | None = None) -> str:
    """The W&B mode to use: ``mode``, else ``WANDB_MODE``, else online with credentials and offline without."""
    if mode is None:
        mode = os.environ.get("WANDB_MODE") or ("online" if has_credentials() else "offline")
    if mode == "dryrun":
        mode = "offline"
    if mode not in _MODES:
        raise ValueError(f"mode must be one of 'online', 'offline', 'disabled', got {mode!r}")
    return mode


def _init_timeout(value) -> float:
    source = "init_timeout"
    if value is None:
        value, source = os.environ.get("WANDB_INIT_TIMEOUT", DEFAULT_INIT_TIMEOUT), "WANDB_INIT_TIMEOUT"
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"WANDB_INIT_TIMEOUT must be a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"{source} must be a positive number of seconds, got {value!r}")
    return float(value)


def _scalars(prefix: str, record: dict) -> dict:
    return {f"{prefix}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class WandbLogger:
    """Logs a GammaCallback's records to a W&B run (a new one, or ``run`` if given).

    Args:
        policy: the policy being logged; its name and ``hparams()`` go into the run config.
        run: an existing ``wandb`` run to log into (then ``project``, ``name``, ``mode``, ``dir`` and
            ``init_timeout`` are ignored).
        project, name, dir: passed to ``wandb.init``.
        mode: "online", "offline" or "disabled"; see :func:`resolve_mode` for the default. An online run that
            cannot start falls back to offline with a warning.
        config: more run config (e.g. the training config).
        tables: log the reliability and per-class recall tables at epoch ends.
        init_timeout: seconds an online run may take to log in and reach the server (``wandb.Settings``'
            ``init_timeout``) before the logger goes offline; default ``WANDB_INIT_TIMEOUT``, else 15.

    Attributes:
        mode: the mode of the run this logger started ("online", "offline" or "disabled"), None for a given
            ``run`` or when no run could start (then nothing is logged).
    """

    def __init__(self, policy=None, *, run=None, project: str = "adaptive_focal", name: str | None = None,
                 mode: str | None = None, dir=None, config: dict | None = None, tables: bool = True,
                 init_timeout: float | None = None) -> None:
        self.tables = bool(tables)
        self._failed = False
        self._own_run = run is None
        self.mode: str | None = None
        self.run = run
        if run is None:
            mode, timeout = resolve_mode(mode), _init_timeout(init_timeout)  # bad arguments raise here
            self.run = self._start(mode, timeout, project=project, name=name, config=dict(config or {}),
                                   dir=None if dir is None else str(dir))
        elif config:
            self._guarded(run.config.update, dict(config), allow_val_change=True)
        self._guarded(self._describe, policy)

    def _start(self, mode: str, timeout: float, **kwargs):
        """``wandb.init`` in ``mode``; online falls back to offline (one warning) when there is no API key, the
        server cannot be reached within ``timeout`` or the run does not start within it; None (a warning, logging
        off) if no run starts at all."""
        if mode == "online":
            if not has_credentials():
                reason = "no API key is configured (WANDB_API_KEY, `wandb login`, or a .netrc entry for the server)"
            elif (reason := _unreachable(_base_url(), timeout)) is None:
                try:
                    run = wandb.init(mode="online", settings=wandb.Settings(init_timeout=timeout), **kwargs)
                    self.mode = "online"
                    return run
                except Exception as err:  # noqa: BLE001 - server down or slow, login refused, timeout
                    reason = f"the W&B server did not accept the run within init_timeout={timeout:g} s ({err!r})"
            warnings.warn(f"adaptive_focal: W&B cannot log online: {reason}; logging offline instead (upload the "
                          "run later with `wandb sync`)", RuntimeWarning, stacklevel=3)
            mode = "offline"
        try:
            run = wandb.init(mode=mode, **kwargs)
        except Exception as err:  # noqa: BLE001 - W&B must never stop training
            self._fail(err)
            return None
        self.mode = mode
        return run

    def _describe(self, policy) -> None:
        run = self.run
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
        self._guarded(self._log_step, record)

    def log_epoch(self, record: dict) -> None:
        self._guarded(self._log_epoch, record)

    def finish(self) -> None:
        """Finishes the run when this logger started it."""
        if self._own_run and self.run is not None:
            self._guarded(self.run.finish)

    # -- helpers -----------------------------------------------------------------------------------------------
    def _log_step(self, record: dict) -> None:
        data = {"step": record["step"], **gamma_scalars(record.get("gamma"))}
        data.update(_scalars("train", record.get("train", {})))
        self.run.log(data)

    def _log_epoch(self, record: dict) -> None:
        val = record.get("val", {})
        data = {"epoch": record["epoch"], "step": record["step"], **gamma_scalars(record.get("gamma"))}
        data.update(_scalars("val", val))
        if self.tables and "bins" in val:
            data.update(self._reliability(val["bins"]))
        if self.tables and "classes" in val:
            data["val/per_class"] = self._per_class(val["classes"])
        self.run.log(data)

    def _guarded(self, fn, *args, **kwargs) -> None:
        """Calls ``fn`` unless W&B already failed; a failure warns once and turns W&B logging off."""
        if self._failed or self.run is None:
            return
        try:
            fn(*args, **kwargs)
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
