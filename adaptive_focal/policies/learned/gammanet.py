"""``"gammanet"``: gamma as a small network of difficulty features, meta-trained through the look-ahead."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...gamma_forms import GammaTable
from ...loss import FocalLoss
from ...stats import BatchStats
from ..base import RunContext, _check_number, register_policy, state_tensor
from ..space import Float, Int
from .common import LearnedPolicy, _cpu_tree, _to

__all__ = ["GammaNet"]


class _GammaMLP(nn.Module):
    """features (F) -> hidden -> 1, ``gamma_max * sigmoid``: a smooth gamma in (0, gamma_max)."""

    def __init__(self, features: int, hidden: int, gamma_init: float, gamma_max: float, generator) -> None:
        super().__init__()
        self.gamma_max = gamma_max
        self.hidden = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():  # seeded initialisation: two policies built alike are identical
            bound = 1.0 / math.sqrt(features)
            self.hidden.weight.uniform_(-bound, bound, generator=generator)
            self.hidden.bias.uniform_(-bound, bound, generator=generator)
            self.out.weight.uniform_(-0.01, 0.01, generator=generator)  # starts nearly constant at gamma_init
            frac = min(max(gamma_init / gamma_max, 1e-4), 1.0 - 1e-4)
            self.out.bias.fill_(math.log(frac / (1.0 - frac)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.gamma_max * torch.sigmoid(self.out(torch.tanh(self.hidden(features)))).squeeze(-1)


@register_policy("gammanet")
class GammaNet(LearnedPolicy):
    """Gamma as a learned function of difficulty, meta-trained on validation batches (new in adaptive_focal).

    A small network (4 features -> ``hidden`` -> 1, output ``gamma_max * sigmoid``, so gamma stays in
    (0, gamma_max)) maps difficulty features to gamma, in the spirit of Meta-Weight-Net (Shu et al., 2019,
    "Meta-Weight-Net: Learning an Explicit Mapping For Sample Weighting"), which learns a loss-to-weight map the
    same way. The features of an example of class c with probability p_t of its target:

    * ``p_t`` and its loss ``-ln p_t`` (per sample),
    * its class's frequency, as ``ln(freq_c / mean frequency)`` (0 for an average class, negative for rare ones):
      the share of the class among the training samples counted so far (softmax, from the statistics of every
      step) or the fraction of positive targets of the class (sigmoid, from the look-ahead's training batches);
      ``class_freq`` fixes them instead,
    * the batch's difficulty: an exponential moving average (momentum 0.9) of the training batches' mean p_t from
      the BatchStats of every step.

    How gamma reaches the loss. The policy writes a per-class :class:`GammaTable` ``(C, num_bins)`` over equal-
    width p_t bins, the network evaluated at each class and bin centre, refreshed after every meta step; the loss
    looks each example up by its detached p_t. So the loss API is unchanged, and the look-ahead trains exactly the
    gamma the loss uses: in the look-ahead each term's gamma is the table entry of its class and p_t bin, as a
    differentiable function of the network's weights phi.

    Meta step (every ``every`` steps), as Meta-Weight-Net's: a virtual SGD step
    ``theta' = theta - lr * grad_theta L_train(theta, gamma_phi)`` on a training batch, then phi takes an Adam step
    (``meta_lr``) on ``d L_val(theta') / d phi`` (gradient norm clipped to ``clip``), with ``L_val`` the plain
    cross-entropy / BCE of a validation batch at theta' (see :class:`HypergradientGamma` for why not the focal
    loss). The network's weights come from a generator seeded with ``seed`` (built from a
    :class:`~adaptive_focal.RunContext`: the run's seed); the policy draws no other random numbers.

    Args:
        loss: the FocalLoss to drive.
        model, val_source, train_source, lr, every: see the module docstring (``every`` defaults to 20).
        num_classes: C, the table's rows (required).
        num_bins: the table's equal-width p_t bins.
        hidden: the network's hidden width.
        meta_lr, clip: Adam's learning rate for the network and the bound on the meta-gradient's norm.
        gamma_init: the network's starting output (nearly constant at first); gamma_max: its upper bound.
        class_freq: None (counted, see above) or C fixed positive class frequencies (any scale).
        seed: seeds the network's initialisation.
        lookahead_params, val_loss_fn: as for :class:`HypergradientGamma`.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 3)
        >>> batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,))) for _ in range(3)]
        >>> criterion = FocalLoss("softmax", gamma=2.0)
        >>> policy = create_policy("gammanet", criterion, model=model, val_source=batches[2:],
        ...                        train_source=batches[:2], lr=0.5, every=1, num_classes=3, num_bins=5)
        >>> tuple(criterion.gamma.values.shape), round(float(criterion.gamma.values.mean()), 2)
        ((3, 5), 2.0)
        >>> _, stats = criterion(model(batches[0][0]), batches[0][1], return_stats=True)
        >>> policy.step(stats)  # one meta step: the network moved, the table was refreshed
        >>> bool((criterion.gamma.values != policy.network_gamma()).any())
        False
    """

    search_space = {"meta_lr": Float(1e-4, 1e-1, log=True), "every": Int(1, 50), "gamma_init": Float(0.0, 5.0)}
    requires = ("model", "val_source", "optimizer", "num_classes")

    needs_stats = True
    reads = ("count", "sum_pt", "class_count")

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """As the other learned controllers', the run's number of classes (the table's rows) and the run's seed
        for the network's initialisation (so that seeds differ in it, as they do in the model's)."""
        out = super().run_defaults(loss, context)
        if context.num_classes is not None:
            out["num_classes"] = context.num_classes
        if context.seed is not None:
            out["seed"] = context.seed
        return out

    def __init__(self, loss: FocalLoss, model: nn.Module | None = None, val_source=None, train_source=None,
                 lr=None, every: int = 20, num_classes: int | None = None, num_bins: int = 10, hidden: int = 16,
                 meta_lr: float = 1e-2, clip: float = 1.0, gamma_init: float = 2.0, gamma_max: float = 5.0,
                 class_freq=None, seed: int = 0, lookahead_params=None, val_loss_fn=None) -> None:
        super().__init__(loss, model, val_source, train_source, lr, every, val_loss_fn, lookahead_params)
        if num_classes is None:
            raise ValueError("num_classes is required: the gamma table has one row per class")
        self.num_classes = _check_number("num_classes", num_classes, 1, integer=True)
        self.num_bins = _check_number("num_bins", num_bins, 1, 1000, integer=True)
        self.hidden = _check_number("hidden", hidden, 1, 4096, integer=True)
        self.meta_lr = _check_number("meta_lr", meta_lr, 0.0, low_open=True)
        self.clip = _check_number("clip", clip, 0.0, low_open=True)
        self.gamma_max = _check_number("gamma_max", gamma_max, 0.0, 50.0, low_open=True)
        self.gamma_init = _check_number("gamma_init", gamma_init, 0.0, self.gamma_max)
        self.seed = _check_number("seed", seed, 0, integer=True)
        device = self._device()
        self._fixed_freq = None
        if class_freq is not None:
            freq = torch.as_tensor(class_freq, dtype=torch.float32) if not isinstance(class_freq, torch.Tensor) \
                else class_freq.detach().to(torch.float32).cpu()
            if freq.shape != (self.num_classes,) or not bool(torch.isfinite(freq).all()) or not bool((freq > 0).all()):
                raise ValueError(f"class_freq must be None or {self.num_classes} positive finite numbers (one per "
                                 f"class), got {class_freq!r}")
            self._fixed_freq = freq.to(device)
        self._net = _GammaMLP(4, self.hidden, self.gamma_init, self.gamma_max,
                              torch.Generator().manual_seed(self.seed)).to(device)
        self._opt = torch.optim.Adam(self._net.parameters(), lr=self.meta_lr)
        self.edges = torch.linspace(0.0, 1.0, self.num_bins + 1, device=device)
        self.class_counts = torch.zeros(self.num_classes, dtype=torch.float64, device=device)
        self.class_totals = torch.zeros(self.num_classes, dtype=torch.float64, device=device)
        self.batch_pt = torch.tensor(-1.0, device=device)  # EMA of the batches' mean p_t; < 0 before any batch
        self._write(GammaTable(self.edges.cpu(), self.network_gamma().cpu()))

    # -- the network as a table -----------------------------------------------------------------------------
    def _features(self) -> torch.Tensor:
        """(C, B, 4) features at each class and bin centre."""
        device = self.edges.device
        c, b = self.num_classes, self.num_bins
        centre = 0.5 * (self.edges[1:] + self.edges[:-1])
        if self._fixed_freq is not None:
            freq = self._fixed_freq.to(torch.float64)
        else:
            freq = self.class_counts / self.class_totals.clamp_min(1.0)
        seen = freq > 0
        mean = torch.where(seen, freq, torch.zeros_like(freq)).sum() / seen.sum().clamp_min(1)
        rel = torch.where(seen & (mean > 0), torch.log(freq.clamp_min(1e-12) / mean.clamp_min(1e-12)),
                          torch.zeros_like(freq)).clamp(-10.0, 10.0).to(torch.float32)
        batch = torch.where(self.batch_pt >= 0, self.batch_pt, torch.full_like(self.batch_pt, 0.5))
        return torch.stack([
            centre.expand(c, b),
            -torch.log(centre).expand(c, b),
            rel.to(device).unsqueeze(1).expand(c, b),
            batch.expand(c, b),
        ], dim=-1)

    def network_gamma(self) -> torch.Tensor:
        """The network's gamma at every class and p_t bin centre now, (C, num_bins) (what the table holds after a
        meta step; the features move between meta steps, the table does not)."""
        with torch.no_grad():
            return self._net(self._features())

    # -- steps ------------------------------------------------------------------------------------------------
    def check_stats(self, name: str, stats: BatchStats) -> None:
        if name == "stats" and stats.num_classes != self.num_classes:
            raise ValueError(f"{name} have {stats.num_classes} classes but the 'gammanet' policy was built for "
                             f"num_classes={self.num_classes}")

    def compute(self, stats: BatchStats):
        count = stats.count.to(torch.float32)
        mean = stats.sum_pt.to(torch.float32) / count.clamp_min(1.0)
        ema = torch.where(self.batch_pt >= 0, 0.9 * self.batch_pt + 0.1 * mean, mean)
        self.batch_pt = torch.where(count > 0, ema, self.batch_pt)
        if self.loss.mode == "softmax":
            self.class_counts = self.class_counts + stats.class_count.to(torch.float64)
            self.class_totals = self.class_totals + stats.count.to(torch.float64)
        if not self._meta_due():
            return None
        inner = self.edges[1:-1]

        def gamma_fn(p_t, cls):
            values = self._net(self._features())  # (C, B), differentiable in the network's weights
            if cls.dim() >= 2 and cls.shape[1] != self.num_classes:
                raise ValueError(f"the 'gammanet' policy was built for num_classes={self.num_classes} but the "
                                 f"model's output has shape {tuple(cls.shape)} (C along dim 1)")
            idx = torch.bucketize(p_t.to(inner.dtype), inner, right=True)
            return values[cls, idx]

        batch = self._train_batch()
        if self.loss.mode == "sigmoid" and self._fixed_freq is None:  # positive rates from the look-ahead batches
            y = _to(batch[1], self.edges.device).detach().to(torch.float64)
            if y.dim() >= 2 and y.shape[1] == self.num_classes:
                dims = [d for d in range(y.dim()) if d != 1]
                pos = (y >= 0.5) & (y <= 1.0)  # ignored targets (e.g. -1) count as neither
                known = (y >= 0.0) & (y <= 1.0)
                self.class_counts = self.class_counts + pos.to(torch.float64).sum(dims)
                self.class_totals = self.class_totals + known.to(torch.float64).sum(dims)
        params = list(self._net.parameters())
        meta, _, _ = self._lookahead(gamma_fn, params, batch)
        meta = [m.to(p.device, p.dtype) for m, p in zip(meta, params)]
        finite = torch.stack([torch.isfinite(m).all() for m in meta]).all()
        norm = torch.sqrt(sum((m.float() ** 2).sum() for m in meta))
        scale = torch.where(finite, (self.clip / (norm + 1e-12)).clamp(max=1.0), torch.zeros_like(norm))
        for p, m in zip(params, meta):
            p.grad = torch.where(finite, m * scale, torch.zeros_like(m))
        self._opt.step()
        self._opt.zero_grad(set_to_none=True)
        values = self.network_gamma()
        current = self.loss.gamma
        if isinstance(current, GammaTable) and current.values.shape == values.shape:
            with torch.no_grad():  # in place: the same module, and no value check that would read the device
                current.values.copy_(values)
            return current
        return GammaTable(self.edges.cpu(), values.cpu())

    def extra_state(self) -> dict:
        return {
            "network": {k: v.detach().cpu().clone() for k, v in self._net.state_dict().items()},
            "optimizer": _cpu_tree(self._opt.state_dict()),
            "class_counts": self.class_counts.detach().cpu().clone(),
            "class_totals": self.class_totals.detach().cpu().clone(),
            "batch_pt": self.batch_pt.detach().cpu().clone(),
            **self._source_state(),
        }

    def _own_state(self, state: dict) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
        for key in ("network", "optimizer"):
            if not isinstance(state.get(key), dict):
                raise ValueError(f"state[{key!r}] must be a dict, got {type(state.get(key)).__name__}")
        mine = self._net.state_dict()
        net = state["network"]
        if set(net) != set(mine) or any(torch.as_tensor(net[k]).shape != mine[k].shape for k in mine):
            raise ValueError(f"state['network'] does not fit this policy's network (hidden={self.hidden}): "
                             f"expected {[(k, tuple(v.shape)) for k, v in mine.items()]}")
        net = {k: state_tensor(net, k, mine[k]) for k in mine}  # finite, copied
        counts = state_tensor(state, "class_counts", self.class_counts)
        totals = state_tensor(state, "class_totals", self.class_totals)
        if bool((counts < 0).any() or (totals < counts).any()):
            raise ValueError("state['class_counts'] and state['class_totals'] must be counts with "
                             "0 <= class_counts <= class_totals")
        batch_pt = state_tensor(state, "batch_pt", self.batch_pt)
        if float(batch_pt) > 1.0:
            raise ValueError(f"state['batch_pt'] is a mean p_t (<= 1, or < 0 before any batch), got {float(batch_pt)}")
        opt = torch.optim.Adam(_GammaMLP(4, self.hidden, self.gamma_init, self.gamma_max,
                                         torch.Generator()).parameters(), lr=self.meta_lr)
        try:  # on a scratch optimizer of the same shape: nothing of this policy's changes
            opt.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"state['optimizer'] is not the state of this policy's Adam: {err}") from None
        return net, counts, totals, batch_pt

    def check_extra_state(self, state: dict) -> None:
        self._own_state(state)
        self._check_sources(state)

    def load_extra_state(self, state: dict) -> None:
        net, counts, totals, batch_pt = self._own_state(state)
        self._load_sources(state)
        self._net.load_state_dict(net)
        self._opt.load_state_dict(state["optimizer"])
        self.class_counts, self.class_totals, self.batch_pt = counts, totals, batch_pt
