"""Gamma resolution: every form of gamma the loss functions accept, brought to one of the four kinds of the kernel
contract (:mod:`adaptive_focal._kernels`): a scalar, one value per class, one value per element, or a table of
values per (class, p_t bin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch

from ..gamma_forms import AsymmetricGamma, FocalMixture, GammaTable
from ._checks import on_host

# gamma kinds, shared with the kernel contract
SCALAR, PER_CLASS, FULL, TABLE = 0, 1, 2, 3


@dataclass
class Gamma:
    """A resolved gamma: its kind and its values in the compute dtype."""

    kind: int
    value: torch.Tensor  # scalar (), per class (C,), full (input shape), or table values (C, B)
    table: GammaTable | None = None
    #: every value is >= 0 (so the inverse focal branch can be skipped); False when unknown without a sync
    nonneg: bool = False


def _checked_table(table: GammaTable) -> bool:
    """Checks that a GammaTable's values are finite (where that reads no device value); returns whether they are
    known to be >= 0."""
    values = table.values
    if not on_host(values):
        return False
    low, high = (float(v) for v in torch.aminmax(values.detach()))
    if not (math.isfinite(low) and math.isfinite(high)):  # aminmax propagates NaN
        raise ValueError(f"gamma: GammaTable values must be finite, got {values.tolist()}")
    return low >= 0 and not values.requires_grad


def _checked_tensor(gamma: torch.Tensor, known_nonneg: bool) -> bool:
    """Checks that a tensor gamma is finite (where that reads no device value); returns whether it is known to be
    >= 0. ``known_nonneg``: the caller vouches for both, so nothing is read."""
    if known_nonneg and not gamma.requires_grad:
        return True
    if not (on_host(gamma) and gamma.numel()):
        return False  # unknown without reading the values
    if gamma.dim() == 0:  # read directly
        low = high = float(gamma.detach())
    else:
        low, high = (float(v) for v in torch.aminmax(gamma.detach()))
    if math.isnan(low):  # aminmax propagates NaN
        raise ValueError(f"gamma must not be NaN, got a tensor of shape {tuple(gamma.shape)} containing NaN")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"gamma must be finite, got a tensor of shape {tuple(gamma.shape)} containing "
                         f"{low if math.isinf(low) else high}")
    return low >= 0 and not gamma.requires_grad


def _shape_error(gamma: torch.Tensor, input: torch.Tensor, mode: str) -> ValueError:
    shape, gshape = tuple(input.shape), tuple(gamma.shape)
    if mode == "sigmoid":
        return ValueError(
            f"gamma must be a float, a 0-d tensor, a (C,) per-class tensor, a GammaTable, or a tensor broadcastable "
            f"to the input shape {shape}, got shape {gshape}"
        )
    per_sample = (shape[0], 1) + shape[2:]
    if gshape == (shape[0],) + shape[2:]:  # the target's shape: meant per sample, or per class term
        readings = ("a 1-D gamma is one value per class and needs length C = " f"{shape[1]}" if gamma.dim() == 1
                    else "(N, d1, ...) could be one gamma per sample or, broadcast from the right, one per class term")
        return ValueError(
            f"gamma of shape {gshape} does not say what it means for softmax_focal_loss with input {shape}: "
            f"{readings}; give one gamma per sample the input's {input.dim()} dimensions, shape {per_sample} "
            f"(gamma.unsqueeze(1)), and one per class term a shape broadcastable to {shape}"
        )
    return ValueError(
        f"gamma must be a float, a 0-d tensor, a (C,) per-class tensor, a GammaTable, or a tensor with the input's "
        f"{input.dim()} dimensions broadcastable to its shape {shape} (one value per class term; {per_sample} for "
        f"one per sample), got shape {gshape}"
    )


def resolve(gamma, input: torch.Tensor, mode: str, dtype, known_nonneg: bool = False) -> Gamma:
    """Brings every accepted form of gamma into one of the four kinds of the kernel contract.

    A 1-D gamma of length C is per class (along dim 1). Otherwise a tensor gamma is broadcast to the input, and
    for softmax it must have the input's number of dimensions: ``(N, 1, d1, ...)`` is one gamma per sample.
    Non-finite values are errors (checked where that reads no device value).

    ``known_nonneg``: the caller vouches that a tensor gamma is finite and >= 0 (``FocalMixture._known_nonneg``),
    so its values are not read back to check.
    """
    device = input.device
    if isinstance(gamma, GammaTable):
        return Gamma(TABLE, gamma.values, gamma, nonneg=_checked_table(gamma))
    if isinstance(gamma, Real) and not isinstance(gamma, bool):
        value = float(gamma)
        if not math.isfinite(value):
            raise ValueError(f"gamma must {'not be NaN' if math.isnan(value) else 'be finite'}, got {value!r}")
        return Gamma(SCALAR, torch.tensor(value, device=device, dtype=dtype), nonneg=value >= 0)
    if not isinstance(gamma, torch.Tensor):
        raise TypeError(
            "gamma must be a float, a tensor, a GammaTable, a FocalMixture or an AsymmetricGamma, "
            f"got {type(gamma).__name__}"
        )
    if not gamma.is_floating_point():
        gamma = gamma.to(dtype)
    nonneg = _checked_tensor(gamma, known_nonneg)
    g = gamma.to(device=device, dtype=dtype)
    if g.dim() == 0:
        return Gamma(SCALAR, g, nonneg=nonneg)
    if input.dim() >= 2 and g.dim() == 1 and g.numel() == input.shape[1]:
        return Gamma(PER_CLASS, g, nonneg=nonneg)
    if mode == "softmax" and g.dim() < input.dim():
        raise _shape_error(gamma, input, mode)
    try:
        full = torch.broadcast_to(g, input.shape)
    except RuntimeError:
        raise _shape_error(gamma, input, mode) from None
    return Gamma(FULL, full, nonneg=nonneg)


def check_table(gamma: Gamma, num_classes: int) -> None:
    if gamma.table is not None and gamma.table.per_class and gamma.value.shape[0] != num_classes:
        raise ValueError(
            f"gamma: a per-class GammaTable needs values of shape (C, B) with C = {num_classes}, "
            f"got {tuple(gamma.value.shape)}"
        )


def asymmetric(gamma: AsymmetricGamma, input: torch.Tensor, target, num_classes: int, dtype) -> torch.Tensor:
    """An AsymmetricGamma as the per-element gamma it stands for (after the target's shape is known to match)."""
    c = gamma.num_classes
    if c is not None and (input.dim() < 2 or c != num_classes):
        where = "a 1-D input has no class dimension" if input.dim() < 2 else f"the input has C = {num_classes}"
        raise ValueError(f"gamma: AsymmetricGamma with per-class values of length {c} does not fit: {where}")
    if not isinstance(target, torch.Tensor) or target.shape != input.shape:
        return gamma.positive  # let the usual target checks report the problem
    return gamma.expand(target.to(input.device), dtype)


def reject_asymmetric_for_softmax(gamma) -> None:
    if isinstance(gamma, AsymmetricGamma):
        raise ValueError(
            "gamma: AsymmetricGamma (one gamma for positive and one for negative targets) is for "
            "sigmoid_focal_loss; softmax_focal_loss has one target class per sample, use a float, a (C,) "
            "per-class tensor, a per-sample tensor, a GammaTable or a FocalMixture"
        )


def check_mixture(mix: FocalMixture, mode: str, input: torch.Tensor) -> int | None:
    """Checks that a FocalMixture fits the input; returns its number of classes (None when not per class)."""
    c = mix.num_classes
    if c is not None:
        has_class_dim = input.dim() >= 2 or mode == "softmax"
        num_classes = (input.shape[1] if input.dim() >= 2 else input.shape[0]) if has_class_dim else None
        if num_classes != c:
            where = "a 1-D input has no class dimension" if num_classes is None else f"the input has C = {num_classes}"
            raise ValueError(
                f"gamma: FocalMixture with per-class gammas or weights of length {c} does not fit: {where}")
    if mode == "softmax" and mix.weights.dim() == 2:
        raise ValueError(
            "gamma: a FocalMixture with per-class weights is for sigmoid_focal_loss (its weights scale each "
            "class's elements); for softmax_focal_loss give scalar weights of shape (K,) and per-class factors "
            f"through alpha, got weights of shape {tuple(mix.weights.shape)}"
        )
    return c


def softmax_terms(g: Gamma, mix: FocalMixture | None, input: torch.Tensor, dtype) -> list:
    """(Gamma, weight) per term of the softmax loss ``sum_k w_k L(gamma_k)``: one term without a weight for a
    plain gamma, else one per FocalMixture term (``g`` is its first term, already resolved)."""
    if mix is None:
        return [(g, None)]
    return [(g if k == 0 else resolve(mix.gammas[k], input, "softmax", dtype), mix.weights[k].to(dtype))
            for k in range(mix.num_terms)]
