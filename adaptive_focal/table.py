"""GammaTable: gamma as a piecewise-constant function of the detached p_t."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GammaTable"]


class GammaTable(nn.Module):
    """Gamma looked up per element from the (detached) probability of the true class.

    Sample-dependent policies such as FLSD-53 (Mukhoti et al., 2020) and AdaFocal (Ghosh et al., 2022) set gamma
    per p_t bin; a ``GammaTable`` is how they hand that to the loss. Element ``i`` with true-class probability
    ``p_t`` falls in bin ``b`` with ``edges[b] <= p_t < edges[b + 1]`` (the last bin also holds ``p_t == 1``) and
    uses ``values[b]``, or ``values[c, b]`` for its class ``c`` when ``values`` is 2-D. Negative values select the
    inverse focal factor ``(1 + p_t)**|gamma|``. When a ``GammaTable`` is the gamma, the batch statistics use its
    edges for the p_t histogram, so a policy sees exactly the bins it controls.

    The table is an ``nn.Module`` with ``edges`` and ``values`` as buffers: it moves with ``.to()`` and is saved in
    the owning loss's ``state_dict``.

    Args:
        edges: ascending bin edges, shape (B + 1,), starting at 0 and ending at 1.
        values: gamma per bin, shape (B,) or (C, B).

    Example:
        >>> import torch
        >>> from adaptive_focal import GammaTable
        >>> table = GammaTable([0.0, 0.2, 0.5, 1.0], [5.0, 3.0, 3.0])  # FLSD-53
        >>> table.lookup(torch.tensor([0.1, 0.3, 0.9]))
        tensor([5., 3., 3.])
    """

    edges: torch.Tensor
    values: torch.Tensor

    def __init__(self, edges, values) -> None:
        super().__init__()
        edges_t = torch.as_tensor(edges, dtype=torch.float32).detach().clone()
        values_t = torch.as_tensor(values, dtype=torch.float32).detach().clone()
        self._check(edges_t, values_t)
        self.register_buffer("edges", edges_t)
        self.register_buffer("values", values_t)

    @staticmethod
    def _check(edges: torch.Tensor, values: torch.Tensor) -> None:
        if edges.dim() != 1 or edges.numel() < 2:
            raise ValueError(
                f"GammaTable edges must be a 1-D sequence of at least 2 bin edges, got shape {tuple(edges.shape)}"
            )
        if not torch.isfinite(edges).all():
            raise ValueError(f"GammaTable edges must be finite, got {edges.tolist()}")
        if edges[0].item() != 0.0 or edges[-1].item() != 1.0:
            raise ValueError(
                f"GammaTable edges must start at 0 and end at 1, got {edges[0].item()} ... {edges[-1].item()}"
            )
        if not bool((edges[1:] > edges[:-1]).all()):
            raise ValueError(f"GammaTable edges must be strictly ascending, got {edges.tolist()}")
        bins = edges.numel() - 1
        if values.dim() not in (1, 2) or values.shape[-1] != bins:
            raise ValueError(
                f"GammaTable values must have shape ({bins},) or (C, {bins}) for {bins + 1} edges, "
                f"got shape {tuple(values.shape)}"
            )
        if torch.isnan(values).any():
            raise ValueError(f"GammaTable values must not be NaN, got {values.tolist()}")

    @property
    def num_bins(self) -> int:
        return self.edges.numel() - 1

    @property
    def per_class(self) -> bool:
        return self.values.dim() == 2

    def set_values(self, values) -> None:
        """Replaces the values in place (same shape), so compiled graphs and optimisers keep their references."""
        new = torch.as_tensor(values, dtype=self.values.dtype, device=self.values.device)
        if new.shape != self.values.shape:
            raise ValueError(
                f"GammaTable.set_values: values must keep shape {tuple(self.values.shape)}, got {tuple(new.shape)}"
            )
        self._check(self.edges, new)
        with torch.no_grad():
            self.values.copy_(new)

    def bin_index(self, p_t: torch.Tensor) -> torch.Tensor:
        """The bin of each probability (int64, same shape)."""
        return torch.bucketize(p_t.detach(), self.edges[1:-1].to(p_t.dtype), right=True)

    def lookup(self, p_t: torch.Tensor, cls: torch.Tensor | None = None) -> torch.Tensor:
        """Gamma for each element of ``p_t``; ``cls`` (class indices, same shape) is needed for per-class values."""
        idx = self.bin_index(p_t)
        if not self.per_class:
            return self.values[idx]
        if cls is None:
            raise ValueError("GammaTable.lookup: cls is required when values are per class (2-D)")
        return self.values[cls, idx]

    def extra_repr(self) -> str:
        return f"bins={self.num_bins}, per_class={self.per_class}"
