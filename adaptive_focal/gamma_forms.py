"""The gamma forms: every way a gamma can be held by a loss, how it is saved, and how a logger reads it.

A gamma is a number or a tensor (global, per class, per sample or per element), or one of the forms below, which
are ``nn.Module`` objects whose settings are buffers: a policy changes them in place every step (no new tensors,
no recompilation under ``torch.compile``), they move with the owning loss's ``.to()`` and are saved in its
``state_dict``.

* :class:`GammaTable`: gamma per bin of the (detached) probability of the true class, optionally per class
  (FLSD-53, Mukhoti et al., 2020; AdaFocal, Ghosh et al., 2022).
* :class:`FocalMixture`: the modulating factor is a weighted sum of focal factors with different gammas,
  ``m(p_t) = sum_k w_k * m_{gamma_k}(p_t)``. The cyclical focal loss (Smith, 2022) blends the inverse-focal and
  focal factors this way; Equalized Focal Loss (Li et al., 2022) is a one-term mixture whose weight is a
  per-class "weighting factor".
* :class:`AsymmetricGamma`: one gamma for positive targets and another for negative ones (the asymmetric
  focusing of ASL, Ridnik et al., 2021), for the sigmoid loss.

Each form is a :class:`GammaForm`, a small base with what everything outside the loss needs: ``record()`` (the
form as plain Python, with a ``"form"`` key naming it), ``scalars(prefix)`` (named floats a logger plots),
``state()`` (CPU tensors, for checkpoints) and ``GammaForm.from_state(state)``. The module functions do the same
for any gamma, numbers and tensors included, and for records read back from a log: integrations and checkpoints
go through them (:func:`gamma_record`, :func:`gamma_scalars`, :func:`form_state`, :func:`form_from_state`) and
never take a form apart themselves.

Example:
    >>> import torch
    >>> from adaptive_focal.gamma_forms import FocalMixture, form_from_state, form_state, gamma_scalars
    >>> gamma_scalars(2.0), gamma_scalars(torch.tensor([1.0, 3.0]))
    ({'gamma': 2.0}, {'gamma/mean': 2.0, 'gamma/min': 1.0, 'gamma/max': 3.0, 'gamma/0': 1.0, 'gamma/1': 3.0})
    >>> mix = FocalMixture(gammas=[2.0, -3.0], weights=[0.75, 0.25])  # cyclical focal loss at xi = 0.25
    >>> mix.record()
    {'form': 'FocalMixture', 'gammas': [2.0, -3.0], 'weights': [0.75, 0.25]}
    >>> mix.scalars()["gamma/mean"]  # the weight-averaged gamma: 0.75 * 2 + 0.25 * (-3)
    0.75
    >>> torch.equal(form_from_state(form_state(mix)).weights, mix.weights)
    True
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from numbers import Real
from typing import Any, ClassVar

import torch
from torch import nn
from torch.autograd.graph import increment_version

__all__ = [
    "GAMMA_FORMS", "MAX_SERIES", "AsymmetricGamma", "FocalMixture", "GammaForm", "GammaTable", "form_from_state",
    "form_state", "gamma_record", "gamma_scalars", "summary_keys",
]

#: a gamma with more values than this is plotted as its mean, min and max only (no series per value)
MAX_SERIES = 64


# -- the base --------------------------------------------------------------------------------------------------
class GammaForm(nn.Module):
    """Base of the gamma forms: a module whose buffers are its settings, named by ``fields``.

    A subclass registers one buffer per name in ``fields``, in that order, takes them as its constructor's
    keyword arguments (so a state or a record rebuilds it), and says how its record is plotted
    (:meth:`record_scalars`). Everything else (record, state, rebuilding) is shared.
    """

    #: the buffers' names, which are also the constructor's arguments
    fields: ClassVar[tuple[str, ...]] = ()
    #: the scalars (names under the prefix) that show the form in one plot of gamma over time
    summary: ClassVar[tuple[str, ...]] = ("mean",)

    def record(self) -> dict[str, Any]:
        """The form as plain Python (JSON-ready): ``{"form": class name, field: number or nested list, ...}``."""
        return {"form": type(self).__name__, **{name: self._buffers[name].tolist() for name in self.fields}}

    def scalars(self, prefix: str = "gamma", *, max_series: int = MAX_SERIES) -> dict[str, float]:
        """Named floats for a logger to plot (see :meth:`record_scalars`); the same as ``gamma_scalars(self)``."""
        return self.record_scalars(self.record(), prefix, max_series=max_series)

    @classmethod
    def record_scalars(cls, record: Mapping, prefix: str = "gamma", *,
                       max_series: int = MAX_SERIES) -> dict[str, float]:
        """Named floats for a logger from a record of this form (also one read back from a log file).

        The default plots each field as a series under ``<prefix>/<field>`` (see :func:`gamma_scalars` for how a
        number or a list is plotted).
        """
        out: dict[str, float] = {}
        for name in cls.fields:
            out.update(_series(f"{prefix}/{name}", record[name], max_series))
        return out

    def state(self) -> dict[str, Any]:
        """The form for a checkpoint: ``{"form": class name, field: CPU tensor, ...}`` (copies, not views)."""
        return {"form": type(self).__name__,
                **{name: self._buffers[name].detach().cpu().clone() for name in self.fields}}

    @classmethod
    def from_state(cls, state: Mapping) -> GammaForm:
        """Rebuilds a form from :meth:`state` or :meth:`record` (tensors or lists); checked before it is built.

        Called on :class:`GammaForm`, ``state["form"]`` picks the class (a state without ``"form"`` is a
        :class:`GammaTable`, the layout of version-1 checkpoints); called on a subclass, the state must be of
        that class.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict from GammaForm.state(), got {type(state).__name__}")
        name = state.get("form", "GammaTable")
        form = _FORMS_BY_NAME.get(name)
        if form is None:
            raise ValueError(f"state has an unknown gamma form {name!r}; known: {', '.join(sorted(_FORMS_BY_NAME))}")
        if cls is not GammaForm and form is not cls:
            raise ValueError(f"state is of a {name}, not a {cls.__name__}")
        keys = set(state) - {"form"}
        if keys != set(form.fields):
            raise ValueError(f"a {name} state needs the keys {sorted(form.fields)}, got {sorted(keys)}")
        return form(**{key: state[key] for key in form.fields})


def _flatten(values) -> list[float]:
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in _flatten(item)]
    return [float(values)]


def _series(key: str, values, max_series: int) -> dict[str, float]:
    """A number as ``{key: value}``; a (nested) list as its mean, min and max, and each value ``key/<i>`` (in
    row-major order) when there are at most ``max_series``."""
    if not isinstance(values, (list, tuple)):
        return {key: float(values)}
    flat = _flatten(values)
    if not flat:
        return {}
    out = {f"{key}/mean": math.fsum(flat) / len(flat), f"{key}/min": min(flat), f"{key}/max": max(flat)}
    if len(flat) <= max_series:
        out.update({f"{key}/{i}": v for i, v in enumerate(flat)})
    return out


def _as_buffer(value, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"{name} must be a number, a sequence of numbers or a tensor, got {type(value).__name__}") from None
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


def _checked(owner: str, name: str, buffer: torch.Tensor, value) -> torch.Tensor:
    """``value`` as a tensor like ``buffer``, checked for ``set``: the same shape and (on the CPU, where reading
    values costs no device synchronisation) finite."""
    new = torch.as_tensor(value, dtype=buffer.dtype, device=buffer.device)
    if new.shape != buffer.shape:
        raise ValueError(f"{owner}.set: {name} must keep shape {tuple(buffer.shape)}, got {tuple(new.shape)}")
    if new.device.type == "cpu" and not bool(torch.isfinite(new).all()):
        raise ValueError(f"{owner}.set: {name} must be finite, got {new.tolist()}")
    return new


def _copy_all(pairs) -> None:
    with torch.no_grad():
        for buffer, new in pairs:
            if new is not buffer:
                buffer.copy_(new)


class GammaTable(GammaForm):
    """Gamma looked up per element from the (detached) probability of the true class.

    Sample-dependent policies such as FLSD-53 (Mukhoti et al., 2020) and AdaFocal (Ghosh et al., 2022) set gamma
    per p_t bin; a ``GammaTable`` is how they hand that to the loss. Element ``i`` with true-class probability
    ``p_t`` falls in bin ``b`` with ``edges[b] <= p_t < edges[b + 1]`` (the last bin also holds ``p_t == 1``) and
    uses ``values[b]``, or ``values[c, b]`` for its class ``c`` when ``values`` is 2-D. Negative values select the
    inverse focal factor ``(1 + p_t)**|gamma|``. When a ``GammaTable`` is the gamma, the batch statistics use its
    edges for the p_t histogram, so a policy sees exactly the bins it controls.

    The table is an ``nn.Module`` with ``edges`` and ``values`` as buffers: it moves with ``.to()`` and is saved in
    the owning loss's ``state_dict``.

    Args:
        edges: ascending bin edges, shape (B + 1,), starting at 0 and ending at 1.
        values: gamma per bin, shape (B,) or (C, B).

    Example:
        >>> import torch
        >>> from adaptive_focal import GammaTable
        >>> table = GammaTable([0.0, 0.2, 0.5, 1.0], [5.0, 3.0, 3.0])  # FLSD-53
        >>> table.lookup(torch.tensor([0.1, 0.3, 0.9]))
        tensor([5., 3., 3.])
    """

    fields = ("edges", "values")
    edges: torch.Tensor
    values: torch.Tensor

    def __init__(self, edges, values) -> None:
        super().__init__()
        edges_t = torch.as_tensor(edges, dtype=torch.float32).detach().clone()
        values_t = torch.as_tensor(values, dtype=torch.float32).detach().clone()
        self._check(edges_t, values_t)
        self.register_buffer("edges", edges_t)
        self.register_buffer("values", values_t)

    @staticmethod
    def _check(edges: torch.Tensor, values: torch.Tensor) -> None:
        if edges.dim() != 1 or edges.numel() < 2:
            raise ValueError(
                f"GammaTable edges must be a 1-D sequence of at least 2 bin edges, got shape {tuple(edges.shape)}"
            )
        if not torch.isfinite(edges).all():
            raise ValueError(f"GammaTable edges must be finite, got {edges.tolist()}")
        if edges[0].item() != 0.0 or edges[-1].item() != 1.0:
            raise ValueError(
                f"GammaTable edges must start at 0 and end at 1, got {edges[0].item()} ... {edges[-1].item()}"
            )
        if not bool((edges[1:] > edges[:-1]).all()):
            raise ValueError(f"GammaTable edges must be strictly ascending, got {edges.tolist()}")
        bins = edges.numel() - 1
        if values.dim() not in (1, 2) or values.shape[-1] != bins:
            raise ValueError(
                f"GammaTable values must have shape ({bins},) or (C, {bins}) for {bins + 1} edges, "
                f"got shape {tuple(values.shape)}"
            )
        if torch.isnan(values).any():
            raise ValueError(f"GammaTable values must not be NaN, got {values.tolist()}")

    @property
    def num_bins(self) -> int:
        return self.edges.numel() - 1

    @property
    def per_class(self) -> bool:
        return self.values.dim() == 2

    def set_values(self, values) -> None:
        """Replaces the values in place (same shape), so compiled graphs and optimisers keep their references."""
        new = torch.as_tensor(values, dtype=self.values.dtype, device=self.values.device)
        if new.shape != self.values.shape:
            raise ValueError(
                f"GammaTable.set_values: values must keep shape {tuple(self.values.shape)}, got {tuple(new.shape)}"
            )
        self._check(self.edges, new)
        with torch.no_grad():
            self.values.copy_(new)

    def bin_index(self, p_t: torch.Tensor) -> torch.Tensor:
        """The bin of each probability (int64, same shape)."""
        return torch.bucketize(p_t.detach(), self.edges[1:-1].to(p_t.dtype), right=True)

    def lookup(self, p_t: torch.Tensor, cls: torch.Tensor | None = None) -> torch.Tensor:
        """Gamma for each element of ``p_t``; ``cls`` (class indices, same shape) is needed for per-class values."""
        idx = self.bin_index(p_t)
        if not self.per_class:
            return self.values[idx]
        if cls is None:
            raise ValueError("GammaTable.lookup: cls is required when values are per class (2-D)")
        return self.values[cls, idx]

    @classmethod
    def record_scalars(cls, record: Mapping, prefix: str = "gamma", *,
                       max_series: int = MAX_SERIES) -> dict[str, float]:
        """The values, plotted as the gamma itself: ``<prefix>/mean``, ``/min``, ``/max`` and one series per bin
        (per class and bin, row-major) up to ``max_series``; the edges stay in the record."""
        return _series(prefix, record["values"], max_series)

    def extra_repr(self) -> str:
        return f"bins={self.num_bins}, per_class={self.per_class}"


class FocalMixture(GammaForm):
    """A weighted sum of focal modulating factors: ``m(p_t) = sum_k weights[k] * m(p_t; gammas[k])``.

    ``m(p_t; g)`` is ``(1 - p_t)**g`` for ``g >= 0`` and the inverse focal factor ``(1 + p_t)**|g|`` for ``g < 0``,
    as everywhere in adaptive_focal. Because the loss is linear in its modulating factor, the loss with a mixture
    is the same weighted sum of the focal losses with each gamma, which is how it is computed (each term through
    the loss's fast path; cost grows with the number of terms).

    Args:
        gammas: K gammas, shape (K,), or per class (K, C) along the input's dim 1.
        weights: K non-negative weights, shape (K,), or per class (K, C).

    Examples:
        Cyclical focal loss (Smith, 2022) at blend ``xi``: ``xi`` of the inverse factor with gamma_hc = 3 and
        ``1 - xi`` of the focal factor with gamma_lc = 2:

        >>> import torch
        >>> from adaptive_focal import FocalMixture, softmax_focal_loss
        >>> xi = 0.25
        >>> mix = FocalMixture(gammas=[2.0, -3.0], weights=[1 - xi, xi])
        >>> logits, target = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([1])
        >>> a = softmax_focal_loss(logits, target, gamma=2.0)
        >>> b = softmax_focal_loss(logits, target, gamma=-3.0)
        >>> bool(torch.isclose(softmax_focal_loss(logits, target, gamma=mix), (1 - xi) * a + xi * b))
        True
    """

    fields = ("gammas", "weights")
    gammas: torch.Tensor
    weights: torch.Tensor

    def __init__(self, gammas, weights) -> None:
        super().__init__()
        g, w = _as_buffer(gammas, "gammas"), _as_buffer(weights, "weights")
        self._check(g, w)
        self.register_buffer("gammas", g)
        self.register_buffer("weights", w)

    @staticmethod
    def _check(g: torch.Tensor, w: torch.Tensor) -> None:
        if g.dim() not in (1, 2) or g.shape[0] < 1:
            raise ValueError(f"FocalMixture gammas must have shape (K,) or (K, C) with K >= 1, got {tuple(g.shape)}")
        if w.dim() not in (1, 2) or w.shape[0] != g.shape[0]:
            raise ValueError(
                f"FocalMixture weights must have shape ({g.shape[0]},) or ({g.shape[0]}, C), one per gamma, "
                f"got {tuple(w.shape)}"
            )
        if g.dim() == 2 and w.dim() == 2 and g.shape[1] != w.shape[1]:
            raise ValueError(
                f"FocalMixture gammas and weights must agree on C when both are per class, got {tuple(g.shape)} "
                f"and {tuple(w.shape)}"
            )
        if bool((w < 0).any()):
            raise ValueError(f"FocalMixture weights must be >= 0, got {w.tolist()}")

    @property
    def num_terms(self) -> int:
        return self._buffers["gammas"].shape[0]

    def _per_class_term(self) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
        """``(gammas[0], weights[0], known_nonneg)`` when the mixture is one term with per-class weights (EFL's
        form, which the sigmoid loss folds into its element weight), else None. Read from the buffer dict: this
        runs every training step, and attribute access through ``nn.Module.__getattr__`` costs more there."""
        g, w = self._buffers["gammas"], self._buffers["weights"]
        if g.shape[0] != 1 or w.dim() != 2:
            return None
        return g[0], w[0], self._known_nonneg()

    def __getstate__(self) -> dict:
        # the host-write caches refer to this object's own tensors (NumPy views, a weak reference): a copy or an
        # unpickled module starts without them
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in ("_host_views", "_nonneg_at")}

    def _mark_nonneg(self) -> None:
        """Records that the current gammas are finite and >= 0, for a writer that knows it (a policy whose update
        keeps them in its bounds), so the loss can skip reading them back. Any later change of the gammas, in
        place (the tensor's version counter moves) or by a new tensor, ends it."""
        g = self._buffers["gammas"]
        self.__dict__["_nonneg_at"] = (weakref.ref(g), g._version)  # past nn.Module.__setattr__: a plain attribute

    def _known_nonneg(self) -> bool:
        """Whether ``_mark_nonneg`` vouches for the gammas as they are now."""
        at = self.__dict__.get("_nonneg_at")
        if at is None or torch.compiler.is_compiling():
            return False
        g = self._buffers["gammas"]
        return at[0]() is g and at[1] == g._version

    def _write_host(self, gammas: list[float], weights: list[float], nonneg: bool) -> bool:
        """Writes a one-term per-class mixture given as Python floats, for a policy's per-step update on the CPU;
        False (nothing written) unless both buffers are CPU float32 tensors of shape (1, len(gammas)).

        The values go straight into the buffers' memory through NumPy views, and the version counters are then
        bumped as for any in-place change (``torch.autograd.graph.increment_version``, PyTorch's documented way
        for writes it does not see), so autograd still refuses a backward through a graph that used the old
        values. This skips building tensors from the lists, which costs several times more on a training step's
        cold caches. Nothing here reads the values back: the caller's update keeps the weights >= 0, and with
        ``nonneg`` it vouches that the gammas are finite and >= 0 (``_mark_nonneg``); without it the loss checks
        the gammas as usual.
        """
        g, w = self._buffers["gammas"], self._buffers["weights"]
        views = self.__dict__.get("_host_views")
        if views is None or views[0] is not g or views[1] is not w:  # first write, or new buffers since
            shape = (1, len(gammas))
            if not (g.shape == shape and w.shape == shape and g.device.type == "cpu" and w.device.type == "cpu"
                    and g.dtype == torch.float32 and w.dtype == torch.float32):
                return False
            views = self.__dict__["_host_views"] = (g, w, g.detach().numpy()[0], w.detach().numpy()[0])
        if len(gammas) != len(views[2]) or len(weights) != len(views[2]):
            return False
        views[2][:] = gammas
        views[3][:] = weights
        increment_version(g)  # one tensor per call, the form every supported torch release accepts
        increment_version(w)
        if nonneg:
            self._mark_nonneg()
        return True

    @property
    def num_classes(self) -> int | None:
        """C when gammas or weights are per class, else None."""
        for t in (self._buffers["gammas"], self._buffers["weights"]):
            if t.dim() == 2:
                return t.shape[1]
        return None

    def set(self, gammas=None, weights=None) -> None:
        """Changes gammas and/or weights in place (same shapes); everything is checked before anything changes."""
        g = self.gammas if gammas is None else _checked("FocalMixture", "gammas", self.gammas, gammas)
        w = self.weights if weights is None else _checked("FocalMixture", "weights", self.weights, weights)
        if w.device.type == "cpu" and bool((w < 0).any()):
            raise ValueError(f"FocalMixture.set: weights must be >= 0, got {w.tolist()}")
        _copy_all([(self.gammas, g), (self.weights, w)])

    def modulator(self, p_t: torch.Tensor, cls: torch.Tensor | None = None) -> torch.Tensor:
        """The mixture's factor at ``p_t`` (for plots and tests); ``cls`` gives each element's class when per class."""
        out = torch.zeros_like(p_t)
        for k in range(self.num_terms):
            g, w = self.gammas[k], self.weights[k]
            if g.dim() or w.dim():
                if cls is None:
                    raise ValueError("FocalMixture.modulator: cls is required when gammas or weights are per class")
                g = g[cls] if g.dim() else g
                w = w[cls] if w.dim() else w
            g, w = g.to(p_t.dtype), w.to(p_t.dtype)
            out = out + w * torch.where(g >= 0, (1 - p_t).pow(g.clamp_min(0)), (1 + p_t).pow((-g).clamp_min(0)))
        return out

    @classmethod
    def record_scalars(cls, record: Mapping, prefix: str = "gamma", *,
                       max_series: int = MAX_SERIES) -> dict[str, float]:
        """``<prefix>/mean``, the weight-averaged gamma ``sum_k w_k gamma_k / sum_k w_k`` (averaged over the
        classes when per class, over those with a positive total weight; absent when every weight is 0; negative
        when the inverse factor dominates), then the series ``<prefix>/gammas/...`` and ``<prefix>/weights/...``."""
        g = torch.tensor(record["gammas"], dtype=torch.float64)
        w = torch.tensor(record["weights"], dtype=torch.float64)
        g, w = torch.broadcast_tensors(g.view(g.shape[0], -1), w.view(w.shape[0], -1))
        total = w.sum(0)
        out = {}
        if bool((total > 0).any()):
            out[f"{prefix}/mean"] = float(((w * g).sum(0)[total > 0] / total[total > 0]).mean())
        return {**out, **super().record_scalars(record, prefix, max_series=max_series)}

    def extra_repr(self) -> str:
        return f"terms={self.num_terms}, per_class={self.num_classes is not None}"


class AsymmetricGamma(GammaForm):
    """Separate gammas for positive and negative targets of a sigmoid loss (ASL's asymmetric focusing).

    Ridnik et al., "Asymmetric Loss For Multi-Label Classification" (ICCV 2021): element ``(n, c)`` with target
    ``t`` uses ``gamma = positive * t + negative * (1 - t)``, so hard targets get ``positive`` (gamma+) or
    ``negative`` (gamma-), and a soft target interpolates, as the authors' code does. Each may be a number or a
    (C,) tensor along dim 1. ASL's other ingredient, the probability margin on negatives, is not part of this
    form.

    Args:
        positive: gamma+ for positive targets (ASL's default is 0).
        negative: gamma- for negative targets (ASL's default is 4).

    Example:
        >>> import torch
        >>> from adaptive_focal import AsymmetricGamma, sigmoid_focal_loss
        >>> x, t = torch.tensor([[1.0, -2.0]]), torch.tensor([[1.0, 0.0]])
        >>> asym = sigmoid_focal_loss(x, t, gamma=AsymmetricGamma(positive=0.0, negative=4.0), reduction="none")
        >>> split = sigmoid_focal_loss(x, t, gamma=torch.tensor([[0.0, 4.0]]), reduction="none")
        >>> torch.equal(asym, split)
        True
    """

    fields = ("positive", "negative")
    summary = ("positive", "negative", "positive/mean", "negative/mean")  # global, per class
    positive: torch.Tensor
    negative: torch.Tensor

    def __init__(self, positive=0.0, negative=4.0) -> None:
        super().__init__()
        pos, neg = _as_buffer(positive, "positive"), _as_buffer(negative, "negative")
        for name, t in (("positive", pos), ("negative", neg)):
            if t.dim() > 1:
                raise ValueError(
                    f"AsymmetricGamma {name} must be a number or a (C,) tensor, got shape {tuple(t.shape)}")
        if pos.dim() == 1 and neg.dim() == 1 and pos.numel() != neg.numel():
            raise ValueError(
                f"AsymmetricGamma positive and negative must have the same length C, got {pos.numel()} and "
                f"{neg.numel()}"
            )
        self.register_buffer("positive", pos)
        self.register_buffer("negative", neg)

    @property
    def num_classes(self) -> int | None:
        for t in (self.positive, self.negative):
            if t.dim() == 1:
                return t.numel()
        return None

    def set(self, positive=None, negative=None) -> None:
        """Changes gamma+ and/or gamma- in place (same shapes); everything is checked before anything changes."""
        pos = self.positive if positive is None else _checked("AsymmetricGamma", "positive", self.positive, positive)
        neg = self.negative if negative is None else _checked("AsymmetricGamma", "negative", self.negative, negative)
        _copy_all([(self.positive, pos), (self.negative, neg)])

    def expand(self, target: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per-element gamma for ``target`` (values outside [0, 1], such as an ignore_index, are clamped)."""
        shape = (1, -1) + (1,) * (target.dim() - 2) if target.dim() >= 2 else (-1,)
        pos = self.positive.to(device=target.device, dtype=dtype)
        neg = self.negative.to(device=target.device, dtype=dtype)
        pos = pos.view(shape) if pos.dim() else pos
        neg = neg.view(shape) if neg.dim() else neg
        t = target.detach().to(dtype).clamp(0.0, 1.0)
        return torch.broadcast_to(neg + (pos - neg) * t, target.shape)

    def extra_repr(self) -> str:
        def show(t):
            return f"{t.item():g}" if t.dim() == 0 else f"tensor{tuple(t.shape)}"
        return f"positive={show(self.positive)}, negative={show(self.negative)}"


# -- the registry and the functions for any gamma ----------------------------------------------------------------
#: the gamma forms held as loss submodules (anything else is a number or a tensor)
GAMMA_FORMS: tuple[type[GammaForm], ...] = (GammaTable, FocalMixture, AsymmetricGamma)
_FORMS_BY_NAME: dict[str, type[GammaForm]] = {form.__name__: form for form in GAMMA_FORMS}


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def gamma_record(gamma) -> float | list | dict | None:
    """Any gamma as plain Python (JSON-ready): None, a float, a (nested) list for a tensor of per-class or
    per-element gammas, or the form's :meth:`GammaForm.record` (a dict with ``"form"``).

    Example:
        >>> import torch
        >>> from adaptive_focal.gamma_forms import GammaTable, gamma_record
        >>> gamma_record(torch.tensor(2.0)), gamma_record(GammaTable([0.0, 0.5, 1.0], [3.0, 1.0]))
        (2.0, {'form': 'GammaTable', 'edges': [0.0, 0.5, 1.0], 'values': [3.0, 1.0]})
    """
    if gamma is None:
        return None
    if isinstance(gamma, GammaForm):
        return gamma.record()
    if isinstance(gamma, torch.Tensor):
        return float(gamma.item()) if gamma.dim() == 0 else gamma.tolist()
    if _is_number(gamma):
        return float(gamma)
    raise TypeError(f"gamma must be None, a number, a tensor or a gamma form ({', '.join(_FORMS_BY_NAME)}), "
                    f"got {type(gamma).__name__}")


def _record_form(record: Mapping) -> type[GammaForm]:
    name = record.get("form")
    if name is None and {"edges", "values"} <= set(record):  # a GammaTable recorded before forms were named
        return GammaTable
    form = _FORMS_BY_NAME.get(name)
    if form is None:
        raise ValueError(f"a gamma record must name one of the forms {', '.join(_FORMS_BY_NAME)} under 'form', "
                         f"got {name!r} (keys {sorted(record)})")
    missing = [key for key in form.fields if key not in record]
    if missing:
        raise ValueError(f"a {name} record needs the keys {list(form.fields)}, missing {missing}")
    return form


def gamma_scalars(gamma, prefix: str = "gamma", *, max_series: int = MAX_SERIES) -> dict[str, float]:
    """What a logger plots for any gamma or its record: named Python floats.

    * a number (or a 0-d tensor): ``{prefix: value}``;
    * a tensor or list of several gammas (per class, per element): ``<prefix>/mean``, ``/min``, ``/max`` and one
      series ``<prefix>/<i>`` per value (row-major) when there are at most ``max_series``;
    * a gamma form or its record: the form's :meth:`GammaForm.record_scalars` (a GammaTable's values as above;
      a FocalMixture's weight-averaged gamma ``<prefix>/mean`` and its ``gammas`` and ``weights``; an
      AsymmetricGamma's ``<prefix>/positive`` and ``<prefix>/negative``);
    * None: nothing.

    A form and its record give the same scalars, so a logger that receives records (``GammaCallback``'s) plots
    what one given the module would.

    Example:
        >>> from adaptive_focal.gamma_forms import AsymmetricGamma, gamma_scalars
        >>> gamma_scalars(AsymmetricGamma(positive=0.0, negative=4.0), prefix="train/gamma")
        {'train/gamma/positive': 0.0, 'train/gamma/negative': 4.0}
        >>> gamma_scalars({"form": "AsymmetricGamma", "positive": 0.0, "negative": 4.0})
        {'gamma/positive': 0.0, 'gamma/negative': 4.0}
    """
    if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 0:
        raise ValueError(f"max_series must be a non-negative integer, got {max_series!r}")
    if isinstance(gamma, GammaForm):
        return gamma.scalars(prefix, max_series=max_series)
    if isinstance(gamma, Mapping):
        return _record_form(gamma).record_scalars(gamma, prefix, max_series=max_series)
    if isinstance(gamma, (list, tuple)):
        return _series(prefix, list(gamma), max_series)
    record = gamma_record(gamma)
    return {} if record is None else _series(prefix, record, max_series)


def summary_keys(prefix: str = "gamma") -> tuple[str, ...]:
    """The names under which :func:`gamma_scalars` gives the values that show any gamma in one plot over time:
    ``prefix`` for a number, ``<prefix>/mean`` for per-class gammas, tables and mixtures, and each form's own
    (``<prefix>/positive`` and ``<prefix>/negative`` for an AsymmetricGamma, their ``/mean`` when per class). A
    report plots those a run has.

    Example:
        >>> from adaptive_focal.gamma_forms import summary_keys
        >>> summary_keys()[:4]
        ('gamma', 'gamma/mean', 'gamma/positive', 'gamma/negative')
    """
    keys = [prefix, f"{prefix}/mean"] + [f"{prefix}/{name}" for form in GAMMA_FORMS for name in form.summary]
    return tuple(dict.fromkeys(keys))


def form_state(gamma):
    """Any gamma for a checkpoint: a form's :meth:`GammaForm.state` (CPU tensors and ``"form"``), a tensor as a
    CPU copy, a number as a float, None as None. :func:`form_from_state` inverts it."""
    if isinstance(gamma, GammaForm):
        return gamma.state()
    if isinstance(gamma, torch.Tensor):
        return gamma.detach().cpu().clone()
    if gamma is None:
        return None
    if _is_number(gamma):
        return float(gamma)
    raise TypeError(f"gamma must be None, a number, a tensor or a gamma form ({', '.join(_FORMS_BY_NAME)}), "
                    f"got {type(gamma).__name__}")


def form_from_state(state):
    """The inverse of :func:`form_state`: a dict is rebuilt into its form (without ``"form"`` it is a GammaTable,
    the version-1 layout; see :meth:`GammaForm.from_state`); a tensor, a number or None is returned as is."""
    if isinstance(state, Mapping):
        return GammaForm.from_state(state)
    if state is None or isinstance(state, torch.Tensor) or _is_number(state):
        return state
    raise TypeError(f"state must be a dict from form_state(), a tensor, a number or None, got {type(state).__name__}")
