"""Fast paths for the sigmoid focal loss, registered as the custom op ``adaptive_focal::sigmoid_focal``.

Kernel contract (shared by the CPU kernel in ``sigmoid_focal_cpu.c`` and the Triton kernel for CUDA):

``forward(x, t, gamma, gamma_kind, table_edges, alpha, weight, ignore_index, label_smoothing, detach_modulator,
stat_edges, need_elementwise, need_stats, need_conf) -> (elem, grad, acc)`` (``cpu.sigmoid_focal_forward``,
``triton_sigmoid.sigmoid_focal_forward_triton``); the op returns the same three as ``(elem, acc, grad)``.

* ``x``, ``t``: float32, contiguous, viewed as (N, C, S).
* ``gamma``: float32; ``gamma_kind`` 0: shape (), 1: (C,), 2: (N, C, S), 3: table values (C, Bt) with
  ``table_edges`` (Bt + 1,).
* ``alpha``: (C,) or None; ``weight``: (N, C, S) or None; ``ignore_index``: float or None.
* ``elem``: the element losses (N, C, S) when ``need_elementwise``, else an empty tensor.
* ``acc``: float64 of length 6 + 4B + 4C + 3CB with ``need_conf``, else 6 + B + 4C (``layout.acc_len``),
  ``[sum_loss, count, n_pos, sum_pt, sum_absdiff, hist[B], class_count[C], class_sum_pt[C], sum_pt_pos,
  class_sum_grad_pos[C], class_sum_grad_neg[C]]``, then with ``need_conf`` the confidence bins ``[conf_count[B],
  class_conf_count[C][B], conf_sum[B], correct_sum[B], class_conf_sum[C][B], class_correct_sum[C][B]]`` (the
  statistics after ``n_pos`` are zero unless ``need_stats``; ``need_conf``, the loss's opt-in
  ``confidence_stats=True``, counts only with ``need_stats``, and without it the kernels skip the confidences
  entirely), over the non-ignored elements: ``n_pos`` and
  ``sum_pt_pos`` count / sum p_t over raw targets >= 0.5, ``sum_absdiff`` sums ``|p - t'|``, ``hist[b]`` counts
  ``edges[b] <= p_t < edges[b + 1]`` (the last bin closed; values outside [edges[0], edges[B]] count in the first /
  last bin), and the class gradient sums add ``|g| t`` and ``|g| (1 - t)`` with g the element's entry of ``grad``
  and t the raw target. The confidence bins hold each element as a binary prediction: its confidence
  ``max(p, 1 - p) = sigmoid(|x|)``, binned by the same edges, and whether it is correct, ``x >= 0`` for a raw
  target ``t >= 0.5`` and ``x <= 0`` for ``t < 0.5`` (x the logit as computed, +-inf saturated), by class (index
  along dim 1) and summed over the classes. A NaN logit (the rule of ``sigmoid_focal_cpu.c``'s header) is counted:
  its p_t and its confidence fall in the last bin, and every sum it enters is NaN.
* ``grad``: d(sum of element losses)/dx, (N, C, S) float32. It is returned so that autograd can save it: the
  backward is one multiplication, and the memory kept for backward is one float32 tensor the size of the logits.

The op is what :func:`adaptive_focal.sigmoid_focal_loss` calls for large float inputs on CPU and CUDA; it is
opaque to ``torch.compile`` (no graph break) and has a fake implementation for tracing.
"""

from __future__ import annotations

import functools

import torch

from . import cpu
from .layout import acc_len

__all__ = ["MIN_NUMEL", "kernel_available", "sigmoid_focal"]

#: Inputs with fewer elements take the pure-PyTorch path: no kernel build, no thread pool, no launch overhead.
MIN_NUMEL = 1 << 15


@functools.cache
def _triton_available() -> bool:
    try:
        from . import triton_sigmoid  # noqa: F401
    except ImportError:
        return False
    return True


@torch.compiler.assume_constant_result
def kernel_available(device_type: str) -> bool:
    """Whether a fused kernel serves tensors on devices of ``device_type`` ("cpu", "cuda", ...).

    Evaluated once while ``torch.compile`` traces (its result is a constant of the graph), so loading or
    compiling the kernel never happens inside a traced region.
    """
    if device_type == "cpu":
        return cpu.available()
    if device_type == "cuda":
        return _triton_available()
    return False


@torch.library.custom_op("adaptive_focal::sigmoid_focal", mutates_args=())
def sigmoid_focal(
    x: torch.Tensor,
    t: torch.Tensor,
    gamma: torch.Tensor,
    gamma_kind: int,
    table_edges: torch.Tensor | None,
    alpha: torch.Tensor | None,
    weight: torch.Tensor | None,
    ignore_index: float | None,
    label_smoothing: float,
    detach_modulator: bool,
    stat_edges: torch.Tensor,
    need_elementwise: bool,
    need_stats: bool,
    need_conf: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    args = (x, t, gamma, gamma_kind, table_edges, alpha, weight, ignore_index, label_smoothing,
            detach_modulator, stat_edges, need_elementwise, need_stats, need_conf)
    if x.device.type == "cpu":
        elem, grad, acc = cpu.sigmoid_focal_forward(*args)
    elif x.device.type == "cuda":
        from .triton_sigmoid import sigmoid_focal_forward_triton

        elem, grad, acc = sigmoid_focal_forward_triton(*args)
    else:  # pragma: no cover - the dispatcher only routes CPU and CUDA tensors here
        raise RuntimeError(f"adaptive_focal::sigmoid_focal has no kernel for device {x.device}")
    return elem, acc, grad


@sigmoid_focal.register_fake
def _(x, t, gamma, gamma_kind, table_edges, alpha, weight, ignore_index, label_smoothing, detach_modulator,
      stat_edges, need_elementwise, need_stats, need_conf):
    elem = torch.empty_like(x) if need_elementwise else x.new_empty(0)
    acc = x.new_empty(acc_len(x.shape[1], stat_edges.numel() - 1, need_conf), dtype=torch.float64)
    return elem, acc, torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    _, _, grad = output
    ctx.save_for_backward(grad)
    # Outputs the loss does not use get no gradient; without this autograd would fill a logits-sized zero tensor
    # for ``grad`` (and ``elem``) on every backward.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_elem, grad_acc, _grad_grad):
    (grad,) = ctx.saved_tensors
    scale = None
    if grad_acc is not None:
        scale = grad_acc[0].to(grad.dtype)
    if grad_elem is not None and grad_elem.numel() > 0:
        grad_x = grad * grad_elem if scale is None else grad * (grad_elem + scale)
    elif scale is not None:
        grad_x = grad * scale
    else:
        grad_x = torch.zeros_like(grad)
    return (grad_x,) + (None,) * 13


sigmoid_focal.register_autograd(_backward, setup_context=_setup_context)
