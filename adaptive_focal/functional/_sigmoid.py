"""The pure-PyTorch sigmoid focal loss: the reference path the fused kernels are tested against.

The loss is written in log space, so that plain autograd gives finite gradients at saturated logits for every
gamma: the modulating factor is ``exp(gamma * log(1 - p_t))`` with ``log(1 - p_t)`` from ``logsigmoid``, where
the textbook ``(1 - p_t)**gamma`` gives ``0 * inf = NaN`` for 0 < gamma < 1. The statistics' per-element
gradient is written in closed form (:func:`_elem_grad`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ..gamma_forms import FocalMixture
from ..stats import BatchStats
from ._checks import on_host, with_class_weight
from ._gamma import FULL, PER_CLASS, SCALAR, TABLE, Gamma, check_mixture


def canonical_shape(input: torch.Tensor) -> tuple[int, int, int]:
    """The (N, C, S) view of the kernel contract: dim 1 is the class dimension when there are two or more dims."""
    if input.dim() == 0:
        return (1, 1, 1)
    if input.dim() == 1:
        return (input.shape[0], 1, 1)
    return (input.shape[0], input.shape[1], math.prod(input.shape[2:]))


def gamma_values(g: Gamma, shape3: tuple, num_classes: int) -> torch.Tensor:
    """gamma's values in the kernel contract's layout: () / (C,) / (N, C, S) / table values (C, B)."""
    if g.kind == FULL:
        return g.value.reshape(shape3)
    if g.kind == TABLE and not g.table.per_class:
        return g.value.unsqueeze(0).expand(num_classes, -1)
    return g.value


def _modulator(log_base_pos: torch.Tensor, log_base_neg_fn, gamma: torch.Tensor, inverse: bool) -> torch.Tensor:
    """``(1 - p_t)**gamma`` for gamma >= 0 and ``(1 + p_t)**|gamma|`` for gamma < 0, from logarithms.

    Written as a product of two exponentials, one of which is exp(0) = 1 for each element, rather than a
    ``torch.where``: both factors are finite, so no masked branch can put ``0 * inf`` into the gradient.
    """
    m = torch.exp(gamma.clamp_min(0) * log_base_pos)
    if inverse:  # False only when gamma is known to be >= 0 (Gamma.nonneg)
        m = m * torch.exp((-gamma).clamp_min(0) * log_base_neg_fn())
    return m


#: where an infinite logit is computed (the same in every path of the library): exp(-1e4) is 0 in float32 and
#: float64, so every quantity of the loss equals its limit there, and autograd's products stay far from overflow
SATURATED = 1e4


class _Saturate(torch.autograd.Function):
    """``x`` with +-inf replaced by +-``SATURATED`` (finite values and NaN kept), differentiated as the identity:
    the gradient an infinite logit receives is the limit of the gradient."""

    @staticmethod
    def forward(ctx, x):
        return torch.where(torch.isinf(x), torch.copysign(torch.full_like(x, SATURATED), x), x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _infinite(x: torch.Tensor) -> torch.Tensor | None:
    """Where ``x`` is infinite, or None when it is known to have no infinity (read only where that costs no
    device synchronisation)."""
    if on_host(x) and not bool(torch.isinf(x).any()):
        return None
    return torch.isinf(x)


def _loss_limit(loss: torch.Tensor, infinite: torch.Tensor) -> torch.Tensor:
    """What to add to the losses computed at saturated logits to make them their limits: +-inf where the logit
    is infinite and the loss is not 0 (a loss that grows without bound), else 0. A constant: the gradient stays
    that of the saturated logit."""
    lost = loss.detach()
    return torch.where(infinite & (lost != 0), lost.sign() * float("inf"), torch.zeros_like(lost))


def reference(x, t, g: Gamma, gval, alpha, weight, ignore_index, ls, detach, edges, need_stats, need_conf=False):
    """Element losses (N, C, S) by plain autograd on a log-space formula, and the statistics (or None), with the
    confidence bins when ``need_conf``.

    Non-finite logits follow the kernels' rule (``adaptive_focal/_kernels/__init__.py``): an ignored element has
    loss and gradient 0 whatever its logit; an infinite one gives the limits of the loss and of its gradient; a
    NaN one gives NaN, and NaN statistics."""
    n, c, s = x.shape
    valid = None
    if ignore_index is not None:
        valid = t != ignore_index
        t = torch.where(valid, t, torch.zeros_like(t))
        x = torch.where(valid, x, torch.zeros_like(x))  # nothing of an ignored element's logit gets through
    infinite = _infinite(x)
    if infinite is not None:
        x = _Saturate.apply(x)
    ts = t * (1.0 - ls) + 0.5 * ls if ls else t
    ce = F.binary_cross_entropy_with_logits(x, ts, reduction="none")
    log_p, log_pm = F.logsigmoid(x), F.logsigmoid(-x)
    # log(1 - p_t) = log(t' (1 - p) + (1 - t') p), finite for finite logits (>= about -|x|)
    log_q = torch.logaddexp(torch.log(ts) + log_pm, torch.log1p(-ts) + log_p)
    with torch.no_grad():
        p = torch.sigmoid(x)
        p_t = p * ts + (1.0 - p) * (1.0 - ts)
    if g.kind == SCALAR:
        gam = gval
    elif g.kind == PER_CLASS:
        gam = gval.view(1, c, 1)
    elif g.kind == FULL:
        gam = gval
    else:
        cls = torch.arange(c, device=x.device).view(1, c, 1).expand(n, c, s)
        gam = gval.to(x.dtype)[cls, g.table.bin_index(p_t)]
    gam = gam.to(x.dtype)
    m = _modulator(log_q, lambda: torch.log1p(-torch.expm1(log_q)), gam, not g.nonneg)
    if detach:
        m = m.detach()
    loss = m * ce
    alpha_t = None
    if alpha is not None:
        av = alpha.view(1, c, 1)
        alpha_t = av * ts + (1.0 - av) * (1.0 - ts)
        loss = loss * alpha_t
    if weight is not None:
        loss = loss * weight
    if infinite is not None:
        loss = loss + _loss_limit(loss, infinite)
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    stats = None
    if need_stats:
        with torch.no_grad():
            stats = _stats(x, t, ts, p, p_t, valid, loss, edges, g, gam, ce, log_p, log_pm, log_q, m, detach,
                           alpha_t, weight, need_conf)
    return loss, stats


def _stats(x, t, ts, p, p_t, valid, loss, edges, g: Gamma, gam, ce, log_p, log_pm, log_q, m, detach, alpha_t,
           weight, need_conf) -> BatchStats:
    """The statistics of the element losses (called under no_grad): ``x`` the logits as computed (ignored ones 0,
    infinite ones saturated), ``t`` / ``ts`` the raw (ignored ones 0) and smoothed targets; the confidence bins
    only with ``need_conf``."""
    c = x.shape[1]
    b = edges.numel() - 1
    v = torch.ones_like(p_t) if valid is None else valid.to(p_t.dtype)
    positive = t >= 0.5 if valid is None else (t >= 0.5) & valid
    pos = positive.to(v.dtype)
    f32, f64 = torch.float32, torch.float64
    # |dl/dx| per element (0 where ignored), split by the raw target
    grad = _elem_grad(p, p_t, ts, ce, log_p, log_pm, log_q, m, gam, g.nonneg, detach, alpha_t, weight).abs() * v
    # seven per-element quantities summed per class in one reduction (this runs every training step); float64
    # sums keep the counts exact however many elements a batch has (p_t over the positives is selected, not
    # multiplied by 0/1, so that a negative's NaN stays out of it)
    per_class = torch.stack([v, pos, p_t * v, torch.where(positive, p_t, 0.0), (p - ts).abs() * v, grad * t,
                             grad * (1.0 - t)]).sum((1, 3), dtype=f64)  # (7, C)
    total = per_class.sum(1)
    inner = edges[1:-1].to(x.dtype)
    if not need_conf:  # the p_t histogram alone: float64 counts, exact, as in the scatter-add below
        hist = torch.zeros(b, device=x.device, dtype=f64).scatter_add_(
            0, torch.bucketize(p_t, inner, right=True).reshape(-1), v.reshape(-1).to(f64))
        ints = torch.cat([total[:2], per_class[0], hist]).to(torch.int64)
        bins = {}
    else:
        # each element as a binary prediction: confidence max(p, 1 - p) = sigmoid(|x|), correct when the logit's
        # sign agrees with the target's label (x = 0 is a tie: correct); a NaN logit makes both NaN
        conf = torch.sigmoid(x.abs())
        correct = torch.where(t >= 0.5, x >= 0, x <= 0).to(x.dtype)
        correct = torch.where(torch.isnan(x), x, correct)
        # one scatter-add: elements, confidences and correct ones per (class, confidence bin), and the p_t histogram
        cell = torch.arange(0, c * b, b, device=x.device).view(1, c, 1) + torch.bucketize(conf, inner, right=True)
        index = torch.stack([cell, cell, cell, torch.bucketize(p_t, inner, right=True)]).reshape(4, -1)
        weights = torch.stack([v, conf * v, correct * v, v]).reshape(4, -1).to(f64)
        cells = torch.zeros(4, c * b, device=x.device, dtype=f64).scatter_add_(1, index, weights)
        per_bin = cells[:3].view(3, c, b).sum(1)  # (3, B): the confidence bins summed over classes
        ints = torch.cat([total[:2], per_class[0], cells[3, :b], per_bin[0], cells[0]]).to(torch.int64)
        per_bin, cells = per_bin.to(f32), cells.to(f32)
        bins = dict(conf_count=ints[2 + c + b:2 + c + 2 * b], conf_sum=per_bin[1], correct_sum=per_bin[2],
                    class_conf_count=ints[2 + c + 2 * b:].view(c, b), class_conf_sum=cells[1].view(c, b),
                    class_correct_sum=cells[2].view(c, b))
    total, per_class = total.to(f32), per_class.to(f32)
    return BatchStats(
        edges=edges,
        count=ints[0],
        n_pos=ints[1],
        sum_pt=total[2],
        sum_loss=loss.detach().sum().to(f32),
        sum_grad_norm=total[4],
        pt_hist=ints[2 + c:2 + c + b],
        class_count=ints[2:2 + c],
        class_sum_pt=per_class[2],
        sum_pt_pos=total[3],
        class_sum_grad_pos=per_class[5],
        class_sum_grad_neg=per_class[6],
        mode="sigmoid",
        **bins,
    )


def _elem_grad(p, p_t, ts, ce, log_p, log_pm, log_q, m, gam, nonneg, detach, alpha_t, weight):
    """dl/dx of each element loss ``A W m ce`` (A = alpha_t, W = weight, m the modulating factor), in closed form
    (called under no_grad).

    ``dl/dx = A W (m (p - t') + ce dm/dx)`` with ``dm/dx = -gamma m (2t' - 1) p (1 - p) / (1 - p_t)`` for
    gamma >= 0 and ``|gamma| m (2t' - 1) p (1 - p) / (1 + p_t)`` for gamma < 0 (0 with ``detach``). Both ratios are
    at most 1; the first is formed from logarithms, ``exp(log p + log(1 - p) - log(1 - p_t))``, so it is finite for
    saturated logits, where p (1 - p) and 1 - p_t underflow together.
    """
    d = p - ts
    if not detach:
        log_ppm = log_p + log_pm
        dm = gam.clamp_min(0) * torch.exp(log_ppm - log_q)  # -(dm/dx) / (m (2t' - 1)) for gamma >= 0
        if not nonneg:
            dm = dm - (-gam).clamp_min(0) * torch.exp(log_ppm) / (1.0 + p_t)
        d = d - ce * (2.0 * ts - 1.0) * dm
    d = m * d
    if alpha_t is not None:
        d = d * alpha_t
    if weight is not None:
        d = d * weight
    return d


#: BatchStats fields that depend on the loss value (the rest depend only on the logits and targets)
_LOSS_FIELDS = ("sum_loss", "class_sum_grad_pos", "class_sum_grad_neg")


def mixture(fn, input, target, mix: FocalMixture, alpha, weight, kwargs: dict):
    """The sigmoid loss with a FocalMixture gamma of several terms (or scalar weights): the weighted sum of the
    losses with each term's gamma (softmax_focal_loss sums its terms inside its one pass).

    A scalar weight scales a term's loss; a per-class weight multiplies the element weight, which leaves the
    reduction's denominator alone. Statistics are those of the first term with the loss-dependent sums added over
    the terms (the gradient sums add magnitudes, exact whenever the terms' gradients share a sign, as they do for
    hard targets).
    """
    check_mixture(mix, "sigmoid", input)
    return_stats = kwargs["return_stats"]
    total, stats = None, None
    for k in range(mix.num_terms):
        w_k = mix.weights[k]
        term_weight, scale = weight, None
        if w_k.dim() == 0:
            scale = w_k
        else:  # per class along dim 1
            term_weight = with_class_weight(weight, w_k, input)
        out = fn(input, target, gamma=mix.gammas[k], alpha=alpha, weight=term_weight, **kwargs)
        loss_k, stats_k = out if return_stats else (out, None)
        if scale is not None:
            loss_k = loss_k * scale.to(loss_k.dtype)
        total = loss_k if total is None else total + loss_k
        if stats_k is not None and stats is None and scale is None:
            stats = stats_k  # a first term with per-class weights has nothing to rescale (EFL's one-term form)
        elif stats_k is not None:
            parts = {}
            for name in _LOSS_FIELDS:
                value = getattr(stats_k, name, None)
                if value is None:
                    continue
                value = value * scale.to(value.dtype) if scale is not None else value
                parts[name] = value if stats is None else getattr(stats, name) + value
            stats = dataclasses.replace(stats_k if stats is None else stats, **parts)
    return (total, stats) if return_stats else total
