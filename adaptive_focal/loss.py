"""FocalLoss: the module form of the focal loss functions, with gamma held as state a policy can write."""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

from .functional import sigmoid_focal_loss, softmax_focal_loss
from .gamma_forms import GAMMA_FORMS, AsymmetricGamma, FocalMixture, GammaTable

__all__ = ["FocalLoss", "GammaTable"]

#: gamma forms held as submodules (their settings are buffers) rather than as a tensor buffer; the list lives in
#: adaptive_focal.gamma_forms
GAMMA_MODULES = GAMMA_FORMS

_MODES = ("sigmoid", "softmax")
_UNSET = object()


class FocalLoss(nn.Module):
    """Focal loss as an ``nn.Module``; ``forward`` calls :func:`sigmoid_focal_loss` or :func:`softmax_focal_loss`.

    ``gamma`` is state, the way a learning rate is state of an optimizer: a float32 tensor buffer (0-d, per class
    or per element), or a :class:`GammaTable`, :class:`FocalMixture` or :class:`AsymmetricGamma` submodule. It
    is saved in ``state_dict`` and moves with ``.to()``.
    Assigning ``loss.gamma = value`` copies into the existing buffer when the shape is unchanged, so a gamma policy
    updating it every step never makes ``torch.compile`` recompile (the graph reads the buffer; a Python float
    would be baked into the graph as a constant).

    Args:
        mode: ``"sigmoid"`` (binary / multi-label) or ``"softmax"`` (multi-class).
        gamma: initial gamma, any form the functions accept.
        alpha, weight: as in the functions; tensors are registered as buffers.
        reduction, label_smoothing, detach_modulator, stat_bins: as in the functions.
        ignore_index: as in the functions; defaults to None for sigmoid and -100 for softmax.
        class_priors, tau: logit adjustment (Menon et al., 2021), as in the functions: softmax priors are class
            counts or frequencies, sigmoid priors the per-class positive fractions in (0, 1). The priors are a
            float64 buffer (they are read in float64, so that counts and frequencies stay exact); tau a float.
        confidence_stats: as in the functions: sigmoid statistics carry the confidence bins (for AdaFocal and
            ECE) only with it; no effect for softmax, whose statistics always have them. An attribute that may be
            changed later (``loss.confidence_stats = True``, which the AdaFocal policies do for their loss).

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss
        >>> criterion = FocalLoss("softmax", gamma=2.0)
        >>> logits, target = torch.randn(8, 5), torch.randint(0, 5, (8,))
        >>> loss, stats = criterion(logits, target, return_stats=True)
        >>> criterion.gamma = 1.0  # e.g. what a schedule does after a step
        >>> float(criterion.gamma)
        1.0

        The logit-adjusted focal loss of a long-tailed training set, from its class counts:

        >>> counts = torch.tensor([500, 200, 100, 50, 10])
        >>> adjusted = FocalLoss("softmax", gamma=2.0, class_priors=counts, tau=1.0)
        >>> value = adjusted(logits, target)
    """

    gamma: torch.Tensor | GammaTable | FocalMixture | AsymmetricGamma
    #: class default, so that a module pickled before the setting existed still runs
    confidence_stats: bool = False

    def __init__(
        self,
        mode: str = "sigmoid",
        gamma=2.0,
        alpha=None,
        weight: torch.Tensor | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        ignore_index=_UNSET,
        detach_modulator: bool = False,
        stat_bins: int = 15,
        *,
        class_priors=None,
        tau: float = 1.0,
        confidence_stats: bool = False,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of 'sigmoid', 'softmax', got {mode!r}")
        self.mode = mode
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.ignore_index = (None if mode == "sigmoid" else -100) if ignore_index is _UNSET else ignore_index
        self.detach_modulator = detach_modulator
        self.stat_bins = stat_bins
        if isinstance(alpha, torch.Tensor) or (alpha is not None and not isinstance(alpha, Real)):
            self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32).detach().clone())
        else:
            self.alpha = alpha
        if weight is not None:
            self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float32).detach().clone())
        else:
            self.weight = None
        if class_priors is not None:
            self.register_buffer("class_priors",
                                 torch.as_tensor(class_priors, dtype=torch.float64).detach().clone())
        else:
            self.class_priors = None
        self.tau = tau
        self.confidence_stats = confidence_stats
        self.gamma = gamma
        # Validate every setting once, now, on a tiny input rather than at the first training step.
        self._check_settings()

    # -- gamma as state -------------------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if name == "gamma":
            self._set_gamma(value)
        else:
            super().__setattr__(name, value)

    def _set_gamma(self, value, check: bool = True) -> None:
        """Assigns gamma; ``check=False`` skips the finiteness check (for policies, whose values are finite by
        design)."""
        if isinstance(value, GAMMA_MODULES):
            if isinstance(value, AsymmetricGamma) and self.mode != "sigmoid":
                raise ValueError("gamma: AsymmetricGamma is for mode='sigmoid' (positive vs negative targets), "
                                 f"got a FocalLoss with mode={self.mode!r}")
            if "gamma" in self._buffers:
                del self._buffers["gamma"]
            self._modules["gamma"] = value
            return
        old = self._buffers.get("gamma")
        if isinstance(value, Real) and not isinstance(value, bool):
            if check and not math.isfinite(value):
                raise ValueError(f"gamma must {'not be NaN' if math.isnan(value) else 'be finite'}, got {value!r}")
            if old is not None and old.dim() == 0:
                old.fill_(float(value))  # the per-step path of schedules: in place, no new tensor (buffers never
                return                    # require grad, so no autograd context is needed)
            new = torch.tensor(float(value), dtype=torch.float32)
        elif isinstance(value, torch.Tensor):
            new = value.detach().to(torch.float32)
        else:
            raise TypeError(
                "gamma must be a float, a tensor, a GammaTable, a FocalMixture or an AsymmetricGamma, "
                f"got {type(value).__name__}"
            )
        if check and new.device.type == "cpu" and not torch.isfinite(new).all():  # a device tensor: no sync
            raise ValueError(f"gamma must {'not be NaN' if torch.isnan(new).any() else 'be finite'}, got {value!r}")
        if old is not None and old.shape == new.shape:
            with torch.no_grad():
                old.copy_(new)  # in place: same tensor, no recompilation, optimisers keep their reference
            return
        device = old.device if old is not None else new.device
        self._modules.pop("gamma", None)
        self.register_buffer("gamma", new.to(device).clone())

    def _check_settings(self) -> None:
        """Runs the loss once on a tiny input so that a bad setting fails here, not at the first training step."""
        c = 3
        if isinstance(self.alpha, torch.Tensor):
            c = self.alpha.numel()
        elif self.mode == "softmax" and self.weight is not None:
            c = self.weight.numel()
        elif self.class_priors is not None:
            c = self.class_priors.numel()
        elif isinstance(self.gamma, GammaTable) and self.gamma.per_class:
            c = self.gamma.values.shape[0]
        elif isinstance(self.gamma, torch.Tensor) and self.gamma.dim() == 1:
            c = self.gamma.numel()
        elif isinstance(self.gamma, (FocalMixture, AsymmetricGamma)) and self.gamma.num_classes is not None:
            c = self.gamma.num_classes
        x = torch.zeros(2, c)
        target = torch.zeros(2, dtype=torch.int64) if self.mode == "softmax" else torch.zeros(2, c)
        # per-sample / per-element gammas and sigmoid's element weights are shaped for real batches
        per_element = isinstance(self.gamma, torch.Tensor) and self.gamma.dim() > 1
        self._call(x, target, 2.0 if per_element else self.gamma,
                   self.weight if self.mode == "softmax" else None, False)

    def _call(self, input, target, gamma, weight, return_stats, reduction=None):
        fn = sigmoid_focal_loss if self.mode == "sigmoid" else softmax_focal_loss
        return fn(
            input, target, gamma=gamma, alpha=self.alpha, weight=weight,
            reduction=self.reduction if reduction is None else reduction,
            label_smoothing=self.label_smoothing, ignore_index=self.ignore_index, return_stats=return_stats,
            detach_modulator=self.detach_modulator, stat_bins=self.stat_bins, class_priors=self.class_priors,
            tau=self.tau, confidence_stats=self.confidence_stats,
        )

    def forward(self, input: torch.Tensor, target: torch.Tensor, return_stats: bool = False, *,
                reduction: str | None = None):
        """The loss of ``input`` against ``target`` with every setting of this module (and ``(loss, stats)`` with
        ``return_stats``). ``reduction``, if given, replaces the module's reduction for this call only (as a
        Trainer that divides a summed loss by the items of an accumulated batch needs)."""
        return self._call(input, target, self.gamma, self.weight, return_stats, reduction)

    def extra_repr(self) -> str:
        gamma = self.gamma
        g = f"{gamma.item():g}" if isinstance(gamma, torch.Tensor) and gamma.dim() == 0 else (
            f"tensor{tuple(gamma.shape)}" if isinstance(gamma, torch.Tensor) else type(gamma).__name__
        )
        priors = "" if self.class_priors is None else f", class_priors=({self.class_priors.numel()},), tau={self.tau:g}"
        return f"mode={self.mode!r}, gamma={g}, reduction={self.reduction!r}{priors}"
