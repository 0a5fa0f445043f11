"""GPU benchmark and device self-check of the fused Triton sigmoid focal kernel (issue 2).

One command, a few minutes on one GPU (sized for an H200):

    python -m research.benchmarks.bench_triton --out results/bench_triton_h200.json

What it measures, on ~2**26 float32 logits shaped (2**26 // 80, 80) with 1% positives:

* the fused kernel alone (``triton.testing.do_bench``; also under a CUDA graph, without host overhead), for
  mean reduction (read x, t; write grad), with statistics (without and with the opt-in confidence bins,
  ``need_conf``), with the element losses (``reduction="none"``: also writes elem), per-class gamma and a gamma
  table (with the bins, as AdaFocal runs it); achieved bandwidth = bytes moved / time, and its
  fraction of two ceilings measured in the same process: a device-to-device copy
  (``torch.empty_like(x).copy_(x)``, 2 x 4 bytes per element) and ``torch.add(x, t, out=y)`` (same 12 bytes
  per element as the kernel's mean case);
* forward + backward of a mean-reduced loss: the fused kernel, ``adaptive_focal.sigmoid_focal_loss`` (when
  importable), the torchvision formula written out (eager and ``torch.compile``) and
  ``F.binary_cross_entropy_with_logits`` alone; peak extra memory of each;
* a small tile / program-count sweep (the defaults are a guess without a GPU to tune on);
* accuracy on the device against a float64 reference (the GPU's exp / log / division differ from the CPU
  interpreter the tests use), saturated logits (+-1e4) finite, the log1p helper's error;
* ``torch.library.opcheck`` of ``torch.ops.adaptive_focal.sigmoid_focal`` when adaptive_focal registers it.

It prints markdown tables and writes everything as JSON to ``--out``.

``--dry-run`` runs the same code on the CPU with tiny sizes under ``TRITON_INTERPRET=1`` (timings there are
meaningless; it only exercises the logic).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="write the results as JSON to this path")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, tiny sizes, Triton interpreter: exercises the script's logic only")
    ap.add_argument("--numel", type=int, default=2 ** 26, help="approximate number of logits (default 2**26)")
    ap.add_argument("--classes", type=int, default=80, help="C, the size of dim 1 (default 80)")
    ap.add_argument("--pos-frac", type=float, default=0.01, help="fraction of positive targets (default 0.01)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender")
    ap.add_argument("--no-sweep", action="store_true", help="skip the tile / program-count sweep")
    return ap.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.dry_run:
    # must precede the first import of triton: @triton.jit picks interpreter vs compiler when it decorates
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# ------------------------------------------------------------------------------------------------
# contenders
# ------------------------------------------------------------------------------------------------
def torchvision_formula(x, t, gamma=2.0, alpha=0.25):
    """torchvision.ops.sigmoid_focal_loss written out, mean-reduced."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        loss = alpha_t * loss
    return loss.mean()


def bce_alone(x, t):
    return F.binary_cross_entropy_with_logits(x, t)


def make_fused(ts):
    """Mean-reduced loss on the raw kernel: forward = one kernel launch (+ tiny partial sums), backward =
    grad * (grad_output / count). What the library's op does, without its argument handling."""

    class _Fused(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, t, gamma, alpha, stat_edges, need_stats, need_conf=False):
            _, grad, acc = ts.sigmoid_focal_forward_triton(x, t, gamma, 0, None, alpha, None, None, 0.0, False,
                                                           stat_edges, False, need_stats, need_conf)
            count = acc[1].clamp_min(1)
            ctx.save_for_backward(grad.view(x.shape), count)
            return (acc[0] / count).to(torch.float32)

        @staticmethod
        def backward(ctx, go):
            grad, count = ctx.saved_tensors
            return grad * (go / count).to(grad.dtype), None, None, None, None, None, None

    return _Fused.apply


# ------------------------------------------------------------------------------------------------
# timing helpers
# ------------------------------------------------------------------------------------------------
class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn):
        """Median milliseconds of fn()."""
        fn()
        fn()
        if self.cuda:
            import triton.testing

            med, lo, hi = triton.testing.do_bench(fn, warmup=25, rep=200, quantiles=[0.5, 0.2, 0.8])
            return dict(ms=med, ms_p20=lo, ms_p80=hi)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return dict(ms=statistics.median(times), ms_p20=min(times), ms_p80=max(times))

    def graph(self, fn):
        """Median ms under a CUDA graph (no host/launch overhead); None off CUDA or on failure."""
        if not self.cuda:
            return None
        import triton.testing

        try:
            return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")
        except Exception as exc:  # capture can fail (e.g. a sync inside fn)
            return f"failed: {type(exc).__name__}: {str(exc)[:120]}"


def peak_extra_mib(fn, device):
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def fwd_bwd(loss_fn, x, *rest):
    leaf = x.detach().requires_grad_(True)

    def run():
        (g,) = torch.autograd.grad(loss_fn(leaf, *rest), leaf)
        return g

    return run


# ------------------------------------------------------------------------------------------------
# device accuracy check (float64 reference written from the spec's formulas)
# ------------------------------------------------------------------------------------------------
def reference64(x, t, gamma, gamma_kind, alpha, ls, stat_edges):
    N, C, S = x.shape
    xd = x.detach().double().requires_grad_(True)
    tp = t.double() * (1 - ls) + ls / 2
    p = torch.sigmoid(xd)
    p_t = p * tp + (1 - p) * (1 - tp)
    g = gamma.double().reshape(() if gamma_kind == 0 else (1, C, 1)).expand(N, C, S)
    mod = torch.where(g < 0, (1 + p_t) ** (-g).clamp(min=0), (1 - p_t) ** g.clamp(min=0))
    a = 1.0
    if alpha is not None:
        ac = alpha.double().reshape(1, C, 1)
        a = ac * tp + (1 - ac) * (1 - tp)
    elem = a * mod * F.binary_cross_entropy_with_logits(xd, tp, reduction="none")
    (grad,) = torch.autograd.grad(elem.sum(), xd)
    with torch.no_grad():
        B = stat_edges.numel() - 1
        b = torch.bucketize(p_t, stat_edges[1:-1].double(), right=True).clamp(0, B - 1)
        acc = torch.cat([
            torch.stack([elem.sum(), torch.tensor(float(elem.numel()), dtype=torch.float64, device=x.device),
                         (t >= 0.5).sum().double(), p_t.sum(), (p - tp).abs().sum()]),
            torch.bincount(b.reshape(-1), minlength=B).double(),
            torch.full((C,), float(N * S), dtype=torch.float64, device=x.device),
            p_t.sum(dim=(0, 2)),
            torch.where(t >= 0.5, p_t, 0.0).sum().reshape(1),
            (grad.abs() * t.double()).sum(dim=(0, 2)),
            (grad.abs() * (1 - t.double())).sum(dim=(0, 2)),
        ])
        # confidence bins: each element a binary prediction, confidence max(p, 1 - p), correct when the logit's
        # sign agrees with the target's label
        conf = torch.maximum(p, 1 - p)
        correct = torch.where(t >= 0.5, xd >= 0, xd <= 0).double()
        cell = (torch.arange(C, device=x.device).reshape(1, C, 1) * B
                + torch.bucketize(conf, stat_edges[1:-1].double(), right=True).clamp(0, B - 1)).reshape(-1)

        def per_cell(w):
            return torch.zeros(C * B, dtype=torch.float64, device=x.device).index_add_(0, cell, w.reshape(-1))

        count, conf_sum, n_correct = per_cell(torch.ones_like(conf)), per_cell(conf), per_cell(correct)
        acc = torch.cat([acc, count.view(C, B).sum(0), count, conf_sum.view(C, B).sum(0),
                         n_correct.view(C, B).sum(0), conf_sum, n_correct])
    return elem.detach(), grad, acc


def conf_counts(B, C):
    """Which entries of the accumulator's confidence section are counts (the rest are confidence sums)."""
    is_count = torch.zeros(3 * B + 3 * C * B, dtype=torch.bool)
    is_count[:B + C * B] = True  # conf_count, class_conf_count
    is_count[2 * B + C * B:3 * B + C * B] = True  # correct_sum
    is_count[3 * B + 2 * C * B:] = True  # class_correct_sum
    return is_count


def rel_err(a, b, floor):
    a, b = a.double(), b.double()
    return float(((a - b).abs() / b.abs().clamp_min(floor)).max()) if b.numel() else 0.0


def accuracy_checks(ts, device, n_rows, C, stat_edges):
    out = {}
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.randn(n_rows, C, 1, generator=gen) * 4).to(device)
    t = (torch.rand(n_rows, C, 1, generator=gen) < 0.3).float()
    soft = torch.rand(n_rows, C, 1, generator=gen) < 0.2
    t = torch.where(soft, torch.rand(n_rows, C, 1, generator=gen), t).to(device)
    alpha = torch.rand(C, generator=gen).to(device)
    cases = {
        "gamma=2": (torch.tensor(2.0), 0, None, 0.0),
        "gamma=0.5,alpha,ls": (torch.tensor(0.5), 0, alpha, 0.1),
        "gamma=0": (torch.tensor(0.0), 0, None, 0.0),
        "gamma=-1": (torch.tensor(-1.0), 0, alpha, 0.0),
        "per-class": (torch.linspace(-1.0, 3.0, C), 1, None, 0.1),
    }
    for name, (gamma, kind, a, ls) in cases.items():
        gamma = gamma.to(device)
        elem, grad, acc = ts.sigmoid_focal_forward_triton(x, t, gamma, kind, None, a, None, None, ls, False,
                                                          stat_edges, True, True, True)  # with the bins
        er, gr, ar = reference64(x, t, gamma, kind, a, ls, stat_edges)
        B = stat_edges.numel() - 1
        hist_diff = float((acc[5:5 + B] - ar[5:5 + B]).abs().sum())
        out[name] = dict(
            elem_max_rel=rel_err(elem, er, 1e-3), grad_max_rel=rel_err(grad, gr, 1e-3),
            elem_max_abs_over_max=float((elem.double() - er).abs().max() / er.abs().max()),
            grad_max_abs_over_max=float((grad.double() - gr).abs().max() / gr.abs().max()),
            sum_loss_rel=rel_err(acc[0:1], ar[0:1], 1e-30), sum_pt_rel=rel_err(acc[3:5], ar[3:5], 1e-30),
            counts_equal=bool(torch.equal(acc[1:3], ar[1:3])),
            hist_abs_diff_total=hist_diff,   # ties at bin edges may flip between float32 and float64
            class_sum_pt_rel=rel_err(acc[5 + B + C:5 + B + 2 * C], ar[5 + B + C:5 + B + 2 * C], 1e-30),
            sum_pt_pos_rel=rel_err(acc[5 + B + 2 * C:6 + B + 2 * C], ar[5 + B + 2 * C:6 + B + 2 * C], 1e-30),
            class_sum_grad_rel=rel_err(acc[6 + B + 2 * C:6 + B + 4 * C], ar[6 + B + 2 * C:6 + B + 4 * C], 1e-30),
            # confidence bins: counts and numbers correct may flip at edge ties, like the histogram
            conf_counts_abs_diff_total=float((acc[6 + B + 4 * C:] - ar[6 + B + 4 * C:])[conf_counts(B, C)]
                                             .abs().sum()),
            conf_sum_rel=rel_err(acc[6 + B + 4 * C:][~conf_counts(B, C)], ar[6 + B + 4 * C:][~conf_counts(B, C)],
                                 1e-30),
        )
    # saturated logits: finite everything for gamma in {0, 0.3, 2} (and the inverse form)
    vals = torch.tensor([1e4, -1e4, 104.0, -104.0, 88.0, -88.0, 30.0, -30.0, 0.0])
    xs = vals.repeat_interleave(3).reshape(-1, 3, 1).to(device)
    tsat = torch.tensor([1.0, 0.0, 0.3]).repeat(vals.numel(), 1).reshape(-1, 3, 1).to(device)
    sat = {}
    for gval in (0.0, 0.3, 2.0, -1.0):
        for ls in (0.0, 0.1):
            e, g, a = ts.sigmoid_focal_forward_triton(xs, tsat, torch.tensor(gval, device=device), 0, None, None,
                                                      None, None, ls, False, stat_edges, True, True, True)
            sat[f"gamma={gval},ls={ls}"] = bool(torch.isfinite(e).all() and torch.isfinite(g).all()
                                                and torch.isfinite(a).all())
    out["saturated_finite"] = sat
    u = torch.cat([torch.logspace(-30, 0, 20001), torch.rand(100000, generator=gen)]).float()
    got = ts.log1p_triton_check(u.to(device)).double().cpu()
    out["log1p_max_rel"] = rel_err(got, torch.log1p(u.double()), 1e-300)
    return out


# ------------------------------------------------------------------------------------------------
# opcheck
# ------------------------------------------------------------------------------------------------
def run_opcheck(device, C, stat_edges):
    try:
        import adaptive_focal  # noqa: F401  (registers the op)
    except Exception as exc:
        return f"skipped: import adaptive_focal failed ({type(exc).__name__}: {exc})"
    ns = getattr(torch.ops, "adaptive_focal", None)
    op = getattr(ns, "sigmoid_focal", None) if ns is not None else None
    if op is None:
        return "skipped: torch.ops.adaptive_focal.sigmoid_focal is not registered"
    gen = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(64, C, 1, generator=gen).to(device).requires_grad_(True)
    t = (torch.rand(64, C, 1, generator=gen) < 0.1).float().to(device)
    results = {}
    samples = {
        "scalar_gamma_stats": (x, t, torch.tensor(2.0, device=device), 0, None,
                               torch.full((C,), 0.25, device=device), None, None, 0.0, False, stat_edges,
                               False, True, False),
        "scalar_gamma_stats_conf": (x, t, torch.tensor(2.0, device=device), 0, None, None, None, None, 0.0, False,
                                    stat_edges, False, True, True),
        "elementwise_ignore_ls": (x, t, torch.tensor(0.5, device=device), 0, None, None, None, -1.0, 0.1, True,
                                  stat_edges, True, False, False),
    }
    for name, args in samples.items():
        try:
            res = torch.library.opcheck(op, args)
            results[name] = {k: str(v) for k, v in res.items()}
        except Exception as exc:
            results[name] = f"FAILED: {type(exc).__name__}: {str(exc)[:300]}"
    return results


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------
def md_table(rows, cols):
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args):
    dry = args.dry_run
    if dry:
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            sys.exit("bench_triton: no CUDA device; use --dry-run to exercise the script on CPU")
        device = torch.device("cuda")
    import triton

    from adaptive_focal._kernels import triton_sigmoid as ts

    C = args.classes
    numel_target = 64 * C if dry else args.numel
    N = max(1, numel_target // C)
    numel = N * C
    timer = Timer(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.randn(N, C, generator=gen) * 2).to(device)
    t = (torch.rand(N, C, generator=gen) < args.pos_frac).float().to(device)
    x3, t3 = x.view(N, C, 1), t.view(N, C, 1)
    gamma = torch.tensor(2.0, device=device)
    alpha = torch.full((C,), 0.25, device=device)
    stat_edges = torch.linspace(0, 1, 16, device=device)
    result = dict(
        device=torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor()})",
        dry_run=dry, torch=torch.__version__, triton=triton.__version__, shape=[N, C], numel=numel,
        pos_frac=args.pos_frac,
        sms=torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else None,
    )

    # ---- ceilings ----
    y = torch.empty_like(x)
    copy = timer(lambda: y.copy_(x))
    copy_gbs = 2 * x.nbytes / (copy["ms"] * 1e-3) / 1e9
    add = timer(lambda: torch.add(x, t, out=y))
    add_gbs = 3 * x.nbytes / (add["ms"] * 1e-3) / 1e9
    result["ceilings"] = dict(copy=dict(copy, GBps=copy_gbs), add=dict(add, GBps=add_gbs))

    # ---- kernel alone ----
    tables = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], device=device)
    tvals = torch.tensor([3.0, 2.0, 1.0, 0.5], device=device).expand(C, -1).contiguous()
    # conf: the opt-in confidence bins (confidence_stats=True), which only AdaFocal (a GammaTable gamma) needs
    variants = {
        "mean (grad only)": dict(gamma=gamma, kind=0, edges=None, elem=False, stats=False, conf=False),
        "mean + stats": dict(gamma=gamma, kind=0, edges=None, elem=False, stats=True, conf=False),
        "mean + stats + confidence bins": dict(gamma=gamma, kind=0, edges=None, elem=False, stats=True, conf=True),
        "none (elem + grad)": dict(gamma=gamma, kind=0, edges=None, elem=True, stats=False, conf=False),
        "per-class gamma + stats": dict(gamma=torch.linspace(0.5, 3, C, device=device), kind=1, edges=None,
                                        elem=False, stats=True, conf=False),
        "gamma table + stats + confidence bins": dict(gamma=tvals, kind=3, edges=tables, elem=False, stats=True,
                                                      conf=True),
    }
    krows = []
    for name, v in variants.items():
        def run(v=v):
            return ts.sigmoid_focal_forward_triton(x3, t3, v["gamma"], v["kind"], v["edges"], alpha, None, None,
                                                   0.0, False, stat_edges, v["elem"], v["stats"], v["conf"])
        tm = timer(run)
        nbytes = numel * 4 * (3 + int(v["elem"]))
        gbs = nbytes / (tm["ms"] * 1e-3) / 1e9
        g_ms = timer.graph(run)
        row = dict(variant=name, ms=tm["ms"], ms_p20=tm["ms_p20"], ms_p80=tm["ms_p80"], bytes_per_elem=nbytes // numel,
                   GBps=gbs, frac_copy=gbs / copy_gbs, frac_add=gbs / add_gbs)
        if isinstance(g_ms, float):
            row.update(graph_ms=g_ms, graph_GBps=nbytes / (g_ms * 1e-3) / 1e9,
                       graph_frac_copy=nbytes / (g_ms * 1e-3) / 1e9 / copy_gbs)
        elif g_ms is not None:
            row["graph_ms"] = g_ms
        krows.append(row)
    result["kernel"] = krows

    # ---- forward + backward ----
    fused = make_fused(ts)
    contenders = {
        "fused kernel (raw op)": (lambda a, b: fused(a, b, gamma, alpha, stat_edges, False)),
        "fused kernel + stats": (lambda a, b: fused(a, b, gamma, alpha, stat_edges, True)),
        "fused kernel + stats + confidence bins": (lambda a, b: fused(a, b, gamma, alpha, stat_edges, True, True)),
    }
    try:
        import adaptive_focal as af

        contenders["adaptive_focal.sigmoid_focal_loss"] = (
            lambda a, b: af.sigmoid_focal_loss(a, b, gamma=2.0, alpha=0.25))
    except Exception as exc:
        result["adaptive_focal_import"] = f"skipped: {type(exc).__name__}: {exc}"
    contenders["torchvision formula (eager)"] = torchvision_formula
    if not args.no_compile:
        contenders["torchvision formula (torch.compile)"] = torch.compile(torchvision_formula)
    contenders["BCE-with-logits alone (eager)"] = bce_alone
    frows = []
    ref_grad = fwd_bwd(torchvision_formula, x.double(), t.double())()  # float64 gradient of the same loss
    for name, fn in contenders.items():
        try:
            run = fwd_bwd(fn, x, t)
            t0 = time.perf_counter()
            g = run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            first_s = time.perf_counter() - t0
            err = None
            if not name.startswith("BCE"):
                err = float((g.double() - ref_grad).abs().max() / ref_grad.abs().max())
            del g
            tm = timer(run)
            frows.append(dict(contender=name, ms=tm["ms"], ms_p20=tm["ms_p20"], ms_p80=tm["ms_p80"],
                              first_call_s=first_s, peak_extra_MiB=peak_extra_mib(run, device),
                              grad_err_vs_f64=err))
        except Exception as exc:
            frows.append(dict(contender=name, error=f"{type(exc).__name__}: {str(exc)[:200]}"))
            traceback.print_exc()
    del ref_grad
    base = next((r["ms"] for r in frows if r["contender"] == "torchvision formula (eager)" and "ms" in r), None)
    for r in frows:
        if base and "ms" in r:
            r["speedup_vs_eager_formula"] = base / r["ms"]
    result["fwd_bwd"] = frows

    # ---- tile / program sweep (mean, grad only) ----
    sweep = []
    if not args.no_sweep:
        sms = result["sms"] or 1
        tiles = (512, 1024, 2048) if not dry else (256, 1024)
        mults = (2, 4, 8, 16) if not dry else (1, 4)
        for tile in tiles:
            for mult in mults:
                def run(tile=tile, mult=mult):
                    return ts.sigmoid_focal_forward_triton(x3, t3, gamma, 0, None, alpha, None, None, 0.0, False,
                                                           stat_edges, False, False, False, _tile=tile,
                                                           _programs=sms * mult)
                try:
                    tm = timer(run)
                    sweep.append(dict(tile=tile, programs=sms * mult, ms=tm["ms"],
                                      GBps=numel * 12 / (tm["ms"] * 1e-3) / 1e9))
                except Exception as exc:
                    sweep.append(dict(tile=tile, programs=sms * mult, error=f"{type(exc).__name__}: {str(exc)[:200]}"))
    result["sweep"] = sweep

    # ---- accuracy on the device, opcheck ----
    try:
        result["accuracy"] = accuracy_checks(ts, device, 64 if dry else (1 << 20) // C, C, stat_edges)
    except Exception as exc:
        result["accuracy"] = f"FAILED: {type(exc).__name__}: {exc}"
        traceback.print_exc()
    result["opcheck"] = run_opcheck(device, C, stat_edges)
    result["hist_mode"] = ts._HIST_MODE  # 1 when tl.histogram failed to compile and the fallback is in use

    # ---- report ----
    print(f"\n## Fused Triton sigmoid focal kernel, {result['device']}, x {N}x{C} float32 "
          f"({numel} elements, {args.pos_frac:.0%} positives){' [DRY RUN: timings meaningless]' if dry else ''}\n")
    print(f"Ceilings: copy {copy_gbs:.0f} GB/s ({copy['ms']:.4f} ms), add x+t->y {add_gbs:.0f} GB/s "
          f"({add['ms']:.4f} ms)\n")
    print(md_table(krows, ["variant", "ms", "bytes_per_elem", "GBps", "frac_copy", "frac_add", "graph_ms",
                           "graph_frac_copy"]))
    print("\n### forward + backward, mean-reduced (gamma=2, alpha=0.25)\n")
    print(md_table(frows, ["contender", "ms", "speedup_vs_eager_formula", "peak_extra_MiB", "first_call_s",
                           "grad_err_vs_f64", "error"]))
    if sweep:
        print("\n### sweep (mean, grad only)\n")
        print(md_table(sweep, ["tile", "programs", "ms", "GBps", "error"]))
    print("\n### accuracy vs float64 on the device\n")
    if isinstance(result["accuracy"], dict):
        arows = [dict(case=k, **v) for k, v in result["accuracy"].items()
                 if isinstance(v, dict) and k != "saturated_finite"]
        print(md_table(arows, ["case", "elem_max_rel", "grad_max_rel", "elem_max_abs_over_max",
                               "grad_max_abs_over_max", "sum_loss_rel", "counts_equal", "hist_abs_diff_total",
                               "class_sum_pt_rel", "sum_pt_pos_rel", "class_sum_grad_rel"]))
        print(f"\nsaturated logits finite: {result['accuracy']['saturated_finite']}")
        print(f"log1p helper max rel error: {result['accuracy']['log1p_max_rel']:.3g}")
    else:
        print(result["accuracy"])
    print(f"\nopcheck: {json.dumps(result['opcheck'], indent=1)}")
    print(f"histogram mode: {result['hist_mode']}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main(ARGS)
