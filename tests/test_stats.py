"""BatchStats returned with return_stats=True, checked against values computed directly (spec: BatchStats)."""

import dataclasses
import functools
import math
import re

import numpy as np
import pytest
import torch

import adaptive_focal as af
from helpers.reference import Table, far_from_edges_sigmoid, stable_ref_sigmoid, value_and_grad

#: the sigmoid loss with its (opt-in) confidence bins, which most tests here check; SIG_PLAIN without them
SIG = functools.partial(af.sigmoid_focal_loss, confidence_stats=True)
SIG_PLAIN = af.sigmoid_focal_loss
SMX = af.softmax_focal_loss
#: the BatchStats fields the sigmoid confidence bins add
CONF_FIELDS = ("conf_count", "conf_sum", "correct_sum", "class_conf_count", "class_conf_sum", "class_correct_sum")

DEFAULT_EDGES = np.linspace(0.0, 1.0, 16)
TABLE_EDGES = torch.tensor([0.0, 0.2, 0.35, 0.6, 0.85, 1.0])


def np_bin(v, edges):
    """bin b with edges[b] <= v < edges[b+1], last bin closed (numpy, float64)."""
    e = np.asarray(edges, dtype=np.float64)
    b = np.searchsorted(e, v, side="right") - 1
    return np.clip(b, 0, len(e) - 2)


def np_hist(v, edges):
    return np.bincount(np_bin(v, edges), minlength=len(edges) - 1)


# --------------------------------------------------------------------------------------------
# sigmoid
# --------------------------------------------------------------------------------------------


def sigmoid_data(shape, gen, soft, ignore_index, ls, edges, dtype=torch.float32, scale=2.5):
    def make_x(mask):
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    def make_t(mask):
        if soft:
            t = torch.rand(shape, generator=gen, dtype=torch.float64)
            t.view(-1)[::4] = 1.0
        else:
            t = (torch.rand(shape, generator=gen) < 0.4).double()
        if ignore_index is not None and mask is None:
            t = torch.where(torch.rand(shape, generator=gen) < 0.2, torch.full_like(t, ignore_index), t)
        return t.to(dtype)

    return far_from_edges_sigmoid(make_x, make_t, torch.as_tensor(edges), ls, ignore_index, margin=1e-4)


def ref_elem_grad(x, t, gamma, kw):
    """d(element loss)/d(logit) of every element (0 where ignored): float64 autograd of the independent log-space
    reference (the elements' losses are independent, so the gradient of their sum is the per-element one)."""
    _, g = value_and_grad(lambda xx: stable_ref_sigmoid(xx, t, gamma, reduction="sum", **kw), x.double())
    return g


def sigmoid_expected(x, t, ls, ignore_index, edges, loss_none, grad=None):
    """The statistics computed directly in numpy; with ``grad`` (``ref_elem_grad``) also the gradient sums."""
    x = x.detach().double().numpy()
    t_raw = t.double().numpy()
    valid = np.ones_like(t_raw, dtype=bool) if ignore_index is None else t_raw != ignore_index
    tt = np.where(valid, t_raw, 0.0)
    ts = tt * (1 - ls) + ls / 2
    p = 1 / (1 + np.exp(-x))
    pt = p * ts + (1 - p) * (1 - ts)
    if x.ndim == 1:
        cls = np.zeros(x.shape, dtype=int)
        C = 1
    else:
        C = x.shape[1]
        cls = np.broadcast_to(np.arange(C).reshape([1, C] + [1] * (x.ndim - 2)), x.shape)
    v = valid
    out = dict(
        count=int(v.sum()),
        n_pos=int(((t_raw >= 0.5) & v).sum()),
        sum_pt=pt[v].sum(),
        sum_loss=float(loss_none.double().sum()),
        sum_grad_norm=np.abs(p - ts)[v].sum(),
        pt_hist=np_hist(pt[v], edges),
        class_count=np.bincount(cls[v], minlength=C),
        class_sum_pt=np.bincount(cls[v], weights=pt[v], minlength=C),
        sum_pt_pos=pt[v & (t_raw >= 0.5)].sum(),
        **sigmoid_confidence_expected(p, t_raw, v, cls, C, edges),
    )
    if grad is not None:
        g = np.abs(grad.double().numpy())
        out["class_sum_grad_pos"] = np.bincount(cls[v], weights=(g * tt)[v], minlength=C)
        out["class_sum_grad_neg"] = np.bincount(cls[v], weights=(g * (1 - tt))[v], minlength=C)
    return out


def sigmoid_confidence_expected(p, t_raw, valid, cls, C, edges):
    """The confidence bins: every valid element a binary prediction with confidence max(p, 1 - p), correct when
    (p > 1/2) == (t >= 1/2) or p = 1/2 (a tie), binned by ``edges``, per class (index along dim 1) and in total."""
    conf = np.maximum(p, 1 - p)
    correct = (((p > 0.5) == (t_raw >= 0.5)) | (p == 0.5)).astype(np.float64)
    B = len(edges) - 1
    cell = (cls * B + np_bin(conf, edges))[valid]

    def per_cell(w):
        return np.bincount(cell, weights=w[valid], minlength=C * B).reshape(C, B)

    count = np.bincount(cell, minlength=C * B).reshape(C, B)
    conf_sum, n_correct = per_cell(conf), per_cell(correct)
    return dict(conf_count=count.sum(0), conf_sum=conf_sum.sum(0), correct_sum=n_correct.sum(0),
                class_conf_count=count, class_conf_sum=conf_sum, class_correct_sum=n_correct)


CONF_COUNTS = ("conf_count", "class_conf_count")
CONF_SUMS = ("conf_sum", "correct_sum", "class_conf_sum", "class_correct_sum")


def assert_stats_equal_expected(st, exp, edges, rtol=2e-5):
    assert isinstance(st, af.BatchStats)
    np.testing.assert_allclose(st.edges.double().numpy(), np.asarray(edges, dtype=np.float64), rtol=0, atol=1e-7)
    assert st.edges.dtype == torch.float32
    for k in ("count", "n_pos"):
        v = getattr(st, k)
        assert v.dtype == torch.int64 and v.dim() == 0, (k, v)
        assert int(v) == exp[k], (k, int(v), exp[k])
    for k in ("pt_hist", "class_count") + CONF_COUNTS:
        if k not in exp:
            continue
        v = getattr(st, k)
        assert v.dtype == torch.int64, (k, v.dtype)
        np.testing.assert_array_equal(v.numpy(), exp[k], err_msg=k)
    for k in ("sum_pt", "sum_loss", "sum_grad_norm", "class_sum_pt", "sum_pt_pos", "class_sum_grad_pos",
              "class_sum_grad_neg") + CONF_SUMS:
        if k not in exp:
            continue
        v = getattr(st, k)
        assert v.dtype == torch.float32, (k, v.dtype)
        assert v.shape == np.shape(exp[k]), (k, v.shape)
        np.testing.assert_allclose(v.double().numpy(), exp[k], rtol=rtol, atol=1e-5, err_msg=k)


SIG_OPTS = {
    "plain": dict(),
    "soft_ls": dict(soft=True, ls=0.2),
    "ignore": dict(ignore_index=-1.0),
    "all": dict(soft=True, ls=0.1, ignore_index=-1.0, alpha=0.25, weight=True),
    "ignore255": dict(ignore_index=255.0, alpha=0.75),
}


def sig_case(shape, opt, gen, edges, dtype=torch.float32):
    o = dict(SIG_OPTS[opt])
    ls = o.get("ls", 0.0)
    ign = o.get("ignore_index")
    x, t = sigmoid_data(shape, gen, o.get("soft", False), ign, ls, edges, dtype=dtype)
    kw = dict(label_smoothing=ls, ignore_index=ign)
    if "alpha" in o:
        kw["alpha"] = o["alpha"]
    if o.get("weight"):
        kw["weight"] = (torch.rand(shape, generator=gen) + 0.5).to(dtype)
    return x, t, kw


SMALL_SHAPES = {"N": (50,), "NC": (40, 3), "NCHW": (4, 3, 5, 6)}
LARGE_SHAPES = {"large": (2048, 64), "largeNCHW": (8, 4, 64, 64), "wide": (64, 600)}  # wide: rows > a block


@pytest.mark.parametrize("shape", list({**SMALL_SHAPES, **LARGE_SHAPES}.values()),
                         ids=list({**SMALL_SHAPES, **LARGE_SHAPES}))
@pytest.mark.parametrize("opt", list(SIG_OPTS))
@pytest.mark.parametrize("gform", ["float", "table"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_sigmoid_stats(shape, opt, gform, reduction, gen):
    # with a C compiler: large inputs take the fused kernel, small ones its statistics pass (the library is built
    # here, so that it is ready for them); without one, the PyTorch formulation
    af._kernels.kernel_available("cpu")
    _check_sigmoid_stats(shape, opt, gform, reduction, gen)


@pytest.mark.parametrize("shape", list(SMALL_SHAPES.values()), ids=list(SMALL_SHAPES))
@pytest.mark.parametrize("opt", list(SIG_OPTS))
@pytest.mark.parametrize("gform", ["float", "table"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_sigmoid_stats_pytorch_formulation(shape, opt, gform, reduction, gen, monkeypatch):
    # the statistics of small inputs before the C library is built (or without a compiler)
    monkeypatch.setattr(af.functional, "_sigmoid_stats_kernel_fits", lambda *args: False)
    _check_sigmoid_stats(shape, opt, gform, reduction, gen)


def _check_sigmoid_stats(shape, opt, gform, reduction, gen):
    edges = TABLE_EDGES.double().numpy() if gform == "table" else DEFAULT_EDGES
    x, t, kw = sig_case(shape, opt, gen, edges)
    table_values = torch.tensor([3.0, 2.0, 1.0, 0.5, -1.0])
    g = af.GammaTable(TABLE_EDGES, table_values) if gform == "table" else 2.0
    loss, st = SIG(x, t, gamma=g, reduction=reduction, return_stats=True, **kw)
    loss_plain = SIG(x, t, gamma=g, reduction=reduction, **kw)
    assert torch.equal(loss, loss_plain)  # return_stats does not change the loss
    none = SIG(x, t, gamma=g, reduction="none", **kw)
    grad = ref_elem_grad(x, t, Table(TABLE_EDGES, table_values) if gform == "table" else 2.0, kw)
    exp = sigmoid_expected(x, t, kw["label_smoothing"], kw["ignore_index"], edges, none, grad)
    assert_stats_equal_expected(st, exp, edges)
    assert st.mode == "sigmoid"
    assert st.num_bins == len(edges) - 1
    assert st.num_classes == (1 if len(shape) == 1 else shape[1])
    for f in ("count", "sum_pt", "pt_hist", "class_count", "class_sum_pt", "sum_loss") + CONF_COUNTS + CONF_SUMS:
        assert getattr(st, f).device == x.device
    # without the confidence bins: the same loss and, bit for bit, the same other fields
    loss_off, off = SIG_PLAIN(x, t, gamma=g, reduction=reduction, return_stats=True, **kw)
    assert_same_without_confidence(off, st)
    assert torch.equal(loss_off, loss)


def assert_same_without_confidence(off, on):
    """``off`` (confidence_stats=False) has None for the confidence bins and every other field of ``on`` (with
    them), bit for bit (NaN where ``on`` has NaN)."""
    assert off.mode == on.mode == "sigmoid"
    for f in dataclasses.fields(af.BatchStats):
        a, b = getattr(off, f.name), getattr(on, f.name)
        if f.name in CONF_FIELDS:
            assert a is None and b is not None, f.name
        elif isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape, f.name
            assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()]), (f.name, a, b)
        else:
            assert a == b, f.name


@pytest.mark.parametrize("bins", [1, 4, 10, 15, 32])
@pytest.mark.parametrize("shape", [(30, 4), (1024, 40)], ids=["small", "large"])
def test_sigmoid_stat_bins(bins, shape, gen):
    # more than 16 bins: the kernel's portable binning, even in its AVX-512 build
    af._kernels.kernel_available("cpu")
    edges = np.linspace(0, 1, bins + 1)
    x, t, kw = sig_case(shape, "plain", gen, edges)
    _, st = SIG(x, t, return_stats=True, stat_bins=bins)
    exp = sigmoid_expected(x, t, 0.0, None, edges, SIG(x, t, reduction="none"))
    assert_stats_equal_expected(st, exp, edges)


def test_table_edges_take_precedence_over_stat_bins(gen):
    x, t, kw = sig_case((30, 4), "plain", gen, TABLE_EDGES.double().numpy())
    g = af.GammaTable(TABLE_EDGES, torch.tensor([3.0, 2.0, 1.0, 0.5, 0.0]))
    _, st = SIG(x, t, gamma=g, return_stats=True, stat_bins=7)
    torch.testing.assert_close(st.edges, TABLE_EDGES.float())


def test_sigmoid_stats_hand_checked():
    # x = [0, ln 3, -ln 3], t = [1, 1, 0] -> p = [.5, .75, .25], p_t = [.5, .75, .75]
    x = torch.tensor([0.0, np.log(3.0), -np.log(3.0), 5.0])
    t = torch.tensor([1.0, 1.0, 0.0, -1.0])  # the last one is ignored
    _, st = SIG(x, t, gamma=0.0, ignore_index=-1, return_stats=True, stat_bins=4)
    assert int(st.count) == 3 and int(st.n_pos) == 2
    assert abs(float(st.sum_pt) - 2.0) < 1e-6
    assert abs(float(st.sum_grad_norm) - (0.5 + 0.25 + 0.25)) < 1e-6
    # edges [0, .25, .5, .75, 1]: .5 -> bin 2, .75 -> bin 3 (twice)
    assert st.pt_hist.tolist() == [0, 0, 1, 2]
    assert st.class_count.tolist() == [3]
    assert abs(float(st.sum_loss) - (np.log(2) + 2 * np.log(4 / 3))) < 1e-6
    torch.testing.assert_close(st.mean_pt, torch.tensor(2.0 / 3))
    torch.testing.assert_close(st.mean_loss, st.sum_loss / 3)
    torch.testing.assert_close(st.mean_grad_norm, st.sum_grad_norm / 3)


@pytest.mark.parametrize("opt", list(SIG_OPTS))
@pytest.mark.parametrize("shape", [(40, 3), (2048, 64)], ids=["small", "large"])
@pytest.mark.parametrize("gform", ["float", "table"])
def test_sigmoid_stats_halves_add_up(opt, shape, gform, gen):
    edges = TABLE_EDGES.double().numpy() if gform == "table" else DEFAULT_EDGES
    x, t, kw = sig_case(shape, opt, gen, edges)
    g = af.GammaTable(TABLE_EDGES, torch.tensor([3.0, 2.0, 1.0, 0.5, -1.0])) if gform == "table" else 2.0
    h = shape[0] // 2

    def part(sl):
        kk = dict(kw)
        if "weight" in kk:
            kk["weight"] = kk["weight"][sl]
        return SIG(x[sl], t[sl], gamma=g, return_stats=True, **kk)[1]

    whole = SIG(x, t, gamma=g, return_stats=True, **kw)[1]
    added = part(slice(0, h)) + part(slice(h, None))
    assert_stats_added_equal(added, whole)


def assert_stats_added_equal(added, whole):
    assert isinstance(added, af.BatchStats)
    assert torch.equal(added.edges, whole.edges)
    assert added.mode == whole.mode
    for k in ("count", "n_pos", "pt_hist", "class_count") + CONF_COUNTS:
        a, w = getattr(added, k), getattr(whole, k)
        if w is None:
            assert a is None
            continue
        assert a.dtype == torch.int64
        assert torch.equal(a, w), k
    for k in ("sum_pt", "sum_loss", "sum_grad_norm", "class_sum_pt", "sum_pt_pos", "class_sum_grad_pos",
              "class_sum_grad_neg") + CONF_SUMS:
        a, w = getattr(added, k), getattr(whole, k)
        if w is None:
            assert a is None
            continue
        torch.testing.assert_close(a.double(), w.double(), rtol=1e-5, atol=1e-4, msg=k)


def test_stats_sum_of_many_batches_and_sum_builtin(gen):
    x, t, kw = sig_case((64, 5), "all", gen, DEFAULT_EDGES)
    whole = SIG(x, t, return_stats=True, **kw)[1]
    parts = []
    for i in range(0, 64, 16):
        kk = dict(kw, weight=kw["weight"][i:i + 16])
        parts.append(SIG(x[i:i + 16], t[i:i + 16], return_stats=True, **kk)[1])
    acc = parts[0]
    for p in parts[1:]:
        acc = acc + p
    assert_stats_added_equal(acc, whole)
    # addition does not modify its operands
    before = int(parts[0].count)
    _ = parts[0] + parts[1]
    assert int(parts[0].count) == before


def test_adding_stats_with_different_edges_raises(gen):
    x, t, _ = sig_case((20, 3), "plain", gen, DEFAULT_EDGES)
    a = SIG(x, t, return_stats=True)[1]
    b = SIG(x, t, return_stats=True, stat_bins=10)[1]
    with pytest.raises((ValueError, RuntimeError)):
        a + b
    c = SIG(x, t, return_stats=True, gamma=af.GammaTable(
        torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 1.0]),
        torch.ones(15)))[1]
    with pytest.raises((ValueError, RuntimeError)):
        a + c


def test_class_mean_pt_nan_for_empty_class():
    x = torch.tensor([[0.0, 1.0, 2.0], [1.0, -1.0, 0.5]])
    t = torch.tensor([[1.0, -1.0, 0.0], [0.0, -1.0, 1.0]])
    _, st = SIG(x, t, ignore_index=-1, return_stats=True)
    assert st.class_count.tolist() == [2, 0, 2]
    m = st.class_mean_pt
    assert torch.isnan(m[1]) and torch.isfinite(m[[0, 2]]).all()
    torch.testing.assert_close(m[[0, 2]], st.class_sum_pt[[0, 2]] / 2)


def test_stats_to_and_state_dict(gen):
    x, t, _ = sig_case((20, 3), "plain", gen, DEFAULT_EDGES)
    st = SIG(x, t, return_stats=True)[1]
    st2 = st.to("cpu")
    assert isinstance(st2, af.BatchStats)
    assert torch.equal(st2.pt_hist, st.pt_hist) and torch.equal(st2.sum_pt, st.sum_pt)
    sd = st.state_dict()
    assert isinstance(sd, dict)
    for k in ("count", "sum_pt", "pt_hist", "class_count", "edges"):
        assert k in sd and torch.equal(sd[k], getattr(st, k))


def test_stats_all_reduce_world_size_one(tmp_path, gen):
    import torch.distributed as dist
    x, t, _ = sig_case((20, 3), "plain", gen, DEFAULT_EDGES)
    st = SIG(x, t, return_stats=True)[1]
    ref = {k: v.clone() for k, v in st.state_dict().items() if isinstance(v, torch.Tensor)}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        r = st.all_reduce()
    finally:
        dist.destroy_process_group()
    out = r if isinstance(r, af.BatchStats) else st
    for k, v in ref.items():
        assert torch.equal(out.state_dict()[k], v), k


_WORKER = r"""
import sys, torch, torch.distributed as dist
import adaptive_focal as af
rank, path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.manual_seed(rank)
x = torch.randn(10 + rank, 3)
t = (torch.rand(10 + rank, 3) < 0.5).float()
st = af.sigmoid_focal_loss(x, t, return_stats=True)[1]
local = {k: v.clone() for k, v in st.state_dict().items() if isinstance(v, torch.Tensor)}
dist.init_process_group("gloo", init_method="file://" + path, rank=rank, world_size=2)
try:
    r = st.all_reduce()
finally:
    dist.destroy_process_group()
res = r if isinstance(r, af.BatchStats) else st
torch.save((local, {k: v.clone() for k, v in res.state_dict().items() if isinstance(v, torch.Tensor)}), out)
"""


@pytest.mark.slow
def test_stats_all_reduce_two_processes(tmp_path):
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(af.__file__))),
                                                        os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(r), str(tmp_path / "pg"), str(tmp_path / f"{r}.pt")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out.decode()[-3000:]
    (l0, o0), (l1, o1) = (torch.load(tmp_path / f"{r}.pt") for r in range(2))
    for k in l0:
        if k == "edges":
            assert torch.equal(o0[k], l0[k]) and torch.equal(o1[k], l0[k])
            continue
        exp = l0[k] + l1[k]
        torch.testing.assert_close(o0[k], exp, msg=k)
        torch.testing.assert_close(o1[k], exp, msg=k)


# --------------------------------------------------------------------------------------------
# softmax
# --------------------------------------------------------------------------------------------

C = 5


def softmax_data(shape, gen, prob, ignore_index, edges, scale=2.0, margin=1e-4):
    """x (float32) and target with every per-sample p_t, confidence and q_c far from the edges."""
    N = shape[0]
    rest = tuple(shape[2:])
    if prob:
        t = torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64) * 3, 1).float()
    else:
        t = torch.randint(0, C, (N,) + rest, generator=gen)
        if ignore_index is not None:
            t = torch.where(torch.rand(t.shape, generator=gen) < 0.2, torch.full_like(t, ignore_index), t)
    e = torch.as_tensor(edges, dtype=torch.float64)[1:-1]
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    for _ in range(300):
        q = torch.softmax(x.float().double(), 1)
        if prob:
            pt = (q * t.double()).sum(1)
        else:
            pt = q.gather(1, t.clamp(0, C - 1).unsqueeze(1)).squeeze(1)
        conf = q.max(1).values
        near = lambda v: ((v.unsqueeze(-1) - e).abs() < margin).any(-1)  # noqa: E731
        bad = near(pt) | near(conf) | near(q).any(1)
        if not bool(bad.any()):
            return x.float(), t
        x = torch.where(bad.unsqueeze(1), torch.randn(shape, generator=gen, dtype=torch.float64) * scale, x)
    raise RuntimeError("could not draw data")


def softmax_expected(x, t, ignore_index, edges, loss_none, ls=0.0):
    x = x.detach().double()
    q = torch.softmax(x, 1).numpy()
    q = np.moveaxis(q, 1, -1).reshape(-1, x.shape[1])  # (M, C)
    Cn = x.shape[1]
    if t.is_floating_point():
        y = np.moveaxis(t.double().numpy(), 1, -1).reshape(-1, Cn)
        valid = np.ones(len(y), dtype=bool)
        cls = y.argmax(1)
    else:
        ti = t.numpy().reshape(-1)
        valid = ti != ignore_index if ignore_index is not None else np.ones(len(ti), dtype=bool)
        cls = np.where(valid, ti, 0)
        y = np.eye(Cn)[cls]
    y = (1 - ls) * y + ls / Cn
    pt = (y * q).sum(1)
    gn = 0.5 * np.abs(q - y).sum(1)
    conf = q.max(1)
    correct = (q.argmax(1) == cls).astype(np.float64)
    v = valid
    cb = np_bin(conf[v], edges)
    B = len(edges) - 1
    return dict(
        count=int(v.sum()),
        n_pos=int(v.sum()),
        sum_pt=pt[v].sum(),
        sum_loss=float(loss_none.double().sum()),
        sum_grad_norm=gn[v].sum(),
        pt_hist=np_hist(pt[v], edges),
        class_count=np.bincount(cls[v], minlength=Cn),
        class_sum_pt=np.bincount(cls[v], weights=pt[v], minlength=Cn),
        conf_count=np.bincount(cb, minlength=B),
        conf_sum=np.bincount(cb, weights=conf[v], minlength=B),
        correct_sum=np.bincount(cb, weights=correct[v], minlength=B),
    )


def assert_softmax_stats(st, exp, edges, keys=None):
    sub = {k: exp[k] for k in ("count", "n_pos", "pt_hist", "class_count", "sum_pt", "sum_loss",
                                "sum_grad_norm", "class_sum_pt")}
    if keys is None:
        assert_stats_equal_expected(st, sub, edges)
        keys = ("conf_count", "conf_sum", "correct_sum")
        assert st.conf_count.dtype == torch.int64
        assert st.conf_sum.dtype == torch.float32
    for k in keys:
        v = getattr(st, k)
        if isinstance(exp[k], int):
            assert int(v) == exp[k], k
        elif np.asarray(exp[k]).dtype.kind == "i":
            np.testing.assert_array_equal(v.numpy(), exp[k], err_msg=k)
        else:
            np.testing.assert_allclose(v.double().numpy(), exp[k], rtol=2e-5, atol=1e-5, err_msg=k)


SMX_OPTS = {
    "plain": dict(),
    "ignore": dict(ignore_index=-100),
    "ignore_cls": dict(ignore_index=2, alpha=True),
    "weight_alpha": dict(weight=True, alpha=True, ignore_index=-100),
    "prob": dict(prob=True),
    "prob_w": dict(prob=True, weight=True),
}


def smx_case(shape, opt, gen, edges):
    o = SMX_OPTS[opt]
    ign = o.get("ignore_index", -100)
    x, t = softmax_data(shape, gen, o.get("prob", False), ign if "ignore_index" in o else None, edges)
    kw = dict(ignore_index=ign)
    if o.get("alpha"):
        kw["alpha"] = torch.rand(C, generator=gen)
    if o.get("weight"):
        kw["weight"] = torch.rand(C, generator=gen) + 0.5
    return x, t, kw


@pytest.mark.parametrize("shape", [(60, C), (3, C, 4, 5), (4096, C)], ids=["NC", "NCD", "large"])
@pytest.mark.parametrize("opt", list(SMX_OPTS))
@pytest.mark.parametrize("gform", ["float", "table", "table_cb"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_softmax_stats(shape, opt, gform, reduction, gen):
    edges = DEFAULT_EDGES if gform == "float" else TABLE_EDGES.double().numpy()
    x, t, kw = smx_case(shape, opt, gen, edges)
    if gform == "float":
        g = 2.0
    elif gform == "table":
        g = af.GammaTable(TABLE_EDGES, torch.tensor([3.0, 2.0, 1.0, 0.5, -1.0]))
    else:
        g = af.GammaTable(TABLE_EDGES, torch.rand(C, 5, generator=gen) * 3)
    loss, st = SMX(x, t, gamma=g, reduction=reduction, return_stats=True, **kw)
    assert torch.equal(loss, SMX(x, t, gamma=g, reduction=reduction, **kw))
    none = SMX(x, t, gamma=g, reduction="none", **kw)
    exp = softmax_expected(x, t, kw["ignore_index"], edges, none)
    assert_softmax_stats(st, exp, edges)
    assert st.num_bins == len(edges) - 1 and st.num_classes == C


@pytest.mark.parametrize("opt", ["plain", "ignore", "prob"])
def test_softmax_stats_with_label_smoothing_unambiguous_fields(opt, gen):
    x, t, kw = smx_case((60, C), opt, gen, DEFAULT_EDGES)
    loss, st = SMX(x, t, gamma=1.0, label_smoothing=0.1, return_stats=True, **kw)
    assert torch.equal(loss, SMX(x, t, gamma=1.0, label_smoothing=0.1, **kw))
    none = SMX(x, t, gamma=1.0, label_smoothing=0.1, reduction="none", **kw)
    exp = softmax_expected(x, t, kw["ignore_index"], DEFAULT_EDGES, none)
    assert_softmax_stats(st, exp, DEFAULT_EDGES,
                         keys=("count", "n_pos", "class_count", "sum_loss", "conf_count", "conf_sum", "correct_sum"))


def test_softmax_stats_hand_checked():
    # logits [0, ln 3] -> q = [1/4, 3/4]; logits [ln 4, 0] -> q = [4/5, 1/5]
    x = torch.tensor([[0.0, np.log(3.0)], [np.log(4.0), 0.0], [1.0, 1.0]])
    t = torch.tensor([0, 0, -100])
    _, st = SMX(x, t, gamma=0.0, return_stats=True, stat_bins=4)
    assert int(st.count) == 2 and int(st.n_pos) == 2
    assert abs(float(st.sum_pt) - (0.25 + 0.8)) < 1e-6
    # grad norm: 0.5 * (|1/4 - 1| + |3/4|) = 0.75 ; 0.5 * (|4/5 - 1| + 1/5) = 0.2
    assert abs(float(st.sum_grad_norm) - 0.95) < 1e-6
    assert st.pt_hist.tolist() == [0, 1, 0, 1]
    assert st.class_count.tolist() == [2, 0]
    # confidences 0.75 (bin 3, wrong) and 0.8 (bin 3, right)
    assert st.conf_count.tolist() == [0, 0, 0, 2]
    torch.testing.assert_close(st.conf_sum, torch.tensor([0.0, 0.0, 0.0, 1.55]))
    torch.testing.assert_close(st.correct_sum.float(), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert abs(float(st.sum_loss) - (np.log(4) + np.log(1.25))) < 1e-6


@pytest.mark.parametrize("opt", list(SMX_OPTS))
@pytest.mark.parametrize("shape", [(60, C), (3, C, 4, 5)], ids=["NC", "NCD"])
def test_softmax_stats_halves_add_up(opt, shape, gen):
    x, t, kw = smx_case(shape, opt, gen, DEFAULT_EDGES)
    h = shape[0] // 2
    whole = SMX(x, t, return_stats=True, **kw)[1]
    added = SMX(x[:h], t[:h], return_stats=True, **kw)[1] + SMX(x[h:], t[h:], return_stats=True, **kw)[1]
    assert_stats_added_equal(added, whole)


def test_softmax_stats_fully_ignored_and_empty():
    x = torch.randn(4, C)
    _, st = SMX(x, torch.full((4,), -100), return_stats=True)
    assert int(st.count) == 0 and int(st.pt_hist.sum()) == 0 and int(st.conf_count.sum()) == 0
    assert float(st.sum_pt) == 0 and float(st.sum_loss) == 0
    _, st = SMX(torch.zeros(0, C), torch.zeros(0, dtype=torch.long), return_stats=True)
    assert int(st.count) == 0 and st.class_count.shape == (C,)


def test_sigmoid_stats_fully_ignored_and_empty():
    _, st = SIG(torch.randn(4, 3), torch.full((4, 3), -1.0), ignore_index=-1, return_stats=True)
    assert int(st.count) == 0 and int(st.pt_hist.sum()) == 0 and float(st.sum_loss) == 0
    assert torch.isnan(st.class_mean_pt).all()
    _, st = SIG(torch.zeros(0, 3), torch.zeros(0, 3), return_stats=True)
    assert int(st.count) == 0 and st.class_count.shape == (3,)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_stats_dtypes_for_other_input_dtypes(dtype, gen):
    x, t, _ = sig_case((20, 3), "plain", gen, DEFAULT_EDGES)
    _, st = SIG(x.to(dtype), t.to(dtype), return_stats=True)
    assert st.count.dtype == torch.int64 and st.pt_hist.dtype == torch.int64
    assert st.sum_pt.dtype == torch.float32 and st.sum_loss.dtype == torch.float32
    _, st = SMX(x.to(dtype), torch.randint(0, 3, (20,), generator=gen), return_stats=True)
    assert st.count.dtype == torch.int64 and st.conf_count.dtype == torch.int64
    assert st.sum_pt.dtype == torch.float32


def test_module_return_stats(gen):
    x, t, kw = sig_case((30, 3), "ignore", gen, DEFAULT_EDGES)
    m = af.FocalLoss("sigmoid", gamma=1.5, ignore_index=-1.0, stat_bins=8)
    loss, st = m(x, t, return_stats=True)
    torch.testing.assert_close(loss, m(x, t))
    _, st2 = SIG(x, t, gamma=1.5, ignore_index=-1.0, stat_bins=8, return_stats=True)
    assert st.num_bins == 8
    for k in ("count", "pt_hist", "class_count"):
        assert torch.equal(getattr(st, k), getattr(st2, k))


@pytest.mark.parametrize("n", [1, 40000], ids=["small", "large"])
def test_histogram_edge_semantics(n):
    """p_t = 0 -> first bin, p_t = 0.5 -> the bin starting at 0.5, p_t = 1 -> last bin (closed)."""
    x = torch.tensor([-1e4, 0.0, 1e4]).repeat(n)
    t = torch.ones(3 * n)
    _, st = SIG(x, t, return_stats=True, stat_bins=4)
    assert st.pt_hist.tolist() == [n, 0, n, n]
    tbl = af.GammaTable(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([1.0, 2.0]))
    _, st = SIG(x, t, gamma=tbl, return_stats=True)
    assert st.pt_hist.tolist() == [n, 2 * n]


def test_default_edges_are_shared_and_rebuilt_after_an_in_place_change(gen):
    # every BatchStats of a run shares one edges tensor; changing it in place must not leak into later batches
    x, t = torch.randn(6, 3, generator=gen), (torch.rand(6, 3, generator=gen) < 0.5).float()
    _, a = SIG(x, t, return_stats=True)
    _, b = SIG(x, t, return_stats=True)
    assert a.edges is b.edges and torch.equal(a.edges, torch.linspace(0, 1, 16))
    a.edges.mul_(2.0)
    _, c = SIG(x, t, return_stats=True)
    assert c.edges is not a.edges and torch.equal(c.edges, torch.linspace(0, 1, 16))
    assert torch.equal(c.pt_hist, b.pt_hist)


# --------------------------------------------------------------------------------------------
# the mode
# --------------------------------------------------------------------------------------------


def test_stats_know_their_mode(gen):
    x, t, _ = sig_case((20, 3), "plain", gen, DEFAULT_EDGES)
    sig = SIG(x, t, return_stats=True)[1]
    smx = SMX(x, torch.randint(0, 3, (20,), generator=gen), return_stats=True)[1]
    assert (sig.mode, smx.mode) == ("sigmoid", "softmax")
    assert (sig + sig).mode == "sigmoid" and (smx + smx).mode == "softmax"
    assert sig.to("cpu").mode == "sigmoid" and sum([smx, smx]).mode == "softmax"
    assert af.BatchStats.from_state_dict(sig.state_dict()).mode == "sigmoid"
    with pytest.raises(ValueError, match="cannot add sigmoid and softmax BatchStats"):
        sig + smx
    with pytest.raises(ValueError, match="mode must be one of 'sigmoid', 'softmax', got 'binary'"):
        af.BatchStats(**{**sig.state_dict(), "mode": "binary"})


def test_stats_without_a_mode_read_it_from_their_fields(gen):
    """States saved before BatchStats had a mode, and code that builds BatchStats by hand, still work: softmax
    statistics had the confidence bins and no per-class gradient sums, sigmoid statistics the opposite."""
    x, t, _ = sig_case((20, 3), "plain", gen, DEFAULT_EDGES)
    old_sigmoid = {k: v for k, v in SIG(x, t, return_stats=True)[1].state_dict().items()
                   if k != "mode" and not k.startswith(("conf_", "correct_", "class_conf_", "class_correct_"))}
    old_softmax = {k: v for k, v in SMX(x, torch.randint(0, 3, (20,), generator=gen), return_stats=True)[1]
                   .state_dict().items() if k not in ("mode", "class_sum_grad_pos", "class_sum_grad_neg")}
    assert af.BatchStats.from_state_dict(old_sigmoid).mode == "sigmoid"
    assert af.BatchStats.from_state_dict(old_softmax).mode == "softmax"
    minimal = {k: old_sigmoid[k] for k in ("edges", "count", "n_pos", "sum_pt", "sum_loss", "sum_grad_norm",
                                           "pt_hist", "class_count", "class_sum_pt")}
    assert af.BatchStats(**minimal).mode == "sigmoid"
    assert af.BatchStats(**minimal, mode="softmax").mode == "softmax"


# --------------------------------------------------------------------------------------------
# sigmoid confidence bins
# --------------------------------------------------------------------------------------------

CONF_CASES = {  # logit, raw target -> (confidence, correct); 4 bins [0, .25, .5, .75, 1]
    "right positive": (math.log(3.0), 1.0, 0.75, 1.0),
    "wrong positive": (-math.log(3.0), 1.0, 0.75, 0.0),
    "right negative": (-math.log(9.0), 0.0, 0.9, 1.0),
    "tie": (0.0, 0.0, 0.5, 1.0),  # p = 1/2: correct whatever the target
    "soft target, its label 1": (math.log(4.0), 0.5, 0.8, 1.0),
    "soft target, its label 0": (math.log(4.0), 0.3, 0.8, 0.0),
    "+inf": (math.inf, 0.0, 1.0, 0.0),
    "-inf": (-math.inf, 0.0, 1.0, 1.0),
}


@pytest.mark.parametrize("path", ["pytorch", "c_pass", "kernel"])
def test_sigmoid_confidence_bins_hand_checked(path, monkeypatch):
    """Each element a binary prediction: confidence max(p, 1 - p), correct when the logit's sign agrees with the
    raw target read as a label (label smoothing does not change it); ignored elements are left out."""
    if path != "pytorch" and not af._kernels.kernel_available("cpu"):
        pytest.skip("no C compiler for the CPU kernel")
    if path == "pytorch":
        monkeypatch.setattr(af.functional, "_sigmoid_stats_kernel_fits", lambda *args: False)
    xs, ts, conf, correct = (list(v) for v in zip(*CONF_CASES.values()))
    x, t = torch.tensor(xs + [5.0]), torch.tensor(ts + [-1.0])  # the last one is ignored
    reps = af._kernels.MIN_NUMEL // x.numel() + 1 if path == "kernel" else 1
    x, t = x.repeat(reps, 1), t.repeat(reps, 1)  # (reps, cases): class c is case c
    _, st = SIG(x, t, ignore_index=-1.0, label_smoothing=0.2, return_stats=True, stat_bins=4)
    bins = [min(int(c * 4), 3) for c in conf]  # .5 -> bin 2, .75 -> bin 3, 1 -> bin 3 (closed)
    c = len(conf)
    want_count = torch.zeros(c + 1, 4, dtype=torch.int64)
    want_conf, want_correct = torch.zeros(c + 1, 4), torch.zeros(c + 1, 4)
    for i, (b, cf, ok) in enumerate(zip(bins, conf, correct)):
        want_count[i, b], want_conf[i, b], want_correct[i, b] = reps, reps * cf, reps * ok
    assert torch.equal(st.class_conf_count, want_count)
    torch.testing.assert_close(st.class_conf_sum, want_conf, rtol=1e-6, atol=1e-4)
    assert torch.equal(st.class_correct_sum, want_correct)
    assert torch.equal(st.conf_count, want_count.sum(0))
    torch.testing.assert_close(st.conf_sum, want_conf.sum(0), rtol=1e-6, atol=1e-3)
    assert torch.equal(st.correct_sum, want_correct.sum(0))


# --------------------------------------------------------------------------------------------
# the sigmoid confidence bins are opt-in (confidence_stats)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", 1, 0, None, 1.0, torch.tensor(True), np.bool_(True)],
                         ids=["str", "one", "zero", "None", "float", "tensor", "numpy"])
def test_confidence_stats_must_be_a_bool(value, gen):
    x, t = torch.randn(6, 3, generator=gen), (torch.rand(6, 3, generator=gen) < 0.5).float()
    y = torch.randint(0, 3, (6,), generator=gen)
    message = f"confidence_stats must be True or False, got {value!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        af.sigmoid_focal_loss(x, t, return_stats=True, confidence_stats=value)
    with pytest.raises(ValueError, match="confidence_stats must be True or False"):
        af.sigmoid_focal_loss(x, t, confidence_stats=value)  # checked even without return_stats
    with pytest.raises(ValueError, match="confidence_stats must be True or False"):
        af.softmax_focal_loss(x, y, return_stats=True, confidence_stats=value)
    for mode in ("sigmoid", "softmax"):
        with pytest.raises(ValueError, match="confidence_stats must be True or False"):
            af.FocalLoss(mode, confidence_stats=value)
    loss = af.FocalLoss("sigmoid")
    loss.confidence_stats = value
    with pytest.raises(ValueError, match="confidence_stats must be True or False"):
        loss(x, t, return_stats=True)


@pytest.mark.parametrize("path", ["pytorch", "c_pass", "kernel"])
def test_confidence_stats_off_by_default_on_every_path(path, gen, monkeypatch):
    """Off (the default) the confidence fields are None, on they are there; every other field and the loss are the
    same bit for bit (the values against the reference: _check_sigmoid_stats, which runs both)."""
    if path != "pytorch" and not af._kernels.kernel_available("cpu"):
        pytest.skip("no C compiler")
    if path == "pytorch":
        monkeypatch.setattr(af.functional, "_sigmoid_stats_kernel_fits", lambda *args: False)
    shape = (2048, 40) if path == "kernel" else (30, 4)
    x = torch.randn(shape, generator=gen) * 3
    t = torch.where(torch.rand(shape, generator=gen) < 0.1, -1.0, (torch.rand(shape, generator=gen) < 0.2).float())
    kw = dict(gamma=1.5, alpha=0.25, ignore_index=-1.0, return_stats=True)
    loss_off, off = af.sigmoid_focal_loss(x, t, **kw)
    loss_on, on = af.sigmoid_focal_loss(x, t, confidence_stats=True, **kw)
    assert torch.equal(loss_off, loss_on)
    assert_same_without_confidence(off, on)
    assert_same_without_confidence(af.FocalLoss("sigmoid", gamma=1.5, alpha=0.25, ignore_index=-1.0)(
        x, t, return_stats=True)[1], af.FocalLoss("sigmoid", gamma=1.5, alpha=0.25, ignore_index=-1.0,
                                                   confidence_stats=True)(x, t, return_stats=True)[1])


def test_confidence_stats_with_a_mixture_gamma(gen):
    """A FocalMixture of several terms runs the loss once per term: the flag reaches each."""
    x, t = torch.randn(20, 3, generator=gen), (torch.rand(20, 3, generator=gen) < 0.3).float()
    mix = af.FocalMixture([2.0, -1.0], [0.7, 0.3])
    loss_off, off = af.sigmoid_focal_loss(x, t, gamma=mix, return_stats=True)
    loss_on, on = af.sigmoid_focal_loss(x, t, gamma=mix, return_stats=True, confidence_stats=True)
    assert torch.equal(loss_off, loss_on)
    assert_same_without_confidence(off, on)
    assert int(on.conf_count.sum()) == 60


def test_softmax_confidence_stats_changes_nothing(gen):
    x, y = torch.randn(20, 4, generator=gen), torch.randint(0, 4, (20,), generator=gen)
    _, default = SMX(x, y, return_stats=True)
    for value in (False, True):
        _, st = SMX(x, y, return_stats=True, confidence_stats=value)
        for f in dataclasses.fields(af.BatchStats):
            a, b = getattr(st, f.name), getattr(default, f.name)
            assert (a is None and b is None) or (isinstance(a, str) and a == b) or torch.equal(a, b), f.name
        assert st.conf_count is not None and int(st.conf_count.sum()) == 20


def test_stats_without_confidence_bins_combine_move_and_save(tmp_path, gen):
    """Sigmoid statistics without the bins, as softmax statistics lack the gradient sums: None through addition,
    sum(), .to(), state_dict / from_state_dict and all_reduce; adding statistics with and without them gives None
    there (the bins of one addend only would not describe the sum)."""
    import torch.distributed as dist
    x, t = torch.randn(40, 3, generator=gen), (torch.rand(40, 3, generator=gen) < 0.3).float()
    halves = [SIG_PLAIN(x[s], t[s], return_stats=True)[1] for s in (slice(0, 20), slice(20, 40))]
    whole_on = SIG(x, t, return_stats=True)[1]
    total = sum(halves)
    assert total.mode == "sigmoid" and all(getattr(total, f) is None for f in CONF_FIELDS)
    assert int(total.count) == 120 and torch.equal(total.pt_hist, whole_on.pt_hist)
    mixed = halves[0] + SIG(x[20:], t[20:], return_stats=True)[1]
    assert all(getattr(mixed, f) is None for f in CONF_FIELDS) and torch.equal(mixed.pt_hist, whole_on.pt_hist)
    moved = total.to("cpu")
    assert moved.mode == "sigmoid" and all(getattr(moved, f) is None for f in CONF_FIELDS)
    state = total.state_dict()
    assert all(state[f] is None for f in CONF_FIELDS) and state["mode"] == "sigmoid"
    back = af.BatchStats.from_state_dict(state)
    assert back.mode == "sigmoid" and all(getattr(back, f) is None for f in CONF_FIELDS)
    assert torch.equal(back.class_sum_grad_pos, total.class_sum_grad_pos)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        reduced = total.all_reduce()  # packs the present fields into one buffer and unpacks them
    finally:
        dist.destroy_process_group()
    assert reduced is not total and reduced.mode == "sigmoid"
    assert all(getattr(reduced, f) is None for f in CONF_FIELDS)
    for f in ("count", "pt_hist", "class_count", "sum_pt", "class_sum_grad_neg"):
        assert torch.equal(getattr(reduced, f), getattr(total, f)), f
