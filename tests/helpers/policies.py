"""Building any registered gamma policy for a small test run: through the policies' own ``run_defaults`` (the
arguments that depend on the run's length, its classes and its base gamma, and the learned controllers' wiring),
which is what research/train.py and ``adaptive_focal.compare`` build them with."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

import adaptive_focal as af

NUM_CLASSES = 3
FEATURES = 6

#: meta steps / bandit windows short enough to happen within a test's few steps
_SHORT = {"hypergradient": {"every": 2}, "gammanet": {"every": 2}, "bandit": {"every": 2}}


def loss_mode(name: str) -> str:
    """The FocalLoss mode a policy runs with: softmax where it applies (EFL and ASL are sigmoid-only)."""
    return "softmax" if af.policy_class(name).applies_to("softmax") else "sigmoid"


def fit_targets(mode: str, y: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Class indices as the loss of ``mode`` takes them: one-hot float targets for sigmoid (one-vs-rest)."""
    return torch.nn.functional.one_hot(y, num_classes).float() if mode == "sigmoid" else y


def batches(n: int, batch_size: int, seed: int, mode: str, features: int = FEATURES,
            num_classes: int = NUM_CLASSES) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` random samples in ``(x, y)`` batches, targets in the loss's form."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, features, generator=g), torch.randint(0, num_classes, (n,), generator=g)
    y = fit_targets(mode, y, num_classes)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]


@dataclass
class Run:
    """A small run: what a policy may need to know about it (becomes a :class:`adaptive_focal.RunContext`)."""

    epochs: int
    steps_per_epoch: int
    num_classes: int = NUM_CLASSES
    gamma: float = 2.0
    model: torch.nn.Module | None = None
    val_source: list = field(default_factory=list)
    train_source: list = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None

    def context(self) -> af.RunContext:
        return af.RunContext(epochs=self.epochs, steps_per_epoch=self.steps_per_epoch, num_classes=self.num_classes,
                             gamma=self.gamma, model=self.model, val_source=self.val_source or None,
                             train_source=self.train_source or self.val_source or None, optimizer=self.optimizer,
                             seed=0)


def extra_kwargs(name: str, run: Run) -> dict:
    """What the tests add to the run's defaults: short meta intervals, and a look-ahead learning rate where the
    run has no optimizer (a Trainer builds its own)."""
    out = dict(_SHORT.get(name, {}))
    if run.optimizer is None and name in ("hypergradient", "gammanet"):
        out["lr"] = 0.1
    return out


def policy_kwargs(name: str, loss: af.FocalLoss, run: Run) -> dict:
    """The keyword arguments that build policy ``name`` for ``run``."""
    return {**af.policy_class(name).run_defaults(loss, run.context()), **extra_kwargs(name, run)}


def make_policy(name: str, loss: af.FocalLoss, run: Run) -> af.GammaPolicy:
    """Policy ``name`` for ``loss``, built for ``run``."""
    return af.create_policy(name, loss, context=run.context(), **extra_kwargs(name, run))
