"""``"hypergradient"``: gamma moved by the one-step look-ahead hypergradient of the validation loss."""

from __future__ import annotations

import torch
from torch import nn

from ...loss import FocalLoss
from ..base import _check_number, _class_shape, register_policy, state_tensor
from ..space import Float, Int
from .common import LearnedPolicy, _check_bounds

__all__ = ["HypergradientGamma"]


@register_policy("hypergradient")
class HypergradientGamma(LearnedPolicy):
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

    search_space = {"meta_lr": Float(0.1, 100.0, log=True), "every": Int(1, 50), "gamma_init": Float(0.0, 5.0)}
    requires = ("model", "val_source", "optimizer")

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

    def compute(self, stats):
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

    def extra_state(self) -> dict:
        return {"gamma": self.gamma.detach().cpu().clone(), "h_sq": self.h_sq.detach().cpu().clone(),
                "last_hypergradient": self.last_hypergradient.detach().cpu().clone(), **self._source_state()}

    def _own_state(self, state: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gamma = state_tensor(state, "gamma", self.gamma)
        if bool((gamma < self.gamma_min).any() or (gamma > self.gamma_max).any()):
            raise ValueError(f"state['gamma'] must lie in [gamma_min, gamma_max] = [{self.gamma_min}, "
                             f"{self.gamma_max}], got {gamma.tolist()}")
        h_sq = state_tensor(state, "h_sq", self.h_sq)
        if bool((h_sq < 0).any()):
            raise ValueError(f"state['h_sq'] is a mean square (>= 0), got {h_sq.tolist()}")
        return gamma, state_tensor(state, "last_hypergradient", self.last_hypergradient), h_sq

    def check_extra_state(self, state: dict) -> None:
        self._own_state(state)
        self._check_sources(state)

    def load_extra_state(self, state: dict) -> None:
        self.gamma, self.last_hypergradient, self.h_sq = self._own_state(state)
        self._load_sources(state)
