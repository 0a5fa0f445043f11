"""Focal loss functions: one exact semantics for sigmoid (binary / multi-label) and softmax (multi-class).

Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017): ``FL(p_t) = -alpha_t (1 - p_t)**gamma log(p_t)``.

Each function checks its arguments and brings gamma / alpha / weight into a canonical form, then computes the
loss, its gradient and (optionally) the batch statistics on one of two paths:

* the fused path (sigmoid, large float32 inputs on CPU or CUDA): one pass of the kernel behind the custom op
  ``torch.ops.adaptive_focal.sigmoid_focal`` (see :mod:`adaptive_focal._kernels`);
* the reference path, pure PyTorch, which is also the tests' reference. It is written in log space (the
  modulating factor is ``exp(gamma * log(1 - p_t))`` with ``log(1 - p_t)`` from ``logsigmoid`` /
  ``log_softmax``), so its gradients stay finite at saturated logits for every gamma >= 0, where the textbook
  ``(1 - p_t)**gamma`` gives ``0 * inf = NaN`` for 0 < gamma < 1. On the CPU the statistics of smaller float32
  inputs (every training step asks for them) come from one pass of the compiled library once it is built on the
  machine; the loss itself does not.

The private modules beside this one hold the parts: ``_checks`` (argument checks, alpha and weight), ``_gamma``
(gamma resolution into the kernel contract's kinds), ``_priors`` (logit adjustment and class-balanced weights),
``_sigmoid`` and ``_softmax`` (the reference paths) and ``_stats`` (statistics assembly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _kernels
from ..gamma_forms import AsymmetricGamma, FocalMixture
from ..stats import check_bins
from . import _checks, _gamma, _priors, _sigmoid, _softmax, _stats

__all__ = ["class_balanced_weights", "sigmoid_focal_loss", "softmax_focal_loss"]


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
    class_priors=None,
    tau: float = 1.0,
    confidence_stats: bool = False,
):
    """Sigmoid focal loss for binary and multi-label classification (Lin et al., 2017).

    The element loss is ``alpha_t * (1 - p_t)**gamma * BCE(x, t)`` with ``p = sigmoid(x)``,
    ``p_t = p t + (1 - p)(1 - t)`` and ``alpha_t = alpha t + (1 - alpha)(1 - t)``, for hard or soft targets.
    With ``gamma = 0`` and ``alpha = None`` it equals :func:`torch.nn.functional.binary_cross_entropy_with_logits`
    (except at infinite logits, where BCE can give NaN).

    Non-finite logits: an infinite logit gives the limits of the loss and its gradient (the gradient is finite;
    the loss is 0 where the target agrees with the logit, else inf), a NaN logit a NaN loss and gradient and NaN
    sums in the statistics.

    Args:
        input: logits of any shape; dim 1 is the class dimension when the input has two or more dims.
        target: same shape; hard labels {0, 1} or soft targets in [0, 1] (not differentiated).
        gamma: focusing parameter, finite: a float, a 0-d tensor, a (C,) per-class tensor (along dim 1), a tensor
            broadcastable to the input (per element), a :class:`GammaTable`, a :class:`FocalMixture` or an
            :class:`AsymmetricGamma`. A negative gamma selects the inverse focal factor ``(1 + p_t)**|gamma|`` (as
            AdaFocal uses it).
        alpha: None (no weighting), a float in [0, 1] weighing positives against negatives, or a (C,) tensor of
            per-class alphas along dim 1.
        weight: finite element weights broadcastable to the input, as in ``binary_cross_entropy_with_logits``
            (the mean still divides by the number of elements).
        reduction: ``"none"`` (element losses; ignored elements are 0), ``"mean"`` (over non-ignored elements),
            ``"sum"``, or ``"positives"``: the sum divided by ``max(1, number of non-ignored targets >= 0.5)``,
            RetinaNet's normalisation.
        label_smoothing: in [0, 1); targets become ``t (1 - ls) + ls / 2``.
        ignore_index: elements whose target equals it are left out of the loss and of the mean's count (their
            loss and gradient are 0 whatever their logit).
        return_stats: also return the batch's :class:`BatchStats`.
        detach_modulator: keep the modulating factor out of the gradient (as ASL and EFL do); by default the
            gradient is that of the paper formula.
        stat_bins: number of equal-width p_t bins of the statistics (the table's bins for a GammaTable gamma).
        class_priors: None, or (C,) per-class priors in (0, 1), the fraction of samples whose target for the
            class is positive: the loss is computed on the logits ``x + tau * log(pi_c / (1 - pi_c))``, the logit
            adjustment of Menon et al. (2021) applied to each class's one-vs-rest problem (a sigmoid is the
            two-class softmax of ``(x, 0)``). The statistics are those of the adjusted logits.
        tau: the adjustment's scale (finite; 0 leaves the logits unchanged); only with ``class_priors``.
        confidence_stats: ``True`` or ``False``; with ``return_stats``, also accumulate the confidence bins
            (``conf_count``, ``conf_sum``, ``correct_sum`` and their (C, B) ``class_*`` forms: every element as a
            binary prediction with confidence ``max(p, 1 - p)``), which AdaFocal and
            :func:`~adaptive_focal.metrics.ece_from_stats` read. Off by default: they are sums per element and
            take return_stats' cost on the CPU kernel from 7-10% to 17-32% of the loss (README, Benchmarks),
            while the per-step policies never read them (the AdaFocal policies turn them on for their loss).
            Without them those fields are None and every other field is the same, bit for bit.

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
    _checks.check_input(input)
    _checks.check_finite_weight(weight)
    _checks.check_flag(confidence_stats, "confidence_stats")
    known_nonneg = False
    if isinstance(gamma, FocalMixture):
        _gamma.check_mixture(gamma, "sigmoid", input)
        term = gamma._per_class_term()
        if term is None:  # several terms (or scalar weights): the weighted sum of one loss per term
            return _sigmoid.mixture(sigmoid_focal_loss, input, target, gamma, alpha, weight, dict(
                reduction=reduction, label_smoothing=label_smoothing, ignore_index=ignore_index,
                return_stats=return_stats, detach_modulator=detach_modulator, stat_bins=stat_bins,
                class_priors=class_priors, tau=tau, confidence_stats=confidence_stats))
        # one term with per-class weights (EFL's form): its gamma, and its weights folded into the element weight
        gamma, class_weight, known_nonneg = term
        weight = _checks.with_class_weight(weight, class_weight, input)

    # -- argument checks ----------------------------------------------------------------------------------------
    _checks.check_reduction(reduction, _checks.SIGMOID_REDUCTIONS, "sigmoid_focal_loss")
    ls = _checks.check_label_smoothing(label_smoothing)
    _checks.check_target_tensor(target)
    _checks.check_sigmoid_target(input, target)
    _checks.check_sigmoid_ignore_index(ignore_index)
    dtype, device = _checks.compute_dtype(input), input.device
    shape3 = _sigmoid.canonical_shape(input)  # (N, C, S)
    num_classes = shape3[1]
    if isinstance(gamma, AsymmetricGamma):
        gamma = _gamma.asymmetric(gamma, input, target, num_classes, dtype)
    g = _gamma.resolve(gamma, input, "sigmoid", dtype, known_nonneg)
    _gamma.check_table(g, num_classes)
    a = _checks.resolve_alpha(alpha, num_classes, device, dtype, "sigmoid", input.dim() >= 2)
    w = _checks.sigmoid_weight(weight, input, dtype)
    offsets = _priors.logit_offsets(class_priors, tau, num_classes, "sigmoid", device, dtype)
    t = target.detach().to(dtype)
    _checks.check_sigmoid_target_values(t, ignore_index)
    check_bins(stat_bins)
    x = input if offsets is None else input + _priors.along_dim1(offsets, input)  # logit adjustment

    gval = _sigmoid.gamma_values(g, shape3, num_classes)
    w3 = None if w is None else w.reshape(shape3)
    differentiable_args = any(isinstance(v, torch.Tensor) and v.requires_grad for v in (gval, a, w3))
    detach = bool(detach_modulator)
    use_kernel = (dtype == torch.float32 and input.numel() >= _kernels.MIN_NUMEL and not differentiable_args
                  and _kernels.kernel_available(device.type))
    edges = _stats.stat_edges(g, stat_bins, device) if (use_kernel or return_stats) else None
    need_stats = bool(return_stats)
    need_conf = need_stats and confidence_stats

    # -- fused path: loss, gradient and statistics in one pass of the kernel -------------------------------------
    if use_kernel:
        f32 = torch.float32
        elem, acc, _ = torch.ops.adaptive_focal.sigmoid_focal(
            x.reshape(shape3).to(f32).contiguous(), t.reshape(shape3).contiguous(), gval.to(f32).contiguous(),
            g.kind, None if g.table is None else g.table.edges.to(device=device, dtype=f32),
            None if a is None else a.to(f32).contiguous(), None if w3 is None else w3.to(f32).contiguous(),
            None if ignore_index is None else float(ignore_index),
            ls, detach, edges.contiguous(), reduction == "none", need_stats, need_conf,
        )
        total, per_item = acc[0], elem.view(input.shape) if reduction == "none" else None
        count, n_pos = acc[1], acc[2]
        stats = (_stats.from_sigmoid_acc(acc.detach(), edges, num_classes, confidence=need_conf) if need_stats
                 else None)

    # -- reference path: autograd on the log-space formula ------------------------------------------------------
    else:
        x3, t3 = x.reshape(shape3), t.reshape(shape3)
        c_pass = need_stats and _sigmoid_stats_kernel_fits(input, dtype, differentiable_args)
        elem, stats = _sigmoid.reference(x3.to(dtype), t3, g, gval, a, w3, ignore_index, ls, detach, edges,
                                         need_stats and not c_pass, need_conf)
        total, per_item = elem.sum(), elem.view(input.shape)
        if c_pass:  # the statistics in one C pass instead of about sixty small tensor operations
            stats = _stats.sigmoid_c_pass(x3, t3, g, gval, a, w3, ignore_index, ls, detach, edges, num_classes,
                                          total, need_conf)
        count, n_pos = _sigmoid_counts(t, ignore_index, reduction)

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


def _sigmoid_counts(t: torch.Tensor, ignore_index, reduction: str):
    """(count, n_pos) of the non-ignored elements, for the reductions that divide by one of them."""
    if reduction not in ("mean", "positives"):
        return None, None
    valid = None if ignore_index is None else t != ignore_index
    if reduction == "mean":
        return (t.numel() if valid is None else valid.sum()), None
    positive = t >= 0.5
    return None, (positive if valid is None else positive & valid).sum()


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
    class_priors=None,
    tau: float = 1.0,
    confidence_stats: bool = False,
):
    """Softmax focal loss for multi-class classification (Lin et al., 2017; Mukhoti et al., 2020).

    The loss of a sample is ``sum_c w_c * alpha_c * y_c * (1 - q_c)**gamma * (-log q_c)`` with ``q = softmax(x)``
    over dim 1 and ``y`` the one-hot or probability target after label smoothing ``(1 - ls) y + ls / C``.
    With ``gamma = 0`` and ``alpha = None`` it equals :func:`torch.nn.functional.cross_entropy` with the same
    ``weight``, ``ignore_index``, ``label_smoothing`` and ``reduction``, including its weighted mean.

    Non-finite logits follow ``log_softmax``, as in ``F.cross_entropy``: a logit of -inf is a class of
    probability 0 (finite gradients; the loss is inf where it is the target, and a probability target of 0 there
    adds nothing), NaN or +inf make the sample's loss and gradient NaN.

    Args:
        input: logits (N, C) or (N, C, d1, ...), as ``F.cross_entropy`` takes them (or unbatched (C,)).
        target: class indices (N,) / (N, d1, ...) or class probabilities shaped like the input.
        gamma: finite: a float, a 0-d tensor, a (C,) per-class tensor (whatever N), a tensor with the input's
            number of dimensions broadcastable to it (per class term; ``(N, 1, d1, ...)`` is per sample), a
            :class:`GammaTable` (looked up from each term's q_c and class c) or a :class:`FocalMixture`. A tensor
            of the target's shape (N, d1, ...) is an error: it could mean per sample or per class term. A negative
            gamma selects ``(1 + q)**|gamma|`` (inverse focal).
        alpha: None or a (C,) tensor of per-class weights (a float is rejected as ambiguous).
        weight: None or a (C,) tensor of finite class weights with ``F.cross_entropy``'s meaning (for instance
            :func:`class_balanced_weights`).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        label_smoothing: in [0, 1).
        ignore_index: class index whose samples are ignored (index targets only); None ignores nothing.
        return_stats: also return the batch's :class:`BatchStats` (with confidence bins for calibration).
        detach_modulator: keep the modulating factor out of the gradient.
        stat_bins: number of equal-width bins of the statistics (the table's bins for a GammaTable gamma).
        class_priors: None, or (C,) training class priors (class counts or frequencies, finite and > 0): the
            loss is computed on ``x + tau * log(pi / sum(pi))`` along dim 1, the logit-adjusted loss of Menon et
            al. (2021) (with ``gamma = 0`` their logit-adjusted cross-entropy, values and gradients). The
            statistics are those of the adjusted logits.
        tau: the adjustment's scale (finite; 0 leaves the logits unchanged); only with ``class_priors``.
        confidence_stats: ``True`` or ``False``, accepted so that both losses (and :class:`FocalLoss`) take the
            same keywords; it changes nothing here: softmax statistics always carry the confidence bins, which
            are sums per sample (one confidence per C logits) and cost next to nothing, unlike the sigmoid ones.

    Returns:
        The loss (float32 for half-precision inputs), and with ``return_stats`` a ``(loss, stats)`` pair.

    Example:
        >>> import torch
        >>> from adaptive_focal import softmax_focal_loss
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        >>> target = torch.tensor([0, 2])
        >>> round(softmax_focal_loss(logits, target, gamma=2.0).item(), 6)
        0.483824

        Logit adjustment for long-tailed training, from the training set's class counts:

        >>> counts = torch.tensor([900, 90, 10])
        >>> adjusted = softmax_focal_loss(logits, target, gamma=0.0, class_priors=counts, tau=1.0)
        >>> plain_ce = torch.nn.functional.cross_entropy(logits + torch.log(counts / counts.sum()), target)
        >>> bool(torch.isclose(adjusted, plain_ce))
        True
    """
    _checks.check_input(input)
    _checks.check_flag(confidence_stats, "confidence_stats")
    mix = None
    if isinstance(gamma, FocalMixture):  # one pass: the terms share log_softmax, the gather and the checks
        _gamma.check_mixture(gamma, "softmax", input)
        mix, gamma = gamma, gamma.gammas[0]

    # -- argument checks ----------------------------------------------------------------------------------------
    _gamma.reject_asymmetric_for_softmax(gamma)
    _checks.check_reduction(reduction, _checks.SOFTMAX_REDUCTIONS, "softmax_focal_loss")
    ls = _checks.check_label_smoothing(label_smoothing)
    _checks.check_target_tensor(target)
    if input.dim() == 0:
        raise ValueError("input must have a class dimension: shape (C,), (N, C) or (N, C, d1, ...), got a 0-d tensor")
    unbatched = input.dim() == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.unsqueeze(0)
    num_classes = input.shape[1]
    sample_shape = (input.shape[0],) + tuple(input.shape[2:])
    prob_target = _checks.check_softmax_target(input, target, sample_shape)
    _checks.check_softmax_ignore_index(ignore_index)
    dtype, device = _checks.compute_dtype(input), input.device
    g = _gamma.resolve(gamma, input, "softmax", dtype)
    _gamma.check_table(g, num_classes)
    terms = _gamma.softmax_terms(g, mix, input, dtype)
    a = _checks.resolve_alpha(alpha, num_classes, device, dtype, "softmax", True)
    w = None if weight is None else _checks.as_class_vector(weight, "weight", num_classes, device, dtype)
    _checks.check_finite_weight(w)
    offsets = _priors.logit_offsets(class_priors, tau, num_classes, "softmax", device, dtype)
    check_bins(stat_bins)
    if prob_target:
        y, valid = target.detach().to(dtype), None
        _checks.check_probability_target_values(y)
    else:  # class indices, the ignored ones replaced by 0
        tgt = target.to(device=device, dtype=torch.int64)
        valid = tgt != ignore_index if ignore_index is not None else torch.ones_like(tgt, dtype=torch.bool)
        _checks.check_class_indices(tgt, valid, num_classes, ignore_index)
        y = torch.where(valid, tgt, torch.zeros_like(tgt))

    # -- reference path (no fused kernel: log_softmax and its backward are most of the cost) --------------------
    x = input.to(dtype) if offsets is None else input.to(dtype) + _priors.along_dim1(offsets, input)
    logp = F.log_softmax(x, dim=1)
    per_sample, denom = _softmax.reference(logp, y, valid, terms, a, w, ls, bool(detach_modulator))
    loss = _reduce(per_sample.sum(), per_sample, denom, reduction, dtype)
    if unbatched and reduction == "none":
        loss = loss.squeeze(0)
    if not return_stats:
        return loss
    edges = _stats.stat_edges(g, stat_bins, device)
    stats = _stats.softmax_stats(logp.detach(), y, prob_target, valid, per_sample.detach(), edges, num_classes,
                                 dtype, c_pass=_softmax_stats_kernel_fits(logp, prob_target))
    return loss, stats


#: above this many logits the softmax statistics use the (multi-threaded) PyTorch formulation
_SOFTMAX_STATS_KERNEL_MAX = 1 << 18


def _softmax_stats_kernel_fits(logp: torch.Tensor, prob_target: bool) -> bool:
    return (not prob_target and logp.device.type == "cpu" and logp.dtype == torch.float32
            and 0 < logp.numel() <= _SOFTMAX_STATS_KERNEL_MAX and not torch.compiler.is_compiling()
            and _kernels.cpu.ready())  # only once built (by a large sigmoid input): small inputs never pay a build


def _reduce(total, per_item, denom, reduction, out_dtype):
    if reduction == "none":
        return per_item.to(out_dtype)
    if reduction == "sum":
        return total.to(out_dtype)
    # mean / positives: an empty or fully ignored input gives 0 (never 0 / 0)
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return (total / safe).to(out_dtype)


def class_balanced_weights(class_counts, beta: float = 0.9999, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class-balanced weights from the effective number of samples (Cui, Jia, Lin, Song, Belongie, CVPR 2019).

    The effective number of samples of class c is ``E_c = (1 - beta**n_c) / (1 - beta)``; its weight is
    ``w_c = 1 / E_c = (1 - beta) / (1 - beta**n_c)``, normalised so that the weights sum to ``C`` (as the paper's
    code does). ``beta = 0`` gives uniform weights; ``beta -> 1`` tends to inverse class frequency, and ``beta = 1``
    is accepted as that limit. The paper uses beta in {0.9, 0.99, 0.999, 0.9999}. Computed in float64 as
    ``(1 - beta) / -expm1(n_c * log(beta))``, accurate for beta close to 1 and large counts.

    The weights are a loss's ``weight``: softmax :func:`softmax_focal_loss` takes them with ``F.cross_entropy``'s
    weighted mean; the sigmoid loss gives the paper's class-balanced sigmoid loss with ``weight=w[y]`` along each
    sample's row (y its class). ``alpha`` holds values in [0, 1]: ``w / w.max()`` keeps the ratios.

    Args:
        class_counts: ``(C,)`` number of training samples per class (integers or floats >= 1).
        beta: in [0, 1].
        dtype: dtype of the result.

    Raises:
        ValueError: a class with count 0 (its effective number is 0 and its weight infinite; such a class never
            appears as a target, so drop it or give it a count of 1 knowingly), or beta outside [0, 1].

    Example:
        >>> import torch
        >>> from adaptive_focal import class_balanced_weights
        >>> class_balanced_weights([1, 2], beta=0.5, dtype=torch.float64).tolist()  # ∝ (0.5 / 0.5, 0.5 / 0.75)
        [1.2000000000000002, 0.8]
    """
    return _priors.class_balanced_weights(class_counts, beta, dtype)
