"""The gamma-policy base class, the run context and the registry behind ``create_policy`` / ``list_policies``.

A policy holds a :class:`~adaptive_focal.FocalLoss` and writes its gamma, the way a learning-rate scheduler writes
an optimizer's learning rate; the loss never refers back to the policy. Every policy has one signature:

* ``step(stats=None)`` after each optimizer step, with that batch's :class:`~adaptive_focal.BatchStats`;
* ``epoch_end(val_stats=None)`` at the end of each epoch, with validation statistics for the policies whose
  ``needs_validation`` is True;
* ``get_last_gamma()``, ``state_dict()`` and ``load_state_dict()``.

Writing a policy. A subclass overrides public hooks and the base class does the bookkeeping around them (counters,
argument checks, summing statistics over ``torch.distributed`` ranks, skipping non-finite statistics, writing
gamma into the loss, state keys and versions):

* ``compute(stats)`` returns the gamma after a training step (a float, a tensor, a gamma form such as
  :class:`~adaptive_focal.GammaTable`) or None to keep the current one; ``compute_epoch(val_stats)`` the same at
  an epoch end; ``__init__`` writes the starting gamma with ``write_gamma``;
* ``check_stats(name, stats)`` raises on statistics the policy cannot use, before anything changes;
* ``extra_state()`` returns the policy's own state (tensors, numbers); ``check_extra_state(state)`` raises on a
  state it cannot load and ``load_extra_state(state)`` then restores it, so a load changes everything or nothing;
* class attributes declare what it needs: ``modes`` (the loss modes it applies to), ``needs_stats`` /
  ``needs_validation`` with ``reads`` / ``reads_validation`` (the statistics' fields it reads), ``search_space``
  (:mod:`adaptive_focal.policies.space` parameters for tuners), ``requires`` (the :class:`RunContext` fields
  ``run_defaults`` cannot do without) and the classmethod ``run_defaults(loss, context)``.

Non-finite statistics. A batch whose statistics are not finite (its loss, ``sum_loss``, or a field the policy
reads; a NaN or infinite logit) is skipped by every policy that reads statistics: the hook gets it as an empty
batch (the fields the policy reads are zero, as when every element is ignored), which every policy here treats
as nothing measured, so gamma keeps its value. ``skipped_batches`` counts them (saved in the state) and the first
one raises a ``RuntimeWarning``. On CPU statistics the check is a few Python operations; on an accelerator it is a
``torch.where`` on the device, so ``step`` never waits for the device, and the warning comes at the next
``epoch_end`` or ``state_dict``.

Arguments are checked before anything changes, so a bad call leaves the policy and the loss as they were.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar

import torch

from ..gamma_forms import form_from_state, form_state
from ..loss import GAMMA_MODULES, FocalLoss
from ..stats import MODES as _MODES
from ..stats import BatchStats, _distributed
from .space import Categorical, Float, Int, as_param

__all__ = [
    "GammaPolicy", "RunContext", "create_policy", "list_policies", "policy_class", "register_policy",
]

_REGISTRY: dict[str, type[GammaPolicy]] = {}


# ---------------------------------------------------------------------------------------------------------------
# the run a policy is built for
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunContext:
    """What a policy may need to know about the run it drives, for :meth:`GammaPolicy.run_defaults`.

    Every field defaults to None (unknown). A policy's ``requires`` names the fields it cannot be built without
    through a context. The run's objects (model, sources, optimizer) are left out of ``repr`` and ``==``.

    Attributes:
        epochs: the number of training epochs.
        steps_per_epoch: optimizer steps (``policy.step`` calls) per epoch.
        num_classes: C, the classes of the task (the loss's dim 1).
        gamma: the run's base gamma (what a fixed-gamma run would use; schedules are placed around it).
        model: the ``nn.Module`` being trained (the learned controllers read it).
        val_source: an iterable of held-out ``(x, y)`` batches (the learned controllers).
        train_source: an iterable of training ``(x, y)`` batches for the look-ahead (else ``policy.observe``).
        optimizer: the model's optimizer (its learning rate is the look-ahead's).
        seed: the run's seed (the policies that draw random numbers are seeded with it).

    Example:
        >>> from adaptive_focal import FocalLoss, RunContext, create_policy
        >>> context = RunContext(epochs=10, steps_per_epoch=50, gamma=2.0)
        >>> context.total_steps
        500
        >>> create_policy("linear", FocalLoss("softmax"), context=context).hparams()["total"]
        250
    """

    epochs: int | None = None
    steps_per_epoch: int | None = None
    num_classes: int | None = None
    gamma: float | None = None
    model: Any = field(default=None, repr=False, compare=False)
    val_source: Any = field(default=None, repr=False, compare=False)
    train_source: Any = field(default=None, repr=False, compare=False)
    optimizer: Any = field(default=None, repr=False, compare=False)
    seed: int | None = None

    def __post_init__(self) -> None:
        for name, low in (("epochs", 1), ("steps_per_epoch", 1), ("num_classes", 1), ("seed", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Integral) or value < low):
                raise ValueError(f"RunContext: {name} must be None or an integer >= {low}, got {value!r}")
        g = self.gamma
        if g is not None and (isinstance(g, bool) or not isinstance(g, Real) or not math.isfinite(g)):
            raise ValueError(f"RunContext: gamma must be None or a finite number, got {g!r}")

    @property
    def total_steps(self) -> int | None:
        """``epochs * steps_per_epoch``, or None when either is unknown."""
        if self.epochs is None or self.steps_per_epoch is None:
            return None
        return self.epochs * self.steps_per_epoch


_CONTEXT_FIELDS = tuple(f.name for f in dataclasses.fields(RunContext))


# ---------------------------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------------------------
def register_policy(name: str):
    """Class decorator: makes a :class:`GammaPolicy` subclass available to :func:`create_policy` as ``name``.

    A name is registered once and a class under one name (its ``name`` attribute is the key of its saved state).
    The README's "Writing your own policy" registers one and tunes it with Optuna.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_policy: name must be a non-empty string, got {name!r}")

    def wrap(cls: type[GammaPolicy]) -> type[GammaPolicy]:
        if not (isinstance(cls, type) and issubclass(cls, GammaPolicy)):
            raise TypeError(f"register_policy({name!r}) decorates a GammaPolicy subclass, got {cls!r}")
        if name in _REGISTRY:
            raise ValueError(f"a policy named {name!r} is already registered ({_REGISTRY[name].__name__})")
        if _REGISTRY.get(cls.name) is cls:
            raise ValueError(f"{cls.__name__} is already registered as {cls.name!r}; a class has one name")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_policies() -> list[str]:
    """The names :func:`create_policy` accepts, sorted."""
    return sorted(_REGISTRY)


def policy_class(name: str) -> type[GammaPolicy]:
    """The class registered as ``name`` (to read its ``search_space``, ``modes``, ... without building one).

    Example:
        >>> from adaptive_focal import policy_class
        >>> policy_class("efl").modes
        ('sigmoid',)
        >>> policy_class("efl").applies_to("softmax")
        False
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; available policies: {', '.join(list_policies())}")
    return _REGISTRY[name]


def create_policy(name: str, loss: FocalLoss, *, context: RunContext | None = None, **kwargs) -> GammaPolicy:
    """Builds the policy registered as ``name`` for ``loss``; ``kwargs`` are the policy's hyperparameters.

    With a ``context``, the hyperparameters that depend on the run come from the class's
    :meth:`~GammaPolicy.run_defaults` and ``kwargs`` override them:
    ``cls(loss, **{**cls.run_defaults(loss, context), **kwargs})``. A field of the class's ``requires`` that the
    context leaves None (and no keyword argument of that name gives) is an error naming it. Without a context,
    only ``kwargs`` and the class's own defaults apply.

    Example:
        >>> from adaptive_focal import FocalLoss, RunContext, create_policy
        >>> loss = FocalLoss("softmax", gamma=2.0)
        >>> policy = create_policy("linear", loss, start=0.0, end=2.0, total=100)
        >>> float(loss.gamma)
        0.0
        >>> create_policy("cosine", loss, context=RunContext(epochs=4, steps_per_epoch=25, gamma=1.0)).hparams()
        {'unit': 'step', 'start': 2.0, 'end': 0.5, 'total': 100}
    """
    cls = policy_class(name)
    if context is None:
        return cls(loss, **kwargs)
    if not isinstance(context, RunContext):
        raise TypeError(f"context must be a RunContext or None, got {type(context).__name__}")
    missing = cls.missing_requirements(context, kwargs)
    if missing:
        raise ValueError(
            f"the {name!r} policy needs RunContext({missing[0]}=...) to be built from a context "
            f"(it requires {', '.join(cls.requires)}), got {missing[0]}=None"
        )
    return cls(loss, **{**cls.run_defaults(loss, context), **kwargs})


# ---------------------------------------------------------------------------------------------------------------
# argument checks shared by the policies
# ---------------------------------------------------------------------------------------------------------------
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


def _state_count(state: dict, key: str) -> int:
    value = state[key]
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"state[{key!r}] must be a non-negative integer, got {value!r}")
    return int(value)


def state_tensor(state: dict, key: str, like: torch.Tensor, *, finite: bool = True,
                 allow_none: bool = False) -> torch.Tensor | None:
    """``state[key]`` checked against ``like`` (a tensor of the policy's): present, convertible to a tensor of
    ``like``'s shape and (``finite``) finite; returned as a new tensor with ``like``'s dtype and device. For a
    subclass's ``check_extra_state`` / ``load_extra_state``.

    Raises:
        ValueError: naming the key, what was expected and what the state holds.
    """
    if key not in state:
        raise ValueError(f"state is missing {key!r}; keys present: {sorted(state)}")
    value = state[key]
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"state[{key!r}] must be a tensor of shape {tuple(like.shape)}, got None")
    try:
        t = torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"state[{key!r}] must be a tensor of shape {tuple(like.shape)}, got "
                         f"{type(value).__name__}") from None
    if t.shape != like.shape:
        raise ValueError(f"state[{key!r}] has shape {tuple(t.shape)}, expected {tuple(like.shape)}")
    if finite and (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t.cpu()).all()):
        raise ValueError(f"state[{key!r}] must be finite, got {t.tolist()}")
    return t.to(device=like.device, dtype=like.dtype).clone()


# ---------------------------------------------------------------------------------------------------------------
# the base class
# ---------------------------------------------------------------------------------------------------------------
#: up to this many elements a 1-D CPU tensor's finiteness is read through ``tolist`` (under a microsecond)
_HOST_CHECK_NUMEL = 256


def _finite_on_host(t: torch.Tensor) -> bool:
    dim = t.dim()
    if dim == 0:
        return math.isfinite(t.item())
    if dim == 1 and t.numel() <= _HOST_CHECK_NUMEL:  # a Python sum of the values as doubles never overflows, and
        return math.isfinite(sum(t.tolist()))       # a NaN or an infinity in it makes the sum NaN or infinite
    return bool(torch.isfinite(t).all())


class GammaPolicy:
    """Base class of every gamma policy.

    Subclasses override the public hooks ``compute(stats)``, ``compute_epoch(val_stats)``, ``check_stats``,
    ``extra_state``, ``check_extra_state`` and ``load_extra_state`` and declare the class attributes below; see the
    module docstring, and the README's "Writing your own policy" for a complete example.

    Attributes:
        name: the registered name (set by :func:`register_policy`; the ``"policy"`` key of the state).
        modes: the loss modes the policy applies to, a subset of ``("sigmoid", "softmax")``.
        needs_stats: whether ``step`` must be given the batch's statistics.
        needs_validation: whether ``epoch_end`` must be given validation statistics.
        reads: the :class:`~adaptive_focal.BatchStats` fields ``compute`` reads (checked for finiteness; None:
            every field); ``reads_validation`` the same for ``compute_epoch``.
        search_space: hyperparameter name -> :class:`~adaptive_focal.policies.space.Float`, ``Int`` or
            ``Categorical``, what a tuner samples (empty when nothing is worth searching).
        requires: the :class:`RunContext` fields ``run_defaults`` cannot do without.
        state_version: the version of the state layout; older states load through ``.get`` defaults.
        sync_stats: sum the statistics over ``torch.distributed`` ranks before use (False: local statistics).
    """

    name: ClassVar[str] = "base"
    modes: ClassVar[tuple[str, ...]] = _MODES
    #: the single mode of a one-mode policy, else None (derived from ``modes``; kept for earlier releases' callers)
    stats_mode: ClassVar[str | None] = None
    needs_stats: ClassVar[bool] = False
    needs_validation: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...] | None] = None
    reads_validation: ClassVar[tuple[str, ...] | None] = None
    search_space: ClassVar[dict[str, Float | Int | Categorical]] = {}
    requires: ClassVar[tuple[str, ...]] = ()
    #: 2: ``skipped_batches`` added (version-1 states load with 0)
    state_version: ClassVar[int] = 2
    sync_stats: bool = True

    _BASE_KEYS = ("policy", "version", "step_count", "epoch", "last_gamma", "skipped_batches")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "stats_mode" in own and "modes" not in own and own["stats_mode"] is not None:
            cls.modes = (own["stats_mode"],)  # a subclass written against the one-mode attribute
        modes = tuple(cls.modes)
        if not modes or any(m not in _MODES for m in modes) or len(set(modes)) != len(modes):
            raise ValueError(f"{cls.__name__}.modes must be distinct values of {_MODES}, got {cls.modes!r}")
        cls.modes = modes
        cls.stats_mode = modes[0] if len(modes) == 1 else None
        if "search_space" in own:
            space = own["search_space"]
            if not isinstance(space, dict) or not all(isinstance(k, str) for k in space):
                raise ValueError(f"{cls.__name__}.search_space must be a dict of parameter names to Float, Int or "
                                 f"Categorical, got {space!r}")
            cls.search_space = {k: as_param(v) for k, v in space.items()}
        bad = [f for f in cls.requires if f not in _CONTEXT_FIELDS]
        if bad:
            raise ValueError(f"{cls.__name__}.requires names {bad}, which are not RunContext fields "
                             f"({', '.join(_CONTEXT_FIELDS)})")

    def __init__(self, loss: FocalLoss) -> None:
        if not isinstance(loss, FocalLoss):
            raise TypeError(f"loss must be an adaptive_focal.FocalLoss, got {type(loss).__name__}")
        if loss.mode not in self.modes:
            raise ValueError(
                f"the {self.name!r} policy needs a FocalLoss with mode={self.modes[0]!r}, got mode={loss.mode!r}"
            )
        self.loss = loss
        self.step_count = 0
        self.epoch = 0
        self._last_gamma: Any = None
        self._skipped = 0  # non-finite batches seen on the host
        self._skipped_device: torch.Tensor | None = None  # and on an accelerator (read lazily)
        self._warned = False

    # -- what the run decides ------------------------------------------------------------------------------
    @classmethod
    def applies_to(cls, mode: str) -> bool:
        """Whether the policy can drive a FocalLoss of ``mode`` ("sigmoid" or "softmax")."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of 'sigmoid', 'softmax', got {mode!r}")
        return mode in cls.modes

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """The hyperparameters that depend on the run (its length, classes, base gamma, model, ...), from the
        fields of ``context`` that are known; :func:`create_policy` lets explicit arguments override them. The
        base class has none."""
        return {}

    @classmethod
    def missing_requirements(cls, context: RunContext, kwargs: dict) -> list[str]:
        """The fields of ``requires`` that neither ``context`` nor a keyword argument of the same name gives."""
        return [f for f in cls.requires if getattr(context, f) is None and f not in kwargs]

    # -- the training-loop interface ---------------------------------------------------------------------
    def step(self, stats: BatchStats | None = None) -> None:
        """Call after each optimizer step with that batch's statistics (``return_stats=True``).

        Under ``torch.distributed`` the statistics are first summed over all ranks (``sync_stats``), so every
        rank computes the same gamma. Statistics that are not finite count as an empty batch (see the module
        docstring).
        """
        self._check_stats("stats", stats, required=self.needs_stats)
        stats = self._synced(stats)
        if stats is not None and self.needs_stats:
            stats = self._finite_or_empty(stats, self.reads, validation=False)
        gamma = self.compute(stats)  # may update internal state; must not raise after the checks passed
        self.step_count += 1
        if gamma is not None:
            self._write(gamma)

    def epoch_end(self, val_stats: BatchStats | None = None) -> None:
        """Call at the end of each epoch, with validation statistics when ``needs_validation``."""
        self._check_stats("val_stats", val_stats, required=self.needs_validation)
        val_stats = self._synced(val_stats)
        if val_stats is not None and self.needs_validation:
            val_stats = self._finite_or_empty(val_stats, self.reads_validation, validation=True)
        self.epoch += 1
        self._warn_device_skips()
        gamma = self.compute_epoch(val_stats)
        if gamma is not None:
            self._write(gamma)

    def _synced(self, stats: BatchStats | None) -> BatchStats | None:
        if stats is None or not self.sync_stats or not (self.needs_stats or self.needs_validation):
            return stats
        if not _distributed():
            return stats
        return stats.all_reduce()

    # -- the hooks a policy overrides ------------------------------------------------------------------------
    def compute(self, stats: BatchStats | None):
        """The gamma after a training step (a float, a tensor or a gamma form), or None to keep the current one.

        ``stats`` are the batch's statistics (summed over ranks; an empty batch when they were not finite), or
        None when the caller gave none (possible only when ``needs_stats`` is False). The base class counts the
        step and writes the result into the loss; the hook may update the policy's own state but must not raise
        on statistics that passed ``check_stats``.
        """
        return None

    def compute_epoch(self, val_stats: BatchStats | None):
        """The gamma at an epoch end from the validation statistics (or None without them), or None to keep it."""
        return None

    def check_stats(self, name: str, stats: BatchStats) -> None:
        """Raises ``ValueError`` when ``stats`` (``name`` is "stats" or "val_stats") cannot be used, e.g. a field
        the policy reads is missing or has another number of classes; called before anything changes. The base
        class has already checked the type and the mode."""

    def extra_state(self) -> dict:
        """The policy's own state beyond the counters and the last gamma: plain values and CPU tensors."""
        return {}

    def check_extra_state(self, state: dict) -> None:
        """Raises ``ValueError`` when ``state`` (the whole state dict) cannot be loaded by ``load_extra_state``;
        nothing may change here. Keys added after a policy's first release are read with ``state.get``."""

    def load_extra_state(self, state: dict) -> None:
        """Restores what ``extra_state`` saved; called only after ``check_extra_state`` passed, and must not
        raise (copy tensors: the policy must never alias the caller's)."""

    # -- reading ---------------------------------------------------------------------------------------------
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
        """The gamma the policy last wrote: a float, a tensor (per class) or a gamma form."""
        return self._last_gamma

    @property
    def skipped_batches(self) -> int:
        """Batches whose statistics were not finite and were skipped (reading it waits for the device)."""
        extra = 0 if self._skipped_device is None else int(self._skipped_device)
        return self._skipped + extra

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The policy's state with explicit keys (never the loss): counters, the last gamma and ``extra_state()``."""
        self._warn_device_skips()
        last = self._last_gamma
        if isinstance(last, GAMMA_MODULES):
            last = form_state(last)
        elif isinstance(last, torch.Tensor):
            last = last.detach().cpu().clone()
        extra = self.extra_state()
        clash = sorted(set(extra) & set(self._BASE_KEYS))
        if clash:
            raise RuntimeError(f"{type(self).__name__}.extra_state() must not use the base keys {clash}")
        return {
            "policy": self.name,
            "version": self.state_version,
            "step_count": self.step_count,
            "epoch": self.epoch,
            "last_gamma": last,
            "skipped_batches": self.skipped_batches,
            **extra,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores ``state_dict()`` into this (possibly freshly built) policy and writes its gamma into the loss.

        Everything is checked first (the base keys, the last gamma, then ``check_extra_state``); only then does
        anything change, so a state that cannot be loaded leaves the policy and the loss as they were.
        """
        checked = self._check_state(state)
        # -- everything checked: from here on nothing raises
        self.load_extra_state(state)
        step_count, epoch, skipped, last = checked
        self.step_count, self.epoch = step_count, epoch
        self._skipped, self._skipped_device, self._warned = skipped, None, False
        if last is not None:
            self._write(last)

    def _check_state(self, state) -> tuple:
        """Every check of ``load_state_dict``, changing nothing; returns the parsed base values."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from state_dict(), got {type(state).__name__}")
        if "policy" not in state:
            raise ValueError(f"state has no 'policy' key, so it is not the state_dict() of a policy; keys "
                             f"present: {sorted(state)}")
        if state["policy"] != self.name:
            raise ValueError(f"state is for the {state['policy']!r} policy, not {self.name!r}")
        missing = [k for k in ("version", "step_count", "epoch", "last_gamma") if k not in state]
        if missing:
            raise ValueError(f"state is missing {missing}; keys present: {sorted(state)}")
        version = state["version"]
        if isinstance(version, bool) or not isinstance(version, Integral) or not 1 <= version <= self.state_version:
            raise ValueError(f"state['version'] must be an integer in [1, {self.state_version}] (states of a newer "
                             f"release cannot be read), got {version!r}")
        step_count, epoch = _state_count(state, "step_count"), _state_count(state, "epoch")
        skipped = _state_count(state, "skipped_batches") if "skipped_batches" in state else 0
        last = self._checked_last_gamma(state["last_gamma"])
        self.check_extra_state(state)
        return step_count, epoch, skipped, last

    def _checked_last_gamma(self, last):
        """``state['last_gamma']`` as the object to write, valid (``_valid_gamma``) and like the gamma this policy
        writes: a form of the same type and shapes, or a number / tensor of the same shape (a gamma form may
        replace a tensor, as EFL's first statistics do, not the other way round)."""
        value = self._valid_gamma(last)
        current = self._last_gamma
        if value is None or current is None:
            return value
        if isinstance(value, GAMMA_MODULES):
            if isinstance(current, GAMMA_MODULES) and not self._same_form(current, value):
                raise ValueError(
                    f"state['last_gamma'] is a {type(value).__name__} of shapes "
                    f"{[tuple(b.shape) for b in value.buffers()]}, but this {self.name!r} policy writes a "
                    f"{type(current).__name__} of shapes {[tuple(b.shape) for b in current.buffers()]}"
                )
            return value
        shape = () if isinstance(value, float) else tuple(value.shape)
        if isinstance(current, GAMMA_MODULES):
            raise ValueError(f"state['last_gamma'] is a number or tensor of shape {shape}, but this {self.name!r} "
                             f"policy writes a {type(current).__name__}")
        want = () if isinstance(current, (int, float)) else tuple(current.shape)
        if shape != want:
            raise ValueError(f"state['last_gamma'] has shape {shape}, but this {self.name!r} policy writes a "
                             f"gamma of shape {want}")
        return value

    @staticmethod
    def _valid_gamma(last):
        """A saved gamma as a float, a float32 CPU tensor or a built gamma form; finite; None stays None."""
        if last is None:
            return None
        if isinstance(last, dict):
            try:
                form = form_from_state(last)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"state['last_gamma'] is not a valid gamma form: {err}") from None
            if not all(bool(torch.isfinite(b).all()) for b in form.buffers()):
                raise ValueError(f"state['last_gamma'] must be finite, got {last!r}")
            return form
        if isinstance(last, Real) and not isinstance(last, bool):
            if not math.isfinite(last):
                raise ValueError(f"state['last_gamma'] must be finite, got {last!r}")
            return float(last)
        if isinstance(last, torch.Tensor) and last.is_floating_point():
            value = last.detach().to("cpu", torch.float32).clone()
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"state['last_gamma'] must be finite, got {value.tolist()}")
            return value
        raise ValueError(f"state['last_gamma'] must be None, a number, a float tensor or a gamma form's state, "
                         f"got {type(last).__name__}")

    @staticmethod
    def _same_form(a: torch.nn.Module, b: torch.nn.Module) -> bool:
        return type(a) is type(b) and [x.shape for x in a.buffers()] == [y.shape for y in b.buffers()]

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def write_gamma(self, gamma) -> None:
        """Writes ``gamma`` (a finite float, tensor or gamma form) into the loss now and remembers it as the last
        gamma; a policy's ``__init__`` writes its starting gamma with it (the hooks return theirs instead)."""
        self._write(gamma)

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
        mode = stats.mode
        if mode != self.loss.mode:
            raise ValueError(f"the {self.name!r} policy drives a {self.loss.mode} FocalLoss and needs "
                             f"{self.loss.mode} statistics, got {mode} statistics")
        self.check_stats(name, stats)

    def _finite_or_empty(self, stats: BatchStats, fields: tuple[str, ...] | None, *, validation: bool) -> BatchStats:
        """``stats`` when the fields the policy reads are finite, else the same statistics with those fields zero
        (an empty batch), counting the skip. On an accelerator the choice is a ``torch.where`` on the device, so
        nothing waits for it; on CPU statistics it costs a few Python operations (this runs every step)."""
        names = BatchStats._SUMMED if fields is None else fields
        if stats.count.device.type != "cpu":
            return self._finite_or_empty_on_device(stats, names)
        for name in names:
            t = getattr(stats, name, None)
            if t is not None and t.is_floating_point() and not _finite_on_host(t):
                break
        else:
            if math.isfinite(stats.sum_loss.item()):  # the batch's loss: a NaN logit makes it NaN on every path
                return stats
        self._skipped += 1
        if not self._warned:
            self._warned = True
            which = (f"the validation statistics of epoch {self.epoch + 1}" if validation
                     else f"the statistics of step {self.step_count + 1}")
            warnings.warn(self._skip_message(f"{which} are not finite"), RuntimeWarning, stacklevel=3)
        return dataclasses.replace(stats, **{n: torch.zeros_like(t) for n in names
                                             if (t := getattr(stats, n, None)) is not None})

    def _finite_or_empty_on_device(self, stats: BatchStats, names: tuple[str, ...]) -> BatchStats:
        tensors = {n: t for n in names if (t := getattr(stats, n, None)) is not None}
        checks = [torch.isfinite(t).all() for n, t in tensors.items() if t.is_floating_point() and n != "sum_loss"]
        ok = torch.stack([torch.isfinite(stats.sum_loss).reshape(()), *checks]).all()
        bad = (~ok).to(torch.int64)
        self._skipped_device = bad if self._skipped_device is None else self._skipped_device.to(bad.device) + bad
        return dataclasses.replace(stats, **{n: torch.where(ok, t, torch.zeros_like(t)) for n, t in tensors.items()})

    def _warn_device_skips(self) -> None:
        """The warning for skips counted on an accelerator, read at an epoch end or a save (one read each)."""
        if self._warned or self._skipped_device is None or int(self._skipped_device) == 0:
            return
        self._warned = True
        warnings.warn(self._skip_message(f"{int(self._skipped_device)} batch(es) had statistics that are not finite"),
                      RuntimeWarning, stacklevel=3)

    def _skip_message(self, what: str) -> str:
        return (f"the {self.name!r} policy: {what} (NaN or inf in the logits?); such batches are skipped: gamma and "
                f"the policy's state stay as they were, and policy.skipped_batches counts them (no further warning)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(step={self.step_count}, epoch={self.epoch})"
