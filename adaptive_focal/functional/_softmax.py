"""The softmax focal loss after ``log_softmax``: per-sample losses from the log-probabilities.

Index targets without label smoothing take one term per sample (the target class's), gathered before the focal
factor is applied; probability targets and label smoothing sum the terms of every class. Each term is
:class:`FocalTerm`, whose derivative is written out so that it stays finite at q = 1 for every gamma >= 0.
"""

from __future__ import annotations

import torch

from ._gamma import FULL, PER_CLASS, SCALAR, Gamma


class FocalTerm(torch.autograd.Function):
    """``f(l) = m * l`` with ``l = -log q`` and ``m = (1 - q)**gamma`` (``(1 + q)**|gamma|`` for gamma < 0).

    The derivative is written out: ``df/dl = m * (1 + gamma * q * k)`` with ``k = l / (1 - q)`` for gamma >= 0
    (tending to 1 as q -> 1) and ``k = l / (1 + q)`` for gamma < 0. Unlike autograd through ``(1 - q)**gamma``,
    it never forms ``(1 - q)**(gamma - 1)``, so it is finite at q = 1 for every gamma >= 0. At q = 0 (l = inf, a
    logit of -inf) ``q * k`` and ``d m / d gamma * l`` take their limit 0: the gradient is that of
    ``F.cross_entropy`` there, not ``0 * inf``.
    """

    @staticmethod
    def forward(ctx, ell, gamma, detach, inverse):
        one_minus_q = -torch.expm1(-ell)
        if inverse:  # some gamma may be negative
            m = torch.where(gamma >= 0, torch.pow(one_minus_q, gamma.clamp_min(0)),
                            torch.pow(2.0 - one_minus_q, (-gamma).clamp_min(0)))
        else:
            m = torch.pow(one_minus_q, gamma)
        ctx.save_for_backward(ell, gamma)
        ctx.detach, ctx.inverse = detach, inverse
        return m * ell

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        ell, gamma = ctx.saved_tensors
        ell = ell.clamp(max=torch.finfo(ell.dtype).max)  # l = inf (q = 0): the finite limits below; NaN kept
        q = torch.exp(-ell)
        one_minus_q = -torch.expm1(-ell)
        if ctx.inverse:
            pos = gamma >= 0
            base = torch.where(pos, one_minus_q, 1.0 + q)
            m = torch.pow(base, gamma.abs())
        else:
            pos, base = None, one_minus_q
            m = torch.pow(base, gamma)
        grad_ell = grad_gamma = None
        if ctx.needs_input_grad[0]:
            if ctx.detach:
                grad_ell = grad_out * m
            else:
                small = ell.abs() < 1e-6
                safe_ell = torch.where(small, torch.ones_like(ell), ell)
                k_pos = torch.where(small, 1.0 + 0.5 * ell,
                                    safe_ell / torch.where(small, torch.ones_like(ell), -torch.expm1(-safe_ell)))
                k = torch.where(pos, k_pos, ell / (1.0 + q)) if ctx.inverse else k_pos
                grad_ell = grad_out * m * (1.0 + gamma * q * k)
        if ctx.needs_input_grad[1]:
            log_base = torch.log(base.clamp_min(torch.finfo(base.dtype).tiny))
            dm = torch.where(pos, m * log_base, -m * log_base) if ctx.inverse else m * log_base
            grad_gamma = grad_out * dm * ell
            grad_gamma = _sum_to(grad_gamma, gamma.shape)
        return grad_ell, grad_gamma, None, None


def _sum_to(grad: torch.Tensor, shape) -> torch.Tensor:
    if grad.shape == shape:
        return grad
    return grad.sum_to_size(shape) if len(shape) else grad.sum()


def _class_grid(like: torch.Tensor) -> torch.Tensor:
    c = like.shape[1]
    shape = [1] * like.dim()
    shape[1] = c
    return torch.arange(c, device=like.device).view(shape).expand(like.shape)


def _class_term_gamma(g: Gamma, logp: torch.Tensor, cshape: tuple) -> torch.Tensor:
    """gamma of every class term (N, C, ...); a GammaTable is looked up from each term's q_c and class c."""
    if g.kind == SCALAR or g.kind == FULL:
        return g.value
    if g.kind == PER_CLASS:
        return g.value.view(cshape)
    return g.table.lookup(torch.exp(logp.detach()), _class_grid(logp)).to(logp.dtype)


def _target_gamma(g: Gamma, ell: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """gamma of each sample's target term (N, d1, ...)."""
    if g.kind == SCALAR:
        return g.value.expand_as(ell)
    if g.kind == PER_CLASS:
        return g.value[cls]
    if g.kind == FULL:
        return g.value.gather(1, cls.unsqueeze(1)).squeeze(1)
    return g.table.lookup(torch.exp(-ell.detach()), cls).to(ell.dtype)


def _mixed(terms, loss_of):
    """``sum_k w_k loss_of(gamma_k)`` over the (gamma, weight) terms (the plain loss for one unweighted term)."""
    out = None
    for g_k, w_k in terms:
        term = loss_of(g_k) if w_k is None else loss_of(g_k) * w_k
        out = term if out is None else out + term
    return out


def _all_terms(logp, y, terms, alpha, weight, detach, sparse: bool):
    """Per-sample loss summing every class term against the target distribution ``y`` (shaped like logp).

    ``sparse``: ``y`` may hold zeros (probability targets without smoothing); such a term is then 0 whatever its
    loss, so that a class of probability 0 at a logit of -inf (l = inf) adds nothing rather than ``0 * inf``."""
    cshape = (1, logp.shape[1]) + (1,) * (logp.dim() - 2)
    ell = -logp
    present = y != 0 if sparse else None

    def loss_of(g: Gamma):
        gam = torch.broadcast_to(_class_term_gamma(g, logp, cshape), ell.shape)
        out = FocalTerm.apply(ell, gam, detach, not g.nonneg) * y
        if present is not None:
            out = torch.where(present, out, 0.0)
        if alpha is not None:
            out = out * alpha.view(cshape)
        if weight is not None:
            out = out * weight.view(cshape)
        return out.sum(1)

    return _mixed(terms, loss_of)


def reference(logp, target, valid, terms, alpha, weight, ls: float, detach: bool):
    """Per-sample losses (N, d1, ...), 0 where ignored, and the mean's denominator.

    ``target``: class probabilities shaped like ``logp`` (``valid`` None), or class indices with the ignored ones
    replaced by 0 and ``valid`` marking the others. ``terms``: (Gamma, weight or None) pairs, one per FocalMixture
    term. The mean of index targets divides by the samples' summed class ``weight``, as ``F.cross_entropy``.
    """
    num_classes = logp.shape[1]
    if valid is None:
        y = target * (1.0 - ls) + ls / num_classes if ls else target
        per_sample = _all_terms(logp, y, terms, alpha, weight, detach, sparse=not ls)
        return per_sample, torch.tensor(float(per_sample.numel()), device=logp.device, dtype=logp.dtype)
    cls = target
    w_y = None if weight is None else weight[cls]
    if ls == 0.0:
        ell = -logp.gather(1, cls.unsqueeze(1)).squeeze(1)
        per_sample = _mixed(terms, lambda g_k: FocalTerm.apply(ell, _target_gamma(g_k, ell, cls), detach,
                                                                not g_k.nonneg))
        if alpha is not None:
            per_sample = per_sample * alpha[cls]
        if w_y is not None:
            per_sample = per_sample * w_y
    else:
        onehot = torch.zeros_like(logp).scatter_(1, cls.unsqueeze(1), 1.0)
        per_sample = _all_terms(logp, onehot * (1.0 - ls) + ls / num_classes, terms, alpha, weight, detach,
                                sparse=False)
    per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
    denom = valid.to(logp.dtype).sum() if w_y is None else (w_y * valid).sum()
    return per_sample, denom
