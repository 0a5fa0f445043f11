"""Fidelity of the policies that write FocalMixture / AsymmetricGamma: cyclical, efl, asl_adaptive."""

import dataclasses

import pytest
import torch

from adaptive_focal import FocalLoss, FocalMixture, create_policy, sigmoid_focal_loss


# -- cyclical (Smith, 2022) ---------------------------------------------------------------------------------
def _paper_xi(e, total, fc):
    """Smith (2022), Eq. for xi: 1 - fc e / total while fc e <= total, then (fc e / total - 1) / (fc - 1)."""
    return 1 - fc * e / total if fc * e <= total else (fc * e / total - 1) / (fc - 1)


@pytest.mark.parametrize("total, fc", [(200, 4.0), (30, 2.0), (10, 1.0), (7, 3.5)])
def test_cyclical_xi_is_the_papers_schedule(total, fc):
    policy = create_policy("cyclical", FocalLoss("softmax"), total=total, factor=fc)
    got = [policy.xi_at(e) for e in range(total + 1)]
    assert got == pytest.approx([_paper_xi(e, total, fc) for e in range(total + 1)], abs=1e-12)
    assert got[0] == 1.0 and min(got) == pytest.approx(0.0, abs=1e-12)
    assert policy.xi_at(total + 5) == policy.xi_at(total)  # constant after the end


@pytest.mark.parametrize("total, fc", [(3, 1.6), (3, 2.7), (3, 3.2)])
def test_cyclical_xi_stays_in_unit_interval_despite_rounding(total, fc):
    # (fc e / total - 1) / (fc - 1) at e = total is 1 + 2e-16 in floating point for these settings, which made a
    # weight 1 - xi of -2e-16 (a sweep trial failed on it)
    loss = FocalLoss("softmax")
    policy = create_policy("cyclical", loss, total=total, factor=fc, unit="step")
    assert policy.xi_at(total) == 1.0
    for _ in range(total + 1):
        policy.step()
        assert bool((loss.gamma.weights >= 0).all()) and float(loss.gamma.weights.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_cyclical_loss_is_the_xi_blend_of_the_two_losses(unit, gen):
    loss = FocalLoss("softmax")
    policy = create_policy("cyclical", loss, total=6, gamma_hc=3.0, gamma_lc=2.0, factor=2.0, unit=unit)
    mixture = loss.gamma
    x = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (20,), generator=gen)
    q = torch.softmax(x, 1).gather(1, y[:, None]).squeeze(1)
    l_hc = (-(1 + q) ** 3 * torch.log(q)).mean()  # high-confidence term
    l_fl = (-(1 - q) ** 2 * torch.log(q)).mean()  # focal term
    for epoch in range(7):
        xi = _paper_xi(epoch, 6, 2.0)
        torch.testing.assert_close(loss(x, y), xi * l_hc + (1 - xi) * l_fl)
        policy.step() if unit == "step" else policy.epoch_end()
    assert loss.gamma is mixture  # updated in place, never rebuilt


def test_cyclical_restores_its_mixture_when_gamma_was_replaced():
    loss = FocalLoss("softmax")
    policy = create_policy("cyclical", loss, total=4, factor=1.0, unit="step")
    loss.gamma = 1.0  # by hand
    policy.step()
    assert isinstance(loss.gamma, FocalMixture)
    assert loss.gamma.gammas.tolist() == [2.0, -3.0] and loss.gamma.weights.tolist() == [0.25, 0.75]


@pytest.mark.parametrize("kwargs, match", [
    ({"factor": 0.5}, r"factor must be in \[1.0, inf\], got 0.5"),
    ({"total": 0}, r"total must be in \[1, inf\], got 0"),
    ({"gamma_hc": -1.0}, r"gamma_hc must be in \[0.0, 20.0\], got -1.0"),
])
def test_cyclical_bad_hyperparameters(kwargs, match):
    loss = FocalLoss("softmax", gamma=2.0)
    with pytest.raises(ValueError, match=match):
        create_policy("cyclical", loss, **kwargs)
    assert float(loss.gamma) == 2.0


# -- efl (Li et al., 2022) ------------------------------------------------------------------------------------
def _unreduced(loss, x, t):
    return sigmoid_focal_loss(x, t, gamma=loss.gamma, alpha=loss.alpha, reduction="none")


def test_efl_accumulates_gradient_ratios_and_sets_gamma_and_weight(gen):
    gamma_b, scale = 2.0, 8.0
    loss = FocalLoss("sigmoid", alpha=0.25)
    policy = create_policy("efl", loss, gamma_b=gamma_b, scale=scale)
    pos_sum = torch.zeros(4, dtype=torch.float64)
    neg_sum = torch.zeros(4, dtype=torch.float64)
    for _ in range(3):
        x = torch.randn(32, 4, generator=gen, dtype=torch.float64) * 2
        t = (torch.rand(32, 4, generator=gen) < torch.tensor([0.5, 0.2, 0.05, 0.0])).to(torch.float64)
        # the expected per-element gradient, by autograd of the loss in force before this step
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_unreduced(loss, xg, t).sum(), xg)
        pos_sum += (g.abs() * t).sum(0)
        neg_sum += (g.abs() * (1 - t)).sum(0)
        _, stats = loss(x, t, return_stats=True)
        policy.step(stats)
        ratio = (pos_sum / (neg_sum + 1e-10)).clamp(0, 1)
        want_gamma = gamma_b + scale * (1 - ratio)
        torch.testing.assert_close(loss.gamma.gammas[0].double(), want_gamma, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss.gamma.weights[0].double(), want_gamma / gamma_b, rtol=1e-5, atol=1e-5)
    assert loss.gamma.gammas[0, 3] == gamma_b + scale  # a class with no positive gets the most focusing


def test_efl_loss_is_the_papers_formula(gen):
    loss = FocalLoss("sigmoid", alpha=0.25)
    policy = create_policy("efl", loss, num_classes=3)
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    t = (torch.rand(16, 3, generator=gen) < 0.3).to(torch.float64)
    _, stats = loss(x, t, return_stats=True)
    policy.step(stats)
    gamma = loss.gamma.gammas[0].double()
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = 0.25 * t + 0.75 * (1 - t)
    want = (gamma / 2.0 * alpha_t * (1 - p_t) ** gamma * -torch.log(p_t)).mean()
    torch.testing.assert_close(loss(x, t), want)


def test_efl_bad_input_changes_nothing(gen):
    with pytest.raises(ValueError, match="needs a FocalLoss with mode='sigmoid'"):
        create_policy("efl", FocalLoss("softmax"))
    with pytest.raises(ValueError, match=r"gamma_b must be in \(0.0, 20.0\]"):
        create_policy("efl", FocalLoss("sigmoid"), gamma_b=0.0)
    loss = FocalLoss("sigmoid")
    policy = create_policy("efl", loss, num_classes=3)
    _, stats = FocalLoss("sigmoid")(torch.randn(4, 5, generator=gen), torch.ones(4, 5), return_stats=True)
    before = repr(policy.state_dict())
    with pytest.raises(ValueError, match="stats have 5 classes but the 'efl' policy is tracking 3"):
        policy.step(stats)
    _, stats = loss(torch.randn(4, 3, generator=gen), torch.ones(4, 3), return_stats=True)
    with pytest.raises(ValueError, match="needs stats with class_sum_grad_pos, class_sum_grad_neg"):
        policy.step(dataclasses.replace(stats, class_sum_grad_pos=None, class_sum_grad_neg=None))
    assert repr(policy.state_dict()) == before


# -- asl_adaptive (Ridnik et al., 2021) -----------------------------------------------------------------------
@pytest.mark.parametrize("path", ["host", "tensor"])
def test_asl_adaptive_moves_gamma_neg_to_hold_the_gap(path, gen):
    loss = FocalLoss("sigmoid")
    policy = create_policy("asl_adaptive", loss, gamma_pos=1.0, gamma_neg=4.0, target_gap=0.1, rate=2.0,
                           gamma_max=6.0)
    if path == "tensor":  # the GPU's path, forced on the CPU (CPU statistics take Python numbers)
        policy._compute_host = policy._compute_tensor
    want = 4.0
    for step in range(6):
        x = torch.randn(16, 5, generator=gen) - 1.0
        t = (torch.rand(16, 5, generator=gen) < 0.2).float()
        if step == 3:
            t.zero_()  # no positive: the gap is undefined and gamma_neg must stay
        p = torch.sigmoid(x.double())
        if t.sum() > 0:
            gap = p[t == 1].mean() - (1 - p[t == 0]).mean()
            want = min(max(want + 2.0 * (0.1 - float(gap)), 0.0), 6.0)
        _, stats = loss(x, t, return_stats=True)
        policy.step(stats)
        assert float(loss.gamma.negative) == pytest.approx(want, abs=1e-5)
        assert float(loss.gamma.positive) == 1.0
    assert policy.get_last_gamma() is loss.gamma


def test_asl_adaptive_bad_input():
    with pytest.raises(ValueError, match="needs a FocalLoss with mode='sigmoid'"):
        create_policy("asl_adaptive", FocalLoss("softmax"))
    with pytest.raises(ValueError, match=r"gamma_neg must be in \[0.0, 3.0\], got 4.0"):
        create_policy("asl_adaptive", FocalLoss("sigmoid"), gamma_max=3.0)
    with pytest.raises(ValueError, match=r"rate must be in \(0.0, inf\]"):
        create_policy("asl_adaptive", FocalLoss("sigmoid"), rate=0.0)


def test_efl_load_state_dict_does_not_alias_the_callers_tensors(gen):
    # the policy accumulates the gradient sums in place: a loaded state must be copied, not shared
    loss = FocalLoss("sigmoid")
    policy = create_policy("efl", loss, num_classes=3)
    x, t = torch.randn(8, 3, generator=gen), (torch.rand(8, 3, generator=gen) < 0.3).float()
    policy.step(loss(x, t, return_stats=True)[1])
    state = policy.state_dict()
    saved = state["pos_grad"].clone(), state["neg_grad"].clone()
    policy.load_state_dict(state)
    policy.step(loss(x, t, return_stats=True)[1])
    assert torch.equal(state["pos_grad"], saved[0]) and torch.equal(state["neg_grad"], saved[1])
    assert not torch.equal(policy.pos_grad, saved[0])


def test_efl_python_and_tensor_arithmetic_agree_bit_for_bit(gen, monkeypatch):
    # few classes on the CPU take Python numbers, many (or a GPU) tensor operations: the same float64 formula
    import adaptive_focal.policies.feedback as controllers

    losses = [FocalLoss("sigmoid", alpha=0.25) for _ in range(2)]
    policies = [create_policy("efl", lo, num_classes=6) for lo in losses]
    for _ in range(5):
        x = torch.randn(40, 6, generator=gen) * 2
        t = (torch.rand(40, 6, generator=gen) < torch.linspace(0.6, 0.02, 6)).float()
        for k, (loss, policy) in enumerate(zip(losses, policies)):
            with monkeypatch.context() as m:
                if k == 1:
                    m.setattr(controllers, "_HOST_CLASSES", 0)
                policy.step(loss(x, t, return_stats=True)[1])
        assert torch.equal(losses[0].gamma.gammas, losses[1].gamma.gammas)
        assert torch.equal(losses[0].gamma.weights, losses[1].gamma.weights)
    assert losses[0].gamma.gammas.max() > 2.0  # the rare classes moved


def test_efl_marks_its_gammas_and_moves_between_python_and_tensor_sums(gen, monkeypatch):
    # the Python path vouches for the gammas it writes (finite, >= gamma_b); a run that switches paths (for
    # instance after a state saved on the tensor path) carries its sums over exactly
    import adaptive_focal.policies.feedback as controllers

    x = [torch.randn(30, 4, generator=gen) * 2 for _ in range(4)]
    t = [(torch.rand(30, 4, generator=gen) < torch.linspace(0.5, 0.05, 4)).float() for _ in range(4)]
    loss_a, loss_b = FocalLoss("sigmoid"), FocalLoss("sigmoid")
    a, b = create_policy("efl", loss_a, num_classes=4), create_policy("efl", loss_b, num_classes=4)
    for k in range(4):
        a.step(loss_a(x[k], t[k], return_stats=True)[1])
        with monkeypatch.context() as m:
            if k % 2:  # b alternates between the two paths
                m.setattr(controllers, "_HOST_CLASSES", 0)
            b.step(loss_b(x[k], t[k], return_stats=True)[1])
    assert torch.equal(a.pos_grad, b.pos_grad) and torch.equal(a.neg_grad, b.neg_grad)
    assert a.pos_grad.dtype == torch.float64 and a.pos_grad.shape == (4,)
    assert torch.equal(loss_a.gamma.gammas, loss_b.gamma.gammas)
    assert loss_a.gamma._known_nonneg() and bool((loss_a.gamma.gammas >= 2.0).all())


@pytest.mark.parametrize("host_classes", [256, 0])  # Python numbers / tensor operations
def test_efl_class_without_any_gradient_keeps_gamma_b(host_classes, monkeypatch, gen):
    # a class none of whose elements counted yet (all ignored; or an empty or skipped batch) has g = 1 as before
    # any statistics, not the ratio 0 / 1e-10 = 0 and the largest gamma
    import adaptive_focal.policies.feedback as feedback

    monkeypatch.setattr(feedback, "_HOST_CLASSES", host_classes)
    loss = FocalLoss("sigmoid", ignore_index=-1.0)
    policy = create_policy("efl", loss, num_classes=3, gamma_b=2.0, scale=8.0)
    t = (torch.rand(20, 3, generator=gen) < 0.3).float()
    t[:, 2] = -1.0  # class 2 ignored everywhere
    policy.step(loss(torch.randn(20, 3, generator=gen), t, return_stats=True)[1])
    g = loss.gamma.gammas[0]
    assert float(g[2]) == 2.0 and float(loss.gamma.weights[0, 2]) == 1.0
    assert bool((g[:2] > 2.0).all())  # the others moved
