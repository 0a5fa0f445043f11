"""Per-step overhead of each gamma policy on a small model's training step (CPU).

Every contender trains the same small CNN (two conv layers, 32x32 inputs, batch 64, 10 classes) from the same
initialisation; the baseline uses a fixed gamma and no statistics, the others compute the batch statistics
(``return_stats=True``) when the policy reads them and call ``policy.step``. Contenders run interleaved in one
process (rounds of ``--steps`` training steps each), and the table reports the median time per step and the
overhead over the baseline.

    python -m research.benchmarks.bench_policies [--rounds 7] [--steps 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

import adaptive_focal as af

POLICY_KWARGS = {
    "constant": {"gamma": 2.0},
    "linear": {"start": 0.0, "end": 2.0, "total": 1000},
    "cosine": {"start": 3.0, "end": 1.0, "total": 1000},
    "step": {"start": 3.0, "milestones": [500], "factor": 0.5},
    "exponential": {"start": 3.0, "factor": 0.999},
    "flsc531": {},
    "flsd53": {},
    "automated": {},
    "pi": {},
}


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    )


class Contender:
    def __init__(self, name: str):
        torch.manual_seed(0)
        self.model = make_model()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.loss = af.FocalLoss("softmax", gamma=2.0)
        self.policy = None if name == "fixed gamma (baseline)" else af.create_policy(
            name, self.loss, **POLICY_KWARGS.get(name, {}))
        self.with_stats = self.policy is not None and (self.policy.needs_stats or self.policy.needs_validation)

    def train_step(self, x, y) -> None:
        out = self.model(x)
        if self.with_stats:
            loss, stats = self.loss(out, y, return_stats=True)
        else:
            loss, stats = self.loss(out, y), None
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.policy is not None:
            self.policy.step(stats)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    names = ["fixed gamma (baseline)"] + [n for n in af.list_policies() if n in POLICY_KWARGS]
    contenders = {n: Contender(n) for n in names}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    per_step: dict[str, list[float]] = {n: [] for n in names}
    for c in contenders.values():  # warm-up
        for _ in range(3):
            c.train_step(x, y)
    for _ in range(args.rounds):
        for name, c in contenders.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                c.train_step(x, y)
            per_step[name].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(per_step[names[0]])
    rows = {}
    print(f"Training step of a small CNN (batch 64, 3x32x32, 10 classes), CPU with {torch.get_num_threads()} "
          f"threads; median of {args.rounds} rounds of {args.steps} steps\n")
    print("| policy | statistics | ms / step | overhead |")
    print("|---|---|---:|---:|")
    for name in names:
        ms = statistics.median(per_step[name]) * 1e3
        over = ms / (base * 1e3) - 1.0
        uses = "yes" if contenders[name].with_stats else "no"
        rows[name] = {"ms_per_step": ms, "overhead": over, "stats": uses == "yes"}
        print(f"| {name} | {uses} | {ms:.2f} | {100 * over:+.1f}% |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"threads": torch.get_num_threads(), "rows": rows}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
