"""Objectives for the comparison engine's tests: functions written against the ``train(run) -> dict`` contract.

``linear`` is instant and exactly predictable: validation metric ``0.9 - 0.1 * gamma + 0.01 * seed`` (test 0.05
lower), so every comparison's outcome is known in advance. ``slow_start`` is as instant, with learning curves like
gauss-lt's: the smaller gamma, the slower it learns and the higher it ends. ``tiny_softmax`` trains a real (small)
model with the arm's loss and policy. The others fail in the ways the engine must make visible.
"""

from __future__ import annotations

import math

import torch

CALLS: list = []


def linear(run) -> dict:
    """No training: the metric is a known function of the arm's gamma and the seed; reports three "epochs"."""
    gamma = float(run.config.get("gamma", 2.0))
    if run.config.get("policy", "none") != "none":
        loss = run.make_loss()
        policy = run.make_policy(loss, epochs=3, steps_per_epoch=2, num_classes=3)
        gamma = float(policy.get_last_gamma()) if policy.get_last_gamma() is not None else float(loss.gamma.mean())
    val = 0.9 - 0.1 * gamma + 0.01 * run.seed
    for epoch in range(1, 4):
        run.report(epoch, val - 0.01 * (3 - epoch))
    return {"val": {"score": val, "ece": 0.1}, "test": {"score": val - 0.05, "ece": 0.1}}


SLOW_START_EPOCHS = 10


def slow_start_curve(gamma: float, seed: int, epoch: int) -> float:
    """The validation metric of ``slow_start`` after ``epoch``: it ends at ``0.6 - 0.01 gamma + 0.002 seed`` (best
    at gamma 0) and rises at rate ``0.4 + 0.4 gamma`` (slowest at gamma 0)."""
    return 0.6 - 0.01 * gamma + 0.002 * seed - 0.3 * math.exp(-(0.4 + 0.4 * gamma) * epoch)


def slow_start(run) -> dict:
    """No training: reports ``slow_start_curve`` after each of 10 epochs and returns its last value (test 0.02
    lower). Among gamma 0, 1, 2, 3 and 4, gamma 0 is the worst after the first two epochs and the best after the
    last two."""
    gamma = float(run.config.get("gamma", 2.0))
    for epoch in range(1, SLOW_START_EPOCHS + 1):
        val = slow_start_curve(gamma, run.seed, epoch)
        run.report(epoch, val)
    return {"val": {"score": val, "ece": 0.1}, "test": {"score": val - 0.02, "ece": 0.1}}


def val_only(run) -> dict:
    gamma = float(run.config.get("gamma", 2.0))
    return {"val": {"loss": 0.5 + 0.1 * gamma - 0.01 * run.seed}}


def fails(run) -> dict:
    raise ValueError(f"boom on seed {run.seed}")


def fails_on_policy(run) -> dict:
    if run.config.get("policy", "none") != "none":
        raise RuntimeError("this objective cannot run policies")
    return linear(run)


def missing_metric(run) -> dict:
    return {"val": {"accuracy": 0.5}}


def tiny_softmax(run) -> dict:
    """A linear model on a small imbalanced 3-class problem, trained with the arm's loss and policy."""
    g = torch.Generator().manual_seed(run.seed)
    counts = [60, 15, 5]
    x = torch.cat([torch.randn(n, 4, generator=g) + 1.5 * c for c, n in enumerate(counts)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    xv = torch.cat([torch.randn(10, 4, generator=g) + 1.5 * c for c in range(3)])
    yv = torch.arange(3).repeat_interleave(10)
    torch.manual_seed(run.seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = run.make_loss()
    epochs, batch = 3, 20
    steps = (len(y) + batch - 1) // batch
    policy = run.make_policy(loss_fn, epochs=epochs, steps_per_epoch=steps, num_classes=3)
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch):
            idx = order[i:i + batch]
            loss, stats = loss_fn(model(x[idx]), y[idx], return_stats=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if policy is not None:
                policy.step(stats)
        with torch.no_grad():
            _, val_stats = loss_fn(model(xv), yv, return_stats=True)
            pred = model(xv).argmax(1)
        if policy is not None:
            policy.epoch_end(val_stats)
        recall = [float((pred[yv == c] == c).float().mean()) for c in range(3)]
        run.report(epoch + 1, sum(recall) / 3)
    return {"val": {"balanced_accuracy": sum(recall) / 3}}
