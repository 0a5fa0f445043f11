"""Non-finite logits follow one rule on every path (README, "Numerics"):

* an ignored element (sigmoid) has loss 0 and gradient 0 whatever its logit;
* a logit of +-inf gives the limits of the loss and of its gradient: the gradient is always finite, the loss is
  0 where the target agrees with the logit (or the element's weight is 0) and +-inf where it grows without bound;
* a NaN logit gives a NaN loss and gradient, and keeps the element in the statistics: their sums over it are NaN
  (so a controller can tell the batch apart), the counts count it, the histograms put it in the last bin (as
  ``torch.bucketize`` does).

The sigmoid paths are the PyTorch reference (small inputs, float64, differentiable arguments), the fused C kernel
(large float32 CPU inputs), the C statistics pass of small inputs and the Triton kernel (its checks are in
test_triton_interpret.py). Expected limits are written out below from the formula, not computed by the library.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import adaptive_focal as af
import adaptive_focal.functional as functional
from adaptive_focal._kernels import MIN_NUMEL, kernel_available
from helpers.reference import sigmoid_limit

INF, NAN = math.inf, math.nan
IGNORE = -1.0
STAT_FIELDS = ("count", "n_pos", "sum_pt", "sum_loss", "sum_grad_norm", "pt_hist", "class_count", "class_sum_pt",
               "sum_pt_pos", "class_sum_grad_pos", "class_sum_grad_neg")
CONF_FIELDS = ("conf_count", "conf_sum", "correct_sum", "class_conf_count", "class_conf_sum", "class_correct_sum")


def _cases(targets):
    """One row of logits and targets: each target with +inf and -inf, a NaN logit, and ignored +-inf / NaN."""
    xs, ts = [], []
    for t in targets:
        xs += [INF, -INF]
        ts += [t, t]
    xs += [NAN, INF, -INF, NAN, 0.5]
    ts += [1.0, IGNORE, IGNORE, IGNORE, 0.0]
    return torch.tensor(xs), torch.tensor(ts)


def _value_and_grad(x, t, **kw):
    leaf = x.clone().requires_grad_()
    loss = af.sigmoid_focal_loss(leaf, t, reduction="none", ignore_index=IGNORE, **kw)
    loss.sum().backward()
    return loss.detach(), leaf.grad


SIGMOID_PATHS = ["reference_float32", "reference_float64", "kernel"]


@pytest.mark.parametrize("path", SIGMOID_PATHS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, -1.5])
@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("targets,ls", [([0.0, 1.0], 0.0), ([0.0, 1.0, 0.3], 0.0), ([0.0, 1.0], 0.1)],
                         ids=["hard", "soft", "smoothed"])
@pytest.mark.parametrize("form", ["scalar", "table"])
def test_sigmoid_limits_on_every_path(path, gamma, alpha, targets, ls, form):
    x, t = _cases(targets)
    lib_gamma = gamma if form == "scalar" else af.GammaTable([0.0, 1.0], [gamma])  # one bin: the table's code
    if path == "kernel":
        if not kernel_available("cpu"):
            pytest.skip("no C compiler for the CPU kernel")
        rows = MIN_NUMEL // x.numel() + 1
        x, t = x.repeat(rows, 1), t.repeat(rows, 1)  # large enough for the fused kernel, every row alike
    else:
        x, t = x.unsqueeze(0), t.unsqueeze(0)
        if path == "reference_float64":
            x, t = x.double(), t.double()
    loss, grad = _value_and_grad(x, t, gamma=lib_gamma, alpha=alpha, label_smoothing=ls)
    n = 2 * len(targets)
    for j in range(n):
        want_loss, want_grad = sigmoid_limit(float(x[0, j]), targets[j // 2], gamma, alpha, ls)
        case = f"x={float(x[0, j])}, t={targets[j // 2]}"
        assert torch.all(loss[:, j] == want_loss), f"{case}: loss {loss[0, j].item()} != {want_loss}"
        torch.testing.assert_close(grad[:, j], torch.full_like(grad[:, j], want_grad), msg=case)
    assert loss[:, n].isnan().all() and grad[:, n].isnan().all()  # NaN logit
    assert torch.all(loss[:, n + 1:n + 4] == 0) and torch.all(grad[:, n + 1:n + 4] == 0)  # ignored: exactly 0
    assert torch.isfinite(loss[:, n + 4]).all()


@pytest.mark.parametrize("detach", [False, True])
def test_sigmoid_infinite_logits_with_table_gamma_weight_and_detached_modulator(detach):
    """The other gamma kinds and an element weight follow the same limits (a zero weight gives loss 0)."""
    x = torch.tensor([[INF, -INF, INF, -INF]])
    t = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    table = af.GammaTable([0.0, 0.5, 1.0], [3.0, 1.0])  # p_t is 1 or 0: gamma 1 or 3
    w = torch.tensor([[2.0, 2.0, 0.0, 0.5]])
    loss, grad = _value_and_grad(x, t, gamma=table, weight=w, detach_modulator=detach)
    assert loss.tolist() == [[0.0, INF, 0.0, 0.0]]
    # d/dx at -inf with t = 1: w m (p - t) = 2 * 1 * (0 - 1); at +inf with t = 0 the weight is 0
    assert grad.tolist() == [[0.0, -2.0, 0.0, 0.0]]


def _sigmoid_stats(x, t, **kw):
    """The statistics with the confidence bins; without them (the default) the other fields are the same, NaN
    where they are NaN."""
    on = af.sigmoid_focal_loss(x, t, ignore_index=IGNORE, return_stats=True, confidence_stats=True, **kw)[1]
    off = af.sigmoid_focal_loss(x, t, ignore_index=IGNORE, return_stats=True, **kw)[1]
    for name in STAT_FIELDS:
        u, v = getattr(off, name), getattr(on, name)
        assert torch.equal(u.isnan(), v.isnan()) and torch.equal(u[~u.isnan()], v[~v.isnan()]), name
    assert all(getattr(off, name) is None for name in CONF_FIELDS)
    return on


def _assert_same_stats(a, b, rtol=1e-4):
    for name in STAT_FIELDS + CONF_FIELDS:
        u, v = getattr(a, name), getattr(b, name)
        assert torch.equal(u.isnan(), v.isnan()), f"{name}: {u} vs {v}"
        torch.testing.assert_close(u.double(), v.double(), rtol=rtol, atol=1e-4, equal_nan=True, msg=name)


def _nonfinite_batch(gen, n=64, c=5):
    x = torch.randn(n, c, generator=gen) * 3
    t = (torch.rand(n, c, generator=gen) < 0.3).float()
    x[3, 1], x[4, 2] = NAN, NAN  # a negative and a positive element with NaN logits
    t[3, 1], t[4, 2] = 0.0, 1.0
    x[5, 2], x[7, 0], x[8, 3] = INF, -INF, INF
    t[9] = IGNORE
    x[9, 3], x[9, 4], x[9, 0] = NAN, INF, -INF  # ignored: never counted
    return x, t


@pytest.mark.parametrize("gamma", [2.0, 0.5, -1.0, "table"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_sigmoid_statistics_of_nonfinite_logits_agree_between_the_c_pass_and_pytorch(gamma, ls, gen, monkeypatch):
    """The C statistics pass used to drop NaN elements from its sums while the PyTorch path propagated them, so
    that controllers read biased means. Both now keep them: the sums over a NaN element are NaN."""
    if not kernel_available("cpu"):
        pytest.skip("no C compiler for the CPU kernel")
    x, t = _nonfinite_batch(gen)
    if gamma == "table":
        gamma = af.GammaTable([0.0, 0.3, 0.6, 1.0], [3.0, 1.0, -0.5])
    c_pass = _sigmoid_stats(x, t, gamma=gamma, label_smoothing=ls)
    monkeypatch.setattr(functional, "_sigmoid_stats_kernel_fits", lambda *args: False)
    pytorch = _sigmoid_stats(x, t, gamma=gamma, label_smoothing=ls)
    _assert_same_stats(c_pass, pytorch)
    for s in (c_pass, pytorch):
        assert int(s.count) == 63 * 5 and int(s.class_count.sum()) == 63 * 5  # NaN elements counted, ignored not
        assert int(s.pt_hist.sum()) == int(s.count)  # every counted element is in a bin (NaN: the last)
        for name in ("sum_pt", "sum_loss", "sum_grad_norm", "sum_pt_pos"):
            assert getattr(s, name).isnan(), name
        assert s.class_sum_pt.isnan().tolist() == [False, True, True, False, False]
        assert not s.mean_pt.isfinite()  # what the policies test before moving gamma
        _assert_nan_confidence_bins(s, nan_classes=[1, 2])


def _assert_nan_confidence_bins(s, nan_classes):
    """A NaN logit's confidence is counted in the last bin, whose confidence and correct sums it makes NaN (for
    its class and in total); every other cell stays finite."""
    b = s.num_bins
    assert int(s.conf_count.sum()) == int(s.count) and torch.equal(s.class_conf_count.sum(1), s.class_count)
    for cells in (s.class_conf_sum, s.class_correct_sum):
        assert cells.isnan().nonzero().tolist() == [[c, b - 1] for c in nan_classes]
    for total in (s.conf_sum, s.correct_sum):
        assert total.isnan().tolist() == [False] * (b - 1) + [True]


def test_sigmoid_statistics_of_nonfinite_logits_fused_kernel_agrees_with_pytorch(gen):
    if not kernel_available("cpu"):
        pytest.skip("no C compiler for the CPU kernel")
    x, t = _nonfinite_batch(gen, n=MIN_NUMEL // 5 + 64)
    fused = _sigmoid_stats(x, t, gamma=2.0)
    # a gamma that requires grad takes the PyTorch path, in float32 like the kernel
    pytorch = _sigmoid_stats(x, t, gamma=torch.tensor(2.0, requires_grad=True))
    _assert_same_stats(fused, pytorch, rtol=1e-3)
    assert fused.sum_pt.isnan() and int(fused.pt_hist.sum()) == int(fused.count)
    _assert_nan_confidence_bins(fused, nan_classes=[1, 2])


def test_sigmoid_infinite_logits_keep_the_statistics_finite_but_the_loss_sum(gen):
    x, t = _nonfinite_batch(gen)
    x[3, 1], x[4, 2] = 1.0, -1.0  # no NaN left, only infinite logits (one of them wrong: loss inf)
    s = _sigmoid_stats(x, t, gamma=2.0)
    for name in STAT_FIELDS + CONF_FIELDS:
        if name != "sum_loss":
            assert getattr(s, name).isfinite().all(), name
    assert s.sum_loss == INF


# ---------------------------------------------------------------------------------------------------------------
# softmax: -inf is a class of probability 0; NaN and +inf follow log_softmax, as in F.cross_entropy
# ---------------------------------------------------------------------------------------------------------------
def _softmax_value_and_grad(fn, x, y, **kw):
    leaf = x.clone().requires_grad_()
    loss = fn(leaf, y, **kw)
    loss.sum().backward()
    return loss.detach(), leaf.grad


def test_softmax_minus_inf_logits_at_gamma0_equal_cross_entropy():
    """A target class at -inf has loss inf and the finite gradient of F.cross_entropy (it was NaN), and an
    ignored sample with a -inf logit gets gradient 0."""
    x = torch.tensor([[1.0, 2.0, 3.0], [-INF, 0.0, 0.0], [0.0, -INF, 0.5], [-INF, 1.0, 2.0]])
    y = torch.tensor([0, 0, 1, -100])
    for ls in (0.0, 0.1):
        got = _softmax_value_and_grad(af.softmax_focal_loss, x, y, gamma=0.0, reduction="none", label_smoothing=ls)
        want = _softmax_value_and_grad(F.cross_entropy, x, y, reduction="none", label_smoothing=ls)
        torch.testing.assert_close(got, want)
        assert got[0][1] == INF and torch.isfinite(got[1]).all()


@pytest.mark.parametrize("gamma", [0.5, 2.0, -1.0])
def test_softmax_minus_inf_target_has_the_cross_entropy_gradient_for_any_gamma(gamma):
    """At q_y = 0 the focal factor is 1 and its derivative term q k tends to 0: the gradient is softmax - onehot."""
    x = torch.tensor([[-INF, 0.0, 1.0], [-INF, 2.0, 2.0]])
    y = torch.tensor([0, 0])
    loss, grad = _softmax_value_and_grad(af.softmax_focal_loss, x, y, gamma=gamma, reduction="none")
    _, ce_grad = _softmax_value_and_grad(F.cross_entropy, x, y, reduction="none")
    assert loss.tolist() == [INF, INF]
    torch.testing.assert_close(grad, ce_grad)  # times the factor at q_y = 0: (1 - 0)**gamma = (1 + 0)**|gamma| = 1


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_softmax_class_of_probability_zero_is_left_out(gamma, gen):
    """A -inf logit with target probability 0 adds nothing (F.cross_entropy gives NaN there): the loss equals the
    loss over the other classes, and that class's gradient is 0."""
    x = torch.randn(4, 3, generator=gen)
    p = torch.softmax(torch.randn(4, 3, generator=gen), 1)
    with_masked = torch.cat([x, torch.full((4, 1), -INF)], 1)
    p_masked = torch.cat([p, torch.zeros(4, 1)], 1)
    loss, grad = _softmax_value_and_grad(af.softmax_focal_loss, with_masked, p_masked, gamma=gamma,
                                         reduction="none")
    want_loss, want_grad = _softmax_value_and_grad(af.softmax_focal_loss, x, p, gamma=gamma, reduction="none")
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad[:, :3], want_grad)
    assert torch.all(grad[:, 3] == 0)


@pytest.mark.parametrize("ignore_index", [-100, None])
def test_softmax_statistics_of_nonfinite_logits_agree_between_the_c_pass_and_pytorch(ignore_index, gen,
                                                                                     monkeypatch):
    """NaN and +inf logits (a NaN row after log_softmax) are counted, their confidence and p_t in the last bin,
    their sums NaN, on both paths; ignored samples are left out whatever their logits (the PyTorch path used to
    let their NaN into the sums, and the C pass put a NaN confidence in the first bin)."""
    if not kernel_available("cpu"):
        pytest.skip("no C compiler for the CPU kernel")
    x = torch.randn(40, 4, generator=gen) * 2
    y = torch.randint(0, 4, (40,), generator=gen)
    x[2, 1], x[5, 3], x[6, 0] = NAN, INF, -INF
    if ignore_index is not None:
        y[7] = ignore_index
        x[7, 0], x[7, 2] = NAN, INF
    c_pass = af.softmax_focal_loss(x, y, ignore_index=ignore_index, return_stats=True)[1]
    monkeypatch.setattr(functional, "_SOFTMAX_STATS_KERNEL_MAX", 0)
    pytorch = af.softmax_focal_loss(x, y, ignore_index=ignore_index, return_stats=True)[1]
    fields = STAT_FIELDS[:-2] + ("conf_count", "conf_sum", "correct_sum", "class_conf_count", "class_conf_sum",
                                 "class_correct_sum")
    for name in fields:
        u, v = getattr(c_pass, name), getattr(pytorch, name)
        torch.testing.assert_close(u.double(), v.double(), rtol=1e-5, atol=1e-5, equal_nan=True, msg=name)
    n = 39 if ignore_index is not None else 40
    assert int(c_pass.count) == n and int(c_pass.pt_hist.sum()) == n and int(c_pass.conf_count.sum()) == n
    assert c_pass.sum_pt.isnan() and c_pass.conf_sum[-1].isnan() and not c_pass.conf_sum[:-1].isnan().any()
