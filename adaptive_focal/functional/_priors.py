"""Class priors: the logit adjustment of Menon et al. (2021) and the class-balanced weights of Cui et al. (2019).

Logit adjustment (Menon, Jayasumana, Rawat, Jain, Veit, Kumar, "Long-tail learning via logit adjustment", ICLR
2021) trains on ``logits + tau * log(pi)``, pi the training class priors; for a softmax it is their logit-adjusted
loss. A sigmoid is the two-class softmax of ``(z, 0)``: adjusting both logits by ``tau * log(pi_c)`` and
``tau * log(1 - pi_c)`` is adjusting ``z`` by ``tau * log(pi_c / (1 - pi_c))``, which is how the sigmoid loss
applies it to each class's one-vs-rest problem, with pi_c the fraction of samples whose target for class c is
positive.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from ._checks import on_host


def check_tau(tau) -> float:
    if isinstance(tau, bool) or not isinstance(tau, Real) or not math.isfinite(float(tau)):
        raise ValueError(f"tau must be a finite number, got {tau!r}")
    return float(tau)


def _as_priors(class_priors, num_classes: int, device) -> torch.Tensor:
    """The priors as a (C,) float64 tensor (float32 where float64 is not supported), checked for shape."""
    try:  # numbers straight to float64, so that the offsets are those of the priors as written
        p = class_priors.detach() if isinstance(class_priors, torch.Tensor) else torch.as_tensor(
            class_priors, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"class_priors must be a sequence or tensor of numbers, got {type(class_priors).__name__}"
                        ) from None
    if p.dtype == torch.bool or p.is_complex() or p.dim() > 1 or p.numel() != num_classes:
        raise ValueError(
            f"class_priors must be a 1-D tensor of length C = {num_classes} (one prior per class along dim 1), "
            f"got shape {tuple(p.shape)} and dtype {p.dtype}"
        )
    wide = torch.float32 if torch.device(device).type == "mps" else torch.float64
    return p.reshape(num_classes).to(device=device, dtype=wide)


def logit_offsets(class_priors, tau, num_classes: int, mode: str, device, dtype) -> torch.Tensor | None:
    """The (C,) offsets added to the logits along dim 1, in ``dtype``, or None when there is nothing to add.

    softmax: ``tau * log(pi_c / sum(pi))`` (priors as class counts or frequencies: a common factor adds the same
    constant to every logit); sigmoid: ``tau * log(pi_c / (1 - pi_c))`` (priors as frequencies in (0, 1)). Values
    are checked where that reads no device value. Computed in float64, so that the offsets are those of the same
    formula applied to the priors by hand.
    """
    if class_priors is None:
        if check_tau(tau) != 1.0:
            raise ValueError(f"tau applies to class_priors (logit adjustment), got tau={tau!r} without class_priors")
        return None
    tau = check_tau(tau)
    p = _as_priors(class_priors, num_classes, device)
    if on_host(p):
        low, high = (float(v) for v in torch.aminmax(p))
        if mode == "softmax" and not (low > 0 and math.isfinite(high)):
            raise ValueError(
                f"class_priors must be finite and > 0 for every class (class counts or frequencies; log 0 = -inf), "
                f"got {p.tolist()}"
            )
        if mode == "sigmoid" and not (low > 0 and high < 1):
            raise ValueError(
                "class_priors of sigmoid_focal_loss must be in (0, 1) for every class: the fraction of samples "
                "whose target for the class is positive (counts cannot be normalised without the number of "
                f"samples: divide them by it), got {p.tolist()}"
            )
    if tau == 0.0:
        return None
    # softmax: the log priors (normalised); sigmoid: the log odds of each class's positives
    shift = torch.log(p / p.sum()) if mode == "softmax" else torch.log(p) - torch.log1p(-p)
    return (tau * shift).to(dtype)


def along_dim1(offsets: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """(C,) offsets shaped to broadcast along the input's dim 1 (a 0-d or 1-D sigmoid input has C = 1)."""
    if input.dim() < 2:
        return offsets.reshape(())
    return offsets.view((1, offsets.numel()) + (1,) * (input.dim() - 2))


def class_balanced_weights(class_counts, beta: float, dtype: torch.dtype) -> torch.Tensor:
    """See :func:`adaptive_focal.class_balanced_weights`."""
    beta = _check_beta(beta)
    n = _as_counts(class_counts)
    if bool((n == 0).any()):
        zero = [int(i) for i in torch.nonzero(n == 0).flatten()]
        raise ValueError(
            f"class_counts must be >= 1 for every class: a class with 0 samples has effective number 0 and an "
            f"infinite class-balanced weight; got 0 for class(es) {zero} in {n.tolist()}"
        )
    if beta == 0.0:
        w = torch.ones_like(n)
    elif beta == 1.0:
        w = 1.0 / n
    else:
        w = (1.0 - beta) / -torch.expm1(n * math.log(beta))
    w = w * (n.numel() / w.sum())
    return w.to(dtype)


def _check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, Real) or not (0.0 <= float(beta) <= 1.0):
        raise ValueError(f"beta must be a finite number in [0, 1], got {beta!r}")
    return float(beta)


def _as_counts(class_counts) -> torch.Tensor:
    """Class counts as a 1-D float64 CPU tensor of finite values >= 0."""
    try:
        n = torch.as_tensor(class_counts, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"class_counts must be a 1-D sequence of numbers, got {type(class_counts).__name__}"
                        ) from None
    n = n.detach().cpu()
    if n.dim() != 1 or n.numel() == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D sequence (one value per class), got shape "
                         f"{tuple(n.shape)}")
    if not bool(torch.isfinite(n).all()) or bool((n < 0).any()):
        raise ValueError(f"class_counts must hold finite values >= 0, got {n.tolist()}")
    return n
