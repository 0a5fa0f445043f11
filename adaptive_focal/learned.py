"""Learned gamma controllers: gamma chosen for a *validation* objective, a bilevel problem.

Why gamma cannot be learned on the training loss. The focal loss of an example,
``FL = -(1 - p_t)**gamma * ln(p_t)``, falls as gamma grows for every ``0 < p_t < 1``:

    dFL/dgamma = -(1 - p_t)**gamma * ln(1 - p_t) * ln(p_t) < 0,

so gradient descent on the training loss over gamma (together with the model, or alone) raises gamma without
bound: the loss "improves" by switching itself off. No published method learns focal gamma; the controllers here
optimise what gamma is for, the model's performance on held-out data:

    min_gamma  L_val(theta*(gamma)),    theta*(gamma) = the parameters that training with FL(gamma) produces,

with ``L_val`` the plain cross-entropy (softmax) or binary cross-entropy (sigmoid) of the model on validation
batches, never the focal loss (whose own dependence on gamma is the problem above). ``val_loss_fn`` replaces it
(e.g. a class-balanced cross-entropy for long-tailed data).

Three controllers, each registered with :func:`~adaptive_focal.register_policy`:

* ``"hypergradient"`` (:class:`HypergradientGamma`): gamma (global or per class) moved by the one-step look-ahead
  hypergradient of the validation loss (Luketina et al., 2016; Baydin et al., 2018).
* ``"gammanet"`` (:class:`GammaNet`): a small network maps difficulty features to gamma and is meta-trained
  through the same look-ahead (in the spirit of Meta-Weight-Net, Shu et al., 2019).
* ``"bandit"`` (:class:`BanditGamma`): an adversarial bandit (Exp3.S, Auer et al., 2002) picks gamma from a
  grid every ``every`` steps, rewarded by the drop of the validation loss over its window.

What they need, given explicitly at construction. The bilevel signal needs the model, held-out data and (for the
look-ahead) training batches, which the policy API's ``step(stats)`` does not carry:

* ``model``: the ``nn.Module`` being trained (the underlying module, not a DDP or compile wrapper); it is only
  read: the look-ahead runs it in its current mode (train mode inside a training loop, as Meta-Weight-Net does)
  through :func:`torch.func.functional_call` on copies of its buffers (batch-norm running statistics are not
  touched, parameters' ``.grad`` neither) and under :func:`torch.random.fork_rng`, so dropout in the look-ahead
  does not move the caller's random stream; the bandit measures in eval mode and restores every module's mode;
* ``val_source``: an iterable of ``(x, y)`` validation batches (a DataLoader, a list, or an endless iterator),
  cycled: a re-iterable is iterated again when it runs out; ``model(x)`` must give the logits the loss takes;
* the look-ahead's training batch (``hypergradient`` and ``gammanet``): either ``train_source`` (an iterable of
  ``(x, y)`` batches, cycled like ``val_source``) or ``policy.observe(x, y)`` called before ``policy.step(stats)``
  with the batch of that step (an observed batch takes precedence; the look-ahead starts from the parameters
  after that step's optimizer update); ``lr``: the learning rate of the virtual SGD step (a number, or the optimizer,
  whose first parameter group's current learning rate is read);
* ``every`` (k): the meta step runs after every k-th call of ``step``; the other steps only count.

Cost. A meta step of the look-ahead controllers is a forward and a graph-keeping backward on the training batch,
a forward and backward on the validation batch and one backward through the first backward: measured at about
5x a training step (small CNN, batch 64, 3x32x32, CPU), so the default ``every=20`` adds about 25% to the average
step. ``lookahead_params`` restricts the virtual step to some parameters (e.g. the classifier head,
``lookahead_params="fc."``), the usual cheaper approximation of the look-ahead: there the meta step cost about
1.2x a training step (+6% at ``every=20``). The bandit's window end is two validation forward passes (under 1x a
step; +2% at ``every=50``). Between meta steps ``step`` only counts (about 0.02 ms; ``gammanet`` also adds the
batch statistics to its features, about 0.16 ms). Meta steps copy the sources' batches to the model's device and
are written not to read values back to the host (not checked on a GPU yet).

Resume. ``state_dict()`` holds everything the controller's future depends on apart from the model and the data:
gamma, the network's weights and its optimiser (``gammanet``), the bandit's weights, arm and random generator, and
each source's position (passes completed, batches drawn in the current pass). A freshly built policy given the
state and sources built the same way as the saved one's continues the identical trajectory: after
``load_state_dict`` each source is iterated from its start again and skips the batches the saved policy had drawn
in its current pass. Sources are drawn from without moving the global random generator, so the policy does not
change the caller's random stream; a shuffling DataLoader draws its order from the global generator's state at the
start of each pass (or from its own ``generator``), so after a restart it gives a valid but different order unless
that state is restored. Under ``torch.distributed`` the meta signals (hypergradient, meta-gradients, validation losses) are
averaged over the ranks, so every rank writes the same gamma.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .loss import FocalLoss
from .policy import GammaPolicy, _check_number, _class_shape, register_policy
from .stats import BatchStats
from .table import GammaTable

__all__ = ["BanditGamma", "GammaNet", "HypergradientGamma"]


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------
class _Source:
    """Cycles through an iterable of ``(x, y)`` batches and counts where it is, so that a resumed policy can skip
    to the same place.

    A re-iterable source (a DataLoader, a list) starts a new pass when it runs out; a one-shot iterator cannot, and
    running out of it is an error. Drawing never moves the global random generator.
    """

    def __init__(self, source, name: str) -> None:
        _check_source(source, name)
        self.source = source
        self.name = name
        self.one_shot = isinstance(source, Iterator)
        self.passes = 0  # completed passes
        self.position = 0  # batches drawn in the current pass
        self._it = None

    def next(self):
        # a DataLoader draws its workers' base seed (and a shuffling sampler its permutation) from the global
        # generator when a pass starts: keep that from moving the caller's random stream
        with torch.random.fork_rng(devices=[]):
            return self._next()

    def _next(self):
        if self._it is None:
            self._it = iter(self.source)
            for i in range(self.position):  # after load(): skip what the saved policy had drawn in this pass
                try:
                    next(self._it)
                except StopIteration:
                    raise RuntimeError(
                        f"{self.name} has fewer batches ({i}) than the saved policy had drawn in its current pass "
                        f"({self.position}): resume with a source built the same way as the saved one's"
                    ) from None
        try:
            item = next(self._it)
        except StopIteration:
            if self.one_shot:
                raise RuntimeError(
                    f"{self.name} ran out of batches after {self.position}: pass a re-iterable (a DataLoader or a "
                    "list of batches, iterated again when it ends) or an endless iterator"
                ) from None
            self._it = iter(self.source)
            try:
                item = next(self._it)
            except StopIteration:
                raise ValueError(f"{self.name} is empty: it must yield (x, y) batches") from None
            self.passes += 1
            self.position = 0
        self.position += 1
        return _unpack(item, self.name)

    def state(self) -> dict:
        return {"passes": self.passes, "position": self.position}

    @staticmethod
    def check(state, key: str) -> None:
        if not (isinstance(state, dict) and all(isinstance(state.get(k), int) and not isinstance(state[k], bool)
                                                and state[k] >= 0 for k in ("passes", "position"))):
            raise ValueError(f"state[{key!r}] must be a dict of non-negative ints 'passes' and 'position', "
                             f"got {state!r}")

    def load(self, state) -> None:
        self.passes, self.position = state["passes"], state["position"]
        self._it = None


def _check_source(source, name: str) -> None:
    if isinstance(source, torch.Tensor):
        raise TypeError(f"{name} must be an iterable of (x, y) batches (a DataLoader, a list of batches or an "
                        f"iterator), got a Tensor; to use one batch pass [(x, y)]")
    if isinstance(source, tuple) and len(source) == 2 and all(isinstance(v, torch.Tensor) for v in source):
        raise TypeError(f"{name} must be an iterable of (x, y) batches (a DataLoader, a list of batches or an "
                        f"iterator), got one (x, y) pair; to use one batch pass [(x, y)]")
    if not isinstance(source, Iterable):
        raise TypeError(f"{name} must be an iterable of (x, y) batches (a DataLoader, a list of batches or an "
                        f"iterator), got {type(source).__name__}")


def _unpack(item, name: str):
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise TypeError(f"{name} must yield (x, y) batches (tuples or lists: inputs, targets), got "
                    f"{type(item).__name__}")


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(v, device) for v in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _mean_over_ranks(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The average of each tensor over the ranks of ``torch.distributed`` (one packed all_reduce); unchanged
    outside an initialised process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = flat / dist.get_world_size()
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset:offset + t.numel()].reshape(t.shape).to(t.dtype))
        offset += t.numel()
    return out


# ---------------------------------------------------------------------------------------------------------------
# the two objectives
# ---------------------------------------------------------------------------------------------------------------
def _log1mexp(z: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(z))`` for ``z <= 0`` (Maechler's two branches), finite with finite first and second
    derivatives: z is kept at or below ``-eps`` and each branch only sees the inputs it is accurate for."""
    eps = torch.finfo(z.dtype).eps
    z = z.clamp(max=-eps)
    near = z > -math.log(2.0)
    a = torch.where(near, z, torch.full_like(z, -1.0))
    b = torch.where(near, torch.full_like(z, -1.0), z)
    return torch.where(near, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(b)))


def _class_grid(x: torch.Tensor) -> torch.Tensor:
    """The class index (dim 1) of every element of ``x``; zeros for inputs without a class dimension."""
    if x.dim() < 2:
        return torch.zeros(x.shape, dtype=torch.int64, device=x.device)
    shape = [1] * x.dim()
    shape[1] = x.shape[1]
    return torch.arange(x.shape[1], device=x.device).view(shape).expand(x.shape)


def _lookahead_focal(loss: FocalLoss, logits: torch.Tensor, target: torch.Tensor, gamma_fn) -> torch.Tensor:
    """The training loss of the look-ahead: ``loss``'s focal loss (its alpha, weight, label smoothing,
    ignore_index, detach_modulator and reduction) with the per-term gamma ``gamma_fn(p_t, cls)``, written with
    plain autograd so that it is twice differentiable, in gamma and the logits together.

    ``softmax_focal_loss`` differentiates its modulating factor in closed form (a ``once_differentiable``
    autograd function, which the look-ahead's second derivative cannot pass through); the value and the gradient
    in the logits here equal the library's (tests/test_policies_learned.py checks both modes). ``gamma_fn``
    receives each term's detached p_t (sigmoid: per element; softmax: ``q_c`` of every class term) and its class
    index and returns gamma (>= 0) broadcastable to them. ``reduction="none"`` is reduced as ``.mean()`` of the
    unreduced losses would be (over every element or sample, ignored ones included as zeros).
    """
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(dtype)
    ls = float(loss.label_smoothing)
    alpha, weight = loss.alpha, loss.weight
    if loss.mode == "sigmoid":
        t = target.detach().to(device=x.device, dtype=dtype)
        valid = None if loss.ignore_index is None else t != loss.ignore_index
        if valid is not None:
            t = torch.where(valid, t, torch.zeros_like(t))
        ts = t * (1.0 - ls) + 0.5 * ls if ls else t
        ce = F.binary_cross_entropy_with_logits(x, ts, reduction="none")
        log_q = torch.logaddexp(torch.log(ts) + F.logsigmoid(-x), torch.log1p(-ts) + F.logsigmoid(x))  # log(1-p_t)
        with torch.no_grad():
            p = torch.sigmoid(x)
            p_t = p * ts + (1.0 - p) * (1.0 - ts)
        gam = gamma_fn(p_t, _class_grid(x)).to(dtype)
        elem = torch.exp(gam * (log_q.detach() if loss.detach_modulator else log_q)) * ce
        if alpha is not None:
            av = torch.as_tensor(alpha, device=x.device, dtype=dtype)
            if av.dim() == 1:
                av = av.view([1, -1] + [1] * (x.dim() - 2))
            elem = elem * (av * ts + (1.0 - av) * (1.0 - ts))
        if weight is not None:
            elem = elem * weight.to(device=x.device, dtype=dtype)
        if valid is not None:
            elem = torch.where(valid, elem, torch.zeros_like(elem))
        total = elem.sum()
        if loss.reduction == "sum":
            return total
        if loss.reduction == "positives":
            pos = t >= 0.5 if valid is None else (t >= 0.5) & valid
            return total / pos.sum().clamp_min(1).to(dtype)
        if loss.reduction == "none":
            return total / max(elem.numel(), 1)
        count = elem.numel() if valid is None else valid.sum().clamp_min(1).to(dtype)
        return total / count
    # softmax: every class term, y_c (1 - q_c)**gamma (-log q_c), weighted by alpha_c and weight_c
    c = x.shape[1]
    cshape = [1, c] + [1] * (x.dim() - 2)
    logp = F.log_softmax(x, dim=1)
    valid = None
    if target.is_floating_point():
        y = target.detach().to(device=x.device, dtype=dtype)
        y = y * (1.0 - ls) + ls / c if ls else y
        denom = torch.tensor(float(logp[:, 0].numel()), device=x.device, dtype=dtype)
    else:
        tgt = target.to(device=x.device, dtype=torch.int64)
        valid = tgt != loss.ignore_index if loss.ignore_index is not None else torch.ones_like(tgt, dtype=torch.bool)
        cls = torch.where(valid, tgt, torch.zeros_like(tgt))
        y = torch.zeros_like(logp).scatter_(1, cls.unsqueeze(1), 1.0)
        y = y * (1.0 - ls) + ls / c if ls else y
        w_y = valid.to(dtype) if weight is None else weight.to(device=x.device, dtype=dtype)[cls] * valid
        denom = w_y.sum()
    log1mq = _log1mexp(logp)
    gam = gamma_fn(logp.detach().exp(), _class_grid(x)).to(dtype)
    terms = torch.exp(gam * (log1mq.detach() if loss.detach_modulator else log1mq)) * (-logp) * y
    if alpha is not None:
        terms = terms * torch.as_tensor(alpha, device=x.device, dtype=dtype).view(cshape)
    if weight is not None:
        terms = terms * weight.to(device=x.device, dtype=dtype).view(cshape)
    per_sample = terms.sum(1)
    if valid is not None:
        per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
    total = per_sample.sum()
    if loss.reduction == "sum":
        return total
    if loss.reduction == "none":
        return total / max(per_sample.numel(), 1)
    return total / torch.where(denom > 0, denom, torch.ones_like(denom))


def _plain_val_loss(mode: str, ignore_index):
    """The default validation objective: cross-entropy (softmax) or binary cross-entropy (sigmoid), mean over the
    non-ignored samples / elements; not the focal loss."""

    def softmax(logits, y):
        if y.is_floating_point():
            return F.cross_entropy(logits, y)
        return F.cross_entropy(logits, y.long(), ignore_index=-100 if ignore_index is None else ignore_index)

    def sigmoid(logits, y):
        y = y.to(logits.dtype)
        if ignore_index is None:
            return F.binary_cross_entropy_with_logits(logits, y)
        valid = y != ignore_index
        y = torch.where(valid, y, torch.zeros_like(y))
        elem = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        return torch.where(valid, elem, torch.zeros_like(elem)).sum() / valid.sum().clamp_min(1)

    return softmax if mode == "softmax" else sigmoid


# ---------------------------------------------------------------------------------------------------------------
# the shared machinery
# ---------------------------------------------------------------------------------------------------------------
class _LearnedPolicy(GammaPolicy):
    """What the learned controllers share: the model, the sources, the meta-step schedule and the look-ahead."""

    #: whether the meta step needs a training batch (train_source or observe)
    needs_train_batch = True

    def __init__(self, loss: FocalLoss, model, val_source, train_source, lr, every, val_loss_fn,
                 lookahead_params=None) -> None:
        super().__init__(loss)
        if model is None:
            raise ValueError(f"the {self.name!r} policy needs model=: the nn.Module being trained (it reads its "
                             "parameters to evaluate the validation objective)")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"model must have trainable parameters (requires_grad=True), got "
                             f"{type(model).__name__} with none")
        if val_source is None:
            raise ValueError(f"the {self.name!r} policy needs val_source=: an iterable of held-out (x, y) batches "
                             "(a DataLoader, a list of batches or an endless iterator), cycled")
        self.every = _check_number("every", every, 1, integer=True)
        if val_loss_fn is not None and not callable(val_loss_fn):
            raise TypeError(f"val_loss_fn must be None or a callable (logits, y) -> scalar tensor, got "
                            f"{type(val_loss_fn).__name__}")
        self._val = _Source(val_source, "val_source")
        self._train = None
        if self.needs_train_batch:
            if train_source is not None:
                self._train = _Source(train_source, "train_source")
            if lr is None:
                raise ValueError(f"the {self.name!r} policy needs lr=: the learning rate of the one-step "
                                 "look-ahead (a number, or the model's optimizer to read its current rate)")
            if isinstance(lr, torch.optim.Optimizer):
                self._optimizer = lr
                self.lr = None
            else:
                self._optimizer = None
                self.lr = _check_number("lr", lr, 0.0, low_open=True)
        self._prefixes = None
        if lookahead_params is not None:
            if isinstance(lookahead_params, str):
                lookahead_params = (lookahead_params,)
            prefixes = tuple(lookahead_params) if isinstance(lookahead_params, Iterable) else None
            trainable = [n for n, p in model.named_parameters() if p.requires_grad]
            if not prefixes or not all(isinstance(v, str) for v in prefixes):
                raise ValueError(f"lookahead_params must be None (every trainable parameter) or parameter-name "
                                 f"prefixes (strings), got {lookahead_params!r}")
            if not any(n.startswith(prefixes) for n in trainable):
                raise ValueError(f"lookahead_params={list(prefixes)!r} match no trainable parameter of the model; "
                                 f"its trainable parameters: {trainable}")
            self._prefixes = prefixes
        self.model = model
        self._val_loss = val_loss_fn or _plain_val_loss(loss.mode, loss.ignore_index)
        self._observed = None

    # -- the training-loop interface ---------------------------------------------------------------------
    def observe(self, x, y) -> None:
        """Hands the policy the training batch of this step (inputs for ``model(x)`` and targets), for the
        look-ahead of the next ``step``; call it before ``step`` when no ``train_source`` was given. Only
        references are kept, until that ``step``."""
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"observe(x, y): y must be the targets as a tensor, got {type(y).__name__}")
        self._observed = (x, y)

    def step(self, stats: BatchStats | None = None) -> None:
        """As :meth:`GammaPolicy.step`; after every ``every``-th call it also runs the meta step."""
        self._check_stats("stats", stats, required=self.needs_stats)
        if (self.needs_train_batch and self._meta_due() and self._train is None
                and self._observed is None):
            raise ValueError(
                f"the {self.name!r} policy needs the training batch at this step (a meta step: every={self.every}): "
                "call policy.observe(x, y) before policy.step(stats), or build the policy with train_source="
            )
        super().step(stats)
        self._observed = None

    @property
    def meta_steps(self) -> int:
        """Meta steps run so far."""
        return self.step_count // self.every

    def _meta_due(self) -> bool:
        return (self.step_count + 1) % self.every == 0

    # -- pieces for subclasses ---------------------------------------------------------------------------------
    def _current_lr(self) -> float:
        if self._optimizer is not None:
            return float(self._optimizer.param_groups[0]["lr"])
        return self.lr

    def _model_device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _fork_rng(self):
        device = self._model_device()
        devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def _buffers(self) -> dict:
        """Copies of the model's buffers: a look-ahead forward in train mode updates the copies' batch-norm
        statistics, not the model's."""
        return {name: b.clone() for name, b in self.model.named_buffers()}

    def _params(self) -> tuple[list[str], list[torch.Tensor], dict]:
        """The parameters the virtual step moves (names, tensors) and the others, detached (no graph through
        them)."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if self._prefixes is None:
            return [n for n, _ in named], [p for _, p in named], {}
        moving = [(n, p) for n, p in named if n.startswith(self._prefixes)]
        fixed = {n: p.detach() for n, p in named if not n.startswith(self._prefixes)}
        return [n for n, _ in moving], [p for _, p in moving], fixed

    def _val_objective(self, params: dict | None, x, y) -> torch.Tensor:
        logits = functional_call(self.model, {**(params or {}), **self._buffers()}, (x,))
        out = self._val_loss(logits, y)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise TypeError(f"the validation loss must be a scalar tensor, got {type(out).__name__}"
                            + (f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else ""))
        return out.reshape(())

    def _train_batch(self):
        """The observed batch of this step if there is one, else the next of ``train_source``."""
        if self._observed is not None:
            return self._observed
        return self._train.next()

    def _lookahead(self, gamma_fn, meta_params: list[torch.Tensor], batch=None):
        """The one-step look-ahead hypergradient of the validation loss in ``meta_params``.

        With ``theta' = theta - lr * grad_theta L_train(theta, gamma)`` (a virtual SGD step on the training batch,
        gamma = gamma_fn(meta_params)), returns ``d L_val(theta') / d meta_params``
        ``= -lr * (d/d meta_params grad_theta L_train)^T grad_theta L_val(theta')``: the validation gradient is
        taken at theta' (detached, which is exact: L_val depends on the meta-parameters only through theta'), then
        one backward through the first backward. Also returns L_val(theta') and L_train(theta) (detached).
        """
        device = self._model_device()
        x, y = (_to(v, device) for v in (self._train_batch() if batch is None else batch))
        vx, vy = (_to(v, device) for v in self._val.next())
        lr = self._current_lr()
        names, params, fixed = self._params()
        with self._fork_rng(), torch.enable_grad():
            logits = functional_call(self.model, {**fixed, **dict(zip(names, params)), **self._buffers()}, (x,))
            l_train = _lookahead_focal(self.loss, logits, y, gamma_fn)
            grads = torch.autograd.grad(l_train, params, create_graph=True, allow_unused=True)
            used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            ahead = {n: (p - lr * g).detach().requires_grad_() if g is not None else p.detach()
                     for n, p, g in zip(names, params, grads)}
            l_val = self._val_objective({**fixed, **ahead}, vx, vy)
            v = torch.autograd.grad(l_val, [ahead[names[i]] for i in used], allow_unused=True) if used else []
            pairs = [(grads[i], gv) for i, gv in zip(used, v) if gv is not None]
            if pairs:
                meta = torch.autograd.grad([g for g, _ in pairs], meta_params, grad_outputs=[gv for _, gv in pairs],
                                           allow_unused=True)
            else:
                meta = [None] * len(meta_params)
        meta = [torch.zeros_like(m) if g is None else -lr * g.detach() for g, m in zip(meta, meta_params)]
        if self.sync_stats:
            meta = _mean_over_ranks(meta)
        return meta, l_val.detach(), l_train.detach()

    # -- state ---------------------------------------------------------------------------------------------
    def _source_state(self) -> dict:
        out = {"val_source": self._val.state()}
        if self._train is not None:
            out["train_source"] = self._train.state()
        return out

    def _check_sources(self, state: dict) -> None:
        if "val_source" not in state:
            raise ValueError(f"state is missing 'val_source'; keys present: {sorted(state)}")
        _Source.check(state["val_source"], "val_source")
        if self._train is not None:
            if "train_source" not in state:
                raise ValueError("state has no 'train_source' position but this policy was built with train_source=")
            _Source.check(state["train_source"], "train_source")

    def _load_sources(self, state: dict) -> None:
        """Restores the sources' positions (call after every check has passed)."""
        self._check_sources(state)
        self._val.load(state["val_source"])
        if self._train is not None:
            self._train.load(state["train_source"])


def _check_bounds(gamma_min, gamma_max, gamma_init) -> tuple[float, float, float]:
    lo = _check_number("gamma_min", gamma_min, 0.0, 20.0)
    hi = _check_number("gamma_max", gamma_max, lo, 50.0)
    if hi == lo:
        raise ValueError(f"gamma_max must be greater than gamma_min={lo}, got {gamma_max!r}")
    init = _check_number("gamma_init", gamma_init, lo, hi)
    return lo, hi, init


def _as_state_tensor(state: dict, key: str, like: torch.Tensor) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"state is missing {key!r}; keys present: {sorted(state)}")
    value = torch.as_tensor(state[key])
    if value.shape != like.shape:
        raise ValueError(f"state[{key!r}] has shape {tuple(value.shape)}, expected {tuple(like.shape)}")
    return value.to(device=like.device, dtype=like.dtype)


# ---------------------------------------------------------------------------------------------------------------
# 1. hypergradient
# ---------------------------------------------------------------------------------------------------------------
@register_policy("hypergradient")
class HypergradientGamma(_LearnedPolicy):
    """Online bilevel gamma by the one-step look-ahead hypergradient (new in adaptive_focal).

    Hyperparameter optimisation by hypergradients through one training step (Luketina et al., 2016, "Scalable
    Gradient-Based Tuning of Continuous Regularization Hyperparameters"; Baydin et al., 2018, "Online Learning
    Rate Adaptation with Hypergradient Descent"), applied to gamma. Every ``every`` steps, on a training batch
    and a validation batch:

        theta' = theta - lr * grad_theta L_train(theta, gamma)                (a virtual SGD step)
        h      = d L_val(theta') / d gamma = -lr * <grad_theta L_val(theta'), d/dgamma grad_theta L_train>
        gamma  <- clip(gamma - meta_lr * clip(h, -clip, clip), gamma_min, gamma_max)

    ``L_train`` is the loss's own focal loss (its settings, with gamma as a variable; see ``_lookahead_focal``)
    and ``L_val`` the plain cross-entropy / BCE of the model on the validation batch (not the focal loss, which
    decreases in gamma everywhere and would send gamma to infinity), evaluated at the look-ahead parameters
    theta' (exactly, not at theta): the first-order term of the validation loss after one step. The virtual step
    is plain SGD with ``lr`` whatever the real optimiser is (as in the papers); for Adam-like optimisers pass an
    ``lr`` of the size of a typical SGD step, or tune ``meta_lr``. ``per_class=True`` learns one gamma per class
    (a (C,) gamma; ``h`` is then a vector, clipped elementwise). A non-finite ``h`` leaves gamma unchanged.

    Step size. ``h`` scales with ``lr`` and with the model's gradient norms (about 1e-3 for a small MLP at
    lr 0.5), so the defaults (``meta_lr=10``, ``clip=0.05``) move gamma by about 0.02 per meta step there and by
    at most ``meta_lr * clip = 0.5``. ``normalize=True`` divides ``h`` by the root of its running mean square
    (momentum 0.9, bias-corrected, as RMSprop / Adam do) before clipping, which makes the step independent of that
    scale: then ``meta_lr`` is the typical move of gamma per meta step (e.g. ``meta_lr=0.05, clip=3``).

    The last hypergradient is ``policy.last_hypergradient`` (a tensor on the loss's device).

    Args:
        loss: the FocalLoss to drive.
        model, val_source, train_source, lr, every: see the module docstring (``every`` defaults to 20).
        meta_lr: the step size beta of the gamma update.
        clip: bound c on ``|h|`` (on ``h / rms(h)`` with ``normalize``) before the step.
        gamma_init, gamma_min, gamma_max: the start and the bounds (gamma_min >= 0).
        per_class, num_classes: one gamma per class (num_classes required).
        normalize: divide ``h`` by its running root mean square (see above).
        lookahead_params: None (every trainable parameter takes the virtual step) or parameter-name prefixes of
            the parameters that do (the others stay fixed; cheaper, an approximation).
        val_loss_fn: ``(logits, y) -> scalar`` replacing the plain cross-entropy / BCE.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 3)
        >>> batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(3)]
        >>> criterion = FocalLoss("softmax", gamma=2.0)
        >>> policy = create_policy("hypergradient", criterion, model=model, val_source=batches[2:], lr=0.5,
        ...                        every=2, gamma_init=2.0, meta_lr=10.0, clip=0.05)
        >>> for x, y in batches[:2]:
        ...     loss, stats = criterion(model(x), y, return_stats=True)  # (the optimizer step goes here)
        ...     policy.observe(x, y)
        ...     policy.step(stats)
        >>> policy.meta_steps, float(criterion.gamma) != 2.0
        (1, True)
    """

    search_space = {"meta_lr": ("float", 0.1, 100.0, True), "every": ("int", 1, 50),
                    "gamma_init": ("float", 0.0, 5.0, False)}

    def __init__(self, loss: FocalLoss, model: nn.Module | None = None, val_source=None, train_source=None,
                 lr=None, every: int = 20, meta_lr: float = 10.0, clip: float = 0.05, gamma_init: float = 2.0,
                 gamma_min: float = 0.0, gamma_max: float = 10.0, per_class: bool = False,
                 num_classes: int | None = None, normalize: bool = False, lookahead_params=None,
                 val_loss_fn=None) -> None:
        super().__init__(loss, model, val_source, train_source, lr, every, val_loss_fn, lookahead_params)
        self.meta_lr = _check_number("meta_lr", meta_lr, 0.0, low_open=True)
        self.clip = _check_number("clip", clip, 0.0, low_open=True)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be True or False, got {normalize!r}")
        self.normalize = normalize
        self.gamma_min, self.gamma_max, self.gamma_init = _check_bounds(gamma_min, gamma_max, gamma_init)
        self.num_classes, shape = _class_shape(per_class, num_classes)
        self.per_class = per_class
        device = self._device()
        self.gamma = torch.full(shape, self.gamma_init, device=device)
        self.last_hypergradient = torch.zeros(shape, device=device)
        self.h_sq = torch.zeros(shape, device=device)  # EMA of h**2 (normalize=True)
        self._write(self.gamma.clone())

    def _compute(self, stats):
        if not self._meta_due():
            return None
        device = self._model_device()
        var = self.gamma.detach().to(device).clone().requires_grad_()
        if self.per_class:
            def gamma_fn(p_t, cls):
                if var.numel() != (cls.shape[1] if cls.dim() >= 2 else 1):
                    raise ValueError(f"the 'hypergradient' policy has {var.numel()} per-class gammas but the "
                                     f"model's output has shape {tuple(cls.shape)} (C along dim 1)")
                return var[cls]
        else:
            def gamma_fn(p_t, cls):
                return var
        (h,), _, _ = self._lookahead(gamma_fn, [var])
        h = h.to(self.gamma.device, self.gamma.dtype)
        finite = torch.isfinite(h)
        direction = h
        if self.normalize:  # RMSprop-style: h over the root of its running mean square (bias-corrected)
            h_sq = torch.where(finite, 0.9 * self.h_sq + 0.1 * h * h, self.h_sq)
            self.h_sq = h_sq
            corrected = h_sq / (1.0 - 0.9 ** (self.meta_steps + 1))
            direction = h / (corrected.sqrt() + 1e-12)
        moved = (self.gamma - self.meta_lr * direction.clamp(-self.clip, self.clip)).clamp(self.gamma_min,
                                                                                           self.gamma_max)
        self.gamma = torch.where(finite, moved, self.gamma)
        self.last_hypergradient = torch.where(finite, h, torch.zeros_like(h))
        return self.gamma.clone()

    def _state(self) -> dict:
        return {"gamma": self.gamma.detach().cpu().clone(), "h_sq": self.h_sq.detach().cpu().clone(),
                "last_hypergradient": self.last_hypergradient.detach().cpu().clone(), **self._source_state()}

    def _load_state(self, state: dict) -> None:
        gamma = _as_state_tensor(state, "gamma", self.gamma)
        last = _as_state_tensor(state, "last_hypergradient", self.last_hypergradient)
        h_sq = _as_state_tensor(state, "h_sq", self.h_sq)
        self._check_sources(state)
        self._load_sources(state)
        self.gamma, self.last_hypergradient, self.h_sq = gamma, last, h_sq


# ---------------------------------------------------------------------------------------------------------------
# 2. gammanet
# ---------------------------------------------------------------------------------------------------------------
class _GammaMLP(nn.Module):
    """features (F) -> hidden -> 1, ``gamma_max * sigmoid``: a smooth gamma in (0, gamma_max)."""

    def __init__(self, features: int, hidden: int, gamma_init: float, gamma_max: float, generator) -> None:
        super().__init__()
        self.gamma_max = gamma_max
        self.hidden = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():  # seeded initialisation: two policies built alike are identical
            bound = 1.0 / math.sqrt(features)
            self.hidden.weight.uniform_(-bound, bound, generator=generator)
            self.hidden.bias.uniform_(-bound, bound, generator=generator)
            self.out.weight.uniform_(-0.01, 0.01, generator=generator)  # starts nearly constant at gamma_init
            frac = min(max(gamma_init / gamma_max, 1e-4), 1.0 - 1e-4)
            self.out.bias.fill_(math.log(frac / (1.0 - frac)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.gamma_max * torch.sigmoid(self.out(torch.tanh(self.hidden(features)))).squeeze(-1)


@register_policy("gammanet")
class GammaNet(_LearnedPolicy):
    """Gamma as a learned function of difficulty, meta-trained on validation batches (new in adaptive_focal).

    A small network (4 features -> ``hidden`` -> 1, output ``gamma_max * sigmoid``, so gamma stays in
    (0, gamma_max)) maps difficulty features to gamma, in the spirit of Meta-Weight-Net (Shu et al., 2019,
    "Meta-Weight-Net: Learning an Explicit Mapping For Sample Weighting"), which learns a loss-to-weight map the
    same way. The features of an example of class c with probability p_t of its target:

    * ``p_t`` and its loss ``-ln p_t`` (per sample),
    * its class's frequency, as ``ln(freq_c / mean frequency)`` (0 for an average class, negative for rare ones):
      the share of the class among the training samples counted so far (softmax, from the statistics of every
      step) or the fraction of positive targets of the class (sigmoid, from the look-ahead's training batches);
      ``class_freq`` fixes them instead,
    * the batch's difficulty: an exponential moving average (momentum 0.9) of the training batches' mean p_t from
      the BatchStats of every step.

    How gamma reaches the loss. The policy writes a per-class :class:`GammaTable` ``(C, num_bins)`` over equal-
    width p_t bins, the network evaluated at each class and bin centre, refreshed after every meta step; the loss
    looks each example up by its detached p_t. So the loss API is unchanged, and the look-ahead trains exactly the
    gamma the loss uses: in the look-ahead each term's gamma is the table entry of its class and p_t bin, as a
    differentiable function of the network's weights phi.

    Meta step (every ``every`` steps), as Meta-Weight-Net's: a virtual SGD step
    ``theta' = theta - lr * grad_theta L_train(theta, gamma_phi)`` on a training batch, then phi takes an Adam step
    (``meta_lr``) on ``d L_val(theta') / d phi`` (gradient norm clipped to ``clip``), with ``L_val`` the plain
    cross-entropy / BCE of a validation batch at theta' (see :class:`HypergradientGamma` for why not the focal
    loss). The network's weights come from a generator seeded with ``seed``.

    Args:
        loss: the FocalLoss to drive.
        model, val_source, train_source, lr, every: see the module docstring (``every`` defaults to 20).
        num_classes: C, the table's rows (required).
        num_bins: the table's equal-width p_t bins.
        hidden: the network's hidden width.
        meta_lr, clip: Adam's learning rate for the network and the bound on the meta-gradient's norm.
        gamma_init: the network's starting output (nearly constant at first); gamma_max: its upper bound.
        class_freq: None (counted, see above) or C fixed positive class frequencies (any scale).
        seed: seeds the network's initialisation.
        lookahead_params, val_loss_fn: as for :class:`HypergradientGamma`.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 3)
        >>> batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(3)]
        >>> criterion = FocalLoss("softmax", gamma=2.0)
        >>> policy = create_policy("gammanet", criterion, model=model, val_source=batches[2:],
        ...                        train_source=batches[:2], lr=0.5, every=1, num_classes=3, num_bins=5)
        >>> tuple(criterion.gamma.values.shape), round(float(criterion.gamma.values.mean()), 2)
        ((3, 5), 2.0)
        >>> _, stats = criterion(model(batches[0][0]), batches[0][1], return_stats=True)
        >>> policy.step(stats)  # one meta step: the network moved, the table was refreshed
        >>> bool((criterion.gamma.values != policy.network_gamma()).any())
        False
    """

    search_space = {"meta_lr": ("float", 1e-4, 1e-1, True), "every": ("int", 1, 50),
                    "gamma_init": ("float", 0.0, 5.0, False)}

    needs_stats = True

    def __init__(self, loss: FocalLoss, model: nn.Module | None = None, val_source=None, train_source=None,
                 lr=None, every: int = 20, num_classes: int | None = None, num_bins: int = 10, hidden: int = 16,
                 meta_lr: float = 1e-2, clip: float = 1.0, gamma_init: float = 2.0, gamma_max: float = 5.0,
                 class_freq=None, seed: int = 0, lookahead_params=None, val_loss_fn=None) -> None:
        super().__init__(loss, model, val_source, train_source, lr, every, val_loss_fn, lookahead_params)
        if num_classes is None:
            raise ValueError("num_classes is required: the gamma table has one row per class")
        self.num_classes = _check_number("num_classes", num_classes, 1, integer=True)
        self.num_bins = _check_number("num_bins", num_bins, 1, 1000, integer=True)
        self.hidden = _check_number("hidden", hidden, 1, 4096, integer=True)
        self.meta_lr = _check_number("meta_lr", meta_lr, 0.0, low_open=True)
        self.clip = _check_number("clip", clip, 0.0, low_open=True)
        self.gamma_max = _check_number("gamma_max", gamma_max, 0.0, 50.0, low_open=True)
        self.gamma_init = _check_number("gamma_init", gamma_init, 0.0, self.gamma_max)
        self.seed = _check_number("seed", seed, 0, integer=True)
        device = self._device()
        self._fixed_freq = None
        if class_freq is not None:
            freq = torch.as_tensor(class_freq, dtype=torch.float32) if not isinstance(class_freq, torch.Tensor) \
                else class_freq.detach().to(torch.float32).cpu()
            if freq.shape != (self.num_classes,) or not bool(torch.isfinite(freq).all()) or not bool((freq > 0).all()):
                raise ValueError(f"class_freq must be None or {self.num_classes} positive finite numbers (one per "
                                 f"class), got {class_freq!r}")
            self._fixed_freq = freq.to(device)
        self._net = _GammaMLP(4, self.hidden, self.gamma_init, self.gamma_max,
                              torch.Generator().manual_seed(self.seed)).to(device)
        self._opt = torch.optim.Adam(self._net.parameters(), lr=self.meta_lr)
        self.edges = torch.linspace(0.0, 1.0, self.num_bins + 1, device=device)
        self.class_counts = torch.zeros(self.num_classes, dtype=torch.float64, device=device)
        self.class_totals = torch.zeros(self.num_classes, dtype=torch.float64, device=device)
        self.batch_pt = torch.tensor(-1.0, device=device)  # EMA of the batches' mean p_t; < 0 before any batch
        self._write(GammaTable(self.edges.cpu(), self.network_gamma().cpu()))

    # -- the network as a table -----------------------------------------------------------------------------
    def _features(self) -> torch.Tensor:
        """(C, B, 4) features at each class and bin centre."""
        device = self.edges.device
        c, b = self.num_classes, self.num_bins
        centre = 0.5 * (self.edges[1:] + self.edges[:-1])
        if self._fixed_freq is not None:
            freq = self._fixed_freq.to(torch.float64)
        else:
            freq = self.class_counts / self.class_totals.clamp_min(1.0)
        seen = freq > 0
        mean = torch.where(seen, freq, torch.zeros_like(freq)).sum() / seen.sum().clamp_min(1)
        rel = torch.where(seen & (mean > 0), torch.log(freq.clamp_min(1e-12) / mean.clamp_min(1e-12)),
                          torch.zeros_like(freq)).clamp(-10.0, 10.0).to(torch.float32)
        batch = torch.where(self.batch_pt >= 0, self.batch_pt, torch.full_like(self.batch_pt, 0.5))
        return torch.stack([
            centre.expand(c, b),
            -torch.log(centre).expand(c, b),
            rel.to(device).unsqueeze(1).expand(c, b),
            batch.expand(c, b),
        ], dim=-1)

    def network_gamma(self) -> torch.Tensor:
        """The network's gamma at every class and p_t bin centre now, (C, num_bins) (what the table holds after a
        meta step; the features move between meta steps, the table does not)."""
        with torch.no_grad():
            return self._net(self._features())

    # -- steps ------------------------------------------------------------------------------------------------
    def _check_stats(self, name, stats, *, required):
        super()._check_stats(name, stats, required=required)
        if stats is not None and name == "stats" and stats.num_classes != self.num_classes:
            raise ValueError(f"{name} have {stats.num_classes} classes but the 'gammanet' policy was built for "
                             f"num_classes={self.num_classes}")

    def _compute(self, stats: BatchStats):
        count = stats.count.to(torch.float32)
        mean = stats.sum_pt.to(torch.float32) / count.clamp_min(1.0)
        ema = torch.where(self.batch_pt >= 0, 0.9 * self.batch_pt + 0.1 * mean, mean)
        self.batch_pt = torch.where(count > 0, ema, self.batch_pt)
        if self.loss.mode == "softmax":
            self.class_counts = self.class_counts + stats.class_count.to(torch.float64)
            self.class_totals = self.class_totals + stats.count.to(torch.float64)
        if not self._meta_due():
            return None
        inner = self.edges[1:-1]

        def gamma_fn(p_t, cls):
            values = self._net(self._features())  # (C, B), differentiable in the network's weights
            if cls.dim() >= 2 and cls.shape[1] != self.num_classes:
                raise ValueError(f"the 'gammanet' policy was built for num_classes={self.num_classes} but the "
                                 f"model's output has shape {tuple(cls.shape)} (C along dim 1)")
            idx = torch.bucketize(p_t.to(inner.dtype), inner, right=True)
            return values[cls, idx]

        batch = self._train_batch()
        if self.loss.mode == "sigmoid" and self._fixed_freq is None:  # positive rates from the look-ahead batches
            y = _to(batch[1], self.edges.device).detach().to(torch.float64)
            if y.dim() >= 2 and y.shape[1] == self.num_classes:
                dims = [d for d in range(y.dim()) if d != 1]
                pos = (y >= 0.5) & (y <= 1.0)  # ignored targets (e.g. -1) count as neither
                known = (y >= 0.0) & (y <= 1.0)
                self.class_counts = self.class_counts + pos.to(torch.float64).sum(dims)
                self.class_totals = self.class_totals + known.to(torch.float64).sum(dims)
        params = list(self._net.parameters())
        meta, _, _ = self._lookahead(gamma_fn, params, batch)
        meta = [m.to(p.device, p.dtype) for m, p in zip(meta, params)]
        finite = torch.stack([torch.isfinite(m).all() for m in meta]).all()
        norm = torch.sqrt(sum((m.float() ** 2).sum() for m in meta))
        scale = torch.where(finite, (self.clip / (norm + 1e-12)).clamp(max=1.0), torch.zeros_like(norm))
        for p, m in zip(params, meta):
            p.grad = torch.where(finite, m * scale, torch.zeros_like(m))
        self._opt.step()
        self._opt.zero_grad(set_to_none=True)
        values = self.network_gamma()
        current = self.loss.gamma
        if isinstance(current, GammaTable) and current.values.shape == values.shape:
            with torch.no_grad():  # in place: the same module, and no value check that would read the device
                current.values.copy_(values)
            return current
        return GammaTable(self.edges.cpu(), values.cpu())

    def _state(self) -> dict:
        return {
            "network": {k: v.detach().cpu().clone() for k, v in self._net.state_dict().items()},
            "optimizer": _cpu_tree(self._opt.state_dict()),
            "class_counts": self.class_counts.detach().cpu().clone(),
            "class_totals": self.class_totals.detach().cpu().clone(),
            "batch_pt": self.batch_pt.detach().cpu().clone(),
            **self._source_state(),
        }

    def _load_state(self, state: dict) -> None:
        for key in ("network", "optimizer"):
            if not isinstance(state.get(key), dict):
                raise ValueError(f"state[{key!r}] must be a dict, got {type(state.get(key)).__name__}")
        net = {k: v for k, v in state["network"].items()}
        mine = self._net.state_dict()
        if set(net) != set(mine) or any(torch.as_tensor(net[k]).shape != mine[k].shape for k in mine):
            raise ValueError(f"state['network'] does not fit this policy's network (hidden={self.hidden}): "
                             f"expected {[(k, tuple(v.shape)) for k, v in mine.items()]}")
        counts = _as_state_tensor(state, "class_counts", self.class_counts)
        totals = _as_state_tensor(state, "class_totals", self.class_totals)
        batch_pt = _as_state_tensor(state, "batch_pt", self.batch_pt)
        self._check_sources(state)
        opt = torch.optim.Adam(self._net.parameters(), lr=self.meta_lr)
        try:
            opt.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"state['optimizer'] is not the state of this policy's Adam: {err}") from None
        self._load_sources(state)
        self._net.load_state_dict(net)
        self._opt.load_state_dict(state["optimizer"])
        self.class_counts, self.class_totals, self.batch_pt = counts, totals, batch_pt


def _cpu_tree(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_tree(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------------------------
# 3. bandit
# ---------------------------------------------------------------------------------------------------------------
@register_policy("bandit")
class BanditGamma(_LearnedPolicy):
    """Gamma picked from a grid by a non-stationary adversarial bandit, Exp3.S (new in adaptive_focal).

    Exp3.S (Auer, Cesa-Bianchi, Freund and Schapire, 2002, "The Nonstochastic Multiarmed Bandit Problem",
    section 8) tracks the best arm of a sequence that may switch, which suits training, where the best gamma
    changes as the model learns. With K arms (the ``gammas``), weights w, exploration ``eta`` and sharing
    ``share`` (alpha in the paper):

        p_i = (1 - eta) w_i / sum_j w_j + eta / K;        the arm a is drawn from p (a seeded torch.Generator)
        r_hat = r / p_a  for the arm played, 0 for the others
        w_i <- w_i exp(eta r_hat_i / K) + (e share / K) sum_j w_j

    The arm switches every ``every`` steps (the window). Its reward is the drop of the validation loss over the
    window, measured on one validation batch drawn at the window's start: ``d = L_val(start) - L_val(end)`` on
    that batch (so batch-to-batch noise cancels), with ``L_val`` the plain cross-entropy / BCE (see
    :class:`HypergradientGamma`). Exp3.S needs rewards in [0, 1] and the drops shrink as training converges, so
    ``r = (1 + tanh(d / s)) / 2`` with ``s`` an exponential moving average (``reward_momentum``) of ``|d|``:
    r = 0.5 for no change, above for improvement. The weights are kept as normalised logarithms. The first window
    starts at the first ``step`` (its start loss is measured then). No training batch is needed.

    The probabilities are ``policy.probabilities()``; ``policy.pulls`` counts the windows of each arm and
    ``policy.last_reward`` is the last window's reward.

    Args:
        loss: the FocalLoss to drive.
        model, val_source, every: see the module docstring (``every``, the window, defaults to 50).
        gammas: the arms, at least two values in [0, 20].
        exploration: eta in (0, 1], the uniform share of the probabilities and the weights' learning rate.
        share: alpha in [0, 1], Exp3.S's weight sharing (0 gives plain Exp3, which cannot follow a switch).
        reward_momentum: momentum of the reward scale ``s``.
        seed: seeds the arm draws (a ``torch.Generator`` whose state is in ``state_dict``).
        val_loss_fn: as for :class:`HypergradientGamma`.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 3)
        >>> val = [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]
        >>> criterion = FocalLoss("softmax", gamma=2.0)
        >>> policy = create_policy("bandit", criterion, model=model, val_source=val, gammas=(0.0, 1.0, 2.0),
        ...                        every=5, seed=3)
        >>> float(criterion.gamma) in (0.0, 1.0, 2.0), [round(p, 3) for p in policy.probabilities().tolist()]
        (True, [0.333, 0.333, 0.333])
    """

    search_space = {"exploration": ("float", 0.01, 0.5, True), "every": ("int", 10, 500)}
    needs_train_batch = False

    def __init__(self, loss: FocalLoss, model: nn.Module | None = None, val_source=None,
                 gammas=(0.0, 0.5, 1.0, 2.0, 3.0, 5.0), every: int = 50, exploration: float = 0.1,
                 share: float = 0.01, reward_momentum: float = 0.9, seed: int = 0, val_loss_fn=None) -> None:
        super().__init__(loss, model, val_source, None, None, every, val_loss_fn)
        grid = tuple(gammas) if isinstance(gammas, (tuple, list)) else gammas
        if (not isinstance(grid, tuple) or len(grid) < 2
                or not all(isinstance(g, Real) and not isinstance(g, bool) and 0.0 <= float(g) <= 20.0 for g in grid)):
            raise ValueError(f"gammas must be a sequence of at least 2 numbers in [0, 20], got {gammas!r}")
        self.gammas = tuple(float(g) for g in grid)
        self.exploration = _check_number("exploration", exploration, 0.0, 1.0, low_open=True)
        self.share = _check_number("share", share, 0.0, 1.0)
        self.reward_momentum = _check_number("reward_momentum", reward_momentum, 0.0, 1.0)
        if self.reward_momentum == 1.0:
            raise ValueError("reward_momentum must be in [0, 1), got 1.0 (the reward scale would never be set)")
        self.seed = _check_number("seed", seed, 0, integer=True)
        device = self._device()
        k = len(self.gammas)
        self._grid = torch.tensor(self.gammas, device=device)
        self._gen = torch.Generator().manual_seed(self.seed)
        self.log_weights = torch.full((k,), -math.log(k), dtype=torch.float64, device=device)
        self.pulls = torch.zeros(k, dtype=torch.int64, device=device)
        self.arm = self._draw()
        self.start_loss = torch.tensor(0.0, dtype=torch.float64, device=device)
        self.reward_scale = torch.tensor(0.0, dtype=torch.float64, device=device)
        self.last_reward = torch.tensor(0.5, dtype=torch.float64, device=device)
        self._window_steps = 0  # steps since the window's start loss was measured
        self._window_batch = None
        self._write(self._grid[self.arm].clone())

    @property
    def meta_steps(self) -> int:
        """Windows completed so far (the first starts at the first step)."""
        return max(self.step_count - 1, 0) // self.every

    def probabilities(self) -> torch.Tensor:
        """The arms' probabilities p (float64, on the loss's device)."""
        k = len(self.gammas)
        return (1.0 - self.exploration) * torch.softmax(self.log_weights, 0) + self.exploration / k

    def _draw(self) -> torch.Tensor:
        u = float(torch.rand((), generator=self._gen, dtype=torch.float64))  # a CPU number: no device read
        cdf = torch.cumsum(self.probabilities(), 0)
        arm = (cdf <= u).sum().clamp(max=len(self.gammas) - 1)
        self.pulls = self.pulls + (torch.arange(len(self.gammas), device=arm.device) == arm).to(self.pulls.dtype)
        return arm

    def _measure(self, x, y) -> torch.Tensor:
        """The validation loss of the model now, in eval mode (dropout off, batch-norm running statistics), so
        that the window's start and end are measured alike; every module's mode is restored afterwards."""
        modes = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.eval()
            with self._fork_rng(), torch.no_grad():
                value = self._val_objective(None, x, y).detach().to(torch.float64)
        finally:
            for m, training in modes:
                m.training = training
        return _mean_over_ranks([value])[0] if self.sync_stats else value

    def _start_window(self) -> None:
        device = self._model_device()
        self._window_batch = tuple(_to(v, device) for v in self._val.next())
        self.start_loss = self._measure(*self._window_batch).to(self.log_weights.device)
        self._window_steps = 0

    def _compute(self, stats):
        if self.step_count == 0:  # the first step starts the first window
            self._start_window()
            return None
        self._window_steps += 1
        if self._window_steps < self.every:
            return None
        if self._window_batch is None:  # resumed mid-window: draw the window's batch again (see _load_state)
            self._window_batch = tuple(_to(v, self._model_device()) for v in self._val.next())
        end = self._measure(*self._window_batch).to(self.log_weights.device)
        drop = self.start_loss - end
        ema = self.reward_momentum * self.reward_scale + (1.0 - self.reward_momentum) * drop.abs()
        scale = torch.where(self.reward_scale > 0, ema, drop.abs())
        self.reward_scale = torch.where(torch.isfinite(scale), scale, self.reward_scale)
        reward = 0.5 * (1.0 + torch.tanh(drop / self.reward_scale.clamp_min(1e-12)))
        reward = torch.where(torch.isfinite(reward), reward, torch.full_like(reward, 0.5))
        self.last_reward = reward
        k = len(self.gammas)
        p = self.probabilities()
        gain = torch.zeros_like(p).scatter(0, self.arm.view(1), (reward / p[self.arm]).view(1))
        logw = self.log_weights + self.exploration * gain / k
        if self.share > 0:  # Exp3.S: every arm gets a share of the total weight, so none is ever written off
            logw = torch.logaddexp(logw, math.log(math.e * self.share / k) + torch.logsumexp(self.log_weights, 0))
        self.log_weights = logw - torch.logsumexp(logw, 0)
        self.arm = self._draw()
        self._start_window()
        return self._grid[self.arm].clone()

    def _state(self) -> dict:
        return {
            "log_weights": self.log_weights.detach().cpu().clone(),
            "pulls": self.pulls.detach().cpu().clone(),
            "arm": self.arm.detach().cpu().clone(),
            "start_loss": self.start_loss.detach().cpu().clone(),
            "reward_scale": self.reward_scale.detach().cpu().clone(),
            "last_reward": self.last_reward.detach().cpu().clone(),
            "window_steps": self._window_steps,
            "generator": self._gen.get_state(),
            **self._source_state(),
        }

    def _load_state(self, state: dict) -> None:
        logw = _as_state_tensor(state, "log_weights", self.log_weights)
        pulls = _as_state_tensor(state, "pulls", self.pulls)
        arm = _as_state_tensor(state, "arm", self.arm)
        start = _as_state_tensor(state, "start_loss", self.start_loss)
        scale = _as_state_tensor(state, "reward_scale", self.reward_scale)
        reward = _as_state_tensor(state, "last_reward", self.last_reward)
        window = state.get("window_steps")
        if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window < self.every:
            raise ValueError(f"state['window_steps'] must be an int in [0, every={self.every}), got {window!r}")
        gen = state.get("generator")
        if not isinstance(gen, torch.Tensor) or gen.dtype != torch.uint8:
            raise ValueError("state['generator'] must be the ByteTensor of torch.Generator.get_state()")
        self._check_sources(state)
        started = int(state.get("step_count", 0)) > 0
        if started and state["val_source"]["position"] < 1:
            raise ValueError("state['val_source'] has position 0 inside a started window (expected >= 1)")
        self._load_sources(state)
        if started:  # the window's batch was the last one drawn: step back one so that it is drawn again
            self._val.position -= 1
        self._gen.set_state(gen)
        self.log_weights, self.pulls, self.arm = logw, pulls, arm
        self.start_loss, self.reward_scale, self.last_reward = start, scale, reward
        self._window_steps = window
        self._window_batch = None
