"""adaptive_focal.sigmoid_focal_loss against an independent float64 reference (spec: Semantics)."""
import itertools
import math
import os

import pytest
import torch
import torch.nn.functional as F

import adaptive_focal as af
from helpers.reference import (
    Table,
    assert_close,
    compare_with_reference,
    far_from_edges_sigmoid,
    pt_sigmoid,
    ref_sigmoid,
    stable_ref_sigmoid,
    to_lib_gamma,
    upstream_like,
    value_and_grad,
)

LIB = af.sigmoid_focal_loss

SHAPES = {"N": (7,), "NC": (6, 3), "NCHW": (2, 3, 4, 5)}
REDUCTIONS = ["none", "mean", "sum", "positives"]
EDGES = torch.tensor([0.0, 0.15, 0.45, 0.7, 0.9, 1.0])


def gamma_desc(name, shape, gen):
    C = shape[1] if len(shape) >= 2 else 1
    if name == "float":
        return 2.0
    if name == "frac":
        return 0.5
    if name == "zero":
        return 0.0
    if name == "t0d":
        return torch.tensor(1.5)
    if name == "neg":
        return -1.5
    if name == "per_class":
        return torch.tensor([0.5, 2.0, 3.0, 1.0][:C])
    if name == "per_class_mixed":
        return torch.tensor([-1.0, 0.0, 2.5, 0.7][:C])
    if name == "elem":
        return torch.rand(shape, generator=gen) * 2.8 + 0.2
    if name == "elem_mixed":
        g = torch.rand(shape, generator=gen) * 5 - 2
        g.view(-1)[::4] = 0.0
        return g
    if name == "bcast":  # (N, 1, ...) broadcast along the class dim
        return torch.rand((shape[0], 1) + tuple(shape[2:]), generator=gen) * 3
    if name == "table":
        return Table(EDGES.clone(), torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5]))
    if name == "table_neg":
        return Table(EDGES.clone(), torch.tensor([3.0, 2.0, 0.0, -1.0, -2.0]))
    if name == "table_cb":
        v = torch.rand((C, 5), generator=gen) * 4 - 1
        return Table(EDGES.clone(), v)
    raise AssertionError(name)


GAMMAS = ["float", "frac", "zero", "t0d", "neg", "per_class", "per_class_mixed", "elem", "elem_mixed",
          "bcast", "table", "table_neg", "table_cb"]
NEEDS_CLASS_DIM = {"per_class", "per_class_mixed", "bcast", "table_cb"}

OPTS = {
    "plain": dict(),
    "alpha_f": dict(alpha=0.25),
    "alpha_c_w_soft": dict(alpha="class", weight="full", soft=True),
    "ls_ignore": dict(label_smoothing=0.1, ignore_index=-1.0, alpha=0.25),
    "wb_ignore_soft_ls": dict(weight="bcast", ignore_index=-1.0, soft=True, label_smoothing=0.2),
    "all": dict(alpha="class", weight="full", label_smoothing=0.1, ignore_index=-1.0, soft=True),
    "ignore_pos": dict(ignore_index=2.0, alpha=0.75),
}


def make_case(shape, gamma_name, opt_name, gen, dtype=torch.float64, scale=2.5):
    """Build (x, target, gamma_desc, lib_kwargs) for a shape / gamma form / option combo."""
    opt = dict(OPTS[opt_name])
    soft = opt.pop("soft", False)
    C = shape[1] if len(shape) >= 2 else 1
    kw = {}
    if "alpha" in opt:
        a = opt.pop("alpha")
        if a == "class":
            a = torch.tensor([0.2, 0.5, 0.9, 0.6][:C]) if len(shape) >= 2 else 0.75
        kw["alpha"] = a
    if "weight" in opt:
        w = opt.pop("weight")
        if w == "full":
            w = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5
        else:  # broadcastable, as in F.binary_cross_entropy_with_logits
            bshape = (C,) if len(shape) == 2 else (C, 1, 1) if len(shape) == 4 else (1,)
            w = torch.rand(bshape, generator=gen, dtype=torch.float64) * 2 + 0.1
        kw["weight"] = w
    kw.update(opt)
    ign = kw.get("ignore_index")
    ls = kw.get("label_smoothing", 0.0)

    def make_x(mask):
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    def make_t(mask):
        if soft:
            t = torch.rand(shape, generator=gen, dtype=torch.float64)
            t.view(-1)[::5] = 1.0
            t.view(-1)[1::5] = 0.0
        else:
            t = (torch.rand(shape, generator=gen) < 0.4).to(torch.float64)
        if ign is not None and mask is None:
            drop = torch.rand(shape, generator=gen) < 0.2
            t = torch.where(drop, torch.full_like(t, ign), t)
        return t.to(dtype)

    g = gamma_desc(gamma_name, shape, gen)
    if isinstance(g, Table):
        x, t = far_from_edges_sigmoid(make_x, make_t, g.edges, ls, ign)
    else:
        x, t = make_x(None), make_t(None)
    if "weight" in kw:
        kw["weight"] = kw["weight"].to(dtype)
    return x, t, g, kw


def cases(shapes=SHAPES, gammas=GAMMAS, opts=OPTS, reductions=REDUCTIONS):
    out = []
    for s, gname, o, r in itertools.product(shapes, gammas, opts, reductions):
        if len(SHAPES[s]) < 2 and gname in NEEDS_CLASS_DIM:
            continue
        out.append(pytest.param(s, gname, o, r, id=f"{s}-{gname}-{o}-{r}"))
    return out


def lib_call(x, t, g, kw, reduction, **extra):
    return LIB(x, t, gamma=to_lib_gamma(g), reduction=reduction, **kw, **extra)


def check_against_ref(x, t, g, kw, reduction, dtype, gen, detach=False, ref=ref_sigmoid):
    return compare_with_reference(lib_call, ref, x, t, g, kw, reduction, dtype, gen, detach)


# --------------------------------------------------------------------------------------------
# the reference itself: literal formula == log-space formula at moderate logits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gname", ["float", "frac", "neg", "elem_mixed", "table_cb"])
@pytest.mark.parametrize("opt", ["plain", "all", "ls_ignore"])
def test_reference_self_consistency(gname, opt, gen):
    x, t, g, kw = make_case(SHAPES["NC"], gname, opt, gen)
    a, ga = value_and_grad(lambda xx: ref_sigmoid(xx, t, g, reduction="sum", **kw), x)
    b, gb = value_and_grad(lambda xx: stable_ref_sigmoid(xx, t, g, reduction="sum", **kw), x)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-12)
    # the reference gradient matches the kernel-contract closed form (no alpha/weight/ignore here)
    if opt == "plain":
        x64 = x.double()
        p = torch.sigmoid(x64)
        pm = torch.sigmoid(-x64)
        q = t * pm + (1 - t) * p
        pt = 1 - q
        from helpers.reference import dense_gamma
        gam = dense_gamma(g, x64, pt)
        base = torch.where(gam >= 0, q, 2 - q)
        m = base ** gam.abs()
        bce = F.binary_cross_entropy_with_logits(x64, t, reduction="none")
        r = p * pm / base
        grad = m * (p - t) + gam * m * r * (1 - 2 * t) * bce
        torch.testing.assert_close(ga, grad, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# main comparison: every reduction x gamma form x option combo x shape, float64 and float32
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,gname,opt,reduction", cases())
def test_matches_reference_float64(shape, gname, opt, reduction, gen):
    x, t, g, kw = make_case(SHAPES[shape], gname, opt, gen)
    check_against_ref(x, t, g, kw, reduction, torch.float64, gen)


@pytest.mark.parametrize("shape,gname,opt,reduction",
                         cases(opts=["plain", "all", "ls_ignore", "ignore_pos"],
                               reductions=["none", "mean", "positives"]))
def test_matches_reference_float32(shape, gname, opt, reduction, gen):
    x, t, g, kw = make_case(SHAPES[shape], gname, opt, gen, dtype=torch.float32)
    check_against_ref(x, t, g, kw, reduction, torch.float32, gen)


def test_per_class_gamma_is_along_dim1_even_if_last_dim_equals_C(gen):
    # (N, C, H, W) with W == C: a (C,) gamma is per class along dim 1 (spec), not along W
    x = torch.randn(2, 3, 2, 3, generator=gen, dtype=torch.float64)
    t = (torch.rand(2, 3, 2, 3, generator=gen) < 0.5).double()
    g = torch.tensor([0.0, 1.0, 4.0])
    loss = LIB(x, t, gamma=g, reduction="none")
    ref = ref_sigmoid(x, t, g, reduction="none")
    assert_close(loss, ref, torch.float64)
    ref_wrong = ref_sigmoid(x, t, g.view(1, 1, 1, 3).expand(2, 3, 2, 3).clone(), reduction="none")
    assert not torch.allclose(loss, ref_wrong)


def test_alpha_per_class_is_along_dim1_even_if_last_dim_equals_C(gen):
    x = torch.randn(2, 3, 2, 3, generator=gen, dtype=torch.float64)
    t = (torch.rand(2, 3, 2, 3, generator=gen) < 0.5).double()
    a = torch.tensor([0.1, 0.5, 0.9])
    loss = LIB(x, t, gamma=2.0, alpha=a, reduction="none")
    assert_close(loss, ref_sigmoid(x, t, 2.0, alpha=a, reduction="none"), torch.float64)


def test_inputs_not_modified(gen):
    x, t, g, kw = make_case(SHAPES["NCHW"], "elem", "all", gen)
    copies = [x.clone(), t.clone(), g.clone(), kw["alpha"].clone(), kw["weight"].clone()]
    LIB(x, t, gamma=g, reduction="mean", **kw)
    for a, b in zip([x, t, g, kw["alpha"], kw["weight"]], copies):
        assert torch.equal(a, b)


def test_no_grad_input(gen):
    x, t, g, kw = make_case(SHAPES["NC"], "float", "all", gen)
    loss = LIB(x, t, gamma=g, **kw)
    assert not loss.requires_grad
    assert_close(loss, ref_sigmoid(x, t, g, **kw), torch.float64)


def test_default_arguments(gen):
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    t = (torch.rand(5, 4, generator=gen) < 0.5).double()
    assert_close(LIB(x, t), ref_sigmoid(x, t, 2.0, reduction="mean"), torch.float64)


# --------------------------------------------------------------------------------------------
# gamma = 0 identities against F.binary_cross_entropy_with_logits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("gform", ["float", "t0d", "elem", "table"])
@pytest.mark.parametrize("opt", ["plain", "w_full", "w_bcast", "ls", "ignore", "all"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", ["N", "NC", "NCHW"])
def test_gamma0_equals_bce_with_logits(dtype, gform, opt, reduction, shape, gen):
    shp = SHAPES[shape]
    C = shp[1] if len(shp) >= 2 else 1
    x = (torch.randn(shp, generator=gen, dtype=torch.float64) * 3).to(dtype)
    t = torch.rand(shp, generator=gen, dtype=torch.float64)
    t.view(-1)[::3] = 1.0
    t.view(-1)[1::3] = 0.0
    t = t.to(dtype)
    g = {"float": 0.0, "t0d": torch.tensor(0.0), "elem": torch.zeros(shp),
         "table": af.GammaTable(torch.tensor([0.0, 0.3, 1.0]), torch.zeros(2))}[gform]
    w = None
    ls = 0.0
    ign = None
    if opt in ("w_full", "all"):
        w = (torch.rand(shp, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    if opt == "w_bcast":
        w = (torch.rand((C, 1, 1) if len(shp) == 4 else (C,) if len(shp) == 2 else (1,),
                        generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    if opt in ("ls", "all"):
        ls = 0.15
    if opt in ("ignore", "all"):
        ign = -1.0
        drop = torch.rand(shp, generator=gen) < 0.25
        drop.view(-1)[0] = False
        t = torch.where(drop, torch.full_like(t, ign), t)

    def bce(xx):
        valid = torch.ones(shp, dtype=torch.bool) if ign is None else t != ign
        tt = torch.where(valid, t, torch.zeros_like(t))
        ts = tt * (1 - ls) + ls / 2
        if ign is None and reduction in ("none", "mean", "sum"):
            return F.binary_cross_entropy_with_logits(xx, ts, weight=w, reduction=reduction)
        e = F.binary_cross_entropy_with_logits(xx, ts, weight=w, reduction="none") * valid
        if reduction == "none":
            return e
        if reduction == "sum":
            return e.sum()
        if reduction == "mean":
            return e.sum() / valid.sum()
        return e.sum() / max(1, int(((t >= 0.5) & valid).sum()))

    up = upstream_like(torch.zeros(shp) if reduction == "none" else torch.zeros(()), gen)
    ref_loss, ref_grad = value_and_grad(bce, x.double() if dtype == torch.float64 else x, upstream=up)
    loss, grad = value_and_grad(
        lambda xx: LIB(xx, t, gamma=g, weight=w, reduction=reduction, label_smoothing=ls, ignore_index=ign),
        x, upstream=up)
    assert_close(loss, ref_loss, dtype)
    assert_close(grad, ref_grad, dtype)


def test_mean_divides_by_count_not_by_weights(gen):
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    t = (torch.rand(4, 3, generator=gen) < 0.5).double()
    w = torch.full((4, 3), 7.0, dtype=torch.float64)
    a = LIB(x, t, gamma=1.0, weight=w, reduction="mean")
    b = LIB(x, t, gamma=1.0, reduction="mean")
    torch.testing.assert_close(a, 7.0 * b)


# --------------------------------------------------------------------------------------------
# empty and fully-ignored inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(0,), (0, 3), (0, 3, 2, 2)])
@pytest.mark.parametrize("gform", ["float", "frac", "elem", "table", "per_class"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_input(reduction, shape, gform, dtype):
    if gform == "per_class" and len(shape) < 2:
        gform = "float"
    g = {"float": 2.0, "frac": 0.5, "elem": torch.ones(shape), "per_class": torch.tensor([1.0, 2.0, 3.0]),
         "table": af.GammaTable(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([2.0, 1.0]))}[gform]
    x = torch.zeros(shape, dtype=dtype, requires_grad=True)
    t = torch.zeros(shape, dtype=dtype)
    loss = LIB(x, t, gamma=g, reduction=reduction, alpha=0.25, label_smoothing=0.1)
    if reduction == "none":
        assert loss.shape == x.shape
    else:
        assert loss.dim() == 0
        assert float(loss.detach()) == 0.0
    loss.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 2, 2)])
@pytest.mark.parametrize("ign", [-1.0, 255.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gform", ["float", "frac", "table"])
def test_fully_ignored(reduction, shape, ign, dtype, gform, gen):
    g = {"float": 2.0, "frac": 0.5,
         "table": af.GammaTable(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([2.0, 1.0]))}[gform]
    x = (torch.randn(shape, generator=gen) * 3).to(dtype).requires_grad_(True)
    t = torch.full(shape, ign, dtype=dtype)
    w = torch.rand(shape, generator=gen).to(dtype) + 0.5
    loss = LIB(x, t, gamma=g, reduction=reduction, ignore_index=ign, weight=w, alpha=0.25,
               label_smoothing=0.1)
    if reduction == "none":
        assert loss.shape == x.shape
        assert torch.equal(loss.detach(), torch.zeros_like(loss))
    else:
        assert float(loss.detach()) == 0.0
    loss.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_ignored_elements_have_zero_loss_and_grad(gen):
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(6, 4, generator=gen) < 0.5).double()
    t[0] = -1.0
    t[3, 2] = -1.0
    loss = LIB(x, t, gamma=2.0, reduction="none", ignore_index=-1)
    assert torch.all(loss[0] == 0) and loss[3, 2] == 0
    loss.sum().backward()
    assert torch.all(x.grad[0] == 0) and x.grad[3, 2] == 0
    assert torch.all(x.grad[1] != 0)


# --------------------------------------------------------------------------------------------
# "positives" reduction (RetinaNet normalisation)
# --------------------------------------------------------------------------------------------


def test_positives_hand_checked():
    x = torch.tensor([0.3, -1.2, 2.0, 0.1, -0.4, 1.5, 0.7], dtype=torch.float64)
    t = torch.tensor([1.0, 0.0, 1.0, 0.6, 0.4, -1.0, 0.5], dtype=torch.float64)
    # non-ignored raw targets >= 0.5: 1.0, 1.0, 0.6, 0.5 -> 4 (0.4 is not, -1 is ignored)
    none = LIB(x, t, gamma=2.0, reduction="none", ignore_index=-1)
    pos = LIB(x, t, gamma=2.0, reduction="positives", ignore_index=-1)
    torch.testing.assert_close(pos, none.sum() / 4)
    # counted on the raw target: label smoothing does not change the count
    none_ls = LIB(x, t, gamma=2.0, reduction="none", ignore_index=-1, label_smoothing=0.3)
    pos_ls = LIB(x, t, gamma=2.0, reduction="positives", ignore_index=-1, label_smoothing=0.3)
    torch.testing.assert_close(pos_ls, none_ls.sum() / 4)


def test_positives_no_positive_divides_by_one():
    x = torch.tensor([[0.3, -1.2], [2.0, 0.1]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.2], [0.0, 0.49]], dtype=torch.float64)
    s = LIB(x, t, gamma=1.0, reduction="sum")
    torch.testing.assert_close(LIB(x, t, gamma=1.0, reduction="positives"), s)


def test_positives_ignored_value_above_half_not_counted():
    x = torch.tensor([0.3, -1.2, 2.0, 0.1], dtype=torch.float64)
    t = torch.tensor([1.0, 255.0, 255.0, 0.0], dtype=torch.float64)
    s = LIB(x, t, gamma=2.0, reduction="sum", ignore_index=255)
    torch.testing.assert_close(LIB(x, t, gamma=2.0, reduction="positives", ignore_index=255), s / 1)
    # and the ignored elements really are excluded from the sum
    torch.testing.assert_close(s, LIB(x[[0, 3]], t[[0, 3]], gamma=2.0, reduction="sum"))


# --------------------------------------------------------------------------------------------
# detach_modulator
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gname", ["float", "frac", "neg", "per_class_mixed", "elem_mixed", "table_cb"])
@pytest.mark.parametrize("opt", ["plain", "all", "ls_ignore"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_detach_modulator(gname, opt, reduction, dtype, gen):
    x, t, g, kw = make_case(SHAPES["NCHW"], gname, opt, gen, dtype=dtype)
    loss_d, grad_d = check_against_ref(x, t, g, kw, reduction, dtype, gen, detach=True)
    loss, grad = value_and_grad(lambda xx: lib_call(xx, t, g, kw, reduction), x)
    torch.testing.assert_close(loss_d, loss)  # value unchanged
    if gname != "zero":
        assert not torch.allclose(grad_d, grad)


def test_detach_modulator_is_keyword_only():
    x = torch.zeros(3, dtype=torch.float64)
    t = torch.ones(3, dtype=torch.float64)
    with pytest.raises(TypeError):
        LIB(x, t, 2.0, None, None, "mean", 0.0, None, False, True)


# --------------------------------------------------------------------------------------------
# hand-computed examples
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hand_computed_examples(dtype):
    # x = 0, t = 1, gamma = 2:  p = 0.5, p_t = 0.5, (1 - p_t)^2 = 0.25, BCE = ln 2
    #   loss = 0.25 * ln 2 = 0.17328679...
    #   d/dx = m (p - t) + gamma m r (1 - 2t) l,  r = p(1-p)/(1-p_t) = 0.5
    #        = 0.25 * (-0.5) + 2 * 0.25 * 0.5 * (-1) * ln 2 = -0.125 - 0.17328679 = -0.29828679
    x = torch.tensor([0.0], dtype=dtype, requires_grad=True)
    loss = LIB(x, torch.tensor([1.0], dtype=dtype), gamma=2.0, reduction="sum")
    loss.backward()
    assert abs(float(loss) - 0.25 * math.log(2)) < 1e-6
    assert abs(float(x.grad[0]) - (-0.125 - 0.25 * math.log(2))) < 1e-6
    # x = ln 3 (p = 0.75), t = 0, alpha = 0.25, gamma = 2:
    #   p_t = 0.25, (1 - p_t)^2 = 0.5625, BCE = -ln(0.25) = ln 4, alpha_t = 1 - 0.25 = 0.75
    #   loss = 0.75 * 0.5625 * ln 4 = 0.58484...
    x = torch.tensor([math.log(3.0)], dtype=dtype)
    loss = LIB(x, torch.tensor([0.0], dtype=dtype), gamma=2.0, alpha=0.25, reduction="sum")
    assert abs(float(loss) - 0.75 * 0.5625 * math.log(4)) < 1e-6
    # inverse focal, x = 0, t = 1, gamma = -1: (1 + 0.5)^1 * ln 2 = 1.03972...
    loss = LIB(torch.tensor([0.0], dtype=dtype), torch.tensor([1.0], dtype=dtype), gamma=-1.0, reduction="sum")
    assert abs(float(loss) - 1.5 * math.log(2)) < 1e-6
    # label smoothing 0.2, t = 1 -> t' = 0.9; x = 0: p_t = 0.5 for any t', loss = 0.25 * ln 2 (BCE = ln 2)
    loss = LIB(torch.tensor([0.0], dtype=dtype), torch.tensor([1.0], dtype=dtype), gamma=2.0,
               label_smoothing=0.2, reduction="sum")
    assert abs(float(loss) - 0.25 * math.log(2)) < 1e-6
    # label smoothing also enters alpha_t: t' = 0.9, alpha = 0.25 -> alpha_t = 0.25*0.9 + 0.75*0.1 = 0.3
    loss = LIB(torch.tensor([0.0], dtype=dtype), torch.tensor([1.0], dtype=dtype), gamma=2.0, alpha=0.25,
               label_smoothing=0.2, reduction="sum")
    assert abs(float(loss) - 0.3 * 0.25 * math.log(2)) < 1e-6


# --------------------------------------------------------------------------------------------
# numerics: extreme float32 logits
# --------------------------------------------------------------------------------------------

EXTREME_X = [-1e4, -3e3, -100.0, -30.0, -17.0, -1.0, 0.0, 1.0, 17.0, 30.0, 100.0, 3e3, 1e4]


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 0.999, 1.0, 2.0, 5.0, -1.0, -2.5, "table", "elem"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("detach", [False, True])
def test_extreme_logits_float32(gamma, ls, detach, gen):
    xs = torch.tensor(EXTREME_X, dtype=torch.float32)
    ts = torch.tensor([0.0, 1.0, 0.3, 0.5, 0.999])
    x = xs.repeat_interleave(len(ts))
    t = ts.repeat(len(xs))
    if gamma == "table":
        g = Table(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]), torch.tensor([0.5, 0.0, 2.0, 5.0]))
    elif gamma == "elem":
        g = torch.rand(x.shape, generator=gen) * 3
    else:
        g = gamma
    up = torch.rand(x.shape, generator=gen, dtype=torch.float64) + 0.5
    loss, grad = value_and_grad(
        lambda xx: LIB(xx, t, gamma=to_lib_gamma(g), reduction="none", label_smoothing=ls, detach_modulator=detach),
        x, upstream=up)
    assert torch.isfinite(loss).all(), loss
    assert torch.isfinite(grad).all(), grad
    assert (loss >= 0).all()
    if isinstance(g, Table):
        # p_t = 0.5 (t = 0.5 or x = 0) lies exactly on the table edge 0.5: compare the others only
        keep = (t != 0.5) & (x != 0)
    else:
        keep = torch.ones_like(t, dtype=torch.bool)
    ref_loss, ref_grad = value_and_grad(
        lambda xx: stable_ref_sigmoid(xx, t, g, reduction="none", label_smoothing=ls, detach_modulator=detach),
        x.double(), upstream=up)
    assert_close(loss[keep], ref_loss[keep], torch.float32)
    assert_close(grad[keep], ref_grad[keep], torch.float32)
    # reduced forms are finite too
    for red in ("mean", "sum", "positives"):
        l2, g2 = value_and_grad(
            lambda xx, red=red: LIB(xx, t, gamma=to_lib_gamma(g), reduction=red, label_smoothing=ls), x)
        assert torch.isfinite(l2) and torch.isfinite(g2).all()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_extreme_logits_large_loss_value(gamma):
    # x = -1e4, t = 1: p_t = e^-1e4 -> 0, factor 1, BCE = 1e4 ; x = 1e4, t = 0 likewise
    x = torch.tensor([-1e4, 1e4], requires_grad=True)
    t = torch.tensor([1.0, 0.0])
    loss = LIB(x, t, gamma=gamma, reduction="none")
    torch.testing.assert_close(loss.detach(), torch.tensor([1e4, 1e4]))
    loss.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-1.0, 1.0]))


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 2.0, 5.0])
def test_extreme_logits_easy_examples_zero_grad(gamma):
    # x = 1e4, t = 1 (and x = -1e4, t = 0): loss and gradient are 0 (not NaN)
    x = torch.tensor([1e4, -1e4], requires_grad=True)
    t = torch.tensor([1.0, 0.0])
    loss = LIB(x, t, gamma=gamma, reduction="sum")
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.equal(x.grad, torch.zeros(2))


# --------------------------------------------------------------------------------------------
# half precision inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gname", ["float", "frac", "per_class", "elem", "table", "neg"])
@pytest.mark.parametrize("opt", ["plain", "all"])
def test_half_inputs(dtype, reduction, gname, opt, gen):
    x, t, g, kw = make_case(SHAPES["NCHW"], gname, opt, gen, dtype=torch.float32)
    xh = x.to(dtype)
    th = t.to(dtype)
    kwh = dict(kw)
    if "weight" in kwh:
        kwh["weight"] = kwh["weight"].to(dtype)
    up = upstream_like(torch.zeros(x.shape) if reduction == "none" else torch.zeros(()), gen)
    loss_h, grad_h = value_and_grad(lambda xx: lib_call(xx, th, g, kwh, reduction), xh, upstream=up)
    assert loss_h.dtype == torch.float32
    assert grad_h.dtype == dtype
    # the same (rounded) values in float32
    kw32 = dict(kw)
    if "weight" in kw32:
        kw32["weight"] = kwh["weight"].float()
    loss_f, grad_f = value_and_grad(lambda xx: lib_call(xx, th.float(), g, kw32, reduction), xh.float(), upstream=up)
    scale = max(1.0, float(loss_f.abs().max()) if loss_f.numel() else 1.0)
    torch.testing.assert_close(loss_h, loss_f, rtol=1e-5, atol=1e-6 * scale)
    assert_close(grad_h.float(), grad_f, dtype)
    # and against the float64 reference on the rounded values
    ref_loss, _ = value_and_grad(lambda xx: ref_sigmoid(xx, th, g, reduction=reduction, **kw32), xh.double())
    if not isinstance(g, Table):
        assert_close(loss_h, ref_loss, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_half_easy_example_does_not_underflow(dtype, reduction):
    # x = 12, t = 1, gamma = 2: (1 - p_t)^2 * BCE = sigmoid(-12)^2 * log1p(e^-12) ~= 2.32e-16
    # (would underflow to 0 if computed in float16)
    x = torch.tensor([12.0], dtype=dtype, requires_grad=True)
    loss = LIB(x, torch.tensor([1.0], dtype=dtype), gamma=2.0, reduction=reduction)
    assert loss.dtype == torch.float32
    s = math.exp(-12) / (1 + math.exp(-12))
    expected = s * s * math.log1p(math.exp(-12))
    assert float(loss.sum()) > 0
    assert abs(float(loss.sum()) - expected) < 1e-3 * expected
    loss.sum().backward()
    assert x.grad.dtype == dtype


# --------------------------------------------------------------------------------------------
# gradcheck (float64)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gname", GAMMAS)
@pytest.mark.parametrize("opt", ["plain", "alpha_c_w_soft", "ls_ignore", "all"])
@pytest.mark.parametrize("reduction", ["none", "mean", "positives"])
def test_gradcheck(gname, opt, reduction, gen):
    x, t, g, kw = make_case((3, 2, 2), gname, opt, gen, scale=1.5)
    lg = to_lib_gamma(g)
    xx = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: LIB(z, t, gamma=lg, reduction=reduction, **kw), (xx,), eps=1e-6, atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# CPU large-input (compiled kernel) path
# --------------------------------------------------------------------------------------------

LARGE = (2048, 64)


def large_case(gname, opt, gen, shape=LARGE, dtype=torch.float32):
    return make_case(shape, gname, opt, gen, dtype=dtype, scale=4.0)


def check_grad_stats(x, t, g, kw, detach=False):
    """sum_pt_pos and the class gradient sums of return_stats (the compiled kernel for large inputs) against the
    float64 reference: its p_t, and its autograd gradient per element (the gradient of the summed losses)."""
    _, st = LIB(x, t, gamma=to_lib_gamma(g), return_stats=True, detach_modulator=detach, **kw)
    _, grad = value_and_grad(
        lambda xx: stable_ref_sigmoid(xx, t, g, reduction="sum", detach_modulator=detach, **kw), x.double())
    ign = kw.get("ignore_index")
    t64 = t.double()
    valid = torch.ones_like(t64, dtype=torch.bool) if ign is None else t64 != ign
    tt = torch.where(valid, t64, 0.0)
    pt = pt_sigmoid(x, t, kw.get("label_smoothing", 0.0), ign)
    dims = [d for d in range(x.dim()) if d != 1]
    gabs = torch.where(valid, grad.abs(), 0.0)
    want = {"sum_pt_pos": pt[valid & (t64 >= 0.5)].sum(),
            "class_sum_grad_pos": (gabs * tt).sum(dims) if x.dim() > 1 else (gabs * tt).sum().reshape(1),
            "class_sum_grad_neg": (gabs * (1 - tt)).sum(dims) if x.dim() > 1 else (gabs * (1 - tt)).sum().reshape(1)}
    for name, w in want.items():
        got = getattr(st, name)
        assert got.dtype == torch.float32 and got.shape == w.shape, name
        torch.testing.assert_close(got.double(), w, rtol=1e-4, atol=1e-5 * max(1.0, float(w.abs().max())),
                                   msg=name)


LARGE_GAMMAS = ["float", "frac", "zero", "t0d", "neg", "per_class", "per_class_mixed", "elem", "elem_mixed",
                "bcast", "table", "table_neg", "table_cb"]


def _large_cases():
    out = []
    for i, (gname, opt) in enumerate(itertools.product(LARGE_GAMMAS, OPTS)):
        out.append(pytest.param(gname, opt, REDUCTIONS[i % 4], id=f"{gname}-{opt}-{REDUCTIONS[i % 4]}"))
    return out


def _gamma_for_large(gname, shape, gen):
    # per_class gammas of length 64
    C = shape[1]
    if gname == "per_class":
        return torch.rand(C, generator=gen) * 3
    if gname == "per_class_mixed":
        g = torch.rand(C, generator=gen) * 5 - 2
        g[::3] = 0
        return g
    return None


@pytest.mark.parametrize("gname,opt,reduction", _large_cases())
def test_large_input_float32(gname, opt, reduction, gen):
    x, t, g, kw = large_case(gname, opt, gen)
    g2 = _gamma_for_large(gname, x.shape, gen)
    if g2 is not None:
        g = g2
    if "alpha" in kw and isinstance(kw["alpha"], torch.Tensor):
        kw["alpha"] = torch.rand(x.shape[1], generator=gen)
    if isinstance(kw.get("weight"), torch.Tensor) and kw["weight"].dim() == 1:
        kw["weight"] = torch.rand(x.shape[1], generator=gen) + 0.2
    check_against_ref(x, t, g, kw, reduction, torch.float32, gen)
    check_grad_stats(x, t, g, kw)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gname", ["float", "frac", "per_class_mixed", "elem", "table_cb"])
def test_large_input_float32_all_reductions(reduction, gname, gen):
    x, t, g, kw = large_case(gname, "all", gen)
    g2 = _gamma_for_large(gname, x.shape, gen)
    if g2 is not None:
        g = g2
    kw["alpha"] = torch.rand(x.shape[1], generator=gen)
    check_against_ref(x, t, g, kw, reduction, torch.float32, gen)


@pytest.mark.parametrize("gname", ["float", "per_class", "elem_mixed", "table_cb", "bcast"])
@pytest.mark.parametrize("opt", ["plain", "all", "wb_ignore_soft_ls"])
def test_large_input_nchw(gname, opt, gen):
    shape = (8, 4, 64, 64)
    x, t, g, kw = large_case(gname, opt, gen, shape=shape)
    check_against_ref(x, t, g, kw, "mean", torch.float32, gen)
    check_grad_stats(x, t, g, kw)


@pytest.mark.parametrize("gname", ["float", "elem", "table", "neg"])
@pytest.mark.parametrize("opt", ["plain", "ls_ignore", "ignore_pos"])
def test_large_input_1d(gname, opt, gen):
    x, t, g, kw = large_case(gname, opt, gen, shape=(131072,))
    check_against_ref(x, t, g, kw, "positives" if opt == "ignore_pos" else "sum", torch.float32, gen)
    check_grad_stats(x, t, g, kw)


@pytest.mark.parametrize("gname", ["float", "frac", "neg", "per_class_mixed", "table_cb"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_large_input_detach(gname, reduction, gen):
    x, t, g, kw = large_case(gname, "all", gen)
    g2 = _gamma_for_large(gname, x.shape, gen)
    if g2 is not None:
        g = g2
    kw["alpha"] = torch.rand(x.shape[1], generator=gen)
    check_against_ref(x, t, g, kw, reduction, torch.float32, gen, detach=True)
    check_grad_stats(x, t, g, kw, detach=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gname", ["float", "per_class", "table"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_large_input_half(dtype, gname, reduction, gen):
    x, t, g, kw = large_case(gname, "ls_ignore", gen)
    g2 = _gamma_for_large(gname, x.shape, gen)
    if g2 is not None:
        g = g2
    xh, th = x.to(dtype), t.to(dtype)
    up = upstream_like(torch.zeros(x.shape) if reduction == "none" else torch.zeros(()), gen)
    loss_h, grad_h = value_and_grad(lambda xx: lib_call(xx, th, g, kw, reduction), xh, upstream=up)
    assert loss_h.dtype == torch.float32 and grad_h.dtype == dtype
    loss_f, grad_f = value_and_grad(lambda xx: lib_call(xx, th.float(), g, kw, reduction), xh.float(), upstream=up)
    torch.testing.assert_close(loss_h, loss_f, rtol=1e-4, atol=1e-6 * max(1.0, float(loss_f.abs().max())))
    assert_close(grad_h.float(), grad_f, dtype)
    ref_loss, _ = value_and_grad(lambda xx: ref_sigmoid(xx, th, g, reduction=reduction, **kw), xh.double())
    assert_close(loss_h, ref_loss, torch.float32)


@pytest.mark.parametrize("gname", ["float", "elem", "per_class"])
def test_large_input_noncontiguous(gname, gen):
    base_x, base_t, g, kw = large_case("float", "all", gen, shape=(64, 2048))
    x = base_x.t()  # (2048, 64) non-contiguous
    t = base_t.t()
    kw["weight"] = kw["weight"].t()
    kw["alpha"] = torch.rand(64, generator=gen)
    if gname == "elem":
        g = (torch.rand(64, 2048, generator=gen) * 3).t()
    elif gname == "per_class":
        g = torch.rand(64, generator=gen) * 3
    assert not x.is_contiguous() and not t.is_contiguous()
    check_against_ref(x, t, g, kw, "none", torch.float32, gen)


def test_large_input_no_grad(gen):
    x, t, g, kw = large_case("float", "all", gen)
    kw["alpha"] = torch.rand(64, generator=gen)
    with torch.no_grad():
        loss = LIB(x, t, gamma=g, **kw)
    assert_close(loss, ref_sigmoid(x, t, g, **kw), torch.float32)


def test_large_input_gamma0_equals_bce(gen):
    x = torch.randn(LARGE, generator=gen) * 4
    t = torch.rand(LARGE, generator=gen)
    w = torch.rand(LARGE, generator=gen) + 0.5
    loss, grad = value_and_grad(lambda xx: LIB(xx, t, gamma=0.0, weight=w, label_smoothing=0.1), x)
    ref, rgrad = value_and_grad(
        lambda xx: F.binary_cross_entropy_with_logits(xx, t * 0.9 + 0.05, weight=w.double()), x.double())
    assert_close(loss, ref, torch.float32)
    assert_close(grad, rgrad, torch.float32)


def test_large_and_small_paths_agree(gen):
    # the same rows computed in one big call and in small chunks agree
    x, t, g, kw = large_case("elem_mixed", "all", gen)
    kw["alpha"] = torch.rand(64, generator=gen)
    big = LIB(x, t, gamma=g, reduction="none", **kw)
    parts = []
    for i in range(0, x.shape[0], 256):
        sl = slice(i, i + 256)
        parts.append(LIB(x[sl], t[sl], gamma=g[sl], reduction="none", alpha=kw["alpha"], weight=kw["weight"][sl],
                         label_smoothing=kw["label_smoothing"], ignore_index=kw["ignore_index"]))
    small = torch.cat(parts)
    torch.testing.assert_close(big, small, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("gname", ["float", "per_class_mixed", "elem", "table_cb"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_large_input_multithreaded(gname, reduction, gen):
    """The compiled kernel splits work over torch's threads: results (and stats) match the reference."""
    x, t, g, kw = large_case(gname, "all", gen, shape=(4096, 64))
    g2 = _gamma_for_large(gname, x.shape, gen)
    if g2 is not None:
        g = g2
    kw["alpha"] = torch.rand(64, generator=gen)
    old = torch.get_num_threads()
    torch.set_num_threads(max(2, os.cpu_count() or 2))
    try:
        check_against_ref(x, t, g, kw, reduction, torch.float32, gen)
        _, st = LIB(x, t, gamma=to_lib_gamma(g), reduction=reduction, return_stats=True, **kw)
        valid = t != -1.0
        assert int(st.count) == int(valid.sum())
        assert int(st.pt_hist.sum()) == int(valid.sum())
        assert st.class_count.tolist() == valid.sum(0).tolist()
        assert int(st.n_pos) == int(((t >= 0.5) & valid).sum())
        check_grad_stats(x, t, g, kw)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 1.0, 2.0, 5.0, -1.0, "table", "elem"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("detach", [False, True])
def test_extreme_logits_float32_large_path(gamma, ls, detach, gen):
    """Same extreme grid, tiled above the kernel threshold (so the compiled kernel sees it)."""
    xs = torch.tensor(EXTREME_X, dtype=torch.float32)
    ts = torch.tensor([0.0, 1.0, 0.3, 0.999])
    grid_x = xs.repeat_interleave(len(ts))
    grid_t = ts.repeat(len(xs))
    reps = 131072 // grid_x.numel() + 1
    x = grid_x.repeat(reps).view(-1, 4)[:32768]  # (32768, 4) = 131072 elements
    t = grid_t.repeat(reps).view(-1, 4)[:32768]
    if gamma == "table":
        g = Table(torch.tensor([0.0, 0.2, 0.6, 0.8, 1.0]), torch.tensor([0.5, 0.0, 2.0, 5.0]))
    elif gamma == "elem":
        g = torch.rand(x.shape, generator=gen) * 3
    else:
        g = gamma
    up = torch.rand(x.shape, generator=gen, dtype=torch.float64) + 0.5
    loss, grad = value_and_grad(
        lambda xx: LIB(xx, t, gamma=to_lib_gamma(g), reduction="none", label_smoothing=ls, detach_modulator=detach),
        x, upstream=up)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    ref_loss, ref_grad = value_and_grad(
        lambda xx: stable_ref_sigmoid(xx, t, g, reduction="none", label_smoothing=ls, detach_modulator=detach),
        x.double(), upstream=up)
    keep = (x != 0) if isinstance(g, Table) else torch.ones_like(x, dtype=torch.bool)
    assert_close(loss[keep], ref_loss[keep], torch.float32)
    assert_close(grad[keep], ref_grad[keep], torch.float32)
    if not isinstance(g, Table):  # (a table's bin at x = 0 depends on float32 rounding, see `keep`)
        check_grad_stats(x, t, g, dict(label_smoothing=ls), detach=detach)
    for red in ("mean", "sum", "positives"):
        l2, g2 = value_and_grad(
            lambda xx, red=red: LIB(xx, t, gamma=to_lib_gamma(g), reduction=red, label_smoothing=ls), x)
        assert torch.isfinite(l2) and torch.isfinite(g2).all()
        r2 = stable_ref_sigmoid(x, t, g, reduction=red, label_smoothing=ls)
        assert_close(l2, r2, torch.float32)


@pytest.mark.parametrize("n", [8, 65536], ids=["small", "large"])
def test_table_bin_boundaries(n):
    """bin b holds edges[b] <= p_t < edges[b+1]: p_t = 0.5 exactly (x = 0) takes the bin starting at 0.5."""
    x = torch.zeros(n)
    t = torch.ones(n)
    tbl = af.GammaTable(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([1.0, 3.0]))
    loss = LIB(x, t, gamma=tbl, reduction="mean")
    # gamma = 3: (1 - 0.5)^3 * ln 2
    assert abs(float(loss) - 0.125 * math.log(2)) < 1e-6
    tbl = af.GammaTable(torch.tensor([0.0, 0.25, 0.5, 1.0]), torch.tensor([1.0, 2.0, 4.0]))
    loss = LIB(x, t, gamma=tbl, reduction="mean")
    assert abs(float(loss) - 0.0625 * math.log(2)) < 1e-6


def test_compiled_cpu_kernel_available_with_a_c_compiler():
    """With a C compiler on the machine the large-input tests above run the compiled kernel, not a fallback."""
    import shutil
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler")
    kernels = pytest.importorskip("adaptive_focal._kernels")
    if not hasattr(kernels, "kernel_available"):
        pytest.skip("no kernel_available() to ask")
    assert kernels.kernel_available("cpu")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (8, 4, 64, 64)], ids=["small", "large"])
@pytest.mark.parametrize("gname", ["per_class", "elem", "table_cb"])
def test_channels_last_input(shape, gname, gen):
    x, t, g, kw = make_case(shape, gname, "all", gen, dtype=torch.float32)
    if gname == "per_class":
        g = torch.tensor([0.5, 2.0, 3.0, 1.0][:shape[1]])
    if gname == "table_cb":
        g = Table(g.edges, torch.rand(shape[1], 5, generator=gen) * 3)
        x, t = far_from_edges_sigmoid(lambda m: x if m is None else torch.randn(shape, generator=gen) * 2.5,
                                      lambda m: t, g.edges, kw["label_smoothing"], kw["ignore_index"])
    kw["alpha"] = torch.rand(shape[1], generator=gen)
    x = x.contiguous(memory_format=torch.channels_last)
    t = t.contiguous(memory_format=torch.channels_last)
    kw["weight"] = kw["weight"].contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous()
    check_against_ref(x, t, g, kw, "none", torch.float32, gen)


@pytest.mark.parametrize("shape", [(6, 3), (2048, 64)], ids=["small", "large"])
def test_single_bin_table_equals_scalar_gamma(shape, gen):
    x = torch.randn(shape, generator=gen) * 3
    t = torch.rand(shape, generator=gen)
    tbl = af.GammaTable(torch.tensor([0.0, 1.0]), torch.tensor([2.5]))
    a, ga = value_and_grad(lambda xx: LIB(xx, t, gamma=tbl, reduction="sum"), x)
    b, gb = value_and_grad(lambda xx: LIB(xx, t, gamma=2.5, reduction="sum"), x)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)


def test_expanded_weight_and_target(gen):
    x = torch.randn(4096, 32, generator=gen)
    t = (torch.rand(1, 32, generator=gen) < 0.5).float().expand(4096, 32)
    w = (torch.rand(32, generator=gen) + 0.5).expand(4096, 32)
    kw = dict(weight=w, alpha=0.25, label_smoothing=0.05)
    check_against_ref(x, t, 2.0, kw, "mean", torch.float32, gen)
