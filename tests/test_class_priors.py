"""Logit adjustment (``class_priors``, ``tau``) and class-balanced weights in the library.

Menon et al. (2021): the logit-adjusted loss is the loss of ``logits + tau * log(pi / sum(pi))``; with gamma = 0 it is
their logit-adjusted cross-entropy, checked here against ``F.cross_entropy`` on logits adjusted by hand. With any
other gamma, reduction or statistics the options compose: the result is the focal loss of the adjusted logits. The
sigmoid counterpart adjusts each class's one-vs-rest logit by ``tau * log(pi_c / (1 - pi_c))``.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import adaptive_focal as af
from adaptive_focal._kernels import MIN_NUMEL, kernel_available
from helpers.reference import Table, stable_ref_softmax, to_lib_gamma, value_and_grad

f64 = torch.float64
COUNTS = torch.tensor([400, 90, 25, 5])


def softmax_offsets(priors, tau, dtype=f64):
    p = torch.as_tensor(priors, dtype=f64)
    return (tau * torch.log(p / p.sum())).to(dtype)


def sigmoid_offsets(priors, tau, dtype=f64):
    p = torch.as_tensor(priors, dtype=f64)
    return (tau * (torch.log(p) - torch.log1p(-p))).to(dtype)


def _data(gen, n=10, c=4, dtype=f64, spatial=()):
    x = (torch.randn((n, c) + spatial, generator=gen, dtype=f64) * 2).to(dtype)
    y = torch.randint(0, c, (n,) + spatial, generator=gen)
    return x, y


def _grad(fn, x):
    leaf = x.detach().clone().requires_grad_()
    out = fn(leaf)
    out.sum().backward()
    return out.detach(), leaf.grad


# ---------------------------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1}, {"weight": True}, {"ignore": True}],
                         ids=["plain", "ls", "weight", "ignore"])
@pytest.mark.parametrize("priors", ["counts", "frequencies"])
def test_gamma0_is_the_logit_adjusted_cross_entropy(tau, reduction, opts, priors, gen):
    x, y = _data(gen)
    kw = {}
    if opts.get("label_smoothing"):
        kw["label_smoothing"] = opts["label_smoothing"]
    if opts.get("weight"):
        kw["weight"] = (torch.rand(4, generator=gen) + 0.5).double()  # float32 values, as the module's buffer
    if opts.get("ignore"):
        y[::3] = -100
    p = COUNTS if priors == "counts" else COUNTS.double() / COUNTS.sum()
    loss = af.FocalLoss("softmax", gamma=0.0, class_priors=p, tau=tau, reduction=reduction, **kw).double()
    got = _grad(lambda z: loss(z, y), x)
    want = _grad(lambda z: F.cross_entropy(z + softmax_offsets(COUNTS, tau), y, reduction=reduction, **kw), x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_gamma0_float32_matches_cross_entropy_of_the_adjusted_logits(gen):
    # the acceptance check, in float32 (equal up to float32 rounding of the two formulations)
    x, y = _data(gen, dtype=torch.float32)
    got = _grad(lambda z: af.FocalLoss("softmax", gamma=0.0, class_priors=COUNTS, tau=1.5)(z, y), x)
    want = _grad(lambda z: F.cross_entropy(z + 1.5 * torch.log(COUNTS / COUNTS.sum()), y), x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _gamma(name, shape, gen):
    return {
        "float": 2.0, "frac": 0.5, "neg": -1.0,
        "per_class": torch.tensor([0.5, 2.0, 3.0, 1.0], dtype=f64),
        "per_sample": torch.rand((shape[0], 1) + tuple(shape[2:]), generator=gen, dtype=f64) * 3,
        "term": torch.rand(shape, generator=gen, dtype=f64) * 3,
        "table": Table(torch.tensor([0.0, 0.3, 0.6, 1.0]), torch.tensor([3.0, 2.0, 1.0])),
        "mixture": af.FocalMixture([2.0, -1.0], [0.75, 0.25]),
    }[name]


@pytest.mark.parametrize("gname", ["float", "frac", "neg", "per_class", "per_sample", "term", "table", "mixture"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("target", ["index", "prob"])
@pytest.mark.parametrize("spatial", [(), (3,)], ids=["NC", "NCD"])
def test_any_gamma_is_the_focal_loss_of_the_adjusted_logits(gname, reduction, target, spatial, gen):
    """Values, gradients and statistics equal those of the adjusted logits given to the plain loss; the values
    also match the independent float64 reference on the adjusted logits."""
    x, y = _data(gen, spatial=spatial)
    if target == "prob":
        y = torch.softmax(torch.randn(x.shape, generator=gen, dtype=f64), 1)
    g = _gamma(gname, x.shape, gen)
    tau = 1.3
    off = softmax_offsets(COUNTS, tau).view((1, 4) + (1,) * len(spatial))
    lib_g = to_lib_gamma(g)

    def adjusted(z):
        return af.softmax_focal_loss(z, y, gamma=lib_g, class_priors=COUNTS, tau=tau, reduction=reduction,
                                     return_stats=True)

    def by_hand(z):
        return af.softmax_focal_loss(z + off, y, gamma=lib_g, reduction=reduction, return_stats=True)

    (got, got_stats), (want, want_stats) = adjusted(x), by_hand(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for name in ("count", "sum_pt", "sum_loss", "sum_grad_norm", "pt_hist", "class_sum_pt", "conf_count",
                 "conf_sum", "correct_sum"):
        torch.testing.assert_close(getattr(got_stats, name), getattr(want_stats, name), rtol=1e-12, atol=1e-12)
    grad = _grad(lambda z: adjusted(z)[0], x)[1]
    torch.testing.assert_close(grad, _grad(lambda z: by_hand(z)[0], x)[1], rtol=1e-12, atol=1e-12)
    if gname != "mixture":
        ref, _ = value_and_grad(lambda z: stable_ref_softmax(z + off, y, g, reduction=reduction), x)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


def test_statistics_are_those_of_the_adjusted_logits(gen):
    # zero logits: the adjusted probabilities are the priors, so p_t of a sample of class c is pi_c
    y = torch.tensor([0, 1, 2, 3, 0])
    _, stats = af.softmax_focal_loss(torch.zeros(5, 4), y, class_priors=COUNTS, return_stats=True)
    pi = (COUNTS / COUNTS.sum()).float()
    torch.testing.assert_close(stats.class_sum_pt, torch.stack([2 * pi[0], pi[1], pi[2], pi[3]]))
    assert int(stats.correct_sum.sum()) == 2  # the head class wins every adjusted argmax


def test_tau_zero_leaves_the_loss_unchanged(gen):
    x, y = _data(gen)
    assert torch.equal(af.softmax_focal_loss(x, y, class_priors=COUNTS, tau=0.0), af.softmax_focal_loss(x, y))


# ---------------------------------------------------------------------------------------------------------------
# sigmoid: each class's one-vs-rest problem
# ---------------------------------------------------------------------------------------------------------------
PI = torch.tensor([0.4, 0.1, 0.02, 0.3])


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_sigmoid_gamma0_is_bce_of_the_adjusted_logits(tau, gen):
    x = torch.randn(8, 4, generator=gen, dtype=f64) * 2
    t = (torch.rand(8, 4, generator=gen) < 0.3).to(f64)
    off = sigmoid_offsets(PI, tau)
    got = _grad(lambda z: af.sigmoid_focal_loss(z, t, gamma=0.0, class_priors=PI, tau=tau), x)
    want = _grad(lambda z: F.binary_cross_entropy_with_logits(z + off, t), x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # a sigmoid is the two-class softmax of (z, 0): adjusting both logits by tau log(pi), tau log(1 - pi) is
    # the same loss
    two = torch.stack([x[:, 0] + tau * math.log(PI[0]), torch.full_like(x[:, 0], tau * math.log(1 - PI[0]))], 1)
    torch.testing.assert_close(F.cross_entropy(two, 1 - t[:, 0].long(), reduction="none"),
                               af.sigmoid_focal_loss(x, t, gamma=0.0, class_priors=PI, tau=tau,
                                                     reduction="none")[:, 0])


@pytest.mark.parametrize("path", ["reference", "kernel"])
@pytest.mark.parametrize("gamma", [2.0, "asymmetric"])
def test_sigmoid_any_gamma_is_the_focal_loss_of_the_adjusted_logits(path, gamma, gen):
    n = MIN_NUMEL // 4 + 8 if path == "kernel" else 8
    if path == "kernel" and not kernel_available("cpu"):
        pytest.skip("no C compiler for the CPU kernel")
    x = torch.randn(n, 4, generator=gen) * 2
    t = (torch.rand(n, 4, generator=gen) < 0.3).float()
    g = af.AsymmetricGamma(0.0, 4.0) if gamma == "asymmetric" else gamma
    off = sigmoid_offsets(PI, 0.8, torch.float32)
    (got, got_stats), grad = (af.sigmoid_focal_loss(x, t, gamma=g, class_priors=PI, tau=0.8, return_stats=True,
                                                    confidence_stats=True),
                              _grad(lambda z: af.sigmoid_focal_loss(z, t, gamma=g, class_priors=PI, tau=0.8), x)[1])
    want, want_stats = af.sigmoid_focal_loss(x + off, t, gamma=g, return_stats=True, confidence_stats=True)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad, _grad(lambda z: af.sigmoid_focal_loss(z + off, t, gamma=g), x)[1])
    for name in ("count", "n_pos", "sum_pt", "pt_hist", "class_sum_pt", "class_sum_grad_pos", "conf_count",
                 "conf_sum", "correct_sum", "class_conf_count", "class_conf_sum", "class_correct_sum"):
        assert getattr(got_stats, name) is not None, name
        torch.testing.assert_close(getattr(got_stats, name), getattr(want_stats, name))


def test_sigmoid_confidence_bins_are_those_of_the_adjusted_logits():
    # zero logits: the adjusted p of class c is pi_c (tau 1), below 1/2 for every class here, so every element
    # is predicted negative with confidence 1 - pi_c and is correct where its target is 0
    t = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    _, stats = af.sigmoid_focal_loss(torch.zeros(2, 4), t, class_priors=PI, return_stats=True, confidence_stats=True)
    torch.testing.assert_close(stats.class_conf_sum.sum(1), 2 * (1 - PI))
    assert stats.class_correct_sum.sum(1).tolist() == [1.0, 2.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------------------------
# the module, a policy driving it, and bad input
# ---------------------------------------------------------------------------------------------------------------
def test_module_state_and_repr(gen):
    loss = af.FocalLoss("softmax", gamma=1.0, class_priors=[400, 90, 25, 5], tau=0.7)
    assert loss.class_priors.dtype == f64 and "class_priors" in loss.state_dict()
    fresh = af.FocalLoss("softmax", gamma=1.0, class_priors=torch.ones(4), tau=0.7)
    fresh.load_state_dict(loss.state_dict())
    x, y = _data(gen, dtype=torch.float32)
    assert torch.equal(fresh(x, y), loss(x, y))
    assert "class_priors=(4,), tau=0.7" in repr(loss)


def test_a_policy_drives_the_logit_adjusted_loss(gen):
    """The statistics a policy reads are those of the adjusted logits; what it writes is the focal loss's gamma."""
    loss = af.FocalLoss("softmax", gamma=2.0, class_priors=COUNTS, tau=1.0)
    policy = af.create_policy("automated", loss)
    x, y = _data(gen, n=64, dtype=torch.float32)
    _, stats = loss(x, y, return_stats=True)
    policy.step(stats)
    gamma = float(loss.gamma)
    assert gamma != 2.0
    # automated focal loss: gamma = -log(mean p_t), here of the first batch, whose p_t are the adjusted ones
    adjusted_pt = torch.softmax(x + softmax_offsets(COUNTS, 1.0, torch.float32), 1).gather(1, y[:, None])
    assert math.isclose(gamma, -math.log(float(adjusted_pt.mean())), rel_tol=1e-4)
    by_hand = af.softmax_focal_loss(x + softmax_offsets(COUNTS, 1.0, torch.float32), y, gamma=gamma)
    torch.testing.assert_close(loss(x, y), by_hand)


@pytest.mark.parametrize("mode,priors,match", [
    ("softmax", [4, 0, 1, 1], r"class_priors must be finite and > 0 .*0\.0"),
    ("softmax", [4, -1, 1, 1], r"class_priors must be finite and > 0 .*-1\.0"),
    ("softmax", [4, float("nan"), 1, 1], r"class_priors must be finite and > 0 .*nan"),
    ("softmax", [4, float("inf"), 1, 1], r"class_priors must be finite and > 0 .*inf"),
    ("softmax", [4, 1, 1], r"class_priors must be a 1-D tensor of length C = 4.*\(3,\)"),
    ("softmax", [[4, 1, 1, 1]], r"class_priors must be a 1-D tensor of length C = 4.*\(1, 4\)"),
    ("sigmoid", [0.5, 1.0, 0.2, 0.1], r"class_priors of sigmoid_focal_loss must be in \(0, 1\).*1\.0"),
    ("sigmoid", [40, 10, 3, 1], r"class_priors of sigmoid_focal_loss must be in \(0, 1\).*divide"),
    ("sigmoid", [0.5, 0.0, 0.2, 0.1], r"class_priors of sigmoid_focal_loss must be in \(0, 1\)"),
])
def test_bad_priors(mode, priors, match):
    if "length" not in match:  # a module's C is its priors' length; the values are checked at construction
        with pytest.raises(ValueError, match=match):
            af.FocalLoss(mode, class_priors=priors)
    x = torch.randn(3, 4)
    t = torch.zeros(3, dtype=torch.long) if mode == "softmax" else torch.zeros(3, 4)
    fn = af.softmax_focal_loss if mode == "softmax" else af.sigmoid_focal_loss
    with pytest.raises(ValueError, match=match):
        fn(x, t, class_priors=priors)


@pytest.mark.parametrize("tau", [float("nan"), float("inf"), True, "1"])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match=r"tau must be a finite number, got"):
        af.FocalLoss("softmax", class_priors=COUNTS, tau=tau)


def test_tau_without_priors_is_an_error():
    with pytest.raises(ValueError, match=r"tau applies to class_priors .*tau=2\.0 without class_priors"):
        af.softmax_focal_loss(torch.randn(2, 3), torch.tensor([0, 1]), tau=2.0)


def test_class_balanced_weights_is_exported_and_usable_as_weight(gen):
    w = af.class_balanced_weights(COUNTS, beta=0.99)
    raw = torch.tensor([(1 - 0.99) / (1 - 0.99 ** int(n)) for n in COUNTS], dtype=f64)
    torch.testing.assert_close(w, (raw * 4 / raw.sum()).float())
    x, y = _data(gen, dtype=torch.float32)
    torch.testing.assert_close(af.softmax_focal_loss(x, y, gamma=0.0, weight=w), F.cross_entropy(x, y, weight=w))
    alpha = w / w.max()  # as alpha: the same ratios, values in [0, 1]
    per = af.softmax_focal_loss(x, y, gamma=0.0, alpha=alpha, reduction="none")
    torch.testing.assert_close(per, F.cross_entropy(x, y, reduction="none") * alpha[y])
