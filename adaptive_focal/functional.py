"""Focal loss functions: one exact semantics for sigmoid (binary / multi-label) and softmax (multi-class).

Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017): ``FL(p_t) = -alpha_t (1 - p_t)**gamma log(p_t)``.

Both functions validate their arguments, bring gamma / alpha / weight into a canonical form, and then compute the
loss, its gradient and (optionally) the batch statistics in one pass:

* sigmoid, large float inputs on CPU or CUDA: the fused kernel behind the custom op
  ``torch.ops.adaptive_focal.sigmoid_focal`` (see :mod:`adaptive_focal._kernels`);
* otherwise the pure-PyTorch implementation in this module, which is also the tests' reference. It is written in
  log space (the modulating factor is ``exp(gamma * log(1 - p_t))`` with ``log(1 - p_t)`` from ``logsigmoid`` /
  ``log_softmax``), so its autograd gradients stay finite at saturated logits for every gamma >= 0, where the
  textbook ``(1 - p_t)**gamma`` gives ``0 * inf = NaN`` for 0 < gamma < 1. On the CPU the statistics of smaller
  float32 inputs (every training step asks for them) come from one pass of the compiled library once it is built
  on the machine; the loss itself does not.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F

from . import _kernels
from .gamma_forms import AsymmetricGamma, FocalMixture
from .stats import BatchStats, check_bins, default_edges
from .table import GammaTable

__all__ = ["sigmoid_focal_loss", "softmax_focal_loss"]

_SIGMOID_REDUCTIONS = ("none", "mean", "sum", "positives")
_SOFTMAX_REDUCTIONS = ("none", "mean", "sum")

# gamma kinds, shared with the kernel contract
_SCALAR, _PER_CLASS, _FULL, _TABLE = 0, 1, 2, 3


# ---------------------------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------------------------
def _check_values() -> bool:
    """Whether value checks (which read tensor data) may run: not while tracing for torch.compile."""
    return not torch.compiler.is_compiling()


def _on_host(t: torch.Tensor) -> bool:
    # Reading a CPU tensor's values costs no device synchronisation; on accelerators value checks are skipped so
    # a training step never waits for the device (out-of-range class indices still fail inside torch's gather).
    return t.device.type == "cpu" and _check_values()


def _check_input(input) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor of logits, got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(
            f"input must be a floating-point tensor of logits (float16, bfloat16, float32 or float64), "
            f"got dtype {input.dtype}"
        )


def _check_reduction(reduction, allowed, mode: str) -> None:
    if reduction not in allowed:
        hint = " ('positives' is for sigmoid_focal_loss only)" if reduction == "positives" else ""
        raise ValueError(
            f"reduction must be one of {', '.join(repr(r) for r in allowed)} for {mode}{hint}, got {reduction!r}"
        )


def _check_label_smoothing(label_smoothing) -> float:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, Real) or not (
        0.0 <= float(label_smoothing) < 1.0
    ):
        raise ValueError(f"label_smoothing must be a float in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def _compute_dtype(input: torch.Tensor) -> torch.dtype:
    # half precision is computed in float32 so that easy examples' small losses do not underflow
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def _as_class_vector(value, name: str, num_classes: int, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(value, device=device)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)) or t.dim() != 1 or t.numel() != num_classes:
        raise ValueError(
            f"{name} must be a 1-D tensor of length C = {num_classes} (one value per class along dim 1), "
            f"got shape {tuple(t.shape)} and dtype {t.dtype}"
        )
    return t.to(dtype)


def _resolve_alpha(alpha, num_classes: int, device, dtype, mode: str, has_class_dim: bool):
    if alpha is None:
        return None
    if isinstance(alpha, Real) and not isinstance(alpha, bool) or (
        isinstance(alpha, torch.Tensor) and alpha.dim() == 0
    ):
        if mode == "softmax":
            raise ValueError(
                "alpha must be None or a (C,) tensor of per-class weights for softmax_focal_loss, got the scalar "
                f"{float(alpha)!r}: a scalar alpha is ambiguous with softmax (RetinaNet's alpha weighs positives "
                "against negatives of a sigmoid); pass one weight per class"
            )
        value = float(alpha)
        if not (0.0 <= value <= 1.0):
            raise ValueError(f"alpha must be in [0, 1], got {value!r}")
        return torch.full((num_classes,), value, device=device, dtype=dtype)
    if mode == "sigmoid" and not has_class_dim:
        raise ValueError(
            "alpha must be None or a float in [0, 1] for a 1-D input (it has no class dimension), "
            f"got a tensor of shape {tuple(torch.as_tensor(alpha).shape)}"
        )
    t = _as_class_vector(alpha, "alpha", num_classes, device, dtype)
    if _on_host(t) and not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError(f"alpha must have every value in [0, 1], got {t.tolist()}")
    return t


@dataclass
class _Gamma:
    kind: int
    value: torch.Tensor  # scalar (), per class (C,), full (input shape), or table values (C, B)
    table: GammaTable | None = None
    #: every value is >= 0 (so the inverse focal branch can be skipped); False when unknown without a sync
    nonneg: bool = False


def _nonneg(values: torch.Tensor) -> bool:
    return _on_host(values) and not values.requires_grad and bool((values >= 0).all())


def _resolve_gamma(gamma, input: torch.Tensor, mode: str, dtype, known_nonneg: bool = False) -> _Gamma:
    """Brings every accepted form of gamma into one of the four kinds of the kernel contract.

    ``known_nonneg``: the caller vouches that a tensor gamma is finite and >= 0 (``FocalMixture._known_nonneg``),
    so its values are not read back to check.
    """
    device = input.device
    if isinstance(gamma, GammaTable):
        return _Gamma(_TABLE, gamma.values, gamma, nonneg=_nonneg(gamma.values))
    if isinstance(gamma, Real) and not isinstance(gamma, bool):
        if math.isnan(float(gamma)):
            raise ValueError("gamma must not be NaN, got nan")
        return _Gamma(_SCALAR, torch.tensor(float(gamma), device=device, dtype=dtype), nonneg=float(gamma) >= 0)
    if not isinstance(gamma, torch.Tensor):
        raise TypeError(
            "gamma must be a float, a tensor, a GammaTable, a FocalMixture or an AsymmetricGamma, "
            f"got {type(gamma).__name__}"
        )
    if not gamma.is_floating_point():
        gamma = gamma.to(dtype)
    nonneg = known_nonneg and not gamma.requires_grad  # else unknown without reading the values
    if not nonneg and _on_host(gamma) and gamma.numel():
        # one value for both checks (min propagates NaN); a 0-d gamma is read directly
        low = float(gamma.detach()) if gamma.dim() == 0 else float(gamma.detach().min())
        if low != low:
            raise ValueError(f"gamma must not be NaN, got a tensor of shape {tuple(gamma.shape)} containing NaN")
        nonneg = low >= 0 and not gamma.requires_grad
    g = gamma.to(device=device, dtype=dtype)
    if g.dim() == 0:
        return _Gamma(_SCALAR, g, nonneg=nonneg)
    if input.dim() >= 2 and g.dim() == 1 and g.numel() == input.shape[1]:
        return _Gamma(_PER_CLASS, g, nonneg=nonneg)
    shape = input.shape
    if mode == "softmax" and g.dim() == input.dim() - 1 and input.dim() >= 2:
        g = g.unsqueeze(1)  # per sample: (N, d1, ...) -> (N, 1, d1, ...)
    try:
        full = torch.broadcast_to(g, shape)
    except RuntimeError:
        what = "the input shape" if mode == "sigmoid" else "the input shape (per class term) or (N, 1, d1, ...) (per sample)"
        raise ValueError(
            f"gamma must be a float, a 0-d tensor, a (C,) per-class tensor, a GammaTable, or a tensor broadcastable "
            f"to {what} {tuple(shape)}, got shape {tuple(gamma.shape)}"
        ) from None
    return _Gamma(_FULL, full, nonneg=nonneg)


#: default statistics edges per (bins, device, dtype), each with the version it was made at: every BatchStats of
#: a run shares one tensor, rebuilt if anything changed it in place
_EDGES: dict = {}


def _stat_edges(gamma: _Gamma, stat_bins: int, device, dtype=torch.float32) -> torch.Tensor:
    if gamma.table is not None:
        return gamma.table.edges.to(device=device, dtype=dtype)
    if torch.compiler.is_compiling():
        return default_edges(stat_bins, device=device).to(dtype)
    key = (stat_bins, device, dtype)
    hit = _EDGES.get(key)
    if hit is None or hit[0]._version != hit[1]:
        edges = default_edges(stat_bins, device=device).to(dtype)
        _EDGES[key] = hit = (edges, edges._version)
    return hit[0]


def _check_table(gamma: _Gamma, num_classes: int) -> None:
    if gamma.table is not None and gamma.table.per_class and gamma.value.shape[0] != num_classes:
        raise ValueError(
            f"gamma: a per-class GammaTable needs values of shape (C, B) with C = {num_classes}, "
            f"got {tuple(gamma.value.shape)}"
        )


def _asymmetric(gamma: AsymmetricGamma, input: torch.Tensor, target, num_classes: int, dtype) -> torch.Tensor:
    """An AsymmetricGamma as the per-element gamma it stands for (after the target's shape is known to match)."""
    c = gamma.num_classes
    if c is not None and (input.dim() < 2 or c != num_classes):
        where = "a 1-D input has no class dimension" if input.dim() < 2 else f"the input has C = {num_classes}"
        raise ValueError(f"gamma: AsymmetricGamma with per-class values of length {c} does not fit: {where}")
    if not isinstance(target, torch.Tensor) or target.shape != input.shape:
        return gamma.positive  # let the usual target checks report the problem
    return gamma.expand(target.to(input.device), dtype)


#: BatchStats fields that depend on the loss value (the rest depend only on the logits and targets)
_LOSS_FIELDS = ("sum_loss", "class_sum_grad_pos", "class_sum_grad_neg")


def _check_mixture(mix: FocalMixture, mode: str, input: torch.Tensor) -> int | None:
    """Checks that a FocalMixture fits the input; returns its number of classes (None when not per class)."""
    c = mix.num_classes
    if c is not None:
        has_class_dim = input.dim() >= 2 or mode == "softmax"
        num_classes = (input.shape[1] if input.dim() >= 2 else input.shape[0]) if has_class_dim else None
        if num_classes != c:
            where = "a 1-D input has no class dimension" if num_classes is None else f"the input has C = {num_classes}"
            raise ValueError(f"gamma: FocalMixture with per-class gammas or weights of length {c} does not fit: {where}")
    if mode == "softmax" and mix.weights.dim() == 2:
        raise ValueError(
            "gamma: a FocalMixture with per-class weights is for sigmoid_focal_loss (its weights scale each "
            "class's elements); for softmax_focal_loss give scalar weights of shape (K,) and per-class factors "
            f"through alpha, got weights of shape {tuple(mix.weights.shape)}"
        )
    return c


def _with_class_weight(weight, class_weight: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """The element weight times a (C,) per-class factor along the input's dim 1."""
    class_w = class_weight.view((1, class_weight.numel()) + (1,) * (input.dim() - 2))
    return class_w if weight is None else torch.as_tensor(weight, device=input.device) * class_w


def _mixture(fn, mode: str, input, target, mix: FocalMixture, alpha, weight, kwargs: dict):
    """The sigmoid loss with a FocalMixture gamma of several terms (or scalar weights): the weighted sum of the
    losses with each term's gamma (softmax_focal_loss sums its terms inside its one pass).

    A scalar weight scales a term's loss; a per-class weight (sigmoid only) multiplies the element weight, which
    leaves the reduction's denominator alone. Statistics are those of the first term with the loss-dependent sums added
    over the terms (the gradient sums add magnitudes, exact whenever the terms' gradients share a sign, as they
    do for hard targets).
    """
    _check_mixture(mix, mode, input)
    return_stats = kwargs["return_stats"]
    total, stats = None, None
    for k in range(mix.num_terms):
        w_k = mix.weights[k]
        term_weight, scale = weight, None
        if w_k.dim() == 0:
            scale = w_k
        else:  # sigmoid, per class along dim 1
            term_weight = _with_class_weight(weight, w_k, input)
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


def _histogram(values: torch.Tensor, edges: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-bin sum of ``weights`` (no host synchronisation: scatter_add rather than bincount)."""
    idx = torch.bucketize(values.detach().reshape(-1), edges[1:-1].to(values.dtype), right=True)
    out = torch.zeros(edges.numel() - 1, device=values.device, dtype=weights.dtype)
    return out.scatter_add_(0, idx, weights.reshape(-1))


def _reduce(total, per_item, denom, reduction, out_dtype):
    if reduction == "none":
        return per_item.to(out_dtype)
    if reduction == "sum":
        return total.to(out_dtype)
    # mean / positives: an empty or fully ignored input gives 0 (never 0 / 0)
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return (total / safe).to(out_dtype)


# ---------------------------------------------------------------------------------------------------------------
# sigmoid
# ---------------------------------------------------------------------------------------------------------------
def sigmoid_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    gamma=2.0,
    alpha=None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    ignore_index: float | None = None,
    return_stats: bool = False,
    *,
    detach_modulator: bool = False,
    stat_bins: int = 15,
):
    """Sigmoid focal loss for binary and multi-label classification (Lin et al., 2017).

    The element loss is ``alpha_t * (1 - p_t)**gamma * BCE(x, t)`` with ``p = sigmoid(x)``,
    ``p_t = p t + (1 - p)(1 - t)`` and ``alpha_t = alpha t + (1 - alpha)(1 - t)``, for hard or soft targets.
    With ``gamma = 0`` and ``alpha = None`` it equals :func:`torch.nn.functional.binary_cross_entropy_with_logits`.

    Args:
        input: logits of any shape; dim 1 is the class dimension when the input has two or more dims.
        target: same shape; hard labels {0, 1} or soft targets in [0, 1] (not differentiated).
        gamma: focusing parameter: a float, a 0-d tensor, a (C,) per-class tensor (along dim 1), a tensor
            broadcastable to the input (per element), or a :class:`GammaTable`. A negative gamma selects the inverse
            focal factor ``(1 + p_t)**|gamma|`` (as AdaFocal uses it).
        alpha: None (no weighting), a float in [0, 1] weighing positives against negatives, or a (C,) tensor of
            per-class alphas along dim 1.
        weight: element weights broadcastable to the input, as in ``binary_cross_entropy_with_logits`` (the mean
            still divides by the number of elements).
        reduction: ``"none"`` (element losses; ignored elements are 0), ``"mean"`` (over non-ignored elements),
            ``"sum"``, or ``"positives"``: the sum divided by ``max(1, number of non-ignored targets >= 0.5)``,
            RetinaNet's normalisation.
        label_smoothing: in [0, 1); targets become ``t (1 - ls) + ls / 2``.
        ignore_index: elements whose target equals it are left out of the loss and of the mean's count.
        return_stats: also return the batch's :class:`BatchStats`.
        detach_modulator: keep the modulating factor out of the gradient (as ASL and EFL do); by default the
            gradient is that of the paper formula.
        stat_bins: number of equal-width p_t bins of the statistics (the table's bins for a GammaTable gamma).

    Returns:
        The loss (float32 for half-precision inputs), and with ``return_stats`` a ``(loss, stats)`` pair.

    Example:
        >>> import torch
        >>> from adaptive_focal import sigmoid_focal_loss
        >>> logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
        >>> target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> round(sigmoid_focal_loss(logits, target, gamma=2.0, alpha=0.25).item(), 6)
        0.075133
    """
    _check_input(input)
    if isinstance(gamma, FocalMixture):
        _check_mixture(gamma, "sigmoid", input)
        term = gamma._per_class_term()
        if term is None:
            return _mixture(sigmoid_focal_loss, "sigmoid", input, target, gamma, alpha, weight, dict(
                reduction=reduction, label_smoothing=label_smoothing, ignore_index=ignore_index,
                return_stats=return_stats, detach_modulator=detach_modulator, stat_bins=stat_bins))
        # one term with per-class weights (EFL's form): its gamma, and its weights folded into the element weight
        gamma, class_weight, known_nonneg = term
        weight = _with_class_weight(weight, class_weight, input)
    else:
        known_nonneg = False
    _check_reduction(reduction, _SIGMOID_REDUCTIONS, "sigmoid_focal_loss")
    ls = _check_label_smoothing(label_smoothing)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.shape != input.shape:
        raise ValueError(
            f"target must have the same shape as input {tuple(input.shape)}, got {tuple(target.shape)}"
        )
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, Real)):
        raise ValueError(f"ignore_index must be None or a number, got {ignore_index!r}")
    dtype = _compute_dtype(input)
    device = input.device
    has_class_dim = input.dim() >= 2
    num_classes = input.shape[1] if has_class_dim else 1
    if isinstance(gamma, AsymmetricGamma):
        gamma = _asymmetric(gamma, input, target, num_classes, dtype)
    g = _resolve_gamma(gamma, input, "sigmoid", dtype, known_nonneg)
    _check_table(g, num_classes)
    a = _resolve_alpha(alpha, num_classes, device, dtype, "sigmoid", has_class_dim)
    w = None
    if weight is not None:
        if not isinstance(weight, torch.Tensor):
            weight = torch.as_tensor(weight, device=device)
        try:
            w = torch.broadcast_to(weight.to(device=device, dtype=dtype), input.shape)
        except RuntimeError:
            raise ValueError(
                f"weight must be broadcastable to the input shape {tuple(input.shape)}, got {tuple(weight.shape)}"
            ) from None
    t = target.detach().to(dtype)
    if _on_host(t) and t.numel():
        lo, hi = torch.aminmax(t)
        if lo < 0 or hi > 1:
            bad = (t < 0) | (t > 1)
            if ignore_index is not None:
                bad &= t != ignore_index
            if bool(bad.any()):
                raise ValueError(
                    "target must hold values in [0, 1] (hard labels or soft targets)"
                    + (f" or ignore_index={ignore_index}" if ignore_index is not None else "")
                    + f", got values such as {t[bad][0].item()!r}"
                )
    check_bins(stat_bins)

    # canonical view (N, C, S)
    if input.dim() == 0:
        shape3 = (1, 1, 1)
    elif input.dim() == 1:
        shape3 = (input.shape[0], 1, 1)
    else:
        shape3 = (input.shape[0], input.shape[1], math.prod(input.shape[2:]))
    gval = g.value.reshape(shape3) if g.kind == _FULL else g.value
    if g.kind == _TABLE:
        gval = gval if g.table.per_class else gval.unsqueeze(0).expand(num_classes, -1)
    wval = None if w is None else w.reshape(shape3)

    differentiable_args = any(
        isinstance(v, torch.Tensor) and v.requires_grad for v in (gval, a, wval)
    )
    use_kernel = (
        dtype == torch.float32
        and input.numel() >= _kernels.MIN_NUMEL
        and not differentiable_args
        and _kernels.kernel_available(device.type)
    )
    need_elem = reduction == "none"
    edges = _stat_edges(g, stat_bins, device) if (use_kernel or return_stats) else None
    if use_kernel:
        x3 = input.reshape(shape3).to(torch.float32).contiguous()
        elem, acc, _ = torch.ops.adaptive_focal.sigmoid_focal(
            x3, t.reshape(shape3).contiguous(), gval.to(torch.float32).contiguous(), g.kind,
            None if g.table is None else g.table.edges.to(device=device, dtype=torch.float32),
            None if a is None else a.to(torch.float32).contiguous(),
            None if wval is None else wval.to(torch.float32).contiguous(),
            None if ignore_index is None else float(ignore_index),
            ls, bool(detach_modulator), edges.contiguous(), need_elem, bool(return_stats),
        )
        total, count, n_pos = acc[0], acc[1], acc[2]
        per_item = elem.view(input.shape) if need_elem else None
        stats = _stats_from_acc(acc.detach(), edges, num_classes) if return_stats else None
    else:
        stats_pass = return_stats and _sigmoid_stats_kernel_fits(input, dtype, differentiable_args)
        elem, stats = _sigmoid_reference(
            input.reshape(shape3).to(dtype), t.reshape(shape3), g, gval, a, wval,
            ignore_index, ls, bool(detach_modulator), edges, bool(return_stats) and not stats_pass,
        )
        total, per_item = elem.sum(), elem.view(input.shape)
        if stats_pass:  # the statistics in one C pass instead of about sixty small tensor operations
            with torch.no_grad():  # float32 compute on the CPU (_sigmoid_stats_kernel_fits); half inputs converted
                gval = gval.contiguous()
                acc = _kernels.cpu.sigmoid_focal_stats(  # a scratch buffer, converted by _stats_from_acc below
                    input.reshape(shape3).to(torch.float32).contiguous(), t.reshape(shape3).contiguous(),
                    gval, g.kind,
                    None if g.table is None else g.table.edges.to(torch.float32),
                    None if a is None else a.contiguous(), None if wval is None else wval.contiguous(),
                    None if ignore_index is None else float(ignore_index),
                    ls, bool(detach_modulator), edges.contiguous(),
                    False if g.nonneg else bool((gval < 0).any()),  # known non-negative: no need to read it
                )
            # the loss itself stays the PyTorch formulation's (return_stats never changes it), and so does its sum
            stats = _stats_from_acc(acc, edges, num_classes, sum_loss=total.detach().to(torch.float32))
        positive = t >= 0.5
        if ignore_index is None:
            count = elem.numel()
        else:
            valid = t != ignore_index
            count, positive = valid.sum(), positive & valid
        n_pos = positive.sum()
    denom = n_pos if reduction == "positives" else count
    if reduction in ("mean", "positives"):
        denom = torch.as_tensor(denom, device=device).to(total.dtype)
    loss = _reduce(total, per_item, denom, reduction, dtype)
    return (loss, stats) if return_stats else loss


def _sigmoid_stats_kernel_fits(input: torch.Tensor, dtype, differentiable_args: bool) -> bool:
    """Whether the statistics of an input below the kernel's size take the C pass: float32 on the CPU, and only
    once the library is built on the machine (small inputs never pay a build)."""
    return (dtype == torch.float32 and not differentiable_args and input.device.type == "cpu"
            and 0 < input.numel() < _kernels.cpu.SCRATCH_NUMEL and _kernels.cpu.ready()
            and not torch.compiler.is_compiling())


def _stats_from_acc(acc: torch.Tensor, edges: torch.Tensor, num_classes: int,
                    sum_loss: torch.Tensor | None = None) -> BatchStats:
    # layout: _kernels/__init__.py; the int64 and float32 fields are converted in one operation each
    b, c = edges.numel() - 1, num_classes
    f32 = torch.float32
    ints = acc[:5 + b + c].to(torch.int64)
    floats = acc.to(f32)
    return BatchStats(
        edges=edges,
        count=ints[1],
        n_pos=ints[2],
        sum_pt=floats[3],
        sum_loss=floats[0] if sum_loss is None else sum_loss,
        sum_grad_norm=floats[4],
        pt_hist=ints[5:5 + b],
        class_count=ints[5 + b:5 + b + c],
        class_sum_pt=floats[5 + b + c:5 + b + 2 * c],
        sum_pt_pos=floats[5 + b + 2 * c],
        class_sum_grad_pos=floats[6 + b + 2 * c:6 + b + 3 * c],
        class_sum_grad_neg=floats[6 + b + 3 * c:6 + b + 4 * c],
    )


def _modulator(log_base_pos: torch.Tensor, log_base_neg_fn, gamma: torch.Tensor, inverse: bool) -> torch.Tensor:
    """``(1 - p_t)**gamma`` for gamma >= 0 and ``(1 + p_t)**|gamma|`` for gamma < 0, from logarithms.

    Written as a product of two exponentials, one of which is exp(0) = 1 for each element, rather than a
    ``torch.where``: both factors are finite, so no masked branch can put ``0 * inf`` into the gradient.
    """
    m = torch.exp(gamma.clamp_min(0) * log_base_pos)
    if inverse:  # False only when gamma is known to be >= 0 (_Gamma.nonneg)
        m = m * torch.exp((-gamma).clamp_min(0) * log_base_neg_fn())
    return m


def _sigmoid_reference(x, t, g: _Gamma, gval, alpha, weight, ignore_index, ls, detach, edges, need_stats):
    """Element losses (N, C, S) by plain autograd on a log-space formula, and the statistics."""
    n, c, s = x.shape
    valid = None
    if ignore_index is not None:
        valid = t != ignore_index
        t = torch.where(valid, t, torch.zeros_like(t))
    ts = t * (1.0 - ls) + 0.5 * ls if ls else t
    ce = F.binary_cross_entropy_with_logits(x, ts, reduction="none")
    log_p, log_pm = F.logsigmoid(x), F.logsigmoid(-x)
    # log(1 - p_t) = log(t' (1 - p) + (1 - t') p), finite for finite logits (>= about -|x|)
    log_q = torch.logaddexp(torch.log(ts) + log_pm, torch.log1p(-ts) + log_p)
    with torch.no_grad():
        p = torch.sigmoid(x)
        p_t = p * ts + (1.0 - p) * (1.0 - ts)
    if g.kind == _SCALAR:
        gam = gval
    elif g.kind == _PER_CLASS:
        gam = gval.view(1, c, 1)
    elif g.kind == _FULL:
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
    if valid is not None:
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    stats = None
    if need_stats:
        with torch.no_grad():
            v = torch.ones_like(p_t) if valid is None else valid.to(p_t.dtype)
            pos = (t >= 0.5).to(v.dtype) * v
            f32 = torch.float32
            # |dl/dx| per element (0 where ignored), split by the raw target
            grad = _sigmoid_elem_grad(p, p_t, ts, ce, log_p, log_pm, log_q, m, gam, g.nonneg, detach, alpha_t,
                                      weight).abs() * v
            # seven per-element quantities summed per class in one reduction (this runs every training step);
            # float64 sums keep the counts exact however many elements a batch has
            per_class = torch.stack([v, pos, p_t * v, p_t * pos, (p - ts).abs() * v, grad * t, grad * (1.0 - t)]
                                    ).sum((1, 3), dtype=torch.float64)  # (7, C)
            total = per_class.sum(1)
            ints = torch.cat([total[:2], per_class[0]]).to(torch.int64)  # count, n_pos, then per class
            total, per_class = total.to(f32), per_class.to(f32)
            stats = BatchStats(
                edges=edges,
                count=ints[0],
                n_pos=ints[1],
                sum_pt=total[2],
                sum_loss=loss.detach().sum().to(f32),
                sum_grad_norm=total[4],
                pt_hist=_histogram(p_t, edges, v.to(torch.int64)),
                class_count=ints[2:],
                class_sum_pt=per_class[2],
                sum_pt_pos=total[3],
                class_sum_grad_pos=per_class[5],
                class_sum_grad_neg=per_class[6],
            )
    return loss, stats


def _sigmoid_elem_grad(p, p_t, ts, ce, log_p, log_pm, log_q, m, gam, nonneg, detach, alpha_t, weight):
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


# ---------------------------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------------------------
class _FocalTerm(torch.autograd.Function):
    """``f(l) = m * l`` with ``l = -log q`` and ``m = (1 - q)**gamma`` (``(1 + q)**|gamma|`` for gamma < 0).

    The derivative is written out: ``df/dl = m * (1 + gamma * q * k)`` with ``k = l / (1 - q)`` for gamma >= 0
    (tending to 1 as q -> 1) and ``k = l / (1 + q)`` for gamma < 0. Unlike autograd through ``(1 - q)**gamma``,
    it never forms ``(1 - q)**(gamma - 1)``, so it is finite at q = 1 for every gamma >= 0.
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


def softmax_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    gamma=2.0,
    alpha=None,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    ignore_index: int | None = -100,
    return_stats: bool = False,
    *,
    detach_modulator: bool = False,
    stat_bins: int = 15,
):
    """Softmax focal loss for multi-class classification (Lin et al., 2017; Mukhoti et al., 2020).

    The loss of a sample is ``sum_c w_c * alpha_c * y_c * (1 - q_c)**gamma * (-log q_c)`` with ``q = softmax(x)``
    over dim 1 and ``y`` the one-hot or probability target after label smoothing ``(1 - ls) y + ls / C``.
    With ``gamma = 0`` and ``alpha = None`` it equals :func:`torch.nn.functional.cross_entropy` with the same
    ``weight``, ``ignore_index``, ``label_smoothing`` and ``reduction``, including its weighted mean.

    Args:
        input: logits (N, C) or (N, C, d1, ...), as ``F.cross_entropy`` takes them (or unbatched (C,)).
        target: class indices (N,) / (N, d1, ...) or class probabilities shaped like the input.
        gamma: a float, a 0-d tensor, a (C,) per-class tensor, a tensor broadcastable to the input (per class
            term) or shaped (N, d1, ...) / (N, 1, d1, ...) (per sample), or a :class:`GammaTable` (looked up from
            each term's q_c and class c). A negative gamma selects ``(1 + q)**|gamma|`` (inverse focal).
        alpha: None or a (C,) tensor of per-class weights (a float is rejected as ambiguous).
        weight: None or a (C,) tensor of class weights with ``F.cross_entropy``'s meaning.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        label_smoothing: in [0, 1).
        ignore_index: class index whose samples are ignored (index targets only); None ignores nothing.
        return_stats: also return the batch's :class:`BatchStats` (with confidence bins for calibration).
        detach_modulator: keep the modulating factor out of the gradient.
        stat_bins: number of equal-width bins of the statistics (the table's bins for a GammaTable gamma).

    Returns:
        The loss (float32 for half-precision inputs), and with ``return_stats`` a ``(loss, stats)`` pair.

    Example:
        >>> import torch
        >>> from adaptive_focal import softmax_focal_loss
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> target = torch.tensor([0, 2])
        >>> round(softmax_focal_loss(logits, target, gamma=2.0).item(), 6)
        0.483824
    """
    _check_input(input)
    mix = None
    if isinstance(gamma, FocalMixture):  # one pass: the terms share log_softmax, the gather and the checks
        _check_mixture(gamma, "softmax", input)
        mix, gamma = gamma, gamma.gammas[0]
    if isinstance(gamma, AsymmetricGamma):
        raise ValueError(
            "gamma: AsymmetricGamma (one gamma for positive and one for negative targets) is for "
            "sigmoid_focal_loss; softmax_focal_loss has one target class per sample, use a float, a (C,) "
            "per-class tensor, a per-sample tensor, a GammaTable or a FocalMixture"
        )
    _check_reduction(reduction, _SOFTMAX_REDUCTIONS, "softmax_focal_loss")
    ls = _check_label_smoothing(label_smoothing)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if input.dim() == 0:
        raise ValueError("input must have a class dimension: shape (C,), (N, C) or (N, C, d1, ...), got a 0-d tensor")
    unbatched = input.dim() == 1
    if unbatched:
        input = input.unsqueeze(0)
        target = target.unsqueeze(0)
    num_classes = input.shape[1]
    sample_shape = (input.shape[0],) + tuple(input.shape[2:])
    prob_target = target.is_floating_point()
    if prob_target:
        if target.shape != input.shape:
            raise ValueError(
                f"target of class probabilities must have the input's shape {tuple(input.shape)}, "
                f"got {tuple(target.shape)}"
            )
    else:
        if target.dtype == torch.bool or target.is_complex():
            raise TypeError(f"target must hold class indices (an integer dtype) or class probabilities, got {target.dtype}")
        if tuple(target.shape) != sample_shape:
            raise ValueError(
                f"target of class indices must have shape {sample_shape} for input of shape {tuple(input.shape)}, "
                f"got {tuple(target.shape)}"
            )
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
    dtype = _compute_dtype(input)
    device = input.device
    g = _resolve_gamma(gamma, input, "softmax", dtype)
    _check_table(g, num_classes)
    # (gamma, weight) per term: the loss is sum_k w_k L(gamma_k) (one term without weight for a plain gamma)
    terms = [(g, None)] if mix is None else [
        (g if k == 0 else _resolve_gamma(mix.gammas[k], input, "softmax", dtype), mix.weights[k].to(dtype))
        for k in range(mix.num_terms)]
    a = _resolve_alpha(alpha, num_classes, device, dtype, "softmax", True)
    w = None
    if weight is not None:
        w = _as_class_vector(weight, "weight", num_classes, device, dtype)
    check_bins(stat_bins)
    edges = _stat_edges(g, stat_bins, device) if return_stats else None

    x = input.to(dtype)
    logp = F.log_softmax(x, dim=1)
    cshape = (1, num_classes) + (1,) * (input.dim() - 2)  # broadcasts a (C,) vector along dim 1

    def class_gamma(g: _Gamma):
        """gamma for every class term (N, C, ...) as a function of (q_full, cls); for the table, looked up."""
        def of(q_full=None, cls=None):
            if g.kind == _SCALAR:
                return g.value
            if g.kind == _PER_CLASS:
                return g.value.view(cshape)
            if g.kind == _FULL:
                return g.value
            return g.table.lookup(q_full, cls).to(dtype)
        return of

    def mixed(loss_of):
        """sum_k w_k loss_of(gamma_k) over the terms (the plain loss for a plain gamma)."""
        out = None
        for g_k, w_k in terms:
            term = loss_of(g_k) if w_k is None else loss_of(g_k) * w_k
            out = term if out is None else out + term
        return out

    def all_terms(y):
        return mixed(lambda g_k: _softmax_all_terms(logp, y, class_gamma(g_k), a, w, cshape, detach_modulator,
                                                    not g_k.nonneg))

    if prob_target:
        t = target.detach().to(dtype)
        if _on_host(t) and t.numel() and bool(((t < 0) | (t > 1)).any()):
            raise ValueError("target of class probabilities must hold values in [0, 1]")
        valid = None
        per_sample = all_terms(t * (1.0 - ls) + ls / num_classes if ls else t)
        denom = torch.tensor(float(math.prod(sample_shape)), device=device, dtype=dtype)
        cls = t.argmax(1)
    else:
        tgt = target.to(device=device, dtype=torch.int64)
        valid = tgt != ignore_index if ignore_index is not None else torch.ones_like(tgt, dtype=torch.bool)
        if _on_host(tgt):
            bad = valid & ((tgt < 0) | (tgt >= num_classes))
            if bool(bad.any()):
                allowed = f"[0, {num_classes})" + (f" or equal ignore_index={ignore_index}" if ignore_index is not None else "")
                raise ValueError(f"target class indices must be in {allowed}, got {tgt[bad][0].item()}")
        cls = torch.where(valid, tgt, torch.zeros_like(tgt))
        w_y = None if w is None else w[cls]
        if ls == 0.0:
            ell = -logp.gather(1, cls.unsqueeze(1)).squeeze(1)

            def target_gamma(g: _Gamma) -> torch.Tensor:
                if g.kind == _SCALAR:
                    return g.value.expand_as(ell)
                if g.kind == _PER_CLASS:
                    return g.value[cls]
                if g.kind == _FULL:
                    return g.value.gather(1, cls.unsqueeze(1)).squeeze(1)
                return g.table.lookup(torch.exp(-ell.detach()), cls).to(dtype)

            per_sample = mixed(lambda g_k: _FocalTerm.apply(ell, target_gamma(g_k), bool(detach_modulator),
                                                            not g_k.nonneg))
            if a is not None:
                per_sample = per_sample * a[cls]
            if w_y is not None:
                per_sample = per_sample * w_y
        else:
            onehot = torch.zeros_like(logp).scatter_(1, cls.unsqueeze(1), 1.0)
            per_sample = all_terms(onehot * (1.0 - ls) + ls / num_classes)
        per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
        denom = valid.to(dtype).sum() if w_y is None else (w_y * valid).sum()
    total = per_sample.sum()
    loss = _reduce(total, per_sample, denom, reduction, dtype)
    if unbatched and reduction == "none":
        loss = loss.squeeze(0)
    if not return_stats:
        return loss
    stats = _softmax_stats(logp.detach(), target if prob_target else cls, prob_target, valid, per_sample.detach(),
                           edges, num_classes, dtype)
    return loss, stats


def _softmax_all_terms(logp, y, class_gamma, alpha, weight, cshape, detach, inverse):
    """Per-sample loss summing every class term (probability targets or label smoothing)."""
    ell = -logp
    gam = class_gamma(torch.exp(logp.detach()), _class_grid(logp))
    gam = torch.broadcast_to(gam, ell.shape)
    terms = _FocalTerm.apply(ell, gam, bool(detach), inverse) * y
    if alpha is not None:
        terms = terms * alpha.view(cshape)
    if weight is not None:
        terms = terms * weight.view(cshape)
    return terms.sum(1)


def _class_grid(like: torch.Tensor) -> torch.Tensor:
    c = like.shape[1]
    shape = [1] * like.dim()
    shape[1] = c
    return torch.arange(c, device=like.device).view(shape).expand(like.shape)


def _softmax_stats(logp, target, prob_target, valid, per_sample, edges, num_classes, dtype) -> BatchStats:
    """Softmax statistics in few operations (they run every training step): for index targets on the CPU one C
    pass (``_kernels.cpu.softmax_stats``); otherwise one gather, one max, and a single scatter-add of five
    per-sample quantities into (class, confidence bin) cells and p_t bins. Every count and sum follows from those
    cells by reduction."""
    f32 = torch.float32
    bins = edges.numel() - 1
    with torch.no_grad():
        if _softmax_stats_kernel_fits(logp, prob_target):
            # one C pass instead of a few dozen small tensor operations (this runs every training step)
            n, c = logp.shape[0], logp.shape[1]
            kept = torch.where(valid, target, _IGNORED)  # ignored samples are marked for the kernel to skip
            counts, sums = _kernels.cpu.softmax_stats(
                logp.reshape(n, c, -1).contiguous(), kept.reshape(n, -1).contiguous(), _IGNORED,
                edges.to(torch.float32))
            b, cb = bins, c * bins
            loss_sum = per_sample.sum().to(f32)
            return BatchStats(  # views of the two buffers, in the kernel's layout
                edges=edges,
                count=counts[0],
                n_pos=counts[1],
                pt_hist=counts[2:2 + b],
                class_count=counts[2 + b:2 + b + c],
                conf_count=counts[2 + b + c:2 + 2 * b + c],
                class_conf_count=counts[2 + 2 * b + c:].view(c, b),
                sum_pt=sums[0],
                sum_pt_pos=sums[1],
                class_sum_pt=sums[2:2 + c],
                conf_sum=sums[2 + c:2 + c + b],
                correct_sum=sums[2 + c + b:2 + c + 2 * b],
                class_conf_sum=sums[2 + c + 2 * b:2 + c + 2 * b + cb].view(c, b),
                class_correct_sum=sums[2 + c + 2 * b + cb:].view(c, b),
                sum_loss=loss_sum,
                sum_grad_norm=(counts[0] - sums[0]).to(f32),  # sum of 1 - p_t
            )
        if prob_target:
            t = target.detach().to(dtype)
            q = torch.exp(logp)
            p_t = (t * q).sum(1)
            cls = t.argmax(1)
            v = torch.ones_like(p_t)
            sum_grad_norm = 0.5 * (q - t).abs().sum()
            logp_y = logp.gather(1, cls.unsqueeze(1)).squeeze(1)
        else:
            cls = target
            logp_y = logp.gather(1, cls.unsqueeze(1)).squeeze(1)
            p_t = torch.exp(logp_y)
            v = valid.to(p_t.dtype)
            sum_grad_norm = None  # sum of (1 - p_t) over valid samples: count - sum_pt, below
        # amax is one cheap pass; max with indices (argmax) costs about four times more on CPU. A sample is
        # correct when its target class attains the maximum (a tie counts as correct).
        conf_log = logp.amax(1)
        conf = torch.exp(conf_log)
        inner = edges[1:-1].to(conf.dtype)
        cell = cls * bins + torch.bucketize(conf, inner, right=True)
        index = torch.stack([cell, cell, cell, cell, torch.bucketize(p_t, inner, right=True)]).reshape(5, -1)
        correct = (logp_y >= conf_log).to(p_t.dtype)
        # float64 keeps the counts exact however many samples (pixels) a batch has
        weights = (torch.stack([v, conf, correct, p_t, v]) * v).reshape(5, -1).to(torch.float64)
        cells = torch.zeros(5, num_classes * bins, device=logp.device, dtype=torch.float64)
        cells.scatter_add_(1, index, weights)
        per_class = cells[:4].view(4, num_classes, bins)
        return _softmax_stats_from_cells(per_class, cells[4, :bins], sum_grad_norm, per_sample, edges)


#: the target value the C statistics pass skips (class indices are never negative)
_IGNORED = -1
#: above this many logits the statistics use the (multi-threaded) PyTorch formulation
_SOFTMAX_STATS_KERNEL_MAX = 1 << 18


def _softmax_stats_kernel_fits(logp: torch.Tensor, prob_target: bool) -> bool:
    return (not prob_target and logp.device.type == "cpu" and logp.dtype == torch.float32
            and 0 < logp.numel() <= _SOFTMAX_STATS_KERNEL_MAX and not torch.compiler.is_compiling()
            and _kernels.cpu.ready())  # only once built (by a large sigmoid input): small inputs never pay a build


def _softmax_stats_from_cells(per_class, pt_hist, sum_grad_norm, per_sample, edges) -> BatchStats:
    """BatchStats from float64 sums per (quantity, target class, confidence bin): quantities are samples,
    confidence sum, number correct and p_t sum; ``sum_grad_norm`` None means index targets (sum of 1 - p_t)."""
    f32 = torch.float32
    class_conf_count = per_class[0].to(torch.int64)
    class_count = class_conf_count.sum(1)
    class_sum_pt = per_class[3].sum(1)
    per_bin = per_class[:3].sum(1)
    count = class_count.sum()
    sum_pt = class_sum_pt.sum()
    if sum_grad_norm is None:
        sum_grad_norm = count - sum_pt
    return BatchStats(
        edges=edges,
        count=count,
        n_pos=count.clone(),
        sum_pt=sum_pt.to(f32),
        sum_loss=per_sample.sum().to(f32),
        sum_grad_norm=sum_grad_norm.to(f32),
        pt_hist=pt_hist.to(torch.int64),
        class_count=class_count,
        class_sum_pt=class_sum_pt.to(f32),
        conf_count=per_bin[0].to(torch.int64),
        conf_sum=per_bin[1].to(f32),
        correct_sum=per_bin[2].to(f32),
        class_conf_count=class_conf_count,
        class_conf_sum=per_class[1].to(f32),
        class_correct_sum=per_class[2].to(f32),
        sum_pt_pos=sum_pt.to(f32),  # every sample is a positive (n_pos == count)
    )
