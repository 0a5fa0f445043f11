"""Train one model on one long-tailed data set with one loss and one gamma policy, and evaluate it.

Every experiment and every sweep trial runs through :func:`main`. It reads top to bottom: configuration, data,
model, loss, policy, the training loop, evaluation, saving.

    python -m research.train --dataset digits-lt --policy pi
    python -m research.train --dataset dense-det --loss focal --policy efl --set epochs=3
    python -m research.train --config run.json --set policy_kwargs='{"setpoint": 0.6}' --out-dir runs/x

``--set key=value`` overrides any field of :class:`Config` (values are read as JSON when they parse, else as
strings); an unknown key or a value of the wrong type is an error. With ``--out-dir`` the resolved config, the
metrics, the per-epoch history and the gamma trajectory are written to ``run.json`` there, and a checkpoint after
every epoch to ``checkpoint.pt`` (``--set resume=DIR/checkpoint.pt`` continues a run exactly).

Held-out labels. The learned controllers (the policies that require ``val_source``) and the fine-tuning control
(``finetune_every``) draw labelled batches that the model does not train on. ``meta_data`` says where from:
``"train_slice"`` (the default), a stratified ``holdout_fraction`` of the training set held out of training, so
that they see no labels the other arms do not have; or ``"val"``, the class-balanced validation set (the variant
the controllers were first measured with). ``holdout_fraction`` removes the slice from the training set of any
run that sets it, whatever its loss and policy: a study sets it for every arm, so that all of them train on the
same samples. Left unset, a run holds out ``DEFAULT_HOLDOUT`` when it draws from the slice and nothing otherwise,
so the runs of every other arm train on the data set's training set as before (research/README.md, "Fair arms").

Labelled statistics at the end of each epoch. The policies that need validation statistics (AdaFocal and its
classwise variant: ``needs_validation``) read the loss's statistics of a labelled set after every epoch;
``val_stats_data`` says which: ``"val"`` (the default), the class-balanced validation set, as AdaFocal was
published; or ``"train_slice"``, the same held-out slice of the training set, so that such a policy too sees no
labels the other arms of a fair study lack.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

import adaptive_focal as af
from adaptive_focal.callbacks import GammaCallback, MemoryLogger

from . import baselines
from .datasets import load_dataset
from .evaluate import evaluate
from .models import DEFAULT_MODEL, build_model

__all__ = [
    "Config", "DATASET_DEFAULTS", "DEFAULT_HOLDOUT", "Run", "build_run", "draws_held_out_batches", "finetune_step",
    "load_data", "main", "parse_args", "resolve_config", "train_step",
]


# ----------------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Config:
    """Everything a run depends on. ``None`` means "the data set's default" (see :data:`DATASET_DEFAULTS`)."""

    dataset: str = "digits-lt"
    dataset_kwargs: dict = field(default_factory=dict)  # e.g. {"imbalance_ratio": 100}
    model: str | None = None                              # default: DEFAULT_MODEL[dataset]
    model_kwargs: dict = field(default_factory=dict)
    loss: str = "focal"          # ce | focal | cb_ce | cb_focal | logit_adjusted | ghm (research/baselines.py)
    loss_mode: str = "auto"      # auto | softmax | sigmoid (auto: sigmoid for dense-det and sigmoid-only policies)
    loss_kwargs: dict = field(default_factory=dict)
    gamma: float = 2.0           # the focal losses' gamma (the starting point when a policy moves it)
    policy: str = "none"         # none, or any name of adaptive_focal.list_policies()
    policy_kwargs: dict = field(default_factory=dict)
    meta_data: str = "train_slice"         # train_slice | val: the held-out labelled batches of the learned
                                           # controllers and of finetune_every (module docstring)
    holdout_fraction: float | None = None  # share of the training set held out of training, stratified by class;
                                           # None: DEFAULT_HOLDOUT if the run draws from the slice, else 0
    finetune_every: int = 0      # > 0: the fine-tuning control: a plain cross-entropy step on the next held-out
                                 # batch after every finetune_every-th training step
    val_stats_data: str = "val"  # val | train_slice: the labelled set of the end-of-epoch statistics (docstring)
    sampler: str = "none"        # none | class_balanced | sqrt
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str = "adam"      # adam | sgd
    lr: float | None = None
    weight_decay: float = 0.0
    seed: int = 0
    temperature_scaling: bool = True
    posthoc_tau: float = 0.0     # > 0: also report accuracy after post-hoc logit adjustment with this tau
    recall_splits: list | None = None  # [many, few] shot thresholds on training counts
    threads: int | None = None
    out_dir: str | None = None
    resume: str | None = None    # a checkpoint.pt to continue from
    wandb: str = "off"           # off | disabled | offline | online
    log_every: int = 10


#: per data set: what makes a run of about a minute or less on 2 CPU cores (digits-lt: a short budget at the data
#: set's default rho of 50, where the loss still matters; research/README.md, "digits-lt's default")
DATASET_DEFAULTS: dict[str, dict] = {
    "digits-lt": dict(epochs=10, batch_size=64, lr=3e-3, recall_splits=[40, 10]),
    "mnist1d-lt": dict(epochs=15, batch_size=128, lr=3e-3, recall_splits=[400, 60]),
    "gauss-lt": dict(epochs=60, batch_size=128, lr=3e-3, recall_splits=[150, 20]),
    "dense-det": dict(epochs=8, batch_size=4096, lr=3e-3, recall_splits=[40, 15]),
    "seg-toy": dict(epochs=30, batch_size=32, lr=3e-3, recall_splits=[100_000, 10_000]),
    "cifar10-lt": dict(epochs=30, batch_size=128, lr=1e-3, recall_splits=[100, 20]),
    "cifar100-lt": dict(epochs=30, batch_size=128, lr=1e-3, recall_splits=[100, 20]),
}

#: the share of the training set held out for the held-out batches when ``holdout_fraction`` is unset: 10% of
#: every class (at least one sample of each class with two or more; :meth:`research.datasets.Dataset.hold_out`)
DEFAULT_HOLDOUT = 0.1

_CHOICES = {
    "loss_mode": ("auto", "softmax", "sigmoid"),
    "meta_data": ("train_slice", "val"),
    "val_stats_data": ("val", "train_slice"),
    "optimizer": ("adam", "sgd"),
    "wandb": ("off", "disabled", "offline", "online"),
}


def _check_type(name: str, value):
    """Checks (and, for int -> float, converts) one config value against its annotation."""
    hint = typing.get_type_hints(Config)[name]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (str, bool, dict, list) and isinstance(value, base):
            return value
    allowed = " or ".join("None" if o is type(None) else getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"config key {name!r} must be {allowed}, got {value!r}")


def resolve_config(overrides: dict | None = None, base: Config | None = None) -> Config:
    """A checked Config: ``base`` (default Config()) updated by ``overrides``, then the data set's defaults."""
    cfg = dataclasses.replace(base or Config())
    names = [f.name for f in dataclasses.fields(Config)]
    for key, value in (overrides or {}).items():
        if key not in names:
            raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(names)}")
        setattr(cfg, key, _check_type(key, value))
    for key in names:
        setattr(cfg, key, _check_type(key, getattr(cfg, key)))
    if cfg.dataset not in DATASET_DEFAULTS:
        raise ValueError(f"dataset must be one of {', '.join(DATASET_DEFAULTS)}, got {cfg.dataset!r}")
    for key, value in DATASET_DEFAULTS[cfg.dataset].items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    if cfg.model is None:
        cfg.model = DEFAULT_MODEL[cfg.dataset]
    for key, allowed in _CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"config key {key!r} must be one of {', '.join(map(repr, allowed))}, "
                             f"got {getattr(cfg, key)!r}")
    if cfg.policy != "none" and cfg.policy not in af.list_policies():
        raise ValueError(f"policy must be 'none' or one of {', '.join(af.list_policies())}, got {cfg.policy!r}")
    if cfg.loss not in baselines.LOSS_NAMES:
        raise ValueError(f"loss must be one of {', '.join(baselines.LOSS_NAMES)}, got {cfg.loss!r}")
    if cfg.sampler not in baselines.SAMPLER_NAMES:
        raise ValueError(f"sampler must be one of {', '.join(baselines.SAMPLER_NAMES)}, got {cfg.sampler!r}")
    for key in ("epochs", "batch_size", "log_every"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"config key {key!r} must be a positive integer, got {getattr(cfg, key)!r}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"config key 'lr' must be a positive number, got {cfg.lr!r}")
    if cfg.finetune_every < 0:
        raise ValueError(f"config key 'finetune_every' must be 0 (off) or a positive integer, got "
                         f"{cfg.finetune_every!r}")
    batches_from_slice = draws_held_out_batches(cfg) and cfg.meta_data == "train_slice"
    stats_from_slice = cfg.val_stats_data == "train_slice"
    if cfg.holdout_fraction is None:
        cfg.holdout_fraction = DEFAULT_HOLDOUT if batches_from_slice or stats_from_slice else 0.0
    if not 0.0 <= cfg.holdout_fraction < 1.0:
        raise ValueError(f"config key 'holdout_fraction' must be in [0, 1), got {cfg.holdout_fraction!r}")
    if batches_from_slice and cfg.holdout_fraction == 0.0:
        what = f"policy {cfg.policy!r}" if cfg.finetune_every == 0 else "finetune_every"
        raise ValueError(f"{what} draws held-out batches from the training slice (meta_data='train_slice') but "
                         "holdout_fraction=0 holds none out; set holdout_fraction > 0 (or None for "
                         f"{DEFAULT_HOLDOUT}) or meta_data='val'")
    if stats_from_slice and cfg.holdout_fraction == 0.0:
        raise ValueError("val_stats_data='train_slice' reads the end-of-epoch statistics on the training slice but "
                         f"holdout_fraction=0 holds none out; set holdout_fraction > 0 (or None for {DEFAULT_HOLDOUT}) "
                         "or val_stats_data='val'")
    return cfg


def draws_held_out_batches(cfg: Config) -> bool:
    """Whether the run draws labelled held-out batches (``meta_data``): a learned controller (a policy that
    requires ``val_source``) or the fine-tuning control (``finetune_every > 0``)."""
    learned = cfg.policy != "none" and "val_source" in af.policy_class(cfg.policy).requires
    return learned or cfg.finetune_every > 0


# ----------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------
def _loss_mode(cfg: Config, task: str) -> str:
    if cfg.loss_mode != "auto":
        return cfg.loss_mode
    sigmoid_policy = cfg.policy != "none" and not af.policy_class(cfg.policy).applies_to("softmax")
    return "sigmoid" if task == "multilabel-dense" or sigmoid_policy else "softmax"


def _build_policy(cfg: Config, focal: af.FocalLoss, steps_per_epoch: int, num_classes: int, *, model, optimizer,
                  meta_batches):
    """The config's gamma policy for ``focal``: the policy class's defaults for this run (its length, classes, base
    gamma, model, held-out batches, optimizer and seed; ``GammaPolicy.run_defaults``) under ``policy_kwargs``.
    The held-out batches (``meta_data``) are what the learned controllers get as ``val_source``."""
    if cfg.policy == "none":
        return None
    context = af.RunContext(epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, num_classes=num_classes,
                            gamma=cfg.gamma, model=model, val_source=meta_batches, optimizer=optimizer,
                            seed=cfg.seed)
    return af.create_policy(cfg.policy, focal, context=context, **cfg.policy_kwargs)


def _build_loss(cfg: Config, data, mode: str) -> torch.nn.Module:
    kwargs = dict(cfg.loss_kwargs)
    tunes_adjusted_gamma = cfg.loss == "logit_adjusted" and "gamma" not in kwargs and cfg.policy != "none"
    if cfg.loss in ("focal", "cb_focal") or tunes_adjusted_gamma:
        kwargs.setdefault("gamma", cfg.gamma)
    if cfg.loss != "logit_adjusted":
        kwargs.setdefault("mode", mode)
    elif mode == "sigmoid":
        raise ValueError("loss 'logit_adjusted' is softmax-only (Menon et al., 2021); use loss_mode='softmax'")
    loss = baselines.make_loss(cfg.loss, data.num_classes, class_counts=list(data.class_counts), **kwargs)
    return _PixelsAsSamples(loss) if cfg.loss == "ghm" and data.task == "segmentation" else loss


class _PixelsAsSamples(torch.nn.Module):
    """Lets a loss that takes (N, C) logits and (N,) targets score (N, C, H, W) / (N, H, W) pixel by pixel."""

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits, target, **kwargs):
        return self.loss(logits.movedim(1, -1).reshape(-1, logits.shape[1]), target.reshape(-1), **kwargs)


def _targets_for(mode: str, task: str, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sigmoid losses on a multiclass or segmentation task train one-vs-rest on one-hot targets (class dim 1)."""
    if mode == "sigmoid" and task == "multiclass":
        return torch.nn.functional.one_hot(y, num_classes).float()
    if mode == "sigmoid" and task == "segmentation":
        return torch.nn.functional.one_hot(y, num_classes).movedim(-1, 1).float()
    return y


def _predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    model.train()
    return out


def _batches(n: int, cfg: Config, epoch: int, labels: torch.Tensor, task: str):
    """The epoch's mini-batches of indices: a permutation, or a resampling, from a generator seeded per epoch."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    if cfg.sampler == "none" or task != "multiclass":
        order = torch.randperm(n, generator=g)
    else:
        order = torch.tensor(list(baselines.make_sampler(cfg.sampler, labels, generator=g)))
    return [order[i:i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]


def train_step(model, criterion, optimizer, policy, callback, x, y, needs_stats: bool) -> torch.Tensor:
    """One optimizer step on the batch ``(x, y)`` with the policy's per-step call; returns the detached loss."""
    if hasattr(policy, "observe"):  # learned controllers look ahead from the current training batch
        policy.observe(x, y)
    logits = model(x)
    if needs_stats:
        loss, stats = criterion(logits, y, return_stats=True)
    else:
        loss, stats = criterion(logits, y), None
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if callback is not None:
        callback.on_train_batch_end(stats)
    return loss.detach()


def finetune_step(model, optimizer, mode: str, x, y) -> torch.Tensor:
    """One optimizer step of plain cross-entropy (softmax; binary cross-entropy for sigmoid) on the held-out batch
    ``(x, y)``: the fine-tuning control, what the held-out labels buy without any gamma. Returns the detached
    loss."""
    logits = model(x)
    if mode == "softmax":
        loss = F.cross_entropy(logits, y)
    else:
        loss = F.binary_cross_entropy_with_logits(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _steps_per_epoch(n: int, cfg: Config) -> int:
    return math.ceil(n / cfg.batch_size)


# ----------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------
class Run(typing.NamedTuple):
    """What a run trains with, built from its config and data set by :func:`build_run`."""

    model: torch.nn.Module
    mode: str                      # the loss mode: "softmax" or "sigmoid"
    y_fit: torch.Tensor            # training targets in the loss's form (one-hot for sigmoid on class indices)
    criterion: torch.nn.Module
    focal: af.FocalLoss | None     # the focal term a policy drives (None for losses without one)
    optimizer: torch.optim.Optimizer
    stats_set: tuple               # (x, targets in the loss's form) of the end-of-epoch statistics (val_stats_data)
    policy: af.GammaPolicy | None
    meta_batches: list | None      # the held-out (x, y) batches of meta_data, targets in the loss's form


def load_data(cfg: Config):
    """The run's data: ``(data set, held-out slice)``. With ``holdout_fraction > 0`` the data set's training set
    lacks the slice (:meth:`research.datasets.Dataset.hold_out`, drawn with the data set's seed) and the slice is
    its ``(x, y)``; else the data set as built and None."""
    data = load_dataset(cfg.dataset, **{"seed": cfg.seed, **cfg.dataset_kwargs})
    if cfg.holdout_fraction == 0.0:
        return data, None
    return data.hold_out(cfg.holdout_fraction, seed=data.config["seed"])


def _meta_batches(cfg: Config, data, held_out, mode: str) -> list | None:
    """The held-out batches of ``meta_data`` in the loss's target form, in a fixed order; None for a run that
    draws none from a training slice it does not hold out."""
    if cfg.meta_data == "val":
        x, y = data.val
    elif held_out is not None:
        x, y = held_out
    elif draws_held_out_batches(cfg):
        raise ValueError("meta_data='train_slice': this run draws held-out batches from the training slice; pass "
                         "the slice that load_data(cfg) returns (build_run(cfg, data, held_out))")
    else:
        return None
    y = _targets_for(mode, data.task, y, data.num_classes)
    return [(x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]) for i in range(0, x.shape[0], cfg.batch_size)]


def build_run(cfg: Config, data, held_out=None) -> Run:
    """Model, loss, optimizer, gamma policy and held-out batches for ``cfg`` on ``data`` (what :func:`main` trains
    with); ``data`` and ``held_out`` as :func:`load_data` returns them."""
    model = build_model(cfg.model, data, seed=cfg.seed, **cfg.model_kwargs)
    mode = _loss_mode(cfg, data.task)
    x_train, y_train = data.train
    y_fit = _targets_for(mode, data.task, y_train, data.num_classes)
    criterion = _build_loss(cfg, data, mode)
    focal = getattr(criterion, "focal", None)
    if cfg.policy != "none" and focal is None:
        raise ValueError(f"loss {cfg.loss!r} has no focal term for a gamma policy to drive; use focal, cb_focal, "
                         "ce or logit_adjusted with policy")
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
    opt_kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "sgd":
        opt_kwargs["momentum"] = 0.9
    optimizer = opt_cls(model.parameters(), **opt_kwargs)
    if cfg.val_stats_data == "train_slice":  # the end-of-epoch statistics' labelled set (module docstring)
        if held_out is None:
            raise ValueError("val_stats_data='train_slice': pass the slice that load_data(cfg) returns "
                             "(build_run(cfg, data, held_out))")
        x_stats, y_stats = held_out
    else:
        x_stats, y_stats = data.val
    meta_batches = _meta_batches(cfg, data, held_out, mode)
    policy = None if focal is None else _build_policy(
        cfg, focal, _steps_per_epoch(x_train.shape[0], cfg), data.num_classes, model=model, optimizer=optimizer,
        meta_batches=meta_batches)
    stats_set = (x_stats, _targets_for(mode, data.task, y_stats, data.num_classes))
    return Run(model, mode, y_fit, criterion, focal, optimizer, stats_set, policy, meta_batches)


def main(cfg: Config | dict | None = None, *, epoch_callback=None) -> dict:
    """Runs one configuration; returns ``{"config", "data", "metrics", "val_metrics", "history", "gamma", "seconds"}``
    (test metrics, the same metrics on the validation set for model selection, per-epoch records, the gamma
    trajectory).

    ``epoch_callback(epoch, val_metrics, record)``, if given, is called after every epoch with the 1-based epoch,
    the validation metrics of the model at that point (as ``val_metrics`` of the result) and the epoch's history
    record; an exception it raises (e.g. ``optuna.TrialPruned``) stops the run. Sweeps prune trials with it.
    """
    cfg = resolve_config(cfg) if not isinstance(cfg, Config) else resolve_config(base=cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()

    # data (less the held-out slice), model, loss, optimizer, gamma policy and held-out batches
    data, held_out = load_data(cfg)
    model, mode, y_fit, criterion, focal, optimizer, stats_set, policy, meta_batches = build_run(cfg, data, held_out)
    x_train, y_train = data.train
    x_val, y_val = data.val
    x_stats, y_stats_fit = stats_set
    memory = MemoryLogger()
    loggers = [memory]
    wandb_logger = None
    if cfg.wandb != "off":
        from adaptive_focal.integrations.wandb import WandbLogger
        wandb_logger = WandbLogger(policy, mode=cfg.wandb, config=asdict(cfg), dir=cfg.out_dir,
                                   name=f"{cfg.dataset}-{cfg.loss}-{cfg.policy}-s{cfg.seed}")
        loggers.append(wandb_logger)
    callback = None if policy is None else GammaCallback(policy, loggers=loggers, log_every=cfg.log_every)
    needs_stats = policy is not None and policy.needs_stats
    needs_val = policy is not None and policy.needs_validation

    history: list[dict] = []
    first_epoch = 0
    if cfg.resume:
        first_epoch, history = _load_checkpoint(cfg, model, optimizer, criterion, callback)

    # training (the fine-tuning control's batch follows from the step number, so a resumed run draws the same)
    steps_per_epoch = _steps_per_epoch(x_train.shape[0], cfg)
    for epoch in range(first_epoch, cfg.epochs):
        total, count, finetune_losses = 0.0, 0, []
        for i, idx in enumerate(_batches(x_train.shape[0], cfg, epoch, y_train, data.task)):
            loss = train_step(model, criterion, optimizer, policy, callback, x_train[idx], y_fit[idx], needs_stats)
            total += float(loss) * len(idx)
            count += len(idx)
            step = epoch * steps_per_epoch + i + 1
            if cfg.finetune_every and step % cfg.finetune_every == 0:
                x_held, y_held = meta_batches[(step // cfg.finetune_every - 1) % len(meta_batches)]
                finetune_losses.append(float(finetune_step(model, optimizer, mode, x_held, y_held)))
        record = {"epoch": epoch + 1, "train_loss": total / max(1, count)}
        if finetune_losses:
            record["finetune_loss"] = sum(finetune_losses) / len(finetune_losses)
        if callback is not None:
            val_stats = None
            if needs_val or focal is not None:
                _, val_stats = focal(_predict(model, x_stats, 4 * cfg.batch_size), y_stats_fit, return_stats=True)
                record["val_mean_pt"] = float(val_stats.mean_pt)
            callback.on_epoch_end(val_stats)
        history.append(record)
        if cfg.out_dir:
            _save_checkpoint(cfg, epoch + 1, model, optimizer, criterion, callback, history)
        if epoch_callback is not None:
            epoch_val = evaluate(data.task, _predict(model, x_val, 4 * cfg.batch_size), y_val, data.class_counts,
                                 temperature_scaling=False, many=cfg.recall_splits[0], few=cfg.recall_splits[1])
            epoch_callback(epoch + 1, epoch_val, dict(record))

    # evaluation
    x_test, y_test = data.test
    test_logits = _predict(model, x_test, 4 * cfg.batch_size)
    val_logits = _predict(model, x_val, 4 * cfg.batch_size)
    many, few = cfg.recall_splits
    metrics = evaluate(data.task, test_logits, y_test, data.class_counts, val_logits, y_val,
                       temperature_scaling=cfg.temperature_scaling and mode == "softmax",
                       posthoc_tau=cfg.posthoc_tau, many=many, few=few)
    val_metrics = evaluate(data.task, val_logits, y_val, data.class_counts, temperature_scaling=False,
                           many=many, few=few)
    result = {
        "config": asdict(cfg),
        "data": dict(data.config),  # the data set's resolved arguments (its defaults filled in)
        "metrics": metrics,
        "val_metrics": val_metrics,
        "history": history,
        "gamma": {"steps": memory.steps, "epochs": memory.epochs},
        "seconds": time.perf_counter() - start,
    }
    if wandb_logger is not None:
        wandb_logger.run.summary.update({f"test/{k}": v for k, v in metrics.items()})
        wandb_logger.finish()
    if cfg.out_dir:
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps(result, indent=1, default=float))
    return result


# ----------------------------------------------------------------------------------------------------------
# checkpoints: everything the next epoch depends on (the data order is a function of seed and epoch)
# ----------------------------------------------------------------------------------------------------------
_RESUME_FREE = ("resume", "out_dir", "epochs", "wandb", "threads", "log_every")
#: config keys added after checkpoints were first written: what a run made before each existed did
_ADDED_KEYS = {"meta_data": "val", "holdout_fraction": 0.0, "finetune_every": 0, "val_stats_data": "val"}


def _save_checkpoint(cfg, epoch, model, optimizer, criterion, callback, history) -> None:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "epoch": epoch,
        "config": asdict(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "loss": criterion.state_dict(),
        "callback": None if callback is None else callback.state_dict(),
        "history": history,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = out / "checkpoint.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(out / "checkpoint.pt")  # a crash mid-save never leaves a half-written checkpoint


def _load_checkpoint(cfg, model, optimizer, criterion, callback):
    state = torch.load(cfg.resume, weights_only=False)
    saved = state["config"]
    # meta_data only matters to a run that draws held-out batches
    free = _RESUME_FREE if draws_held_out_batches(cfg) else (*_RESUME_FREE, "meta_data")
    changed = sorted(k for k, v in asdict(cfg).items() if k not in free and saved.get(k, _ADDED_KEYS.get(k)) != v)
    if changed:
        raise ValueError(f"resume: the checkpoint was made with a different config for {changed}; "
                         f"checkpoint {[saved.get(k, _ADDED_KEYS.get(k)) for k in changed]}, now "
                         f"{[getattr(cfg, k) for k in changed]}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    criterion.load_state_dict(state["loss"], strict=False)
    if callback is not None and state["callback"] is not None:
        callback.load_state_dict(state["callback"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"]), list(state["history"])


# ----------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a JSON file of config keys")
    parser.add_argument("--dataset")
    parser.add_argument("--policy")
    parser.add_argument("--loss")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out-dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (JSON value, or a plain string)")
    args = parser.parse_args(argv)
    overrides: dict = {}
    if args.config:
        overrides.update(json.loads(Path(args.config).read_text()))
    for key in ("dataset", "policy", "loss", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.out_dir is not None:
        overrides["out_dir"] = args.out_dir
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            parser.error(f"--set needs KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides[key.strip()] = value
    try:
        return resolve_config(overrides)
    except ValueError as err:
        parser.error(str(err))


def _print_summary(result: dict) -> None:
    cfg = result["config"]
    print(f"{cfg['dataset']} | loss {cfg['loss']} | policy {cfg['policy']} | seed {cfg['seed']} | "
          f"{result['seconds']:.1f} s")
    for key, value in result["metrics"].items():
        print(f"  {key:28s} {value:.4f}" if isinstance(value, float) else f"  {key:28s} {value}")


if __name__ == "__main__":
    _print_summary(main(parse_args(sys.argv[1:])))
