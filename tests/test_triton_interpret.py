"""Numerics of the Triton sigmoid focal kernel, run by the Triton interpreter on CPU.

The kernel (adaptive_focal/_kernels/triton_sigmoid.py) is compared with an independent float64 torch
implementation of the spec's formulas (autograd on the element loss for the gradient). Sizes are
tiny and the tile size / program count are forced small so that several programs, class blocks and
grid-stride iterations, and ragged tiles are all exercised.
"""

import importlib
import math
import os
import sys

import pytest

torch = pytest.importorskip("torch")

_HAS_CUDA = torch.cuda.is_available()
if not _HAS_CUDA:
    # must be set before triton is first imported: @triton.jit picks interpreter vs compiler when
    # it decorates (triton.language's own helpers too), and triton reads it lazily at launch (so it
    # stays set). Without a GPU no Triton kernel can run compiled anyway.
    os.environ["TRITON_INTERPRET"] = "1"

pytest.importorskip("triton")
import triton.language.standard as _tl_standard  # noqa: E402

# False when another module imported triton before TRITON_INTERPRET was set: the suite then runs
# in a fresh process instead (see the end of this file)
_INTERP_OK = _HAS_CUDA or type(_tl_standard.zeros).__name__ == "InterpretedFunction"

try:
    import adaptive_focal._kernels.triton_sigmoid as ts
except ModuleNotFoundError:  # running without the repo root on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import adaptive_focal._kernels.triton_sigmoid as ts

if (_INTERP_OK and not _HAS_CUDA
        and type(ts._sigmoid_focal_fwd_kernel).__name__ != "InterpretedFunction"):
    ts = importlib.reload(ts)  # imported earlier without TRITON_INTERPRET: re-decorate the kernels

import torch.nn.functional as F  # noqa: E402

from adaptive_focal._kernels.layout import acc_len, conf_offset  # noqa: E402

DEV = "cuda" if _HAS_CUDA else "cpu"
STAT_EDGES = torch.linspace(0, 1, 16)  # default 15 bins; 0.5 is not an edge
TABLE_EDGES = torch.tensor([0.0, 0.2, 0.45, 0.7, 0.9, 1.0])


# ------------------------------------------------------------------------------------------------
# independent float64 reference (spec "Semantics" + "BatchStats")
# ------------------------------------------------------------------------------------------------
def _bins(v, edges):
    """edges[b] <= v < edges[b+1], last bin closed."""
    nb = edges.numel() - 1
    return torch.bucketize(v, edges[1:-1].to(v.dtype), right=True).clamp(0, nb - 1)


def reference(x, t, gamma, gamma_kind, table_edges, alpha, weight, ignore_index, ls, detach,
              stat_edges):
    N, C, S = x.shape
    x = x.detach().double().requires_grad_(True)
    t = t.double()
    valid = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
    t = torch.where(valid, t, 0.0)  # ignored targets are arbitrary numbers: keep autograd NaN-free
    tp = t * (1 - ls) + ls / 2
    p = torch.sigmoid(x)
    p_t = p * tp + (1 - p) * (1 - tp)
    bce = F.binary_cross_entropy_with_logits(x, tp, reduction="none")
    if gamma_kind == 0:
        g = gamma.double().reshape(()).expand(N, C, S)
    elif gamma_kind == 1:
        g = gamma.double().reshape(1, C, 1).expand(N, C, S)
    elif gamma_kind == 2:
        g = gamma.double().reshape(N, C, S)
    else:
        vals = gamma.double()
        if vals.dim() == 1:
            vals = vals.expand(C, -1)
        b = _bins(p_t.detach(), table_edges.double())
        cls = torch.arange(C).reshape(1, C, 1).expand(N, C, S)
        g = vals[cls, b]
    focal = (1 - p_t) ** g.clamp(min=0)
    inverse = (1 + p_t) ** (-g).clamp(min=0)
    mod = torch.where(g < 0, inverse, focal)
    if detach:
        mod = mod.detach()
    a = 1.0
    if alpha is not None:
        ac = alpha.double().reshape(1, C, 1)
        a = ac * tp + (1 - ac) * (1 - tp)
    w = 1.0 if weight is None else weight.double().expand(N, C, S)
    elem = torch.where(valid, w * a * mod * bce, torch.zeros_like(bce))
    (grad,) = torch.autograd.grad(elem.sum(), x)
    with torch.no_grad():
        ptv = torch.where(valid, p_t, 0.0)
        B = stat_edges.numel() - 1
        hist = torch.bincount(_bins(p_t, stat_edges.double())[valid], minlength=B).double()
        acc = torch.cat([
            torch.stack([elem.sum(), valid.sum().double(), (valid & (t >= 0.5)).sum().double(),
                         ptv.sum(), torch.where(valid, (p - tp).abs(), 0.0).sum()]),
            hist,
            valid.sum(dim=(0, 2)).double(),
            ptv.sum(dim=(0, 2)),
            torch.where(valid & (t >= 0.5), p_t, 0.0).sum().reshape(1),       # sum_pt_pos
            (grad.abs() * t).sum(dim=(0, 2)),                                   # |dl/dx| t (0 where ignored)
            (grad.abs() * (1 - t)).sum(dim=(0, 2)),                             # |dl/dx| (1 - t)
            *confidence_bins(x.detach(), t, valid, stat_edges),
        ])
    return elem.detach(), grad, acc


def confidence_bins(x, t, valid, stat_edges):
    """The confidence bins of the contract, in its order: every valid element a binary prediction with
    confidence max(p, 1 - p), correct when (p > 1/2) == (t >= 1/2) (p = 1/2 counts as correct), binned by
    the statistics' edges, per class (dim 1) and summed over the classes."""
    N, C, S = x.shape
    B = stat_edges.numel() - 1
    p = torch.sigmoid(x.double())
    conf = torch.maximum(p, 1 - p)
    correct = (((p > 0.5) == (t >= 0.5)) | (p == 0.5)).double()
    cell = (torch.arange(C).reshape(1, C, 1) * B + _bins(conf, stat_edges.double()))[valid]

    def per_cell(w):
        return torch.zeros(C * B, dtype=torch.float64).index_add_(0, cell, w[valid]).view(C, B)

    count, conf_sum, n_correct = per_cell(torch.ones_like(p)), per_cell(conf), per_cell(correct)
    return (count.sum(0), count.reshape(-1), conf_sum.sum(0), n_correct.sum(0), conf_sum.reshape(-1),
            n_correct.reshape(-1))


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def _push_off_edges(x, tp, edge_sets, tol=1e-4):
    """Move logits whose p_t or confidence max(p, 1 - p) sits within tol of a bin edge (a
    float32/float64 tie could bin differently); keeps the comparison exact."""
    x = x.clone()
    inner = torch.cat([e[1:-1].double() for e in edge_sets])
    for _ in range(100):
        p = torch.sigmoid(x.double())
        p_t = p * tp + (1 - p) * (1 - tp)
        conf = torch.maximum(p, 1 - p)
        near = ((torch.stack([p_t, conf], -1).unsqueeze(-1) - inner).abs() < tol).any(-1).any(-1)
        if not near.any():
            return x
        x[near] += 0.037
    raise AssertionError("could not move logits away from bin edges")


def make_case(shape, gamma_case, alpha_on, weight_on, ignore_on, ls, detach, soft, seed=0):
    g = torch.Generator().manual_seed(seed)
    N, C = shape[0], (shape[1] if len(shape) > 1 else 1)
    S = math.prod(shape[2:]) if len(shape) > 2 else 1
    x = torch.randn(shape, generator=g) * 3
    if soft:
        t = torch.rand(shape, generator=g)
        t[torch.rand(shape, generator=g) < 0.3] = 1.0
        t[torch.rand(shape, generator=g) < 0.1] = 0.5  # n_pos counts t >= 0.5
    else:
        t = (torch.rand(shape, generator=g) < 0.3).float()
    ignore_index = None
    if ignore_on:
        ignore_index = -1
        t[torch.rand(shape, generator=g) < 0.2] = -1.0
    kind, gval = gamma_case
    if kind == 0:
        gamma = torch.tensor(gval)
    elif kind == 1:
        base = torch.tensor([2.0, 0.0, 0.5, -1.5, 1.0, 3.0, 0.3])
        gamma = base.repeat(C // base.numel() + 1)[:C].clone()
    elif kind == 2:
        gamma = torch.rand(shape, generator=g) * 5 - 2
        gamma[torch.rand(shape, generator=g) < 0.2] = 0.0
    else:
        nb = TABLE_EDGES.numel() - 1
        if gval == "1d":
            gamma = torch.tensor([3.0, 2.0, 0.5, 0.0, -1.0])
        else:
            gamma = torch.rand((C, nb), generator=g) * 4 - 1
            gamma[:, 3] = 0.0
    alpha = torch.rand(C, generator=g) if alpha_on else None
    weight = (torch.rand(shape, generator=g) * 2) if weight_on else None
    tp = (t * (1 - ls) + ls / 2).double().reshape(N, C, S)
    edge_sets = [STAT_EDGES] + ([TABLE_EDGES] if kind == 3 else [])
    x = _push_off_edges(x.reshape(N, C, S), tp, edge_sets).reshape(shape)
    return dict(x=x, t=t, gamma=gamma, gamma_kind=kind, table_edges=TABLE_EDGES if kind == 3 else None,
                alpha=alpha, weight=weight, ignore_index=ignore_index, label_smoothing=ls,
                detach_modulator=detach)


def run_kernel(case, need_elementwise=True, need_stats=True, need_conf=True, **hooks):
    dev = {k: (v.to(DEV) if torch.is_tensor(v) else v) for k, v in case.items()}
    return ts.sigmoid_focal_forward_triton(
        dev["x"], dev["t"], dev["gamma"], dev["gamma_kind"], dev["table_edges"], dev["alpha"],
        dev["weight"], dev["ignore_index"], dev["label_smoothing"], dev["detach_modulator"],
        STAT_EDGES.to(DEV), need_elementwise, need_stats, need_conf, **hooks)


def run_reference(case):
    x = case["x"]
    N, C = x.shape[0], (x.shape[1] if x.dim() > 1 else 1)
    S = x.numel() // max(1, N * C)
    r = lambda v: None if v is None else v.reshape(N, C, S)  # noqa: E731
    gamma = case["gamma"]
    if case["gamma_kind"] == 2:
        gamma = r(gamma)
    return reference(x.reshape(N, C, S), case["t"].reshape(N, C, S), gamma, case["gamma_kind"],
                     case["table_edges"], case["alpha"], r(case["weight"]), case["ignore_index"],
                     case["label_smoothing"], case["detach_modulator"], STAT_EDGES)


def check(case, hooks, need_elementwise=True, need_stats=True, need_conf=True):
    elem, grad, acc = run_kernel(case, need_elementwise, need_stats, need_conf, **hooks)
    elem_r, grad_r, acc_r = run_reference(case)
    elem, grad, acc = elem.cpu(), grad.cpu(), acc.cpu()
    N, C, S = elem_r.shape
    B = STAT_EDGES.numel() - 1
    assert grad.shape == (N, C, S) and grad.dtype == torch.float32
    assert acc.shape == (acc_len(C, B, need_stats and need_conf),) and acc.dtype == torch.float64
    assert torch.isfinite(grad).all() and torch.isfinite(acc).all()
    if need_elementwise:
        assert elem.shape == (N, C, S) and elem.dtype == torch.float32
        torch.testing.assert_close(elem.double(), elem_r, rtol=1e-5, atol=1e-6)
    else:
        assert elem.numel() == 0
    torch.testing.assert_close(grad.double(), grad_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acc[0], acc_r[0], rtol=1e-5, atol=1e-5)          # sum_loss
    assert torch.equal(acc[1:3], acc_r[1:3])                                    # count, n_pos
    if need_stats:
        torch.testing.assert_close(acc[3:5], acc_r[3:5], rtol=1e-5, atol=1e-5)  # sum_pt, |p-t'|
        assert torch.equal(acc[5:5 + B], acc_r[5:5 + B])                        # hist
        assert torch.equal(acc[5 + B:5 + B + C], acc_r[5 + B:5 + B + C])        # class_count
        # class_sum_pt, sum_pt_pos, class_sum_grad_pos, class_sum_grad_neg
        o = conf_offset(C, B)
        torch.testing.assert_close(acc[5 + B + C:o], acc_r[5 + B + C:o], rtol=1e-5, atol=1e-5)
    if need_stats and need_conf:
        # confidence bins: counts exact; confidence sums; numbers correct exact
        f = o + B + C * B
        assert torch.equal(acc[o:f], acc_r[o:f])                                 # conf_count, class_conf_count
        torch.testing.assert_close(acc[f:f + B], acc_r[f:f + B], rtol=1e-5, atol=1e-5)  # conf_sum
        assert torch.equal(acc[f + B:f + 2 * B], acc_r[f + B:f + 2 * B])         # correct_sum
        torch.testing.assert_close(acc[f + 2 * B:f + 2 * B + C * B], acc_r[f + 2 * B:f + 2 * B + C * B],
                                   rtol=1e-5, atol=1e-5)                         # class_conf_sum
        assert torch.equal(acc[f + 2 * B + C * B:], acc_r[f + 2 * B + C * B:])   # class_correct_sum
    if not need_stats:
        assert torch.all(acc[3:] == 0)
    return elem, grad, acc


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------
GAMMAS = [(0, 2.0), (0, 0.0), (0, 0.5), (0, -1.5), (1, None), (2, None), (3, None)]
GAMMA_IDS = ["g2", "g0", "g0.5", "g-1.5", "per_class", "full", "table"]

# L8 orthogonal array: every pair of option values occurs together
# columns: alpha, weight, ignore, label_smoothing, detach, soft
L8 = [
    (0, 0, 0, 0, 0, 0), (0, 0, 0, 1, 1, 1), (0, 1, 1, 0, 0, 1), (0, 1, 1, 1, 1, 0),
    (1, 0, 1, 0, 1, 0), (1, 0, 1, 1, 0, 1), (1, 1, 0, 0, 1, 1), (1, 1, 0, 1, 0, 0),
]
OPT_IDS = ["".join(n for n, f in zip(("a", "w", "i", "l", "d", "s"), row) if f) or "plain" for row in L8]

# (shape, hooks): small tiles / program counts force several class blocks, programs and
# grid-stride iterations and ragged edges
SHAPES = [
    ((13, 21), dict(_tile=64, _programs=3)),   # S == 1: BLOCK (8, 8, 1), 3 class blocks, 2 row tiles/program
    ((2, 6, 21), dict(_tile=64, _programs=3)),  # S > 1: BLOCK (1, 2, 32), ragged S, 2 tiles/program
]


@pytest.mark.parametrize("shape_hooks", SHAPES, ids=["NC", "NCS"])
@pytest.mark.parametrize("opts", L8, ids=OPT_IDS)
@pytest.mark.parametrize("gamma_case", GAMMAS, ids=GAMMA_IDS)
def test_matches_reference(gamma_case, opts, shape_hooks):
    shape, hooks = shape_hooks
    a, w, i, smooth, d, s = opts
    seed = hash((GAMMAS.index(gamma_case), L8.index(opts), len(shape))) % 1000
    case = make_case(shape, gamma_case, a, w, i, 0.1 if smooth else 0.0, bool(d), s, seed=seed)
    check(case, hooks)


@pytest.mark.parametrize("shape", [(50, 80), (9, 5, 3), (2, 3, 1500), (4, 3, 5, 7), (100,), (0, 4)],
                         ids=["det80", "S3", "S1500", "4d", "1d", "empty"])
def test_default_tiles(shape):
    case = make_case(shape, (1, None) if len(shape) > 1 else (0, 2.0), True, True, True, 0.1, False,
                     True, seed=7)
    if len(shape) == 1:
        case["alpha"] = case["alpha"][:1]
    if case["x"].numel() == 0:
        elem, grad, acc = run_kernel(case)
        assert grad.numel() == 0 and torch.all(acc == 0)
        return
    check(case, {})


def test_table_1d_values_and_broadcast_weight():
    case = make_case((17, 6), (3, "1d"), False, False, False, 0.0, False, False, seed=3)
    case["weight"] = torch.rand(1, 6) + 0.5  # broadcastable like F.binary_cross_entropy_with_logits
    ref_case = dict(case, weight=case["weight"].expand(17, 6).contiguous())
    elem, grad, acc = run_kernel(case, _tile=32, _programs=3)
    elem_r, grad_r, acc_r = run_reference(ref_case)
    torch.testing.assert_close(elem.cpu().double(), elem_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.cpu().double(), grad_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acc.cpu(), acc_r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("need_elementwise,need_stats,need_conf",
                         [(False, True, True), (True, True, False), (False, True, False), (True, False, True),
                          (False, False, False)])
def test_optional_outputs(need_elementwise, need_stats, need_conf):
    case = make_case((13, 7, 3), (0, 2.0), True, False, True, 0.0, False, False, seed=11)
    check(case, dict(_tile=16, _programs=3), need_elementwise, need_stats, need_conf)


@pytest.mark.parametrize("shape_hooks", SHAPES, ids=["NC", "NCS"])
@pytest.mark.parametrize("gamma_case", [(0, 2.0), (0, -1.5), (3, None)], ids=["g2", "g-1.5", "table"])
def test_without_confidence_bins_everything_else_is_bit_identical(gamma_case, shape_hooks):
    """need_conf=False (the loss's default confidence_stats=False) drops the confidence bins from the accumulator
    and changes nothing else, bit for bit; with them the bins match the reference (check)."""
    shape, hooks = shape_hooks
    case = make_case(shape, gamma_case, True, True, True, 0.1, False, True, seed=5)
    elem_on, grad_on, acc_on = check(case, hooks)
    elem_off, grad_off, acc_off = (v.cpu() for v in run_kernel(case, True, True, False, **hooks))
    C, B = shape[1], STAT_EDGES.numel() - 1
    assert acc_off.shape == (conf_offset(C, B),) == (acc_len(C, B, False),)
    assert torch.equal(acc_off, acc_on[:conf_offset(C, B)])
    assert torch.equal(elem_off, elem_on) and torch.equal(grad_off, grad_on)


def test_histogram_fallback_mode(monkeypatch):
    monkeypatch.setattr(ts, "_HIST_MODE", 1)  # per-bin reductions instead of tl.histogram
    case = make_case((13, 21), (3, None), True, False, True, 0.1, False, True, seed=9)
    check(case, dict(_tile=64, _programs=3))


def test_gamma_zero_is_bce():
    case = make_case((31, 4), (0, 0.0), False, True, True, 0.1, False, True, seed=5)
    elem, grad, acc = run_kernel(case, _tile=16, _programs=2)
    x = case["x"].double().requires_grad_(True)
    t = case["t"].double()
    valid = t != -1
    tp = t * 0.9 + 0.05
    w = case["weight"].double() * valid
    bce = F.binary_cross_entropy_with_logits(x, tp, weight=w, reduction="none")
    (g,) = torch.autograd.grad(bce.sum(), x)
    torch.testing.assert_close(elem.cpu().double().reshape(31, 4), bce.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.cpu().double().reshape(31, 4), g, rtol=1e-5, atol=1e-6)


def test_half_inputs_upcast():
    case = make_case((21, 5), (0, 2.0), False, False, False, 0.0, False, False, seed=2)
    half = dict(case, x=case["x"].to(torch.bfloat16), t=case["t"].to(torch.float16))
    ref = dict(case, x=half["x"].float(), t=half["t"].float())
    e1, g1, a1 = run_kernel(half, _tile=16)
    e2, g2, a2 = run_kernel(ref, _tile=16)
    assert g1.dtype == torch.float32
    assert torch.equal(e1, e2) and torch.equal(g1, g2) and torch.equal(a1, a2)


def test_deterministic():
    case = make_case((40, 9, 2), (2, None), True, True, True, 0.1, False, True, seed=4)
    r1 = run_kernel(case, _tile=16, _programs=6)
    r2 = run_kernel(case, _tile=16, _programs=6)
    for u, v in zip(r1, r2):
        assert torch.equal(u, v)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0, -1.0])
@pytest.mark.parametrize("ls,alpha_on", [(0.0, False), (0.1, True)])
def test_saturated_logits_finite(gamma, ls, alpha_on):
    vals = torch.tensor([1e4, -1e4, 100.0, -100.0, 88.0, -88.0, 104.0, -104.0, 30.0, -30.0, 0.0, 1e-3])
    x = vals.repeat_interleave(3).reshape(-1, 3)                 # (12, 3)
    t = torch.tensor([1.0, 0.0, 0.3]).repeat(vals.numel(), 1)     # hard and soft targets per logit
    case = dict(x=x, t=t, gamma=torch.tensor(gamma), gamma_kind=0, table_edges=None,
                alpha=torch.tensor([0.25, 0.5, 0.75]) if alpha_on else None, weight=None,
                ignore_index=None, label_smoothing=ls, detach_modulator=False)
    elem, grad, acc = run_kernel(case, _tile=16, _programs=2)
    elem, grad, acc = elem.cpu(), grad.cpu(), acc.cpu()
    assert torch.isfinite(elem).all() and torch.isfinite(grad).all() and torch.isfinite(acc).all()
    # forward against float64 (stable in float64 with BCE-with-logits and an exp-based 1 - p_t)
    xd, td = x.double(), t.double() * (1 - ls) + ls / 2
    p = torch.sigmoid(xd)
    q = td * torch.sigmoid(-xd) + (1 - td) * p
    mod = (q ** gamma) if gamma >= 0 else (2 - q) ** (-gamma)
    a = 1.0 if not alpha_on else case["alpha"].double() * td + (1 - case["alpha"].double()) * (1 - td)
    ref = a * mod * F.binary_cross_entropy_with_logits(xd, td, reduction="none")
    torch.testing.assert_close(elem.double().reshape(12, 3), ref, rtol=1e-5, atol=1e-6)
    # |grad| <= 2**|gamma| * (1 + |gamma| * bce): the modulator is <= 2**|gamma|, r = p(1-p)/base <= 1
    bce = F.binary_cross_entropy_with_logits(xd, td, reduction="none")
    assert (grad.double().reshape(12, 3).abs() <= 2 ** abs(gamma) * (1 + abs(gamma) * bce) + 1e-6).all()
    if gamma > 0 and ls == 0:
        # exactly saturated and correct: modulator 0, zero gradient
        assert grad.reshape(12, 3)[0, 0] == 0 and grad.reshape(12, 3)[1, 1] == 0


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, -1.5])
@pytest.mark.parametrize("ls,alpha_on", [(0.0, False), (0.1, True)])
def test_nonfinite_logits_follow_the_library_rule(gamma, ls, alpha_on):
    """The rule of adaptive_focal/_kernels/__init__.py, as the C kernel and the PyTorch path apply it: +-inf gives
    the limits of the loss and gradient, NaN gives NaN and stays in the statistics (NaN sums, the last bin),
    ignored elements give 0 whatever their logit."""
    from helpers.reference import sigmoid_limit

    inf, nan = math.inf, math.nan
    targets = [0.0, 1.0, 0.3]
    row_x = [inf, -inf] * 3 + [nan, nan, inf, -inf, nan, 0.5]
    row_t = [0.0, 0.0, 1.0, 1.0, 0.3, 0.3] + [1.0, 0.0, -1.0, -1.0, -1.0, 1.0]
    x, t = torch.tensor([row_x] * 3), torch.tensor([row_t] * 3)  # (3, 12): three rows alike
    alpha = torch.full((12,), 0.25) if alpha_on else None
    case = dict(x=x, t=t, gamma=torch.tensor(gamma), gamma_kind=0, table_edges=None, alpha=alpha, weight=None,
                ignore_index=-1.0, label_smoothing=ls, detach_modulator=False)
    elem, grad, acc = (v.cpu() for v in run_kernel(case, _tile=16, _programs=2))
    elem, grad = elem.view(3, 12), grad.view(3, 12)
    for j in range(6):
        want_loss, want_grad = sigmoid_limit(row_x[j], targets[j // 2], gamma, 0.25 if alpha_on else None, ls)
        assert torch.all(elem[:, j] == want_loss), (j, elem[0, j].item(), want_loss)
        torch.testing.assert_close(grad[:, j], torch.full((3,), want_grad), msg=f"column {j}")
    assert elem[:, 6:8].isnan().all() and grad[:, 6:8].isnan().all()
    assert torch.all(elem[:, 8:11] == 0) and torch.all(grad[:, 8:11] == 0)  # ignored: exactly 0
    B, C = STAT_EDGES.numel() - 1, 12
    assert acc[1] == 27 and acc[0].isnan()                          # count (9 per row), sum_loss
    assert acc[3].isnan() and acc[4].isnan()                        # sum_pt, sum |p - t'|
    assert acc[5:5 + B].sum() == 27 and acc[5 + B - 1] >= 6        # NaN p_t: the last bin
    class_sum_pt = acc[5 + B + C:5 + B + 2 * C]
    assert class_sum_pt.isnan().tolist() == [False] * 6 + [True, True] + [False] * 4
    assert acc[5 + B + 2 * C].isnan()                               # sum_pt_pos: a positive NaN element
    # confidence bins: every counted element once; a NaN logit in the last bin, its sums NaN
    o = conf_offset(C, B)
    f = o + B + C * B
    class_count = acc[o + B:f].view(C, B)
    assert class_count.sum() == 27 and acc[o:o + B].sum() == 27
    assert class_count.sum(1).tolist() == [3.0] * 8 + [0.0] * 3 + [3.0]    # columns 8-10 are ignored
    assert torch.all(class_count[6:8, B - 1] == 3)
    class_sum, class_correct = acc[f + 2 * B:f + 2 * B + C * B].view(C, B), acc[f + 2 * B + C * B:].view(C, B)
    for cells in (class_sum, class_correct):
        assert cells.isnan().nonzero().tolist() == [[6, B - 1], [7, B - 1]]
    assert acc[f + B - 1].isnan() and acc[f + 2 * B - 1].isnan()   # conf_sum, correct_sum of the last bin
    assert not acc[f:f + B - 1].isnan().any()
    # +-inf logits are computed at +-1e4: confidence 1, correct when the sign agrees with the target
    assert class_correct[:6, B - 1].tolist() == [0.0, 3.0, 3.0, 0.0, 0.0, 3.0]
    from adaptive_focal._kernels import cpu
    if cpu.available():  # the C kernel gives the same, statistics included
        args = [case[k] for k in ("x", "t", "gamma", "gamma_kind", "table_edges", "alpha", "weight",
                                  "ignore_index", "label_smoothing", "detach_modulator")]
        args[0], args[1] = x.view(3, 12, 1), t.view(3, 12, 1)
        c_elem, c_grad, c_acc = cpu.sigmoid_focal_forward(*args, STAT_EDGES, True, True, True)
        torch.testing.assert_close(elem, c_elem.view(3, 12), equal_nan=True)
        torch.testing.assert_close(grad, c_grad.view(3, 12), equal_nan=True)
        torch.testing.assert_close(acc, c_acc, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_log1p_accuracy():
    u = torch.cat([torch.zeros(1), torch.logspace(-30, 0, 3001), torch.rand(1000),
                   torch.tensor([1e-40, 1.1754944e-38, 5.9604645e-08, 1.1920929e-07, 2.4e-7])])
    u = u.float()
    got = ts.log1p_triton_check(u.to(DEV)).cpu().double()
    ref = torch.log1p(u.double())
    rel = ((got - ref).abs() / ref.clamp_min(1e-300)).max().item()
    assert rel < 3e-7, rel  # ~2.5 ulp of float32
    assert got[0] == 0


if not _INTERP_OK:
    # triton was imported in compile mode earlier in this session and there is no GPU: replace the
    # tests above by one that runs this file under the interpreter in a fresh process
    for _name in [n for n in list(globals()) if n.startswith("test_")]:
        del globals()[_name]

    def test_suite_in_fresh_interpreter_process():
        import subprocess

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, TRITON_INTERPRET="1")
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               os.path.abspath(__file__)], cwd=root, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
