"""CPU speed and memory benchmark of the core focal loss (issue 2).

Every contender runs forward + backward on the same tensors, interleaved round-robin in one process (so the
machine's noise hits all of them alike); the table reports medians and ratios. Memory "saved for backward" is the
bytes of the distinct tensors autograd keeps between forward and backward (``saved_tensors_hooks``), over the
logits' bytes.

    python -m research.benchmarks.bench_focal            # full sizes, prints a markdown table
    python -m research.benchmarks.bench_focal --quick    # small sizes, a smoke run
    python -m research.benchmarks.bench_focal --out results.json

The sigmoid table has a row for ``return_stats=True`` with the confidence bins (``confidence_stats=True``, what the
AdaFocal policies turn on) next to the plain statistics. Run as a file against another checkout of the package
(``PYTHONPATH=OTHER python research/benchmarks/bench_focal.py``) it leaves out that row where the package has no
such keyword, so that runs of the previous code can alternate with runs of this one.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

import adaptive_focal as af
from adaptive_focal._kernels import MIN_NUMEL


def composed_sigmoid_focal(x, t, gamma=2.0, alpha=0.25):
    """The formula as torchvision.ops.sigmoid_focal_loss composes it (written out here), mean-reduced."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return (alpha_t * loss).mean()


def saved_bytes(fn, x) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``fn(x)``."""
    seen: dict[int, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    del out
    return sum(seen.values())


def time_interleaved(contenders: dict, x: torch.Tensor, rounds: int, warmup: int = 2) -> dict[str, float]:
    leaf = x.detach().clone().requires_grad_()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        for _ in range(warmup):
            fn(leaf).backward()
            leaf.grad = None
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn(leaf).backward()
            times[name].append(time.perf_counter() - start)
            leaf.grad = None
    return {name: statistics.median(v) * 1e3 for name, v in times.items()}


def first_call_seconds(fn, x) -> float:
    leaf = x.detach().clone().requires_grad_()
    start = time.perf_counter()
    fn(leaf).backward()
    return time.perf_counter() - start


def cold_kernel_build_seconds() -> float:
    """Compiles the C kernel into an empty cache in a fresh process: what a first-ever call pays."""
    code = (
        "import time, torch; from adaptive_focal._kernels import cpu; t = time.perf_counter(); "
        "assert cpu.available(); print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, ADAPTIVE_FOCAL_CACHE=cache)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def bench_sigmoid(n: int, c: int, rounds: int, with_compile: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, generator=g) * 3
    t = (torch.rand(n, c, generator=g) < 0.01).float()
    ours = lambda z: af.sigmoid_focal_loss(z, t, gamma=2.0, alpha=0.25)  # noqa: E731
    ours_stats = lambda z: af.sigmoid_focal_loss(z, t, gamma=2.0, alpha=0.25, return_stats=True)[0]  # noqa: E731
    composed = lambda z: composed_sigmoid_focal(z, t)  # noqa: E731
    bce = lambda z: F.binary_cross_entropy_with_logits(z, t)  # noqa: E731
    contenders = {"adaptive_focal": ours, "adaptive_focal + stats": ours_stats}
    if "confidence_stats" in inspect.signature(af.sigmoid_focal_loss).parameters:
        contenders["adaptive_focal + stats + confidence bins"] = lambda z: af.sigmoid_focal_loss(  # noqa: E731
            z, t, gamma=2.0, alpha=0.25, return_stats=True, confidence_stats=True)[0]
    contenders.update({"composed (torchvision formula)": composed, "BCE-with-logits alone": bce})
    first = {"adaptive_focal": first_call_seconds(ours, x)}
    if with_compile:
        gamma = torch.tensor(2.0)
        compiled_fn = torch.compile(lambda z, tt, gg: composed_sigmoid_focal(z, tt, gg))
        compiled = lambda z: compiled_fn(z, t, gamma)  # noqa: E731
        first["torch.compile(composed)"] = first_call_seconds(compiled, x)
        contenders["torch.compile(composed)"] = compiled
    ms = time_interleaved(contenders, x, rounds)
    logits_bytes = x.numel() * x.element_size()
    mem = {name: saved_bytes(fn, x.detach().clone().requires_grad_()) / logits_bytes
           for name, fn in contenders.items()}
    return {"shape": [n, c], "ms": ms, "saved_over_logits": mem, "first_call_s": first}


def bench_softmax(n: int, c: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, c, generator=g) * 3
    y = torch.randint(0, c, (n,), generator=g)
    contenders = {
        "adaptive_focal": lambda z: af.softmax_focal_loss(z, y, gamma=2.0),
        "adaptive_focal + stats": lambda z: af.softmax_focal_loss(z, y, gamma=2.0, return_stats=True)[0],
        "cross_entropy alone": lambda z: F.cross_entropy(z, y),
    }
    first = {"adaptive_focal": first_call_seconds(contenders["adaptive_focal"], x)}
    ms = time_interleaved(contenders, x, rounds)
    logits_bytes = x.numel() * x.element_size()
    mem = {name: saved_bytes(fn, x.detach().clone().requires_grad_()) / logits_bytes
           for name, fn in contenders.items()}
    return {"shape": [n, c], "ms": ms, "saved_over_logits": mem, "first_call_s": first}


def table(title: str, result: dict, baseline: str, composed: str | None) -> str:
    lines = [f"**{title}**, logits {tuple(result['shape'])} float32, forward + backward, median ms",
             "", "| contender | ms | vs baseline | saved for backward (x logits) |", "|---|---:|---:|---:|"]
    base = result["ms"][baseline]
    for name, ms in result["ms"].items():
        lines.append(f"| {name} | {ms:.1f} | {ms / base:.2f}x | {result['saved_over_logits'][name]:.2f} |")
    if composed:
        lines.append("")
        conf = result["ms"].get("adaptive_focal + stats + confidence bins")
        with_bins = ("" if conf is None else
                     f", {100 * (conf / result['ms']['adaptive_focal'] - 1):.0f}% with the confidence bins")
        lines.append(f"adaptive_focal is {result['ms'][composed] / result['ms']['adaptive_focal']:.1f}x faster "
                     f"than the composed formula; return_stats adds "
                     f"{100 * (result['ms']['adaptive_focal + stats'] / result['ms']['adaptive_focal'] - 1):.0f}%"
                     f"{with_bins}.")
    else:
        lines.append("")
        lines.append(f"return_stats adds "
                     f"{100 * (result['ms']['adaptive_focal + stats'] / result['ms']['adaptive_focal'] - 1):.0f}%.")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 15)
    sig_shape = (4096, 80) if args.quick else (65536, 80)
    soft_shape = (1024, 1000) if args.quick else (16384, 1000)
    result = {
        "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "kernel_cold_build_s": cold_kernel_build_seconds(),
        "sigmoid": bench_sigmoid(*sig_shape, rounds, with_compile=not args.no_compile),
        "softmax": bench_softmax(*soft_shape, rounds),
    }
    print(table("Sigmoid focal loss (1% positives)", result["sigmoid"], "BCE-with-logits alone",
                "composed (torchvision formula)"))
    print()
    print(table("Softmax focal loss (index targets)", result["softmax"], "cross_entropy alone", None))
    print()
    firsts = ", ".join(f"{k}: {v:.2f} s" for k, v in result["sigmoid"]["first_call_s"].items())
    print(f"First call (sigmoid): {firsts}; building the C kernel into an empty cache: "
          f"{result['kernel_cold_build_s']:.2f} s (once per machine; inputs under {MIN_NUMEL} elements "
          f"never use it).")
    print(f"Machine: {result['machine']}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
