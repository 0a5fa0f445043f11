"""adaptive_focal.FocalLoss: buffers, state_dict, .to(), in-place gamma updates, torch.compile."""
import copy
import io

import pytest
import torch

import adaptive_focal as af
from helpers.reference import ref_sigmoid, ref_softmax

SIG = af.sigmoid_focal_loss
SMX = af.softmax_focal_loss
C = 3


def data(mode, gen, n=8, dtype=torch.float32, ignore=False):
    x = (torch.randn(n, C, generator=gen) * 2).to(dtype)
    if mode == "sigmoid":
        t = (torch.rand(n, C, generator=gen) < 0.5).to(dtype)
        if ignore:
            t[0, 1] = -1.0
    else:
        t = torch.randint(0, C, (n,), generator=gen)
        if ignore:
            t[1] = -100
    return x, t


def table(per_class=False):
    if per_class:
        v = torch.tensor([[3.0, 1.0, 0.5], [2.0, 2.0, 0.0], [1.0, -1.0, 4.0]])
    else:
        v = torch.tensor([3.0, 1.0, 0.5])
    return af.GammaTable(torch.tensor([0.0, 0.3, 0.7, 1.0]), v)


# ---------------------------------------------------------------------------- forward == functional


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("gform", ["float", "per_class", "table", "table_cb", "neg"])
@pytest.mark.parametrize("opts", ["plain", "all"])
def test_forward_equals_functional(mode, reduction, gform, opts, gen):
    g = {"float": 2.0, "per_class": torch.tensor([0.5, 1.0, 2.0]), "table": table(), "table_cb": table(True),
         "neg": -1.0}[gform]
    kw = {}
    if opts == "all":
        kw = dict(alpha=0.25 if mode == "sigmoid" else torch.tensor([0.2, 0.5, 0.8]),
                  weight=torch.rand(C, generator=gen) + 0.5, label_smoothing=0.1,
                  ignore_index=-1.0 if mode == "sigmoid" else -100)
    m = af.FocalLoss(mode=mode, gamma=copy.deepcopy(g), reduction=reduction, **kw)
    x, t = data(mode, gen, ignore=opts == "all")
    fn = SIG if mode == "sigmoid" else SMX
    torch.testing.assert_close(m(x, t), fn(x, t, gamma=copy.deepcopy(g), reduction=reduction, **kw))


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
def test_default_ignore_index_per_mode(mode, gen):
    x, t = data(mode, gen)
    m = af.FocalLoss(mode=mode)
    if mode == "softmax":
        t[0] = -100  # default ignore_index of softmax
        torch.testing.assert_close(m(x, t), SMX(x, t))
        torch.testing.assert_close(m(x, t), torch.as_tensor(ref_softmax(x, t, 2.0)).float())
    else:
        # sigmoid: ignore_index None by default, nothing is ignored
        torch.testing.assert_close(m(x, t), ref_sigmoid(x, t, 2.0).float())


def test_detach_modulator_module(gen):
    x, t = data("sigmoid", gen)
    m = af.FocalLoss("sigmoid", gamma=2.0, detach_modulator=True)
    xx = x.clone().requires_grad_(True)
    m(xx, t).backward()
    x2 = x.clone().requires_grad_(True)
    SIG(x2, t, gamma=2.0, detach_modulator=True).backward()
    torch.testing.assert_close(xx.grad, x2.grad)


# ---------------------------------------------------------------------------- gamma buffer


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
@pytest.mark.parametrize("g", [2.0, 0.0, -1.0, "t0d", "per_class"])
def test_gamma_is_float32_buffer_in_state_dict(mode, g):
    gv = {"t0d": torch.tensor(1.5, dtype=torch.float64), "per_class": torch.tensor([1.0, 2.0, 3.0])}.get(g, g)
    m = af.FocalLoss(mode=mode, gamma=gv)
    assert isinstance(m.gamma, torch.Tensor)
    assert m.gamma.dtype == torch.float32
    assert "gamma" in dict(m.named_buffers())
    sd = m.state_dict()
    assert "gamma" in sd
    torch.testing.assert_close(sd["gamma"], torch.as_tensor(gv, dtype=torch.float32))
    # a parameter-free loss
    assert len(list(m.parameters())) == 0


def test_gamma_moves_with_to():
    m = af.FocalLoss("sigmoid", gamma=2.0)
    m64 = m.to(torch.float64)
    assert m64.gamma.dtype == torch.float64
    m.to("cpu")
    assert m.gamma.device.type == "cpu"
    mm = af.FocalLoss("softmax", gamma=torch.tensor([1.0, 2.0, 3.0])).to("meta")
    assert mm.gamma.device.type == "meta"


def test_float64_module_on_float64_input(gen):
    m = af.FocalLoss("sigmoid", gamma=2.0, alpha=0.25).to(torch.float64)
    x, t = data("sigmoid", gen, dtype=torch.float64)
    torch.testing.assert_close(m(x, t), ref_sigmoid(x, t, 2.0, alpha=0.25), rtol=1e-10, atol=1e-12)


def test_module_float32_gamma_on_half_input(gen):
    m = af.FocalLoss("sigmoid", gamma=2.0)
    x, t = data("sigmoid", gen)
    out = m(x.half(), t.half())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, SIG(x.half().float(), t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
def test_inplace_gamma_update_changes_result(mode, gen):
    x, t = data(mode, gen)
    fn = SIG if mode == "sigmoid" else SMX
    m = af.FocalLoss(mode=mode, gamma=2.0)
    a = m(x, t)
    torch.testing.assert_close(a, fn(x, t, gamma=2.0))
    with torch.no_grad():
        m.gamma.fill_(3.0)
    b = m(x, t)
    torch.testing.assert_close(b, fn(x, t, gamma=3.0))
    assert not torch.allclose(a, b)
    with torch.no_grad():
        m.gamma.fill_(0.0)
    torch.testing.assert_close(m(x, t), fn(x, t, gamma=0.0))


def test_inplace_per_class_gamma_update(gen):
    x, t = data("sigmoid", gen)
    m = af.FocalLoss("sigmoid", gamma=torch.tensor([1.0, 2.0, 3.0]))
    with torch.no_grad():
        m.gamma[1] = -0.5
    torch.testing.assert_close(m(x, t), SIG(x, t, gamma=torch.tensor([1.0, -0.5, 3.0])))


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
def test_load_state_dict_gamma(mode, gen):
    x, t = data(mode, gen)
    a = af.FocalLoss(mode=mode, gamma=0.7)
    b = af.FocalLoss(mode=mode, gamma=2.0)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x, t), a(x, t))


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
@pytest.mark.parametrize("per_class", [False, True])
def test_gamma_table_round_trips_through_state_dict(mode, per_class, gen):
    x, t = data(mode, gen, n=32)
    a = af.FocalLoss(mode=mode, gamma=table(per_class))
    assert isinstance(a.gamma, af.GammaTable)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf)
    # a module with a table of the same shape but other edges / values
    other_v = torch.full((C, 3), 9.0) if per_class else torch.full((3,), 9.0)
    b = af.FocalLoss(mode=mode, gamma=af.GammaTable(torch.tensor([0.0, 0.5, 0.9, 1.0]), other_v))
    assert not torch.allclose(a(x, t), b(x, t))
    b.load_state_dict(sd)
    torch.testing.assert_close(b(x, t), a(x, t))
    fn = SIG if mode == "sigmoid" else SMX
    torch.testing.assert_close(b(x, t), fn(x, t, gamma=table(per_class)))
    _, st = b(x, t, return_stats=True)
    torch.testing.assert_close(st.edges, torch.tensor([0.0, 0.3, 0.7, 1.0]))


def test_deepcopy_is_independent(gen):
    x, t = data("sigmoid", gen)
    m = af.FocalLoss("sigmoid", gamma=2.0)
    m2 = copy.deepcopy(m)
    with torch.no_grad():
        m2.gamma.fill_(1.0)
    torch.testing.assert_close(m(x, t), SIG(x, t, gamma=2.0))
    torch.testing.assert_close(m2(x, t), SIG(x, t, gamma=1.0))


# ---------------------------------------------------------------------------- torch.compile


def _val_grad(f, x, t, **kw):
    xx = x.clone().requires_grad_(True)
    out = f(xx, t, **kw)
    out.backward()
    return out.detach(), xx.grad


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
@pytest.mark.parametrize("n", [8, 2048 * 64 // C], ids=["small", "large"])
def test_compile_gamma_update_does_not_recompile(mode, n, gen):
    from torch._dynamo.testing import CompileCounter
    torch._dynamo.reset()
    x, t = data(mode, gen, n=n)
    m = af.FocalLoss(mode=mode, gamma=2.0)
    cnt = CompileCounter()
    f = torch.compile(m, backend=cnt)
    fn = SIG if mode == "sigmoid" else SMX
    # every call with an input that requires grad (a requires_grad change is a legitimate recompile)
    for i, g in enumerate([2.0, 3.0, 0.5, 0.0, 2.0]):
        with torch.no_grad():
            m.gamma.fill_(g)
        out, grad = _val_grad(f, x, t)
        ref, rgrad = _val_grad(lambda a, b, g=g: fn(a, b, gamma=g), x, t)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(grad, rgrad)
        if i == 0:
            frames = cnt.frame_count
            assert frames >= 1
    assert cnt.frame_count == frames, f"recompiled: {frames} -> {cnt.frame_count}"
    torch._dynamo.reset()


@pytest.mark.slow
def test_compile_inductor_gamma_update_does_not_recompile(gen):
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    x, t = data("sigmoid", gen, n=16)
    m = af.FocalLoss("sigmoid", gamma=2.0, alpha=0.25)
    f = torch.compile(m)
    out, grad = _val_grad(f, x, t)
    ref, rgrad = _val_grad(lambda a, b: SIG(a, b, gamma=2.0, alpha=0.25), x, t)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, rgrad)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    with torch.no_grad():
        m.gamma.fill_(3.0)
    out, grad = _val_grad(f, x, t)
    ref, rgrad = _val_grad(lambda a, b: SIG(a, b, gamma=3.0, alpha=0.25), x, t)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, rgrad)
    assert counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()
