"""sum_pt_pos and the per-class gradient sums (class_sum_grad_pos / class_sum_grad_neg) of sigmoid_focal_loss.

The gradient sums are checked against torch.autograd.grad of the library's own element losses (reduction="none":
the gradient the loss back-propagates) and against the independent float64 reference in tests/helpers/reference.py.
With an input of shape (1, K) every element is its own class, so the class sums are the per-element values
themselves.
"""

import math

import pytest
import torch

import adaptive_focal as af
from helpers.reference import Table, stable_ref_sigmoid, to_lib_gamma, value_and_grad

SIG = af.sigmoid_focal_loss

# saturated, large, moderate and zero logits; each is paired with every target below
LOGITS = [1e4, -1e4, 100.0, -100.0, 30.0, -30.0, 17.0, -17.0, 4.0, -4.0, 1.3, -0.7, 0.0, 1e-3]
TARGETS = [1.0, 0.0, 0.3, 0.5, 0.999]
EDGES = torch.tensor([0.0, 0.15, 0.45, 0.7, 0.9, 1.0])


def grid(dtype=torch.float64):
    """(1, K) logits and targets: every logit with every target, each element its own class."""
    x = torch.tensor(LOGITS, dtype=dtype).repeat_interleave(len(TARGETS)).unsqueeze(0)
    t = torch.tensor(TARGETS, dtype=dtype).repeat(len(LOGITS)).unsqueeze(0)
    return x, t


def gamma_for(name, shape, gen):
    k = shape[1]
    if name == "scalar":
        return 2.0
    if name == "frac":
        return 0.5
    if name == "zero":
        return 0.0
    if name == "tensor0d":
        return torch.tensor(1.5)
    if name == "negative":
        return -1.5
    if name == "per_class":
        return torch.rand(k, generator=gen, dtype=torch.float64) * 5 - 2
    if name == "per_element":
        g = torch.rand(shape, generator=gen, dtype=torch.float64) * 5 - 2
        g.view(-1)[::3] = 0.0
        return g
    if name == "table":
        return Table(EDGES.clone(), torch.tensor([4.0, 3.0, 0.0, -1.0, 0.5]))
    if name == "table_per_class":
        return Table(EDGES.clone(), torch.rand(k, 5, generator=gen) * 4 - 1)
    raise AssertionError(name)


GAMMAS = ["scalar", "frac", "zero", "tensor0d", "negative", "per_class", "per_element", "table", "table_per_class"]

OPTIONS = {
    "plain": {},
    "alpha": {"alpha": 0.25},
    "alpha_class_weight": {"alpha": "class", "weight": True},
    "smoothing": {"label_smoothing": 0.1},
    "ignore": {"ignore_index": 0.5},  # the t = 0.5 elements are left out
    "all": {"alpha": "class", "weight": True, "label_smoothing": 0.2, "ignore_index": 0.5},
}


def options(name, shape, gen, dtype):
    kw = dict(OPTIONS[name])
    if kw.get("alpha") == "class":
        kw["alpha"] = torch.rand(shape[1], generator=gen, dtype=torch.float64)
    if kw.get("weight"):
        kw["weight"] = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 + 0.1).to(dtype)
    return kw


def autograd_elem_grad(x, t, gamma, kw, detach):
    """d(element loss)/d(logit) by autograd through the library's reduction="none" losses."""
    xl = x.detach().clone().requires_grad_(True)
    loss = SIG(xl, t, gamma=to_lib_gamma(gamma), reduction="none", detach_modulator=detach, **kw)
    (g,) = torch.autograd.grad(loss.sum(), xl)
    return g


def expected_sums(grad, t, kw):
    """Per-class sums of |g| t and |g| (1 - t) over the non-ignored elements (class = index along dim 1)."""
    valid = torch.ones_like(t, dtype=torch.bool) if kw.get("ignore_index") is None else t != kw["ignore_index"]
    g = torch.where(valid, grad.abs().double(), 0.0)
    tt = torch.where(valid, t.double(), 0.0)
    dims = [d for d in range(t.dim()) if d != 1]
    return (g * tt).sum(dims), (g * (1 - tt)).sum(dims)


def assert_sums(st, grad, t, kw, rtol, atol_scale):
    pos, neg = expected_sums(grad, t, kw)
    scale = float(max(pos.abs().max(), neg.abs().max()))
    for name, want in (("class_sum_grad_pos", pos), ("class_sum_grad_neg", neg)):
        got = getattr(st, name)
        assert got.dtype == torch.float32 and got.shape == want.shape, name
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol_scale * scale, msg=name)


@pytest.mark.parametrize("detach", [False, True], ids=["paper", "detach"])
@pytest.mark.parametrize("opt", list(OPTIONS))
@pytest.mark.parametrize("gname", GAMMAS)
def test_per_element_gradient_matches_autograd(gname, opt, detach, gen):
    x, t = grid()
    g = gamma_for(gname, x.shape, gen)
    kw = options(opt, x.shape, gen, torch.float64)
    _, st = SIG(x, t, gamma=to_lib_gamma(g), return_stats=True, detach_modulator=detach, **kw)
    grad = autograd_elem_grad(x, t, g, kw, detach)
    assert torch.isfinite(grad).all()
    assert_sums(st, grad, t, kw, rtol=3e-7, atol_scale=1e-9)
    # and against the independent float64 reference (finite at |x| = 1e4 too)
    _, ref = value_and_grad(lambda xx: stable_ref_sigmoid(xx, t, g, reduction="sum", detach_modulator=detach, **kw),
                            x)
    assert_sums(st, ref, t, kw, rtol=3e-7, atol_scale=1e-9)


@pytest.mark.parametrize("gname", ["scalar", "frac", "negative", "per_element", "table_per_class"])
@pytest.mark.parametrize("detach", [False, True], ids=["paper", "detach"])
def test_per_element_gradient_float32_saturated(gname, detach, gen):
    """float32 inputs (computed in float32): finite at saturated logits and close to the float64 gradient."""
    x, t = grid(torch.float32)
    g = gamma_for(gname, x.shape, gen)
    if isinstance(g, torch.Tensor):
        g = g.float()
    kw = options("all", x.shape, gen, torch.float32)
    kw["label_smoothing"] = 0.1  # with 0.2 a saturated p_t is 0.9 (a table edge), binned by float32 rounding
    _, st = SIG(x, t, gamma=to_lib_gamma(g), return_stats=True, detach_modulator=detach, **kw)
    _, ref = value_and_grad(lambda xx: stable_ref_sigmoid(xx, t, g, reduction="sum", detach_modulator=detach, **kw),
                            x.double())
    assert_sums(st, ref, t, kw, rtol=1e-4, atol_scale=1e-6)


@pytest.mark.parametrize("gname", GAMMAS)
@pytest.mark.parametrize("opt", ["plain", "all"])
def test_class_sums_over_rows_and_positions(gname, opt, gen):
    """(N, C, H, W): each class sums over rows and positions; sum_pt_pos sums p_t over the positives."""
    shape = (3, 4, 5, 2)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 4
    t = torch.rand(shape, generator=gen, dtype=torch.float64)
    t.view(-1)[::3] = 1.0
    t.view(-1)[1::3] = 0.0
    t.view(-1)[::7] = 0.5
    g = gamma_for(gname, shape, gen)
    kw = options(opt, shape, gen, torch.float64)
    _, st = SIG(x, t, gamma=to_lib_gamma(g), return_stats=True, **kw)
    assert_sums(st, autograd_elem_grad(x, t, g, kw, False), t, kw, rtol=3e-7, atol_scale=1e-9)
    valid = torch.ones_like(t, dtype=torch.bool) if kw.get("ignore_index") is None else t != kw["ignore_index"]
    ls = kw.get("label_smoothing", 0.0)
    ts = torch.where(valid, t, 0.0) * (1 - ls) + ls / 2
    p = torch.sigmoid(x)
    p_t = p * ts + (1 - p) * (1 - ts)
    pos = valid & (t >= 0.5)
    torch.testing.assert_close(st.sum_pt_pos.double(), p_t[pos].sum(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(st.mean_pt_pos.double(), p_t[pos].mean(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(st.mean_pt_neg.double(), p_t[valid & ~pos].mean(), rtol=1e-6, atol=1e-6)


def test_hand_computed():
    # x = [0, ln 3, -ln 3, 5], t = [1, 1, 0, ignored]: p = [1/2, 3/4, 1/4], p_t = [1/2, 3/4, 3/4]
    x = torch.tensor([0.0, math.log(3.0), -math.log(3.0), 5.0], dtype=torch.float64)
    t = torch.tensor([1.0, 1.0, 0.0, -1.0], dtype=torch.float64)
    # gamma = 0: dl/dx = p - t = [-1/2, -1/4, 1/4]
    _, st = SIG(x, t, gamma=0.0, ignore_index=-1, return_stats=True)
    assert st.class_sum_grad_pos.tolist() == pytest.approx([0.75])
    assert st.class_sum_grad_neg.tolist() == pytest.approx([0.25])
    assert float(st.sum_pt_pos) == pytest.approx(1.25)
    assert float(st.mean_pt_pos) == pytest.approx(0.625)
    assert float(st.mean_pt_neg) == pytest.approx(0.75)
    # gamma = 2, alpha = 0.25: dl/dx = a (m (p - t) + ce dm/dx), m = (1 - p_t)^2,
    # dm/dx = -2 m (2t - 1) p (1 - p) / (1 - p_t)
    _, st = SIG(x, t, gamma=2.0, alpha=0.25, ignore_index=-1, return_stats=True)
    g0 = 0.25 * (0.25 * -0.5 + math.log(2) * (-2 * 0.25 * 0.25 / 0.5))        # t = 1, p = 1/2
    g1 = 0.25 * (0.0625 * -0.25 + math.log(4 / 3) * (-2 * 0.0625 * 0.1875 / 0.25))  # t = 1, p = 3/4
    g2 = 0.75 * (0.0625 * 0.25 + math.log(4 / 3) * (2 * 0.0625 * 0.1875 / 0.25))   # t = 0, p = 1/4
    assert st.class_sum_grad_pos.tolist() == pytest.approx([abs(g0) + abs(g1)])
    assert st.class_sum_grad_neg.tolist() == pytest.approx([abs(g2)])
    # detach_modulator: dl/dx = a m (p - t)
    _, st = SIG(x, t, gamma=2.0, alpha=0.25, ignore_index=-1, return_stats=True, detach_modulator=True)
    assert st.class_sum_grad_pos.tolist() == pytest.approx([0.25 * 0.25 * 0.5 + 0.25 * 0.0625 * 0.25])
    assert st.class_sum_grad_neg.tolist() == pytest.approx([0.75 * 0.0625 * 0.25])


def test_no_positives_or_no_negatives_give_nan_means():
    x = torch.randn(4, 3)
    _, st = SIG(x, torch.zeros(4, 3), return_stats=True)
    assert float(st.sum_pt_pos) == 0 and torch.isnan(st.mean_pt_pos) and torch.isfinite(st.mean_pt_neg)
    assert float(st.class_sum_grad_pos.abs().sum()) == 0 and bool((st.class_sum_grad_neg > 0).all())
    _, st = SIG(x, torch.ones(4, 3), return_stats=True)
    assert torch.isnan(st.mean_pt_neg) and torch.isfinite(st.mean_pt_pos)
    assert float(st.class_sum_grad_neg.abs().sum()) == 0


def test_softmax_fields():
    x = torch.randn(6, 4)
    _, st = af.softmax_focal_loss(x, torch.tensor([0, 1, 2, 3, 0, -100]), return_stats=True)
    assert torch.equal(st.sum_pt_pos, st.sum_pt) and st.sum_pt_pos.dtype == torch.float32
    torch.testing.assert_close(st.mean_pt_pos, st.mean_pt)
    assert torch.isnan(st.mean_pt_neg)
    assert st.class_sum_grad_pos is None and st.class_sum_grad_neg is None
    both = st + st
    assert torch.equal(both.sum_pt_pos, 2 * st.sum_pt) and both.class_sum_grad_pos is None


def test_statistics_without_the_new_fields():
    """BatchStats built without the new fields (older code, older state dicts) still work and add up."""
    _, st = SIG(torch.randn(5, 3), (torch.rand(5, 3) < 0.5).float(), return_stats=True)
    old = {k: v for k, v in st.state_dict().items()
           if k not in ("sum_pt_pos", "class_sum_grad_pos", "class_sum_grad_neg")}
    legacy = af.BatchStats.from_state_dict(old)
    assert legacy.sum_pt_pos is None and legacy.mean_pt_pos is None and legacy.mean_pt_neg is None
    both = legacy + st
    assert both.sum_pt_pos is None and both.class_sum_grad_pos is None
    assert torch.equal(both.count, 2 * st.count)
    again = af.BatchStats.from_state_dict(st.state_dict())
    assert torch.equal(again.class_sum_grad_neg, st.class_sum_grad_neg)


@pytest.mark.parametrize("shape", [(40, 3), (2048, 64), (8, 4, 64, 64)], ids=["small", "large", "largeNCHW"])
def test_halves_add_up(shape, gen):
    x = torch.randn(shape, generator=gen) * 3
    t = (torch.rand(shape, generator=gen) < 0.3).float()
    t[torch.rand(shape, generator=gen) < 0.1] = -1.0
    kw = dict(gamma=1.5, alpha=0.25, ignore_index=-1.0, label_smoothing=0.05)
    whole = SIG(x, t, return_stats=True, **kw)[1]
    h = shape[0] // 2
    added = SIG(x[:h], t[:h], return_stats=True, **kw)[1] + SIG(x[h:], t[h:], return_stats=True, **kw)[1]
    for name in ("sum_pt_pos", "class_sum_grad_pos", "class_sum_grad_neg"):
        torch.testing.assert_close(getattr(added, name), getattr(whole, name), rtol=1e-5, atol=1e-5, msg=name)


def test_all_reduce_sums_the_new_fields(tmp_path, gen):
    import torch.distributed as dist

    x = torch.randn(2048, 64, generator=gen)  # the compiled kernel's statistics
    t = (torch.rand(2048, 64, generator=gen) < 0.2).float()
    st = SIG(x, t, return_stats=True)[1]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        out = st.all_reduce()
    finally:
        dist.destroy_process_group()
    for name in ("sum_pt_pos", "class_sum_grad_pos", "class_sum_grad_neg"):
        assert torch.equal(getattr(out, name), getattr(st, name)), name
