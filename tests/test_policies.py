"""One contract every gamma policy passes, plus each policy's own rule on hand-computed examples."""

import io
import math
import warnings

import pytest
import torch

import adaptive_focal as af
from adaptive_focal import FocalLoss, RunContext, create_policy, list_policies
from adaptive_focal.policies import LearnedPolicy, SequentialGamma
from adaptive_focal.policies.space import Categorical, Float, Int, as_param

C = 4


def _sequential(loss):
    warmup = create_policy("linear", loss, start=0.0, end=2.0, total=3)
    controller = create_policy("pi", loss, setpoint=0.5, ki=0.2)
    return create_policy("sequential", loss, policies=[warmup, controller], milestones=[3])


def _learned(name, mode, **kwargs):
    """A learned controller on a tiny model (C -> C) with deterministic validation / training batches (the
    contract drives it with BatchStats only; its look-ahead draws its own training batches)."""
    def batch(seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(16, C, generator=g)
        if mode == "softmax":
            return x, torch.randint(0, C, (16,), generator=g)
        return x, (torch.rand(16, C, generator=g) < 0.3).float()

    def factory(loss):
        model = torch.nn.Linear(C, C).to(loss.gamma.device)
        with torch.no_grad():
            model.weight.copy_(torch.randn(C, C, generator=torch.Generator().manual_seed(7)))
            model.bias.zero_()
        val = [batch(5000 + i) for i in range(3)]
        data = {} if name == "bandit" else {"train_source": [batch(6000 + i) for i in range(5)], "lr": 0.5}
        return create_policy(name, loss, model=model, val_source=val, **data, **kwargs)
    return mode, factory


# name -> (loss mode, factory(loss) -> policy). Every registered policy must appear here.
FACTORIES = {
    "constant": ("softmax", lambda loss: create_policy("constant", loss, gamma=1.5)),
    "linear": ("softmax", lambda loss: create_policy("linear", loss, start=0.0, end=2.0, total=7)),
    "cosine": ("sigmoid", lambda loss: create_policy("cosine", loss, start=3.0, end=1.0, total=7)),
    "step": ("sigmoid", lambda loss: create_policy("step", loss, start=4.0, milestones=[3, 6], factor=0.5)),
    "exponential": ("softmax", lambda loss: create_policy("exponential", loss, start=3.0, factor=0.8,
                                                          gamma_min=0.5)),
    "flsc531": ("softmax", lambda loss: create_policy("flsc531", loss, milestones=(1, 2))),
    "sequential": ("softmax", _sequential),
    "flsd53": ("softmax", lambda loss: create_policy("flsd53", loss)),
    "automated": ("sigmoid", lambda loss: create_policy("automated", loss, momentum=0.8)),
    "pi": ("softmax", lambda loss: create_policy("pi", loss, setpoint=0.6, ki=0.3)),
    "adafocal": ("softmax", lambda loss: create_policy("adafocal", loss)),
    "classwise_adafocal": ("softmax", lambda loss: create_policy("classwise_adafocal", loss, num_classes=C)),
    "cyclical": ("softmax", lambda loss: create_policy("cyclical", loss, total=5, factor=2.0)),
    "efl": ("sigmoid", lambda loss: create_policy("efl", loss)),
    "asl_adaptive": ("sigmoid", lambda loss: create_policy("asl_adaptive", loss, rate=0.5)),
    "hypergradient": _learned("hypergradient", "softmax", every=2, meta_lr=100.0),
    "gammanet": _learned("gammanet", "softmax", every=2, num_classes=C, num_bins=4, meta_lr=0.1),
    "bandit": _learned("bandit", "sigmoid", every=2, gammas=(0.0, 1.0, 2.0, 4.0)),
}
EXTRA = {
    "pi-per-class": ("softmax", lambda loss: create_policy("pi", loss, setpoint=0.6, per_class=True,
                                                           num_classes=C)),
    "pi-easy-fraction": ("sigmoid", lambda loss: create_policy("pi", loss, signal="easy_fraction",
                                                               easy_threshold=0.8, setpoint=0.5)),
    "epoch-linear": ("softmax", lambda loss: create_policy("linear", loss, start=1.0, end=3.0, total=2,
                                                           unit="epoch")),
    "adafocal-fixed-bins": ("softmax", lambda loss: create_policy("adafocal", loss, num_bins=5, rebin=False)),
    "cyclical-per-step-sigmoid": ("sigmoid", lambda loss: create_policy("cyclical", loss, total=10, unit="step")),
    "efl-known-classes": ("sigmoid", lambda loss: create_policy("efl", loss, num_classes=C, scale=4.0)),
    "hypergradient-per-class-sigmoid": _learned("hypergradient", "sigmoid", every=3, per_class=True, num_classes=C,
                                                normalize=True, meta_lr=0.5, clip=3.0),
    "gammanet-sigmoid": _learned("gammanet", "sigmoid", every=3, num_classes=C, num_bins=3),
    "bandit-softmax": _learned("bandit", "softmax", every=1, gammas=(0.5, 3.0)),
}
CASES = {**{n: f for n, f in FACTORIES.items() if n in list_policies()}, **EXTRA}


def test_every_registered_policy_is_in_the_contract():
    missing = set(list_policies()) - set(FACTORIES)
    assert not missing, f"add contract factories for {missing}"


def _batch(mode, step, device):
    g = torch.Generator().manual_seed(1000 + step)
    x = (torch.randn(16, C, generator=g) * (1.0 + 0.2 * step)).to(device)
    if mode == "softmax":
        y = torch.randint(0, C, (16,), generator=g).to(device)
    else:
        y = (torch.rand(16, C, generator=g) < 0.3).float().to(device)
    return x, y


def _gamma_snapshot(loss):
    g = loss.gamma
    if isinstance(g, torch.nn.Module):  # GammaTable, FocalMixture, AsymmetricGamma
        return (type(g).__name__, *[b.detach().cpu().clone() for b in g.buffers()])
    return ("tensor", g.detach().cpu().clone())


def _run(mode, policy, loss, steps, start=0, device="cpu", per_epoch=4):
    trace = []
    for step in range(start, steps):
        x, y = _batch(mode, step, device)
        _, stats = loss(x, y, return_stats=True)
        policy.step(stats)
        trace.append(_gamma_snapshot(loss))
        if (step + 1) % per_epoch == 0:
            vx, vy = _batch(mode, 10_000 + step, device)
            _, val = loss(vx, vy, return_stats=True)
            policy.epoch_end(val)
            trace.append(_gamma_snapshot(loss))
    return trace


def _same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u[0] == v[0]
        for p, q in zip(u[1:], v[1:]):
            torch.testing.assert_close(p, q, rtol=0, atol=0)


def _build(name, device="cpu"):
    mode, factory = CASES[name]
    loss = FocalLoss(mode, gamma=2.0).to(device)
    return mode, loss, factory(loss)


def _state_repr(state: dict, counters: bool = True) -> str:
    """A state as text (tensors by value), without the step / epoch / skip counters unless ``counters``."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()
                    if counters or k not in ("step_count", "epoch", "skipped_batches", "val_source", "train_source",
                                             "window_steps")}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, torch.Tensor):
            return ("tensor", str(value.dtype), tuple(value.shape), value.tolist())
        return value
    return repr(clean(state))


def _full_context(loss, seed=3):
    """Every RunContext field known: a tiny model, validation and training batches, an optimizer."""
    model = torch.nn.Linear(C, C).to(loss.gamma.device)

    def batch(k):
        g = torch.Generator().manual_seed(k)
        x = torch.randn(8, C, generator=g)
        if loss.mode == "softmax":
            return x, torch.randint(0, C, (8,), generator=g)
        return x, (torch.rand(8, C, generator=g) < 0.3).float()

    return RunContext(epochs=2, steps_per_epoch=4, num_classes=C, gamma=1.5, model=model,
                      val_source=[batch(1), batch(2)], train_source=[batch(3), batch(4)],
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1), seed=seed)


def _corrupted_states(good: dict):
    """(what, state) pairs that must be refused: every required key missing, bad counters and versions,
    non-finite or mis-shaped gammas, NaN in every floating tensor of the policy's own state."""
    out = [("not a dict", [good]), ("no policy key", {k: v for k, v in good.items() if k != "policy"})]
    for key in good:
        if key not in ("skipped_batches",):  # every other key existed since the policy's first release
            out.append((f"missing {key}", {k: v for k, v in good.items() if k != key}))
    for key, value in [("epoch", -1), ("epoch", 1.5), ("epoch", "3"), ("step_count", None), ("step_count", True),
                       ("version", 99), ("version", 0), ("skipped_batches", -2)]:
        out.append((f"{key}={value!r}", {**good, key: value}))
    last = good["last_gamma"]
    if isinstance(last, dict):
        for k, v in last.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                out.append((f"NaN last_gamma[{k}]", {**good, "last_gamma": {**last, k: torch.full_like(v, math.nan)}}))
        out.append(("last_gamma as a tensor", {**good, "last_gamma": torch.ones(7)}))
    else:
        out.append(("NaN last_gamma", {**good, "last_gamma": math.nan if isinstance(last, float)
                                       else torch.full_like(torch.as_tensor(last, dtype=torch.float32), math.nan)}))
        out.append(("last_gamma of another shape", {**good, "last_gamma": torch.ones(7)}))
    for key, value in good.items():
        if key in ("last_gamma", "start_loss") or not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue  # (the bandit's start_loss is a measured loss: infinite when the model diverged)
        out.append((f"NaN {key}", {**good, key: torch.full_like(value, math.nan)}))
        out.append((f"{key} of another shape", {**good, key: torch.zeros(value.numel() + 3, dtype=value.dtype)}))
    return out


@pytest.mark.parametrize("name", sorted(CASES))
class TestPolicyContract:
    def test_gamma_finite_and_bounded(self, name):
        mode, loss, policy = _build(name)
        for _, *values in _run(mode, policy, loss, 12):
            for v in values:
                assert torch.isfinite(v).all() and v.abs().max() <= 20.0

    def test_deterministic(self, name):
        mode, loss1, p1 = _build(name)
        mode, loss2, p2 = _build(name)
        _same(_run(mode, p1, loss1, 12), _run(mode, p2, loss2, 12))

    def test_resume_continues_the_same_trajectory(self, name):
        mode, loss, policy = _build(name)
        full = _run(mode, policy, loss, 12)

        mode, loss_a, first = _build(name)
        head = _run(mode, first, loss_a, 6)
        buffer = io.BytesIO()
        torch.save({"policy": first.state_dict(), "loss": loss_a.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=False)

        mode, loss_b, second = _build(name)  # fresh objects, as after a restart
        second.load_state_dict(saved["policy"])
        assert second.step_count == first.step_count and second.epoch == first.epoch
        _same(full, head + _run(mode, second, loss_b, 12, start=6))

    def test_bad_stats_change_nothing(self, name):
        mode, loss, policy = _build(name)
        _run(mode, policy, loss, 3)
        before = (policy.step_count, policy.epoch, _gamma_snapshot(loss), repr(policy.state_dict()))
        with pytest.raises(TypeError, match="stats must be a BatchStats"):
            policy.step("not stats")
        with pytest.raises(TypeError, match="val_stats must be a BatchStats"):
            policy.epoch_end(42)
        if policy.needs_validation:
            with pytest.raises(ValueError, match="needs val_stats"):
                policy.epoch_end()
        if policy.needs_stats:
            with pytest.raises(ValueError, match="needs stats"):
                policy.step()
        after = (policy.step_count, policy.epoch, _gamma_snapshot(loss), repr(policy.state_dict()))
        assert repr(before) == repr(after)

    def test_state_of_another_policy_is_rejected(self, name):
        _, _, policy = _build(name)
        state = policy.state_dict()
        state["policy"] = "something-else"
        with pytest.raises(ValueError, match="state is for the 'something-else' policy"):
            policy.load_state_dict(state)

    def test_state_saved_right_after_a_load_is_the_loaded_state(self, name):
        # a resumed run can be saved and resumed again (the bandit's saved position used to move back one batch
        # at each load); and the twice-resumed run continues the uninterrupted trajectory
        mode, loss, policy = _build(name)
        full = _run(mode, policy, loss, 12)
        mode, loss_a, first = _build(name)
        head = _run(mode, first, loss_a, 6)
        saved = first.state_dict()
        mode, loss_b, second = _build(name)
        second.load_state_dict(saved)
        again = second.state_dict()
        assert _state_repr(again) == _state_repr(saved)
        mode, loss_c, third = _build(name)
        third.load_state_dict(again)
        _same(full, head + _run(mode, third, loss_c, 12, start=6))

    def test_non_finite_statistics_are_skipped(self, name):
        mode, loss, policy = _build(name)
        if not (policy.needs_stats or policy.needs_validation):
            pytest.skip("reads no statistics")
        reference_loss = FocalLoss(mode, gamma=2.0)
        reference = CASES[name][1](reference_loss)
        _run(mode, policy, loss, 5)
        want = _run(mode, reference, reference_loss, 12)[6:]  # the steps after 5 (and the epoch end at step 8)
        before, gamma = _state_repr(policy.state_dict(), counters=False), _gamma_snapshot(loss)
        x, y = _batch(mode, 99, "cpu")
        x[1, 2] = float("nan")
        _, bad = loss(x, y, return_stats=True)
        assert not math.isfinite(float(bad.sum_loss))
        call = policy.step if policy.needs_stats else policy.epoch_end
        leader = policy.current.name if isinstance(policy, SequentialGamma) else policy.name  # who reads them
        with pytest.warns(RuntimeWarning, match=f"the {leader!r} policy: the (validation )?statistics of "
                                                f"(step|epoch) [0-9]+ are not finite") as record:
            call(bad)
        assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # one warning, not one per batch
            call(bad)
        assert policy.skipped_batches == 2 and policy.state_dict()["skipped_batches"] == 2
        after = _gamma_snapshot(loss)
        for v in after[1:]:
            assert torch.isfinite(v).all()
        if not isinstance(policy, LearnedPolicy):  # (a learned controller's meta step may fall on these steps)
            _same([gamma], [after])
            assert _state_repr(policy.state_dict(), counters=False) == before
        got = _run(mode, policy, loss, 12, start=5)
        for _, *values in got:
            for v in values:
                assert torch.isfinite(v).all()
        if not isinstance(policy, (LearnedPolicy, SequentialGamma)):  # their clocks count the skipped steps
            _same(want, got)  # training goes on as if the bad batches had never come
        resumed = CASES[name][1](FocalLoss(mode, gamma=2.0))
        resumed.load_state_dict(policy.state_dict())
        assert resumed.skipped_batches == 2

    def test_a_state_that_cannot_be_loaded_changes_nothing(self, name):
        mode, loss, policy = _build(name)
        _run(mode, policy, loss, 5)
        good = policy.state_dict()
        before, gamma = _state_repr(good), _gamma_snapshot(loss)
        for what, bad in _corrupted_states(good):
            with pytest.raises((ValueError, TypeError)):
                policy.load_state_dict(bad)
            assert _state_repr(policy.state_dict()) == before, what
            _same([gamma], [_gamma_snapshot(loss)])
        policy.load_state_dict(good)  # and the good one still loads

    def test_search_space_is_valid_parameters(self, name):
        cls = type(_build(name)[2])
        for param, spec in cls.search_space.items():
            assert isinstance(spec, (Float, Int, Categorical)), (param, spec)
            assert as_param(spec.as_tuple()) == spec and as_param(list(spec.as_tuple())) == spec
            assert tuple(spec) == spec.as_tuple()

    def test_search_space_corners_build_with_a_full_context(self, name):
        mode = CASES[name][0]
        cls = type(_build(name)[2])
        for corner in ("low", "high"):
            values = {k: (getattr(v, corner) if not isinstance(v, Categorical) else v.choices[0])
                      for k, v in cls.search_space.items()}
            loss = FocalLoss(mode)
            policy = create_policy(cls.name, loss, context=_full_context(loss), **values)
            _run(mode, policy, loss, 4)
            assert torch.isfinite(_gamma_snapshot(loss)[1]).all()

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cuda_step_does_not_synchronise(self, name):
        mode, loss, policy = _build(name, device="cuda")
        x, y = _batch(mode, 0, "cuda")
        _, stats = loss(x, y, return_stats=True)
        torch.cuda.set_sync_debug_mode("error")
        try:
            policy.step(stats)
        finally:
            torch.cuda.set_sync_debug_mode("default")


# -- registry and arguments ---------------------------------------------------------------------------------
def test_unknown_policy_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown policy 'nope'; available policies: .*constant.*linear"):
        create_policy("nope", FocalLoss("softmax"))


@pytest.mark.parametrize("name, kwargs, match", [
    ("linear", {"total": 0}, r"total must be in \[1, inf\], got 0"),
    ("linear", {"start": float("nan")}, "start must not be NaN"),
    ("step", {"milestones": [5, 3]}, "milestones must be strictly increasing"),
    ("step", {"factor": 0.0}, r"factor must be in \(0"),
    ("exponential", {"gamma_min": 3.0, "gamma_max": 1.0}, r"gamma_max must be in \[3.0, 20.0\], got 1.0"),
    ("constant", {"gamma": "2"}, "gamma must be a number, got '2'"),
    ("constant", {"unit": "batch"}, "unit must be one of 'step', 'epoch', got 'batch'"),
    ("flsc531", {"milestones": (3,)}, "milestones must be two"),
    ("flsd53", {"thresholds": (0.5, 0.2)}, "thresholds must be two increasing"),
    ("automated", {"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
    ("pi", {"signal": "loss"}, "signal must be one of 'mean_pt', 'easy_fraction', got 'loss'"),
    ("pi", {"per_class": True}, "num_classes is required"),
    ("pi", {"gamma_init": 9.0}, r"gamma_init must be in \[0.0, 5.0\], got 9.0"),
])
def test_bad_hyperparameters(name, kwargs, match):
    loss = FocalLoss("softmax", gamma=2.0)
    with pytest.raises(ValueError, match=match):
        create_policy(name, loss, **kwargs)
    assert float(loss.gamma) == 2.0  # nothing was written


def test_policy_needs_a_focal_loss():
    with pytest.raises(TypeError, match="loss must be an adaptive_focal.FocalLoss, got CrossEntropyLoss"):
        create_policy("constant", torch.nn.CrossEntropyLoss())


def test_sequential_rejects_policies_of_another_loss():
    loss, other = FocalLoss("softmax"), FocalLoss("softmax")
    with pytest.raises(ValueError, match="must drive the same FocalLoss"):
        create_policy("sequential", loss, policies=[create_policy("constant", other)], milestones=[])


# -- fidelity --------------------------------------------------------------------------------------------------
def test_schedules_follow_their_closed_forms_through_step():
    loss = FocalLoss("sigmoid")
    policy = create_policy("cosine", loss, start=3.0, end=1.0, total=4)
    seen = [float(loss.gamma)]
    for _ in range(5):
        policy.step()
        seen.append(float(loss.gamma))
    want = [1.0 + 2.0 * 0.5 * (1 + math.cos(math.pi * min(t, 4) / 4)) for t in range(6)]
    assert seen == pytest.approx(want, abs=1e-6)


def test_epoch_unit_advances_only_at_epoch_end():
    loss = FocalLoss("softmax")
    policy = create_policy("flsc531", loss, milestones=(1, 3))
    policy.step()
    assert float(loss.gamma) == 5.0
    values = []
    for _ in range(4):
        policy.epoch_end()
        values.append(float(loss.gamma))
    assert values == [3.0, 3.0, 1.0, 1.0]


def test_sequential_hands_over_at_the_milestone():
    loss = FocalLoss("softmax")
    policy = create_policy("sequential", loss, milestones=[2], policies=[
        create_policy("linear", loss, start=0.0, end=1.0, total=4),
        create_policy("constant", loss, gamma=3.0),
    ])
    seen = []
    for _ in range(4):
        policy.step()
        seen.append(float(loss.gamma))
    assert seen == [0.25, 3.0, 3.0, 3.0]  # linear for step 1, then the constant from t = 2 on


def test_flsd53_table_matches_the_paper():
    loss = FocalLoss("softmax")
    create_policy("flsd53", loss)
    assert loss.gamma.edges.tolist() == pytest.approx([0.0, 0.2, 0.5, 1.0])
    # p_t < 0.2 -> 5; 0.2 <= p_t < 0.5 -> 3; above -> 3 (Mukhoti et al., 2020)
    torch.testing.assert_close(loss.gamma.lookup(torch.tensor([0.0, 0.1999, 0.2, 0.49, 0.5, 1.0])),
                               torch.tensor([5.0, 5.0, 3.0, 3.0, 3.0, 3.0]))


def _on_path(policy, path: str):
    """The global controllers run in Python numbers on CPU statistics ("host") and in tensor operations on a GPU
    ("tensor"); this forces the tensor path on the CPU so both are checked against the same examples."""
    if path == "tensor":
        policy._compute_host = policy._compute_tensor
    return policy


@pytest.mark.parametrize("path", ["host", "tensor"])
def test_automated_is_minus_log_of_the_ema_of_mean_pt(path):
    loss = FocalLoss("sigmoid")
    policy = _on_path(create_policy("automated", loss, momentum=0.5), path)
    means = []
    p_hat = None
    for step in range(4):
        x, y = _batch("sigmoid", step, "cpu")
        _, stats = loss(x, y, return_stats=True)
        m = float(stats.mean_pt)
        p_hat = m if p_hat is None else 0.5 * p_hat + 0.5 * m
        policy.step(stats)
        means.append((float(loss.gamma), -math.log(p_hat)))
    for got, want in means:
        assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("path", ["host", "tensor"])
def test_automated_keeps_gamma_on_an_empty_batch(path):
    loss = FocalLoss("sigmoid", ignore_index=-1)
    policy = _on_path(create_policy("automated", loss, gamma_init=1.25), path)
    assert float(loss.gamma) == 1.25
    empty = loss(torch.randn(3, 2), torch.full((3, 2), -1.0), return_stats=True)[1]
    policy.step(empty)
    assert float(loss.gamma) == 1.25
    _, stats = loss(torch.tensor([[2.0, -2.0]]), torch.tensor([[1.0, 0.0]]), return_stats=True)
    policy.step(stats)  # the first batch with elements sets p_hat; an empty one after it changes nothing
    want = -math.log(float(torch.sigmoid(torch.tensor(2.0))))
    assert float(loss.gamma) == pytest.approx(want, rel=1e-5)
    policy.step(empty)
    assert float(loss.gamma) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("path", ["host", "tensor"])
def test_pi_proportional_integral_and_anti_windup(path):
    loss = FocalLoss("softmax")
    policy = _on_path(create_policy("pi", loss, setpoint=0.5, kp=1.0, ki=1.0, gamma_init=2.0, gamma_min=0.0,
                                    gamma_max=3.0), path)
    easy = (torch.tensor([[4.0, 0.0]]), torch.tensor([0]))  # p_t = sigmoid(4) = 0.98201
    e = torch.sigmoid(torch.tensor(4.0)).item() - 0.5
    _, stats = loss(*easy, return_stats=True)
    policy.step(stats)  # I = e; gamma = 2 + e + e = 2.964
    assert float(loss.gamma) == pytest.approx(2.0 + 2 * e, rel=1e-5)
    policy.step(stats)  # would be 2 + e + 2e = 3.45 > 3: saturated, so I stays at e
    assert float(loss.gamma) == pytest.approx(3.0)
    assert float(policy.integral) == pytest.approx(e, rel=1e-5)
    hard = (torch.tensor([[0.0, 4.0]]), torch.tensor([0]))  # p_t = 0.01799: error -e
    _, stats = loss(*hard, return_stats=True)
    policy.step(stats)  # I = e - e = 0; gamma = 2 - e
    assert float(loss.gamma) == pytest.approx(2.0 - e, rel=1e-5)


def test_pi_per_class_leaves_absent_classes_alone():
    loss = FocalLoss("softmax")
    policy = create_policy("pi", loss, setpoint=0.5, kp=1.0, ki=0.0, per_class=True, num_classes=3)
    _, stats = loss(torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([0]), return_stats=True)
    policy.step(stats)
    q0 = torch.softmax(torch.tensor([3.0, 0.0, 0.0]), 0)[0].item()
    torch.testing.assert_close(loss.gamma, torch.tensor([2.0 + q0 - 0.5, 2.0, 2.0]))


@pytest.mark.parametrize("path", ["host", "tensor"])
def test_pi_empty_batch_changes_nothing(path):
    loss = FocalLoss("sigmoid", ignore_index=-1)
    policy = _on_path(create_policy("pi", loss, setpoint=0.5, kp=1.0, ki=1.0, gamma_init=1.5), path)
    _, stats = loss(torch.randn(3, 2), torch.full((3, 2), -1.0), return_stats=True)
    policy.step(stats)
    assert float(loss.gamma) == 1.5 and float(policy.integral) == 0.0


@pytest.mark.parametrize("signal", ["mean_pt", "easy_fraction"])
def test_pi_host_and_tensor_paths_give_the_same_trajectory(signal, gen):
    losses = [FocalLoss("softmax") for _ in range(2)]
    policies = [_on_path(create_policy("pi", lo, signal=signal, setpoint=0.6, kp=3.0, ki=0.3, gamma_max=4.0), path)
                for lo, path in zip(losses, ["host", "tensor"])]
    for _ in range(40):
        x, y = torch.randn(32, 4, generator=gen) * 2, torch.randint(0, 4, (32,), generator=gen)
        gammas = []
        for loss, policy in zip(losses, policies):
            _, stats = loss(x, y, return_stats=True)
            policy.step(stats)
            gammas.append(float(loss.gamma))
        assert gammas[0] == pytest.approx(gammas[1], rel=1e-6, abs=1e-6)  # float64 vs float32 arithmetic
    assert float(policies[0].integral) == pytest.approx(float(policies[1].integral), rel=1e-5, abs=1e-6)


def test_pi_load_state_dict_does_not_alias_the_callers_tensors():
    loss = FocalLoss("softmax")
    policy = create_policy("pi", loss)
    state = policy.state_dict()
    policy.load_state_dict(state)
    _, stats = loss(torch.tensor([[4.0, 0.0]]), torch.tensor([0]), return_stats=True)
    policy.step(stats)
    assert float(state["integral"]) == 0.0 and float(policy.integral) != 0.0


@pytest.mark.parametrize("path", ["host", "tensor"])
def test_pi_easy_fraction_reads_the_histogram(path):
    loss = FocalLoss("sigmoid")
    policy = _on_path(create_policy("pi", loss, signal="easy_fraction", easy_threshold=0.8, setpoint=0.5, kp=1.0,
                                    ki=0.0), path)
    x = torch.tensor([[5.0, -5.0, 0.0, 0.1]])  # p_t for targets [1, 0, 1, 0]: 0.993, 0.993, 0.5, 0.475
    _, stats = loss(x, torch.tensor([[1.0, 0.0, 1.0, 0.0]]), return_stats=True)
    policy.step(stats)  # easy fraction 2/4: error 0, gamma stays at gamma_init
    assert float(loss.gamma) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="easy_threshold=0.75 must be one of the statistics' bin edges"):
        create_policy("pi", loss, signal="easy_fraction", easy_threshold=0.75).step(stats)


def test_softmax_only_policy_rejects_sigmoid_loss():
    class SoftmaxOnly(af.GammaPolicy):
        stats_mode = "softmax"

    with pytest.raises(ValueError, match="needs a FocalLoss with mode='softmax', got mode='sigmoid'"):
        SoftmaxOnly(FocalLoss("sigmoid"))


def test_schedule_figure_is_up_to_date(tmp_path):
    from pathlib import Path

    from research.plot_schedules import main

    fresh = main(["--out", str(tmp_path / "schedules.svg")]).read_text()
    committed = (Path(__file__).resolve().parents[1] / "docs" / "schedules.svg").read_text()
    assert fresh == committed, "docs/schedules.svg is stale: run `make docs`"


# -- reliability: what one bad batch or one bad state used to do ------------------------------------------------
@pytest.mark.parametrize("name, mode, kwargs", [
    ("pi", "softmax", {"setpoint": 0.6}),
    ("pi", "sigmoid", {"signal": "easy_fraction", "easy_threshold": 0.8, "setpoint": 0.5}),
    ("automated", "softmax", {"momentum": 0.5}),
    ("efl", "sigmoid", {}),
    ("asl_adaptive", "sigmoid", {"rate": 0.5}),
])
def test_a_nan_logit_never_reaches_gamma_nor_freezes_it(name, mode, kwargs):
    # a NaN logit used to write NaN into gamma (pi, efl; the next loss call raises and efl's saved state did not
    # load again) or to freeze it (automated fell back to gamma_init for good)
    loss = FocalLoss(mode, gamma=2.0)
    policy = create_policy(name, loss, **kwargs)
    x, y = _batch(mode, 0, "cpu")
    policy.step(loss(x, y, return_stats=True)[1])
    x[0, 1] = float("nan")
    with pytest.warns(RuntimeWarning, match="not finite"):
        policy.step(loss(x, y, return_stats=True)[1])
    seen = []
    for step in range(1, 5):
        xb, yb = _batch(mode, step, "cpu")
        value = loss(xb, yb)  # the loss still computes
        assert torch.isfinite(value)
        policy.step(loss(xb, yb, return_stats=True)[1])
        seen.append(_gamma_snapshot(loss))
    for _, *values in seen:
        for v in values:
            assert torch.isfinite(v).all()
    assert len({repr(s) for s in seen}) > 1  # gamma still follows the statistics
    fresh = create_policy(name, FocalLoss(mode, gamma=2.0), **kwargs)
    fresh.load_state_dict(policy.state_dict())
    assert fresh.skipped_batches == 1


def test_sequential_skips_a_nan_batch_while_pi_leads():
    loss = FocalLoss("softmax", gamma=2.0)
    policy = _sequential(loss)
    for step in range(4):
        policy.step(loss(*_batch("softmax", step, "cpu"), return_stats=True)[1])
    x, y = _batch("softmax", 4, "cpu")
    x[2, 0] = float("inf")
    with pytest.warns(RuntimeWarning, match="the 'pi' policy"):
        policy.step(loss(x, y, return_stats=True)[1])
    assert torch.isfinite(loss.gamma).all() and policy.skipped_batches == 1


def _built(name):
    mode, factory = FACTORIES[name]
    loss = FocalLoss(mode, gamma=2.0)
    return loss, factory(loss)


def test_no_policy_loads_another_policys_state():
    # 18 x 17 pairs; without the 'policy' key most of them used to load (194 of 306)
    names = sorted(FACTORIES)
    states = {}
    for name in names:
        loss, policy = _built(name)
        _run(FACTORIES[name][0], policy, loss, 5)
        states[name] = policy.state_dict()
    loaded = []
    for target in names:
        loss, policy = _built(target)
        before, gamma = _state_repr(policy.state_dict()), _gamma_snapshot(loss)
        for source in names:
            if source == target:
                continue
            for state in (states[source], {k: v for k, v in states[source].items() if k != "policy"}):
                try:
                    policy.load_state_dict(state)
                except (ValueError, TypeError):
                    continue
                loaded.append((source, target, "policy" in state))
        assert _state_repr(policy.state_dict()) == before and repr(_gamma_snapshot(loss)) == repr(gamma)
    assert loaded == []
    assert len(names) * (len(names) - 1) == 306


def test_states_of_the_first_layout_still_load():
    # version 1 had no skipped_batches: it loads with 0
    loss, policy = _built("pi")
    _run("softmax", policy, loss, 3)
    state = policy.state_dict()
    old = {k: v for k, v in state.items() if k != "skipped_batches"}
    old["version"] = 1
    fresh_loss, fresh = _built("pi")
    fresh.load_state_dict(old)
    assert fresh.skipped_batches == 0 and torch.equal(fresh.integral, policy.integral)
    torch.testing.assert_close(fresh_loss.gamma, loss.gamma, rtol=0, atol=0)


@pytest.mark.parametrize("name, mode, kwargs", [
    ("automated", "softmax", {"momentum": 0.5}),
    ("pi", "softmax", {"setpoint": 0.6}),
    ("pi", "softmax", {"setpoint": 0.6, "per_class": True, "num_classes": C}),
    ("efl", "sigmoid", {}),
    ("asl_adaptive", "sigmoid", {"rate": 0.5}),
    ("adafocal", "softmax", {"num_bins": 5}),
])
def test_the_accelerator_path_of_the_finite_check(name, mode, kwargs, monkeypatch):
    """What runs on a GPU, forced on the CPU: the check and the controllers' tensor paths, with torch.where and no
    read of a value; the skip is counted on the device and warned about at the next epoch end."""
    from adaptive_focal.policies import base, feedback

    monkeypatch.setattr(base.GammaPolicy, "_finite_or_empty", lambda self, stats, fields, validation: (
        self._finite_or_empty_on_device(stats, af.BatchStats._SUMMED if fields is None else fields)))
    monkeypatch.setattr(feedback, "_HOST_CLASSES", 0)
    loss = FocalLoss(mode, gamma=2.0)
    policy = create_policy(name, loss, **kwargs)
    if hasattr(policy, "_compute_tensor"):
        policy._compute_host = policy._compute_tensor
    call = policy.epoch_end if policy.needs_validation else policy.step
    call(loss(*_batch(mode, 0, "cpu"), return_stats=True)[1])
    before, gamma = _state_repr(policy.state_dict(), counters=False), _gamma_snapshot(loss)
    x, y = _batch(mode, 1, "cpu")
    x[0, 0] = float("nan")
    if policy.needs_validation:  # the epoch end reads the device's count: the warning comes with it
        with pytest.warns(RuntimeWarning, match=r"1 batch\(es\) had statistics that are not finite"):
            call(loss(x, y, return_stats=True)[1])
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing is read back at the step itself
            call(loss(x, y, return_stats=True)[1])
    _same([gamma], [_gamma_snapshot(loss)])
    if policy.needs_validation:
        after = policy.state_dict()
    else:
        with pytest.warns(RuntimeWarning, match="had statistics that are not finite"):  # a save reads the count
            after = policy.state_dict()
    assert _state_repr(after, counters=False) == before and after["skipped_batches"] == 1
    assert policy.skipped_batches == 1 and isinstance(policy._skipped_device, torch.Tensor)
    call(loss(*_batch(mode, 2, "cpu"), return_stats=True)[1])
    assert policy.skipped_batches == 1 and repr(_gamma_snapshot(loss)) != repr(gamma)  # the next batch counts


def test_skips_counted_on_the_device_are_warned_about_at_the_epoch_end(monkeypatch):
    from adaptive_focal.policies import base

    monkeypatch.setattr(base.GammaPolicy, "_finite_or_empty", lambda self, stats, fields, validation: (
        self._finite_or_empty_on_device(stats, fields)))
    loss = FocalLoss("softmax", gamma=2.0)
    policy = create_policy("automated", loss)
    x, y = _batch("softmax", 1, "cpu")
    x[0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.step(loss(x, y, return_stats=True)[1])
        policy.step(loss(x, y, return_stats=True)[1])
    with pytest.warns(RuntimeWarning, match=r"the 'automated' policy: 2 batch\(es\) had statistics that are not "
                                            r"finite"):
        policy.epoch_end()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.epoch_end()  # once
    assert policy.state_dict()["skipped_batches"] == 2
