"""Difficulty-feedback gamma controllers: gamma follows what the batch statistics say about difficulty.

Everything a controller computes stays on the statistics' device (its state is tensors, updated with tensor ops
and ``torch.where`` instead of Python branches on values), so ``step`` never waits for an accelerator.
"""

from __future__ import annotations

import torch

from .loss import FocalLoss
from .policy import GammaPolicy, _check_number, register_policy
from .stats import BatchStats
from .table import GammaTable

__all__ = ["AutomatedGamma", "FLSD53", "PIGamma"]


@register_policy("flsd53")
class FLSD53(GammaPolicy):
    """FLSD-53 (Mukhoti et al., 2020, "Calibrating Deep Neural Networks using Focal Loss"), sample-dependent.

    gamma = 5 for p_t < 0.2 and 3 above; here generalised to three bands: ``gamma_low`` for
    ``p_t < thresholds[0]``, ``gamma_mid`` for ``thresholds[0] <= p_t < thresholds[1]`` and ``gamma_base`` above
    (the defaults 5, 3, 3 with thresholds 0.2, 0.5 are the paper's rule). It writes a :class:`GammaTable` once;
    the loss looks each sample up by its detached p_t.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> loss = FocalLoss("softmax")
        >>> policy = create_policy("flsd53", loss)
        >>> loss.gamma.lookup(torch.tensor([0.1, 0.3, 0.9]))
        tensor([5., 3., 3.])
    """

    search_space = {"gamma_low": ("float", 2.0, 8.0, False), "gamma_mid": ("float", 1.0, 5.0, False), "gamma_base": ("float", 0.0, 5.0, False)}

    def __init__(self, loss: FocalLoss, gamma_low: float = 5.0, gamma_mid: float = 3.0, gamma_base: float = 3.0,
                 thresholds=(0.2, 0.5)) -> None:
        super().__init__(loss)
        values = [_check_number(n, v, 0.0, 20.0) for n, v in
                  (("gamma_low", gamma_low), ("gamma_mid", gamma_mid), ("gamma_base", gamma_base))]
        th = tuple(thresholds)
        if len(th) != 2 or not all(isinstance(v, (int, float)) for v in th) or not 0.0 < th[0] < th[1] < 1.0:
            raise ValueError(f"thresholds must be two increasing numbers in (0, 1), got {thresholds!r}")
        self.table_edges = (0.0, float(th[0]), float(th[1]), 1.0)
        self.table_values = tuple(values)
        self._write(GammaTable(self.table_edges, self.table_values))


@register_policy("automated")
class AutomatedGamma(GammaPolicy):
    """Automated focal loss (Weber et al., 2019, "Automated Focal Loss for Image based Object Detection").

    gamma = -log(p_hat), with p_hat the expected probability of the correct class, tracked as an exponential
    moving average of the batches' mean p_t: ``p_hat <- momentum * p_hat + (1 - momentum) * mean_pt`` (the first
    batch initialises it). Easy training data (p_hat near 1) gives gamma near 0; hard data a larger gamma.
    gamma is clipped to ``[0, gamma_max]``; it is ``gamma_init`` until the first batch with elements, and batches
    with no element leave p_hat unchanged.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy, softmax_focal_loss
        >>> loss = FocalLoss("softmax")
        >>> policy = create_policy("automated", loss, momentum=0.9)
        >>> _, stats = softmax_focal_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), return_stats=True)
        >>> policy.step(stats)
        >>> round(float(loss.gamma), 4)  # -log(sigmoid(2))
        0.1269
    """

    search_space = {"momentum": ("float", 0.5, 0.99, False)}

    needs_stats = True

    def __init__(self, loss: FocalLoss, momentum: float = 0.95, gamma_init: float = 2.0,
                 gamma_max: float = 20.0) -> None:
        super().__init__(loss)
        self.momentum = _check_number("momentum", momentum, 0.0, 1.0)
        if self.momentum == 1.0:
            raise ValueError("momentum must be in [0, 1), got 1.0 (p_hat would never move)")
        self.gamma_max = _check_number("gamma_max", gamma_max, 0.0, 50.0, low_open=True)
        self.gamma_init = _check_number("gamma_init", gamma_init, 0.0, self.gamma_max)
        self.p_hat: torch.Tensor | None = None
        self._write(torch.tensor(self.gamma_init, device=self._device()))

    def _compute(self, stats: BatchStats):
        count = stats.count.to(torch.float32)
        mean = stats.sum_pt.to(torch.float32) / count.clamp_min(1.0)
        if self.p_hat is None:  # the first batch with elements sets p_hat (weight 1), later ones blend
            weight = (count > 0).to(torch.float32)
            self.p_hat = mean * weight
        else:
            weight = torch.where(self.p_hat > 0, 1.0 - self.momentum, 1.0) * (count > 0)
            self.p_hat = torch.lerp(self.p_hat, mean, weight)
        # p_hat == 0 only before any element was seen: gamma stays at gamma_init until then
        gamma = torch.where(self.p_hat > 0, -torch.log(self.p_hat.clamp_min(1e-12)), self.gamma_init)
        return gamma.clamp_(0.0, self.gamma_max)

    def _state(self) -> dict:
        return {"p_hat": None if self.p_hat is None else self.p_hat.detach().cpu().clone()}

    def _load_state(self, state: dict) -> None:
        p_hat = state.get("p_hat")
        self.p_hat = None if p_hat is None else torch.as_tensor(p_hat, dtype=torch.float32).to(self._device())


_SIGNALS = ("mean_pt", "easy_fraction")


@register_policy("pi")
class PIGamma(GammaPolicy):
    """A proportional-integral controller that moves gamma to hold a difficulty set-point (new in adaptive_focal).

    The measured signal is the batch's mean p_t (``signal="mean_pt"``), or the fraction of easy elements, those
    with p_t >= ``easy_threshold`` (``signal="easy_fraction"``, read from the p_t histogram, so the threshold must
    be one of the statistics' bin edges). With error ``e = measured - setpoint`` (positive: the data looks too
    easy, so gamma rises and the loss focuses harder):

        gamma = clip(gamma_init + kp * e + ki * I, gamma_min, gamma_max),    I <- I + e

    with anti-windup by conditional integration: when the output saturates in the direction of the error, the
    output is the bound and I keeps its previous value instead of winding up. ``per_class=True`` runs one controller per class on the per-class mean p_t (classes
    absent from a batch keep their gamma and integral) and writes a (C,) gamma.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy, softmax_focal_loss
        >>> loss = FocalLoss("softmax")
        >>> policy = create_policy("pi", loss, setpoint=0.5, kp=2.0, ki=0.5, gamma_init=2.0)
        >>> _, stats = softmax_focal_loss(torch.tensor([[3.0, 0.0]]), torch.tensor([0]), return_stats=True)
        >>> policy.step(stats)  # mean p_t 0.9526: e = 0.4526, gamma = 2 + 2 e + 0.5 e
        >>> round(float(loss.gamma), 4)
        3.1314
    """

    search_space = {"setpoint": ("float", 0.3, 0.95, False), "kp": ("float", 0.1, 10.0, True), "ki": ("float", 0.0, 1.0, False), "gamma_init": ("float", 0.0, 5.0, False)}

    needs_stats = True

    def __init__(self, loss: FocalLoss, setpoint: float = 0.7, kp: float = 2.0, ki: float = 0.1,
                 gamma_init: float = 2.0, gamma_min: float = 0.0, gamma_max: float = 5.0,
                 signal: str = "mean_pt", easy_threshold: float = 0.8, per_class: bool = False,
                 num_classes: int | None = None) -> None:
        super().__init__(loss)
        if signal not in _SIGNALS:
            raise ValueError(f"signal must be one of {', '.join(map(repr, _SIGNALS))}, got {signal!r}")
        if per_class and signal != "mean_pt":
            raise ValueError("per_class=True works with signal='mean_pt' (the statistics have per-class p_t means)")
        self.signal = signal
        self.setpoint = _check_number("setpoint", setpoint, 0.0, 1.0)
        self.kp = _check_number("kp", kp, 0.0)
        self.ki = _check_number("ki", ki, 0.0)
        self.gamma_min = _check_number("gamma_min", gamma_min, -20.0, 20.0)
        self.gamma_max = _check_number("gamma_max", gamma_max, self.gamma_min, 20.0)
        self.gamma_init = _check_number("gamma_init", gamma_init, self.gamma_min, self.gamma_max)
        self.easy_threshold = _check_number("easy_threshold", easy_threshold, 0.0, 1.0, low_open=True)
        self.per_class = bool(per_class)
        if self.per_class:
            if num_classes is None:
                raise ValueError("num_classes is required with per_class=True")
            self.num_classes = _check_number("num_classes", num_classes, 1, integer=True)
            shape = (self.num_classes,)
        else:
            self.num_classes = None
            shape = ()
        device = self._device()
        self.integral = torch.zeros(shape, device=device)
        self._write(torch.full(shape, self.gamma_init, device=device))

    def _measure(self, stats: BatchStats) -> tuple[torch.Tensor, torch.Tensor]:
        """The measured signal and whether it is defined (the batch had elements of that class)."""
        if self.per_class:
            if stats.num_classes != self.num_classes:
                raise ValueError(
                    f"stats have {stats.num_classes} classes but the 'pi' policy was built for {self.num_classes}"
                )
            return stats.class_mean_pt.to(torch.float32), stats.class_count > 0
        if self.signal == "mean_pt":
            return stats.mean_pt.to(torch.float32), stats.count > 0
        edges = stats.edges.to(torch.float32)
        at = torch.isclose(edges, torch.tensor(self.easy_threshold, device=edges.device)).nonzero()
        if at.numel() != 1:  # only reads the (tiny) edges tensor
            raise ValueError(
                f"easy_threshold={self.easy_threshold} must be one of the statistics' bin edges {edges.tolist()}"
            )
        k = int(at[0, 0])
        easy = stats.pt_hist[k:].sum().to(torch.float32)
        total = stats.count.to(torch.float32)
        return easy / total.clamp_min(1.0), stats.count > 0

    def _check_stats(self, name, stats, *, required):
        super()._check_stats(name, stats, required=required)
        if stats is not None and self.per_class and stats.num_classes != self.num_classes:
            raise ValueError(
                f"{name} have {stats.num_classes} classes but the 'pi' policy was built for {self.num_classes}"
            )

    def _compute(self, stats: BatchStats):
        measured, defined = self._measure(stats)
        device = measured.device
        integral = self.integral.to(device)
        error = torch.where(defined, measured - self.setpoint, torch.zeros_like(measured))
        candidate = integral + error
        raw = self.gamma_init + self.kp * error + self.ki * candidate
        # conditional integration: do not wind up while saturated in the error's direction
        saturated = ((raw > self.gamma_max) & (error > 0)) | ((raw < self.gamma_min) & (error < 0))
        self.integral = torch.where(saturated | ~defined, integral, candidate)
        gamma = raw.clamp(self.gamma_min, self.gamma_max)
        current = self.loss.gamma.detach().to(device)
        return torch.where(defined, gamma, current)

    def _state(self) -> dict:
        return {"integral": self.integral.detach().cpu().clone()}

    def _load_state(self, state: dict) -> None:
        integral = torch.as_tensor(state.get("integral", torch.zeros_like(self.integral)), dtype=torch.float32)
        if integral.shape != self.integral.shape:
            raise ValueError(
                f"state['integral'] has shape {tuple(integral.shape)}, expected {tuple(self.integral.shape)}"
            )
        self.integral = integral.to(self._device())
