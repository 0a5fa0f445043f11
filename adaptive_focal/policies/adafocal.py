"""AdaFocal (Ghosh, Schaaf and Gormley, NeurIPS 2022) and a class-wise variant: gamma per confidence bin, moved
each epoch by the validation calibration gap of that bin, for softmax and sigmoid losses.

Sources. "AdaFocal: Calibration-aware Adaptive Focal Loss", A. Ghosh, T. Schaaf, M. R. Gormley, NeurIPS 2022
(Sec. 4, the calibration-aware update of gamma per validation bin; Sec. 5, switching between focal and
inverse-focal loss, clipping) and the authors' reference implementation, github.com/3mcloud/adafocal
(``losses/adafocal.py``, ``AdaFocal.update_bin_stats``; defaults in ``main.py``; equal-mass validation bins in
``utils/metrics.py``, ``adaECE_error_mukhoti``), commit 3e1a38d. The paper's equation numbers could not be checked
here, so the rule below is stated as the reference implementation executes it; this code is written anew.

The rule, per bin b, once per epoch, with ``E_b = C_b - A_b`` (mean confidence minus accuracy of the validation
samples whose confidence ``max_c q_c`` falls in bin b; 0 for an empty bin):

1. multiplicative update with the sign rule::

       g = gamma_b * exp(+lam * E_b)   if gamma_b > 0   (focal loss: over-confident bins get a larger gamma)
       g = gamma_b * exp(-lam * E_b)   if gamma_b <= 0  (inverse focal: over-confident bins get a smaller |gamma|)

2. switch between focal and inverse-focal loss: if ``|g| < S_th`` then ``g = -S_th`` when ``g > 0`` (focal to
   inverse focal) and ``g = +S_th`` otherwise (inverse focal to focal; also a gamma of exactly 0);
3. clip: ``gamma_b = min(max(g, gamma_min), gamma_max)``.

Published defaults: ``lam = 1``, ``gamma_init = 1``, ``S_th = 0.2``, ``[gamma_min, gamma_max] = [-2, 20]``, 15
bins. A negative gamma selects the inverse-focal factor ``(1 + p_t)**|gamma|`` in this package's losses, as in
the reference implementation. Training samples are looked up by their true-class probability p_t in the
:class:`~adaptive_focal.GammaTable` the policy writes into the loss (the reference implementation does the same:
bins by validation confidence, lookup by training p_t).

Note: the multiplicative rule also applies in inverse-focal mode (with the opposite sign); an additive update
``gamma_b - lam * E_b`` below ``S_th`` is not what the reference implementation does.

Binning and its approximation. AdaFocal re-bins the validation confidences into equal-mass bins every epoch,
which needs their quantiles; :class:`~adaptive_focal.BatchStats` only holds sums over fixed bin edges (when the
gamma is a GammaTable, the table's edges). So here, at each ``epoch_end``:

* the gap ``E_b`` is measured on the bins in force during the epoch (the table's current edges), rather than on
  freshly computed equal-mass bins of this epoch's validation confidences;
* with ``rebin=True`` (default) the edges for the next epoch are the quantiles ``k / B`` (k = 1 .. B-1) of a
  model of the validation confidences built from what BatchStats has per current bin, their number
  (``conf_count``) and their sum (``conf_sum``): inside each bin they are taken as uniform on the widest interval
  in the bin centred on the bin's mean confidence (and not below 1 / C, the least possible confidence), see
  :func:`equal_mass_edges`. This is exact only when the confidences follow that model; each edge's error is
  bounded by the width of the current bin holding it, and since the next histogram is taken over the new edges
  the bins refine from epoch to epoch while the confidences drift slowly (on a small MLP, each re-derived bin
  held 57-87 of 1024 validation samples after the first epoch and 62-78 later, against 68.3 for exact
  equal-mass bins). Edges are kept at least 1e-6 apart (confidences piled at exactly 1.0 would otherwise give
  equal edges). Bin b keeps its gamma while its edges move, as in the reference implementation. With
  ``rebin=False`` the B equal-width bins of the start are kept (no approximation, but not equal-mass).

The first epoch uses B equal-width bins, like the reference implementation. Under ``torch.distributed`` the
validation statistics are summed over the ranks (the base class's ``sync_stats``), so every rank writes the same
table. Validation statistics that are not finite are skipped (the table stays), as is an empty validation set.

Sigmoid losses (binary and multi-label). Every element of a sigmoid output is a binary prediction, the same as a
two-class softmax over the logits ``(0, x)``: its class probabilities are ``(1 - p, p)``. AdaFocal's calibration
is top-label calibration (the expected calibration error of Guo et al., 2017, "On Calibration of Modern Neural
Networks", which the paper reports and whose bins it adapts), whose confidence is the largest class probability
and whose accuracy is whether that class is the target, so for an element:

* confidence ``max(p, 1 - p)`` (in [0.5, 1]), not ``p`` of the positive class: the positive-class probability
  would describe calibration of the label's frequency (a reliability diagram of p), a different quantity from the
  one the paper's gap ``E_b`` measures and from the softmax case;
* correct when the predicted class (1 for p > 0.5, 0 for p < 0.5) is the target's (raw target t >= 0.5); at
  p = 0.5 it counts as correct, as a tie for the top probability does for softmax;
* the training lookup is by the element's p_t, as for softmax samples.

So a binary problem gives exactly the gaps and gammas of the same problem written as a two-class softmax. What
differs from the softmax case: the unit is the element (a multi-label output of C labels contributes C
predictions per sample, and a sample's confidently-right labels and confidently-wrong ones land in different
bins); confidences are never below 0.5, which is the floor of the re-derived edges (1 / C for softmax); and
``ClasswiseAdaFocal`` splits the bins by each element's label (its index along dim 1) rather than by the sample's
target class. The sigmoid statistics carry the per-confidence-bin fields ``conf_count``, ``conf_sum`` and
``correct_sum`` (and the (C, B) ``class_*`` ones for the class-wise variant) with these definitions
(:class:`~adaptive_focal.BatchStats`): on every path of the loss they decide correctness by the sign of the logit,
``p > 0.5`` exactly, so that a p rounded to 0.5 never turns a prediction into a tie; statistics built without
those fields (by hand, saved before they existed, or computed without ``confidence_stats=True``) make
``epoch_end`` say what is missing.

The sigmoid confidence bins are opt-in (``confidence_stats``: they are sums per element, which the per-step
policies never read), so both policies set ``loss.confidence_stats = True`` on a sigmoid loss when they are built:
its validation statistics then carry the bins without any step of the user's. That costs every call of the loss
with ``return_stats=True``, training steps included, about 10-20% more of the sigmoid loss's time on the CPU
kernel (statistics 17-32% over the loss instead of 7-10% in the README's Benchmarks); a loop that wants it only
on the validation pass can set ``loss.confidence_stats`` back to False for training and True for validation.
"""

from __future__ import annotations

import math

import torch

from ..gamma_forms import GammaTable
from ..loss import FocalLoss
from ..stats import BatchStats
from .base import GammaPolicy, RunContext, _check_number, register_policy, state_tensor
from .space import Float

__all__ = ["AdaFocal", "ClasswiseAdaFocal", "adafocal_update", "equal_mass_edges"]

#: the (B,) confidence-bin sums AdaFocal reads from the validation statistics
BIN_FIELDS = ("conf_count", "conf_sum", "correct_sum")
#: the (C, B) per-class x confidence-bin sums ClasswiseAdaFocal reads (softmax: samples of target class c whose
#: confidence max_c q_c falls in bin b; sigmoid: elements of label c whose confidence max(p, 1 - p) does)
CLASSWISE_FIELDS = ("class_conf_count", "class_conf_sum", "class_correct_sum")


def adafocal_update(gamma: torch.Tensor, gap: torch.Tensor, lam: float, switch_threshold: float,
                    gamma_min: float, gamma_max: float) -> torch.Tensor:
    """One AdaFocal update of the gammas ``gamma`` given the calibration gaps ``gap`` (same shape).

    Multiplicative update with the sign rule, switch at ``|gamma| < switch_threshold``, clip (see the module
    docstring for the rule and its source).

    Example:
        >>> import torch
        >>> g = adafocal_update(torch.tensor([1.0, 0.25, -0.25, 19.0]), torch.tensor([0.1, -0.5, 0.5, 0.2]),
        ...                     lam=1.0, switch_threshold=0.2, gamma_min=-2.0, gamma_max=20.0)
        >>> [round(v, 4) for v in g.tolist()]  # e^0.1; 0.25 e^-0.5 < 0.2: to -0.2; -0.25 e^-0.5: to +0.2; clipped
        [1.1052, -0.2, 0.2, 20.0]
    """
    up = gamma * torch.exp(lam * gap)
    down = gamma * torch.exp(-lam * gap)
    g = torch.where(gamma > 0, up, down)
    s = torch.full_like(g, switch_threshold)
    g = torch.where(g.abs() < switch_threshold, torch.where(g > 0, -s, s), g)
    return g.clamp(gamma_min, gamma_max)


def equal_mass_edges(edges: torch.Tensor, counts: torch.Tensor, sums: torch.Tensor | None = None,
                     min_width: float = 1e-6, floor: float = 0.0) -> torch.Tensor | None:
    """Approximately equal-mass bin edges from a histogram: the quantiles ``k / B`` of ``counts`` over ``edges``.

    BatchStats gives, per bin, only the number of values and (``sums``) their sum, so the quantiles are those of a
    model of the values: inside bin k they are taken as uniform on the widest interval within the bin that has
    the bin's mean ``m`` at its centre, ``[m - r, m + r]`` with ``r = min(m - edges[k], edges[k + 1] - m)`` (the
    whole bin when ``sums`` is None), and the cumulative count is interpolated linearly there; no value is taken
    to lie below ``floor`` (a softmax confidence is at least 1 / C). The result is exact only when the values
    follow that model. Edges closer than ``min_width`` (values piled on one point, e.g. confidences of exactly 1.0)
    are then pushed apart to ``min_width`` so that they stay strictly ascending.

    Returns:
        float32 edges ``[0, q_1, ..., q_{B-1}, 1]`` with as many bins as ``counts``, or None when ``counts`` is
        all zero (nothing to place the edges by).

    Example:
        >>> import torch
        >>> equal_mass_edges(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]), torch.tensor([0, 10, 0, 10]))
        tensor([0.0000, 0.3750, 0.5000, 0.8750, 1.0000])
        >>> equal_mass_edges(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0, 4]), torch.tensor([0.0, 3.6]))
        tensor([0.0000, 0.9000, 1.0000])
    """
    e = edges.detach().to("cpu", torch.float64)
    h = counts.detach().to("cpu", torch.float64)
    bins = h.numel()
    total = float(h.sum())
    if total <= 0:
        return None
    lo, hi = e[:-1].clamp(min=min(float(floor), 1.0)), e[1:]
    lo = torch.minimum(lo, hi)
    if sums is not None:
        m = (sums.detach().to("cpu", torch.float64) / h.clamp_min(1.0)).clamp(lo, hi)
        r = torch.minimum(m - lo, hi - m)
        lo, hi = torch.where(h > 0, m - r, lo), torch.where(h > 0, m + r, hi)
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), h.cumsum(0)])  # cum[k] = count below bin k
    targets = torch.arange(1, bins, dtype=torch.float64) * (total / bins)
    # the bin k holding each target: cum[k] < target <= cum[k + 1], so counts[k] > 0
    k = torch.searchsorted(cum[1:], targets, right=False).clamp(max=bins - 1)
    q = (lo[k] + (targets - cum[k]) / h[k] * (hi[k] - lo[k])).tolist()
    # strictly ascending with gaps >= min_width, inside (0, 1): a pass up from 0, then a pass down from 1
    width = min(float(min_width), 1.0 / (2 * bins))
    prev = 0.0
    for i in range(len(q)):
        q[i] = prev = max(q[i], prev + width)
    nxt = 1.0
    for i in reversed(range(len(q))):
        q[i] = nxt = min(q[i], nxt - width)
    return torch.tensor([0.0] + q + [1.0], dtype=torch.float64).to(torch.float32)


def _check_finite(name: str, value: float) -> float:
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


class _AdaFocalBase(GammaPolicy):
    """The AdaFocal rule over a GammaTable of values ``shape``; subclasses supply the per-bin gaps."""

    needs_validation = True
    reads_validation = BIN_FIELDS
    #: the validation fields a policy needs, each of shape (B,) or (C, B)
    _fields: tuple[str, ...] = BIN_FIELDS

    def __init__(self, loss: FocalLoss, *, lam: float, gamma_init: float, switch_threshold: float,
                 gamma_min: float, gamma_max: float, num_bins: int, rebin: bool, shape_prefix: tuple) -> None:
        super().__init__(loss)  # checks the loss before anything is written
        self.lam = _check_finite("lam", _check_number("lam", lam, 0.0, low_open=True))
        self.gamma_min = _check_number("gamma_min", gamma_min, -20.0, 20.0)
        self.gamma_max = _check_number("gamma_max", gamma_max, self.gamma_min, 50.0, low_open=True)
        self.gamma_init = _check_number("gamma_init", gamma_init, self.gamma_min, self.gamma_max)
        self.switch_threshold = _check_number("switch_threshold", switch_threshold, 0.0, self.gamma_max)
        self.num_bins = _check_number("num_bins", num_bins, 1, 1000, integer=True)
        if not isinstance(rebin, bool):
            raise ValueError(f"rebin must be True or False, got {rebin!r}")
        self.rebin = rebin
        # the policy's state: the table's edges (float32, exactly the loss's) and values (float64, so that the
        # threshold tests are not perturbed by float32 rounding; the loss gets them as float32)
        self.edges = torch.linspace(0.0, 1.0, self.num_bins + 1, dtype=torch.float32)
        self.values = torch.full(shape_prefix + (self.num_bins,), self.gamma_init, dtype=torch.float64)
        self._write(self._table())
        if loss.mode == "sigmoid":  # the validation statistics must carry the (opt-in) sigmoid confidence bins
            loss.confidence_stats = True

    def _table(self) -> GammaTable:
        return GammaTable(self.edges, self.values.to(torch.float32))

    # -- checks: all of them before epoch_end changes anything --------------------------------------------------
    def check_stats(self, name: str, stats: BatchStats) -> None:
        if name != "val_stats":
            return
        edges = stats.edges.detach().to("cpu", torch.float32)
        if edges.shape != self.edges.shape or not torch.equal(edges, self.edges):
            raise ValueError(
                f"val_stats must be binned by the loss's GammaTable edges {self.edges.tolist()}, got edges "
                f"{edges.tolist()}: compute them with the policy's loss (loss(logits, target, return_stats=True)) "
                f"or with gamma=loss.gamma"
            )
        missing = [f for f in self._fields if getattr(stats, f, None) is None]
        if missing:  # statistics built without the sigmoid bins, by hand, or from before they existed
            if stats.mode == "sigmoid":
                raise ValueError(
                    f"the {self.name!r} policy needs val_stats with {', '.join(missing)} (per-element confidence "
                    f"max(p, 1 - p) bins); these sigmoid statistics do not carry them: compute them with "
                    f"confidence_stats=True (the policy's loss has it: loss(logits, target, return_stats=True))")
            raise ValueError(f"the {self.name!r} policy needs val_stats with {', '.join(missing)} (per-sample "
                             f"confidence max_c q_c bins); these softmax statistics do not carry them")
        for f in self._fields:
            value = getattr(stats, f)
            shape = self.values.shape if f.startswith("class_") else (self.num_bins,)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"val_stats.{f} must be a tensor of shape {tuple(shape)}, got {got}")

    # -- the update ----------------------------------------------------------------------------------------------
    def _gaps(self, stats: BatchStats) -> torch.Tensor:
        raise NotImplementedError

    def compute_epoch(self, val_stats: BatchStats):
        counts = val_stats.conf_count if val_stats.conf_count is not None else val_stats.class_conf_count
        if int(counts.sum()) == 0:  # an empty (or skipped) validation set measures nothing: the table stays
            return None
        values = adafocal_update(self.values, self._gaps(val_stats), self.lam, self.switch_threshold,
                                 self.gamma_min, self.gamma_max)
        edges = self.edges
        if self.rebin:
            # the least possible confidence: 1 / C of a softmax over C classes, 1 / 2 of a binary element
            floor = 0.5 if val_stats.mode == "sigmoid" else 1.0 / val_stats.num_classes
            count, total = val_stats.conf_count, val_stats.conf_sum
            if count is None:  # class-wise fields only: the global bins are their sums over classes
                count, total = val_stats.class_conf_count.sum(0), val_stats.class_conf_sum.sum(0)
            new = equal_mass_edges(self.edges, count, total, floor=floor)
            if new is not None:
                edges = new
        self.values, self.edges = values, edges
        return self._table()

    @staticmethod
    def _gap(count: torch.Tensor, conf_sum: torch.Tensor, correct_sum: torch.Tensor) -> torch.Tensor:
        """Mean confidence minus accuracy per bin, 0 where a bin is empty (float64)."""
        n = count.detach().to("cpu", torch.float64)
        conf = conf_sum.detach().to("cpu", torch.float64)
        gap = (conf - correct_sum.detach().to("cpu", torch.float64)) / n.clamp_min(1.0)
        return torch.where(n > 0, gap, torch.zeros_like(gap))

    # -- state ---------------------------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {"edges": self.edges.clone(), "values": self.values.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restores ``state_dict()`` and writes the restored table (edges and values) into the loss."""
        super().load_state_dict(state)
        self._write(self._table())  # the loss follows the policy's state, whatever 'last_gamma' held

    def _table_state(self, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        edges = state_tensor(state, "edges", self.edges)
        values = state_tensor(state, "values", self.values)
        try:
            GammaTable(edges, values)  # validates the edges (from 0 to 1, strictly ascending)
        except ValueError as err:
            raise ValueError(f"state['edges'] / state['values'] are not a valid table: {err}") from None
        if bool((values < self.gamma_min).any() or (values > self.gamma_max).any()):
            raise ValueError(f"state['values'] must lie in [gamma_min, gamma_max] = [{self.gamma_min}, "
                             f"{self.gamma_max}], got {values.tolist()}")
        return edges, values

    def check_extra_state(self, state: dict) -> None:
        self._table_state(state)

    def load_extra_state(self, state: dict) -> None:
        self.edges, self.values = self._table_state(state)


@register_policy("adafocal")
class AdaFocal(_AdaFocalBase):
    """AdaFocal (Ghosh et al., NeurIPS 2022): one gamma per confidence bin, updated each epoch from validation.

    At each ``epoch_end(val_stats)``, with ``E_b`` the validation calibration gap (mean confidence minus accuracy)
    of bin b: ``gamma_b <- gamma_b * exp(lam * E_b)`` if ``gamma_b > 0``, else ``gamma_b * exp(-lam * E_b)``; a
    result with ``|gamma_b| < switch_threshold`` switches sides (to ``-switch_threshold``, inverse focal, from a
    positive gamma; to ``+switch_threshold`` otherwise); then clipped to ``[gamma_min, gamma_max]``. The gammas
    are written as a :class:`~adaptive_focal.GammaTable` in which training samples are looked up by their p_t.
    The validation statistics must come from the policy's loss (``loss(logits, target, return_stats=True)``), so
    that their bins are the table's. See the module docstring for the sources and for how the equal-mass bins are
    approximated (``rebin=True``) or kept fixed (``rebin=False``).

    On a sigmoid loss every element is one binary prediction with confidence ``max(p, 1 - p)`` (see the module
    docstring for why, and for what else differs), and the policy sets ``loss.confidence_stats = True``: the
    sigmoid statistics carry the confidence bins only with it, and they cost every ``return_stats=True`` call of
    the loss about 10-20% more of its time on the CPU (see the module docstring).

    Args:
        loss: a :class:`~adaptive_focal.FocalLoss` (softmax or sigmoid).
        lam: the update's step size (lambda in the paper), > 0.
        gamma_init: the gamma of every bin before the first update.
        switch_threshold: S_th, the |gamma| below which focal and inverse-focal loss swap.
        gamma_min, gamma_max: the clipping range.
        num_bins: B, the number of bins.
        rebin: re-derive approximately equal-mass edges from the validation confidences each epoch.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> loss = FocalLoss("softmax")
        >>> policy = create_policy("adafocal", loss, num_bins=3, rebin=False)
        >>> loss.gamma.values
        tensor([1., 1., 1.])
        >>> p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.7, 0.3], [0.4, 0.6]])  # confidences .9, .9, .7, .6
        >>> _, val_stats = loss(p.log(), torch.tensor([0, 1, 0, 1]), return_stats=True)
        >>> policy.epoch_end(val_stats)  # bin 1: E = 0.6 - 1 = -0.4; bin 2: E = (0.9 + 0.9 + 0.7) / 3 - 2 / 3
        >>> loss.gamma.values  # bin 0 is empty (E = 0); e^-0.4; e^0.1667
        tensor([1.0000, 0.6703, 1.1814])
    """

    search_space = {"lam": Float(0.1, 5.0, log=True), "gamma_init": Float(0.0, 5.0)}

    def __init__(self, loss: FocalLoss, lam: float = 1.0, gamma_init: float = 1.0, switch_threshold: float = 0.2,
                 gamma_min: float = -2.0, gamma_max: float = 20.0, num_bins: int = 15, rebin: bool = True) -> None:
        super().__init__(loss, lam=lam, gamma_init=gamma_init, switch_threshold=switch_threshold,
                         gamma_min=gamma_min, gamma_max=gamma_max, num_bins=num_bins, rebin=rebin, shape_prefix=())

    def _gaps(self, stats: BatchStats) -> torch.Tensor:
        return self._gap(*(getattr(stats, f) for f in BIN_FIELDS))


@register_policy("classwise_adafocal")
class ClasswiseAdaFocal(_AdaFocalBase):
    """The AdaFocal rule per class x confidence bin (new in adaptive_focal): a (C, B) GammaTable.

    Each class c has its own gammas ``gamma[c, b]``, moved by the calibration gap of the validation samples *of
    class c* in bin b, ``E[c, b] = mean confidence - accuracy`` over those samples (0 where there are none), with
    exactly :class:`AdaFocal`'s update, switch and clipping; a training sample of class c with true-class
    probability p_t uses ``gamma[c, bin(p_t)]``. A rare class is thus driven by its own calibration instead of
    being averaged into the bins of the frequent ones. The bins' edges are shared by all classes (a GammaTable has
    one set); with ``rebin=True`` they follow the validation confidences of all classes, as in AdaFocal.

    The gaps come from the statistics' (C, B) fields ``class_conf_count``, ``class_conf_sum`` and
    ``class_correct_sum`` (softmax: validation samples of each target class per confidence bin of the table's
    edges; sigmoid: the elements of each label, by their confidence ``max(p, 1 - p)``). On a sigmoid loss the
    policy sets ``loss.confidence_stats = True``, as :class:`AdaFocal` does.

    Args:
        loss: a :class:`~adaptive_focal.FocalLoss` (softmax or sigmoid).
        num_classes: C.
        lam, gamma_init, switch_threshold, gamma_min, gamma_max, num_bins, rebin: as for :class:`AdaFocal`.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss
        >>> from adaptive_focal import ClasswiseAdaFocal
        >>> loss = FocalLoss("softmax")
        >>> policy = ClasswiseAdaFocal(loss, num_classes=2, num_bins=2, rebin=False)
        >>> logits, target = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7]]).log(), torch.tensor([0, 1, 1])
        >>> _, val_stats = loss(logits, target, return_stats=True)
        >>> policy.epoch_end(val_stats)  # class 0, bin 1: E = 0.9 - 1; class 1, bin 1: E = 0.8 - 0.5
        >>> loss.gamma.values
        tensor([[1.0000, 0.9048],
                [1.0000, 1.3499]])
    """

    search_space = AdaFocal.search_space
    requires = ("num_classes",)
    reads_validation = BIN_FIELDS + CLASSWISE_FIELDS
    _fields = CLASSWISE_FIELDS

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """The run's number of classes (the table's rows)."""
        return {} if context.num_classes is None else {"num_classes": context.num_classes}

    def __init__(self, loss: FocalLoss, num_classes: int | None = None, lam: float = 1.0, gamma_init: float = 1.0,
                 switch_threshold: float = 0.2, gamma_min: float = -2.0, gamma_max: float = 20.0,
                 num_bins: int = 15, rebin: bool = True) -> None:
        if num_classes is None:
            raise ValueError("num_classes is required for the 'classwise_adafocal' policy (the table is (C, B))")
        self.num_classes = _check_number("num_classes", num_classes, 1, integer=True)
        super().__init__(loss, lam=lam, gamma_init=gamma_init, switch_threshold=switch_threshold,
                         gamma_min=gamma_min, gamma_max=gamma_max, num_bins=num_bins, rebin=rebin,
                         shape_prefix=(self.num_classes,))

    def _gaps(self, stats: BatchStats) -> torch.Tensor:
        return self._gap(*(getattr(stats, f) for f in CLASSWISE_FIELDS))
