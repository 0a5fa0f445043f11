"""Building any registered gamma policy for a small test run: the one place tests learn what each policy needs.

It mirrors ``research/train.py`` (``_policy_defaults`` / ``_build_policy``): hyperparameters that depend on the
run (its length, the number of classes, the base gamma) and the learned controllers' wiring (the model, held-out
batches, the look-ahead's training batches and learning rate). Once the policies subpackage lands, ``policy_kwargs``
becomes ``policy_class(name).run_defaults(loss, RunContext(...))`` and ``make_policy`` becomes
``create_policy(name, loss, context=RunContext(...))``; the fields of :class:`Run` are ``RunContext``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

import adaptive_focal as af

NUM_CLASSES = 3
FEATURES = 6

#: meta steps / bandit windows short enough to happen within a test's few steps
_SHORT = {"hypergradient": {"every": 2}, "gammanet": {"every": 2}, "bandit": {"every": 2}}


def loss_mode(name: str) -> str:
    """The FocalLoss mode a policy runs with: its ``stats_mode`` (EFL and ASL are sigmoid), else softmax."""
    return af.policy_class(name).stats_mode or "softmax"


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
    """What a policy may need to know about the run (the fields of the policies' ``RunContext``)."""

    epochs: int
    steps_per_epoch: int
    num_classes: int = NUM_CLASSES
    gamma: float = 2.0
    model: torch.nn.Module | None = None
    val_source: list = field(default_factory=list)
    train_source: list = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def policy_kwargs(name: str, loss: af.FocalLoss, run: Run) -> dict:
    """The keyword arguments that build policy ``name`` for ``run`` (research/train.py's rules)."""
    total = run.total_steps
    kwargs = {
        "constant": {"gamma": run.gamma},
        "linear": {"start": 0.0, "end": run.gamma, "total": max(1, total // 2)},
        "cosine": {"start": 2.0 * run.gamma, "end": run.gamma / 2.0, "total": total},
        "step": {"start": 2.0 * run.gamma, "milestones": [max(1, run.epochs // 2)], "factor": 0.5, "unit": "epoch"},
        "exponential": {"start": 2.0 * run.gamma, "factor": 0.25 ** (1.0 / max(1, total)), "gamma_min": 0.0},
        "flsc531": {"milestones": (max(1, run.epochs // 3), max(2, (2 * run.epochs) // 3))},
        "cyclical": {"total": run.epochs},
        "classwise_adafocal": {"num_classes": run.num_classes},
        "efl": {"num_classes": run.num_classes},
    }.get(name, {})
    if name in ("hypergradient", "gammanet", "bandit"):
        if run.model is None or not run.val_source:
            raise ValueError(f"the {name!r} policy needs Run.model and Run.val_source")
        kwargs.update(model=run.model, val_source=run.val_source)
        if name != "bandit":
            kwargs.update(train_source=run.train_source or run.val_source, lr=run.optimizer or 0.1)
        if name == "gammanet":
            kwargs["num_classes"] = run.num_classes
    if name == "sequential":  # a warm-up into a controller, as research/train.py builds it
        warmup = af.create_policy("linear", loss, start=0.0, end=run.gamma, total=run.steps_per_epoch)
        kwargs = {"policies": [warmup, af.create_policy("automated", loss)], "milestones": [run.steps_per_epoch]}
    return {**kwargs, **_SHORT.get(name, {})}


def make_policy(name: str, loss: af.FocalLoss, run: Run) -> af.GammaPolicy:
    """Policy ``name`` for ``loss``, built for ``run``."""
    return af.create_policy(name, loss, **policy_kwargs(name, loss, run))
