"""The fused sigmoid kernel as a torch.library custom op: registration, compile-friendliness, fallbacks."""

import os
import subprocess
import sys

import pytest
import torch

import adaptive_focal as af
from adaptive_focal._kernels import MIN_NUMEL, kernel_available

pytestmark = pytest.mark.skipif(not kernel_available("cpu"), reason="no C compiler for the CPU kernel")

OP = torch.ops.adaptive_focal.sigmoid_focal.default


def _args(kind: str):
    """Op arguments; the last three are need_elementwise, need_stats and need_conf (the confidence bins)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 6, 5, generator=g, requires_grad=True)
    t = (torch.rand(16, 6, 5, generator=g) < 0.3).float()
    edges = torch.linspace(0, 1, 16)
    if kind == "scalar":
        return (x, t, torch.tensor(2.0), 0, None, None, None, None, 0.0, False, edges, True, True, True)
    if kind == "no_conf":
        return (x, t, torch.tensor(2.0), 0, None, None, None, None, 0.0, False, edges, True, True, False)
    if kind == "per_class":
        return (x, t, torch.rand(6, generator=g), 1, None, torch.rand(6, generator=g), None, None, 0.1, False,
                edges, False, True, True)
    if kind == "full":
        return (x, t, torch.rand(16, 6, 5, generator=g), 2, None, None, torch.rand(16, 6, 5, generator=g), None,
                0.0, True, edges, True, False, False)
    t = t.clone()
    t[0, :, 0] = -1.0
    return (x, t, torch.rand(6, 3, generator=g), 3, torch.tensor([0.0, 0.2, 0.5, 1.0]), None, None, -1.0, 0.0,
            False, edges, True, True, True)


@pytest.mark.parametrize("kind", ["scalar", "no_conf", "per_class", "full", "table"])
def test_opcheck(kind):
    torch.library.opcheck(OP, _args(kind))


def test_accumulator_without_confidence_bins_is_the_prefix_of_the_one_with_them():
    """need_conf only appends the confidence bins: the statistics before them are the same, bit for bit, and the
    fake implementation gives each length."""
    from adaptive_focal._kernels.layout import acc_len, conf_offset

    args = _args("scalar")
    x = args[0].detach()
    _, acc_on, grad_on = OP(x, *args[1:-1], True)
    elem_off, acc_off, grad_off = OP(x, *args[1:-1], False)
    assert acc_on.shape == (acc_len(6, 15, True),) and acc_off.shape == (acc_len(6, 15, False),)
    assert acc_off.shape == (conf_offset(6, 15),)
    assert torch.equal(acc_off, acc_on[:conf_offset(6, 15)]) and torch.equal(grad_off, grad_on)
    assert int(acc_on[conf_offset(6, 15):conf_offset(6, 15) + 15].sum()) == x.numel()  # conf_count


@pytest.mark.parametrize("confidence", [False, True])
def test_compiled_statistics_with_and_without_confidence_bins(confidence):
    """Traced with the op's fake implementation (whose accumulator length follows need_conf), fullgraph."""
    torch._dynamo.reset()
    x = torch.randn(MIN_NUMEL // 32, 32)
    t = (torch.rand_like(x) < 0.05).float()

    def step(x, t):
        loss, stats = af.sigmoid_focal_loss(x, t, return_stats=True, confidence_stats=confidence)
        return loss, stats.pt_hist, stats.class_sum_pt, stats.conf_count

    got = torch.compile(step, backend="aot_eager", fullgraph=True)(x, t)
    want = step(x, t)
    assert (got[3] is None) == (want[3] is None) == (not confidence)
    for a, b in zip(got, want):
        assert (a is None and b is None) or torch.equal(a, b)


def test_large_inputs_dispatch_to_the_op(monkeypatch):
    calls = []
    real = torch.ops.adaptive_focal.sigmoid_focal

    class Spy:
        def __call__(self, *a):
            calls.append(a[0].shape)
            return real(*a)

    monkeypatch.setattr(torch.ops.adaptive_focal, "sigmoid_focal", Spy())
    x = torch.randn(MIN_NUMEL // 8, 8)
    af.sigmoid_focal_loss(x, torch.zeros_like(x))
    assert calls == [torch.Size([MIN_NUMEL // 8, 8, 1])]
    af.sigmoid_focal_loss(x[:10], torch.zeros_like(x[:10]))  # small: pure PyTorch
    assert len(calls) == 1


def test_fullgraph_compile_without_recompiling_for_new_gamma():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    criterion = af.FocalLoss("sigmoid", gamma=2.0, alpha=0.25)
    compiled = torch.compile(criterion, backend=counter, fullgraph=True)
    x = torch.randn(MIN_NUMEL // 64, 64, requires_grad=True)
    t = (torch.rand_like(x) < 0.05).float()
    for gamma in (2.0, 1.0, 0.5):
        criterion.gamma = gamma
        got = compiled(x, t)
        want = af.sigmoid_focal_loss(x, t, gamma=gamma, alpha=0.25)
        torch.testing.assert_close(got, want)
    assert counter.frame_count == 1


@pytest.fixture
def no_compile_caches():
    """Inductor's caches key a graph by its code, not by the op's fake outputs: a graph compiled against another
    version of the kernel contract (its accumulator's length) would be reused, with that version's sizes."""
    import torch._functorch.config
    import torch._inductor.config

    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(
            enable_autograd_cache=False):
        yield


@pytest.mark.usefixtures("no_compile_caches")
def test_inductor_compiles_around_the_op():
    torch._dynamo.reset()
    x = torch.randn(MIN_NUMEL // 32, 32, requires_grad=True)
    t = (torch.rand_like(x) < 0.05).float()
    gamma = torch.tensor(1.5)

    def step(x, t, gamma):
        return af.sigmoid_focal_loss(x * 2.0, t, gamma=gamma) + x.square().mean()

    compiled = torch.compile(step, fullgraph=True)
    got = compiled(x, t, gamma)
    (g_got,) = torch.autograd.grad(got, x)
    want = step(x, t, gamma)
    (g_want,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g_got, g_want)


def _run_child(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)


CHILD = (
    "import torch, warnings, adaptive_focal as af\n"
    "from adaptive_focal._kernels import cpu, MIN_NUMEL\n"
    "torch.manual_seed(0)\n"
    "x = torch.randn(MIN_NUMEL // 16, 16); t = (torch.rand_like(x) < 0.1).float()\n"
    "with warnings.catch_warnings(record=True) as w:\n"
    "    warnings.simplefilter('always')\n"
    "    loss = af.sigmoid_focal_loss(x, t, gamma=0.5)\n"
    "print(cpu.available(), repr(loss.item()), len(w), w[0].message if w else '')\n"
)


def test_disabled_kernel_falls_back_to_the_same_result(tmp_path):
    fast = _run_child(CHILD, ADAPTIVE_FOCAL_CACHE=str(tmp_path))
    slow = _run_child(CHILD, ADAPTIVE_FOCAL_CPU_KERNEL="0")
    assert fast.returncode == 0 and slow.returncode == 0, fast.stderr + slow.stderr
    f_avail, f_loss, f_warn = fast.stdout.split()[:3]
    s_avail, s_loss, s_warn = slow.stdout.split()[:3]
    assert (f_avail, s_avail) == ("True", "False")
    assert (f_warn, s_warn) == ("0", "0")
    assert float(f_loss) == pytest.approx(float(s_loss), rel=1e-5)


def test_broken_compiler_warns_once_and_falls_back(tmp_path):
    out = _run_child(CHILD, ADAPTIVE_FOCAL_CACHE=str(tmp_path), CC="/bin/false")
    assert out.returncode == 0, out.stderr
    avail, _, n_warnings = out.stdout.split()[:3]
    assert avail == "False" and n_warnings == "1"
    assert "pure-PyTorch" in out.stdout
    assert list(tmp_path.iterdir()) == []  # no half-written library left in the cache


SMALL_CHILD = (
    "import torch, adaptive_focal as af\n"
    "from adaptive_focal._kernels import cpu\n"
    "x = torch.randn(64, 10); y = torch.randint(0, 10, (64,)); t = (torch.rand(64, 10) < 0.2).float()\n"
    "af.softmax_focal_loss(x, y, return_stats=True)\n"
    "af.sigmoid_focal_loss(x, t, return_stats=True)\n"
    "af.FocalLoss('softmax')(x, y, return_stats=True)\n"
    "print(cpu.compile_seconds, cpu._lib is None)\n"
)


def test_small_inputs_never_build_the_kernel(tmp_path):
    """Small inputs, with statistics too, use the compiled library only when it is already built."""
    out = _run_child(SMALL_CHILD, ADAPTIVE_FOCAL_CACHE=str(tmp_path / "cache"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "True"]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("kind", ["scalar", "per_class", "full", "table"])
def test_stats_only_call_matches_the_full_kernel_and_reuses_its_buffers(kind):
    # the small-input statistics pass writes into per-thread scratch buffers: same accumulator as the full call,
    # whatever size ran before it, and calls of other sizes do not disturb a converted result
    from adaptive_focal._kernels import cpu

    x, t, gamma, kind_id, table_edges, alpha, weight, ignore, ls, detach, edges, _, _, _ = _args(kind)
    x = x.detach()
    negative = bool((gamma < 0).any())
    _, _, full = cpu.sigmoid_focal_forward(x, t, gamma, kind_id, table_edges, alpha, weight, ignore, ls, detach,
                                          edges, False, True, True, negative)
    _, _, full_off = cpu.sigmoid_focal_forward(x, t, gamma, kind_id, table_edges, alpha, weight, ignore, ls,
                                              detach, edges, False, True, False, negative)
    small = torch.randn(2, 6, 1), torch.ones(2, 6, 1)
    for before in (None, small, (torch.randn(40, 6, 9), torch.zeros(40, 6, 9))):
        if before is not None:  # another size first: the scratch buffers must not leak into this call
            cpu.sigmoid_focal_stats(before[0], before[1], torch.tensor(1.0), 0, None, None, None, None, 0.0, False,
                                    edges, False, True)
        acc = cpu.sigmoid_focal_stats(x, t, gamma, kind_id, table_edges, alpha, weight, ignore, ls, detach, edges,
                                      negative, False)
        assert torch.equal(acc, full_off)
        acc = cpu.sigmoid_focal_stats(x, t, gamma, kind_id, table_edges, alpha, weight, ignore, ls, detach, edges,
                                      negative, True)
        assert torch.equal(acc, full)
    kept = acc.clone()
    cpu.sigmoid_focal_stats(*small, torch.tensor(1.0), 0, None, None, None, None, 0.0, False, edges, False, True)
    assert not torch.equal(acc, kept)  # overwritten: callers convert it at once
    with pytest.raises(ValueError, match="inputs under 32768 elements"):
        big = torch.zeros(1 << 15, 1, 1)
        cpu.sigmoid_focal_stats(big, big, torch.tensor(1.0), 0, None, None, None, None, 0.0, False, edges, False,
                                True)
