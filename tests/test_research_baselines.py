"""research/baselines.py: class-imbalance baselines against hand-computed values and independent references.

References here are written from the papers' formulas with plain torch ops (log_softmax / logsigmoid, explicit
sums), not with the code under test; each baseline is also checked to reduce to plain CE / BCE at its neutral
setting.
"""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

import research.baselines as B
from adaptive_focal import FocalLoss, sigmoid_focal_loss

f64 = torch.float64


def close(a, b, rtol=1e-6, atol=None):
    """Elementwise closeness; by default the absolute tolerance is rtol times the largest |b| (float32 results
    carry rounding relative to the batch's largest terms, not to each small one)."""
    a, b = torch.as_tensor(a, dtype=f64), torch.as_tensor(b, dtype=f64)
    if atol is None:
        atol = rtol * max(float(b.abs().max()) if b.numel() else 0.0, 1e-300)
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def ref_softmax_ce(x, y):
    """Per-sample -log softmax(x)_y."""
    return -torch.log_softmax(x.double(), 1).gather(1, y.unsqueeze(1)).squeeze(1)


def ref_softmax_focal(x, y, gamma):
    logq = torch.log_softmax(x.double(), 1).gather(1, y.unsqueeze(1)).squeeze(1)
    return (1 - logq.exp()) ** gamma * (-logq)


def ref_sigmoid_focal(x, t, gamma):
    """Elementwise (1 - p_t)^gamma * BCE, written from the definition."""
    x, t = x.double(), t.double()
    p = torch.sigmoid(x)
    bce = -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x))
    p_t = p * t + (1 - p) * (1 - t)
    return (1 - p_t) ** gamma * bce


def grad_of(fn, x):
    x = x.detach().clone().requires_grad_(True)
    fn(x).backward()
    return x.grad


def test_doctests():
    result = doctest.testmod(B, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 10


# ---------------------------------------------------------------------------------------------------------------
# class-balanced weights and losses
# ---------------------------------------------------------------------------------------------------------------
def test_cb_weights_hand_computed():
    # beta = 0.5, counts (3, 1): raw (1 - b) / (1 - b^n) = (0.5 / 0.875, 0.5 / 0.5) = (4/7, 1); sum 11/7; x C = 2
    close(B.class_balanced_weights([3, 1], beta=0.5, dtype=f64), [8 / 11, 14 / 11], rtol=1e-14)
    # beta = 0.9, counts (1, 10): (0.1 / 0.1, 0.1 / (1 - 0.9^10))
    raw = torch.tensor([1.0, 0.1 / (1 - 0.9 ** 10)], dtype=f64)
    close(B.class_balanced_weights(torch.tensor([1, 10]), beta=0.9, dtype=f64), raw * 2 / raw.sum(), rtol=1e-13)


def test_cb_weights_limits_and_normalisation():
    counts = [5000, 500, 50, 5]
    assert torch.equal(B.class_balanced_weights(counts, beta=0.0), torch.ones(4))
    inv = torch.tensor([1 / 5000, 1 / 500, 1 / 50, 1 / 5], dtype=f64)
    close(B.class_balanced_weights(counts, beta=1.0, dtype=f64), inv * 4 / inv.sum(), rtol=1e-14)
    close(B.class_balanced_weights(counts, beta=1 - 1e-9, dtype=f64), inv * 4 / inv.sum(), rtol=1e-5)
    for beta in (0.9, 0.99, 0.999, 0.9999):
        w = B.class_balanced_weights(counts, beta=beta, dtype=f64)
        close(w.sum(), 4.0, rtol=1e-14)
        raw = torch.tensor([(1 - beta) / (1 - beta ** n) for n in counts], dtype=f64)  # the paper's formula
        close(w, raw * 4 / raw.sum(), rtol=1e-9)
        assert bool((w[1:] >= w[:-1]).all())  # rarer classes weigh more
    assert B.class_balanced_weights(counts).dtype == torch.float32


@pytest.mark.parametrize("bad, match", [
    ({"class_counts": [3, 0, 2]}, r"class_counts.*class\(es\) \[1\]"),
    ({"class_counts": [3, 1], "beta": 1.5}, r"beta must be a finite number in \[0, 1\], got 1.5"),
    ({"class_counts": [3, 1], "beta": -0.1}, r"beta .*got -0.1"),
    ({"class_counts": [[3, 1]]}, r"class_counts must be a non-empty 1-D"),
    ({"class_counts": [3, -1]}, r"class_counts must hold finite values >= 0"),
])
def test_cb_weights_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        B.class_balanced_weights(**bad)


def _data(gen, n=12, c=4):
    x = torch.randn(n, c, generator=gen, dtype=f64) * 2
    y = torch.randint(0, c, (n,), generator=gen)
    return x.float(), y


def test_cb_softmax_beta0_is_cross_entropy(gen):
    x, y = _data(gen)
    y[3] = -100
    loss = B.ClassBalancedLoss([10, 5, 2, 1], beta=0.0, mode="softmax")
    close(loss(x, y), F.cross_entropy(x, y), rtol=1e-5)
    close(grad_of(lambda z: loss(z, y), x), grad_of(lambda z: F.cross_entropy(z, y), x), rtol=1e-5, atol=1e-7)
    ls = B.ClassBalancedLoss([10, 5, 2, 1], beta=0.0, label_smoothing=0.1)
    close(ls(x, y), F.cross_entropy(x, y, label_smoothing=0.1), rtol=1e-5)


def test_cb_sigmoid_beta0_is_bce(gen):
    x, y = _data(gen)
    loss = B.ClassBalancedLoss([10, 5, 2, 1], beta=0.0, mode="sigmoid")
    onehot = F.one_hot(y, 4).float()
    close(loss(x, y), F.binary_cross_entropy_with_logits(x, onehot), rtol=1e-5)
    close(grad_of(lambda z: loss(z, y), x),
          grad_of(lambda z: F.binary_cross_entropy_with_logits(z, onehot), x), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_cb_softmax_matches_paper_formula(gen, gamma):
    counts, beta = [40, 10, 3, 1], 0.99
    x, y = _data(gen)
    y[0] = -100  # ignored: no loss, not counted in the mean
    w = torch.tensor([(1 - beta) / (1 - beta ** n) for n in counts], dtype=f64)
    w = w * 4 / w.sum()
    keep = y != -100
    per = ref_softmax_focal(x[keep], y[keep], gamma) * w[y[keep]]
    loss = B.ClassBalancedLoss(counts, beta=beta, mode="softmax", gamma=gamma)
    close(loss(x, y), per.sum() / keep.sum(), rtol=1e-5)
    assert loss(x, y).dtype == torch.float32
    none = B.ClassBalancedLoss(counts, beta=beta, gamma=gamma, reduction="none")(x, y)
    close(none[keep], per, rtol=1e-5)
    assert none[0] == 0
    close(B.ClassBalancedLoss(counts, beta=beta, gamma=gamma, reduction="sum")(x, y), per.sum(), rtol=1e-5)


def test_cb_mean_differs_from_weighted_mean_by_the_batch_weight(gen):
    """The paper's mean divides by N; F.cross_entropy(weight=w) by sum_i w_{y_i}."""
    counts = [40, 10, 3, 1]
    x, y = _data(gen)
    w = B.class_balanced_weights(counts, beta=0.999)
    cb = B.ClassBalancedLoss(counts, beta=0.999)(x, y)
    weighted = F.cross_entropy(x, y, weight=w)
    close(cb * len(y) / w[y].sum(), weighted, rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_cb_sigmoid_matches_paper_formula(gen, gamma):
    """CB sigmoid / CB focal: w_y times the sum over all C binary terms of the sample (mean over N * C elements)."""
    counts, beta = [40, 10, 3, 1], 0.999
    x, y = _data(gen)
    raw = torch.tensor([(1 - beta) / (1 - beta ** n) for n in counts], dtype=f64)
    w = raw * 4 / raw.sum()
    onehot = F.one_hot(y, 4).double()
    ref = (w[y].unsqueeze(1) * ref_sigmoid_focal(x, onehot, gamma)).sum() / y.numel() / 4
    loss = B.ClassBalancedLoss(counts, beta=beta, mode="sigmoid", gamma=gamma)
    close(loss(x, y), ref, rtol=1e-5)
    # ... which is adaptive_focal's elementwise `weight` with w_y broadcast along the row (not `alpha`)
    lib = sigmoid_focal_loss(x, onehot.float(), gamma=gamma, weight=w[y].float().unsqueeze(1))
    close(lib, ref, rtol=1e-5)


def test_cb_sigmoid_needs_class_indices(gen):
    x, y = _data(gen)
    loss = B.ClassBalancedLoss([4, 3, 2, 1], mode="sigmoid")
    with pytest.raises(ValueError, match="need class index targets"):
        loss(x, F.one_hot(y, 4).float())
    with pytest.raises(ValueError, match=r"target class indices must be in \[0, 4\), got 7"):
        loss(x, torch.full_like(y, 7))
    # the unweighted sigmoid loss takes multi-label float targets as they are
    t = torch.rand(12, 4, generator=gen).round()
    close(B.ClassWeightedLoss(4, mode="sigmoid")(x, t), F.binary_cross_entropy_with_logits(x, t), rtol=1e-5)


def test_cb_focal_exposes_focal_loss_for_gamma_policies(gen):
    x, y = _data(gen)
    loss = B.make_loss("cb_focal", 4, class_counts=[40, 10, 3, 1], gamma=2.0)
    assert isinstance(loss.focal, FocalLoss)
    _, stats = loss(x, y, return_stats=True)
    assert int(stats.count) == 12
    loss.focal.gamma = 0.0  # what a policy does
    close(loss(x, y), B.make_loss("cb_ce", 4, class_counts=[40, 10, 3, 1])(x, y), rtol=1e-6)
    assert "class_weights" in loss.state_dict()


# ---------------------------------------------------------------------------------------------------------------
# logit adjustment
# ---------------------------------------------------------------------------------------------------------------
def test_logit_adjusted_loss_hand_computed():
    # zero logits, priors (3/4, 1/4): adjusted logits are log priors, so the loss is -log prior_y
    x, y = torch.zeros(2, 2), torch.tensor([0, 1])
    close(B.logit_adjusted_loss(x, y, [3, 1]), (-math.log(0.75) - math.log(0.25)) / 2, rtol=1e-6)
    # logits (1, 0), priors (1/2, 1/2) with tau = 2: uniform priors change nothing -> CE = log(1 + e^-1)
    close(B.logit_adjusted_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), [0.5, 0.5], tau=2.0),
          math.log(1 + math.exp(-1)), rtol=1e-6)
    # logits (1, 0), y = 1, priors (0.8, 0.2), tau = 0.5: adjusted (1 + 0.5 log .8, 0.5 log .2)
    a0, a1 = 1 + 0.5 * math.log(0.8), 0.5 * math.log(0.2)
    expected = -(a1 - math.log(math.exp(a0) + math.exp(a1)))
    close(B.logit_adjusted_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), [0.8, 0.2], tau=0.5), expected,
          rtol=1e-6)


def test_logit_adjusted_tau0_is_ce_and_priors_may_be_counts(gen):
    x, y = _data(gen)
    close(B.logit_adjusted_loss(x, y, [40, 10, 3, 1], tau=0.0), F.cross_entropy(x, y), rtol=1e-6)
    close(B.logit_adjusted_loss(x, y, [40, 10, 3, 1]), B.logit_adjusted_loss(x, y, [40 / 54, 10 / 54, 3 / 54, 1 / 54]),
          rtol=1e-6)
    module = B.LogitAdjustedLoss([40, 10, 3, 1], tau=0.0)
    close(module(x, y), F.cross_entropy(x, y), rtol=1e-5)
    close(grad_of(lambda z: module(z, y), x), grad_of(lambda z: F.cross_entropy(z, y), x), rtol=1e-5, atol=1e-7)


def test_logit_adjusted_module_and_focal_variant(gen):
    counts = [40, 10, 3, 1]
    x, y = _data(gen)
    prior = torch.tensor(counts, dtype=f64) / sum(counts)
    adj = x.double() + 1.5 * prior.log()
    close(B.LogitAdjustedLoss(counts, tau=1.5)(x, y), ref_softmax_ce(adj, y).mean(), rtol=1e-5)
    close(B.logit_adjusted_loss(x, y, counts, tau=1.5), ref_softmax_ce(adj, y).mean(), rtol=1e-5)
    ref = ref_softmax_focal(adj, y, 2.0).mean()
    close(B.logit_adjusted_focal_loss(x, y, counts, tau=1.5, gamma=2.0), ref, rtol=1e-5)
    close(B.LogitAdjustedLoss(counts, tau=1.5, gamma=2.0)(x, y), ref, rtol=1e-5)
    close(B.logit_adjusted_focal_loss(x, y, counts, gamma=0.0), B.logit_adjusted_loss(x, y, counts), rtol=1e-5)


def test_posthoc_logit_adjust():
    x = torch.tensor([[2.0, 1.0], [0.0, 0.0]])
    out = B.posthoc_logit_adjust(x, [0.9, 0.1], tau=1.0)
    close(out, [[2 - math.log(0.9), 1 - math.log(0.1)], [-math.log(0.9), -math.log(0.1)]], rtol=1e-6)
    assert out.argmax(1).tolist() == [1, 1]  # the tail class wins where the head class led by less than log 9
    assert torch.equal(B.posthoc_logit_adjust(x, [0.9, 0.1], tau=0.0), x)
    close(B.posthoc_logit_adjust(x, [9, 1], tau=0.5), x - 0.5 * torch.tensor([0.9, 0.1]).log(), rtol=1e-6)


def test_logit_adjustment_errors():
    with pytest.raises(ValueError, match=r"class_priors must be > 0 .*class\(es\) \[1\]"):
        B.logit_adjustment([3, 0, 1])
    with pytest.raises(ValueError, match=r"class_priors must have one value per class \(C = 3\), got 2"):
        B.posthoc_logit_adjust(torch.zeros(2, 3), [1, 1])
    with pytest.raises(ValueError, match=r"tau must be a finite number .*got nan"):
        B.logit_adjusted_loss(torch.zeros(2, 2), torch.tensor([0, 1]), [1, 1], tau=float("nan"))


# ---------------------------------------------------------------------------------------------------------------
# the baselines on the library's class_balanced_weights / class_priors: the values of their old formulas
# ---------------------------------------------------------------------------------------------------------------
def _old_cb_weights(counts, beta):
    """research/baselines.class_balanced_weights as it was before the library had one."""
    n = torch.as_tensor(counts, dtype=f64)
    if beta == 0.0:
        w = torch.ones_like(n)
    elif beta == 1.0:
        w = 1.0 / n
    else:
        w = (1.0 - beta) / -torch.expm1(n * math.log(beta))
    return (w * (n.numel() / w.sum())).to(torch.float32)


def _old_class_weighted(x, y, w, mode, gamma, reduction, label_smoothing, ignore_index):
    """ClassWeightedLoss's formula: the unreduced focal loss times the sample's class weight, plain mean."""
    if mode == "softmax":
        per = FocalLoss("softmax", gamma=gamma, reduction="none", label_smoothing=label_smoothing,
                        ignore_index=ignore_index)(x, y)
        valid = y != ignore_index
        item_w, count = w[torch.where(valid, y, torch.zeros_like(y))], valid.sum()
    else:
        per = FocalLoss("sigmoid", gamma=gamma, reduction="none", label_smoothing=label_smoothing)(
            x, F.one_hot(y, x.shape[1]).to(x.dtype))
        item_w, count = w[y].unsqueeze(1), per.numel()
    loss = per * item_w
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / torch.clamp(torch.as_tensor(count, dtype=total.dtype, device=total.device), min=1.0)


def _old_logit_adjusted(x, y, counts, tau, gamma, reduction, label_smoothing, ignore_index):
    """LogitAdjustedLoss's formula: float32 offsets tau * log(pi) (pi from float64 counts) added to the logits."""
    p = torch.as_tensor(counts, dtype=f64)
    off = (tau * torch.log(p / p.sum())).to(torch.float32).to(x.dtype).view((1, -1) + (1,) * (x.dim() - 2))
    return FocalLoss("softmax", gamma=gamma, reduction=reduction, label_smoothing=label_smoothing,
                     ignore_index=ignore_index)(x + off, y)


def _bitwise(new, old, x):
    """The same values and the same gradient, bit for bit."""
    assert torch.equal(new(x), old(x))
    assert torch.equal(grad_of(lambda z: new(z).sum(), x), grad_of(lambda z: old(z).sum(), x))


@pytest.mark.parametrize("name", ["cb_ce", "cb_focal"])
@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("beta", [0.0, 0.99, 0.9999, 1.0])
def test_cb_baselines_are_bit_for_bit_their_old_formulas(name, mode, reduction, label_smoothing, beta, gen):
    counts = [400, 90, 25, 5]
    x, y = _data(gen, n=16)
    if mode == "softmax":
        y[::5] = -100
    gamma = 2.0 if name == "cb_focal" else 0.0
    assert torch.equal(B.class_balanced_weights(counts, beta=beta), _old_cb_weights(counts, beta))
    new = B.make_loss(name, 4, class_counts=counts, beta=beta, mode=mode, reduction=reduction,
                      label_smoothing=label_smoothing)
    w = _old_cb_weights(counts, beta)
    _bitwise(lambda z: new(z, y),
             lambda z: _old_class_weighted(z, y, w, mode, gamma, reduction, label_smoothing, -100), x)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_logit_adjusted_baseline_is_bit_for_bit_its_old_formula(gamma, tau, reduction, label_smoothing, gen):
    """Bit for bit for float32 logits; the offsets are computed in float64 either way (for float64 logits the
    old module rounded them to float32 first, now they keep float64: equal within that rounding)."""
    counts = [400, 90, 25, 5]
    x, y = _data(gen, n=16)
    y[::5] = -100
    new = B.make_loss("logit_adjusted", 4, class_counts=counts, tau=tau, gamma=gamma, reduction=reduction,
                      label_smoothing=label_smoothing)
    old = lambda z: _old_logit_adjusted(z, y, counts, tau, gamma, reduction, label_smoothing, -100)  # noqa: E731
    _bitwise(lambda z: new(z, y), old, x)
    _bitwise(lambda z: B.logit_adjusted_focal_loss(z, y, counts, tau=tau, gamma=gamma, reduction=reduction,
                                                   label_smoothing=label_smoothing), old, x)
    close(new(x.double(), y), old(x.double()), rtol=1e-7)
    assert isinstance(new.focal, FocalLoss) and new.focal.tau == tau and "focal.class_priors" in new.state_dict()


# ---------------------------------------------------------------------------------------------------------------
# GHM-C
# ---------------------------------------------------------------------------------------------------------------
# logits whose sigmoid is exact enough: p = 0.95 (x = log 19), 0.5 (x = 0), 0.75 (x = log 3)
GHM_X = torch.tensor([math.log(19), math.log(19), 0.0, math.log(3)])
GHM_T = torch.tensor([1.0, 1.0, 0.0, 0.0])  # g = |p - t| = 0.05, 0.05, 0.5, 0.75 -> bins 0, 0, 5, 7 of 10
GHM_BCE = [math.log(20 / 19), math.log(20 / 19), math.log(2), math.log(4)]


def test_ghm_weights_hand_computed():
    # tot = 4, non-empty bins n = 3: beta = 4 / (R * 3)
    close(B.ghm_weights(torch.tensor([0.05, 0.05, 0.5, 0.75])), [2 / 3, 2 / 3, 4 / 3, 4 / 3], rtol=1e-12)
    # an invalid example gets 0 and leaves the counts: tot = 3, bins 0 (2) and 7 (1), n = 2
    close(B.ghm_weights(torch.tensor([0.05, 0.05, 0.5, 0.75]), valid=torch.tensor([True, True, False, True])),
          [3 / 4, 3 / 4, 0, 3 / 2], rtol=1e-12)
    # bin edges: g = 1 is in the last bin, g = 0 in the first; bins=2: 0.5 goes to the upper bin
    close(B.ghm_weights(torch.tensor([0.0, 1.0]), bins=10), [1.0, 1.0])
    close(B.ghm_weights(torch.tensor([0.25, 0.5, 0.75]), bins=2), [3 / 2, 3 / 4, 3 / 4])
    with pytest.raises(ValueError, match="bins must be a positive int, got 0"):
        B.ghm_weights(torch.tensor([0.1]), bins=0)


def test_ghm_sigmoid_loss_hand_computed():
    loss = B.GHMCLoss(mode="sigmoid")
    expected = (2 / 3 * GHM_BCE[0] + 2 / 3 * GHM_BCE[1] + 4 / 3 * GHM_BCE[2] + 4 / 3 * GHM_BCE[3]) / 4
    close(loss(GHM_X, GHM_T), expected, rtol=1e-6)
    close(B.GHMCLoss(mode="sigmoid", reduction="sum")(GHM_X, GHM_T), 4 * expected, rtol=1e-6)
    # the weights are constants: the gradient is beta * (p - t) / tot
    p = torch.sigmoid(GHM_X.double())
    close(grad_of(lambda z: loss(z, GHM_T), GHM_X), torch.tensor([2 / 3, 2 / 3, 4 / 3, 4 / 3]) * (p - GHM_T) / 4,
          rtol=1e-5)


def test_ghm_softmax_hand_computed():
    # two classes: logits (log 3, 0) give q = (3/4, 1/4); (0, 0) give (1/2, 1/2); g = 1 - q_y
    x = torch.tensor([[math.log(3), 0.0], [math.log(3), 0.0], [0.0, 0.0], [math.log(3), 0.0]])
    y = torch.tensor([0, 0, 1, 1])  # g = 0.25, 0.25, 0.5, 0.75 -> bins 2, 2, 5, 7: weights 2/3, 2/3, 4/3, 4/3
    ce = [-math.log(0.75), -math.log(0.75), math.log(2), -math.log(0.25)]
    expected = (2 / 3 * (ce[0] + ce[1]) + 4 / 3 * (ce[2] + ce[3])) / 4
    close(B.GHMCLoss(mode="softmax")(x, y), expected, rtol=1e-6)
    # an ignored sample is out of tot, the bins and the loss
    y2 = torch.tensor([0, 0, -100, 1])  # tot 3; bins 2 (2) and 7 (1); n = 2: weights 3/4, 3/4, 3/2
    close(B.GHMCLoss(mode="softmax")(x, y2), (3 / 4 * (ce[0] + ce[1]) + 3 / 2 * ce[3]) / 3, rtol=1e-6)


def test_ghm_one_bin_is_bce_and_ce(gen):
    n, c = 16, 3
    y = torch.randint(0, c, (n,), generator=gen)
    onehot = F.one_hot(y, c).float()
    # every |p - t| < 0.1: positives' logits in [3, 6], negatives' in [-6, -3]
    mag = 3 + 3 * torch.rand(n, c, generator=gen)
    x = torch.where(onehot > 0, mag, -mag)
    ghm = B.GHMCLoss(mode="sigmoid")
    close(ghm(x, y), F.binary_cross_entropy_with_logits(x, onehot), rtol=1e-6)
    close(grad_of(lambda z: ghm(z, y), x), grad_of(lambda z: F.binary_cross_entropy_with_logits(z, onehot), x),
          rtol=1e-5, atol=1e-9)
    # softmax: every 1 - q_y < 0.1 (true logit 8 above the rest)
    xs = 8 * onehot + 0.1 * torch.rand(n, c, generator=gen)
    ghm_s = B.GHMCLoss(mode="softmax")
    close(ghm_s(xs, y), F.cross_entropy(xs, y), rtol=1e-6)
    close(grad_of(lambda z: ghm_s(z, y), xs), grad_of(lambda z: F.cross_entropy(z, y), xs), rtol=1e-5, atol=1e-9)
    # bins = 1: always one bin, whatever the logits
    xr = torch.randn(n, c, generator=gen) * 3
    close(B.GHMCLoss(mode="sigmoid", bins=1)(xr, y), F.binary_cross_entropy_with_logits(xr, onehot), rtol=1e-6)


def test_ghm_momentum_hand_computed_and_state_dict():
    m = 0.75
    loss = B.GHMCLoss(mode="sigmoid", momentum=m)
    # batch 1: counts R = (2 in bin 0, 1 in bin 5, 1 in bin 7); acc = 0.25 * R = (0.5, 0.25, 0.25); n = 3, tot = 4
    w1 = [4 / 0.5 / 3, 4 / 0.5 / 3, 4 / 0.25 / 3, 4 / 0.25 / 3]
    close(loss(GHM_X, GHM_T), sum(w * b for w, b in zip(w1, GHM_BCE)) / 4, rtol=1e-6)
    expected_acc = torch.zeros(10, dtype=f64)
    expected_acc[0], expected_acc[5], expected_acc[7] = 0.5, 0.25, 0.25
    close(loss.acc_sum, expected_acc, rtol=1e-15)
    saved = {k: v.clone() for k, v in loss.state_dict().items()}
    assert set(saved) == {"acc_sum"}
    # batch 2: the two g = 0.05 elements only; acc0 = 0.75 * 0.5 + 0.25 * 2 = 0.875 (bins 5, 7 keep theirs)
    x2, t2 = GHM_X[:2], GHM_T[:2]
    expected2 = (2 / 0.875) * GHM_BCE[0] * 2 / 2
    close(loss(x2, t2), expected2, rtol=1e-6)
    expected_acc[0] = 0.875
    close(loss.acc_sum, expected_acc, rtol=1e-15)
    # a fresh module loaded from the checkpoint continues the same trajectory
    resumed = B.GHMCLoss(mode="sigmoid", momentum=m)
    resumed.load_state_dict(saved)
    close(resumed(x2, t2), expected2, rtol=1e-6)
    # eval mode uses the blend for the batch but does not store it
    resumed.eval()
    before = resumed.acc_sum.clone()
    close(resumed(x2, t2), (2 / (0.75 * 0.875 + 0.25 * 2)) * GHM_BCE[0], rtol=1e-6)
    assert torch.equal(resumed.acc_sum, before)


def test_ghm_errors():
    with pytest.raises(ValueError, match=r"momentum must be a finite number in \[0, 1\), got 1.0"):
        B.GHMCLoss(momentum=1.0)
    with pytest.raises(ValueError, match=r"mode must be one of 'softmax', 'sigmoid', got 'multi'"):
        B.GHMCLoss(mode="multi")
    with pytest.raises(ValueError, match=r"mode='softmax' needs logits \(N, C\) and class indices"):
        B.GHMCLoss(mode="softmax")(torch.zeros(2, 3), torch.zeros(2, 3))


# ---------------------------------------------------------------------------------------------------------------
# re-sampling
# ---------------------------------------------------------------------------------------------------------------
LABELS = [0, 0, 0, 1, 2, 2]  # counts 3, 1, 2


def test_sampling_weights_exact():
    close(B.sampling_weights(LABELS, q=1.0), [1 / 6] * 6, rtol=1e-15)
    close(B.sampling_weights(LABELS, q=0.0), [1 / 9] * 3 + [1 / 3] + [1 / 6] * 2, rtol=1e-15)
    z = math.sqrt(3) + 1 + math.sqrt(2)
    close(B.sampling_weights(LABELS, q=0.5), [1 / math.sqrt(3) / z] * 3 + [1 / z] + [1 / math.sqrt(2) / z] * 2,
          rtol=1e-14)
    w = B.sampling_weights(torch.tensor([4, 4, 1]), q=0.0)  # absent classes get nothing; labels need not be 0..C-1
    close(w, [0.25, 0.25, 0.5], rtol=1e-15)


def test_samplers_weights_and_defaults():
    cb = B.class_balanced_sampler(LABELS)
    sq = B.sqrt_sampler(torch.tensor(LABELS))
    for s, q in ((cb, 0.0), (sq, 0.5)):
        assert isinstance(s, torch.utils.data.WeightedRandomSampler)
        assert s.num_samples == 6 and s.replacement
        close(s.weights, B.sampling_weights(LABELS, q), rtol=1e-15)
    assert B.class_balanced_sampler(LABELS, num_samples=50).num_samples == 50


@pytest.mark.parametrize("name, q", [("class_balanced", 0.0), ("sqrt", 0.5), ("none", 1.0)])
def test_sampler_class_frequencies(name, q):
    counts = torch.tensor([400, 40, 4])
    labels = torch.repeat_interleave(torch.arange(3), counts)
    draws = 30_000
    g = torch.Generator().manual_seed(123)
    sampler = B.make_sampler(name, labels, generator=g, num_samples=draws)
    idx = torch.tensor(list(sampler))
    assert idx.numel() == draws and int(idx.min()) >= 0 and int(idx.max()) < labels.numel()
    freq = torch.bincount(labels[idx], minlength=3).double() / draws
    expected = counts.double() ** q / (counts.double() ** q).sum()
    # binomial standard deviation is at most 0.003 here
    close(freq, expected, rtol=0, atol=0.015)
    again = torch.tensor(list(B.make_sampler(name, labels, generator=torch.Generator().manual_seed(123),
                                             num_samples=draws)))
    assert torch.equal(idx, again)  # reproducible from the generator


def test_make_sampler_none_is_a_permutation():
    s = B.make_sampler("none", LABELS, generator=torch.Generator().manual_seed(0))
    assert isinstance(s, torch.utils.data.RandomSampler)
    assert sorted(s) == list(range(6))


@pytest.mark.parametrize("call, match", [
    (lambda: B.make_sampler("balanced", LABELS),
     r"name must be one of 'none', 'class_balanced', 'sqrt', got 'balanced'"),
    (lambda: B.sampling_weights([0, -1], 0.0), r"labels must be non-negative class indices, got -1"),
    (lambda: B.sampling_weights([0.5, 1.0], 0.0), r"labels must be a non-empty 1-D sequence of integer"),
    (lambda: B.sampling_weights([0, 1], "sqrt"), r"q must be a finite number .*got 'sqrt'"),
    (lambda: B.class_balanced_sampler([0, 1], num_samples=0), r"num_samples must be a positive int .*got 0"),
])
def test_sampler_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------------------------
# temperature scaling
# ---------------------------------------------------------------------------------------------------------------
def softmax_nll(z, y, T):
    return float(-torch.log_softmax(z.double() / T, 1).gather(1, y.unsqueeze(1)).mean())


@pytest.mark.parametrize("t_true", [0.4, 2.5])
def test_fit_temperature_recovers_softmax_temperature(t_true):
    g = torch.Generator().manual_seed(7)
    n, c = 20_000, 5
    true_logits = torch.randn(n, c, generator=g, dtype=f64) * 2
    y = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=g).squeeze(1)
    # labels follow softmax(true_logits); the model reports true_logits * t_true (= true_logits / T0 with
    # T0 = 1 / t_true: over-confident for t_true > 1), so dividing by T = t_true calibrates it
    observed = (true_logits * t_true).float()
    T = B.fit_temperature(observed, y)
    assert abs(T - t_true) < 0.05 * t_true
    # it is the NLL minimiser: no point of a fine grid, nor a nearby T, is lower
    grid = torch.exp(torch.linspace(math.log(0.1), math.log(10), 400, dtype=f64))
    best = min(softmax_nll(observed, y, float(t)) for t in grid)
    assert softmax_nll(observed, y, T) <= best + 1e-12
    assert softmax_nll(observed, y, T) <= min(softmax_nll(observed, y, T * 1.001), softmax_nll(observed, y, T / 1.001))
    # calibrated labels: T close to 1
    assert abs(B.fit_temperature(true_logits.float(), y) - 1.0) < 0.05
    assert B.fit_temperature(observed, y) == T  # deterministic


def test_fit_temperature_sigmoid():
    g = torch.Generator().manual_seed(8)
    true_logits = torch.randn(4000, 4, generator=g, dtype=f64) * 2
    t = torch.bernoulli(torch.sigmoid(true_logits), generator=g)
    T = B.fit_temperature((true_logits * 3.0).float(), t, mode="sigmoid")
    assert abs(T - 3.0) < 0.15
    def bce(T_):
        return float(F.binary_cross_entropy_with_logits(true_logits * 3.0 / T_, t))

    assert bce(T) <= min(bce(T * 1.001), bce(T / 1.001))
    # class indices are one-hot encoded for (N, C) logits
    y = torch.randint(0, 4, (100,), generator=g)
    z = torch.randn(100, 4, generator=g)
    assert B.fit_temperature(z, y, mode="sigmoid") == B.fit_temperature(z, F.one_hot(y, 4).float(), mode="sigmoid")


def test_fit_temperature_identity_when_already_optimal():
    g = torch.Generator().manual_seed(9)
    z = torch.randn(50, 6, generator=g, dtype=f64) * 3
    assert B.fit_temperature(z, torch.softmax(z, 1)) == 1.0  # soft labels = the model's own probabilities
    assert B.fit_temperature(z.float(), torch.softmax(z.float(), 1)) == 1.0
    assert B.fit_temperature(z, torch.sigmoid(z), mode="sigmoid") == 1.0
    x = torch.randn(3, 4, generator=g)
    assert B.apply_temperature(x, 1.0) is x
    close(B.apply_temperature(x, 2.0), x / 2)


def test_fit_temperature_bounds():
    # separable and correct: the NLL keeps falling as T -> 0, so the lower bound is returned
    z = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    assert B.fit_temperature(z, torch.tensor([0, 1]), bounds=(0.05, 20.0)) == pytest.approx(0.05)
    # always wrong: the NLL falls as T -> inf
    assert B.fit_temperature(z, torch.tensor([1, 0]), bounds=(0.05, 20.0)) == pytest.approx(20.0)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: B.apply_temperature(torch.zeros(2), 0.0), ValueError, r"T must be a finite number in \(0, inf\), got 0.0"),
    (lambda: B.apply_temperature(torch.zeros(2), -1), ValueError, r"T must be .*got -1"),
    (lambda: B.fit_temperature(torch.zeros(2, 2), torch.tensor([0, 1]), mode="tanh"), ValueError,
     r"mode must be one of 'softmax', 'sigmoid', got 'tanh'"),
    (lambda: B.fit_temperature(torch.zeros(2, 2), torch.tensor([0, 1]), bounds=(1.0, 0.5)), ValueError,
     r"bounds must be a pair .*got \(1.0, 0.5\)"),
    (lambda: B.fit_temperature(torch.zeros(2, 2), torch.tensor([0, 2])), ValueError, r"val_labels must be class"),
    (lambda: B.fit_temperature(torch.zeros(2, 2, dtype=torch.int64), torch.tensor([0, 1])), TypeError,
     r"val_logits must be a floating-point"),
])
def test_temperature_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------------
COUNTS = [40, 10, 3, 1]


@pytest.mark.parametrize("name", B.LOSS_NAMES)
@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
def test_make_loss_builds_trainable_losses(gen, name, mode):
    kw = {} if name == "logit_adjusted" else {"mode": mode}
    if name == "logit_adjusted" and mode == "sigmoid":
        with pytest.raises(ValueError, match=r"unknown keyword argument\(s\) mode"):
            B.make_loss(name, 4, COUNTS, mode="sigmoid")
        return
    loss = B.make_loss(name, 4, COUNTS, **kw)
    assert isinstance(loss, torch.nn.Module)
    x, y = _data(gen)
    x.requires_grad_(True)
    value = loss(x, y)
    assert value.shape == () and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_make_loss_neutral_settings_are_ce(gen):
    x, y = _data(gen)
    onehot = F.one_hot(y, 4).float()
    ce, bce = F.cross_entropy(x, y), F.binary_cross_entropy_with_logits(x, onehot)
    close(B.make_loss("ce", 4)(x, y), ce, rtol=1e-5)
    close(B.make_loss("ce", 4, mode="sigmoid")(x, y), bce, rtol=1e-5)
    close(B.make_loss("focal", 4, gamma=0.0)(x, y), ce, rtol=1e-5)
    close(B.make_loss("cb_ce", 4, COUNTS, beta=0.0)(x, y), ce, rtol=1e-5)
    close(B.make_loss("cb_focal", 4, COUNTS, beta=0.0, gamma=0.0, mode="sigmoid")(x, y), bce, rtol=1e-5)
    close(B.make_loss("logit_adjusted", 4, COUNTS, tau=0.0)(x, y), ce, rtol=1e-5)
    close(B.make_loss("ghm", 4, bins=1)(x, y), ce, rtol=1e-5)
    close(B.make_loss("ghm", 4, bins=1, mode="sigmoid")(x, y), bce, rtol=1e-5)
    close(B.make_loss("focal", 4, gamma=2.0)(x, y), ref_softmax_focal(x, y, 2.0).mean(), rtol=1e-5)
    close(B.make_loss("ce", 4, label_smoothing=0.2)(x, y), F.cross_entropy(x, y, label_smoothing=0.2), rtol=1e-5)
    assert isinstance(B.make_loss("ghm", 4, momentum=0.75), B.GHMCLoss)


@pytest.mark.parametrize("call, match", [
    (lambda: B.make_loss("ldam", 4, COUNTS),
     r"name must be one of 'ce', 'focal', 'cb_ce', 'cb_focal', 'logit_adjusted', 'ghm', got 'ldam'"),
    (lambda: B.make_loss("cb_ce", 4, COUNTS, gama=2.0),
     (r"make_loss\('cb_ce'\) got unknown keyword argument\(s\) gama; allowed for 'cb_ce': beta, ignore_index, "
      r"label_smoothing, mode, reduction")),
    (lambda: B.make_loss("cb_focal", 4), r"make_loss\('cb_focal'\) needs class_counts .*got None"),
    (lambda: B.make_loss("ce", 4, [1, 2, 3]), r"class_counts must have length num_classes=4, got 3"),
    (lambda: B.make_loss("ce", 4, mode="softmx"), r"mode must be one of 'softmax', 'sigmoid', got 'softmx'"),
    (lambda: B.make_loss("ce", 4, reduction="avg"), r"reduction must be one of 'mean', 'sum', 'none', got 'avg'"),
    (lambda: B.make_loss("ce", 0), r"num_classes must be a positive int, got 0"),
    (lambda: B.make_loss("cb_ce", 4, COUNTS, beta=2), r"beta must be a finite number in \[0, 1\], got 2"),
    (lambda: B.make_loss("ghm", 4, bins=2.5), r"bins must be a positive int, got 2.5"),
])
def test_make_loss_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
