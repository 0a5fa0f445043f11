"""adaptive_focal.metrics: hand-computed examples, scikit-learn where it has the metric, loop references of the
published definitions, the BatchStats route, bad input, and the no-host-sync property (meta device; CUDA)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import adaptive_focal as af
from adaptive_focal import metrics as M

sklearn_metrics = pytest.importorskip("sklearn.metrics")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def lab(values):
    return torch.tensor(values, dtype=torch.int64)


def random_probs(gen, n, c, scale=2.0, dtype=torch.float64):
    x = torch.randn(n, c, generator=gen, dtype=torch.float64) * scale
    return x.softmax(1).to(dtype)


def random_labels(gen, n, c):
    return torch.randint(0, c, (n,), generator=gen)


# --------------------------------------------------------------------------------------------
# loop references written from the papers' definitions (float64 numpy, one sample at a time)
# --------------------------------------------------------------------------------------------


def ref_ece(probs, labels, n_bins):
    """Guo et al. (2017): bins (lo, hi] of linspace(0, 1, n_bins + 1); conf == 0 kept in the first bin."""
    p = probs.double().numpy()
    y = labels.numpy()
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if b == n_bins - 1:
            inside |= conf > hi
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


def ref_adaptive_ece(probs, labels, n_bins):
    """Equal-mass bins: rank r -> floor(r * B / N), a group of equal confidences in the bin of its first rank."""
    p = probs.double().numpy()
    y = labels.numpy()
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(float)
    n = len(conf)
    order = np.argsort(conf, kind="stable")
    bins = {}
    first_rank = {}
    for r, i in enumerate(order):
        first_rank.setdefault(conf[i], r)
        bins.setdefault(first_rank[conf[i]] * n_bins // n, []).append(i)
    return sum(len(m) / n * abs(correct[m].mean() - conf[m].mean()) for m in bins.values())


def ref_classwise_ece(probs, labels, n_bins):
    """Kull et al. (2019): per class, equal-width bins (lo, hi] of p_c, the first bin closed at 0."""
    p = probs.double().numpy()
    y = labels.numpy()
    n, c = p.shape
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for k in range(c):
        pk, yk = p[:, k], (y == k).astype(float)
        for b in range(n_bins):
            lo, hi = edges[b], edges[b + 1]
            inside = (pk > lo) & (pk <= hi) if b else (pk <= hi)
            if inside.any():
                total += inside.sum() / n * abs(yk[inside].mean() - pk[inside].mean())
    return total / c


def far_from_edges(probs, n_bins, margin=1e-4):
    """Rows whose confidence is at least ``margin`` away from every interior edge."""
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)[1:-1]
    conf = probs.double().amax(1)
    return (conf.unsqueeze(1) - edges).abs().amin(1) >= margin


# --------------------------------------------------------------------------------------------
# ECE
# --------------------------------------------------------------------------------------------


def test_ece_hand_example():
    # n_bins = 5 (width 0.2)
    probs = t([[0.9, 0.1, 0.0],    # conf 0.9,  pred 0, label 0: right, bin (0.8, 1.0]
               [0.65, 0.35, 0.0],  # conf 0.65, pred 0, label 1: wrong, bin (0.6, 0.8]
               [0.3, 0.7, 0.0],    # conf 0.7,  pred 1, label 1: right, bin (0.6, 0.8]
               [0.1, 0.5, 0.4]])   # conf 0.5,  pred 1, label 2: wrong, bin (0.4, 0.6]
    labels = lab([0, 1, 1, 2])
    # ECE = (|1 - 0.9| + |(0 + 1) - (0.65 + 0.7)| + |0 - 0.5|) / 4 = (0.1 + 0.35 + 0.5) / 4 = 0.2375
    assert M.ece(probs, labels, n_bins=5).item() == pytest.approx(0.2375, abs=1e-12)
    # one bin: |accuracy - mean confidence| = |2/4 - 2.75/4| = 0.1875
    assert M.ece(probs, labels, n_bins=1).item() == pytest.approx(0.1875, abs=1e-12)


def test_ece_bin_edges_are_lo_exclusive_hi_inclusive():
    # n_bins = 4: edges 0, 0.25, 0.5, 0.75, 1 (exact in binary floating point)
    probs = t([[0.5, 0.25, 0.25],     # conf 0.5 exactly on an edge, right: bin (0.25, 0.5]
               [0.375, 0.625, 0.0]])  # conf 0.625, wrong: bin (0.5, 0.75]
    labels = lab([0, 0])
    # (lo, hi]: two bins -> (|1 - 0.5| + |0 - 0.625|) / 2 = 0.5625
    # ([lo, hi) would put both in (0.5, 0.75] -> |1 - 1.125| / 2 = 0.0625)
    for dtype in (torch.float64, torch.float32, torch.float16):
        assert M.ece(probs.to(dtype), labels, n_bins=4).item() == pytest.approx(0.5625, abs=1e-6)


def test_ece_edges_at_zero_quarter_and_one():
    # n_bins = 4. conf 0.25 (uniform over 4 classes, argmax = first class, right) lies on the first interior
    # edge: it belongs to the first bin [0, 0.25], with conf 0.2 (wrong) -> |1 - 0.45| = 0.55
    # conf 1.0 (wrong) belongs to the last bin (0.75, 1] -> |0 - 1| = 1
    probs = t([[0.25, 0.25, 0.25, 0.25],
               [0.2, 0.2, 0.2, 0.2],  # not normalised on purpose: only the confidence matters for ECE
               [0.0, 1.0, 0.0, 0.0]])
    labels = lab([0, 1, 3])
    # ECE = (0.55 + 1.0) / 3 (with conf 0.25 in (0.25, 0.5] instead: (0.75 + 0.2 + 1.0) / 3)
    assert M.ece(probs, labels, n_bins=4).item() == pytest.approx(1.55 / 3, abs=1e-12)
    # a wrong conf 1.0 and a right conf 0.8 share the last bin: |1 - 1.8| / 2 = 0.4 (not (1 + 0.2) / 2)
    probs = t([[0.0, 1.0], [0.8, 0.2]])
    assert M.ece(probs, lab([0, 0]), n_bins=4).item() == pytest.approx(0.4, abs=1e-12)


@pytest.mark.parametrize("n_bins", [1, 4, 15])
def test_ece_matches_loop_reference(gen, n_bins):
    probs = random_probs(gen, 500, 7)
    labels = random_labels(gen, 500, 7)
    assert M.ece(probs, labels, n_bins).item() == pytest.approx(ref_ece(probs, labels, n_bins), abs=1e-12)


def test_ece_perfectly_calibrated_and_empty():
    # every sample conf 1 and right -> 0
    assert M.ece(torch.eye(3, dtype=torch.float64), lab([0, 1, 2])).item() == 0.0
    assert math.isnan(M.ece(torch.empty(0, 3), torch.empty(0, dtype=torch.long)).item())


# --------------------------------------------------------------------------------------------
# adaptive ECE
# --------------------------------------------------------------------------------------------


def test_adaptive_ece_hand_example():
    # N = 7, B = 3: rank r -> floor(3 r / 7): ranks 0-2 -> bin 0, 3-4 -> bin 1, 5-6 -> bin 2 (sizes 3, 2, 2)
    conf = [0.40, 0.45, 0.50, 0.60, 0.70, 0.80, 0.95]
    right = [0, 1, 0, 1, 1, 0, 1]
    # rows (c, (1 - c) / 2, (1 - c) / 2): confidence c on class 0 for every c >= 1/3; label 0 when right
    probs = t([[c, (1 - c) / 2, (1 - c) / 2] for c in conf])
    labels = lab([0 if r else 1 for r in right])
    # bin 0: |1 - (0.40 + 0.45 + 0.50)| = 0.35; bin 1: |2 - (0.60 + 0.70)| = 0.70; bin 2: |1 - (0.80 + 0.95)| = 0.75
    # AdaECE = (0.35 + 0.70 + 0.75) / 7 = 1.8 / 7
    expected = 1.8 / 7
    assert M.adaptive_ece(probs, labels, n_bins=3).item() == pytest.approx(expected, abs=1e-12)
    # shuffled rows give the same value
    perm = torch.tensor([3, 6, 0, 5, 1, 4, 2])
    assert M.adaptive_ece(probs[perm], labels[perm], n_bins=3).item() == pytest.approx(expected, abs=1e-12)


def test_adaptive_ece_keeps_ties_together():
    # four samples with conf 0.8, two right and two wrong, B = 2: ranks 0-3 all start at rank 0 -> one bin
    # AdaECE = |2 - 3.2| / 4 = 0.3 whatever the order (splitting by input order would give 0.5 for [r, r, w, w])
    probs = t([[0.8, 0.2]] * 4)
    for labels in ([0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1]):
        assert M.adaptive_ece(probs, lab(labels), n_bins=2).item() == pytest.approx(0.3, abs=1e-12)


def test_adaptive_ece_fewer_samples_than_bins_and_one_bin():
    probs = t([[0.9, 0.1], [0.3, 0.7]])
    labels = lab([1, 1])
    # N = 2 < B = 15: each sample alone -> (|0 - 0.9| + |1 - 0.7|) / 2 = 0.6
    assert M.adaptive_ece(probs, labels).item() == pytest.approx(0.6, abs=1e-12)
    # one bin: |accuracy - mean conf| = |0.5 - 0.8| = 0.3, as ECE with one bin
    assert M.adaptive_ece(probs, labels, n_bins=1).item() == pytest.approx(0.3, abs=1e-12)
    assert M.ece(probs, labels, n_bins=1).item() == pytest.approx(0.3, abs=1e-12)


@pytest.mark.parametrize("n_bins", [3, 15])
def test_adaptive_ece_matches_loop_reference(gen, n_bins):
    probs = random_probs(gen, 301, 5)
    # some exact ties in confidence
    probs[::10] = probs[0]
    labels = random_labels(gen, 301, 5)
    got = M.adaptive_ece(probs, labels, n_bins).item()
    assert got == pytest.approx(ref_adaptive_ece(probs, labels, n_bins), abs=1e-12)
    perm = torch.randperm(301, generator=gen)
    assert M.adaptive_ece(probs[perm], labels[perm], n_bins).item() == pytest.approx(got, abs=1e-12)


def test_adaptive_ece_bins_hold_equal_counts(gen):
    # without ties, bin b holds the ranks r with floor(r B / N) = b: sizes differ by at most one
    n, b = 103, 15
    ranks = torch.arange(n)
    sizes = torch.bincount(ranks * b // n, minlength=b)
    assert int(sizes.max() - sizes.min()) <= 1 and int(sizes.sum()) == n
    # all right with confidence c: every bin's gap is 1 - mean conf, so AdaECE = 1 - mean conf regardless of bins
    conf = torch.rand(n, generator=gen, dtype=torch.float64) * 0.5 + 0.5
    probs = torch.stack([conf, 1 - conf], 1)
    labels = torch.zeros(n, dtype=torch.long)
    assert M.adaptive_ece(probs, labels, b).item() == pytest.approx(1 - conf.mean().item(), abs=1e-12)


# --------------------------------------------------------------------------------------------
# classwise ECE
# --------------------------------------------------------------------------------------------


def test_classwise_ece_hand_example():
    # n_bins = 2 (edges 0, 0.5, 1), C = 3, N = 4; class 2 never occurs in the labels but is averaged in
    probs = t([[0.7, 0.3, 0.0],
               [0.6, 0.2, 0.2],
               [0.5, 0.5, 0.0],   # 0.5 on the edge -> lower bin [0, 0.5]
               [0.0, 0.25, 0.75]])
    labels = lab([0, 1, 0, 1])
    # class 0, y = 1 0 1 0: [0,.5] {0.5 (y 1), 0.0 (y 0)} -> |1 - 0.5| = 0.5; (.5,1] {0.7 (1), 0.6 (0)} -> |1 - 1.3|
    #          = 0.3; sum 0.8 (with 0.5 in the upper bin: 0 + |2 - 1.8| = 0.2)
    # class 1, y = 0 1 0 1: [0,.5] all four {0.3, 0.2, 0.5, 0.25} -> |2 - 1.25| = 0.75
    #          (with 0.5 in the upper bin: |2 - 0.75| + |0 - 0.5| = 1.75)
    # class 2, y = 0 0 0 0: [0,.5] {0, 0.2, 0} -> 0.2; (.5,1] {0.75} -> 0.75; sum 0.95
    # classwise ECE = (0.8 + 0.75 + 0.95) / 4 / 3 = 2.5 / 12
    assert M.classwise_ece(probs, labels, n_bins=2).item() == pytest.approx(2.5 / 12, abs=1e-12)


@pytest.mark.parametrize("n_bins", [1, 15])
def test_classwise_ece_matches_loop_reference(gen, n_bins):
    probs = random_probs(gen, 400, 6)
    probs[:50, 5] = 0.0  # exact zeros (kept in the first bin)
    labels = random_labels(gen, 400, 5)  # class 5 absent
    got = M.classwise_ece(probs, labels, n_bins).item()
    assert got == pytest.approx(ref_classwise_ece(probs, labels, n_bins), abs=1e-12)


def test_classwise_ece_binary_equals_ece_of_each_class_probability():
    # with two classes and one bin: per class |freq - mean p| and both classes give the same gap
    probs = t([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    labels = lab([0, 0, 1])
    # class 0: |2/3 - 1.5/3| = 1/6; class 1: |1/3 - 1.5/3| = 1/6 -> 1/6
    assert M.classwise_ece(probs, labels, n_bins=1).item() == pytest.approx(1 / 6, abs=1e-12)


# --------------------------------------------------------------------------------------------
# ECE from BatchStats
# --------------------------------------------------------------------------------------------


def _logits_far_from_edges(gen, n, c, n_bins, dtype):
    x = torch.randn(n, c, generator=gen, dtype=torch.float64) * 2.5
    keep = far_from_edges(x.softmax(1), n_bins)
    return x[keep].to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stat_bins", [15, 10])
def test_ece_from_stats_equals_ece_from_probs(gen, dtype, stat_bins):
    x = _logits_far_from_edges(gen, 600, 8, stat_bins, dtype)
    labels = random_labels(gen, x.shape[0], 8)
    _, stats = af.softmax_focal_loss(x, labels, gamma=2.0, return_stats=True, stat_bins=stat_bins)
    expected = M.ece(x.softmax(1), labels, n_bins=stat_bins)
    got = M.ece_from_stats(stats)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_ece_from_stats_accumulated_over_batches_and_ignore_index(gen):
    x = _logits_far_from_edges(gen, 500, 5, 15, torch.float32)
    labels = random_labels(gen, x.shape[0], 5)
    labels_ign = labels.clone()
    labels_ign[::7] = -100
    half = x.shape[0] // 2
    stats = sum(af.softmax_focal_loss(x[s], labels_ign[s], gamma=1.0, return_stats=True)[1]
                for s in (slice(0, half), slice(half, None)))
    keep = labels_ign != -100
    expected = M.ece(x[keep].softmax(1), labels[keep])
    assert M.ece_from_stats(stats).item() == pytest.approx(expected.item(), abs=1e-6)


def test_ece_from_stats_bins_lo_inclusive():
    # the statistics bin [lo, hi): a confidence of exactly 0.5 with 4 bins lands in [0.5, 0.75), while ece() puts
    # it in (0.25, 0.5]. Rows: conf 0.5 right; conf 0.625 wrong (softmax of log-probabilities is exact here)
    x = t([[0.5, 0.25, 0.25], [0.375, 0.625, 0.0]]).clamp_min(1e-300).log()
    labels = lab([0, 0])
    _, stats = af.softmax_focal_loss(x, labels, return_stats=True, stat_bins=4)
    assert stats.conf_count.tolist() == [0, 0, 2, 0]
    # stats: one bin -> |1 - 1.125| / 2 = 0.0625; ece: (|1 - 0.5| + |0 - 0.625|) / 2 = 0.5625
    assert M.ece_from_stats(stats).item() == pytest.approx(0.0625, abs=1e-7)
    assert M.ece(x.softmax(1), labels, n_bins=4).item() == pytest.approx(0.5625, abs=1e-12)


def test_ece_from_stats_empty_and_errors():
    import dataclasses

    x = torch.randn(3, 4)
    _, stats = af.softmax_focal_loss(x, torch.full((3,), -100), return_stats=True)
    assert math.isnan(M.ece_from_stats(stats).item())
    _, sig = af.sigmoid_focal_loss(x, torch.full((3, 4), -1.0), ignore_index=-1.0, return_stats=True,
                                   confidence_stats=True)
    assert math.isnan(M.ece_from_stats(sig).item())
    without = dataclasses.replace(sig, conf_count=None, conf_sum=None, correct_sum=None)
    with pytest.raises(ValueError, match="must carry confidence bins .* these sigmoid statistics have None"):
        M.ece_from_stats(without)
    # the default sigmoid statistics have no bins: the error says how to get them
    _, plain = af.sigmoid_focal_loss(x, (x > 0).float(), return_stats=True)
    with pytest.raises(ValueError, match=r"have None there: compute them with confidence_stats=True"):
        M.ece_from_stats(plain)
    without_softmax = dataclasses.replace(stats, conf_count=None)
    with pytest.raises(ValueError, match=r"these softmax statistics have None there$"):
        M.ece_from_stats(without_softmax)
    with pytest.raises(TypeError, match="stats must be a BatchStats, got dict"):
        M.ece_from_stats(stats.state_dict())


def _sigmoid_logits_far_from_edges(gen, shape, n_bins, margin=1e-4):
    """Logits whose confidence max(p, 1 - p) is at least ``margin`` away from every interior edge."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2.5
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)[1:-1]
    for _ in range(100):
        p = torch.sigmoid(x.float().double())
        near = ((torch.maximum(p, 1 - p).unsqueeze(-1) - edges).abs() < margin).any(-1)
        if not bool(near.any()):
            return x.float()
        x = torch.where(near, torch.randn(shape, generator=gen, dtype=torch.float64) * 2.5, x)
    raise RuntimeError("could not draw logits far from the edges")


def sigmoid_ece_written_out(x, t, n_bins, ignore_index=None):
    """ECE of the elements as binary predictions, from its definition: confidence max(p, 1 - p), correct when
    (p > 1/2) == (t >= 1/2), equal-width bins [lo, hi) (the last closed), sum_b |accuracy_b - confidence_b| n_b / n."""
    x, t = x.double().reshape(-1), t.double().reshape(-1)
    if ignore_index is not None:
        x, t = x[t != ignore_index], t[t != ignore_index]
    p = torch.sigmoid(x)
    conf = torch.maximum(p, 1 - p)
    correct = ((p > 0.5) == (t >= 0.5)).double()
    b = (conf * n_bins).floor().clamp(max=n_bins - 1).long()
    total = sum(abs(float(correct[b == k].sum() - conf[b == k].sum())) for k in range(n_bins))
    return total / x.numel()


@pytest.mark.parametrize("shape", [(600,), (200, 7), (20, 3, 6, 5)], ids=["binary", "multilabel", "dense"])
@pytest.mark.parametrize("stat_bins", [15, 10])
def test_ece_from_stats_of_sigmoid_statistics(gen, shape, stat_bins):
    x = _sigmoid_logits_far_from_edges(gen, shape, stat_bins)
    t = (torch.rand(shape, generator=gen) < torch.sigmoid(0.5 * x)).float()  # over-confident logits
    t.view(-1)[::5] = torch.rand(t.view(-1)[::5].shape, generator=gen)  # soft targets count as their label
    t.view(-1)[::11] = -1.0
    _, stats = af.sigmoid_focal_loss(x, t, return_stats=True, stat_bins=stat_bins, ignore_index=-1.0,
                                     confidence_stats=True)
    expected = sigmoid_ece_written_out(x, t, stat_bins, ignore_index=-1.0)
    assert M.ece_from_stats(stats).item() == pytest.approx(expected, abs=1e-6)
    assert expected > 0.02  # the construction is over-confident: the ECE is not trivially 0
    keep = t.reshape(-1) != -1.0
    p = torch.sigmoid(x.reshape(-1)[keep])
    two_class = M.ece(torch.stack([1 - p, p], 1), (t.reshape(-1)[keep] >= 0.5).long(), n_bins=stat_bins)
    assert M.ece_from_stats(stats).item() == pytest.approx(two_class.item(), abs=1e-6)  # the two-class softmax


# --------------------------------------------------------------------------------------------
# NLL and Brier
# --------------------------------------------------------------------------------------------


def test_nll_hand_example_and_sklearn(gen):
    probs = t([[0.5, 0.5], [0.25, 0.75], [0.9, 0.1]])
    labels = lab([0, 1, 1])
    # -(log 0.5 + log 0.75 + log 0.1) / 3
    expected = -(math.log(0.5) + math.log(0.75) + math.log(0.1)) / 3
    assert M.nll(probs, labels).item() == pytest.approx(expected, rel=1e-12)
    probs = random_probs(gen, 200, 6)
    labels = random_labels(gen, 200, 6)
    ref = sklearn_metrics.log_loss(labels.numpy(), probs.numpy(), labels=list(range(6)))
    assert M.nll(probs, labels).item() == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nll_from_logits_equals_cross_entropy(gen, dtype):
    x = (torch.randn(64, 5, generator=gen, dtype=torch.float64) * 4).to(dtype)
    labels = random_labels(gen, 64, 5).to(torch.int32)  # any integer dtype
    got = M.nll(x, labels, from_logits=True)
    assert got.dtype == dtype
    assert got.item() == pytest.approx(F.cross_entropy(x.double(), labels.long()).item(), rel=1e-5)


def test_nll_zero_probability_is_finite():
    # a zero probability is clamped to float32's eps: -log(2**-23) / 1 = 23 log 2
    got = M.nll(torch.tensor([[1.0, 0.0]]), lab([1]))
    assert got.item() == pytest.approx(23 * math.log(2), rel=1e-6)


def test_brier_hand_example_and_manual(gen):
    probs = t([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0], [0.1, 0.2, 0.7]])
    labels = lab([0, 0, 2])
    # (0.25 + 0.25 + 0) + (0.64 + 0.64 + 0) + (0.01 + 0.04 + 0.09) = 0.5 + 1.28 + 0.14 = 1.92; / 3 = 0.64
    assert M.brier(probs, labels).item() == pytest.approx(0.64, abs=1e-12)
    probs = random_probs(gen, 100, 4)
    labels = random_labels(gen, 100, 4)
    onehot = np.eye(4)[labels.numpy()]
    manual = ((probs.numpy() - onehot) ** 2).sum(1).mean()
    assert M.brier(probs, labels).item() == pytest.approx(manual, abs=1e-12)
    # binary: twice scikit-learn's brier_score_loss of the positive class
    probs = random_probs(gen, 100, 2)
    labels = random_labels(gen, 100, 2)
    skl = sklearn_metrics.brier_score_loss(labels.numpy(), probs[:, 1].numpy())
    assert M.brier(probs, labels).item() == pytest.approx(2 * skl, abs=1e-12)


# --------------------------------------------------------------------------------------------
# recall, balanced accuracy, macro-F1
# --------------------------------------------------------------------------------------------


def test_class_metrics_hand_example():
    # C = 4, class 3 absent from labels, class 2 absent but predicted once
    preds = lab([0, 0, 1, 1, 1, 2, 0])
    labels = lab([0, 0, 1, 1, 0, 1, 1])
    # confusion (rows true): class 0: TP 2, FN 1 (predicted 1); class 1: TP 2, FN 2 (predicted 2 and 0)
    # recall: class 0 2/3, class 1 2/4, classes 2 and 3 NaN
    recall = M.per_class_recall(preds, labels, num_classes=4)
    assert recall[:2].tolist() == pytest.approx([2 / 3, 0.5])
    assert torch.isnan(recall[2:]).all()
    # balanced accuracy = (2/3 + 1/2) / 2 = 7/12
    assert M.balanced_accuracy(preds, labels, num_classes=4).item() == pytest.approx(7 / 12)
    # F1: class 0: TP 2, FP 1 (label 1 predicted 0), FN 1 -> 4 / (4 + 1 + 1) = 2/3
    #     class 1: TP 2, FP 1 (label 0 predicted 1), FN 2 -> 4 / (4 + 1 + 2) = 4/7
    # macro-F1 over present classes = (2/3 + 4/7) / 2 = 13/21
    assert M.macro_f1(preds, labels, num_classes=4).item() == pytest.approx(13 / 21)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("c", [2, 7])
def test_class_metrics_match_sklearn(gen, c):
    n = 300
    # long-tailed labels; class c - 1 left out of the labels but present in the predictions
    w = torch.tensor([0.5 ** k for k in range(c)], dtype=torch.float64)
    w[-1] = 0.0
    labels = torch.multinomial(w, n, replacement=True, generator=gen)
    probs = random_probs(gen, n, c, scale=1.0)
    probs[labels == 0, 0] += 0.3
    preds = probs.argmax(1)
    assert (preds == c - 1).any()
    y, yp = labels.numpy(), preds.numpy()
    present = sorted(set(y.tolist()))
    assert M.balanced_accuracy(probs, labels).item() == pytest.approx(
        sklearn_metrics.balanced_accuracy_score(y, yp), abs=1e-6)
    assert M.macro_f1(probs, labels).item() == pytest.approx(
        sklearn_metrics.f1_score(y, yp, average="macro", labels=present), abs=1e-6)
    recall = M.per_class_recall(preds, labels, num_classes=c)
    skl = sklearn_metrics.recall_score(y, yp, average=None, labels=list(range(c)), zero_division=np.nan)
    np.testing.assert_allclose(recall.numpy(), skl, rtol=1e-6, equal_nan=True)
    # probabilities and their argmax give the same result; logits too
    torch.testing.assert_close(M.per_class_recall(probs, labels), recall, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(M.per_class_recall(probs.log(), labels, num_classes=c), recall, rtol=0, atol=0,
                               equal_nan=True)


def test_macro_f1_differs_from_sklearn_default_only_by_absent_predicted_classes():
    preds = lab([0, 1, 2])
    labels = lab([0, 1, 1])
    # present classes 0, 1: F1_0 = 2/2 = 1, F1_1 = 2 / (2 + 0 + 1) = 2/3 -> 5/6
    assert M.macro_f1(preds, labels, num_classes=3).item() == pytest.approx(5 / 6)
    # scikit-learn's default also averages class 2 (never true, predicted once) with F1 0 -> 5/9
    assert sklearn_metrics.f1_score(labels.numpy(), preds.numpy(), average="macro") == pytest.approx(5 / 9)


def test_class_metrics_empty():
    e = torch.empty(0, dtype=torch.long)
    assert torch.isnan(M.per_class_recall(e, e, num_classes=3)).all()
    assert math.isnan(M.balanced_accuracy(e, e, num_classes=3).item())
    assert math.isnan(M.macro_f1(e, e, num_classes=3).item())


# --------------------------------------------------------------------------------------------
# many / medium / few
# --------------------------------------------------------------------------------------------


def test_recall_splits_thresholds():
    recall = torch.tensor([0.9, 0.7, 0.6, 0.4, 0.3, 0.1, float("nan")])
    counts = [1000, 101, 100, 20, 19, 0, 5]
    # many (> 100): 1000, 101 -> (0.9 + 0.7) / 2 = 0.8; medium (20..100): 100, 20 -> (0.6 + 0.4) / 2 = 0.5
    # few (< 20): 19, 0, 5 (NaN recall skipped) -> (0.3 + 0.1) / 2 = 0.2
    out = M.recall_splits(recall, counts)
    assert set(out) == {"many", "medium", "few"}
    assert {k: round(v.item(), 6) for k, v in out.items()} == {"many": 0.8, "medium": 0.5, "few": 0.2}
    # custom thresholds and tensor counts: many > 50, few < 10 -> medium is {20, 19}
    out = M.recall_splits(recall, torch.tensor(counts), many=50, few=10)
    assert out["medium"].item() == pytest.approx(0.35)
    assert out["few"].item() == pytest.approx(0.1)


def test_recall_splits_empty_split_is_nan():
    out = M.recall_splits(torch.tensor([0.5, 0.7]), [500, 300])
    assert out["many"].item() == pytest.approx(0.6)
    assert math.isnan(out["medium"].item()) and math.isnan(out["few"].item())


# --------------------------------------------------------------------------------------------
# summary, dtypes
# --------------------------------------------------------------------------------------------


def test_calibration_summary(gen):
    probs = random_probs(gen, 80, 4)
    labels = random_labels(gen, 80, 4)
    s = M.calibration_summary(probs, labels, n_bins=10)
    assert set(s) == {"accuracy", "ece", "adaptive_ece", "classwise_ece", "nll", "brier",
                      "balanced_accuracy", "macro_f1"}
    assert all(isinstance(v, float) for v in s.values())
    assert s["ece"] == M.ece(probs, labels, 10).item()
    assert s["adaptive_ece"] == M.adaptive_ece(probs, labels, 10).item()
    assert s["accuracy"] == pytest.approx((probs.argmax(1) == labels).double().mean().item())
    assert s["macro_f1"] == pytest.approx(M.macro_f1(probs, labels).item())


@pytest.mark.parametrize("dtype,out", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                       (torch.float32, torch.float32), (torch.float64, torch.float64)])
def test_output_dtypes(gen, dtype, out):
    probs = random_probs(gen, 50, 3).to(dtype)
    labels = random_labels(gen, 50, 3)
    for fn in (M.ece, M.adaptive_ece, M.classwise_ece, M.nll, M.brier):
        r = fn(probs, labels)
        assert r.dtype == out and r.dim() == 0 and torch.isfinite(r), fn.__name__
    assert M.balanced_accuracy(probs, labels).dtype == torch.get_default_dtype()


def test_inputs_are_not_modified_and_grad_is_ignored(gen):
    x = torch.randn(20, 3, generator=gen, requires_grad=True)
    probs = x.softmax(1)
    labels = random_labels(gen, 20, 3)
    before = probs.detach().clone()
    for fn in (M.ece, M.adaptive_ece, M.classwise_ece, M.nll, M.brier):
        assert not fn(probs, labels).requires_grad
    assert torch.equal(probs.detach(), before)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

P = torch.full((4, 3), 1 / 3)
L = lab([0, 1, 2, 0])

BAD = [
    (M.ece, ([[0.5, 0.5]], lab([0])), TypeError, r"probs must be a torch.Tensor, got list"),
    (M.ece, (L.view(2, 2), lab([0, 1])), TypeError, r"probs must be a floating-point tensor.*got dtype torch.int64"),
    (M.ece, (P[0], L), ValueError, r"probs must have shape \(N, C\).*got shape \(3,\)"),
    (M.ece, (P, L[:3]), ValueError, r"labels must have shape \(4,\) to match probs, got shape \(3,\)"),
    (M.ece, (P, L.float()), TypeError, r"labels must be an integer tensor of class indices, got dtype torch.float32"),
    (M.ece, (P, L.bool()), TypeError, r"labels must be an integer tensor.*torch.bool"),
    (M.ece, (P, lab([0, 1, 3, 0])), ValueError, r"labels must hold class indices in \[0, 2\], got values from 0 to 3"),
    (M.ece, (P, lab([-1, 1, 2, 0])), ValueError, r"labels must hold class indices in \[0, 2\], got values from -1"),
    (M.ece, (P, L, 0), ValueError, r"n_bins must be a positive integer, got 0"),
    (M.adaptive_ece, (P, L, 2.0), ValueError, r"n_bins must be a positive integer, got 2.0"),
    (M.classwise_ece, (P, L, True), ValueError, r"n_bins must be a positive integer, got True"),
    (M.classwise_ece, (torch.empty(4, 0), L), ValueError, r"C >= 1, got shape \(4, 0\)"),
    (M.nll, (P, L, 1), TypeError, r"from_logits must be a bool, got int"),
    (M.nll, (P.long(), L), TypeError, r"probs_or_logits must be a floating-point tensor"),
    (M.brier, (P, L.view(2, 2)), ValueError, r"labels must have shape \(4,\)"),
    (M.balanced_accuracy, (L, L), ValueError, r"num_classes must be given with \(N,\) integer predictions.*got None"),
    (M.balanced_accuracy, (L, L, 0), ValueError, r"num_classes must be None or a positive integer, got 0"),
    (M.macro_f1, (P, L, 4), ValueError, r"num_classes must equal preds_or_probs.shape\[1\] = 3.*got 4"),
    (M.macro_f1, (L.view(2, 2), L, 3), ValueError, r"preds_or_probs must be \(N,\) integer predictions or \(N, C\)"),
    (M.per_class_recall, (lab([0, 5, 1, 1]), L, 3), ValueError,
     r"preds_or_probs must hold class indices in \[0, 2\], got values from 0 to 5"),
    (M.per_class_recall, (L.bool(), L, 3), TypeError, r"preds_or_probs must be integer predictions.*torch.bool"),
    (M.per_class_recall, ([0, 1], L, 3), TypeError, r"preds_or_probs must be a torch.Tensor, got list"),
    (M.per_class_recall, (P, L[:2]), ValueError, r"labels must have shape \(4,\) to match preds_or_probs"),
    (M.recall_splits, ([0.5], [3]), TypeError, r"per_class_recall must be a torch.Tensor, got list"),
    (M.recall_splits, (torch.tensor([1, 0]), [3, 4]), ValueError, r"per_class_recall must be a 1-d floating-point"),
    (M.recall_splits, (torch.rand(3), [3, 4]), ValueError,
     r"train_class_counts must have shape \(3,\) like per_class_recall, got \(2,\)"),
    (M.recall_splits, (torch.rand(2), "ab"), TypeError, r"train_class_counts must be a tensor or a sequence"),
    (M.recall_splits, (torch.rand(2), [3, -1]), ValueError, r"train_class_counts must be non-negative, got \[3, -1\]"),
    (M.recall_splits, (torch.rand(2), [3, 4], 10, 20), ValueError, r"few must be <= many, got few=20 and many=10"),
    (M.recall_splits, (torch.rand(2), [3, 4], -1), ValueError, r"many must be a non-negative number, got -1"),
    (M.calibration_summary, (P, L, -3), ValueError, r"n_bins must be a positive integer, got -3"),
]


@pytest.mark.parametrize("fn,args,exc,match", BAD, ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)])
def test_bad_input(fn, args, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args)


def test_labels_on_another_device_are_rejected():
    with pytest.raises(ValueError, match=r"labels must be on the same device as probs \(cpu\), got meta"):
        M.ece(P, L.to("meta"))


# --------------------------------------------------------------------------------------------
# no host synchronisation
# --------------------------------------------------------------------------------------------


def _all_device_metrics(probs, labels, stats):
    return {
        "ece": M.ece(probs, labels),
        "adaptive_ece": M.adaptive_ece(probs, labels),
        "classwise_ece": M.classwise_ece(probs, labels),
        "nll": M.nll(probs, labels),
        "nll_logits": M.nll(probs.log(), labels, from_logits=True),
        "brier": M.brier(probs, labels),
        "recall": M.per_class_recall(probs, labels),
        "recall_preds": M.per_class_recall(probs.argmax(1), labels, num_classes=probs.shape[1]),
        "balanced_accuracy": M.balanced_accuracy(probs, labels),
        "macro_f1": M.macro_f1(probs, labels),
        "splits": M.recall_splits(M.per_class_recall(probs, labels),
                                  torch.arange(probs.shape[1], device=probs.device) * 40),
        "ece_from_stats": M.ece_from_stats(stats),
    }


def test_no_data_dependent_host_access_on_meta_device():
    # meta tensors have shapes but no data: any .item(), bool(), bincount or data-dependent shape would raise
    probs = torch.empty(32, 5, device="meta")
    labels = torch.empty(32, dtype=torch.long, device="meta")
    edges = torch.linspace(0, 1, 16, device="meta")
    z = torch.zeros(15, device="meta")
    stats = af.BatchStats(edges=edges, count=torch.zeros((), dtype=torch.long, device="meta"),
                          n_pos=torch.zeros((), dtype=torch.long, device="meta"), sum_pt=z.sum(), sum_loss=z.sum(),
                          sum_grad_norm=z.sum(), pt_hist=z.long(), class_count=z[:5].long(), class_sum_pt=z[:5],
                          conf_count=z.long(), conf_sum=z, correct_sum=z)
    out = _all_device_metrics(probs, labels, stats)
    for name, value in out.items():
        values = value.values() if isinstance(value, dict) else [value]
        assert all(v.device.type == "meta" for v in values), name


@cuda
def test_cuda_matches_cpu_without_sync(gen):
    x = torch.randn(256, 6, generator=gen) * 2
    labels = random_labels(gen, 256, 6)
    _, stats = af.softmax_focal_loss(x, labels, return_stats=True)
    probs = x.softmax(1)
    expected = _all_device_metrics(probs, labels, stats)
    xc, lc = x.cuda(), labels.cuda()
    _, stats_c = af.softmax_focal_loss(xc, lc, return_stats=True)
    probs_c = xc.softmax(1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = _all_device_metrics(probs_c, lc, stats_c)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for name in expected:
        e, g = expected[name], got[name]
        if isinstance(e, dict):
            e, g = torch.stack(list(e.values())), torch.stack(list(g.values()))
        assert g.device.type == "cuda", name
        torch.testing.assert_close(g.cpu(), e, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)
