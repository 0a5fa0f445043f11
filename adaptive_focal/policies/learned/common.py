"""What the learned controllers share: cycled data sources, the look-ahead's twice-differentiable focal loss, the
plain validation objective and :class:`LearnedPolicy`, their base class (model, sources, meta-step schedule, the
one-step look-ahead hypergradient, source positions in the state). See the package docstring for the method.

Example (what a learned controller takes from the run, and what it still needs):
    >>> import torch
    >>> from adaptive_focal import FocalLoss, RunContext
    >>> from adaptive_focal.policies.learned import HypergradientGamma
    >>> model = torch.nn.Linear(4, 3)
    >>> context = RunContext(model=model, val_source=[(torch.zeros(8, 4), torch.zeros(8, dtype=torch.long))],
    ...                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    >>> sorted(HypergradientGamma.run_defaults(FocalLoss("softmax"), context))
    ['lr', 'model', 'val_source']
    >>> HypergradientGamma.missing_requirements(RunContext(model=model), {})
    ['val_source', 'optimizer']
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ...loss import FocalLoss
from ...stats import BatchStats
from ..base import GammaPolicy, _check_number

__all__ = ["LearnedPolicy"]


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

    def redraw_last(self):
        """The batch drawn last, drawn again (a resumed bandit's window batch); the position stays where it is."""
        if self.position < 1:
            raise RuntimeError(f"{self.name} has drawn no batch in its current pass to draw again")
        with torch.random.fork_rng(devices=[]):
            self.position -= 1  # the next draw skips the batches before it and counts it again
            self._it = None
            return self._next()

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
class LearnedPolicy(GammaPolicy):
    """What the learned controllers share: the model, the sources, the meta-step schedule and the look-ahead.

    Built from a :class:`~adaptive_focal.RunContext`, they take its ``model`` and ``val_source`` (required), its
    ``train_source`` when given and, for the look-ahead's learning rate, its ``optimizer``.
    """

    requires = ("model", "val_source")

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context) -> dict:
        """The run's model and validation batches; the look-ahead's training batches and learning rate (its
        optimizer) when the controller looks ahead."""
        out = {k: v for k, v in (("model", context.model), ("val_source", context.val_source)) if v is not None}
        if cls.needs_train_batch:
            if context.train_source is not None:
                out["train_source"] = context.train_source
            if context.optimizer is not None:
                out["lr"] = context.optimizer
        return out

    @classmethod
    def missing_requirements(cls, context, kwargs: dict) -> list[str]:
        """As the base class's; a number or an optimizer given as ``lr`` stands in for the context's optimizer."""
        missing = super().missing_requirements(context, kwargs)
        return [f for f in missing if not (f == "optimizer" and "lr" in kwargs)]

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


def _cpu_tree(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_tree(v) for v in obj]
    return obj


