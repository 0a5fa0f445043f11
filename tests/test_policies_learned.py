"""The learned controllers (hypergradient, gammanet, bandit): the look-ahead hypergradient against finite
differences, the naive training-loss gamma diverging where ours stays bounded, bad input, determinism and exact
resume with a model that trains.

The contract every policy passes (determinism and resume under BatchStats only) is in test_policies.py.
"""
import io
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import adaptive_focal as af
from adaptive_focal import FocalLoss, GammaTable, create_policy
from adaptive_focal.policies.learned.common import _lookahead_focal

C, D = 3, 5


def _blobs(n, seed, probs=(0.6, 0.3, 0.1), dtype=torch.float32):
    """Gaussian blobs: C classes in D dimensions (fixed centres), class frequencies ``probs``."""
    centres = torch.randn(C, D, generator=torch.Generator().manual_seed(99), dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.tensor(probs), n, replacement=True, generator=g)
    return centres[y] + torch.randn(n, D, generator=g, dtype=dtype), y


def _model(dtype=torch.float32, hidden=8):
    g = torch.Generator().manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(D, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, C)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.5)
    return model


def _val(n_batches=2, size=32, dtype=torch.float32):
    return [_blobs(size, 500 + i, probs=(1 / 3,) * 3, dtype=dtype) for i in range(n_batches)]


def _lookahead_val_loss(model, mode, train, val, lr, gamma):
    """L_val(theta - lr * grad_theta L_train(theta, gamma)) computed directly with the library's focal loss (only
    first derivatives), the finite-difference reference."""
    params = dict(model.named_parameters())
    x, y = train
    fn = af.softmax_focal_loss if mode == "softmax" else af.sigmoid_focal_loss
    l_train = fn(torch.func.functional_call(model, params, (x,)), y, gamma=gamma)
    grads = torch.autograd.grad(l_train, list(params.values()))
    ahead = {n: p - lr * g for (n, p), g in zip(params.items(), grads)}
    vx, vy = val
    out = torch.func.functional_call(model, ahead, (vx,))
    return F.cross_entropy(out, vy) if mode == "softmax" else F.binary_cross_entropy_with_logits(out, vy)


# -- the look-ahead's training loss is the library's focal loss --------------------------------------------------
@pytest.mark.parametrize("mode, settings", [
    ("softmax", {}),
    ("softmax", {"alpha": torch.tensor([0.2, 0.3, 0.5]), "weight": torch.tensor([1.0, 2.0, 0.5]),
                 "label_smoothing": 0.1}),
    ("softmax", {"reduction": "sum", "detach_modulator": True}),
    ("sigmoid", {"alpha": 0.25, "reduction": "positives", "ignore_index": -1.0}),
    ("sigmoid", {"label_smoothing": 0.1, "detach_modulator": True, "reduction": "none"}),
])
@pytest.mark.parametrize("form", ["scalar", "per_class", "table"])
def test_lookahead_loss_equals_the_library_loss(mode, settings, form):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, C, generator=g, dtype=torch.float64) * 3).requires_grad_()
    if mode == "softmax":
        y = torch.randint(0, C, (6,), generator=g)
        y[1] = -100
    else:
        y = (torch.rand(6, C, generator=g) < 0.4).double()
        if "ignore_index" in settings:
            y[2, 1] = -1.0
    gamma = {"scalar": torch.tensor(1.5), "per_class": torch.tensor([0.0, 0.5, 3.0]),
             "table": GammaTable([0.0, 0.3, 0.7, 1.0],
                                 torch.tensor([[4.0, 2.0, 1.0], [3.0, 1.0, 0.0], [2.0, 2.0, 2.0]]))}[form]
    loss = FocalLoss(mode, gamma=gamma, **settings).double()
    want = loss(x, y)
    want = want.mean() if settings.get("reduction") == "none" else want
    if form == "table":
        values, inner = gamma.values.double(), gamma.edges[1:-1].double()
        def fn(p, c):
            return values[c, torch.bucketize(p, inner, right=True)]
    else:
        def fn(p, c):
            return gamma.double()[c] if gamma.dim() else gamma.double()
    got = _lookahead_focal(loss, x, y, fn)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0], rtol=1e-10,
                               atol=1e-14)


def test_lookahead_loss_is_twice_differentiable_in_gamma():
    """What the library's softmax loss cannot give (its modulating factor is a once-differentiable function)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, C, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, C, generator=g, dtype=torch.float64)  # (softmax gradients' rows sum to 0: weigh them)
    y = torch.tensor([0, 1, 2, 0, 1])
    gamma = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    loss = FocalLoss("softmax")
    grad_x, = torch.autograd.grad(_lookahead_focal(loss, x, y, lambda p, c: gamma), x, create_graph=True)
    mixed, = torch.autograd.grad((grad_x * w).sum(), gamma)
    eps = 1e-6

    def grad_at(value):
        xx = x.detach().clone().requires_grad_()
        return (torch.autograd.grad(af.softmax_focal_loss(xx, y, gamma=value), xx)[0] * w).sum()

    fd = (grad_at(2.0 + eps) - grad_at(2.0 - eps)) / (2 * eps)
    assert abs(float(fd)) > 1e-3
    assert float(mixed) == pytest.approx(float(fd), rel=1e-6)


# -- the hypergradient -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, per_class", [("softmax", False), ("softmax", True), ("sigmoid", False)])
def test_hypergradient_matches_finite_differences_of_the_lookahead_validation_loss(mode, per_class):
    torch.manual_seed(0)
    model = _model(torch.float64)
    train = _blobs(24, 1, dtype=torch.float64)
    val = _blobs(24, 2, dtype=torch.float64)
    if mode == "sigmoid":
        train = (train[0], F.one_hot(train[1], C).double())
        val = (val[0], F.one_hot(val[1], C).double())
    loss = FocalLoss(mode, gamma=2.0)
    gamma0 = torch.tensor([1.0, 2.0, 3.0]) if per_class else torch.tensor(1.5)
    policy = create_policy("hypergradient", loss, model=model, val_source=[val], train_source=[train], lr=0.7,
                           every=1, per_class=per_class, num_classes=C if per_class else None,
                           gamma_init=1.5, meta_lr=1e-9)
    policy.gamma = gamma0.clone()  # (the start of the look-ahead)
    policy.step()
    h = policy.last_hypergradient.double()

    eps = 1e-5
    g0 = gamma0.double()
    fd = torch.zeros_like(g0)
    for i in range(max(g0.numel(), 1)):
        e = torch.zeros_like(g0)
        e.view(-1)[i] = eps
        plus = _lookahead_val_loss(model, mode, train, val, 0.7, g0 + e)
        minus = _lookahead_val_loss(model, mode, train, val, 0.7, g0 - e)
        fd.view(-1)[i] = (plus - minus) / (2 * eps)
    assert fd.abs().max() > 1e-4  # a real signal, not two zeros
    torch.testing.assert_close(h, fd, rtol=1e-5, atol=1e-8)


def test_gammanet_meta_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = _model(torch.float64)
    train, val = _blobs(24, 1, dtype=torch.float64), _blobs(24, 2, dtype=torch.float64)
    loss = FocalLoss("softmax", gamma=2.0)
    policy = create_policy("gammanet", loss, model=model, val_source=[val], train_source=[train], lr=0.7,
                           every=1, num_classes=C, num_bins=4, class_freq=[0.6, 0.3, 0.1])
    net = policy._net.double()
    inner = policy.edges[1:-1].double()

    def gamma_fn(p, c):
        return net(policy._features().double())[c, torch.bucketize(p, inner, right=True)]

    params = list(net.parameters())
    meta, _, _ = policy._lookahead(gamma_fn, params, train)
    bias = net.out.bias
    eps = 1e-6

    def val_loss_at(b):
        with torch.no_grad():
            bias.fill_(b)
        values = net(policy._features().double()).detach()

        def fn(p, c):
            return values[c, torch.bucketize(p, inner, right=True)]
        params_m = dict(model.named_parameters())
        out = torch.func.functional_call(model, params_m, (train[0],))
        grads = torch.autograd.grad(_lookahead_focal(loss, out, train[1], fn), list(params_m.values()))
        ahead = {n: p - 0.7 * g for (n, p), g in zip(params_m.items(), grads)}
        return F.cross_entropy(torch.func.functional_call(model, ahead, (val[0],)), val[1])

    b0 = float(bias.detach())
    fd = (val_loss_at(b0 + eps) - val_loss_at(b0 - eps)) / (2 * eps)
    val_loss_at(b0)
    assert abs(float(fd.detach())) > 1e-5
    at = next(i for i, p in enumerate(params) if p is bias)
    assert float(meta[at]) == pytest.approx(float(fd.detach()), rel=1e-5)


def test_naive_training_loss_gamma_diverges_while_the_hypergradient_stays_bounded():
    """dFL/dgamma < 0 for every p_t: descending the training loss in gamma raises gamma at every step, without a
    bound; the validation hypergradient (same data, same step size, a bound of 50 that never binds) does not."""
    x, y = _blobs(1024, 1, probs=(1 / 3,) * 3)
    val = _val(4)
    steps, lr, beta = 120, 0.5, 30.0

    torch.manual_seed(0)
    model = _model()
    gamma = torch.tensor(2.0, requires_grad=True)
    opt = torch.optim.SGD([{"params": model.parameters(), "lr": lr}, {"params": [gamma], "lr": beta}])
    naive = []
    for s in range(steps):
        xb, yb = x[32 * (s % 32):32 * (s % 32 + 1)], y[32 * (s % 32):32 * (s % 32 + 1)]
        loss = af.softmax_focal_loss(model(xb), yb, gamma=gamma)
        opt.zero_grad()
        loss.backward()
        assert gamma.grad < 0  # the training loss always falls as gamma grows
        opt.step()
        naive.append(float(gamma.detach()))

    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    criterion = FocalLoss("softmax", gamma=2.0)
    policy = create_policy("hypergradient", criterion, model=model, val_source=val, lr=lr, every=2, meta_lr=beta,
                           clip=1.0, gamma_max=50.0)
    ours = []
    for s in range(steps):
        xb, yb = x[32 * (s % 32):32 * (s % 32 + 1)], y[32 * (s % 32):32 * (s % 32 + 1)]
        loss, stats = criterion(model(xb), yb, return_stats=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        policy.observe(xb, yb)
        policy.step(stats)
        ours.append(float(criterion.gamma))

    assert all(b > a for a, b in itertools.pairwise(naive)) and naive[-1] > 10.0  # and still climbing
    assert naive[-1] - naive[-20] > 0.2
    assert 0.5 < min(ours) and max(ours) < 3.5  # it moves, both ways, and stays nowhere near the bound of 50
    assert len({round(g, 6) for g in ours}) > 10


# -- gammanet and bandit behaviour --------------------------------------------------------------------------------
def test_gammanet_writes_the_network_as_a_per_class_table():
    torch.manual_seed(0)
    model = _model()
    criterion = FocalLoss("softmax", gamma=2.0)
    policy = create_policy("gammanet", criterion, model=model, val_source=_val(), train_source=[_blobs(32, 1)],
                           lr=0.5, every=2, num_classes=C, num_bins=5, gamma_init=1.0, gamma_max=4.0)
    table = criterion.gamma
    assert isinstance(table, GammaTable) and table.values.shape == (C, 5)
    torch.testing.assert_close(table.values, torch.full((C, 5), 1.0), atol=0.05, rtol=0)  # starts near gamma_init
    x, y = _blobs(32, 7)
    for _ in range(4):
        _, stats = criterion(model(x), y, return_stats=True)
        policy.step(stats)
    assert criterion.gamma is table  # refreshed in place
    torch.testing.assert_close(table.values, policy.network_gamma())  # = the network after the last meta step
    assert not torch.allclose(table.values, torch.full((C, 5), 1.0), atol=1e-3)
    assert bool((table.values > 0).all() and (table.values < 4.0).all())
    # the class-frequency feature: counted from the statistics (class 0 is the most frequent in x, y)
    counts = torch.bincount(y, minlength=C).double() * 4
    torch.testing.assert_close(policy.class_counts, counts)


def test_bandit_exp3s_update_by_hand():
    torch.manual_seed(0)
    model = _model()
    criterion = FocalLoss("softmax", gamma=2.0)
    policy = create_policy("bandit", criterion, model=model, val_source=_val(), gammas=(0.0, 2.0, 4.0), every=2,
                           exploration=0.3, share=0.05, seed=5)
    arm = int(policy.arm)
    assert float(criterion.gamma) == (0.0, 2.0, 4.0)[arm]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = _blobs(64, 1)
    w0 = policy.log_weights.clone()
    for _ in range(3):  # the first step starts the window; two more end it
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        policy.step()
    r = float(policy.last_reward)
    assert 0.5 < r <= 1.0  # training on the blobs lowered the validation loss
    k, eta, share = 3, 0.3, 0.05
    w = w0.exp()
    p = (1 - eta) * w / w.sum() + eta / k
    gain = torch.zeros(k, dtype=torch.float64)
    gain[arm] = r / p[arm]
    new = w * torch.exp(eta * gain / k) + math.e * share / k * w.sum()
    torch.testing.assert_close(policy.log_weights, torch.log(new / new.sum()))
    assert int(policy.pulls.sum()) == 2 and policy.meta_steps == 1
    assert float(criterion.gamma) == (0.0, 2.0, 4.0)[int(policy.arm)]


def test_lookahead_leaves_the_model_and_the_random_stream_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.3),
                                torch.nn.Linear(8, C))
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    criterion = FocalLoss("softmax", gamma=2.0)
    shuffled = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_blobs(32, 500)), batch_size=16,
                                           shuffle=True)  # draws its order from the global generator
    policy = create_policy("hypergradient", criterion, model=model, val_source=shuffled, lr=0.5, every=1,
                           meta_lr=100.0)
    bandit = create_policy("bandit", FocalLoss("softmax"), model=model, val_source=shuffled, every=1)
    rng = torch.get_rng_state()
    policy.observe(*_blobs(16, 1))
    policy.step()
    bandit.step()
    bandit.step()
    assert float(criterion.gamma) != 2.0
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # parameters and batch-norm running statistics
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in model.parameters())
    assert model.training and all(m.training for m in model.modules())


def test_lookahead_params_restricts_the_virtual_step():
    torch.manual_seed(0)
    model = _model(torch.float64)
    train, val = _blobs(24, 1, dtype=torch.float64), _blobs(24, 2, dtype=torch.float64)
    hs = {}
    for which in (None, "2."):
        policy = create_policy("hypergradient", FocalLoss("softmax"), model=model, val_source=[val],
                               train_source=[train], lr=0.7, every=1, lookahead_params=which)
        policy.step()
        hs[which] = float(policy.last_hypergradient)
    # the head-only look-ahead, by hand: only the last layer takes the virtual step
    params = dict(model.named_parameters())
    head = {n: p for n, p in params.items() if n.startswith("2.")}
    g = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    out = torch.func.functional_call(model, params, (train[0],))
    grads = torch.autograd.grad(_lookahead_focal(FocalLoss("softmax"), out, train[1], lambda p, c: g),
                                list(head.values()), create_graph=True)
    ahead = {**{n: p.detach() for n, p in params.items()},
             **{n: p - 0.7 * gr for (n, p), gr in zip(head.items(), grads)}}
    want, = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(model, ahead, (val[0],)), val[1]), g)
    assert hs["2."] == pytest.approx(float(want), rel=1e-5)
    assert hs["2."] != pytest.approx(hs[None], rel=1e-3)


def test_lr_can_follow_the_optimizer():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    policy = create_policy("hypergradient", FocalLoss("softmax"), model=model, val_source=_val(), lr=opt)
    assert policy._current_lr() == 0.3
    opt.param_groups[0]["lr"] = 0.05
    assert policy._current_lr() == 0.05


# -- bad input --------------------------------------------------------------------------------------------------
def _kwargs(name, **over):
    base = {"model": _model(), "val_source": _val()}
    if name != "bandit":
        base["lr"] = 0.1
    if name == "gammanet":
        base["num_classes"] = C
    base.update(over)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize("name, over, error, match", [
    ("hypergradient", {"model": _DROP}, ValueError, "the 'hypergradient' policy needs model="),
    ("bandit", {"model": "net"}, TypeError, "model must be a torch.nn.Module, got str"),
    ("gammanet", {"val_source": _DROP}, ValueError, "the 'gammanet' policy needs val_source="),
    ("hypergradient", {"lr": _DROP}, ValueError, "the 'hypergradient' policy needs lr="),
    ("hypergradient", {"lr": -0.1}, ValueError, r"lr must be in \(0.0, inf\], got -0.1"),
    ("hypergradient", {"val_source": torch.zeros(3)}, TypeError, "val_source must be an iterable of .* got a Tensor"),
    ("bandit", {"val_source": (torch.zeros(2, D), torch.zeros(2))}, TypeError, r"got one \(x, y\) pair"),
    ("gammanet", {"train_source": 5}, TypeError, "train_source must be an iterable of .* got int"),
    ("hypergradient", {"every": 0}, ValueError, r"every must be in \[1, inf\], got 0"),
    ("hypergradient", {"gamma_min": 3.0, "gamma_max": 1.0}, ValueError, r"gamma_max must be in \[3.0, 50.0\], got 1.0"),
    ("hypergradient", {"gamma_min": -1.0}, ValueError, r"gamma_min must be in \[0.0, 20.0\], got -1.0"),
    ("hypergradient", {"per_class": True}, ValueError, "num_classes is required with per_class=True"),
    ("hypergradient", {"clip": 0.0}, ValueError, r"clip must be in \(0.0, inf\], got 0.0"),
    ("hypergradient", {"lookahead_params": ["nope."]}, ValueError, r"match no trainable parameter .* \['0.weight'"),
    ("hypergradient", {"val_loss_fn": "ce"}, TypeError, "val_loss_fn must be None or a callable"),
    ("gammanet", {"num_classes": _DROP}, ValueError, "num_classes is required"),
    ("gammanet", {"class_freq": [0.5, 0.5]}, ValueError, r"class_freq must be None or 3 positive finite numbers"),
    ("gammanet", {"gamma_init": 6.0}, ValueError, r"gamma_init must be in \[0.0, 5.0\], got 6.0"),
    ("bandit", {"gammas": (1.0,)}, ValueError,
     r"gammas must be a sequence of at least 2 numbers in \[0, 20\], got \(1.0,\)"),
    ("bandit", {"gammas": (1.0, -2.0)}, ValueError, "gammas must be a sequence of at least 2 numbers"),
    ("bandit", {"exploration": 0.0}, ValueError, r"exploration must be in \(0.0, 1.0\], got 0.0"),
    ("bandit", {"reward_momentum": 1.0}, ValueError, r"reward_momentum must be in \[0, 1\), got 1.0"),
])
def test_bad_arguments_name_the_argument_and_write_nothing(name, over, error, match):
    loss = FocalLoss("softmax", gamma=2.0)
    with pytest.raises(error, match=match):
        create_policy(name, loss, **_kwargs(name, **over))
    assert isinstance(loss.gamma, torch.Tensor) and float(loss.gamma) == 2.0


def test_a_meta_step_without_a_training_batch_says_what_to_do_and_changes_nothing():
    model = _model()
    criterion = FocalLoss("softmax", gamma=2.0)
    policy = create_policy("hypergradient", criterion, model=model, val_source=_val(), lr=0.5, every=2,
                           meta_lr=100.0)
    policy.step()  # not a meta step: no batch needed
    before = repr(policy.state_dict())
    with pytest.raises(ValueError, match=r"needs the training batch .* call policy.observe\(x, y\) before"):
        policy.step()
    assert repr(policy.state_dict()) == before and policy.step_count == 1
    policy.observe(*_blobs(16, 1))
    policy.step()
    assert policy.step_count == 2 and float(criterion.gamma) != 2.0


def test_a_one_shot_iterator_that_runs_out_is_an_error():
    policy = create_policy("bandit", FocalLoss("softmax"), model=_model(), val_source=iter(_val(1)), every=1)
    policy.step()  # draws the only batch
    with pytest.raises(RuntimeError, match="val_source ran out of batches after 1: pass a re-iterable"):
        policy.step()


def test_bad_state_changes_nothing():
    policy = create_policy("gammanet", FocalLoss("softmax"), model=_model(), val_source=_val(),
                           train_source=[_blobs(16, 1)], lr=0.5, every=1, num_classes=C)
    _, stats = policy.loss(_model()(_blobs(16, 2)[0]), _blobs(16, 2)[1], return_stats=True)
    policy.step(stats)
    state = policy.state_dict()
    before = repr(state)
    for key, value, match in [("val_source", {"passes": 0}, "state\\['val_source'\\] must be a dict"),
                              ("network", {"hidden.weight": torch.zeros(2, 2)}, "does not fit"),
                              ("class_counts", torch.zeros(5), "state\\['class_counts'\\] has shape")]:
        bad = dict(state, **{key: value})
        with pytest.raises(ValueError, match=match):
            policy.load_state_dict(bad)
        assert repr(policy.state_dict()) == before


# -- determinism and exact resume in a real training loop ---------------------------------------------------------
def _loop_case(name):
    """(policy kwargs, whether the loop calls observe, val source maker)."""
    def loader():  # a re-iterable, cycled over several passes
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(*_blobs(48, 500, probs=(1 / 3,) * 3)), batch_size=16)

    return {
        "hypergradient": ({"lr": 0.5, "every": 2, "meta_lr": 100.0, "normalize": False}, True, loader),
        "hypergradient-per-class": ({"lr": 0.5, "every": 3, "per_class": True, "num_classes": C,
                                     "normalize": True, "meta_lr": 0.3, "clip": 3.0}, True, _val),
        "gammanet": ({"lr": 0.5, "every": 2, "num_classes": C, "num_bins": 4, "meta_lr": 0.05}, True, loader),
        "bandit": ({"every": 3, "gammas": (0.0, 1.0, 2.0, 3.0), "seed": 11}, False, loader),
    }[name]


def _train(name, steps, start=0, policy=None, model=None, opt=None, criterion=None):
    kwargs, observe, val = _loop_case(name)
    if policy is None:
        torch.manual_seed(0)
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
        criterion = FocalLoss("softmax", gamma=2.0)
        policy = create_policy(name.split("-")[0], criterion, model=model, val_source=val(), **kwargs)
    x, y = _blobs(256, 1)
    trace = []
    for s in range(start, steps):
        xb, yb = x[16 * (s % 16):16 * (s % 16 + 1)], y[16 * (s % 16):16 * (s % 16 + 1)]
        loss, stats = criterion(model(xb), yb, return_stats=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if observe:
            policy.observe(xb, yb)
        policy.step(stats)
        g = criterion.gamma
        trace.append((g.values if isinstance(g, GammaTable) else g).detach().clone())
    return trace, policy, model, opt, criterion


@pytest.mark.parametrize("split", [6, 7])
@pytest.mark.parametrize("name", ["hypergradient", "hypergradient-per-class", "gammanet", "bandit"])
def test_training_loop_is_deterministic_and_resumes_exactly(name, split):
    full, _, model, _, _ = _train(name, 14)
    assert len({tuple(t.reshape(-1).tolist()) for t in full}) > 2  # gamma moved
    again, *_ = _train(name, 14)
    for a, b in zip(full, again):
        assert torch.equal(a, b)

    head, policy_a, model_a, opt_a, criterion_a = _train(name, split)  # between meta steps / mid-window
    buffer = io.BytesIO()
    torch.save({"policy": policy_a.state_dict(), "model": model_a.state_dict(), "opt": opt_a.state_dict(),
                "loss": criterion_a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    torch.manual_seed(123)  # a restart does not restore the global generator: the policy must not depend on it
    kwargs, _, val = _loop_case(name)
    model_b = _model()
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.5, momentum=0.5)
    criterion_b = FocalLoss("softmax", gamma=0.5)
    policy_b = create_policy(name.split("-")[0], criterion_b, model=model_b, val_source=val(), **kwargs)
    model_b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    policy_b.load_state_dict(saved["policy"])
    tail, *_ = _train(name, 14, start=split, policy=policy_b, model=model_b, opt=opt_b, criterion=criterion_b)
    assert len(head + tail) == len(full)
    for a, b in zip(full, head + tail):
        assert torch.equal(a, b)
    for p, q in zip(model.parameters(), model_b.parameters()):
        assert torch.equal(p, q)


def test_optuna_leaves_out_the_learned_controllers_unless_given_a_model():
    pytest.importorskip("optuna")
    from adaptive_focal.integrations.optuna import default_candidates

    assert not {"hypergradient", "gammanet", "bandit"} & set(default_candidates())
    # the bandit requires the model and validation batches, from fixed arguments or from the run's context
    assert "bandit" not in default_candidates({"bandit": {"model": object()}})
    assert "bandit" in default_candidates({"bandit": {"model": object(), "val_source": []}})
    context = af.RunContext(model=_model(), val_source=_val())
    assert "bandit" in default_candidates(context=context)
    # the look-ahead controllers also need a learning rate: the context's optimizer or a fixed lr
    assert not {"hypergradient", "gammanet"} & set(default_candidates(context=context))
    assert "hypergradient" in default_candidates({"hypergradient": {"lr": 0.1}}, context=context)


# -- torch.distributed ----------------------------------------------------------------------------------------------
def _rank_policy(rank):
    torch.manual_seed(0)
    model = _model()
    criterion = FocalLoss("softmax", gamma=2.0)
    policy = create_policy("hypergradient", criterion, model=model, val_source=[_blobs(16, 700 + rank)],
                           train_source=[_blobs(16, 800 + rank)], lr=0.5, every=1, meta_lr=10.0, clip=10.0)
    return criterion, policy


def _dist_worker(rank, world, port, out_dir):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        criterion, policy = _rank_policy(rank)
        policy.step()
        torch.save(criterion.gamma.clone(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_every_rank_writes_the_gamma_of_the_averaged_hypergradient(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_dist_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    hs = []
    for rank in range(2):  # each rank's hypergradient alone, in this process
        _, policy = _rank_policy(rank)
        policy.step()
        hs.append(policy.last_hypergradient)
    assert not torch.allclose(hs[0], hs[1])
    torch.testing.assert_close(got[0], got[1], rtol=0, atol=0)
    torch.testing.assert_close(got[0], 2.0 - 10.0 * (hs[0] + hs[1]) / 2, rtol=1e-5, atol=1e-6)
