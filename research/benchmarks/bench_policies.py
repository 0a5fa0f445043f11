"""Per-step overhead of each gamma policy on a small model's training step (CPU).

Every contender trains the same small CNN (two conv layers, 32x32 inputs, batch 64, 10 classes) from the same
initialisation, with a softmax focal loss, or for the sigmoid-only policies (``efl``, ``asl_adaptive``) a sigmoid
focal loss on the one-hot targets; each mode has its baseline with a fixed gamma and no statistics, the others
compute the batch statistics (``return_stats=True``) when the policy's ``step`` reads them and call
``policy.step``. (AdaFocal's per-epoch update is outside the timed steps; its per-step cost is the GammaTable
lookup inside the loss. The learned controllers' look-ahead every ``every`` steps is inside ``policy.step``, so
their added time is the mean over steps, not the median.) Contenders run interleaved in one process (rounds of
``--steps`` training steps each), and the table reports the median time per step and the overhead over the
baseline.

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
    "adafocal": {},
    "classwise_adafocal": {"num_classes": 10},
    "cyclical": {"total": 1000, "unit": "step"},
    "efl": {"num_classes": 10},
    "asl_adaptive": {},
    "hypergradient": {},
    "gammanet": {"num_classes": 10},
    "bandit": {},
}
LEARNED = {"hypergradient", "gammanet", "bandit"}  # they also get the model, validation batches and the optimizer
SIGMOID = {"efl", "asl_adaptive"}
BASELINES = {"softmax": "fixed gamma (baseline)", "sigmoid": "fixed gamma (sigmoid baseline)"}


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
        self.mode = "sigmoid" if name in SIGMOID or name == BASELINES["sigmoid"] else "softmax"
        self.loss = af.FocalLoss(self.mode, gamma=2.0)
        kwargs = dict(POLICY_KWARGS.get(name, {}))
        if name in LEARNED:
            g = torch.Generator().manual_seed(2)
            val = [(torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
                   for _ in range(2)]
            kwargs.update(model=self.model, val_source=val)
            if name != "bandit":
                kwargs["lr"] = self.opt
        self.policy = None if name in BASELINES.values() else af.create_policy(name, self.loss, **kwargs)
        # training statistics only for the policies that read them in step(); the validation-driven ones get theirs
        # at epoch end, outside the timed training step
        self.with_stats = self.policy is not None and self.policy.needs_stats

        self.loss_s: list[float] = []    # time in the loss call (with statistics when the policy reads them)
        self.policy_s: list[float] = []  # time in policy.step

    def train_step(self, x, y, record: bool = True) -> None:
        if self.mode == "sigmoid":
            y = nn.functional.one_hot(y, 10).float()
        if hasattr(self.policy, "observe"):
            self.policy.observe(x, y)
        out = self.model(x)
        t0 = time.perf_counter()
        if self.with_stats:
            loss, stats = self.loss(out, y, return_stats=True)
        else:
            loss, stats = self.loss(out, y), None
        t1 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        t2 = time.perf_counter()
        if self.policy is not None:
            self.policy.step(stats)
        t3 = time.perf_counter()
        if record:
            self.loss_s.append(t1 - t0)
            self.policy_s.append(t3 - t2)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    # the statistics of small inputs come from the compiled CPU library once it is built on the machine (small
    # inputs never build it themselves): build it first, as the first large sigmoid input of a run would
    from adaptive_focal._kernels import cpu

    compiled = cpu.available()
    names = list(BASELINES.values()) + [n for n in af.list_policies() if n in POLICY_KWARGS]
    contenders = {n: Contender(n) for n in names}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    per_step: dict[str, list[float]] = {n: [] for n in names}
    for c in contenders.values():  # warm-up
        for _ in range(3):
            c.train_step(x, y, record=False)
    for _ in range(args.rounds):
        for name, c in contenders.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                c.train_step(x, y)
            per_step[name].append((time.perf_counter() - start) / args.steps)
    rows = {}
    print(f"Training step of a small CNN (batch 64, 3x32x32, 10 classes), CPU with {torch.get_num_threads()} "
          f"threads; median of {args.rounds} rounds of {args.steps} steps; statistics from the compiled CPU "
          f"library: {'yes' if compiled else 'no (it could not be built here)'}\n")
    print("| policy | loss | statistics | ms / step | added per step (in the loop) | overhead "
          "| whole-step difference |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in names:
        c = contenders[name]
        base = statistics.median(per_step[BASELINES[c.mode]])
        base_loss = statistics.median(contenders[BASELINES[c.mode]].loss_s)
        ms = statistics.median(per_step[name]) * 1e3
        diff = ms / (base * 1e3) - 1.0
        # what the policy adds, timed inside the training loop: its loss call (statistics, GammaTable lookup)
        # over the fixed-gamma loss call, plus policy.step
        step_cost = statistics.fmean if name in LEARNED else statistics.median
        extra = max(0.0, statistics.median(c.loss_s) - base_loss) + (
            step_cost(c.policy_s) if c.policy is not None else 0.0)
        over = extra / base
        uses = "yes" if c.with_stats else "no"
        rows[name] = {"ms_per_step": ms, "added_ms": extra * 1e3, "overhead": over, "step_difference": diff,
                      "stats": uses == "yes", "mode": c.mode}
        print(f"| {name} | {c.mode} | {uses} | {ms:.2f} | {extra * 1e3:.2f} ms | {100 * over:.1f}% "
              f"| {100 * diff:+.1f}% |")
    print("\n'overhead' is the time the policy adds inside the loop (its loss call minus the fixed-gamma loss call, "
          "plus policy.step) over the baseline step of the same loss mode; the whole-step difference measures the "
          "same end to end and is noisier by a few percent on a shared machine.")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"threads": torch.get_num_threads(), "compiled_statistics": compiled, "rows": rows}, fh,
                      indent=2)
    return rows


if __name__ == "__main__":
    main()
