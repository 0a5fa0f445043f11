"""Gamma forms beyond a number or a tensor: mixtures of modulating factors and target-dependent gamma.

Both are ``nn.Module`` objects whose settings are buffers, like :class:`~adaptive_focal.GammaTable`: a policy
changes them in place every step (no new tensors, no recompilation under ``torch.compile``), they move with the
owning loss's ``.to()`` and are saved in its ``state_dict``.

* :class:`FocalMixture`: the modulating factor is a weighted sum of focal factors with different gammas,
  ``m(p_t) = sum_k w_k * m_{gamma_k}(p_t)``. The cyclical focal loss (Smith, 2022) blends the inverse-focal and
  focal factors this way; Equalized Focal Loss (Li et al., 2022) is a one-term mixture whose weight is a
  per-class "weighting factor".
* :class:`AsymmetricGamma`: one gamma for positive targets and another for negative ones (the asymmetric
  focusing of ASL, Ridnik et al., 2021), for the sigmoid loss.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.autograd.graph import increment_version

__all__ = ["AsymmetricGamma", "FocalMixture"]


def _as_buffer(value, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got {type(value).__name__}") from None
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


class FocalMixture(nn.Module):
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

    def extra_repr(self) -> str:
        return f"terms={self.num_terms}, per_class={self.num_classes is not None}"


class AsymmetricGamma(nn.Module):
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

    positive: torch.Tensor
    negative: torch.Tensor

    def __init__(self, positive=0.0, negative=4.0) -> None:
        super().__init__()
        pos, neg = _as_buffer(positive, "positive"), _as_buffer(negative, "negative")
        for name, t in (("positive", pos), ("negative", neg)):
            if t.dim() > 1:
                raise ValueError(f"AsymmetricGamma {name} must be a number or a (C,) tensor, got shape {tuple(t.shape)}")
        if pos.dim() == 1 and neg.dim() == 1 and pos.numel() != neg.numel():
            raise ValueError(
                f"AsymmetricGamma positive and negative must have the same length C, got {pos.numel()} and {neg.numel()}"
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
