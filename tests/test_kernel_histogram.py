"""The p_t histogram of the statistics at and next to bin edges, on the pure-PyTorch path and the fused CPU kernel
(whose AVX-512 build bins by formula and lookups rather than by comparing with every edge), and the kernel's
portable build against this one.

Bin b holds ``edges[b] <= p_t < edges[b + 1]``, the last bin closed: ``torch.bucketize(p_t, edges[1:-1],
right=True)``. At logit 100, p = sigmoid(100) is exactly 1 in float32 on both paths, so p_t = t exactly for a soft
target t: such targets put p_t exactly on every edge and one float32 step to either side of it.
"""

import math
import os
import subprocess
import sys

import pytest
import torch

import adaptive_focal as af
from adaptive_focal._kernels import MIN_NUMEL, kernel_available
from adaptive_focal.stats import default_edges

SIG = af.sigmoid_focal_loss
KERNEL = kernel_available("cpu")
needs_kernel = pytest.mark.skipif(not KERNEL, reason="no C compiler for the CPU kernel")

TABLE_EDGES = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.8, 1.0])  # not equal-width: the kernel's general binning
EDGE_SETS = {  # name: (stat_bins, GammaTable edges or None)
    "bins15": (15, None), "bins16": (16, None), "bins4": (4, None), "bins1": (1, None),
    "bins17": (17, None), "bins32": (32, None),  # more than 16 bins: the kernel's per-edge counting
    "table": (None, TABLE_EDGES),
}


def expected_hist(pt: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    idx = torch.bucketize(pt, edges[1:-1].to(pt.dtype), right=True)
    return torch.bincount(idx, minlength=edges.numel() - 1)


def edges_and_kwargs(name):
    bins, table = EDGE_SETS[name]
    if table is None:
        return default_edges(bins), dict(gamma=2.0, stat_bins=bins)
    values = torch.linspace(3.0, 0.0, table.numel() - 1)
    return table, dict(gamma=af.GammaTable(table, values))


def on_and_around(edges: torch.Tensor) -> torch.Tensor:
    """Every edge, and the float32 values one step below and above it, within [0, 1]."""
    e = edges.to(torch.float32)
    vals = torch.cat([e, torch.nextafter(e, torch.tensor(-1.0)), torch.nextafter(e, torch.tensor(2.0))])
    return vals[(vals >= 0) & (vals <= 1)].unique()


@pytest.mark.parametrize("size", ["small", pytest.param("large", marks=needs_kernel)])
@pytest.mark.parametrize("name", list(EDGE_SETS))
def test_p_t_exactly_on_edges(name, size):
    edges, kw = edges_and_kwargs(name)
    vals = on_and_around(edges)
    n = 2 * MIN_NUMEL if size == "large" else 8 * vals.numel()
    t = vals.repeat(n // vals.numel() + 1)[:n].reshape(-1, 8).clone()
    t.view(-1)[::11] = -1.0  # ignored elements stay out of the histogram
    x = torch.full_like(t, 100.0)
    _, st = SIG(x, t, ignore_index=-1.0, return_stats=True, **kw)
    valid = t != -1.0
    torch.testing.assert_close(st.edges, edges.float())
    assert torch.equal(st.pt_hist, expected_hist(t[valid], edges))  # p_t = t exactly
    assert int(st.count) == int(valid.sum()) == int(st.pt_hist.sum())
    torch.testing.assert_close(st.sum_pt.double(), t[valid].double().sum(), rtol=1e-6, atol=1e-6)


OP = torch.ops.adaptive_focal.sigmoid_focal.default


def kernel_pt(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The kernel's float32 p_t of each element: with an input of shape (1, K, 1) every element is a class of its
    own, so its class_sum_pt (a sum of one term) is its p_t exactly."""
    k = x.numel()
    _, acc, _ = OP(x.reshape(1, k, 1).contiguous(), t.reshape(1, k, 1).contiguous(), torch.tensor(2.0), 0, None,
                   None, None, None, 0.0, False, torch.tensor([0.0, 1.0]), False, True, False)
    return acc[6 + k:6 + 2 * k].to(torch.float32)  # layout: _kernels/__init__.py, with B = 1


def logits_around(p: float, steps: int = 48) -> torch.Tensor:
    """The float32 logits within `steps` float32 steps of logit(p) (0 < p < 1, p != 1/2)."""
    x0 = torch.tensor(math.log(p / (1.0 - p)), dtype=torch.float32)
    return (x0.view(torch.int32) + torch.arange(-steps, steps + 1, dtype=torch.int32)).view(torch.float32)


@needs_kernel
@pytest.mark.parametrize("name", ["bins15", "bins16", "bins32", "table"])
def test_hard_targets_next_to_edges(name):
    """Hard targets (the kernel's lean loop computes p_t there from one exp): logits whose p_t lands on or next
    to each interior edge, as the kernel computes p_t, are binned as the definition says."""
    edges, kw = edges_and_kwargs(name)
    xs, ts = [torch.tensor([0.0, 100.0, -100.0])], [torch.tensor([1.0, 1.0, 1.0])]  # p_t = 1/2, 1, 0
    for e in edges[1:-1].tolist():
        if e == 0.5:  # logit 0, included above
            continue
        for target in (1.0, 0.0):  # p_t = p for a positive, 1 - p for a negative
            c = logits_around(e if target == 1.0 else 1.0 - e)
            xs.append(c)
            ts.append(torch.full_like(c, target))
    x, t = torch.cat(xs), torch.cat(ts)
    assert torch.isfinite(x).all()
    pt = kernel_pt(x, t)
    on_edge = (pt.unsqueeze(1) == edges[1:-1]).any(1)
    assert int(on_edge.sum()) >= 10, "too few p_t exactly on an edge to test ties"
    n = 2 * MIN_NUMEL
    reps = n // x.numel() + 1
    big_x, big_t = x.repeat(reps)[:n].reshape(-1, 16), t.repeat(reps)[:n].reshape(-1, 16)
    _, st = SIG(big_x, big_t, return_stats=True, **kw)
    assert torch.equal(st.pt_hist, expected_hist(pt.repeat(reps)[:n], edges))


_PORTABLE = r"""
import sys, torch, adaptive_focal as af
from adaptive_focal._kernels import cpu
assert cpu.available()
cases = torch.load(sys.argv[1], weights_only=False)
out = []
for x, t, kw in cases:
    loss, st = af.sigmoid_focal_loss(x, t, return_stats=True, **kw)
    out.append((loss, st.state_dict()))
torch.save(out, sys.argv[2])
"""


def _portable_cases():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2048, 40, generator=g) * 4
    hard = (torch.rand(2048, 40, generator=g) < 0.05).float()
    soft = torch.rand(2048, 40, generator=g)
    ign = hard.clone()
    ign[torch.rand(2048, 40, generator=g) < 0.1] = -1.0
    planes = torch.randn(4, 3, 80, 80, generator=g) * 3
    table = af.GammaTable(TABLE_EDGES, torch.tensor([3.0, 2.0, 1.0, 0.5, 0.0]))
    return [
        (x, hard, dict(gamma=2.0, alpha=0.25)),
        (x, soft, dict(gamma=0.5, label_smoothing=0.1, stat_bins=16)),
        (x, ign, dict(gamma=-1.0, ignore_index=-1.0, stat_bins=32)),
        (x, hard, dict(gamma=table, detach_modulator=True)),
        (planes, (torch.rand(planes.shape, generator=g) < 0.2).float(), dict(gamma=1.5)),
    ]


@needs_kernel
@pytest.mark.slow
def test_portable_build_matches(tmp_path):
    """The kernel built without AVX-512 (its portable statistics and histogram loops) gives the same results."""
    cases = _portable_cases()
    torch.save(cases, tmp_path / "cases.pt")
    env = dict(os.environ, ADAPTIVE_FOCAL_CACHE=str(tmp_path / "cache"), ADAPTIVE_FOCAL_CPU_CFLAGS="-mno-avx512f")
    root = os.path.dirname(os.path.dirname(os.path.abspath(af.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _PORTABLE, str(tmp_path / "cases.pt"), str(tmp_path / "out.pt")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (x, t, kw), (loss, state) in zip(cases, torch.load(tmp_path / "out.pt", weights_only=False)):
        want_loss, want = SIG(x, t, return_stats=True, **kw)
        torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
        for name, value in want.state_dict().items():
            if not isinstance(value, torch.Tensor):  # None, or the mode
                assert state[name] == value, name
            elif value.dtype == torch.int64:
                assert torch.equal(state[name], value), name
            else:
                torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-5, msg=name)
