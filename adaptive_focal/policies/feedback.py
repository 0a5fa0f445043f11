"""Feedback controllers: gamma follows what each training batch's statistics say about difficulty.

Everything a controller computes stays on the statistics' device (its state is tensors, updated with tensor ops
and ``torch.where`` instead of Python branches on values), so ``step`` never waits for an accelerator. On CPU
statistics, where reading a value costs nothing, the global controllers (``automated``, ``pi``, ``asl_adaptive``)
take the same rule in Python numbers instead, and ``efl`` its per-class arithmetic (up to 256 classes): a dozen
small tensor operations per step were most of their cost. Both paths are tested against the same examples.
"""

from __future__ import annotations

import math

import torch

from ..gamma_forms import AsymmetricGamma, FocalMixture
from ..loss import FocalLoss
from ..stats import BatchStats
from .base import GammaPolicy, RunContext, _check_number, _class_shape, register_policy, state_tensor
from .space import Float

__all__ = ["AdaptiveAsymmetry", "AutomatedGamma", "EqualizedFocal", "PIGamma"]


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

    search_space = {"momentum": Float(0.5, 0.99)}

    needs_stats = True
    reads = ("count", "sum_pt")

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

    def compute(self, stats: BatchStats):
        if stats.count.device.type == "cpu":
            return self._compute_host(stats)
        return self._compute_tensor(stats)

    def _compute_host(self, stats: BatchStats) -> float:
        """The rule on CPU statistics in Python numbers (reading a CPU tensor never synchronises), instead of the
        tensor path's small operations every step; p_hat is stored in float32 as there."""
        count = int(stats.count)
        p_hat = None if self.p_hat is None else float(self.p_hat)
        if count:
            mean = float(stats.sum_pt) / count
            p_hat = mean if not p_hat else p_hat + (1.0 - self.momentum) * (mean - p_hat)
            self.p_hat = torch.tensor(p_hat, dtype=torch.float32)
        elif self.p_hat is None:
            self.p_hat = torch.zeros((), dtype=torch.float32)
        p = float(self.p_hat)
        gamma = -math.log(max(p, 1e-12)) if p > 0 else self.gamma_init
        return min(max(gamma, 0.0), self.gamma_max)

    def _compute_tensor(self, stats: BatchStats) -> torch.Tensor:
        """The rule in tensor operations on the statistics' device (no synchronisation on a GPU)."""
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

    def extra_state(self) -> dict:
        return {"p_hat": None if self.p_hat is None else self.p_hat.detach().cpu().clone()}

    def _p_hat(self, state: dict) -> torch.Tensor | None:
        p_hat = state_tensor(state, "p_hat", torch.zeros((), device=self._device()), allow_none=True)
        if p_hat is not None and not 0.0 <= float(p_hat) <= 1.0:
            raise ValueError(f"state['p_hat'] must be a probability in [0, 1], got {float(p_hat)!r}")
        return p_hat

    def check_extra_state(self, state: dict) -> None:
        self._p_hat(state)

    def load_extra_state(self, state: dict) -> None:
        self.p_hat = self._p_hat(state)


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
    output is the bound and I keeps its previous value instead of winding up. ``per_class=True`` runs one
    controller per class on the per-class mean p_t (classes absent from a batch keep their gamma and integral) and
    writes a (C,) gamma.

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

    search_space = {"setpoint": Float(0.3, 0.95), "kp": Float(0.1, 10.0, log=True), "ki": Float(0.0, 1.0),
                    "gamma_init": Float(0.0, 5.0)}

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
        self.num_classes, shape = _class_shape(self.per_class, num_classes)
        # the fields the signal reads (sum_pt also for the histogram: a NaN p_t lands in a bin but not silently)
        self._reads = (("class_count", "class_sum_pt") if self.per_class else
                       ("count", "sum_pt") if signal == "mean_pt" else ("count", "pt_hist", "sum_pt"))
        device = self._device()
        self.integral = torch.zeros(shape, device=device)
        self._write(torch.full(shape, self.gamma_init, device=device))

    @property
    def reads(self) -> tuple[str, ...]:
        """The statistics' fields this controller's signal reads."""
        return self._reads

    def _easy_bin(self, stats: BatchStats) -> int:
        """The first p_t bin at or above ``easy_threshold`` (reads only the small edges tensor)."""
        edges = stats.edges.to(torch.float32)
        at = torch.isclose(edges, torch.tensor(self.easy_threshold, device=edges.device)).nonzero()
        if at.numel() != 1:
            raise ValueError(
                f"easy_threshold={self.easy_threshold} must be one of the statistics' bin edges {edges.tolist()}"
            )
        return int(at[0, 0])

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
        easy = stats.pt_hist[self._easy_bin(stats):].sum().to(torch.float32)
        total = stats.count.to(torch.float32)
        return easy / total.clamp_min(1.0), stats.count > 0

    def check_stats(self, name: str, stats: BatchStats) -> None:
        if self.per_class and stats.num_classes != self.num_classes:
            raise ValueError(
                f"{name} have {stats.num_classes} classes but the 'pi' policy was built for {self.num_classes}"
            )

    def compute(self, stats: BatchStats):
        if not self.per_class and stats.count.device.type == "cpu":
            return self._compute_host(stats)
        return self._compute_tensor(stats)

    def _compute_tensor(self, stats: BatchStats) -> torch.Tensor:
        """The rule in tensor operations on the statistics' device (no synchronisation on a GPU)."""
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

    def _compute_host(self, stats: BatchStats) -> float | None:
        """The global controller on CPU statistics, in Python numbers: the rule of ``_compute_tensor`` without its
        dozen small tensor operations per step (reading a CPU tensor never synchronises)."""
        count = int(stats.count)
        if count == 0:  # nothing measured: gamma and integral stay
            return None
        if self.signal == "mean_pt":
            measured = float(stats.sum_pt) / count
        else:
            measured = int(stats.pt_hist[self._easy_bin(stats):].sum()) / count
        error = measured - self.setpoint
        candidate = float(self.integral) + error
        raw = self.gamma_init + self.kp * error + self.ki * candidate
        saturated = (raw > self.gamma_max and error > 0) or (raw < self.gamma_min and error < 0)
        if not saturated:
            self.integral.fill_(candidate)
        return min(max(raw, self.gamma_min), self.gamma_max)

    def extra_state(self) -> dict:
        return {"integral": self.integral.detach().cpu().clone()}

    def check_extra_state(self, state: dict) -> None:
        state_tensor(state, "integral", self.integral)

    def load_extra_state(self, state: dict) -> None:
        # a copy, never the caller's tensor: the steps update it in place
        self.integral = state_tensor(state, "integral", torch.zeros_like(self.integral, device=self._device()))


#: EFL: up to this many classes, CPU statistics are turned into gamma in Python numbers (a dozen small tensor
#: operations per step cost more there than the arithmetic); results equal the tensor path's bit for bit
_HOST_CLASSES = 256


def _require_fields(name: str, policy: str, stats: BatchStats, fields: tuple[str, ...]) -> None:
    missing = [f for f in fields if getattr(stats, f, None) is None]
    if missing:
        raise ValueError(
            f"the {policy!r} policy needs {name} with {', '.join(missing)} (sigmoid_focal_loss(..., "
            f"return_stats=True) computes them), got a BatchStats without them"
        )


@register_policy("efl")
class EqualizedFocal(GammaPolicy):
    """Equalized Focal Loss (Li et al., 2022, "Equalized Focal Loss for Dense Long-Tailed Object Detection").

    Per class j, gamma follows the accumulated ratio of the gradient magnitudes of its positive and negative
    elements, ``g_j = clip(sum |grad+| / sum |grad-|, 0, 1)`` over all steps so far (rare classes, whose few
    positives are outweighed by negatives, have a small ``g_j``):

        gamma_j = gamma_b + scale * (1 - g_j),        weighting factor  w_j = gamma_j / gamma_b

    and the element loss of class j is ``w_j * alpha_t * (1 - p_t)**gamma_j * BCE``: the policy writes a one-term
    :class:`~adaptive_focal.FocalMixture` with per-class gammas ``gamma_j`` and weights ``w_j``. Before any
    gradient is seen ``g_j = 1`` (gamma_b for every class), as in the authors' code; here that holds per class, so
    a class whose accumulated gradients are both still 0 (every element of it ignored so far, or an empty or
    skipped batch) keeps ``g_j = 1``, where the authors' ratio would give it 0 and the largest gamma. Defaults
    gamma_b 2 and scale 8 are the paper's; alpha (0.25 there) is the loss's own setting.

    The gradients come from the statistics (``class_sum_grad_pos`` / ``class_sum_grad_neg``): the derivative of
    each element's loss before reduction. The authors accumulate the gradient of the reduced loss, which divides
    every batch by its normaliser; within a batch the ratio is the same, across batches ours weighs every element
    alike. As in the authors' code, gamma_j and w_j are constants of the gradient while ``(1 - p_t)`` is
    differentiated (the loss's ``detach_modulator`` changes that).

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> loss = FocalLoss("sigmoid", alpha=0.25)
        >>> policy = create_policy("efl", loss, num_classes=3)
        >>> x, t = torch.tensor([[2.0, -1.0, -3.0]]), torch.tensor([[1.0, 0.0, 0.0]])
        >>> _, stats = loss(x, t, return_stats=True)
        >>> policy.step(stats)  # class 0 saw only a positive gradient (g = 1), classes 1 and 2 only negatives
        >>> loss.gamma.gammas.tolist()
        [[2.0, 10.0, 10.0]]
    """

    search_space = {"gamma_b": Float(0.5, 4.0), "scale": Float(0.0, 16.0)}

    modes = ("sigmoid",)
    needs_stats = True
    reads = ("class_sum_grad_pos", "class_sum_grad_neg")

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """The run's number of classes (the mixture's size from the start)."""
        return {} if context.num_classes is None else {"num_classes": context.num_classes}

    def __init__(self, loss: FocalLoss, gamma_b: float = 2.0, scale: float = 8.0,
                 num_classes: int | None = None) -> None:
        super().__init__(loss)
        self.gamma_b = _check_number("gamma_b", gamma_b, 0.0, 20.0, low_open=True)
        self.scale = _check_number("scale", scale, 0.0, 20.0)
        self.num_classes = None if num_classes is None else _check_number("num_classes", num_classes, 1, integer=True)
        # the accumulated gradient sums per class: float64 tensors, or on the host path lists of Python floats
        # (float64 too, so both forms add up the same numbers bit for bit); pos_grad / neg_grad show them as tensors
        self._pos: torch.Tensor | list[float] | None = None
        self._neg: torch.Tensor | list[float] | None = None
        if self.num_classes is None:  # until the first statistics say C: gamma_b with weight 1, the same loss
            self._write(torch.tensor(self.gamma_b, device=self._device()))
        else:
            self._write(self._mixture(torch.full((self.num_classes,), self.gamma_b, device=self._device())))

    def _mixture(self, gamma: torch.Tensor) -> FocalMixture:
        return FocalMixture(gamma.unsqueeze(0), (gamma / self.gamma_b).unsqueeze(0))

    @property
    def pos_grad(self) -> torch.Tensor | None:
        """(C,) float64: the accumulated ``sum |grad| * t`` per class (None before the first statistics)."""
        return self._as_tensor(self._pos)

    @property
    def neg_grad(self) -> torch.Tensor | None:
        """(C,) float64: the accumulated ``sum |grad| * (1 - t)`` per class (None before the first statistics)."""
        return self._as_tensor(self._neg)

    @staticmethod
    def _as_tensor(sums) -> torch.Tensor | None:
        return torch.tensor(sums, dtype=torch.float64) if isinstance(sums, list) else sums

    def check_stats(self, name: str, stats: BatchStats) -> None:
        if name != "stats":
            return
        if stats.class_sum_grad_pos is None or stats.class_sum_grad_neg is None:
            _require_fields(name, self.name, stats, ("class_sum_grad_pos", "class_sum_grad_neg"))
        expected = self.num_classes if self._pos is None else len(self._pos)
        if expected is not None and stats.num_classes != expected:
            raise ValueError(f"{name} have {stats.num_classes} classes but the 'efl' policy is tracking {expected}")

    def compute(self, stats: BatchStats):
        pos, neg = stats.class_sum_grad_pos, stats.class_sum_grad_neg
        current = self.loss.gamma
        if pos.device.type == "cpu" and pos.numel() <= _HOST_CLASSES:
            return self._compute_host(pos, neg, current)
        in_place = isinstance(current, FocalMixture) and current.gammas.shape == (1, pos.numel())
        if self._pos is None:
            self._pos, self._neg = pos.to(torch.float64, copy=True), neg.to(torch.float64, copy=True)
        else:  # accumulated in place, in float64 so that a long run's sums keep their small increments
            self._pos, self._neg = (torch.as_tensor(v, dtype=torch.float64, device=pos.device)
                                    for v in (self._pos, self._neg))
            self._pos.add_(pos)
            self._neg.add_(neg)
        ratio = torch.div(self._pos, self._neg + 1e-10).clamp_(0.0, 1.0)
        ratio = torch.where((self._pos + self._neg) > 0, ratio, 1.0)  # no gradient seen yet: g = 1
        gamma = ratio.mul_(-self.scale).add_(self.gamma_b + self.scale)  # gamma_b + s (1 - g), float64
        both = torch.stack((gamma, gamma / self.gamma_b))
        if in_place:
            with torch.no_grad():  # in place, on the device: no new module and no synchronisation per step
                current.gammas.copy_(both[:1])
                current.weights.copy_(both[1:])
            return current
        return FocalMixture(both[:1].to(torch.float32), both[1:].to(torch.float32))

    def _compute_host(self, pos: torch.Tensor, neg: torch.Tensor, current) -> FocalMixture:
        """The same update for few classes on the CPU, in Python numbers (a dozen small tensor operations per
        step cost more there than the arithmetic): the sums as lists of floats, written into the loss's mixture
        by ``_write_host``, or a new mixture when the loss holds another gamma."""
        if not isinstance(self._pos, list):
            self._pos = [0.0] * pos.numel() if self._pos is None else self._pos.tolist()
            self._neg = [0.0] * neg.numel() if self._neg is None else self._neg.tolist()
        acc_pos, acc_neg = self._pos, self._neg
        for j, (p, n) in enumerate(zip(pos.tolist(), neg.tolist())):
            acc_pos[j] += p
            acc_neg[j] += n
        top, scale, base = self.gamma_b + self.scale, self.scale, self.gamma_b
        gamma = [top - scale * (min(max(p / (n + 1e-10), 0.0), 1.0) if p + n > 0 else 1.0)
                 for p, n in zip(acc_pos, acc_neg)]
        finite = all(g == g for g in gamma)  # in [gamma_b, gamma_b + scale] unless NaN statistics made them NaN
        weights = [g / base for g in gamma]
        if isinstance(current, FocalMixture) and current._write_host(gamma, weights, nonneg=finite):
            return current
        return FocalMixture(torch.tensor([gamma]), torch.tensor([weights]))  # written by _write, moved to the device

    def extra_state(self) -> dict:
        def cpu(t):
            return None if t is None else t.detach().cpu().clone()
        return {"pos_grad": cpu(self.pos_grad), "neg_grad": cpu(self.neg_grad)}

    def _sums(self, state: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The state's gradient sums, checked: both None or both (C,) finite and >= 0, C the classes tracked."""
        for key in ("pos_grad", "neg_grad"):
            if key not in state:
                raise ValueError(f"state is missing {key!r}; keys present: {sorted(state)}")
        pos, neg = state["pos_grad"], state["neg_grad"]
        if pos is None and neg is None:
            return None, None
        try:
            n = None if pos is None or neg is None else torch.as_tensor(pos).reshape(-1).numel()
        except (TypeError, ValueError, RuntimeError):
            n = None
        if n is None or torch.as_tensor(pos).dim() != 1:
            raise ValueError("state['pos_grad'] and state['neg_grad'] must both be None or tensors of one shape (C,)")
        c = self.num_classes if self._pos is None else len(self._pos)
        like = torch.zeros(n if c is None else c, dtype=torch.float64, device=self._device())
        sums = state_tensor(state, "pos_grad", like), state_tensor(state, "neg_grad", like)
        if any(bool((s < 0).any()) for s in sums):
            raise ValueError("state['pos_grad'] and state['neg_grad'] must be sums of magnitudes (>= 0)")
        return sums

    def check_extra_state(self, state: dict) -> None:
        self._sums(state)

    def load_extra_state(self, state: dict) -> None:
        # copies: the steps accumulate into these in place, never into the caller's tensors
        self._pos, self._neg = self._sums(state)


@register_policy("asl_adaptive")
class AdaptiveAsymmetry(GammaPolicy):
    """ASL's adaptive asymmetry (Ridnik et al., 2021, "Asymmetric Loss For Multi-Label Classification").

    Multi-label sigmoid loss with separate focusing for positives and negatives (an
    :class:`~adaptive_focal.AsymmetricGamma`): ``gamma_pos`` stays fixed and ``gamma_neg`` moves to hold the
    probability gap ``dp = mean p_t over positive elements - mean p_t over negative elements`` at ``target_gap``:

        gamma_neg <- clip(gamma_neg + rate * (target_gap - dp), gamma_min, gamma_max)

    Raising gamma_neg down-weights easy negatives, which lets the positives' probabilities rise, so ``dp`` grows
    with gamma_neg and the update is a stable integral controller. Batches without positives or without
    negatives leave gamma_neg unchanged. Defaults: ASL's gamma_pos 0 and gamma_neg 4 to start; the gap target
    (0, "balanced" positives and negatives) and rate are ours. ASL's probability margin on negatives is not
    part of this policy.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> loss = FocalLoss("sigmoid")
        >>> policy = create_policy("asl_adaptive", loss, gamma_neg=4.0, target_gap=0.0, rate=1.0)
        >>> x, t = torch.tensor([[0.0, -2.0, -2.0]]), torch.tensor([[1.0, 0.0, 0.0]])
        >>> _, stats = loss(x, t, return_stats=True)
        >>> policy.step(stats)  # dp = 0.5 - sigmoid(2) = -0.3808: gamma_neg rises by 0.3808
        >>> round(float(loss.gamma.negative), 4)
        4.3808
    """

    search_space = {"gamma_neg": Float(0.0, 8.0), "target_gap": Float(-0.5, 0.5), "rate": Float(0.001, 1.0, log=True)}

    modes = ("sigmoid",)
    needs_stats = True
    reads = ("count", "n_pos", "sum_pt", "sum_pt_pos")

    def __init__(self, loss: FocalLoss, gamma_pos: float = 0.0, gamma_neg: float = 4.0, target_gap: float = 0.0,
                 rate: float = 0.05, gamma_min: float = 0.0, gamma_max: float = 10.0) -> None:
        super().__init__(loss)
        self.gamma_pos = _check_number("gamma_pos", gamma_pos, 0.0, 20.0)
        self.gamma_min = _check_number("gamma_min", gamma_min, 0.0, 20.0)
        self.gamma_max = _check_number("gamma_max", gamma_max, self.gamma_min, 20.0)
        self.gamma_neg = _check_number("gamma_neg", gamma_neg, self.gamma_min, self.gamma_max)
        self.target_gap = _check_number("target_gap", target_gap, -1.0, 1.0)
        self.rate = _check_number("rate", rate, 0.0, low_open=True)
        self._write(AsymmetricGamma(self.gamma_pos, self.gamma_neg))

    def check_stats(self, name: str, stats: BatchStats) -> None:
        if name == "stats":
            _require_fields(name, self.name, stats, ("sum_pt_pos",))

    def compute(self, stats: BatchStats):
        form = self.loss.gamma
        if not isinstance(form, AsymmetricGamma):  # e.g. replaced by hand: start again from the current setting
            form = AsymmetricGamma(self.gamma_pos, self.gamma_neg)
            self.loss.gamma = form.to(self._device())
            form = self.loss.gamma
        neg = form.negative
        if neg.dim() == 0 and neg.device.type == "cpu" and stats.count.device.type == "cpu":
            return self._compute_host(stats, form)
        return self._compute_tensor(stats, form)

    def _compute_host(self, stats: BatchStats, form: AsymmetricGamma) -> AsymmetricGamma:
        """The update on CPU statistics in Python numbers (reading a CPU tensor never synchronises), instead of
        the tensor path's small operations every step."""
        n_pos = int(stats.n_pos)
        n_neg = int(stats.count) - n_pos
        if n_pos and n_neg:  # otherwise the gap is undefined and gamma_neg stays
            sum_pos = float(stats.sum_pt_pos)
            gap = sum_pos / n_pos - (float(stats.sum_pt) - sum_pos) / n_neg
            moved = float(form.negative) + self.rate * (self.target_gap - gap)
            form.negative.fill_(min(max(moved, self.gamma_min), self.gamma_max))
        return form

    def _compute_tensor(self, stats: BatchStats, form: AsymmetricGamma) -> AsymmetricGamma:
        """The update in tensor operations on the statistics' device (no synchronisation on a GPU)."""
        gap = stats.mean_pt_pos.to(torch.float32) - stats.mean_pt_neg.to(torch.float32)
        neg = form.negative
        moved = (neg + self.rate * (self.target_gap - gap.to(neg.device))).clamp(self.gamma_min, self.gamma_max)
        with torch.no_grad():
            neg.copy_(torch.where(torch.isnan(gap.to(neg.device)), neg, moved))
        return form
