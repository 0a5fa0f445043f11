"""``"bandit"``: gamma picked from a grid by the adversarial bandit Exp3.S, rewarded by validation progress."""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import nn

from ...loss import FocalLoss
from ..base import RunContext, _check_number, register_policy, state_tensor
from ..space import Float, Int
from .common import LearnedPolicy, _mean_over_ranks, _to

__all__ = ["BanditGamma"]


@register_policy("bandit")
class BanditGamma(LearnedPolicy):
    """Gamma picked from a grid by a non-stationary adversarial bandit, Exp3.S (new in adaptive_focal).

    Exp3.S (Auer, Cesa-Bianchi, Freund and Schapire, 2002, "The Nonstochastic Multiarmed Bandit Problem",
    section 8) tracks the best arm of a sequence that may switch, which suits training, where the best gamma
    changes as the model learns. With K arms (the ``gammas``), weights w, exploration ``eta`` and sharing
    ``share`` (alpha in the paper):

        p_i = (1 - eta) w_i / sum_j w_j + eta / K;        the arm a is drawn from p (a seeded torch.Generator)
        r_hat = r / p_a  for the arm played, 0 for the others
        w_i <- w_i exp(eta r_hat_i / K) + (e share / K) sum_j w_j

    The arm switches every ``every`` steps (the window). Its reward is the drop of the validation loss over the
    window, measured on one validation batch drawn at the window's start: ``d = L_val(start) - L_val(end)`` on
    that batch (so batch-to-batch noise cancels), with ``L_val`` the plain cross-entropy / BCE (see
    :class:`HypergradientGamma`). Exp3.S needs rewards in [0, 1] and the drops shrink as training converges, so
    ``r = (1 + tanh(d / s)) / 2`` with ``s`` an exponential moving average (``reward_momentum``) of ``|d|``:
    r = 0.5 for no change, above for improvement. The weights are kept as normalised logarithms. The first window
    starts at the first ``step`` (its start loss is measured then). No training batch is needed.

    The probabilities are ``policy.probabilities()``; ``policy.pulls`` counts the windows of each arm and
    ``policy.last_reward`` is the last window's reward.

    Args:
        loss: the FocalLoss to drive.
        model, val_source, every: see the module docstring (``every``, the window, defaults to 50).
        gammas: the arms, at least two values in [0, 20].
        exploration: eta in (0, 1], the uniform share of the probabilities and the weights' learning rate.
        share: alpha in [0, 1], Exp3.S's weight sharing (0 gives plain Exp3, which cannot follow a switch).
        reward_momentum: momentum of the reward scale ``s``.
        seed: seeds the arm draws (a ``torch.Generator`` whose state is in ``state_dict``).
        val_loss_fn: as for :class:`HypergradientGamma`.

    Example:
        >>> import torch
        >>> from adaptive_focal import FocalLoss, create_policy
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 3)
        >>> val = [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]
        >>> criterion = FocalLoss("softmax", gamma=2.0)
        >>> policy = create_policy("bandit", criterion, model=model, val_source=val, gammas=(0.0, 1.0, 2.0),
        ...                        every=5, seed=3)
        >>> float(criterion.gamma) in (0.0, 1.0, 2.0), [round(p, 3) for p in policy.probabilities().tolist()]
        (True, [0.333, 0.333, 0.333])
    """

    search_space = {"exploration": Float(0.01, 0.5, log=True), "every": Int(10, 500)}
    needs_train_batch = False

    @classmethod
    def run_defaults(cls, loss: FocalLoss, context: RunContext) -> dict:
        """As the other learned controllers' (model and validation batches), and the run's seed for the draws."""
        out = super().run_defaults(loss, context)
        if context.seed is not None:
            out["seed"] = context.seed
        return out

    def __init__(self, loss: FocalLoss, model: nn.Module | None = None, val_source=None,
                 gammas=(0.0, 0.5, 1.0, 2.0, 3.0, 5.0), every: int = 50, exploration: float = 0.1,
                 share: float = 0.01, reward_momentum: float = 0.9, seed: int = 0, val_loss_fn=None) -> None:
        super().__init__(loss, model, val_source, None, None, every, val_loss_fn)
        grid = tuple(gammas) if isinstance(gammas, (tuple, list)) else gammas
        if (not isinstance(grid, tuple) or len(grid) < 2
                or not all(isinstance(g, Real) and not isinstance(g, bool) and 0.0 <= float(g) <= 20.0 for g in grid)):
            raise ValueError(f"gammas must be a sequence of at least 2 numbers in [0, 20], got {gammas!r}")
        self.gammas = tuple(float(g) for g in grid)
        self.exploration = _check_number("exploration", exploration, 0.0, 1.0, low_open=True)
        self.share = _check_number("share", share, 0.0, 1.0)
        self.reward_momentum = _check_number("reward_momentum", reward_momentum, 0.0, 1.0)
        if self.reward_momentum == 1.0:
            raise ValueError("reward_momentum must be in [0, 1), got 1.0 (the reward scale would never be set)")
        self.seed = _check_number("seed", seed, 0, integer=True)
        device = self._device()
        k = len(self.gammas)
        self._grid = torch.tensor(self.gammas, device=device)
        self._gen = torch.Generator().manual_seed(self.seed)
        self.log_weights = torch.full((k,), -math.log(k), dtype=torch.float64, device=device)
        self.pulls = torch.zeros(k, dtype=torch.int64, device=device)
        self.arm = self._draw()
        self.start_loss = torch.tensor(0.0, dtype=torch.float64, device=device)
        self.reward_scale = torch.tensor(0.0, dtype=torch.float64, device=device)
        self.last_reward = torch.tensor(0.5, dtype=torch.float64, device=device)
        self._window_steps = 0  # steps since the window's start loss was measured
        self._window_batch = None
        self._write(self._grid[self.arm].clone())

    @property
    def meta_steps(self) -> int:
        """Windows completed so far (the first starts at the first step)."""
        return max(self.step_count - 1, 0) // self.every

    def probabilities(self) -> torch.Tensor:
        """The arms' probabilities p (float64, on the loss's device)."""
        k = len(self.gammas)
        return (1.0 - self.exploration) * torch.softmax(self.log_weights, 0) + self.exploration / k

    def _draw(self) -> torch.Tensor:
        u = float(torch.rand((), generator=self._gen, dtype=torch.float64))  # a CPU number: no device read
        cdf = torch.cumsum(self.probabilities(), 0)
        arm = (cdf <= u).sum().clamp(max=len(self.gammas) - 1)
        self.pulls = self.pulls + (torch.arange(len(self.gammas), device=arm.device) == arm).to(self.pulls.dtype)
        return arm

    def _measure(self, x, y) -> torch.Tensor:
        """The validation loss of the model now, in eval mode (dropout off, batch-norm running statistics), so
        that the window's start and end are measured alike; every module's mode is restored afterwards."""
        modes = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.eval()
            with self._fork_rng(), torch.no_grad():
                value = self._val_objective(None, x, y).detach().to(torch.float64)
        finally:
            for m, training in modes:
                m.training = training
        return _mean_over_ranks([value])[0] if self.sync_stats else value

    def _start_window(self) -> None:
        device = self._model_device()
        self._window_batch = tuple(_to(v, device) for v in self._val.next())
        self.start_loss = self._measure(*self._window_batch).to(self.log_weights.device)
        self._window_steps = 0

    def compute(self, stats):
        if self.step_count == 0:  # the first step starts the first window
            self._start_window()
            return None
        self._window_steps += 1
        if self._window_steps < self.every:
            return None
        if self._window_batch is None:  # resumed mid-window: the window's batch was the last one drawn
            self._window_batch = tuple(_to(v, self._model_device()) for v in self._val.redraw_last())
        end = self._measure(*self._window_batch).to(self.log_weights.device)
        drop = self.start_loss - end
        ema = self.reward_momentum * self.reward_scale + (1.0 - self.reward_momentum) * drop.abs()
        scale = torch.where(self.reward_scale > 0, ema, drop.abs())
        self.reward_scale = torch.where(torch.isfinite(scale), scale, self.reward_scale)
        reward = 0.5 * (1.0 + torch.tanh(drop / self.reward_scale.clamp_min(1e-12)))
        reward = torch.where(torch.isfinite(reward), reward, torch.full_like(reward, 0.5))
        self.last_reward = reward
        k = len(self.gammas)
        p = self.probabilities()
        gain = torch.zeros_like(p).scatter(0, self.arm.view(1), (reward / p[self.arm]).view(1))
        logw = self.log_weights + self.exploration * gain / k
        if self.share > 0:  # Exp3.S: every arm gets a share of the total weight, so none is ever written off
            logw = torch.logaddexp(logw, math.log(math.e * self.share / k) + torch.logsumexp(self.log_weights, 0))
        self.log_weights = logw - torch.logsumexp(logw, 0)
        self.arm = self._draw()
        self._start_window()
        return self._grid[self.arm].clone()

    def extra_state(self) -> dict:
        return {
            "log_weights": self.log_weights.detach().cpu().clone(),
            "pulls": self.pulls.detach().cpu().clone(),
            "arm": self.arm.detach().cpu().clone(),
            "start_loss": self.start_loss.detach().cpu().clone(),
            "reward_scale": self.reward_scale.detach().cpu().clone(),
            "last_reward": self.last_reward.detach().cpu().clone(),
            "window_steps": self._window_steps,
            "generator": self._gen.get_state(),
            **self._source_state(),
        }

    def _own_state(self, state: dict) -> dict:
        out = {key: state_tensor(state, key, getattr(self, key))
               for key in ("log_weights", "pulls", "arm", "reward_scale", "last_reward")}
        # a measured validation loss: inf or NaN when the model diverged (the reward then falls back to 0.5)
        out["start_loss"] = state_tensor(state, "start_loss", self.start_loss, finite=False)
        k = len(self.gammas)
        if not 0 <= int(out["arm"]) < k or bool((out["pulls"] < 0).any()):
            raise ValueError(f"state['arm'] must be in [0, {k}) and state['pulls'] >= 0, got {int(out['arm'])} "
                             f"and {out['pulls'].tolist()}")
        if not 0.0 <= float(out["last_reward"]) <= 1.0 or float(out["reward_scale"]) < 0.0:
            raise ValueError("state['last_reward'] must be in [0, 1] and state['reward_scale'] >= 0")
        window = state.get("window_steps")
        if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window < self.every:
            raise ValueError(f"state['window_steps'] must be an int in [0, every={self.every}), got {window!r}")
        gen = state.get("generator")
        if not isinstance(gen, torch.Tensor) or gen.dtype != torch.uint8:
            raise ValueError("state['generator'] must be the ByteTensor of torch.Generator.get_state()")
        try:
            torch.Generator().set_state(gen)
        except RuntimeError as err:
            raise ValueError(f"state['generator'] is not a generator state: {err}") from None
        self._check_sources(state)
        if int(state.get("step_count", 0)) > 0 and state["val_source"]["position"] < 1:
            raise ValueError("state['val_source'] has position 0 inside a started window (expected >= 1)")
        return out

    def check_extra_state(self, state: dict) -> None:
        self._own_state(state)

    def load_extra_state(self, state: dict) -> None:
        own = self._own_state(state)
        self._load_sources(state)
        self._gen.set_state(state["generator"])
        for key, value in own.items():
            setattr(self, key, value)
        self._window_steps = state["window_steps"]
        # a started window's batch was the last one the validation source drew: compute() draws it again at the
        # window's end (the saved position is kept, so a state saved now equals the one loaded)
        self._window_batch = None
