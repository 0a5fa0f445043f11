"""Hugging Face ``transformers.Trainer``: the focal loss as the Trainer's loss, and a callback driving a policy.

* :class:`FocalLossHook` is the ``compute_loss_func`` that makes a Trainer use a
  :class:`~adaptive_focal.FocalLoss`: it reads ``outputs["logits"]``, computes the loss with its statistics, and
  keeps the statistics of the training micro-batches (summed over gradient accumulation) and of evaluation
  batches apart for the callback. With gradient accumulation the Trainer passes ``num_items_in_batch``; the
  hook then returns the summed loss divided by it, as the Trainer's own losses do (with class weights, ``weight``,
  that is the weighted sum over the number of items, not over the sum of the weights as ``reduction="mean"``
  divides). Every setting of the FocalLoss applies (class priors, label smoothing, ...): the hook calls it.
* :class:`GammaTrainerCallback` steps the policy after every optimizer step, calls ``epoch_end`` with the
  evaluation statistics after each evaluation (or at each epoch end for policies that need none), forwards
  records to adaptive_focal loggers (e.g. :class:`~adaptive_focal.integrations.wandb.WandbLogger`), and saves its
  state in Trainer checkpoints (``ExportableState``; resume with ``restore_callback_states_from_checkpoint=True``).

What reaches the Trainer's logs. Every log gains gamma as :func:`~adaptive_focal.gamma_forms.gamma_scalars` gives
it for every gamma form (``gamma``, or ``gamma/mean``, ``gamma/min``, ... for per-class and per-bin gammas, and so
on), and every evaluation log the focal statistics of the evaluated set, ``eval_focal_ece``,
``eval_focal_mean_pt``, ... (the prefix follows ``metric_key_prefix``). The callback adds them in ``on_log``, which
the Trainer calls right after it appended the log to ``state.log_history``, so the callback writes them into that
entry as well: they are in ``log_history`` (and ``trainer_state.json``), in what ``evaluate()`` returns, and in
what every later callback sees. The Trainer puts its reporting integrations (``report_to``: W&B, TensorBoard, ...)
ahead of the callbacks given to it; :meth:`GammaTrainerCallback.attach` moves the callback ahead of them, so that
they receive these values too.

Example:
    >>> import adaptive_focal as af
    >>> from adaptive_focal.integrations.transformers import FocalLossHook, GammaTrainerCallback
    >>> criterion = af.FocalLoss("softmax", gamma=2.0)
    >>> hook = FocalLossHook(criterion)
    >>> callback = GammaTrainerCallback(af.create_policy("automated", criterion), hook)
    >>> # trainer = Trainer(model, args, ..., compute_loss_func=hook)
    >>> # callback.attach(trainer)  # or Trainer(..., callbacks=[callback]): then report_to integrations miss them
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..callbacks import GammaCallback, stats_record
from ..gamma_forms import gamma_scalars
from ..loss import FocalLoss
from ..policies import GammaPolicy
from ..stats import BatchStats
from ._optional import require

transformers = require("transformers", "transformers", "adaptive_focal.integrations.transformers")
from transformers.trainer_callback import ExportableState, TrainerCallback  # noqa: E402

__all__ = ["FocalLossHook", "GammaTrainerCallback"]


class FocalLossHook:
    """``compute_loss_func`` for ``transformers.Trainer`` that computes a FocalLoss and keeps its statistics.

    Logits shaped (N, C) or, for token classification, (N, T, C) (moved to (N, C, T) for the softmax loss);
    labels as the Trainer passes them (class indices with -100 ignored, or multi-label targets for sigmoid).
    """

    def __init__(self, criterion: FocalLoss) -> None:
        if not isinstance(criterion, FocalLoss):
            raise TypeError(f"criterion must be an adaptive_focal.FocalLoss, got {type(criterion).__name__}")
        self.criterion = criterion
        self.train_stats: BatchStats | None = None
        self.eval_stats: BatchStats | None = None

    def __call__(self, outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        c = self.criterion
        if c.mode == "softmax" and logits.dim() > 2:
            logits = logits.movedim(-1, 1)
        reduction = "sum" if (num_items_in_batch is not None and c.reduction == "mean") else c.reduction
        # the module itself, so every setting (priors, smoothing, statistics options, ...) applies
        loss, stats = c(logits, labels, return_stats=True, reduction=reduction)
        if reduction != c.reduction:
            loss = loss / num_items_in_batch
        if torch.is_grad_enabled():  # a training micro-batch (the Trainer evaluates under no_grad)
            self.train_stats = stats if self.train_stats is None else self.train_stats + stats
        else:
            self.eval_stats = stats if self.eval_stats is None else self.eval_stats + stats
        return loss

    def pop_train_stats(self) -> BatchStats | None:
        stats, self.train_stats = self.train_stats, None
        return stats

    def pop_eval_stats(self) -> BatchStats | None:
        stats, self.eval_stats = self.eval_stats, None
        return stats


class GammaTrainerCallback(TrainerCallback, ExportableState):
    """Drives ``policy`` from a ``transformers.Trainer`` whose loss is ``hook``.

    Args:
        policy: the policy for the hook's FocalLoss.
        hook: the :class:`FocalLossHook` given to the Trainer as ``compute_loss_func``.
        loggers: adaptive_focal loggers (``log_step`` / ``log_epoch``), e.g. a WandbLogger.
        log_every: log to them every this many optimizer steps.
        name: identifies this callback's policy when the Trainer rebuilds the callback from a checkpoint (the
            Trainer re-creates stateful callbacks from their saved arguments, so the live policy is looked up by
            ``name``); give two callbacks in one process different names.
    """

    _live: ClassVar[dict[str, tuple]] = {}

    def __init__(self, policy: GammaPolicy | None = None, hook: FocalLossHook | None = None, loggers=(),
                 log_every: int = 50, name: str = "adaptive_focal") -> None:
        if policy is None:  # rebuilt by Trainer._load_callback_state from the checkpoint's arguments
            if name not in self._live:
                raise ValueError(f"no GammaTrainerCallback named {name!r} was created in this process; build it "
                                 "with its policy and hook before resuming")
            policy, hook, loggers = self._live[name]
        if not isinstance(hook, FocalLossHook):
            raise TypeError(f"hook must be the FocalLossHook given to the Trainer, got {type(hook).__name__}")
        if hook.criterion is not policy.loss:
            raise ValueError("the policy must drive the hook's FocalLoss (policy.loss is not hook.criterion)")
        self._callback = GammaCallback(policy, loggers=loggers, log_every=log_every)
        self.hook, self.name, self.log_every = hook, name, log_every
        self._live[name] = (policy, hook, list(loggers))

    @property
    def policy(self) -> GammaPolicy:
        return self._callback.policy

    # -- Trainer events ------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        strategy = getattr(args, "eval_strategy", "no")
        if self.policy.needs_validation and str(getattr(strategy, "value", strategy)) == "no":
            raise ValueError(f"the {self.policy.name!r} policy needs validation statistics: set eval_strategy="
                             "'epoch' (and an eval_dataset) in TrainingArguments")

    def on_step_end(self, args, state, control, **kwargs):
        self._callback.on_train_batch_end(self.hook.pop_train_stats())

    def on_epoch_end(self, args, state, control, **kwargs):
        if not self.policy.needs_validation:
            self._callback.on_epoch_end(None)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        val = self.hook.pop_eval_stats()
        if val is None:
            return
        if metrics is not None:  # already there when on_log added them to the evaluation's log (the same dict)
            for key, value in _focal_metrics(_prefix_of(metrics) or "eval", val).items():
                metrics.setdefault(key, value)
        if self.policy.needs_validation:
            self._callback.on_epoch_end(val)

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        test = self.hook.pop_eval_stats()  # predict() is no evaluation: its statistics must not reach the policy
        if test is not None and metrics is not None:
            metrics.update(_focal_metrics(_prefix_of(metrics) or "test", test))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        added = gamma_scalars(self.policy.get_last_gamma())
        prefix = _prefix_of(logs)
        if prefix is not None and self.hook.eval_stats is not None:  # the log of an evaluation that just ended
            added.update(_focal_metrics(prefix, self.hook.eval_stats))
        # Trainer.log appends {**logs, "step": global_step} to log_history, then calls on_log: complete that entry
        entry = state.log_history[-1] if state.log_history else None
        if entry is not None and entry.get("step") == state.global_step and logs.keys() <= entry.keys():
            entry.update(added)
        logs.update(added)

    def attach(self, trainer) -> GammaTrainerCallback:
        """Adds this callback to ``trainer`` ahead of every other callback, the reporting integrations
        (``report_to``) included, so the gamma and ``eval_focal_*`` values it adds to each log reach them too;
        moves it there if the Trainer already has it. Returns the callback.

        The Trainer's ``compute_loss_func`` must be this callback's :class:`FocalLossHook`.
        """
        handler = getattr(trainer, "callback_handler", None)
        if handler is None:
            raise TypeError(f"trainer must be a transformers.Trainer, got {type(trainer).__name__}")
        if getattr(trainer, "compute_loss_func", None) is not self.hook:
            raise ValueError("the trainer's compute_loss_func must be this callback's FocalLossHook "
                             "(Trainer(..., compute_loss_func=hook))")
        handler.callbacks[:] = [self] + [cb for cb in handler.callbacks if cb is not self]
        return self

    # -- checkpoint state (ExportableState: JSON in trainer_state.json) ------------------------------------------
    def state(self) -> dict:
        return {"args": {"name": self.name, "log_every": self.log_every},
                "attributes": {"policy_state": _to_json(self.policy.state_dict())}}

    @property
    def policy_state(self) -> dict:
        return _to_json(self.policy.state_dict())

    @policy_state.setter
    def policy_state(self, value: dict) -> None:
        self.policy.load_state_dict(_from_json(value))


def _prefix_of(metrics: dict) -> str | None:
    """The ``metric_key_prefix`` of an evaluation's (or a prediction's) metrics, from the speed metrics the
    Trainer always adds (``<prefix>_runtime``); None for other logs (a training log, the end-of-training summary)."""
    for key in metrics:
        if key.endswith("_runtime") and key != "train_runtime":
            return key[: -len("_runtime")]
    return None


def _focal_metrics(prefix: str, stats: BatchStats) -> dict:
    return {f"{prefix}_focal_{key}": value for key, value in stats_record(stats).items()}


def _to_json(value):
    if isinstance(value, torch.Tensor):
        return {"__tensor__": value.detach().cpu().tolist(), "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value):
    if isinstance(value, dict):
        if "__tensor__" in value:
            return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value
