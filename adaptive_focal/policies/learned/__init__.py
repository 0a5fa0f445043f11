"""Learned gamma controllers: gamma chosen for a *validation* objective, a bilevel problem.

Why gamma cannot be learned on the training loss. The focal loss of an example,
``FL = -(1 - p_t)**gamma * ln(p_t)``, falls as gamma grows for every ``0 < p_t < 1``:

    dFL/dgamma = -(1 - p_t)**gamma * ln(1 - p_t) * ln(p_t) < 0,

so gradient descent on the training loss over gamma (together with the model, or alone) raises gamma without
bound: the loss "improves" by switching itself off. No published method learns focal gamma; the controllers here
optimise what gamma is for, the model's performance on held-out data:

    min_gamma  L_val(theta*(gamma)),    theta*(gamma) = the parameters that training with FL(gamma) produces,

with ``L_val`` the plain cross-entropy (softmax) or binary cross-entropy (sigmoid) of the model on validation
batches, never the focal loss (whose own dependence on gamma is the problem above). ``val_loss_fn`` replaces it
(e.g. a class-balanced cross-entropy for long-tailed data).

Three controllers, each registered with :func:`~adaptive_focal.register_policy` and each in its own module
(``common`` holds what they share: the sources, the look-ahead objective and :class:`LearnedPolicy`):

* ``"hypergradient"`` (:class:`HypergradientGamma`): gamma (global or per class) moved by the one-step look-ahead
  hypergradient of the validation loss (Luketina et al., 2016; Baydin et al., 2018).
* ``"gammanet"`` (:class:`GammaNet`): a small network maps difficulty features to gamma and is meta-trained
  through the same look-ahead (in the spirit of Meta-Weight-Net, Shu et al., 2019).
* ``"bandit"`` (:class:`BanditGamma`): an adversarial bandit (Exp3.S, Auer et al., 2002) picks gamma from a
  grid every ``every`` steps, rewarded by the drop of the validation loss over its window.

What they need, given explicitly at construction. The bilevel signal needs the model, held-out data and (for the
look-ahead) training batches, which the policy API's ``step(stats)`` does not carry:

* ``model``: the ``nn.Module`` being trained (the underlying module, not a DDP or compile wrapper); it is only
  read: the look-ahead runs it in its current mode (train mode inside a training loop, as Meta-Weight-Net does)
  through :func:`torch.func.functional_call` on copies of its buffers (batch-norm running statistics are not
  touched, parameters' ``.grad`` neither) and under :func:`torch.random.fork_rng`, so dropout in the look-ahead
  does not move the caller's random stream; the bandit measures in eval mode and restores every module's mode;
* ``val_source``: an iterable of ``(x, y)`` validation batches (a DataLoader, a list, or an endless iterator),
  cycled: a re-iterable is iterated again when it runs out; ``model(x)`` must give the logits the loss takes;
* the look-ahead's training batch (``hypergradient`` and ``gammanet``): either ``train_source`` (an iterable of
  ``(x, y)`` batches, cycled like ``val_source``) or ``policy.observe(x, y)`` called before ``policy.step(stats)``
  with the batch of that step (an observed batch takes precedence; the look-ahead starts from the parameters
  after that step's optimizer update); ``lr``: the learning rate of the virtual SGD step (a number, or the optimizer,
  whose first parameter group's current learning rate is read);
* ``every`` (k): the meta step runs after every k-th call of ``step``; the other steps only count.

Cost. A meta step of the look-ahead controllers is a forward and a graph-keeping backward on the training batch,
a forward and backward on the validation batch and one backward through the first backward: measured at about
5x a training step (small CNN, batch 64, 3x32x32, CPU), so the default ``every=20`` adds about 25% to the average
step. ``lookahead_params`` restricts the virtual step to some parameters (e.g. the classifier head,
``lookahead_params="fc."``), the usual cheaper approximation of the look-ahead: there the meta step cost about
1.2x a training step (+6% at ``every=20``). The bandit's window end is two validation forward passes (under 1x a
step; +2% at ``every=50``). Between meta steps ``step`` only counts (about 0.02 ms; ``gammanet`` also adds the
batch statistics to its features, about 0.16 ms). Meta steps copy the sources' batches to the model's device and
are written not to read values back to the host (not checked on a GPU yet).

Resume. ``state_dict()`` holds everything the controller's future depends on apart from the model and the data:
gamma, the network's weights and its optimiser (``gammanet``), the bandit's weights, arm and random generator, and
each source's position (passes completed, batches drawn in the current pass). A freshly built policy given the
state and sources built the same way as the saved one's continues the identical trajectory: after
``load_state_dict`` each source is iterated from its start again and skips the batches the saved policy had drawn
in its current pass. Sources are drawn from without moving the global random generator, so the policy does not
change the caller's random stream; a shuffling DataLoader draws its order from the global generator's state at the
start of each pass (or from its own ``generator``), so after a restart it gives a valid but different order unless
that state is restored. Under ``torch.distributed`` the meta signals (hypergradient, meta-gradients, validation
losses) are averaged over the ranks, so every rank writes the same gamma.
"""

from .bandit import BanditGamma
from .common import LearnedPolicy
from .gammanet import GammaNet
from .hypergradient import HypergradientGamma

__all__ = ["BanditGamma", "GammaNet", "HypergradientGamma", "LearnedPolicy"]
