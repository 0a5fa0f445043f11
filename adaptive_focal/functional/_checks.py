"""Argument checks of the focal loss functions, and the canonical forms of alpha and weight.

Every check raises a ``ValueError`` or ``TypeError`` that names the argument, what is allowed and what was
received. Checks that read tensor values run only where that costs no device synchronisation (:func:`on_host`):
on the CPU, outside ``torch.compile`` tracing.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

SIGMOID_REDUCTIONS = ("none", "mean", "sum", "positives")
SOFTMAX_REDUCTIONS = ("none", "mean", "sum")


def check_values() -> bool:
    """Whether value checks (which read tensor data) may run: not while tracing for torch.compile."""
    return not torch.compiler.is_compiling()


def on_host(t: torch.Tensor) -> bool:
    """Whether ``t``'s values may be read for a check.

    Reading a CPU tensor's values costs no device synchronisation; on accelerators value checks are skipped so a
    training step never waits for the device (out-of-range class indices still fail inside torch's gather).
    """
    return t.device.type == "cpu" and check_values()


def check_input(input) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor of logits, got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(
            f"input must be a floating-point tensor of logits (float16, bfloat16, float32 or float64), "
            f"got dtype {input.dtype}"
        )


def check_flag(value, name: str) -> None:
    """A boolean keyword (``confidence_stats``): True or False, nothing else (a truthy string or tensor is a
    mistake, not a request)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_reduction(reduction, allowed, mode: str) -> None:
    if reduction not in allowed:
        hint = " ('positives' is for sigmoid_focal_loss only)" if reduction == "positives" else ""
        raise ValueError(
            f"reduction must be one of {', '.join(repr(r) for r in allowed)} for {mode}{hint}, got {reduction!r}"
        )


def check_label_smoothing(label_smoothing) -> float:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, Real) or not (
        0.0 <= float(label_smoothing) < 1.0
    ):
        raise ValueError(f"label_smoothing must be a float in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def check_target_tensor(target) -> None:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")


def compute_dtype(input: torch.Tensor) -> torch.dtype:
    """Half precision is computed in float32, so that easy examples' small losses do not underflow."""
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def as_class_vector(value, name: str, num_classes: int, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(value, device=device)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)) or t.dim() != 1 or t.numel() != num_classes:
        raise ValueError(
            f"{name} must be a 1-D tensor of length C = {num_classes} (one value per class along dim 1), "
            f"got shape {tuple(t.shape)} and dtype {t.dtype}"
        )
    return t.to(dtype)


def resolve_alpha(alpha, num_classes: int, device, dtype, mode: str, has_class_dim: bool) -> torch.Tensor | None:
    """alpha as None or a (C,) tensor in the compute dtype (a scalar is broadcast for sigmoid)."""
    if alpha is None:
        return None
    if isinstance(alpha, Real) and not isinstance(alpha, bool) or (
        isinstance(alpha, torch.Tensor) and alpha.dim() == 0
    ):
        if mode == "softmax":
            raise ValueError(
                "alpha must be None or a (C,) tensor of per-class weights for softmax_focal_loss, got the scalar "
                f"{float(alpha)!r}: a scalar alpha is ambiguous with softmax (RetinaNet's alpha weighs positives "
                "against negatives of a sigmoid); pass one weight per class"
            )
        value = float(alpha)
        if not (0.0 <= value <= 1.0):
            raise ValueError(f"alpha must be in [0, 1], got {value!r}")
        return torch.full((num_classes,), value, device=device, dtype=dtype)
    if mode == "sigmoid" and not has_class_dim:
        raise ValueError(
            "alpha must be None or a float in [0, 1] for a 1-D input (it has no class dimension), "
            f"got a tensor of shape {tuple(torch.as_tensor(alpha).shape)}"
        )
    t = as_class_vector(alpha, "alpha", num_classes, device, dtype)
    if on_host(t) and not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError(f"alpha must have every value in [0, 1], got {t.tolist()}")
    return t


def with_class_weight(weight, class_weight: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """The element weight times a (C,) per-class factor along the input's dim 1."""
    class_w = class_weight.view((1, class_weight.numel()) + (1,) * (input.dim() - 2))
    return class_w if weight is None else torch.as_tensor(weight, device=input.device) * class_w


def check_finite_weight(weight) -> None:
    """A weight must be finite (checked where that reads no device value)."""
    if weight is None:
        return
    if not isinstance(weight, torch.Tensor):
        try:
            weight = torch.as_tensor(weight)
        except (TypeError, ValueError, RuntimeError):
            return  # not numbers: the shape checks report it
    if on_host(weight) and weight.is_floating_point() and weight.numel() and not bool(
            torch.isfinite(weight).all()):
        bad = weight[~torch.isfinite(weight)]
        raise ValueError(f"weight must be finite, got a tensor of shape {tuple(weight.shape)} containing "
                         f"{bad[0].item()!r}")


def sigmoid_weight(weight, input: torch.Tensor, dtype) -> torch.Tensor | None:
    """The sigmoid element weight broadcast to the input's shape, in the compute dtype."""
    if weight is None:
        return None
    device = input.device
    if not isinstance(weight, torch.Tensor):
        weight = torch.as_tensor(weight, device=device)
    try:
        return torch.broadcast_to(weight.to(device=device, dtype=dtype), input.shape)
    except RuntimeError:
        raise ValueError(
            f"weight must be broadcastable to the input shape {tuple(input.shape)}, got {tuple(weight.shape)}"
        ) from None


def check_sigmoid_ignore_index(ignore_index) -> None:
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, Real)
                                     or math.isnan(ignore_index)):
        raise ValueError(f"ignore_index must be None or a number other than NaN (no target equals NaN), "
                         f"got {ignore_index!r}")


def check_softmax_ignore_index(ignore_index) -> None:
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")


def check_sigmoid_target(input: torch.Tensor, target: torch.Tensor) -> None:
    if target.shape != input.shape:
        raise ValueError(
            f"target must have the same shape as input {tuple(input.shape)}, got {tuple(target.shape)}"
        )


def check_sigmoid_target_values(t: torch.Tensor, ignore_index) -> None:
    """Targets in [0, 1] (or equal to ignore_index); ``t`` is the detached target in the compute dtype."""
    if not (on_host(t) and t.numel()):
        return
    lo, hi = torch.aminmax(t)
    if not (lo >= 0 and hi <= 1):  # also when NaN, which aminmax propagates
        bad = ~((t >= 0) & (t <= 1))
        if ignore_index is not None:
            bad &= t != ignore_index
        if bool(bad.any()):
            raise ValueError(
                "target must hold values in [0, 1] (hard labels or soft targets)"
                + (f" or ignore_index={ignore_index}" if ignore_index is not None else "")
                + f", got values such as {t[bad][0].item()!r}"
            )


def check_softmax_target(input: torch.Tensor, target: torch.Tensor, sample_shape: tuple) -> bool:
    """Checks the target's dtype and shape; returns whether it holds class probabilities (else indices)."""
    if target.is_floating_point():
        if target.shape != input.shape:
            raise ValueError(
                f"target of class probabilities must have the input's shape {tuple(input.shape)}, "
                f"got {tuple(target.shape)}"
            )
        return True
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold class indices (an integer dtype) or class probabilities, got {target.dtype}")
    if tuple(target.shape) != sample_shape:
        raise ValueError(
            f"target of class indices must have shape {sample_shape} for input of shape {tuple(input.shape)}, "
            f"got {tuple(target.shape)}"
        )
    return False


def check_probability_target_values(t: torch.Tensor) -> None:
    if not (on_host(t) and t.numel()):
        return
    bad = ~((t >= 0) & (t <= 1))  # NaN too
    if bool(bad.any()):
        raise ValueError(f"target of class probabilities must hold values in [0, 1], got values such as "
                         f"{t[bad][0].item()!r}")


def check_class_indices(tgt: torch.Tensor, valid: torch.Tensor, num_classes: int, ignore_index) -> None:
    if not on_host(tgt):
        return
    bad = valid & ((tgt < 0) | (tgt >= num_classes))
    if bool(bad.any()):
        allowed = f"[0, {num_classes})" + (f" or equal ignore_index={ignore_index}" if ignore_index is not None else "")
        raise ValueError(f"target class indices must be in {allowed}, got {tgt[bad][0].item()}")
