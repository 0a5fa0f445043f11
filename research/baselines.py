"""Class-imbalance baselines that adaptive-gamma focal loss is compared against.

Small, exact torch building blocks that a training script selects by name (:func:`make_loss`,
:func:`make_sampler`). Each one reduces to plain cross-entropy / binary cross-entropy at its neutral setting
(``beta = 0``, ``tau = 0``, all GHM gradient norms in one bin, ``T = 1``), and the tests check that.

==========================  =====================================================================================
baseline                    reference
==========================  =====================================================================================
class-balanced weights      Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on Effective Number of
                            Samples", CVPR 2019: :class:`ClassBalancedLoss` (the weights are the library's
                            :func:`adaptive_focal.class_balanced_weights`, re-exported here)
logit adjustment            Menon, Jayasumana, Rawat, Jain, Veit, Kumar, "Long-tail learning via logit
                            adjustment", ICLR 2021: :func:`logit_adjusted_loss`, :func:`posthoc_logit_adjust`,
                            :class:`LogitAdjustedLoss` (the library's ``class_priors`` / ``tau`` options)
GHM-C                       Li, Liu, Wang, "Gradient Harmonized Single-stage Detector", AAAI 2019:
                            :class:`GHMCLoss`, :func:`ghm_weights`
re-sampling                 Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition",
                            ICLR 2020 (``p_c ∝ n_c ** q``); square-root sampling from Mahajan et al., "Exploring
                            the Limits of Weakly Supervised Pretraining", ECCV 2018: :func:`sampling_weights`
temperature scaling         Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks", ICML 2017:
                            :func:`fit_temperature`, :func:`apply_temperature`
==========================  =====================================================================================

Conventions shared by the loss modules that :func:`make_loss` builds:

* ``forward(logits, target)`` with logits ``(N, C)`` and target class indices ``(N,)``. In ``mode="sigmoid"``
  (one binary problem per class, as in the class-balanced paper's sigmoid losses and GHM-C) index targets are
  one-hot encoded; the losses that need no class per sample also take float targets shaped like the logits
  (multi-label).
* ``reduction="mean"`` has the convention of ``F.cross_entropy`` / ``F.binary_cross_entropy_with_logits``:
  softmax losses average over the (non-ignored) samples, sigmoid losses over the ``N * C`` elements. An empty or
  fully ignored batch gives 0.
* The focal-based modules keep their focal loss as ``module.focal``, an :class:`adaptive_focal.FocalLoss`, so a
  gamma policy can drive its gamma (``af.create_policy(name, module.focal)``); ``forward(..., return_stats=True)``
  passes the loss's batch statistics through (computed from the unweighted losses).

Nothing here is imported by the library.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import RandomSampler, WeightedRandomSampler

from adaptive_focal import FocalLoss, class_balanced_weights, softmax_focal_loss

__all__ = [
    "LOSS_NAMES",
    "SAMPLER_NAMES",
    "ClassBalancedLoss",
    "ClassWeightedLoss",
    "GHMCLoss",
    "LogitAdjustedLoss",
    "apply_temperature",
    "class_balanced_sampler",
    "class_balanced_weights",
    "class_counts",
    "fit_temperature",
    "ghm_weights",
    "logit_adjusted_focal_loss",
    "logit_adjusted_loss",
    "logit_adjustment",
    "make_loss",
    "make_sampler",
    "posthoc_logit_adjust",
    "sampling_weights",
    "sqrt_sampler",
]

_MODES = ("softmax", "sigmoid")
_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------------------
def _check_choice(name: str, value, allowed) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")


def _check_real(name: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    """A finite real in the given interval (closed unless ``*_open``), as a float."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
    if not ok:
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        interval = f"{'(' if lo_open or lo is None else '['}{lo_s}, {hi_s}{')' if hi_open or hi is None else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return float(value)


def _check_logits(logits, name: str = "logits") -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        what = f"dtype {logits.dtype}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {what}")


def class_counts(labels, num_classes: int | None = None) -> torch.Tensor:
    """Number of samples of each class, ``(C,)`` int64, with ``C = num_classes`` or ``max(labels) + 1``.

    Example:
        >>> class_counts([0, 0, 2]).tolist()
        [2, 0, 1]
    """
    y = _as_labels(labels)
    if num_classes is None:
        num_classes = int(y.max()) + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if int(y.max()) >= num_classes:
        raise ValueError(f"labels must be in [0, num_classes={num_classes}), got {int(y.max())}")
    return torch.bincount(y, minlength=num_classes)


def _as_labels(labels) -> torch.Tensor:
    """Labels as a 1-D, non-empty, non-negative int64 CPU tensor."""
    try:
        y = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"labels must be a 1-D sequence of class indices, got {type(labels).__name__}") from None
    if y.dim() != 1 or y.numel() == 0 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(
            f"labels must be a non-empty 1-D sequence of integer class indices, got shape {tuple(y.shape)} "
            f"and dtype {y.dtype}"
        )
    y = y.to(device="cpu", dtype=torch.int64)
    if bool((y < 0).any()):
        raise ValueError(f"labels must be non-negative class indices, got {int(y.min())}")
    return y


def _as_counts(class_counts_, name: str = "class_counts") -> torch.Tensor:
    """Class counts as a 1-D float64 CPU tensor of finite values >= 0."""
    try:
        n = torch.as_tensor(class_counts_, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a 1-D sequence of numbers, got {type(class_counts_).__name__}") from None
    n = n.detach().cpu()
    if n.dim() != 1 or n.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence (one value per class), got shape {tuple(n.shape)}")
    if not bool(torch.isfinite(n).all()) or bool((n < 0).any()):
        raise ValueError(f"{name} must hold finite values >= 0, got {n.tolist()}")
    return n


# ---------------------------------------------------------------------------------------------------------------
# 1. class-balanced weights (Cui et al., CVPR 2019)
# ---------------------------------------------------------------------------------------------------------------
def _class_weighted_reduce(per_item: torch.Tensor, item_weight: torch.Tensor | None, count, reduction: str):
    """``reduction`` of ``per_item * item_weight``; the mean divides by ``count`` (never 0 / 0)."""
    loss = per_item if item_weight is None else per_item * item_weight
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / torch.clamp(torch.as_tensor(count, dtype=total.dtype, device=total.device), min=1.0)


class ClassWeightedLoss(nn.Module):
    """Cross-entropy (``gamma = 0``) or focal loss, optionally multiplying each sample's loss by its class's weight.

    This is the form of the class-balanced loss of Cui et al. (CVPR 2019): ``CB(x, y) = w_y * L(x, y)``, where
    ``L`` is softmax cross-entropy, the sum of the C sigmoid binary cross-entropies, or the focal version of
    either, and ``w_y`` the weight of the sample's class. ``reduction="mean"`` is the plain mean
    ``sum_i w_{y_i} L_i / N`` over the ``N`` non-ignored samples (softmax, as the paper's code does), or over
    the ``N * C`` elements (sigmoid, the convention of ``binary_cross_entropy_with_logits`` and of
    ``FocalLoss("sigmoid")``; the paper's sigmoid code divides the sum by the number of positive targets, ``N`` for
    single-label data, which is ``C`` times this mean: use ``reduction="sum"`` and divide by N for that scale). The
    weights thus change the loss's scale as well as its balance.

    This differs from ``F.cross_entropy(weight=w)`` (and ``softmax_focal_loss(weight=w)``), whose mean is the
    *weighted* mean ``sum_i w_{y_i} L_i / sum_i w_{y_i}``: the same gradient direction within a batch, but a
    batch-dependent scale. With label smoothing the two also weigh different things: here the whole smoothed
    loss of a sample is scaled by ``w_y``; there each class term ``c`` is scaled by ``w_c``.

    Which adaptive_focal argument would carry the paper's weights:

    * sigmoid: ``weight`` (elementwise, like ``binary_cross_entropy_with_logits``) with ``w_y`` broadcast along
      the sample's row is exactly the paper's sigmoid CB / CB focal loss. ``alpha`` is not: it is RetinaNet's
      ``alpha_t``, which weighs a class's positives by ``alpha_c`` and its negatives by ``1 - alpha_c`` (the paper
      replaces ``alpha_t`` by the class-balanced term);
    * softmax: a ``(C,)`` ``alpha`` multiplies each sample's loss by ``alpha_y`` with a plain mean, the paper's
      formula without label smoothing, but it is limited to [0, 1] while weights summing to C exceed 1;
      ``weight`` gives the weighted mean above.

    So this module computes the unreduced focal loss (``reduction="none"``) and applies ``w_y`` per sample itself.

    Args:
        num_classes: C.
        mode: ``"softmax"`` or ``"sigmoid"``.
        gamma: focusing parameter of the focal loss (0 = cross-entropy); any form ``FocalLoss`` accepts.
        class_weights: None or ``(C,)`` non-negative weights ``w_c`` (e.g.
            :func:`adaptive_focal.class_balanced_weights`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample for softmax, per element for sigmoid).
        label_smoothing: as ``FocalLoss``.
        ignore_index: softmax only (default -100; None ignores nothing).
    """

    def __init__(self, num_classes: int, mode: str = "softmax", gamma=0.0, class_weights=None,
                 reduction: str = "mean", label_smoothing: float = 0.0, ignore_index: int | None = -100) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        _check_choice("mode", mode, _MODES)
        _check_choice("reduction", reduction, _REDUCTIONS)
        self.num_classes = num_classes
        self.mode = mode
        self.reduction = reduction
        self.ignore_index = ignore_index if mode == "softmax" else None
        if mode == "sigmoid" and ignore_index not in (None, -100):
            raise ValueError(f"ignore_index is for mode='softmax' only, got ignore_index={ignore_index!r} with "
                             "mode='sigmoid'")
        self.focal = FocalLoss(mode, gamma=gamma, reduction="none", label_smoothing=label_smoothing,
                               ignore_index=self.ignore_index)
        if class_weights is not None:
            w = _as_counts(class_weights, "class_weights").to(torch.float32)
            if w.numel() != num_classes:
                raise ValueError(f"class_weights must have length num_classes={num_classes}, got {w.numel()}")
            self.register_buffer("class_weights", w)
        else:
            self.class_weights = None

    def forward(self, logits: torch.Tensor, target: torch.Tensor, return_stats: bool = False):
        _check_logits(logits)
        w = self.class_weights
        if self.mode == "softmax":
            out = self.focal(logits, target, return_stats=return_stats)
            per_sample, stats = out if return_stats else (out, None)
            if target.is_floating_point():  # class probabilities: the expected class weight sum_c t_c w_c
                item_w = None if w is None else (
                    target.to(w.dtype) * w.view((1, -1) + (1,) * (target.dim() - 2))).sum(1)
                count = per_sample.numel()
            else:
                valid = target != self.ignore_index if self.ignore_index is not None else torch.ones_like(
                    target, dtype=torch.bool)
                safe = torch.where(valid, target, torch.zeros_like(target))
                item_w = None if w is None else w[safe]
                count = valid.sum()
        else:
            t, cls = _sigmoid_targets(logits, target, self.num_classes, need_class=w is not None)
            out = self.focal(logits, t, return_stats=return_stats)
            per_sample, stats = out if return_stats else (out, None)
            item_w = None if w is None else w[cls].unsqueeze(1)
            count = per_sample.numel()
        loss = _class_weighted_reduce(per_sample, item_w, count, self.reduction)
        return (loss, stats) if return_stats else loss

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, mode={self.mode!r}, reduction={self.reduction!r}"


def _sigmoid_targets(logits: torch.Tensor, target: torch.Tensor, num_classes: int, need_class: bool):
    """Float targets for a sigmoid loss, and the class index per sample (or None).

    Index targets ``(N,)`` for logits ``(N, C)`` are one-hot encoded; float targets shaped like the logits are
    used as they are (multi-label), unless a class per sample is needed (class-balanced weights)."""
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if not target.is_floating_point():
        if logits.dim() != 2 or logits.shape[1] != num_classes or tuple(target.shape) != (logits.shape[0],):
            raise ValueError(
                f"index targets of a sigmoid loss need logits (N, C={num_classes}) and target (N,), got logits "
                f"{tuple(logits.shape)} and target {tuple(target.shape)}"
            )
        if target.numel() and (bool((target < 0).any()) or bool((target >= num_classes).any())):
            raise ValueError(f"target class indices must be in [0, {num_classes}), got "
                             f"{int(target[(target < 0) | (target >= num_classes)][0])}")
        cls = target.to(torch.int64)
        return F.one_hot(cls, num_classes).to(logits.dtype), cls
    if need_class:
        raise ValueError(
            "class-balanced weights in mode='sigmoid' need class index targets (N,) (the weight is that of the "
            f"sample's class, undefined for multi-label targets), got float targets of shape {tuple(target.shape)}"
        )
    if target.shape != logits.shape:
        raise ValueError(f"float targets must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}")
    return target, None


class ClassBalancedLoss(ClassWeightedLoss):
    """Class-balanced loss (Cui et al., CVPR 2019): :class:`ClassWeightedLoss` with
    :func:`adaptive_focal.class_balanced_weights`.

    ``gamma = 0`` gives CB cross-entropy (softmax) or CB sigmoid cross-entropy, ``gamma > 0`` CB focal loss (the
    paper's CB focal loss is the sigmoid one, without RetinaNet's ``alpha_t``). ``beta = 0`` is the unweighted
    loss. The weights are the buffer ``class_weights``.

    Example:
        >>> import torch
        >>> loss = ClassBalancedLoss([90, 10], beta=0.99, mode="softmax", gamma=2.0)
        >>> loss.class_weights.sum().item()
        2.0
        >>> loss(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1])).item() > 0
        True
    """

    def __init__(self, class_counts, beta: float = 0.9999, mode: str = "softmax", gamma=0.0,
                 reduction: str = "mean", label_smoothing: float = 0.0, ignore_index: int | None = -100) -> None:
        w = class_balanced_weights(class_counts, beta)
        super().__init__(w.numel(), mode=mode, gamma=gamma, class_weights=w, reduction=reduction,
                         label_smoothing=label_smoothing, ignore_index=ignore_index)
        self.beta = float(beta)


# ---------------------------------------------------------------------------------------------------------------
# 2. logit adjustment (Menon et al., ICLR 2021)
# ---------------------------------------------------------------------------------------------------------------
def logit_adjustment(class_priors, tau: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The offsets ``tau * log(pi_c)`` of logit adjustment (Menon et al., ICLR 2021), ``(C,)``.

    ``class_priors`` are the training class frequencies ``pi_c`` or the class counts: they are normalised to sum
    to 1 (a common factor adds the same constant to every logit, which changes no softmax probability and no
    argmax). Every prior must be > 0 (``log 0`` would make a class impossible).

    Example:
        >>> [round(v, 6) for v in logit_adjustment([3, 1], tau=1.0).tolist()]  # log(0.75), log(0.25)
        [-0.287682, -1.386294]
    """
    tau = _check_real("tau", tau)
    p = _as_counts(class_priors, "class_priors")
    if bool((p == 0).any()):
        zero = [int(i) for i in torch.nonzero(p == 0).flatten()]
        raise ValueError(f"class_priors must be > 0 for every class (log 0 = -inf), got 0 for class(es) {zero} "
                         f"in {p.tolist()}")
    return (tau * torch.log(p / p.sum())).to(dtype)


def _offsets_for(logits: torch.Tensor, class_priors, tau: float) -> torch.Tensor:
    _check_logits(logits)
    if logits.dim() < 1:
        raise ValueError("logits must have a class dimension: (C,), (N, C) or (N, C, d1, ...), got a 0-d tensor")
    off = logit_adjustment(class_priors, tau, dtype=logits.dtype).to(logits.device)
    c = logits.shape[1] if logits.dim() >= 2 else logits.shape[0]
    if off.numel() != c:
        raise ValueError(f"class_priors must have one value per class (C = {c}), got {off.numel()}")
    return off.view((1, c) + (1,) * (logits.dim() - 2)) if logits.dim() >= 2 else off


def logit_adjusted_loss(logits: torch.Tensor, target: torch.Tensor, class_priors, tau: float = 1.0,
                        **cross_entropy_kwargs) -> torch.Tensor:
    """Logit-adjusted softmax cross-entropy (Menon et al., ICLR 2021, eq. 10), the training-time loss.

    ``-log softmax(f(x) + tau * log pi)_y``: cross-entropy on the logits shifted by ``tau * log(prior)``.
    ``tau = 0`` (or uniform priors) is plain cross-entropy. The model then learns the logits of the balanced
    error, so predict with the raw logits (do not also apply :func:`posthoc_logit_adjust`).

    ``cross_entropy_kwargs`` go to ``F.cross_entropy`` (reduction, label_smoothing, ignore_index, weight).

    Example:
        >>> import torch
        >>> logits, y = torch.zeros(2, 2), torch.tensor([0, 1])
        >>> round(logit_adjusted_loss(logits, y, [3, 1]).item(), 6)  # (-log 0.75 - log 0.25) / 2
        0.836988
    """
    return F.cross_entropy(logits + _offsets_for(logits, class_priors, tau), target, **cross_entropy_kwargs)


def logit_adjusted_focal_loss(logits: torch.Tensor, target: torch.Tensor, class_priors, tau: float = 1.0,
                              gamma=2.0, **focal_kwargs) -> torch.Tensor:
    """Softmax focal loss on logit-adjusted logits: ``softmax_focal_loss(logits + tau * log pi, target, gamma)``.

    A combination, not from the paper: the modulating factor ``(1 - q_y)**gamma`` reads the *adjusted*
    probability, so a tail-class sample counts as harder than with the raw logits. ``gamma = 0`` is
    :func:`logit_adjusted_loss`. This is :func:`adaptive_focal.softmax_focal_loss` with its ``class_priors`` and
    ``tau``; ``focal_kwargs`` go to it.
    """
    _offsets_for(logits, class_priors, tau)  # the checks and messages of the other logit-adjustment functions
    return softmax_focal_loss(logits, target, gamma=gamma, class_priors=_as_counts(class_priors, "class_priors"),
                              tau=tau, **focal_kwargs)


def posthoc_logit_adjust(logits: torch.Tensor, class_priors, tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment (Menon et al., ICLR 2021, eq. 9): ``logits - tau * log(prior)``.

    For a model trained with the plain (unadjusted) loss: predict ``argmax`` of the result. ``tau = 1`` is the
    paper's choice for the balanced error; ``tau = 0`` returns the logits unchanged.

    Example:
        >>> import torch
        >>> posthoc_logit_adjust(torch.zeros(1, 2), [3, 1]).argmax(1).item()  # the rare class wins a tie
        1
    """
    return logits - _offsets_for(logits, class_priors, tau)


class LogitAdjustedLoss(nn.Module):
    """Logit-adjusted softmax loss (Menon et al., ICLR 2021) as a module: cross-entropy, or focal with ``gamma > 0``.

    ``forward(logits, target)`` is ``FocalLoss("softmax", gamma, class_priors=pi, tau=tau)(logits, target)``, the
    focal loss of ``logits + tau * log pi``; with ``gamma = 0`` it equals :func:`logit_adjusted_loss`. The focal loss
    is ``focal`` (its priors the buffer ``focal.class_priors``), so a gamma policy can drive it. This module keeps
    to the paper's softmax; the library's sigmoid loss also takes ``class_priors`` (one-vs-rest).
    """

    def __init__(self, class_priors, tau: float = 1.0, gamma=0.0, reduction: str = "mean",
                 label_smoothing: float = 0.0, ignore_index: int | None = -100) -> None:
        super().__init__()
        _check_choice("reduction", reduction, _REDUCTIONS)
        self.tau = _check_real("tau", tau)
        priors = _as_counts(class_priors, "class_priors")
        logit_adjustment(priors, tau)  # the checks and messages of the other logit-adjustment functions
        self.focal = FocalLoss("softmax", gamma=gamma, reduction=reduction, label_smoothing=label_smoothing,
                               ignore_index=ignore_index, class_priors=priors, tau=self.tau)

    @property
    def num_classes(self) -> int:
        return self.focal.class_priors.numel()

    def forward(self, logits: torch.Tensor, target: torch.Tensor, return_stats: bool = False):
        _check_logits(logits)
        if logits.dim() < 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape (N, C={self.num_classes}, ...), got {tuple(logits.shape)}")
        return self.focal(logits, target, return_stats=return_stats)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, tau={self.tau:g}"


# ---------------------------------------------------------------------------------------------------------------
# 3. GHM-C (Li, Liu, Wang, AAAI 2019)
# ---------------------------------------------------------------------------------------------------------------
def _ghm_bins(g: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index b of each g with ``b / bins <= g < (b + 1) / bins``; g = 1 is in the last bin."""
    inner = torch.arange(1, bins, dtype=torch.float64, device=g.device) / bins
    return torch.bucketize(g.detach().to(torch.float64), inner, right=True)


def _ghm_bin_weights(counts: torch.Tensor, tot: torch.Tensor, acc: torch.Tensor | None, momentum: float):
    """Per-bin weights ``tot / (R_b * n)`` (n = non-empty bins of this batch) and the updated EMA of R_b."""
    nonempty = counts > 0
    n = nonempty.sum().clamp_min(1).to(counts.dtype)
    if acc is not None and momentum > 0:
        acc = torch.where(nonempty, momentum * acc + (1.0 - momentum) * counts, acc)
        denom = acc
    else:
        denom = counts
    per_bin = torch.where(nonempty, tot / torch.where(nonempty, denom, torch.ones_like(denom)), torch.zeros_like(denom))
    return per_bin / n, acc


def ghm_weights(grad_norm: torch.Tensor, bins: int = 10, valid: torch.Tensor | None = None) -> torch.Tensor:
    """GHM-C weights ``beta_i = tot / (R_{b(i)} * n)`` of gradient norms g in [0, 1] (Li et al., AAAI 2019).

    ``bins`` equal-width bins on [0, 1]; ``R_b`` is the number of (valid) examples in bin b, ``n`` the number of
    non-empty bins and ``tot`` the number of valid examples. This is the formula of the authors' code (mmdetection's
    ``GHMC``); the paper's unit-region approximation ``beta_i = N / (R_{b(i)} * M)`` divides by all ``M`` bins
    instead of the non-empty ones. Dividing by ``n`` makes the weights sum to ``tot``, so a weighted loss divided by
    ``tot`` keeps the scale of a mean. Invalid examples get weight 0. Without momentum; see :class:`GHMCLoss`.

    Example:
        >>> import torch
        >>> ghm_weights(torch.tensor([0.05, 0.05, 0.5, 0.75])).tolist()  # 4 / (2 * 3), 4 / (1 * 3)
        [0.6666666666666666, 0.6666666666666666, 1.3333333333333333, 1.3333333333333333]
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    g = grad_norm.detach()
    v = torch.ones_like(g, dtype=torch.float64) if valid is None else valid.to(torch.float64)
    idx = _ghm_bins(g, bins)
    counts = torch.zeros(bins, dtype=torch.float64, device=g.device).scatter_add_(0, idx.reshape(-1), v.reshape(-1))
    per_bin, _ = _ghm_bin_weights(counts, v.sum().clamp_min(1.0), None, 0.0)
    return per_bin[idx] * v


class GHMCLoss(nn.Module):
    """GHM-C, the gradient harmonizing classification loss (Li, Liu, Wang, AAAI 2019).

    Sigmoid (the paper's loss): the gradient norm of an element is ``g = |sigmoid(x) - t|``; ``g`` is binned into
    ``bins`` equal-width bins on [0, 1] (bin b holds ``b / bins <= g < (b + 1) / bins``, g = 1 in the last) and each
    element's binary cross-entropy is weighted by ``beta = tot / (R_b * n)``, with ``R_b`` the count of its bin,
    ``n`` the number of non-empty bins and ``tot`` the number of elements; the loss is ``sum(beta * BCE) / tot``
    (the authors' code, mmdetection's ``GHMC``; see :func:`ghm_weights` for the paper's ``M`` versus ``n``). The
    weights are not differentiated. When every g falls in one bin all weights are 1 and the loss is
    ``F.binary_cross_entropy_with_logits``.

    Softmax (an extension, not in the paper): a sample's gradient norm is ``g = 1 - softmax(x)_y``, the magnitude
    of the cross-entropy gradient with respect to the true-class logit (half the L1 norm of ``softmax(x) - onehot``),
    and the weights multiply per-sample cross-entropy; one bin gives ``F.cross_entropy``.

    Momentum (the paper's implementation uses 0.75; mmdetection's default is 0): the bin counts are replaced by an
    exponential moving average over batches, ``R_b <- momentum * R_b + (1 - momentum) * count_b``, updated only for
    the bins that are non-empty in the current batch (empty bins keep their average), as in the authors' code. The
    average starts at 0, so the first batch's weights are ``1 / (1 - momentum)`` times larger (the authors' code does
    the same). The average is the buffer ``acc_sum`` (saved in ``state_dict``); it is updated in training mode only,
    and in eval mode the same blend is used for the batch without being stored.

    Args:
        mode: ``"sigmoid"`` or ``"softmax"``.
        bins: number of gradient-norm bins (the paper uses 30 for detection; default 10).
        momentum: in [0, 1).
        reduction: ``"mean"`` (``sum / tot``), ``"sum"`` or ``"none"`` (weighted per element / per sample).
        num_classes: C, for one-hot encoding index targets in sigmoid mode (default: the logits' dim 1).
        ignore_index: softmax only.
    """

    acc_sum: torch.Tensor

    def __init__(self, mode: str = "sigmoid", bins: int = 10, momentum: float = 0.0, reduction: str = "mean",
                 num_classes: int | None = None, ignore_index: int | None = -100) -> None:
        super().__init__()
        _check_choice("mode", mode, _MODES)
        _check_choice("reduction", reduction, _REDUCTIONS)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive int, got {bins!r}")
        self.mode = mode
        self.bins = bins
        self.momentum = _check_real("momentum", momentum, 0.0, 1.0, hi_open=True)
        self.reduction = reduction
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.register_buffer("acc_sum", torch.zeros(bins, dtype=torch.float64))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_logits(logits)
        if self.mode == "sigmoid":
            c = self.num_classes if self.num_classes is not None else (logits.shape[1] if logits.dim() == 2 else 0)
            t, _ = _sigmoid_targets(logits, target, c, need_class=False)
            t = t.to(logits.dtype)
            ell = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
            g = (torch.sigmoid(logits.detach()) - t).abs()
            valid = torch.ones_like(g, dtype=torch.bool)
        else:
            if logits.dim() != 2 or target.dim() != 1 or target.is_floating_point():
                raise ValueError(f"mode='softmax' needs logits (N, C) and class indices (N,), got logits "
                                 f"{tuple(logits.shape)} and target {tuple(target.shape)} of dtype {target.dtype}")
            ii = self.ignore_index if self.ignore_index is not None else -100
            ell = F.cross_entropy(logits, target, reduction="none", ignore_index=ii)
            valid = target != self.ignore_index if self.ignore_index is not None else torch.ones_like(
                target, dtype=torch.bool)
            safe = torch.where(valid, target, torch.zeros_like(target))
            q_y = torch.softmax(logits.detach().to(torch.float64), 1).gather(1, safe.unsqueeze(1)).squeeze(1)
            g = 1.0 - q_y
        v = valid.to(torch.float64)
        idx = _ghm_bins(g, self.bins)
        counts = torch.zeros(self.bins, dtype=torch.float64, device=logits.device)
        counts.scatter_add_(0, idx.reshape(-1), v.reshape(-1))
        tot = v.sum().clamp_min(1.0)
        with torch.no_grad():
            acc = self.acc_sum.to(device=logits.device, dtype=torch.float64) if self.momentum > 0 else None
            per_bin, acc = _ghm_bin_weights(counts, tot, acc, self.momentum)
            if acc is not None and self.training:
                self.acc_sum.copy_(acc)
        beta = (per_bin[idx] * v).to(ell.dtype)
        loss = beta * ell
        if self.reduction == "none":
            return loss
        total = loss.sum()
        return total if self.reduction == "sum" else total / tot.to(total.dtype)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, bins={self.bins}, momentum={self.momentum:g}, reduction={self.reduction!r}"


# ---------------------------------------------------------------------------------------------------------------
# 4. re-sampling (Kang et al., ICLR 2020; Mahajan et al., ECCV 2018)
# ---------------------------------------------------------------------------------------------------------------
def sampling_weights(labels, q: float) -> torch.Tensor:
    """Per-sample probabilities of drawing sample i, for class probabilities ``p_c = n_c**q / sum_k n_k**q``.

    Kang et al., "Decoupling Representation and Classifier for Long-Tailed Recognition" (ICLR 2020), eq. 1:
    ``q = 1`` is instance-balanced sampling (every sample equally likely), ``q = 0`` class-balanced (every class
    equally likely), ``q = 1/2`` square-root sampling (Mahajan et al., ECCV 2018). Sample i gets
    ``p_{y_i} / n_{y_i}``; the result is float64, sums to 1 and is what :class:`WeightedRandomSampler` takes.
    Classes absent from ``labels`` get no probability.

    Example:
        >>> sampling_weights([0, 0, 0, 1], q=0.0).tolist()  # each class 1/2, shared among its samples
        [0.16666666666666666, 0.16666666666666666, 0.16666666666666666, 0.5]
    """
    q = _check_real("q", q)
    y = _as_labels(labels)
    n = torch.bincount(y).to(torch.float64)
    n_y = n[y]
    w = n_y ** (q - 1.0)
    return w / w.sum()


def _weighted_sampler(labels, q: float, generator, num_samples) -> WeightedRandomSampler:
    w = sampling_weights(labels, q)
    if num_samples is None:
        num_samples = w.numel()
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int or None (= len(labels)), got {num_samples!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return WeightedRandomSampler(w, num_samples, replacement=True, generator=generator)


def class_balanced_sampler(labels, generator: torch.Generator | None = None,
                           num_samples: int | None = None) -> WeightedRandomSampler:
    """Class-balanced sampling: every class is drawn with probability 1 / C (``q = 0``, Kang et al., ICLR 2020).

    A :class:`torch.utils.data.WeightedRandomSampler` (with replacement) over indices of ``labels``, sample i with
    probability ``1 / (C n_{y_i})`` (``C`` = number of classes present); ``num_samples`` defaults to
    ``len(labels)`` draws per epoch. Draws are reproducible with a seeded ``generator``.
    """
    return _weighted_sampler(labels, 0.0, generator, num_samples)


def sqrt_sampler(labels, generator: torch.Generator | None = None,
                 num_samples: int | None = None) -> WeightedRandomSampler:
    """Square-root sampling: class c drawn with probability ∝ ``sqrt(n_c)`` (``q = 1/2``).

    Mahajan et al., ECCV 2018; Kang et al., ICLR 2020. Sample i has probability ∝ ``1 / sqrt(n_{y_i})``.
    Otherwise as :func:`class_balanced_sampler`.
    """
    return _weighted_sampler(labels, 0.5, generator, num_samples)


# ---------------------------------------------------------------------------------------------------------------
# 5. temperature scaling (Guo et al., ICML 2017)
# ---------------------------------------------------------------------------------------------------------------
def _temperature_problem(logits, labels, mode):
    """Float64 logits z and targets t (one-hot / probabilities for softmax, element targets for sigmoid)."""
    _check_choice("mode", mode, _MODES)
    _check_logits(logits, "val_logits")
    z = logits.detach().to(torch.float64).cpu()
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"val_labels must be a torch.Tensor, got {type(labels).__name__}")
    lab = labels.detach().cpu()
    if z.dim() < 1 or z.numel() == 0:
        raise ValueError(f"val_logits must be non-empty, got shape {tuple(z.shape)}")
    if mode == "softmax":
        if z.dim() != 2:
            raise ValueError(f"mode='softmax' needs val_logits (N, C), got shape {tuple(z.shape)}")
        if lab.is_floating_point():
            if lab.shape != z.shape:
                raise ValueError(f"class-probability val_labels must have the logits' shape {tuple(z.shape)}, "
                                 f"got {tuple(lab.shape)}")
            t = lab.to(torch.float64)
        else:
            if tuple(lab.shape) != (z.shape[0],) or bool((lab < 0).any()) or bool((lab >= z.shape[1]).any()):
                raise ValueError(f"val_labels must be class indices in [0, {z.shape[1]}) of shape ({z.shape[0]},), "
                                 f"got shape {tuple(lab.shape)}")
            t = F.one_hot(lab.to(torch.int64), z.shape[1]).to(torch.float64)
    else:
        if not lab.is_floating_point() and z.dim() == 2 and tuple(lab.shape) == (z.shape[0],):
            t = F.one_hot(lab.to(torch.int64), z.shape[1]).to(torch.float64)
        elif lab.shape == z.shape:
            t = lab.to(torch.float64)
        else:
            raise ValueError(f"mode='sigmoid' needs val_labels shaped like val_logits {tuple(z.shape)} (or class "
                             f"indices (N,) for logits (N, C)), got {tuple(lab.shape)}")
    return z, t


def _nll_derivatives(s: float, z: torch.Tensor, t: torch.Tensor, mode: str):
    """NLL(s) and its first two derivatives in ``s = 1 / T`` (mean over samples or elements)."""
    x = s * z
    if mode == "softmax":
        logq = torch.log_softmax(x, 1)
        q = logq.exp()
        ez = (q * z).sum(1)
        f = (-(t * logq).sum(1)).mean()
        d1 = (ez - (t * z).sum(1)).mean()
        d2 = ((q * z * z).sum(1) - ez * ez).clamp_min(0).mean()
    else:
        p = torch.sigmoid(x)
        f = (F.softplus(x) - t * x).mean()
        d1 = ((p - t) * z).mean()
        d2 = (p * (1 - p) * z * z).mean()
    return float(f), float(d1), float(d2)


def fit_temperature(val_logits: torch.Tensor, val_labels: torch.Tensor, mode: str = "softmax",
                    bounds: tuple[float, float] = (1e-2, 1e2), max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the validation NLL of ``val_logits / T`` (Guo et al., ICML 2017).

    Softmax: NLL is the mean cross-entropy (labels are class indices ``(N,)`` or class probabilities ``(N, C)``).
    Sigmoid (multi-label / binary): the mean binary cross-entropy over elements (labels shaped like the logits, or
    class indices ``(N,)`` for ``(N, C)`` logits, one-hot encoded).

    The NLL is a convex function of ``s = 1 / T`` (log-sum-exp / softplus of ``s z`` minus a linear term), so the
    minimiser is found by Newton's method on ``s`` in float64 with exact first and second derivatives, safeguarded
    by bisection on the sign of the derivative within ``[1 / bounds[1], 1 / bounds[0]]``. It is deterministic; a
    minimiser outside ``bounds`` is returned as the nearest bound (e.g. separable data, whose NLL keeps falling as
    T -> 0). When T = 1 is already optimal (the derivative at s = 1 is 0 up to the rounding of the inputs' dtype)
    exactly 1.0 is returned.

    Returns:
        T as a Python float; calibrated logits are ``apply_temperature(logits, T)``.

    Example:
        >>> import torch
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> fit_temperature(z, torch.softmax(z, 1))  # soft labels equal to the model's own probabilities
        1.0
    """
    z, t = _temperature_problem(val_logits, val_labels, mode)
    if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2
            and all(isinstance(b, Real) and not isinstance(b, bool) for b in bounds)
            and 0 < bounds[0] < bounds[1] < math.inf):
        raise ValueError(f"bounds must be a pair (T_min, T_max) with 0 < T_min < T_max < inf, got {bounds!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("val_logits must be finite")
    lo, hi = 1.0 / float(bounds[1]), 1.0 / float(bounds[0])
    scale = float(z.abs().mean()) + 1e-300  # derivative tolerances are relative to the logits' size
    tol = 1e-12 * scale
    # "T = 1 is optimal" up to the rounding of the inputs (float32 logits or soft labels carry ~1e-7 relative error)
    in_dtypes = [val_logits.dtype] + ([val_labels.dtype] if val_labels.is_floating_point() else [])
    one_tol = 8 * max(torch.finfo(d).eps for d in in_dtypes) * scale

    def d1_at(s):
        return _nll_derivatives(s, z, t, mode)[1]

    if lo <= 1.0 <= hi and abs(d1_at(1.0)) <= one_tol:
        return 1.0
    if d1_at(lo) >= 0:
        return 1.0 / lo
    if d1_at(hi) <= 0:
        return 1.0 / hi
    s = min(max(1.0, lo), hi)
    for _ in range(max_iter):
        _, d1, d2 = _nll_derivatives(s, z, t, mode)
        if abs(d1) <= tol:
            break
        if d1 > 0:
            hi = s
        else:
            lo = s
        step = d1 / d2 if d2 > 0 else math.inf
        new = s - step
        if not (lo < new < hi):
            new = 0.5 * (lo + hi)
        if abs(new - s) <= 1e-15 * max(s, 1e-300):
            s = new
            break
        s = new
    return 1.0 / s


def apply_temperature(logits: torch.Tensor, T: float) -> torch.Tensor:
    """Temperature-scaled logits ``logits / T`` (softmax or sigmoid alike); ``T = 1`` returns them unchanged.

    Example:
        >>> import torch
        >>> apply_temperature(torch.tensor([2.0, -4.0]), 2.0).tolist()
        [1.0, -2.0]
    """
    _check_logits(logits)
    T = _check_real("T", T, 0.0, None, lo_open=True)
    return logits if T == 1.0 else logits / T


# ---------------------------------------------------------------------------------------------------------------
# 6. registry
# ---------------------------------------------------------------------------------------------------------------
_COMMON = {"mode": "softmax", "reduction": "mean", "label_smoothing": 0.0, "ignore_index": -100}
#: name -> defaults of its keyword arguments (every accepted keyword is listed)
_LOSS_DEFAULTS: dict[str, dict] = {
    "ce": {**_COMMON},
    "focal": {**_COMMON, "gamma": 2.0},
    "cb_ce": {**_COMMON, "beta": 0.9999},
    "cb_focal": {**_COMMON, "beta": 0.9999, "gamma": 2.0},
    "logit_adjusted": {"reduction": "mean", "label_smoothing": 0.0, "ignore_index": -100, "tau": 1.0, "gamma": 0.0},
    "ghm": {"mode": "softmax", "reduction": "mean", "ignore_index": -100, "bins": 10, "momentum": 0.0},
}
LOSS_NAMES = tuple(_LOSS_DEFAULTS)
SAMPLER_NAMES = ("none", "class_balanced", "sqrt")


def make_loss(name: str, num_classes: int, class_counts=None, **kwargs) -> nn.Module:
    """A baseline loss by name, as an ``nn.Module`` called ``loss(logits, target)``.

    ==================  ===========================================================  ==============================
    name                loss                                                         keywords (defaults)
    ==================  ===========================================================  ==============================
    ``ce``              cross-entropy; ``mode="sigmoid"``: one-vs-rest BCE           mode, reduction,
                                                                                     label_smoothing, ignore_index
    ``focal``           focal loss (Lin et al., 2017), ``module.focal`` a FocalLoss  + gamma (2.0)
    ``cb_ce``           class-balanced CE / sigmoid BCE (Cui et al., 2019)           + beta (0.9999)
    ``cb_focal``        class-balanced focal loss (Cui et al., 2019)                 + beta (0.9999), gamma (2.0)
    ``logit_adjusted``  logit-adjusted CE (Menon et al., 2021); focal if gamma > 0   tau (1.0), gamma (0.0),
                                                                                     reduction, label_smoothing,
                                                                                     ignore_index; softmax only
    ``ghm``             GHM-C (Li et al., 2019); ``mode="sigmoid"`` is the paper's   mode, reduction, ignore_index,
                                                                                     bins (10), momentum (0.0)
    ==================  ===========================================================  ==============================

    ``mode`` is ``"softmax"`` by default for every name (targets are class indices ``(N,)``); ``"sigmoid"`` makes
    one binary problem per class. ``ce``, ``focal``, ``cb_ce`` and ``cb_focal`` are :class:`ClassWeightedLoss`
    (``ce`` and ``focal`` without weights); ``logit_adjusted`` is :class:`LogitAdjustedLoss`; ``ghm`` is
    :class:`GHMCLoss`. ``class_counts`` (training samples per class, length ``num_classes``) is required by
    ``cb_ce``, ``cb_focal`` and ``logit_adjusted`` and checked when given.

    Raises:
        ValueError: unknown name, unknown keyword for that name, missing or mismatched class_counts, bad values.

    Example:
        >>> import torch
        >>> loss = make_loss("cb_focal", 3, class_counts=[50, 10, 2], beta=0.99, gamma=1.0)
        >>> loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([])
    """
    if not isinstance(name, str) or name not in _LOSS_DEFAULTS:
        raise ValueError(f"name must be one of {', '.join(repr(n) for n in LOSS_NAMES)}, got {name!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    defaults = _LOSS_DEFAULTS[name]
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise ValueError(
            f"make_loss({name!r}) got unknown keyword argument(s) {', '.join(unknown)}; allowed for {name!r}: "
            f"{', '.join(sorted(defaults))}"
        )
    kw = {**defaults, **kwargs}
    counts = None
    if class_counts is not None:
        counts = _as_counts(class_counts)
        if counts.numel() != num_classes:
            raise ValueError(f"class_counts must have length num_classes={num_classes}, got {counts.numel()}")
    if name in ("cb_ce", "cb_focal", "logit_adjusted") and counts is None:
        raise ValueError(f"make_loss({name!r}) needs class_counts (training samples per class), got None")
    if "mode" in kw:
        _check_choice("mode", kw["mode"], _MODES)
    if name in ("ce", "focal"):
        return ClassWeightedLoss(num_classes, mode=kw["mode"], gamma=kw.get("gamma", 0.0),
                                 reduction=kw["reduction"], label_smoothing=kw["label_smoothing"],
                                 ignore_index=kw["ignore_index"])
    if name in ("cb_ce", "cb_focal"):
        return ClassBalancedLoss(counts, beta=kw["beta"], mode=kw["mode"], gamma=kw.get("gamma", 0.0),
                                 reduction=kw["reduction"], label_smoothing=kw["label_smoothing"],
                                 ignore_index=kw["ignore_index"])
    if name == "logit_adjusted":
        return LogitAdjustedLoss(counts, tau=kw["tau"], gamma=kw["gamma"], reduction=kw["reduction"],
                                 label_smoothing=kw["label_smoothing"], ignore_index=kw["ignore_index"])
    return GHMCLoss(mode=kw["mode"], bins=kw["bins"], momentum=kw["momentum"], reduction=kw["reduction"],
                    num_classes=num_classes, ignore_index=kw["ignore_index"])


def make_sampler(name: str, labels, generator: torch.Generator | None = None, num_samples: int | None = None):
    """A training sampler by name, for ``DataLoader(dataset, sampler=...)`` (do not also pass ``shuffle=True``).

    * ``"none"``: instance-balanced, a :class:`torch.utils.data.RandomSampler` (a fresh permutation every epoch,
      the same as ``shuffle=True``);
    * ``"class_balanced"``: :func:`class_balanced_sampler`;
    * ``"sqrt"``: :func:`sqrt_sampler`.

    ``num_samples`` (draws per epoch) defaults to ``len(labels)``; the draws follow ``generator``.

    Example:
        >>> import torch
        >>> s = make_sampler("class_balanced", [0, 0, 0, 1], generator=torch.Generator().manual_seed(0))
        >>> len(list(s))
        4
    """
    if not isinstance(name, str) or name not in SAMPLER_NAMES:
        raise ValueError(f"name must be one of {', '.join(repr(n) for n in SAMPLER_NAMES)}, got {name!r}")
    if name == "class_balanced":
        return class_balanced_sampler(labels, generator, num_samples)
    if name == "sqrt":
        return sqrt_sampler(labels, generator, num_samples)
    y = _as_labels(labels)
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                    or num_samples < 1):
        raise ValueError(f"num_samples must be a positive int or None (= len(labels)), got {num_samples!r}")
    return RandomSampler(range(y.numel()), num_samples=num_samples, generator=generator)
