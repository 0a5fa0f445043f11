"""Statistics assembly: :class:`~adaptive_focal.BatchStats` from the kernels' accumulators and from the softmax
loss's log-probabilities.

The sigmoid reference path computes its own statistics next to its loss (:mod:`._sigmoid`); everything here runs
under ``no_grad`` on detached values and never synchronises with the device.
"""

from __future__ import annotations

import torch

from .. import _kernels
from .._kernels.layout import conf_offset
from ..stats import BatchStats, default_edges
from ._gamma import Gamma

#: default statistics edges per (bins, device, dtype), each with the version it was made at: every BatchStats of
#: a run shares one tensor, rebuilt if anything changed it in place
_EDGES: dict = {}


def stat_edges(gamma: Gamma, stat_bins: int, device, dtype=torch.float32) -> torch.Tensor:
    """The statistics' bin edges: the GammaTable's when gamma is one, else ``stat_bins`` equal-width bins."""
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


# ---------------------------------------------------------------------------------------------------------------
# sigmoid: the kernel accumulator
# ---------------------------------------------------------------------------------------------------------------
def from_sigmoid_acc(acc: torch.Tensor, edges: torch.Tensor, num_classes: int,
                     sum_loss: torch.Tensor | None = None, confidence: bool = False) -> BatchStats:
    """BatchStats viewing the float64 accumulator of the kernel contract (layout: ``_kernels/__init__.py``); the
    int64 and float32 fields are converted in one operation each, and each field is one view of them (this runs
    every training step, where each tensor operation costs a microsecond or more: the (C, B) fields are made with
    ``as_strided`` rather than a slice and a ``view``). ``sum_loss`` replaces the accumulator's. ``confidence``:
    the accumulator holds the confidence bins (``need_conf``); without them those fields are None."""
    b, c = edges.numel() - 1, num_classes
    o = conf_offset(c, b)  # conf_count, class_conf_count, conf_sum, correct_sum, class_conf_sum, class_correct_sum
    f = o + b + c * b
    # the float fields between the counts convert harmlessly
    ints = acc[:f if confidence else 5 + b + c].to(torch.int64)
    floats = acc.to(torch.float32)
    bins = {} if not confidence else dict(
        conf_count=ints[o:o + b],
        class_conf_count=ints.as_strided((c, b), (b, 1), o + b),
        conf_sum=floats[f:f + b],
        correct_sum=floats[f + b:f + 2 * b],
        class_conf_sum=floats.as_strided((c, b), (b, 1), f + 2 * b),
        class_correct_sum=floats.as_strided((c, b), (b, 1), f + 2 * b + c * b),
    )
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
        mode="sigmoid",
        **bins,
    )


def sigmoid_c_pass(x3, t3, g: Gamma, gval, alpha, weight3, ignore_index, ls, detach, edges, num_classes,
                   total, confidence: bool) -> BatchStats:
    """The statistics of a small float32 CPU input in one C pass (instead of about sixty small tensor operations);
    the loss sum ``total`` stays the PyTorch formulation's, so ``return_stats`` never changes the loss.
    ``confidence``: with the confidence bins."""
    with torch.no_grad():
        gval = gval.contiguous()
        acc = _kernels.cpu.sigmoid_focal_stats(  # a scratch buffer, converted by from_sigmoid_acc below
            x3.to(torch.float32).contiguous(), t3.contiguous(), gval, g.kind,
            None if g.table is None else g.table.edges.to(torch.float32),
            None if alpha is None else alpha.contiguous(), None if weight3 is None else weight3.contiguous(),
            None if ignore_index is None else float(ignore_index),
            ls, detach, edges.contiguous(),
            False if g.nonneg else bool((gval < 0).any()),  # known non-negative: no need to read it
            confidence,
        )
    return from_sigmoid_acc(acc, edges, num_classes, sum_loss=total.detach().to(torch.float32),
                            confidence=confidence)


# ---------------------------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------------------------
#: the target value the C statistics pass skips (class indices are never negative)
_IGNORED = -1


def softmax_stats(logp, target, prob_target, valid, per_sample, edges, num_classes, dtype,
                  c_pass: bool) -> BatchStats:
    """Softmax statistics in few operations (they run every training step): with ``c_pass`` (index targets on the
    CPU) one C pass (``_kernels.cpu.softmax_stats``); otherwise one gather, one max, and a single scatter-add of five
    per-sample quantities into (class, confidence bin) cells and p_t bins. Every count and sum follows from those
    cells by reduction."""
    with torch.no_grad():
        if c_pass:
            return _softmax_c_pass(logp, target, valid, per_sample, edges)
        bins = edges.numel() - 1
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
        # float64 keeps the counts exact however many samples (pixels) a batch has; ignored samples add exact
        # zeros, whatever their logits
        weights = torch.stack([v, conf, correct, p_t, v])
        weights = (weights if valid is None else torch.where(valid, weights, 0.0)).reshape(5, -1).to(torch.float64)
        cells = torch.zeros(5, num_classes * bins, device=logp.device, dtype=torch.float64)
        cells.scatter_add_(1, index, weights)
        per_class = cells[:4].view(4, num_classes, bins)
        return _softmax_from_cells(per_class, cells[4, :bins], sum_grad_norm, per_sample, edges)


def _softmax_c_pass(logp, target, valid, per_sample, edges) -> BatchStats:
    """One C pass instead of a few dozen small tensor operations (this runs every training step)."""
    f32 = torch.float32
    bins = edges.numel() - 1
    n, c = logp.shape[0], logp.shape[1]
    kept = torch.where(valid, target, _IGNORED)  # ignored samples are marked for the kernel to skip
    counts, sums = _kernels.cpu.softmax_stats(
        logp.reshape(n, c, -1).contiguous(), kept.reshape(n, -1).contiguous(), _IGNORED, edges.to(torch.float32))
    b, cb = bins, c * bins
    loss_sum = per_sample.sum().to(f32)
    return BatchStats(  # views of the two buffers, in the kernel's layout
        edges=edges,
        mode="softmax",
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


def _softmax_from_cells(per_class, pt_hist, sum_grad_norm, per_sample, edges) -> BatchStats:
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
        mode="softmax",
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
