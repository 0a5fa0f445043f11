"""The gamma-policy base class and the registry behind ``create_policy`` / ``list_policies``.

A policy holds a :class:`~adaptive_focal.FocalLoss` and writes its gamma, the way a learning-rate scheduler
writes an optimizer's learning rate. The loss never refers back to the policy. Every policy has one signature:

* ``step(stats=None)`` after each optimizer step, with that batch's :class:`~adaptive_focal.BatchStats`;
* ``epoch_end(val_stats=None)`` at the end of each epoch, with validation statistics for the policies whose
  ``needs_validation`` is True;
* ``get_last_gamma()``, ``state_dict()`` and ``load_state_dict()``.

Arguments are checked before anything changes, so a bad call leaves the policy and the loss as they were.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .loss import GAMMA_MODULES, FocalLoss
from .stats import BatchStats, _distributed

__all__ = ["GammaPolicy", "create_policy", "list_policies", "policy_class", "register_policy"]

_REGISTRY: dict[str, type[GammaPolicy]] = {}


def register_policy(name: str):
    """Class decorator: makes a policy available to :func:`create_policy` under ``name``."""

    def wrap(cls: type[GammaPolicy]) -> type[GammaPolicy]:
        if name in _REGISTRY:
            raise ValueError(f"a policy named {name!r} is already registered ({_REGISTRY[name].__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_policies() -> list[str]:
    """The names :func:`create_policy` accepts, sorted."""
    return sorted(_REGISTRY)


def policy_class(name: str) -> type[GammaPolicy]:
    """The class registered as ``name`` (to read its ``search_space``, ``stats_mode``, ... without building one).

    Example:
        >>> from adaptive_focal import policy_class
        >>> policy_class("efl").stats_mode
        'sigmoid'
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; available policies: {', '.join(list_policies())}")
    return _REGISTRY[name]


def create_policy(name: str, loss: FocalLoss, **kwargs) -> GammaPolicy:
    """Builds the policy registered as ``name`` for ``loss``; ``kwargs`` are the policy's hyperparameters.

    Example:
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> loss = FocalLoss("softmax", gamma=2.0)
        >>> policy = create_policy("linear", loss, start=0.0, end=2.0, total=100)
        >>> float(loss.gamma)
        0.0
    """
    return policy_class(name)(loss, **kwargs)


def _check_number(name: str, value, low=None, high=None, *, low_open=False, integer=False) -> float:
    """Validates a hyperparameter; the message names it, the allowed range and what was received."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    v = float(value)
    if v != v:
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and v > high
    if bad_low or bad_high:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        raise ValueError(f"{name} must be in {'(' if low_open else '['}{lo}, {hi}], got {value!r}")
    return int(value) if integer else v


def _class_shape(per_class, num_classes) -> tuple[int | None, tuple[int, ...]]:
    """``(num_classes, shape)`` of a gamma that is global (``()``) or per class (``(C,)``, num_classes required)."""
    if not isinstance(per_class, bool):
        raise ValueError(f"per_class must be True or False, got {per_class!r}")
    if not per_class:
        return None, ()
    if num_classes is None:
        raise ValueError("num_classes is required with per_class=True (the length of the (C,) gamma)")
    c = _check_number("num_classes", num_classes, 1, integer=True)
    return c, (c,)


class GammaPolicy:
    """Base class of every gamma policy.

    Subclasses implement ``_compute(stats)`` (the gamma after a training step) and, where they use validation
    statistics, ``_compute_epoch(val_stats)``; both return the gamma to write (a float, a tensor or a
    ``GammaTable``) or None to keep the current one. State beyond the counters is declared by ``_state`` /
    ``_load_state``.

    Attributes:
        needs_validation: whether ``epoch_end`` must be given validation statistics.
        stats_mode: "sigmoid" or "softmax" when the policy only makes sense for that mode's statistics.
    """

    name: ClassVar[str] = "base"
    needs_validation: ClassVar[bool] = False
    needs_stats: ClassVar[bool] = False
    stats_mode: ClassVar[str | None] = None
    #: bumped when the state layout changes; load_state_dict accepts older versions through .get defaults
    state_version: ClassVar[int] = 1
    #: hyperparameter search space for tuners: name -> ("float", low, high, log) | ("int", low, high) |
    #: ("categorical", choices); empty when the policy has nothing worth searching
    search_space: ClassVar[dict] = {}

    #: sum the statistics over torch.distributed ranks before using them (set False to use local statistics)
    sync_stats: bool = True

    def __init__(self, loss: FocalLoss) -> None:
        if not isinstance(loss, FocalLoss):
            raise TypeError(f"loss must be an adaptive_focal.FocalLoss, got {type(loss).__name__}")
        if self.stats_mode is not None and loss.mode != self.stats_mode:
            raise ValueError(
                f"the {self.name!r} policy needs a FocalLoss with mode={self.stats_mode!r}, got mode={loss.mode!r}"
            )
        self.loss = loss
        self.step_count = 0
        self.epoch = 0
        self._last_gamma: Any = None

    # -- the training-loop interface ---------------------------------------------------------------------
    def step(self, stats: BatchStats | None = None) -> None:
        """Call after each optimizer step with that batch's statistics (``return_stats=True``).

        Under ``torch.distributed`` the statistics are first summed over all ranks (``sync_stats``), so every
        rank computes the same gamma.
        """
        self._check_stats("stats", stats, required=self.needs_stats)
        stats = self._synced(stats)
        gamma = self._compute(stats)  # may update internal state; must not raise after checks pass
        self.step_count += 1
        if gamma is not None:
            self._write(gamma)

    def epoch_end(self, val_stats: BatchStats | None = None) -> None:
        """Call at the end of each epoch, with validation statistics when ``needs_validation``."""
        self._check_stats("val_stats", val_stats, required=self.needs_validation)
        val_stats = self._synced(val_stats)
        self.epoch += 1
        gamma = self._compute_epoch(val_stats)
        if gamma is not None:
            self._write(gamma)

    def _synced(self, stats: BatchStats | None) -> BatchStats | None:
        if stats is None or not self.sync_stats or not (self.needs_stats or self.needs_validation):
            return stats
        if not _distributed():
            return stats
        return stats.all_reduce()

    def hparams(self) -> dict:
        """The policy's hyperparameters as plain values (numbers, strings, tuples), for experiment configs."""
        skip = {"loss", "step_count", "epoch"}
        plain = (int, float, str, bool)
        out = {}
        for key, value in vars(self).items():
            if key.startswith("_") or key in skip:
                continue
            if isinstance(value, plain) or (isinstance(value, tuple) and all(isinstance(v, plain) for v in value)):
                out[key] = value
        return out

    def get_last_gamma(self):
        """The gamma the policy last wrote: a float, a tensor (per class) or a GammaTable."""
        return self._last_gamma

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The policy's state with explicit keys (never the loss): counters, the last gamma and ``_state()``."""
        last = self._last_gamma
        if isinstance(last, GAMMA_MODULES):
            last = _form_state(last)
        elif isinstance(last, torch.Tensor):
            last = last.detach().cpu().clone()
        return {
            "policy": self.name,
            "version": self.state_version,
            "step_count": self.step_count,
            "epoch": self.epoch,
            "last_gamma": last,
            **self._state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores ``state_dict()`` into this (possibly freshly built) policy and writes its gamma into the loss."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
        if state.get("policy", self.name) != self.name:
            raise ValueError(f"state is for the {state['policy']!r} policy, not {self.name!r}")
        for key in ("step_count", "epoch"):
            if key not in state:
                raise ValueError(f"state is missing {key!r}; keys present: {sorted(state)}")
        self._load_state(state)  # validates and restores subclass state first
        self.step_count = int(state["step_count"])
        self.epoch = int(state["epoch"])
        last = state.get("last_gamma")
        if isinstance(last, dict):
            last = _form_from_state(last)
        if last is not None:
            self._write(last)

    def _state(self) -> dict:
        return {}

    def _load_state(self, state: dict) -> None:
        pass

    # -- for subclasses --------------------------------------------------------------------------------------
    def _compute(self, stats: BatchStats | None):
        return None

    def _compute_epoch(self, val_stats: BatchStats | None):
        return None

    def _write(self, gamma) -> None:
        """Writes gamma into the loss (in place when the shape allows) and remembers it."""
        current = self.loss.gamma
        if gamma is current:  # the policy updated the loss's gamma module in place
            self._last_gamma = current
            return
        if isinstance(gamma, GAMMA_MODULES):  # GammaTable, FocalMixture, AsymmetricGamma (validated when built)
            if type(current) is type(gamma) and all(
                    a.shape == b.shape for a, b in zip(current.buffers(), gamma.buffers())):
                with torch.no_grad():  # in place: the loss keeps its module, compiled graphs their buffers
                    for a, b in zip(current.buffers(), gamma.buffers()):
                        a.copy_(b)
            else:
                self.loss.gamma = gamma.to(self._device())
            self._last_gamma = self.loss.gamma
            return
        self.loss._set_gamma(gamma, check=False)  # policies produce finite values; skip the per-step NaN check
        value = self.loss.gamma
        self._last_gamma = float(gamma) if isinstance(gamma, (int, float)) else value.detach().clone()

    def _device(self) -> torch.device:
        for t in self.loss.buffers():
            return t.device
        return torch.device("cpu")

    def _check_stats(self, name: str, stats, *, required: bool) -> None:
        if stats is None:
            if required:
                raise ValueError(
                    f"the {self.name!r} policy needs {name}: pass the BatchStats from the loss "
                    f"(return_stats=True){' on the validation set' if name == 'val_stats' else ''}"
                )
            return
        if not isinstance(stats, BatchStats):
            raise TypeError(f"{name} must be a BatchStats (from return_stats=True), got {type(stats).__name__}")
        mode = "softmax" if stats.conf_count is not None else "sigmoid"
        if self.stats_mode is not None and mode != self.stats_mode:
            raise ValueError(f"the {self.name!r} policy needs {self.stats_mode} statistics, got {mode} statistics")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(step={self.step_count}, epoch={self.epoch})"


_FORMS = {cls.__name__: cls for cls in GAMMA_MODULES}


def _form_state(gamma: torch.nn.Module) -> dict:
    """A gamma module as plain CPU tensors: ``{"form": class name, buffer name: tensor, ...}``."""
    return {"form": type(gamma).__name__, **{k: v.detach().cpu().clone() for k, v in gamma.named_buffers()}}


def _form_from_state(state: dict) -> torch.nn.Module:
    """The inverse of ``_form_state``; a dict without ``"form"`` is a GammaTable (the layout of version 1)."""
    name = state.get("form", "GammaTable")
    if name not in _FORMS:
        raise ValueError(f"state['last_gamma'] has an unknown gamma form {name!r}; known: {', '.join(sorted(_FORMS))}")
    return _FORMS[name](**{k: v for k, v in state.items() if k != "form"})
