"""Lightning: a ``lightning.pytorch.Callback`` that drives a gamma policy from the Trainer's hooks.

The LightningModule computes its loss with ``return_stats=True`` and returns the statistics next to the loss:
``training_step`` returns ``{"loss": loss, "stats": stats}`` and ``validation_step`` returns ``{"stats": stats}``
(the key is configurable). :class:`GammaPolicyCallback` then

* calls ``policy.step(stats)`` after every optimizer step (``on_train_batch_end``; with gradient accumulation the
  statistics of the accumulated micro-batches are summed),
* adds up the validation statistics over the validation batches (they combine exactly by addition) and calls
  ``policy.epoch_end(val_stats)`` once per training epoch (sanity-check validation is ignored),
* logs gamma through the Trainer's loggers (``pl_module.log``) as
  :func:`~adaptive_focal.gamma_forms.gamma_scalars` gives it for every gamma form, under ``gamma`` per step and
  ``epoch/gamma`` after each epoch's update (``gamma`` itself for a number; ``gamma/mean``, ``gamma/min``, ... for
  per-class or per-bin gammas; ``gamma/positive`` and ``gamma/negative`` for an asymmetric gamma, ...), and the
  ``train/*`` statistics and ``val/*`` metrics,
* keeps the policy's state in Lightning checkpoints under a per-instance ``state_key``, so a run resumed from a
  checkpoint continues the exact gamma trajectory.

Example:
    >>> import adaptive_focal as af
    >>> from adaptive_focal.integrations.lightning import GammaPolicyCallback
    >>> criterion = af.FocalLoss("softmax")
    >>> callback = GammaPolicyCallback(af.create_policy("automated", criterion))
    >>> callback.state_key
    "GammaPolicyCallback{'policy': 'automated', 'name': None}"
"""

from __future__ import annotations

from ..callbacks import stats_record
from ..gamma_forms import gamma_scalars
from ..policies import GammaPolicy
from ..stats import BatchStats
from ._optional import require

pl = require("lightning.pytorch", "lightning", "adaptive_focal.integrations.lightning")

__all__ = ["GammaPolicyCallback"]


class GammaPolicyCallback(pl.Callback):
    """Drives ``policy`` from a Lightning Trainer.

    Args:
        policy: the :class:`~adaptive_focal.GammaPolicy` for the module's :class:`~adaptive_focal.FocalLoss`.
        stats_key: the key of the statistics in the dicts ``training_step`` / ``validation_step`` return.
        log_every_n_steps: log gamma and training statistics every this many steps (reading them back
            synchronises with an accelerator).
        name: distinguishes two callbacks with the same policy in one Trainer (part of ``state_key``).
    """

    def __init__(self, policy: GammaPolicy, stats_key: str = "stats", log_every_n_steps: int = 50,
                 name: str | None = None) -> None:
        super().__init__()
        if not isinstance(policy, GammaPolicy):
            raise TypeError(f"policy must be a GammaPolicy (see adaptive_focal.create_policy), got "
                            f"{type(policy).__name__}")
        if isinstance(log_every_n_steps, bool) or not isinstance(log_every_n_steps, int) or log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be a positive integer, got {log_every_n_steps!r}")
        self.policy = policy
        self.stats_key = stats_key
        self.log_every_n_steps = log_every_n_steps
        self.name = name
        self._val_stats: BatchStats | None = None
        self._train_stats: BatchStats | None = None
        self._last_global_step = -1

    @property
    def state_key(self) -> str:
        return self._generate_state_key(policy=self.policy.name, name=self.name)

    def _stats(self, outputs, hook: str) -> BatchStats | None:
        stats = outputs.get(self.stats_key) if isinstance(outputs, dict) else None
        if stats is not None and not isinstance(stats, BatchStats):
            raise TypeError(f"{hook}: outputs[{self.stats_key!r}] must be the BatchStats from return_stats=True, "
                            f"got {type(stats).__name__}")
        return stats

    # -- training ----------------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stats = self._stats(outputs, "training_step")
        if stats is None and self.policy.needs_stats:
            raise ValueError(
                f"the {self.policy.name!r} policy needs the batch statistics: compute the loss with "
                f"return_stats=True and return {{'loss': loss, {self.stats_key!r}: stats}} from training_step"
            )
        if stats is not None:  # micro-batches of one optimizer step (gradient accumulation) add up
            self._train_stats = stats if self._train_stats is None else self._train_stats + stats
        if trainer.global_step == self._last_global_step:
            return  # gradients are still accumulating: the optimizer has not stepped
        self._last_global_step = trainer.global_step
        stats, self._train_stats = self._train_stats, None
        self.policy.step(stats)
        if self.policy.step_count % self.log_every_n_steps == 0:
            self._log_gamma(pl_module, "gamma", on_step=True)
            if stats is not None:
                for key, value in stats_record(stats).items():
                    pl_module.log(f"train/{key}", float(value), on_step=True, on_epoch=False)

    # -- validation --------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_stats = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking:
            return
        stats = self._stats(outputs, "validation_step")
        if stats is not None:
            self._val_stats = stats if self._val_stats is None else self._val_stats + stats

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        val = self._val_stats
        if val is None and self.policy.needs_validation:
            raise ValueError(
                f"the {self.policy.name!r} policy needs validation statistics: return {{{self.stats_key!r}: stats}} "
                "from validation_step (loss computed with return_stats=True) and validate every epoch"
            )
        self.policy.epoch_end(val)
        self._val_stats = None
        self._log_gamma(pl_module, "epoch/gamma", on_step=False)
        if val is not None:
            for key, value in stats_record(val).items():
                pl_module.log(f"val/{key}", float(value), on_step=False, on_epoch=True)

    def _log_gamma(self, pl_module, prefix: str, on_step: bool) -> None:
        scalars = gamma_scalars(self.policy.get_last_gamma(), prefix)
        if scalars:
            pl_module.log_dict(scalars, on_step=on_step, on_epoch=not on_step)

    # -- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.policy.load_state_dict(state_dict["policy"])

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_global_step = trainer.global_step  # also right after resuming from a checkpoint
        self._train_stats = None
