"""Independent float64 reference implementations of the adaptive_focal contract, and how the tests compare the
library with them.

Written directly from /tmp/spec/API_SPEC.md ("Semantics"), deliberately without looking at the
library code.  Two flavours:

* ``ref_sigmoid`` / ``ref_softmax``: the formula written out literally and differentiated by plain
  autograd (p = sigmoid(x), 1 - p_t, (1 - p_t) ** gamma ...).  Good at moderate logits.
* ``stable_ref_sigmoid`` / ``stable_ref_softmax``: the same formula expressed through log-space
  quantities (logsigmoid, log_softmax, logsumexp over the other classes) so that float64 autograd
  is finite and accurate at logits of +-1e4 and softmax logit gaps of hundreds.

Gamma descriptions used by the tests (``GammaSpec``) are turned into the library argument with
``to_lib_gamma`` and into a dense per-element gamma with ``dense_gamma_*``.

``assert_close`` compares a result with the float64 reference at the tolerance of its dtype (``TOLERANCES``);
``compare_with_reference`` checks a loss and its input gradient against a reference that way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# gamma descriptions
# --------------------------------------------------------------------------------------------


@dataclass
class Table:
    """A GammaTable description: edges (B+1,), values (B,) or (C, B) (float32 tensors)."""

    edges: torch.Tensor
    values: torch.Tensor


def to_lib_gamma(gamma: Any):
    """Turn a test gamma description into what the library accepts."""
    import adaptive_focal

    if isinstance(gamma, Table):
        return adaptive_focal.GammaTable(gamma.edges.clone(), gamma.values.clone())
    if isinstance(gamma, torch.Tensor):
        return gamma.clone()
    return gamma


def _bin_index(pt: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """bin b with edges[b] <= pt < edges[b+1], last bin closed."""
    e = edges.to(torch.float64)
    b = torch.bucketize(pt.detach().to(torch.float64), e, right=True) - 1
    return b.clamp(0, e.numel() - 2)


def _class_index_like(x: torch.Tensor) -> torch.Tensor:
    """Tensor of the class index (index along dim 1) with x's shape (zeros for 1-D)."""
    if x.dim() == 1:
        return torch.zeros(x.shape, dtype=torch.long)
    C = x.shape[1]
    shape = [1] * x.dim()
    shape[1] = C
    return torch.arange(C).view(shape).expand(x.shape)


def dense_gamma(gamma: Any, x: torch.Tensor, pt: torch.Tensor) -> torch.Tensor:
    """Per-element / per-class-term float64 gamma with x's shape.

    ``pt`` is the (detached) p_t of each element / class term (used for a Table)."""
    if isinstance(gamma, Table):
        b = _bin_index(pt, gamma.edges)
        vals = gamma.values.to(torch.float64)
        if vals.dim() == 1:
            return vals[b]
        cls = _class_index_like(x)
        return vals[cls, b]
    if isinstance(gamma, torch.Tensor):
        g = gamma.to(torch.float64)
        if g.dim() == 1 and x.dim() >= 2 and g.numel() == x.shape[1]:
            shape = [1] * x.dim()
            shape[1] = -1
            g = g.view(shape)
        return g.expand(x.shape)
    return torch.full(x.shape, float(gamma), dtype=torch.float64)


def _modulator(one_minus_pt: torch.Tensor, pt: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    base = torch.where(g >= 0, one_minus_pt, 1 + pt)
    return base ** g.abs()


def _along_dim1(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[1] = -1
    return v.to(torch.float64).view(shape)


# --------------------------------------------------------------------------------------------
# sigmoid
# --------------------------------------------------------------------------------------------


def _sigmoid_common(x, target, ignore_index, label_smoothing):
    t_raw = target.to(torch.float64)
    if ignore_index is None:
        valid = torch.ones(t_raw.shape, dtype=torch.bool)
    else:
        valid = t_raw != float(ignore_index)
    t = torch.where(valid, t_raw, torch.zeros_like(t_raw))
    ts = t * (1 - label_smoothing) + label_smoothing / 2
    return t_raw, valid, ts


def _sigmoid_alpha(alpha, x, ts):
    if alpha is None:
        return None
    if isinstance(alpha, torch.Tensor):
        a = _along_dim1(alpha, x) if x.dim() >= 2 else alpha.to(torch.float64)
    else:
        a = torch.tensor(float(alpha), dtype=torch.float64)
    return a * ts + (1 - a) * (1 - ts)


def _reduce_sigmoid(elem, valid, t_raw, reduction):
    elem = torch.where(valid, elem, torch.zeros_like(elem))
    if reduction == "none":
        return elem
    s = elem.sum()
    if reduction == "sum":
        return s
    if reduction == "mean":
        n = int(valid.sum())
        return s / n if n > 0 else s * 0
    if reduction == "positives":
        npos = int(((t_raw >= 0.5) & valid).sum())
        return s / max(1, npos)
    raise AssertionError(reduction)


def ref_sigmoid(x, target, gamma=2.0, alpha=None, weight=None, reduction="mean",
                label_smoothing=0.0, ignore_index=None, detach_modulator=False):
    """Literal formula, float64, plain autograd.  ``x`` may require grad (any float dtype)."""
    x64 = x.to(torch.float64)
    t_raw, valid, ts = _sigmoid_common(x64, target, ignore_index, label_smoothing)
    p = torch.sigmoid(x64)
    pt = p * ts + (1 - p) * (1 - ts)
    g = dense_gamma(gamma, x64, pt.detach())
    mod = _modulator(1 - pt, pt, g)
    if detach_modulator:
        mod = mod.detach()
    bce = -(ts * torch.log(p) + (1 - ts) * torch.log(1 - p))
    elem = mod * bce
    a = _sigmoid_alpha(alpha, x64, ts)
    if a is not None:
        elem = a * elem
    if weight is not None:
        elem = elem * weight.to(torch.float64)
    return _reduce_sigmoid(elem, valid, t_raw, reduction)


def stable_ref_sigmoid(x, target, gamma=2.0, alpha=None, weight=None, reduction="mean",
                       label_smoothing=0.0, ignore_index=None, detach_modulator=False):
    """Same contract in log space: finite float64 autograd at |x| ~ 1e4."""
    x64 = x.to(torch.float64)
    t_raw, valid, ts = _sigmoid_common(x64, target, ignore_index, label_smoothing)
    ls_p = F.logsigmoid(x64)      # log p
    ls_m = F.logsigmoid(-x64)     # log (1 - p)
    # log(1 - p_t) = log(ts * (1-p) + (1-ts) * p) ;  log(p_t) = log(ts * p + (1-ts) * (1-p))
    with torch.no_grad():
        lt = torch.log(ts)
        l1t = torch.log1p(-ts)
    log_q = torch.logaddexp(lt + ls_m, l1t + ls_p)
    log_pt = torch.logaddexp(lt + ls_p, l1t + ls_m)
    pt = log_pt.exp()
    g = dense_gamma(gamma, x64, pt.detach())
    # gamma >= 0: exp(g * log q) ; gamma < 0: (1 + pt) ** |g|
    pos = torch.exp(g.clamp_min(0) * log_q)
    neg = (1 + pt) ** (-g).clamp_min(0)
    mod = torch.where(g >= 0, pos, neg)
    if detach_modulator:
        mod = mod.detach()
    bce = -(ts * ls_p + (1 - ts) * ls_m)
    elem = mod * bce
    a = _sigmoid_alpha(alpha, x64, ts)
    if a is not None:
        elem = a * elem
    if weight is not None:
        elem = elem * weight.to(torch.float64)
    return _reduce_sigmoid(elem, valid, t_raw, reduction)


def sigmoid_limit(sign: float, t: float, gamma: float, alpha, ls: float):
    """(loss, d loss / dx) of one element as its logit tends to sign * inf.

    With t' = t (1 - ls) + ls / 2: at +inf p = 1, p_t = t', 1 - p_t = 1 - t'; at -inf p = 0, p_t = 1 - t'. The
    factor m is (1 - p_t)**gamma (gamma >= 0) or (1 + p_t)**-gamma; the gradient A m (p - t') (A = alpha_t), since
    the modulator's own derivative p (1 - p) / (1 - p_t) * BCE tends to 0; the loss A m BCE is 0 where BCE -> 0
    (t' equal to p) or A m = 0, else it grows without bound."""
    ts = t * (1 - ls) + ls / 2
    p = 1.0 if sign > 0 else 0.0
    p_t = p * ts + (1 - p) * (1 - ts)
    m = (1 - p_t) ** gamma if gamma >= 0 else (1 + p_t) ** -gamma
    a = 1.0 if alpha is None else alpha * ts + (1 - alpha) * (1 - ts)
    grad = a * m * (p - ts)
    loss = 0.0 if (ts == p or a * m == 0) else math.inf
    return loss, grad


# --------------------------------------------------------------------------------------------
# softmax
# --------------------------------------------------------------------------------------------


def _softmax_targets(x64, target, label_smoothing, ignore_index):
    C = x64.shape[1]
    if target.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        prob = False
        tgt = target.long()
        if ignore_index is None:
            valid = torch.ones(tgt.shape, dtype=torch.bool)
        else:
            valid = tgt != ignore_index
        tsafe = torch.where(valid, tgt, torch.zeros_like(tgt))
        y = F.one_hot(tsafe, C).movedim(-1, 1).to(torch.float64)
    else:
        prob = True
        y = target.to(torch.float64)
        valid = torch.ones(y.shape[:1] + y.shape[2:], dtype=torch.bool)
        tsafe = None
    y = (1 - label_smoothing) * y + label_smoothing / C
    return prob, valid, tsafe, y


def _reduce_softmax(per_sample, valid, prob, tsafe, weight, reduction):
    per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
    if reduction == "none":
        return per_sample
    s = per_sample.sum()
    if reduction == "sum":
        return s
    if reduction == "mean":
        if prob:
            n = per_sample.numel()
            return s / n if n > 0 else s * 0
        if weight is None:
            d = float(valid.sum())
        else:
            d = float(weight.to(torch.float64)[tsafe][valid].sum())
        return s / d if d != 0 else s * 0
    raise AssertionError(reduction)


def ref_softmax(x, target, gamma=2.0, alpha=None, weight=None, reduction="mean",
                label_smoothing=0.0, ignore_index=-100, detach_modulator=False):
    x64 = x.to(torch.float64)
    prob, valid, tsafe, y = _softmax_targets(x64, target, label_smoothing, ignore_index)
    q = torch.softmax(x64, dim=1)
    g = dense_gamma(gamma, x64, q.detach())
    mod = _modulator(1 - q, q, g)
    if detach_modulator:
        mod = mod.detach()
    term = y * mod * (-torch.log(q))
    if alpha is not None:
        term = term * _along_dim1(alpha, x64)
    if weight is not None:
        term = term * _along_dim1(weight, x64)
    return _reduce_softmax(term.sum(1), valid, prob, tsafe, weight, reduction)


def stable_ref_softmax(x, target, gamma=2.0, alpha=None, weight=None, reduction="mean",
                       label_smoothing=0.0, ignore_index=-100, detach_modulator=False):
    x64 = x.to(torch.float64)
    C = x64.shape[1]
    prob, valid, tsafe, y = _softmax_targets(x64, target, label_smoothing, ignore_index)
    logq = torch.log_softmax(x64, dim=1)
    q = logq.exp()
    # log(1 - q_c) = logsumexp_{j != c} x_j - logsumexp_j x_j
    xe = x64.unsqueeze(2).expand(*x64.shape[:2], C, *x64.shape[2:])  # (N, Cj, Cc, ...)
    eye = torch.eye(C, dtype=torch.bool).view(C, C, *([1] * (x64.dim() - 2)))
    xm = xe.masked_fill(eye.unsqueeze(0), float("-inf"))
    log1mq = torch.logsumexp(xm, dim=1) - torch.logsumexp(x64, dim=1, keepdim=True)
    g = dense_gamma(gamma, x64, q.detach())
    pos = torch.exp(g.clamp_min(0) * log1mq)
    neg = (1 + q) ** (-g).clamp_min(0)
    mod = torch.where(g >= 0, pos, neg)
    if detach_modulator:
        mod = mod.detach()
    term = y * mod * (-logq)
    if alpha is not None:
        term = term * _along_dim1(alpha, x64)
    if weight is not None:
        term = term * _along_dim1(weight, x64)
    return _reduce_softmax(term.sum(1), valid, prob, tsafe, weight, reduction)


# --------------------------------------------------------------------------------------------
# helpers: loss + gradient
# --------------------------------------------------------------------------------------------


def upstream_like(loss: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Deterministic upstream gradient for a 'none' reduction (so every element is weighted)."""
    if loss.dim() == 0:
        return torch.ones((), dtype=torch.float64)
    return torch.rand(loss.shape, generator=gen, dtype=torch.float64) + 0.5


def value_and_grad(fn, x: torch.Tensor, *args, upstream=None, **kwargs):
    """Call fn(x_leaf, *args, **kwargs); return (loss detached, grad w.r.t. x).

    For a non-scalar loss the gradient is of (loss * upstream).sum()."""
    xl = x.detach().clone().requires_grad_(True)
    out = fn(xl, *args, **kwargs)
    loss = out[0] if isinstance(out, tuple) else out
    if loss.dim() == 0:
        loss.backward()
    else:
        u = upstream if upstream is not None else torch.ones(loss.shape, dtype=torch.float64)
        (loss * u.to(loss.dtype)).sum().backward()
    g = xl.grad if xl.grad is not None else torch.zeros_like(xl)
    return loss.detach(), g


def pt_sigmoid(x, target, label_smoothing=0.0, ignore_index=None):
    x64 = x.detach().to(torch.float64)
    _, _, ts = _sigmoid_common(x64, target, ignore_index, label_smoothing)
    p = torch.sigmoid(x64)
    return p * ts + (1 - p) * (1 - ts)


def confidence_sigmoid(x):
    """max(p, 1 - p) of each element, in float64: its confidence as a binary prediction."""
    p = torch.sigmoid(x.detach().to(torch.float64))
    return torch.maximum(p, 1 - p)


def far_from_edges_sigmoid(make_x, make_t, edges, label_smoothing=0.0, ignore_index=None,
                           margin=2e-3, max_iter=200):
    """Draw x (and t) until every non-ignored element's p_t and confidence max(p, 1 - p) are >= margin from every
    interior edge.

    make_x(n_mask) / make_t(mask) give fresh draws for the elements in ``mask``."""
    x = make_x(None)
    t = make_t(None)
    inner = edges.to(torch.float64)[1:-1]
    for _ in range(max_iter):
        values = torch.stack([pt_sigmoid(x, t, label_smoothing, ignore_index), confidence_sigmoid(x)], -1)
        d = (values.unsqueeze(-1) - inner).abs().amin((-2, -1)) if inner.numel() else torch.ones_like(values[..., 0])
        bad = d < margin
        if ignore_index is not None:
            bad &= t != ignore_index
        if not bool(bad.any()):
            return x, t
        x = torch.where(bad, make_x(bad), x)
        newt = make_t(bad)
        t = torch.where(bad, newt, t)
    raise RuntimeError("could not draw data far from the edges")


def far_from_edges_softmax(x, edges, margin=2e-3, gen=None, scale=2.0, max_iter=200):
    """Redraw whole samples (rows along dim 1) until every q_c is >= margin from interior edges."""
    inner = edges.to(torch.float64)[1:-1]
    for _ in range(max_iter):
        q = torch.softmax(x.detach().to(torch.float64), dim=1)
        d = (q.unsqueeze(-1) - inner).abs().min(-1).values
        bad = (d < margin).any(dim=1, keepdim=True).expand_as(x)
        if not bool(bad.any()):
            return x
        fresh = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype) * scale
        x = torch.where(bad, fresh, x)
    raise RuntimeError("could not draw data far from the edges")


# --------------------------------------------------------------------------------------------
# comparing the library against the reference
# --------------------------------------------------------------------------------------------

# per-dtype tolerances for comparing the library against a float64 reference
TOLERANCES = {
    # atol is relative to the largest |expected| of the compared tensor (see assert_close)
    torch.float64: dict(rtol=1e-7, atol=1e-9),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    # float16 gradients below 6e-5 are subnormal: allow one subnormal ulp (2**-24) absolute
    torch.float16: dict(rtol=4e-3, atol=2e-3, floor=2.0 ** -24),
    torch.bfloat16: dict(rtol=3e-2, atol=2e-2),
}


def tol(dtype):
    t = dict(TOLERANCES[dtype])
    t.setdefault("floor", 0.0)
    return t


def assert_close(actual, expected, dtype, scale_atol=True, msg=""):
    """Compare ``actual`` with the float64 ``expected`` at the tolerance of ``dtype``.

    With scale_atol the absolute tolerance is relative to the largest |expected| (gradients of a
    mean over many elements are tiny, and elementwise cancellation errors scale with the largest
    terms)."""
    t = tol(dtype)
    exp = expected.detach().to(torch.float64)
    act = actual.detach().to(torch.float64)
    assert act.shape == exp.shape, f"{msg} shape {tuple(act.shape)} != {tuple(exp.shape)}"
    atol = t["atol"]
    if scale_atol:
        m = float(exp.abs().max()) if exp.numel() else 0.0
        atol = max(atol * m, t["floor"], 1e-30)
    torch.testing.assert_close(act, exp, rtol=t["rtol"], atol=atol, equal_nan=False,
                               msg=(lambda m0: f"{msg}\n{m0}") if msg else None)


def compare_with_reference(lib_call, ref, x, t, g, kw, reduction, dtype, gen, detach=False):
    """Loss and input gradient of the library against a float64 reference, under the same random upstream
    gradient; checks shapes, dtypes (float32 loss for half inputs, input-dtype gradient) and finiteness."""
    extra = {"detach_modulator": True} if detach else {}
    ref_loss0, _ = value_and_grad(lambda xx: ref(xx, t, g, reduction=reduction, **kw), x.double())
    up = upstream_like(ref_loss0, gen)
    ref_loss, ref_grad = value_and_grad(
        lambda xx: ref(xx, t, g, reduction=reduction, detach_modulator=detach, **kw), x.double(), upstream=up)
    loss, grad = value_and_grad(lambda xx: lib_call(xx, t, g, kw, reduction, **extra), x, upstream=up)
    assert loss.shape == ref_loss.shape
    assert loss.dtype == (torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype)
    assert grad.dtype == x.dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_close(loss, ref_loss, dtype, msg="loss")
    assert_close(grad, ref_grad, dtype, msg="grad")
    return loss, grad
