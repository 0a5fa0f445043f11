"""BatchStats: the difficulty statistics a focal loss computes in the same pass as its value.

Every field is a *sum* (or a count) held as a tensor on the loss's device, so statistics of several batches, or
of several processes, combine exactly by addition, and nothing forces a host synchronisation until a caller asks
for a Python number. Policies read the means (``mean_pt``, ``class_mean_pt``, ...) from the combined sums.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["BatchStats", "default_edges"]

#: the losses that compute statistics
MODES = ("sigmoid", "softmax")


def check_bins(bins) -> None:
    """Validates a number of statistics bins (the losses' ``stat_bins``)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"stat_bins must be a positive integer, got {bins!r}")


def default_edges(bins: int = 15, device: torch.device | str | None = None) -> torch.Tensor:
    """``bins`` equal-width bin edges on [0, 1] (15 by default, the usual ECE binning)."""
    check_bins(bins)
    return torch.linspace(0.0, 1.0, bins + 1, device=device)


def _distributed() -> bool:
    """Whether a torch.distributed process group is initialised (checked every training step, so kept cheap)."""
    return _DIST_AVAILABLE and torch.distributed.is_initialized()


_DIST_AVAILABLE = torch.distributed.is_available()


@dataclass
class BatchStats:
    """Sums over the non-ignored elements (sigmoid) or samples (softmax) of one or more batches.

    Attributes:
        edges: (B + 1,) bin edges of the histograms (equal in every addend; not summed).
        count: number of elements / samples (int64).
        n_pos: elements whose raw target is >= 0.5 (sigmoid); equal to ``count`` for softmax.
        sum_pt: sum of p_t, the probability in the modulating factor of the target's term: sigmoid
            ``p t' + (1 - p)(1 - t')`` with the (smoothed) target t'; softmax with index targets the probability of
            the target class (with or without label smoothing), with probability targets ``sum_c y_c q_c``.
        sum_loss: sum of the unreduced losses.
        sum_grad_norm: sum of ``|p - y|``, the gradient norm of Li et al. (2019, GHM); for softmax
            ``0.5 * sum_c |q_c - y_c|`` per sample.
        pt_hist: (B,) counts of p_t per bin.
        class_count: (C,) elements per class (sigmoid: index along dim 1) or samples per target class (softmax).
        class_sum_pt: (C,) sum of p_t per class.
        conf_count, conf_sum, correct_sum: (B,) per confidence bin (the bins of ``edges``): the number of
            predictions whose confidence falls in the bin, the sum of their confidences and the number predicted
            correctly, which is what expected calibration error and AdaFocal need. Softmax: a sample's confidence is
            ``max_c q_c`` and it is correct when its target class has the highest probability (a tie counts as
            correct; with probability targets the target class is their argmax). Sigmoid: every element is a
            binary prediction, the two-class softmax of the logits ``(0, x)``: confidence ``max(p, 1 - p)`` and
            correct when the sign of the logit agrees with the raw target read as a label (``x > 0`` for
            ``t >= 0.5``, ``x < 0`` for ``t < 0.5``; ``x = 0``, where p = 1/2, is a tie and counts as correct). A
            soft target counts as the label it rounds to (``t >= 0.5`` positive), as in ``n_pos``. Sigmoid
            statistics carry them only when asked (``confidence_stats=True``: they are sums per element, the
            largest part of the statistics' cost); None in statistics built without them.
        class_conf_count, class_conf_sum, class_correct_sum: (C, B) the same three split by class (their sums over
            classes are the three above), for class-wise calibration: softmax by the sample's target class, sigmoid
            by the element's index along dim 1 (its label).
        sum_pt_pos: sum of p_t over the elements ``n_pos`` counts (raw target >= 0.5); equal to ``sum_pt`` for
            softmax, where every sample counts as positive.
        class_sum_grad_pos, class_sum_grad_neg: (C,) sigmoid only (None for softmax): per class, the sums of
            ``|dl/dx| * t`` and ``|dl/dx| * (1 - t)`` over the elements, with t the raw target (before label
            smoothing) and dl/dx the derivative of the element's unreduced loss with respect to its logit (alpha,
            weight and the modulating factor included; with ``detach_modulator=True`` the factor counts as a
            constant, so it is the gradient the loss back-propagates, without the reduction's 1 / denominator).
            Their ratio is the positive-to-negative gradient ratio of Equalized Focal Loss (Li et al., 2022).

        mode: ``"sigmoid"`` or ``"softmax"``, the loss that computed the statistics. Left out (None), it is
            read from the fields as statistics from before it existed carried it: softmax statistics have the
            confidence bins and not the per-class gradient sums, sigmoid statistics the gradient sums (and the
            confidence bins or not).

        The fields after ``class_sum_pt`` default to None, for statistics built without them; a sum with such
        statistics has None there too.

    Example:
        >>> import torch
        >>> from adaptive_focal import softmax_focal_loss
        >>> logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 1, 0])
        >>> _, whole = softmax_focal_loss(logits, target, return_stats=True)
        >>> _, a = softmax_focal_loss(logits[:2], target[:2], return_stats=True)
        >>> _, b = softmax_focal_loss(logits[2:], target[2:], return_stats=True)
        >>> both = a + b  # statistics of batches (or ranks) add up exactly
        >>> int(both.count), torch.equal(both.pt_hist, whole.pt_hist), round(float(both.mean_pt), 4)
        (3, True, 0.704)
    """

    edges: torch.Tensor
    count: torch.Tensor
    n_pos: torch.Tensor
    sum_pt: torch.Tensor
    sum_loss: torch.Tensor
    sum_grad_norm: torch.Tensor
    pt_hist: torch.Tensor
    class_count: torch.Tensor
    class_sum_pt: torch.Tensor
    conf_count: torch.Tensor | None = None
    conf_sum: torch.Tensor | None = None
    correct_sum: torch.Tensor | None = None
    class_conf_count: torch.Tensor | None = None
    class_conf_sum: torch.Tensor | None = None
    class_correct_sum: torch.Tensor | None = None
    sum_pt_pos: torch.Tensor | None = None
    class_sum_grad_pos: torch.Tensor | None = None
    class_sum_grad_neg: torch.Tensor | None = None
    mode: str | None = None

    _SUMMED = (
        "count", "n_pos", "sum_pt", "sum_loss", "sum_grad_norm", "pt_hist", "class_count", "class_sum_pt",
        "conf_count", "conf_sum", "correct_sum", "class_conf_count", "class_conf_sum", "class_correct_sum",
        "sum_pt_pos", "class_sum_grad_pos", "class_sum_grad_neg",
    )

    def __post_init__(self) -> None:
        if self.mode is None:
            self.mode = ("softmax" if self.conf_count is not None and self.class_sum_grad_pos is None
                         else "sigmoid")
        elif self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {self.mode!r}")

    # -- derived values -------------------------------------------------------------------------------------
    @property
    def num_bins(self) -> int:
        return self.edges.numel() - 1

    @property
    def num_classes(self) -> int:
        return self.class_count.numel()

    def _mean(self, total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        count = count.to(total.dtype)
        return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))

    @property
    def mean_pt(self) -> torch.Tensor:
        return self._mean(self.sum_pt, self.count)

    @property
    def mean_loss(self) -> torch.Tensor:
        return self._mean(self.sum_loss, self.count)

    @property
    def mean_grad_norm(self) -> torch.Tensor:
        return self._mean(self.sum_grad_norm, self.count)

    @property
    def class_mean_pt(self) -> torch.Tensor:
        """Mean p_t per class (NaN for classes with no element)."""
        return self._mean(self.class_sum_pt, self.class_count)

    @property
    def mean_pt_pos(self) -> torch.Tensor | None:
        """Mean p_t over the positive elements (raw target >= 0.5); NaN without any, None without ``sum_pt_pos``."""
        if self.sum_pt_pos is None:
            return None
        return self._mean(self.sum_pt_pos, self.n_pos)

    @property
    def mean_pt_neg(self) -> torch.Tensor | None:
        """Mean p_t over the other elements (NaN without any, as always for softmax); None without ``sum_pt_pos``."""
        if self.sum_pt_pos is None:
            return None
        return self._mean(self.sum_pt - self.sum_pt_pos.to(self.sum_pt.device), self.count - self.n_pos)

    # -- combination ----------------------------------------------------------------------------------------
    def __add__(self, other: BatchStats) -> BatchStats:
        if not isinstance(other, BatchStats):
            return NotImplemented
        if self.edges.shape != other.edges.shape or not torch.equal(self.edges, other.edges.to(self.edges.device)):
            raise ValueError("BatchStats can only be added when their bin edges are equal")
        if self.class_count.shape != other.class_count.shape:
            raise ValueError(
                f"BatchStats can only be added with the same number of classes, got {self.num_classes} "
                f"and {other.num_classes}"
            )
        if self.mode != other.mode:
            raise ValueError(f"cannot add {self.mode} and {other.mode} BatchStats")
        kwargs = {"edges": self.edges, "mode": self.mode}
        for name in self._SUMMED:
            a, b = getattr(self, name), getattr(other, name)
            kwargs[name] = None if a is None or b is None else a + b.to(a.device)
        return BatchStats(**kwargs)

    def __radd__(self, other):
        if other == 0:  # lets sum() start from 0
            return self
        return NotImplemented

    def to(self, device: torch.device | str) -> BatchStats:
        return BatchStats(**{f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                             for f in fields(self)})

    def all_reduce(self, group=None) -> BatchStats:
        """Sums the statistics over the processes of ``group`` (``torch.distributed``); returns a new object.

        One collective: the fields are packed into a float64 buffer (exact for counts below 2**53) and unpacked
        into their own dtypes. Outside an initialised process group it returns ``self``.
        """
        if not _distributed():
            return self
        import torch.distributed as dist

        parts = [(name, getattr(self, name)) for name in self._SUMMED if getattr(self, name) is not None]
        flat = torch.cat([value.reshape(-1).to(torch.float64) for _, value in parts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        out, offset = {}, 0
        for name, value in parts:
            n = value.numel()
            out[name] = flat[offset:offset + n].reshape(value.shape).to(value.dtype)
            offset += n
        return BatchStats(edges=self.edges, mode=self.mode, **out)

    def state_dict(self) -> dict:
        """The fields as a plain dict: CPU tensors, None for absent fields, and the mode as a string."""
        return {f.name: (v.detach().cpu() if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict) -> BatchStats:
        """The statistics of ``state_dict()``; a state saved before a field existed leaves it None (and a state
        without ``mode`` has its mode read from the fields)."""
        return cls(**{f.name: state.get(f.name) for f in fields(cls)})
