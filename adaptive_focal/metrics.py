"""Calibration and class-balance metrics, computed in torch on the input's device.

Every function here except :func:`calibration_summary` returns 0-d or 1-d tensors and never forces a host
synchronisation (no ``.item()``, no data-dependent shapes, no ``bincount``): they can run inside a training or
validation loop on CUDA and be logged later. Bins are filled with ``scatter_add`` as per-bin sums, the same form as
the confidence bins a softmax focal loss collects in :class:`~adaptive_focal.BatchStats`, from which
:func:`ece_from_stats` gets the ECE of a whole validation set without keeping its probabilities.

Conventions shared by all functions:

* ``probs`` is an ``(N, C)`` floating tensor of class probabilities (rows summing to one, not checked);
  ``labels`` an ``(N,)`` integer tensor of class indices on the same device. Half-precision inputs are computed
  in float32; float64 stays float64.
* Confidence is ``max_c probs[:, c]``; the prediction is ``argmax`` (the first maximal class on ties).
* Count-based metrics (recall, balanced accuracy, macro-F1) are returned in ``torch.get_default_dtype()``.
* On CPU the label (and prediction) values are range-checked and an out-of-range value raises a ValueError. On
  other devices that check would need a host synchronisation and is skipped: an out-of-range index there gives a
  device-side assertion (NLL, recall, balanced accuracy, macro-F1) or counts as matching no class (the ECEs,
  Brier), so check labels once, outside the loop, if they are not trusted.
* An empty batch (N = 0) gives NaN for every mean over samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .stats import BatchStats

__all__ = [
    "adaptive_ece",
    "balanced_accuracy",
    "brier",
    "calibration_summary",
    "classwise_ece",
    "ece",
    "ece_from_stats",
    "macro_f1",
    "nll",
    "per_class_recall",
    "recall_splits",
]


# ---------------------------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------------------------
def _check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def _check_scores(x, name: str, what: str) -> None:
    """``x`` must be an (N, C) floating tensor with C >= 1."""
    _check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of {what} with shape (N, C), got dtype {x.dtype}")
    if x.dim() != 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, C) with C >= 1, got shape {tuple(x.shape)}")


def _check_index_tensor(x, name: str, n: int, num_classes: int, device: torch.device, ref: str) -> None:
    """``x`` must be an (n,) integer tensor of class indices in [0, num_classes) on ``device``."""
    _check_tensor(x, name)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class indices, got dtype {x.dtype}")
    if x.dim() != 1 or x.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match {ref}, got shape {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} must be on the same device as {ref} ({device}), got {x.device}")
    _check_index_range(x, name, num_classes)


def _check_index_range(x: torch.Tensor, name: str, num_classes: int) -> None:
    # a value check costs a host synchronisation except on the CPU, so it is done there only
    if x.device.type == "cpu" and x.numel():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} must hold class indices in [0, {num_classes - 1}], got values from {lo} to {hi}"
            )


def _check_probs_labels(probs, labels, probs_name: str = "probs", what: str = "class probabilities") -> None:
    _check_scores(probs, probs_name, what)
    _check_index_tensor(labels, "labels", probs.shape[0], probs.shape[1], probs.device, probs_name)


def _check_n_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return n_bins


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _confidence_and_correct(probs: torch.Tensor, labels: torch.Tensor):
    p = probs.detach().to(_work_dtype(probs))
    # argmax returns the first maximal class on ties (max(dim) does not promise which)
    return p.amax(dim=1), (p.argmax(dim=1) == labels).to(p.dtype)


def _equal_width_bins(values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin index of each value for ``n_bins`` equal-width bins (lo, hi] on [0, 1]; the first bin is [0, hi].

    ``bucketize(right=False)`` counts the interior edges strictly below a value, so a value equal to an edge
    goes to the bin below it (Guo et al.'s ``gt(lo) & le(hi)``). Values outside [0, 1] are clamped into the
    first or last bin.
    """
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=values.dtype, device=values.device)
    return torch.bucketize(values, edges[1:-1], right=False)


def _gap_from_bins(bin_idx: torch.Tensor, gap: torch.Tensor, n_bins: int, n: int) -> torch.Tensor:
    """``sum_b |sum_{i in b} gap_i| / n`` -- the weighted calibration gap, NaN for n = 0."""
    sums = torch.zeros(n_bins, dtype=gap.dtype, device=gap.device).scatter_add_(0, bin_idx, gap)
    return sums.abs().sum() / n if n else torch.full((), math.nan, dtype=gap.dtype, device=gap.device)


# ---------------------------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------------------------
def ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """Expected calibration error with equal-width confidence bins (Guo et al., 2017).

    ``ECE = sum_b (|B_b| / N) * |acc(B_b) - conf(B_b)|``, where a sample's confidence is its largest
    probability, it is correct when its argmax equals its label, and ``B_b`` are ``n_bins`` equal-width bins on
    [0, 1]. Since ``|B_b| * |acc - conf| = |sum_{i in B_b} (correct_i - conf_i)|``, empty bins contribute zero.

    Bin edges: bins are ``(lo, hi]`` (``conf > lo and conf <= hi``), as in Guo et al.'s reference code, so a
    confidence exactly on an interior edge belongs to the lower bin; the first bin also holds 0. The edges are
    ``torch.linspace(0, 1, n_bins + 1)`` in the computation dtype. (:func:`ece_from_stats` bins ``[lo, hi)``
    instead; the two agree unless a confidence lies exactly on an edge.)

    Args:
        probs: (N, C) class probabilities.
        labels: (N,) class indices.
        n_bins: number of equal-width bins (15 as in Guo et al.).

    Returns:
        A 0-d tensor (float64 for float64 probs, else float32); NaN when N = 0.

    Example:
        >>> import torch
        >>> from adaptive_focal.metrics import ece
        >>> probs = torch.tensor([[0.9, 0.1], [0.65, 0.35], [0.3, 0.7]])
        >>> labels = torch.tensor([0, 1, 1])
        >>> # bins of width 0.2: {0.9 correct} -> |1 - 0.9|; {0.65 wrong, 0.7 correct} -> |1 - 1.35|
        >>> round(ece(probs, labels, n_bins=5).item(), 4)  # (0.1 + 0.35) / 3
        0.15
    """
    _check_probs_labels(probs, labels)
    n_bins = _check_n_bins(n_bins)
    conf, correct = _confidence_and_correct(probs, labels)
    return _gap_from_bins(_equal_width_bins(conf, n_bins), correct - conf, n_bins, conf.shape[0])


def adaptive_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """Adaptive (equal-mass) expected calibration error (Nixon et al., 2019; Mukhoti et al., 2020, "AdaECE").

    As :func:`ece`, but the bins hold equal numbers of samples instead of equal widths of confidence: the
    samples are sorted by confidence and the one of (0-based) rank ``r`` goes to bin ``floor(r * n_bins / N)``,
    so bin sizes differ by at most one. Samples with equal confidence are kept together: a group of ties goes
    to the bin of its lowest rank, which makes the result independent of the order of the samples (that bin
    can then hold more than its share). With ``N < n_bins`` some bins stay empty and contribute zero.

    Args:
        probs: (N, C) class probabilities.
        labels: (N,) class indices.
        n_bins: number of equal-mass bins (15 as in Mukhoti et al.).

    Returns:
        A 0-d tensor (float64 for float64 probs, else float32); NaN when N = 0.

    Example:
        >>> import torch
        >>> from adaptive_focal.metrics import adaptive_ece
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
        >>> labels = torch.tensor([0, 1, 1, 0])
        >>> # sorted confidences 0.6 (wrong), 0.7 (right) | 0.8 (wrong), 0.9 (right)
        >>> round(adaptive_ece(probs, labels, n_bins=2).item(), 4)  # (|1 - 1.3| + |1 - 1.7|) / 4
        0.25
    """
    _check_probs_labels(probs, labels)
    n_bins = _check_n_bins(n_bins)
    conf, correct = _confidence_and_correct(probs, labels)
    n = conf.shape[0]
    sorted_conf, order = torch.sort(conf, stable=True)
    # rank of the first sample of each group of equal confidences (searchsorted on the sorted values)
    first_rank = torch.searchsorted(sorted_conf, sorted_conf, right=False)
    bin_idx = torch.div(first_rank * n_bins, max(n, 1), rounding_mode="floor")
    return _gap_from_bins(bin_idx, (correct - conf)[order], n_bins, n)


def classwise_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """Classwise expected calibration error (Kull et al., 2019; Nixon et al., 2019, "SCE").

    For each class c, the predicted probabilities ``probs[:, c]`` of all N samples are put in ``n_bins``
    equal-width bins and each bin's mean probability is compared with the fraction of its samples whose label
    is c; the per-class errors ``sum_b (|B_bc| / N) |freq_c(B_bc) - mean_p_c(B_bc)|`` are averaged over all C
    classes (classes absent from ``labels`` included, as in Kull et al.).

    Bin edges as in :func:`ece`: ``(lo, hi]``, the first bin closed at 0 (probabilities of exactly 0 are common
    here and are kept, in the first bin).

    Args:
        probs: (N, C) class probabilities.
        labels: (N,) class indices.
        n_bins: number of equal-width bins per class.

    Returns:
        A 0-d tensor (float64 for float64 probs, else float32); NaN when N = 0.

    Example:
        >>> import torch
        >>> from adaptive_focal.metrics import classwise_ece
        >>> probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
        >>> labels = torch.tensor([0, 0])
        >>> # class 0: |1 - 0.9| + |1 - 0.3| = 0.8; class 1: |0 - 0.1| + |0 - 0.7| = 0.8
        >>> round(classwise_ece(probs, labels, n_bins=5).item(), 4)  # (0.8 / 2 + 0.8 / 2) / 2
        0.4
    """
    _check_probs_labels(probs, labels)
    n_bins = _check_n_bins(n_bins)
    p = probs.detach().to(_work_dtype(probs))
    n, c = p.shape
    classes = torch.arange(c, device=p.device)
    onehot = (labels.unsqueeze(1) == classes).to(p.dtype)
    # bin (class k, bin b) -> flat index k * n_bins + b
    idx = _equal_width_bins(p, n_bins) + classes * n_bins
    return _gap_from_bins(idx.reshape(-1), (onehot - p).reshape(-1), n_bins * c, n) / c


def ece_from_stats(stats: BatchStats) -> torch.Tensor:
    """Expected calibration error (Guo et al., 2017) from the confidence bins of :class:`BatchStats`.

    Uses the per-bin sums that ``return_stats=True`` accumulates -- ``conf_count``, ``conf_sum`` and
    ``correct_sum`` -- so the ECE of a whole validation set follows from statistics added up over its batches (or
    all-reduced over processes) without keeping the probabilities:
    ``sum_b |correct_sum_b - conf_sum_b| / sum_b conf_count_b``.

    The bins are the statistics' own (``stats.edges``, 15 equal-width bins by default) with the statistics'
    convention ``[lo, hi)`` (``torch.bucketize(right=True)``; the last bin also holds 1); ignored samples or
    elements (``ignore_index``) are left out.

    * Softmax statistics: a sample's confidence is ``max_c q_c`` and it is correct when its target class attains
      the maximum probability, a tie included. :func:`ece` bins ``(lo, hi]`` and breaks ties by the first maximal
      class; the two agree when no confidence lies exactly on an edge and no sample has tied top probabilities.
    * Sigmoid statistics: every element is a binary prediction, the two-class softmax of the logits ``(0, x)``,
      with confidence ``max(p, 1 - p)``, correct when the logit's sign agrees with the target's label
      (``t >= 0.5``; ``x = 0`` counts as correct). This is the ECE of the elements as binary predictions: for a
      binary task the ECE of the same task written as a two-class softmax (``ece(torch.stack([1 - p, p], 1),
      labels)``), for a multi-label one the ECE of all (sample, label) predictions together.

    Args:
        stats: statistics with confidence bins, from either loss (``softmax_focal_loss``, ``sigmoid_focal_loss``
            or ``FocalLoss``; the sigmoid loss with ``confidence_stats=True``).

    Returns:
        A 0-d float tensor on the statistics' device; NaN when they count nothing.

    Raises:
        TypeError: ``stats`` is not a BatchStats.
        ValueError: ``stats`` have no confidence bins (statistics built without them: sigmoid statistics have
            them only with ``confidence_stats=True``).

    Example:
        >>> import torch
        >>> from adaptive_focal import sigmoid_focal_loss, softmax_focal_loss
        >>> from adaptive_focal.metrics import ece, ece_from_stats
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.0, 1.5]])
        >>> labels = torch.tensor([0, 2, 2])
        >>> _, stats = softmax_focal_loss(logits, labels, gamma=2.0, return_stats=True)
        >>> round(ece_from_stats(stats).item(), 4) == round(ece(logits.softmax(1), labels).item(), 4)
        True
        >>> x, t = torch.tensor([2.0, -1.0, 0.5, 3.0]), torch.tensor([1.0, 1.0, 0.0, 1.0])  # binary
        >>> _, stats = sigmoid_focal_loss(x, t, return_stats=True, confidence_stats=True)
        >>> p = torch.sigmoid(x)
        >>> round(ece_from_stats(stats).item(), 4) == round(ece(torch.stack([1 - p, p], 1), t.long()).item(), 4)
        True
    """
    if not isinstance(stats, BatchStats):
        raise TypeError(f"stats must be a BatchStats, got {type(stats).__name__}")
    if stats.conf_count is None or stats.conf_sum is None or stats.correct_sum is None:
        how = (": compute them with confidence_stats=True (sigmoid_focal_loss(..., return_stats=True, "
               "confidence_stats=True) or FocalLoss('sigmoid', confidence_stats=True))" if stats.mode == "sigmoid"
               else "")
        raise ValueError(
            f"stats must carry confidence bins (conf_count, conf_sum, correct_sum); these {stats.mode} statistics "
            f"have None there{how}"
        )
    gap = (stats.correct_sum.to(stats.conf_sum.dtype) - stats.conf_sum).abs().sum()
    count = stats.conf_count.sum().to(gap.dtype)
    return torch.where(count > 0, gap / count.clamp_min(1), torch.full_like(gap, math.nan))


# ---------------------------------------------------------------------------------------------------------------
# proper scoring rules
# ---------------------------------------------------------------------------------------------------------------
def nll(probs_or_logits: torch.Tensor, labels: torch.Tensor, from_logits: bool = False) -> torch.Tensor:
    """Mean negative log-likelihood of the labels (the log loss used to assess calibration by Guo et al., 2017).

    ``-mean_i log p_i[label_i]``. With ``from_logits=True`` the input is taken as logits and the log
    probabilities come from ``log_softmax`` (exact, the value of ``F.cross_entropy``). With probabilities, a
    probability below the dtype's machine epsilon is raised to it first (scikit-learn's ``log_loss`` clips to
    ``[eps, 1 - eps]``), so a zero probability gives a large finite value (about 15.9 in float32) rather than
    infinity.

    Args:
        probs_or_logits: (N, C) class probabilities, or logits with ``from_logits=True``.
        labels: (N,) class indices.
        from_logits: whether the input is logits.

    Returns:
        A 0-d tensor (float64 for float64 input, else float32); NaN when N = 0.

    Example:
        >>> import math, torch
        >>> from adaptive_focal.metrics import nll
        >>> probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
        >>> labels = torch.tensor([0, 1])
        >>> math.isclose(nll(probs, labels).item(), -(math.log(0.5) + math.log(0.75)) / 2, rel_tol=1e-6)
        True
    """
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be a bool, got {type(from_logits).__name__}")
    _check_probs_labels(probs_or_logits, labels, "probs_or_logits", "logits" if from_logits else "class probabilities")
    x = probs_or_logits.detach().to(_work_dtype(probs_or_logits))
    if from_logits:
        logp = torch.log_softmax(x, dim=1)
    else:
        logp = torch.log(x.clamp_min(torch.finfo(x.dtype).eps))
    return -logp.gather(1, labels.to(torch.int64).unsqueeze(1)).mean()


def brier(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-class Brier score (Brier, 1950): ``mean_i sum_c (p_ic - y_ic)^2`` with one-hot ``y``.

    This is the original multi-class definition (range [0, 2]), not scikit-learn's binary
    ``brier_score_loss`` of one class's probability.

    Args:
        probs: (N, C) class probabilities.
        labels: (N,) class indices.

    Returns:
        A 0-d tensor (float64 for float64 probs, else float32); NaN when N = 0.

    Example:
        >>> import torch
        >>> from adaptive_focal.metrics import brier
        >>> probs = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
        >>> labels = torch.tensor([0, 0])
        >>> round(brier(probs, labels).item(), 4)  # ((0.25 + 0.25) + (0.64 + 0.64)) / 2
        0.89
    """
    _check_probs_labels(probs, labels)
    p = probs.detach().to(_work_dtype(probs))
    onehot = (labels.unsqueeze(1) == torch.arange(p.shape[1], device=p.device)).to(p.dtype)
    return (p - onehot).square().sum(1).mean()


# ---------------------------------------------------------------------------------------------------------------
# class-balance metrics
# ---------------------------------------------------------------------------------------------------------------
def _confusion(preds_or_probs, labels, num_classes) -> torch.Tensor:
    """(C, C) int64 confusion matrix, rows the true class, columns the prediction."""
    _check_tensor(preds_or_probs, "preds_or_probs")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be None or a positive integer, got {num_classes!r}")
    if preds_or_probs.is_floating_point():
        _check_scores(preds_or_probs, "preds_or_probs", "probabilities or logits")
        c = preds_or_probs.shape[1]
        if num_classes is not None and num_classes != c:
            raise ValueError(
                f"num_classes must equal preds_or_probs.shape[1] = {c} for (N, C) probabilities, got {num_classes}"
            )
        preds = preds_or_probs.detach().argmax(dim=1)
    else:
        if preds_or_probs.dim() != 1:
            raise ValueError(
                "preds_or_probs must be (N,) integer predictions or (N, C) floating probabilities/logits, "
                f"got an integer tensor of shape {tuple(preds_or_probs.shape)}"
            )
        if num_classes is None:
            raise ValueError(
                "num_classes must be given with (N,) integer predictions (inferring it would need a host "
                "synchronisation), got None"
            )
        c = num_classes
        if preds_or_probs.dtype == torch.bool or preds_or_probs.is_complex():
            raise TypeError(f"preds_or_probs must be integer predictions or floating scores, got dtype "
                            f"{preds_or_probs.dtype}")
        _check_index_range(preds_or_probs, "preds_or_probs", c)
        preds = preds_or_probs
    _check_index_tensor(labels, "labels", preds.shape[0], c, preds.device, "preds_or_probs")
    flat = labels.to(torch.int64) * c + preds.to(torch.int64)
    cm = torch.zeros(c * c, dtype=torch.int64, device=preds.device)
    return cm.scatter_add_(0, flat, torch.ones_like(flat)).view(c, c)


def _recall_from_confusion(cm: torch.Tensor) -> torch.Tensor:
    dtype = torch.get_default_dtype()
    tp = cm.diagonal().to(dtype)
    support = cm.sum(1).to(dtype)
    return torch.where(support > 0, tp / support.clamp_min(1), torch.full_like(tp, math.nan))


def per_class_recall(preds_or_probs: torch.Tensor, labels: torch.Tensor,
                     num_classes: int | None = None) -> torch.Tensor:
    """Recall of each class, ``TP_c / (number of samples labelled c)``; NaN for classes absent from ``labels``.

    The per-class view of long-tailed evaluation (Liu et al., 2019); equals scikit-learn's
    ``recall_score(labels, preds, average=None, labels=range(C))`` on the classes present in ``labels``.

    Args:
        preds_or_probs: (N,) integer predictions, or (N, C) probabilities / logits (predictions = argmax).
        labels: (N,) class indices.
        num_classes: C; required with integer predictions, optional (must equal C) with (N, C) scores.

    Returns:
        A (C,) tensor of the default float dtype.

    Example:
        >>> import torch
        >>> from adaptive_focal.metrics import per_class_recall
        >>> preds = torch.tensor([0, 0, 1, 1, 1])
        >>> labels = torch.tensor([0, 1, 1, 1, 0])
        >>> per_class_recall(preds, labels, num_classes=3)  # class 0: 1 of 2, class 1: 2 of 3, class 2: absent
        tensor([0.5000, 0.6667,    nan])
    """
    return _recall_from_confusion(_confusion(preds_or_probs, labels, num_classes))


def balanced_accuracy(preds_or_probs: torch.Tensor, labels: torch.Tensor,
                      num_classes: int | None = None) -> torch.Tensor:
    """Balanced accuracy: the mean per-class recall over the classes present in ``labels`` (Brodersen et al., 2010).

    Equals scikit-learn's ``balanced_accuracy_score(labels, preds)`` (``adjusted=False``), which also leaves out
    classes that are predicted but never occur in ``labels``.

    Args:
        preds_or_probs: (N,) integer predictions, or (N, C) probabilities / logits (predictions = argmax).
        labels: (N,) class indices.
        num_classes: C; required with integer predictions, optional (must equal C) with (N, C) scores.

    Returns:
        A 0-d tensor of the default float dtype; NaN when N = 0.

    Example:
        >>> import torch
        >>> from adaptive_focal.metrics import balanced_accuracy
        >>> preds = torch.tensor([0, 0, 0, 0, 1])
        >>> labels = torch.tensor([0, 0, 0, 1, 1])
        >>> round(balanced_accuracy(preds, labels, num_classes=2).item(), 4)  # (3/3 + 1/2) / 2
        0.75
    """
    return torch.nanmean(per_class_recall(preds_or_probs, labels, num_classes))


def macro_f1(preds_or_probs: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Macro-averaged F1 over the classes present in ``labels`` (van Rijsbergen, 1979; Sokolova & Lapalme, 2009).

    Per class ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``, averaged with equal weight over the classes that occur
    in ``labels`` (their F1 is always defined). This equals scikit-learn's
    ``f1_score(labels, preds, average="macro", labels=<classes present in labels>)``. It differs from
    ``f1_score(average="macro")`` without ``labels`` only when some class is predicted but never occurs in
    ``labels``: scikit-learn then averages in an F1 of 0 for that class, which is left out here (the samples
    wrongly predicted as that class still count as false negatives of their true classes).

    Args:
        preds_or_probs: (N,) integer predictions, or (N, C) probabilities / logits (predictions = argmax).
        labels: (N,) class indices.
        num_classes: C; required with integer predictions, optional (must equal C) with (N, C) scores.

    Returns:
        A 0-d tensor of the default float dtype; NaN when N = 0.

    Example:
        >>> import torch
        >>> from adaptive_focal.metrics import macro_f1
        >>> preds = torch.tensor([0, 0, 0, 0, 1])
        >>> labels = torch.tensor([0, 0, 0, 1, 1])
        >>> # class 0: 2*3 / (6 + 1 + 0) = 6/7; class 1: 2*1 / (2 + 0 + 1) = 2/3
        >>> round(macro_f1(preds, labels, num_classes=2).item(), 4)  # (6/7 + 2/3) / 2
        0.7619
    """
    cm = _confusion(preds_or_probs, labels, num_classes)
    dtype = torch.get_default_dtype()
    tp = cm.diagonal().to(dtype)
    support = cm.sum(1).to(dtype)  # TP + FN
    predicted = cm.sum(0).to(dtype)  # TP + FP
    present = support > 0
    f1 = 2 * tp / (support + predicted).clamp_min(1)
    # 0 / 0 = NaN when no class is present (N = 0)
    return (f1 * present).sum() / present.sum().to(dtype)


def recall_splits(per_class_recall: torch.Tensor, train_class_counts, many: int = 100,
                  few: int = 20) -> dict[str, torch.Tensor]:
    """Mean recall over the many-, medium- and few-shot classes of a long-tailed benchmark (Liu et al., 2019, OLTR).

    A class is *many-shot* with more than ``many`` training samples, *few-shot* with fewer than ``few``, and
    *medium-shot* otherwise (``few <= count <= many``); OLTR's thresholds are 100 and 20. Each split's value is
    the mean of its classes' recalls, skipping NaN recalls (classes absent from the evaluation labels); a split
    with no class, or only NaN recalls, gives NaN.

    Args:
        per_class_recall: (C,) recalls, e.g. from :func:`per_class_recall`.
        train_class_counts: (C,) training samples per class, a tensor or a sequence of integers (a tensor on
            ``per_class_recall``'s device avoids a host-to-device copy).
        many: many-shot classes have strictly more training samples than this.
        few: few-shot classes have strictly fewer training samples than this (``few <= many``).

    Returns:
        ``{"many": ..., "medium": ..., "few": ...}``, 0-d tensors of ``per_class_recall``'s dtype and device.

    Example:
        >>> import torch
        >>> from adaptive_focal.metrics import recall_splits
        >>> recall = torch.tensor([0.9, 0.8, 0.5, 0.1])
        >>> splits = recall_splits(recall, [500, 101, 100, 19])
        >>> {k: round(v.item(), 4) for k, v in splits.items()}  # many: (0.9 + 0.8) / 2
        {'many': 0.85, 'medium': 0.5, 'few': 0.1}
    """
    _check_tensor(per_class_recall, "per_class_recall")
    if not per_class_recall.is_floating_point() or per_class_recall.dim() != 1:
        raise ValueError(
            "per_class_recall must be a 1-d floating-point tensor of shape (C,), "
            f"got dtype {per_class_recall.dtype} and shape {tuple(per_class_recall.shape)}"
        )
    for name, value in (("many", many), ("few", few)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if few > many:
        raise ValueError(f"few must be <= many, got few={few!r} and many={many!r}")
    if isinstance(train_class_counts, torch.Tensor):
        counts = train_class_counts
    elif isinstance(train_class_counts, Sequence) and not isinstance(train_class_counts, (str, bytes)):
        counts = torch.as_tensor(train_class_counts)
    else:
        raise TypeError(
            f"train_class_counts must be a tensor or a sequence of integers, got {type(train_class_counts).__name__}"
        )
    if counts.dim() != 1 or counts.shape != per_class_recall.shape:
        raise ValueError(
            f"train_class_counts must have shape {tuple(per_class_recall.shape)} like per_class_recall, "
            f"got {tuple(counts.shape)}"
        )
    if counts.is_complex() or counts.dtype == torch.bool:
        raise TypeError(f"train_class_counts must hold numbers of samples, got dtype {counts.dtype}")
    if counts.device.type == "cpu" and counts.numel() and bool((counts < 0).any()):
        raise ValueError(f"train_class_counts must be non-negative, got {counts.tolist()}")
    counts = counts.to(per_class_recall.device)
    nan = torch.full_like(per_class_recall, math.nan)
    masks = {"many": counts > many, "medium": (counts >= few) & (counts <= many), "few": counts < few}
    return {k: torch.nanmean(torch.where(m, per_class_recall, nan)) for k, m in masks.items()}


# ---------------------------------------------------------------------------------------------------------------
# convenience
# ---------------------------------------------------------------------------------------------------------------
def calibration_summary(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """All the scalar metrics of this module for one set of predictions, as Python floats (this synchronises).

    Args:
        probs: (N, C) class probabilities.
        labels: (N,) class indices.
        n_bins: number of bins of the three ECE variants.

    Returns:
        A dict with keys ``accuracy``, ``ece``, ``adaptive_ece``, ``classwise_ece``, ``nll``, ``brier``,
        ``balanced_accuracy`` and ``macro_f1``.

    Example:
        >>> import torch
        >>> from adaptive_focal.metrics import calibration_summary
        >>> probs = torch.tensor([[0.9, 0.1], [0.65, 0.35], [0.3, 0.7]])
        >>> summary = calibration_summary(probs, torch.tensor([0, 1, 1]), n_bins=5)
        >>> round(summary["accuracy"], 4), round(summary["ece"], 4)
        (0.6667, 0.15)
    """
    _check_probs_labels(probs, labels)
    n_bins = _check_n_bins(n_bins)
    _, correct = _confidence_and_correct(probs, labels)
    values = {
        "accuracy": correct.mean(),
        "ece": ece(probs, labels, n_bins),
        "adaptive_ece": adaptive_ece(probs, labels, n_bins),
        "classwise_ece": classwise_ece(probs, labels, n_bins),
        "nll": nll(probs, labels),
        "brier": brier(probs, labels),
        "balanced_accuracy": balanced_accuracy(probs, labels),
        "macro_f1": macro_f1(probs, labels),
    }
    # one transfer for all values
    flat = torch.stack([v.to(torch.float64) for v in values.values()]).cpu().tolist()
    return dict(zip(values, flat))
