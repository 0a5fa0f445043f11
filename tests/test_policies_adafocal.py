"""AdaFocal and class-wise AdaFocal: the published rule on hand-computed examples, state, bad input, bounds, and
an end-to-end run.

Binning under test: the gap of each bin is measured on the loss's current GammaTable edges; with rebin=True the
next epoch's edges are the quantiles of the validation confidence histogram with confidences assumed uniform inside
each bin (an approximation of AdaFocal's exact equal-mass bins, which BatchStats cannot give); with rebin=False
the equal-width bins are kept.
"""
import dataclasses
import io
import math

import pytest
import torch

import adaptive_focal as af
from adaptive_focal.policies.adafocal import (
    BIN_FIELDS,
    CLASSWISE_FIELDS,
    AdaFocal,
    ClasswiseAdaFocal,
    adafocal_update,
    equal_mass_edges,
)

DEFAULTS = dict(lam=1.0, switch_threshold=0.2, gamma_min=-2.0, gamma_max=20.0)


def classwise_bin_sums(logits: torch.Tensor, target: torch.Tensor, edges: torch.Tensor,
                       ignore_index: int | None = -100) -> dict[str, torch.Tensor]:
    """Independent reference for BatchStats' (C, B) fields class_conf_count / class_conf_sum / class_correct_sum:
    validation samples of target class c whose confidence max_c q_c falls in bin b of ``edges``, the sum of their
    confidences and the number predicted correctly (a tie for the top probability counts as correct).

    Args:
        logits: (N, C) or (N, C, d1, ...).
        target: class indices (N,) or (N, d1, ...).
        edges: the statistics' bin edges (the loss's GammaTable edges).
        ignore_index: samples with this target are left out (None: none are).
    """
    with torch.no_grad():
        c = logits.shape[1]
        logp = torch.log_softmax(logits.detach().float(), dim=1)
        if logp.dim() > 2:
            logp = logp.movedim(1, -1).reshape(-1, c)
        tgt = target.reshape(-1).to(torch.int64)
        valid = tgt != ignore_index if ignore_index is not None else torch.ones_like(tgt, dtype=torch.bool)
        cls = torch.where(valid, tgt, torch.zeros_like(tgt))
        conf_log = logp.amax(1)
        conf = conf_log.exp()
        v = valid.to(torch.float32)
        correct = (logp.gather(1, cls.unsqueeze(1)).squeeze(1) >= conf_log).to(torch.float32) * v
        e = edges.to(device=logp.device, dtype=torch.float32)
        b = e.numel() - 1
        idx = cls * b + torch.bucketize(conf, e[1:-1], right=True)

        def scatter(weights, dtype):
            return torch.zeros(c * b, dtype=dtype, device=logp.device).scatter_add_(0, idx, weights).view(c, b)

        return {
            "class_conf_count": scatter(valid.to(torch.int64), torch.int64),
            "class_conf_sum": scatter(conf * v, torch.float32),
            "class_correct_sum": scatter(correct, torch.float32),
        }


def val_stats_from_probs(loss, probs, target):
    """Validation statistics of samples whose softmax probabilities are ``probs`` (rows summing to 1)."""
    logits = torch.tensor(probs, dtype=torch.float64).log().float()
    target = torch.tensor(target)
    _, stats = loss(logits, target, return_stats=True)
    return stats


def snapshot(policy):
    return (policy.epoch, policy.step_count, policy.edges.clone(), policy.values.clone(),
            policy.loss.gamma.edges.clone(), policy.loss.gamma.values.clone())


def assert_unchanged(policy, before):
    after = snapshot(policy)
    assert before[:2] == after[:2]
    for a, b in zip(before[2:], after[2:]):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------------------
# registration and the initial table
# ---------------------------------------------------------------------------------------------------------------
def test_registered_and_initial_table():
    assert {"adafocal", "classwise_adafocal"} <= set(af.list_policies())
    loss = af.FocalLoss("softmax", gamma=2.0)
    policy = af.create_policy("adafocal", loss)
    assert isinstance(policy, AdaFocal) and policy.needs_validation and policy.modes == ("sigmoid", "softmax")
    table = loss.gamma
    assert isinstance(table, af.GammaTable) and policy.get_last_gamma() is table
    torch.testing.assert_close(table.edges, torch.linspace(0, 1, 16))  # the published 15 bins, equal width first
    assert torch.equal(table.values, torch.ones(15))  # gamma_init = 1
    loss2 = af.FocalLoss("softmax")
    cw = af.create_policy("classwise_adafocal", loss2, num_classes=4)
    assert isinstance(cw, ClasswiseAdaFocal) and loss2.gamma.values.shape == (4, 15)


# ---------------------------------------------------------------------------------------------------------------
# fidelity: the update rule (sign rule, switch, clipping) on hand-computed numbers
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma, gap, expected", [
    (1.0, 0.1, math.exp(0.1)),            # focal, over-confident: gamma grows
    (1.0, -0.5, math.exp(-0.5)),          # focal, under-confident: gamma shrinks
    (2.0, 0.0, 2.0),                      # calibrated (or empty) bin: unchanged
    (0.25, -0.5, -0.2),                   # 0.25 e^-0.5 = 0.152 < S_th: switch to inverse focal at -S_th
    (-0.2, -0.3, -0.2 * math.exp(0.3)),   # inverse focal, under-confident: |gamma| grows (sign rule)
    (-1.0, 0.3, -math.exp(-0.3)),         # inverse focal, over-confident: |gamma| shrinks
    (-0.25, 0.5, 0.2),                    # -0.25 e^-0.5 = -0.152: switch back to focal at +S_th
    (0.0, 0.4, 0.2),                      # a gamma of exactly 0 goes to +S_th
    (-1.9, -0.2, -2.0),                   # -1.9 e^0.2 = -2.32: clipped to gamma_min
    (19.0, 0.2, 20.0),                    # 19 e^0.2 = 23.2: clipped to gamma_max
])
def test_update_rule(gamma, gap, expected):
    out = adafocal_update(torch.tensor([gamma], dtype=torch.float64), torch.tensor([gap], dtype=torch.float64),
                          **DEFAULTS)
    assert out.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_lambda_scales_the_exponent():
    out = adafocal_update(torch.tensor([2.0, -1.0], dtype=torch.float64), torch.tensor([0.1, 0.1], dtype=torch.float64),
                          lam=3.0, switch_threshold=0.2, gamma_min=-2.0, gamma_max=20.0)
    torch.testing.assert_close(out, torch.tensor([2 * math.exp(0.3), -math.exp(-0.3)], dtype=torch.float64))


def test_epoch_end_from_validation_stats_hand_computed():
    """Bins [0, 1/3), [1/3, 2/3), [2/3, 1] of the confidence max_c q_c; E_b = mean confidence - accuracy."""
    loss = af.FocalLoss("softmax")
    policy = AdaFocal(loss, num_bins=3, rebin=False)
    # bin 1: conf 0.6 right, 0.6 wrong -> E = 0.6 - 0.5 = 0.1;  bin 2: 0.9 right, 0.8 right -> E = 0.85 - 1
    stats = val_stats_from_probs(loss, [[0.6, 0.4], [0.6, 0.4], [0.1, 0.9], [0.8, 0.2]], [0, 1, 1, 0])
    policy.epoch_end(stats)
    expected = torch.tensor([1.0, math.exp(0.1), math.exp(-0.15)], dtype=torch.float64)
    torch.testing.assert_close(policy.values, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss.gamma.values, expected.float())
    assert policy.epoch == 1
    # second epoch: bin 2 all wrong at conf 0.95 (E = 0.95) and bin 1 under-confident so far that it switches
    stats = val_stats_from_probs(loss, [[0.95, 0.05], [0.4, 0.6], [0.4, 0.6]], [1, 1, 1])  # bin 1: E = 0.6 - 1
    # bin 1: e^0.1 * e^-0.4 = e^-0.3 = 0.741 (stays focal);  bin 2: e^-0.15 * e^0.95 = e^0.8
    policy.epoch_end(stats)
    expected = torch.tensor([1.0, math.exp(-0.3), math.exp(0.8)], dtype=torch.float64)
    torch.testing.assert_close(policy.values, expected, rtol=1e-6, atol=1e-6)
    # an under-confident bin 1 (E = -0.34 each epoch) shrinks towards S_th and then crosses it
    for _ in range(3):
        policy.epoch_end(val_stats_from_probs(loss, [[0.34, 0.66]] * 4, [1] * 4))  # E = 0.66 - 1 = -0.34
    # e^-0.3 e^-0.34 = 0.527 -> e^-0.98 = 0.375 -> e^-1.32 = 0.267;  the next one switches: e^-1.66 = 0.19 < 0.2
    torch.testing.assert_close(policy.values[1], torch.tensor(math.exp(-1.32), dtype=torch.float64), rtol=1e-6, atol=0)
    policy.epoch_end(val_stats_from_probs(loss, [[0.34, 0.66]] * 4, [1] * 4))
    assert policy.values[1].item() == pytest.approx(-0.2)
    # in inverse-focal mode the sign flips: an under-confident bin's |gamma| grows
    policy.epoch_end(val_stats_from_probs(loss, [[0.34, 0.66]] * 4, [1] * 4))
    assert policy.values[1].item() == pytest.approx(-0.2 * math.exp(0.34), rel=1e-6)
    assert policy.values[0].item() == 1.0  # bin 0 never had a sample (confidences of 2 classes are >= 0.5)


def test_training_samples_looked_up_by_pt_including_inverse_focal():
    loss = af.FocalLoss("softmax", reduction="none")
    policy = AdaFocal(loss, num_bins=2, rebin=False)
    policy.load_state_dict({**policy.state_dict(), "values": torch.tensor([3.0, -1.5], dtype=torch.float64),
                            "last_gamma": None})
    logits = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    target = torch.tensor([0, 0])  # p_t = 0.119 (bin 0, focal 3) and 0.881 (bin 1, inverse focal 1.5)
    p_t = torch.softmax(logits, 1)[:, 0]
    expected = torch.stack([(1 - p_t[0]) ** 3.0, (1 + p_t[1]) ** 1.5]) * -p_t.log()
    torch.testing.assert_close(loss(logits, target), expected)


# ---------------------------------------------------------------------------------------------------------------
# fidelity: bins (fixed, or re-derived equal-mass edges)
# ---------------------------------------------------------------------------------------------------------------
def test_equal_mass_edges_hand_computed():
    # 10 samples in [0.25, 0.5), 10 in [0.75, 1): quartiles at 5, 10, 15 samples, uniform inside each bin
    e = equal_mass_edges(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]), torch.tensor([0, 10, 0, 10]))
    torch.testing.assert_close(e, torch.tensor([0.0, 0.375, 0.5, 0.875, 1.0]))
    # uniform counts over equal-width bins: the same edges back
    e = equal_mass_edges(torch.linspace(0, 1, 6), torch.full((5,), 7))
    torch.testing.assert_close(e, torch.linspace(0, 1, 6))
    # all mass in one bin: edges spread evenly inside it
    e = equal_mass_edges(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0, 4]))
    torch.testing.assert_close(e, torch.tensor([0.0, 0.75, 1.0]))
    assert equal_mass_edges(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0, 0])) is None  # nothing to place by


def test_rebin_through_the_policy():
    loss = af.FocalLoss("softmax")
    policy = AdaFocal(loss, num_bins=4)  # rebin=True
    probs = [[0.3, 0.25, 0.25, 0.2]] * 10 + [[0.8, 0.1, 0.05, 0.05]] * 10  # conf 0.3 (bin 1) and 0.8 (bin 3)
    policy.epoch_end(val_stats_from_probs(loss, probs, [0] * 20))
    # bin 1 holds 10 values of mean 0.3: modelled uniform on [0.25, 0.35] (centred on the mean, inside the bin);
    # bin 3 holds 10 of mean 0.8: uniform on [0.75, 0.85]. Quartiles at counts 5, 10, 15: 0.30, 0.35, 0.80
    torch.testing.assert_close(loss.gamma.edges, torch.tensor([0.0, 0.30, 0.35, 0.80, 1.0]))
    assert torch.equal(policy.edges, loss.gamma.edges)
    # the gaps were measured on the old bins: bin 1 E = 0.3 - 1, bin 3 E = 0.8 - 1; bins keep their index
    torch.testing.assert_close(loss.gamma.values, torch.tensor([1.0, math.exp(-0.7), 1.0, math.exp(-0.2)]))
    # the next validation stats come binned by the new edges
    _, stats = loss(torch.randn(5, 4), torch.zeros(5, dtype=torch.int64), return_stats=True)
    assert torch.equal(stats.edges, policy.edges)
    policy.epoch_end(stats)


def test_fixed_bins_when_rebin_false():
    loss = af.FocalLoss("softmax")
    policy = AdaFocal(loss, num_bins=4, rebin=False)
    probs = [[0.3, 0.25, 0.25, 0.2]] * 10 + [[0.8, 0.1, 0.05, 0.05]] * 10
    policy.epoch_end(val_stats_from_probs(loss, probs, [0] * 20))
    assert torch.equal(loss.gamma.edges, torch.linspace(0, 1, 5))


def test_classwise_gap_per_class_and_bin_hand_computed():
    loss = af.FocalLoss("softmax")
    policy = ClasswiseAdaFocal(loss, num_classes=3, num_bins=2, rebin=False)
    # class 0: conf 0.9 right, 0.9 right (bin 1, E = -0.1);  class 1: conf 0.8 wrong, 0.6 wrong (bin 1, E = 0.7)
    # class 2: conf 0.4 right (bin 0, E = -0.6);  the global bin 1 gap would mix classes 0 and 1
    probs = [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]]
    stats = val_stats_from_probs(loss, probs, [0, 0, 1, 1, 2])
    assert stats.class_conf_count.sum(0).tolist() == stats.conf_count.tolist()
    policy.epoch_end(stats)
    expected = torch.tensor([[1.0, math.exp(-0.1)], [1.0, math.exp(0.7)], [math.exp(-0.6), 1.0]])
    torch.testing.assert_close(loss.gamma.values, expected)
    # a training sample of class c uses row c, bin of its p_t
    assert loss.gamma.lookup(torch.tensor([0.9, 0.9, 0.2]), torch.tensor([0, 1, 2])).tolist() == pytest.approx(
        [math.exp(-0.1), math.exp(0.7), math.exp(-0.6)], rel=1e-6)


def test_batchstats_classwise_fields_match_the_reference(gen):
    logits = torch.randn(200, 5, generator=gen) * 3
    target = torch.randint(0, 5, (200,), generator=gen)
    target[:7] = -100
    edges = torch.tensor([0.0, 0.3, 0.5, 0.8, 0.95, 1.0])
    _, stats = af.softmax_focal_loss(logits, target, gamma=af.GammaTable(edges, torch.ones(5)), return_stats=True)
    sums = classwise_bin_sums(logits, target, stats.edges)
    assert torch.equal(sums["class_conf_count"], stats.class_conf_count)
    torch.testing.assert_close(sums["class_conf_sum"], stats.class_conf_sum)
    torch.testing.assert_close(sums["class_correct_sum"], stats.class_correct_sum)
    assert torch.equal(sums["class_conf_count"].sum(0), stats.conf_count)
    torch.testing.assert_close(sums["class_conf_sum"].sum(0), stats.conf_sum)
    torch.testing.assert_close(sums["class_correct_sum"].sum(0), stats.correct_sum)


# ---------------------------------------------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------------------------------------------
def _val_batches(n_epochs, num_classes, gen):
    return [(torch.randn(64, num_classes, generator=gen) * 2.5, torch.randint(0, num_classes, (64,), generator=gen))
            for _ in range(n_epochs)]


@pytest.mark.parametrize("cls, kwargs", [(AdaFocal, {}), (AdaFocal, {"rebin": False}),
                                         (ClasswiseAdaFocal, {"num_classes": 4})])
def test_state_dict_round_trip_continues_trajectory(cls, kwargs, gen):
    batches = _val_batches(8, 4, gen)

    def epoch(policy, loss, batch):
        logits, target = batch
        _, stats = loss(logits, target, return_stats=True)
        policy.epoch_end(stats)

    loss_a = af.FocalLoss("softmax")
    a = cls(loss_a, **kwargs)
    for b in batches[:3]:
        epoch(a, loss_a, b)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    # a differently built instance: other gamma_init, another starting gamma in the loss
    loss_b = af.FocalLoss("softmax", gamma=3.0)
    b_ = cls(loss_b, **kwargs, gamma_init=5.0)
    b_.load_state_dict(state)
    assert b_.epoch == 3 and torch.equal(loss_b.gamma.values, loss_a.gamma.values)
    for batch in batches[3:]:
        epoch(a, loss_a, batch)
        epoch(b_, loss_b, batch)
        assert torch.equal(a.values, b_.values) and torch.equal(a.edges, b_.edges)
        assert torch.equal(loss_a.gamma.values, loss_b.gamma.values)
        assert torch.equal(loss_a.gamma.edges, loss_b.gamma.edges)


def test_same_inputs_same_trajectory(gen):
    batches = _val_batches(5, 3, gen)
    runs = []
    for _ in range(2):
        loss = af.FocalLoss("softmax")
        policy = AdaFocal(loss)
        for logits, target in batches:
            policy.epoch_end(loss(logits, target, return_stats=True)[1])
        runs.append((policy.values.clone(), policy.edges.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_load_state_dict_bad_state_changes_nothing():
    loss = af.FocalLoss("softmax")
    policy = AdaFocal(loss, num_bins=3)
    before = snapshot(policy)
    state = policy.state_dict()
    with pytest.raises(ValueError, match="values"):
        policy.load_state_dict({**state, "values": torch.ones(4, dtype=torch.float64)})
    with pytest.raises(ValueError, match="ascending"):
        policy.load_state_dict({**state, "edges": torch.tensor([0.0, 0.6, 0.5, 1.0])})
    with pytest.raises(ValueError, match="missing"):
        policy.load_state_dict({k: v for k, v in state.items() if k != "edges"})
    with pytest.raises(ValueError, match="policy"):
        policy.load_state_dict({**state, "policy": "classwise_adafocal"})
    assert_unchanged(policy, before)


# ---------------------------------------------------------------------------------------------------------------
# bad input: raised before any state changes
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"lam": 0.0}, "lam"), ({"lam": -1.0}, "lam"), ({"lam": float("inf")}, "lam"), ({"lam": float("nan")}, "lam"),
    ({"lam": "1"}, "lam"), ({"gamma_min": 5.0, "gamma_max": 2.0}, "gamma_max"), ({"gamma_init": 30.0}, "gamma_init"),
    ({"gamma_init": -3.0}, "gamma_init"), ({"switch_threshold": -0.1}, "switch_threshold"),
    ({"switch_threshold": 25.0}, "switch_threshold"), ({"num_bins": 0}, "num_bins"), ({"num_bins": 2.5}, "num_bins"),
    ({"num_bins": True}, "num_bins"), ({"rebin": "yes"}, "rebin"), ({"gamma_max": float("inf")}, "gamma_max"),
])
@pytest.mark.parametrize("name", ["adafocal", "classwise_adafocal"])
def test_bad_hyperparameters(name, kwargs, match):
    loss = af.FocalLoss("softmax", gamma=2.0)
    extra = {"num_classes": 3} if name == "classwise_adafocal" else {}
    with pytest.raises(ValueError, match=match):
        af.create_policy(name, loss, **extra, **kwargs)
    assert isinstance(loss.gamma, torch.Tensor) and float(loss.gamma) == 2.0


@pytest.mark.parametrize("num_classes", [None, 0, 2.0])
def test_classwise_needs_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        ClasswiseAdaFocal(af.FocalLoss("softmax"), num_classes=num_classes)


def test_epoch_end_bad_val_stats_changes_nothing():
    loss = af.FocalLoss("softmax")
    policy = AdaFocal(loss, num_bins=3)
    before = snapshot(policy)
    with pytest.raises(ValueError, match="val_stats"):
        policy.epoch_end()
    with pytest.raises(TypeError, match="BatchStats"):
        policy.epoch_end({"conf_count": torch.ones(3)})
    _, sig = af.sigmoid_focal_loss(torch.randn(4, 3), torch.ones(4, 3), return_stats=True, stat_bins=3)
    with pytest.raises(ValueError, match="softmax"):
        policy.epoch_end(sig)
    _, other = af.softmax_focal_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.int64), return_stats=True)
    with pytest.raises(ValueError, match="edges"):  # 15 default bins, not the table's 3
        policy.epoch_end(other)
    assert_unchanged(policy, before)
    policy.step()  # step ignores statistics and changes no gamma
    assert torch.equal(loss.gamma.values, before[5])


def test_non_finite_validation_stats_are_skipped():
    # a NaN validation logit used to be an error at epoch_end; now the epoch's statistics are skipped: the table
    # stays, the epoch counts, skipped_batches counts, one warning
    loss = af.FocalLoss("softmax")
    policy = AdaFocal(loss, num_bins=3)
    good = val_stats_from_probs(loss, [[0.9, 0.1], [0.6, 0.4]], [1, 0])
    policy.epoch_end(good)
    before = snapshot(policy)
    _, nan = loss(torch.tensor([[float("nan"), 0.0, 0.0], [2.0, 0.0, 0.0]]), torch.tensor([0, 0]), return_stats=True)
    assert not bool(torch.isfinite(nan.conf_sum).all())
    with pytest.warns(RuntimeWarning, match="'adafocal' policy: the validation statistics of epoch 2 are not finite"):
        policy.epoch_end(nan)
    assert policy.epoch == 2 and policy.skipped_batches == 1
    for a, b in zip(before[2:], snapshot(policy)[2:]):
        assert torch.equal(a, b)
    policy.epoch_end(val_stats_from_probs(loss, [[0.9, 0.1], [0.6, 0.4]], [1, 0]))  # and goes on
    assert not torch.equal(policy.values, before[3])


def test_classwise_without_per_class_fields_changes_nothing():
    loss = af.FocalLoss("softmax")
    policy = ClasswiseAdaFocal(loss, num_classes=3, num_bins=3)
    before = snapshot(policy)
    stats = val_stats_from_probs(loss, [[0.5, 0.3, 0.2]], [0])
    without = dataclasses.replace(stats, class_conf_count=None, class_conf_sum=None, class_correct_sum=None)
    with pytest.raises(ValueError, match="class_conf_count, class_conf_sum, class_correct_sum"):
        policy.epoch_end(without)
    bad = val_stats_from_probs(loss, [[0.5, 0.3, 0.2]], [0])
    bad.class_conf_sum = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        policy.epoch_end(bad)
    assert_unchanged(policy, before)


# ---------------------------------------------------------------------------------------------------------------
# bounds: finite and within [gamma_min, gamma_max] whatever the gaps
# ---------------------------------------------------------------------------------------------------------------
def test_update_rule_bounded_on_random_inputs(gen):
    g = torch.empty(5000, dtype=torch.float64).uniform_(-2.0, 20.0, generator=gen)
    for _ in range(50):
        gap = torch.empty(5000, dtype=torch.float64).uniform_(-1.0, 1.0, generator=gen)
        g = adafocal_update(g, gap, lam=5.0, switch_threshold=0.2, gamma_min=-2.0, gamma_max=20.0)
        assert torch.isfinite(g).all() and (g >= -2.0).all() and (g <= 20.0).all()
        assert (g.abs() >= 0.2 - 1e-12).all()  # never left inside the switching band


@pytest.mark.parametrize("cls", [AdaFocal, ClasswiseAdaFocal])
def test_policy_bounded_under_extreme_validation(cls, gen):
    loss = af.FocalLoss("softmax")
    kw = {"num_classes": 3} if cls is ClasswiseAdaFocal else {}
    policy = cls(loss, lam=4.0, gamma_min=-1.0, gamma_max=6.0, **kw)
    for i in range(25):
        scale = [0.1, 30.0][i % 2]  # alternately under-confident (near uniform) and extremely over-confident
        logits = torch.randn(128, 3, generator=gen) * scale
        target = torch.randint(0, 3, (128,), generator=gen)
        _, stats = loss(logits, target, return_stats=True)
        policy.epoch_end(stats)
        v = loss.gamma.values
        assert torch.isfinite(v).all() and (v >= -1.0).all() and (v <= 6.0).all()
        e = loss.gamma.edges
        assert e[0] == 0 and e[-1] == 1 and (e[1:] > e[:-1]).all()


# ---------------------------------------------------------------------------------------------------------------
# end to end: a small softmax model, validation statistics from softmax_focal_loss(..., return_stats=True)
# ---------------------------------------------------------------------------------------------------------------
def _blobs(n, gen, num_classes=4, dim=8):
    centers = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0)) * 1.5
    y = torch.randint(0, num_classes, (n,), generator=gen)
    x = centers[y] + torch.randn(n, dim, generator=gen)
    return x, y


@pytest.mark.parametrize("classwise", [False, True])
def test_end_to_end_training(classwise, gen):
    torch.manual_seed(0)
    x, y = _blobs(512, gen)
    xv, yv = _blobs(256, gen)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = af.FocalLoss("softmax")
    if classwise:
        policy = af.create_policy("classwise_adafocal", criterion, num_classes=4)
    else:
        policy = af.create_policy("adafocal", criterion)
    init_edges = criterion.gamma.edges.clone()
    for _ in range(6):
        model.train()
        for i in range(0, 512, 64):
            loss, stats = criterion(model(x[i:i + 64]), y[i:i + 64], return_stats=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            policy.step(stats)
            assert torch.isfinite(loss)
        model.eval()
        with torch.no_grad():
            logits = model(xv)
            _, val_stats = af.softmax_focal_loss(logits, yv, gamma=criterion.gamma, return_stats=True)
        assert torch.equal(val_stats.edges, criterion.gamma.edges)  # the statistics use the table's bins
        policy.epoch_end(val_stats)
    table = criterion.gamma
    assert isinstance(table, af.GammaTable) and policy.epoch == 6 and policy.step_count == 48
    assert torch.isfinite(table.values).all() and (table.values >= -2).all() and (table.values <= 20).all()
    assert not torch.equal(table.edges, init_edges)  # re-binned
    assert not torch.allclose(table.values, torch.ones_like(table.values))  # moved by the validation gaps
    with torch.no_grad():
        logits = model(xv)
        acc = (logits.argmax(1) == yv).float().mean().item()
        conf = torch.softmax(logits, 1).amax(1)
    assert acc > 0.6  # learned something (chance is 0.25)
    # the re-derived edges are roughly equal-mass for the validation confidences (15 bins of ~17 samples)
    counts = torch.histc(torch.bucketize(conf, table.edges[1:-1], right=True).float(), bins=15, min=0, max=14)
    assert counts.max().item() <= 3 * 256 / 15


def test_equal_mass_edges_uses_means_floor_and_min_width():
    # 4 values of mean 0.9 in [0.5, 1]: uniform on [0.8, 1.0]; the median is 0.9
    e = equal_mass_edges(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0, 4]), torch.tensor([0.0, 3.6]))
    torch.testing.assert_close(e, torch.tensor([0.0, 0.9, 1.0]))
    # confidences of 4 classes are >= 0.25: 8 values of mean 0.3 in [0, 0.5) are uniform on [0.25, 0.35]
    e = equal_mass_edges(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([8, 0]), torch.tensor([2.4, 0.0]), floor=0.25)
    torch.testing.assert_close(e, torch.tensor([0.0, 0.3, 1.0]))
    # every value exactly 1.0: the quantiles all sit at 1 and are pushed apart by min_width below it
    e = equal_mass_edges(torch.linspace(0, 1, 5), torch.tensor([0, 0, 0, 6]), torch.tensor([0, 0, 0, 6.0]))
    torch.testing.assert_close(e, torch.tensor([0.0, 1 - 3e-6, 1 - 2e-6, 1 - 1e-6, 1.0]), rtol=0, atol=1e-7)
    assert (e[1:] > e[:-1]).all()


# ---------------------------------------------------------------------------------------------------------------
# torch.distributed: every rank sets the gamma of the whole validation set
# ---------------------------------------------------------------------------------------------------------------
def _dist_data(rank, epoch):
    g = torch.Generator().manual_seed(100 * epoch + rank)
    n = 30 + 20 * rank  # ranks hold different amounts of data
    return torch.randn(n, 4, generator=g) * (1 + 2 * rank), torch.randint(0, 4, (n,), generator=g)


def _dist_build(name):
    loss = af.FocalLoss("softmax")
    kwargs = {"num_classes": 4} if name == "classwise_adafocal" else {}
    return loss, af.create_policy(name, loss, **kwargs)


def _dist_epoch(name, loss, policy, logits, target):
    _, stats = loss(logits, target, return_stats=True)
    policy.epoch_end(stats)
    return loss.gamma.edges.clone(), loss.gamma.values.clone()


DIST_NAMES = ("adafocal", "classwise_adafocal")


def _dist_worker(rank, world, port, out_dir):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        for name in DIST_NAMES:
            loss, policy = _dist_build(name)
            trace = [_dist_epoch(name, loss, policy, *_dist_data(rank, e)) for e in range(3)]
            torch.save(trace, os.path.join(out_dir, f"{name}-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_ranks_agree_with_the_whole_validation_set(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_dist_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for name in DIST_NAMES:
        rank0, rank1 = (torch.load(tmp_path / f"{name}-rank{r}.pt") for r in (0, 1))
        loss, policy = _dist_build(name)
        for e, (a, b) in enumerate(zip(rank0, rank1)):
            (x0, y0), (x1, y1) = _dist_data(0, e), _dist_data(1, e)
            want = _dist_epoch(name, loss, policy, torch.cat([x0, x1]), torch.cat([y0, y1]))
            for u, v, w in zip(a, b, want):
                torch.testing.assert_close(u, v, rtol=0, atol=0)
                torch.testing.assert_close(u, w, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# sigmoid losses: every element a binary prediction with confidence max(p, 1 - p)
# ---------------------------------------------------------------------------------------------------------------
def sigmoid_confidence_bins(logits: torch.Tensor, target: torch.Tensor, edges: torch.Tensor,
                            ignore_index=None) -> dict[str, torch.Tensor]:
    """Independent reference for the per-confidence-bin fields of sigmoid statistics: every non-ignored element
    with p = sigmoid(x) has confidence max(p, 1 - p) and is correct when (p > 0.5) == (t >= 0.5) or p = 0.5 (a
    tie, correct as for softmax); bins of
    ``edges`` as everywhere (edges[b] <= conf < edges[b + 1], the last bin closed); the class of an element is its
    index along dim 1."""
    with torch.no_grad():
        x = logits.detach().double()
        x2 = x.unsqueeze(1) if x.dim() == 1 else x
        t2 = target.double().reshape(x2.shape)
        c = x2.shape[1]
        p = torch.sigmoid(x2)
        conf = torch.maximum(p, 1 - p)
        correct = (((p > 0.5) == (t2 >= 0.5)) | (p == 0.5)).double()
        valid = torch.ones_like(p, dtype=torch.bool) if ignore_index is None else t2 != ignore_index
        cls = torch.arange(c).view([1, c] + [1] * (x2.dim() - 2)).expand(x2.shape)
        b = edges.numel() - 1
        idx = torch.bucketize(conf.float(), edges[1:-1].float(), right=True)
        flat = (cls * b + idx)[valid]

        def scatter(w, dtype):
            return torch.zeros(c * b, dtype=torch.float64).scatter_add_(0, flat, w[valid]).view(c, b).to(dtype)

        per_class = {"class_conf_count": scatter(torch.ones_like(p), torch.int64),
                     "class_conf_sum": scatter(conf, torch.float32),
                     "class_correct_sum": scatter(correct, torch.float32)}
    return {"conf_count": per_class["class_conf_count"].sum(0), "conf_sum": per_class["class_conf_sum"].sum(0),
            "correct_sum": per_class["class_correct_sum"].sum(0), **per_class}


def sigmoid_val_stats(loss, logits, target):
    """The sigmoid loss's validation statistics, their per-confidence-bin fields checked against the reference."""
    _, stats = loss(logits, target, return_stats=True)
    for name, want in sigmoid_confidence_bins(logits, target, stats.edges).items():
        got = getattr(stats, name)
        if want.dtype == torch.int64:
            assert torch.equal(got, want), name
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=name)
    return stats


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return (p.log() - (1 - p).log()).float()


def test_sigmoid_adafocal_moves_gamma_on_over_confident_validation_hand_computed():
    loss = af.FocalLoss("sigmoid")
    policy = af.create_policy("adafocal", loss, num_bins=2, rebin=False)  # bins [0, 0.5), [0.5, 1]
    # two labels per sample; p of the positive class and the targets:
    #   0.9 / 0 (wrong, conf 0.9), 0.95 / 1 (right, 0.95), 0.2 / 0 (right, 0.8), 0.3 / 1 (wrong, 0.7)
    logits = _logit([[0.9, 0.95], [0.2, 0.3]])
    target = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    policy.epoch_end(sigmoid_val_stats(loss, logits, target))
    gap = (0.9 + 0.95 + 0.8 + 0.7) / 4 - 2 / 4  # over-confident: mean confidence 0.8375, accuracy 0.5
    torch.testing.assert_close(loss.gamma.values, torch.tensor([1.0, math.exp(gap)]))  # bin 0 never has a value
    assert float(loss.gamma.values[1]) > 1.0  # focal mode: an over-confident bin's gamma grows
    # training elements are looked up by their p_t, as for softmax samples
    assert loss.gamma.lookup(torch.tensor([0.3, 0.7])).tolist() == pytest.approx([1.0, math.exp(gap)], rel=1e-6)


def test_sigmoid_binary_adafocal_equals_two_class_softmax(gen):
    """A sigmoid output is a two-class softmax over (0, x): the same gaps, rebinned edges and gammas."""
    sig, soft = af.FocalLoss("sigmoid"), af.FocalLoss("softmax")
    a, b = af.create_policy("adafocal", sig, num_bins=6), af.create_policy("adafocal", soft, num_bins=6)
    for epoch in range(4):
        x = torch.randn(300, generator=gen) * (1.0 + epoch)
        t = (torch.rand(300, generator=gen) < torch.sigmoid(0.5 * x)).float()  # over-confident as the scale grows
        a.epoch_end(sigmoid_val_stats(sig, x, t))
        _, stats = soft(torch.stack([torch.zeros_like(x), x], 1), t.long(), return_stats=True)
        b.epoch_end(stats)
        torch.testing.assert_close(a.edges, b.edges, rtol=0, atol=2e-6)
        torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a.values, torch.ones_like(a.values))


def test_sigmoid_rebin_floor_is_one_half():
    # confidences of binary elements are >= 0.5: bin [1/3, 2/3) holding three of 0.55 is modelled on [0.5, 0.6]
    # (a softmax floor of 1 / C = 1/3 would give [0.433, 0.667]); three of 0.9 in [2/3, 1] on [0.8, 1.0].
    # Quantiles at 2 and 4 of 6: 0.5 + 2/3 * 0.1 and 0.8 + 1/3 * 0.2
    loss = af.FocalLoss("sigmoid")
    policy = af.create_policy("adafocal", loss, num_bins=3)
    logits = _logit([[0.55, 0.45, 0.55], [0.9, 0.1, 0.9]])
    policy.epoch_end(sigmoid_val_stats(loss, logits, torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])))
    torch.testing.assert_close(loss.gamma.edges, torch.tensor([0.0, 0.5 + 0.2 / 3, 0.8 + 0.2 / 3, 1.0]))


def test_sigmoid_classwise_adafocal_per_label_hand_computed():
    loss = af.FocalLoss("sigmoid")
    policy = af.create_policy("classwise_adafocal", loss, num_classes=2, num_bins=2, rebin=False)
    # label 0: p 0.9 / t 0 and 0.8 / t 0: both wrong, E = 0.85 - 0;  label 1: p 0.7 / t 1 and 0.4 / t 0: right,
    # E = (0.7 + 0.6) / 2 - 1
    logits = _logit([[0.9, 0.7], [0.8, 0.4]])
    policy.epoch_end(sigmoid_val_stats(loss, logits, torch.tensor([[0.0, 1.0], [0.0, 0.0]])))
    expected = torch.tensor([[1.0, math.exp(0.85)], [1.0, math.exp(0.65 - 1.0)]])
    torch.testing.assert_close(loss.gamma.values, expected)


def test_sigmoid_reference_bins_agree_with_the_softmax_statistics_for_two_classes(gen):
    # the reference's definitions (confidence, correctness, binning) are those of the softmax statistics
    x = torch.randn(200, generator=gen) * 3
    x[:6] = 0.0  # p = 0.5: a tie, correct whatever the target
    t = (torch.rand(200, generator=gen) < 0.4).float()
    t[:3] = 0.0
    edges = torch.tensor([0.0, 0.5, 0.6, 0.75, 0.9, 1.0])
    ref = sigmoid_confidence_bins(x, t, edges)
    _, soft = af.softmax_focal_loss(torch.stack([torch.zeros_like(x), x], 1), t.long(),
                                    gamma=af.GammaTable(edges, torch.ones(5)), return_stats=True)
    assert torch.equal(ref["conf_count"], soft.conf_count)
    torch.testing.assert_close(ref["conf_sum"], soft.conf_sum)
    torch.testing.assert_close(ref["correct_sum"], soft.correct_sum)


def test_sigmoid_statistics_without_confidence_bins_say_what_is_missing():
    loss = af.FocalLoss("sigmoid")
    policy = af.create_policy("adafocal", loss, num_bins=3)
    before = snapshot(policy)
    _, stats = loss(torch.randn(4, 3), (torch.rand(4, 3) < 0.5).float(), return_stats=True)
    stats = dataclasses.replace(stats, conf_count=None, conf_sum=None, correct_sum=None)
    with pytest.raises(ValueError, match=r"needs val_stats with conf_count, conf_sum, correct_sum \(per-element "
                                         r"confidence max\(p, 1 - p\) bins\); these sigmoid statistics"):
        policy.epoch_end(stats)
    assert_unchanged(policy, before)


@pytest.mark.parametrize("name", ["adafocal", "classwise_adafocal"])
def test_sigmoid_policy_turns_the_loss_confidence_bins_on(name, gen):
    """The sigmoid confidence bins are opt-in (confidence_stats=False by default); the AdaFocal policies turn them on
    for their loss when built, so that its validation statistics carry them without a step of the user's, and
    statistics computed without them get an error naming confidence_stats=True."""
    x, t = torch.randn(8, 3, generator=gen), (torch.rand(8, 3, generator=gen) < 0.5).float()
    loss = af.FocalLoss("sigmoid")
    assert loss.confidence_stats is False and loss(x, t, return_stats=True)[1].conf_count is None
    kwargs = {"num_classes": 3} if name == "classwise_adafocal" else {}
    policy = af.create_policy(name, loss, num_bins=3, **kwargs)
    assert loss.confidence_stats is True
    _, stats = loss(x, t, return_stats=True)
    assert stats.conf_count is not None and int(stats.class_conf_count.sum()) == 24
    # statistics from elsewhere without the bins (another loss, or the function's default)
    before = snapshot(policy)
    _, plain = af.sigmoid_focal_loss(x, t, gamma=loss.gamma, return_stats=True)
    with pytest.raises(ValueError, match=r"these sigmoid statistics do not carry them: compute them with "
                                         r"confidence_stats=True"):
        policy.epoch_end(plain)
    assert_unchanged(policy, before)
    policy.epoch_end(stats)
    softmax = af.FocalLoss("softmax")
    af.create_policy(name, softmax, num_bins=3, **kwargs)
    assert softmax.confidence_stats is False  # softmax statistics always carry their bins


def test_sigmoid_adafocal_state_round_trip(gen):
    loss_a, loss_b = af.FocalLoss("sigmoid"), af.FocalLoss("sigmoid")
    a, b = (af.create_policy("classwise_adafocal", lo, num_classes=3, num_bins=4) for lo in (loss_a, loss_b))
    batches = [(torch.randn(32, 3, generator=gen) * 3, (torch.rand(32, 3, generator=gen) < 0.3).float())
               for _ in range(5)]
    for x, t in batches[:2]:
        a.epoch_end(sigmoid_val_stats(loss_a, x, t))
    b.load_state_dict(a.state_dict())
    for x, t in batches[2:]:
        a.epoch_end(sigmoid_val_stats(loss_a, x, t))
        b.epoch_end(sigmoid_val_stats(loss_b, x, t))
        assert torch.equal(loss_a.gamma.values, loss_b.gamma.values)
        assert torch.equal(loss_a.gamma.edges, loss_b.gamma.edges)


# ---------------------------------------------------------------------------------------------------------------
# sigmoid end to end: create_policy on FocalLoss("sigmoid"), a binary and a multi-label problem
# ---------------------------------------------------------------------------------------------------------------
def _sigmoid_task(n, gen, labels):
    """Features and targets drawn from a logistic model (a label is on with probability sigmoid(x @ w)); a binary
    task (labels == 1) has 1-D targets."""
    w = torch.randn(8, labels, generator=torch.Generator().manual_seed(1)) * 1.5
    x = torch.randn(n, 8, generator=gen)
    t = (torch.rand(n, labels, generator=gen) < torch.sigmoid(x @ w)).float()
    return x, (t[:, 0] if labels == 1 else t)


def _sigmoid_policy(name, loss, labels):
    return af.create_policy(name, loss, **({"num_classes": labels} if name == "classwise_adafocal" else {}))


TASKS = {"binary": 1, "multilabel": 3}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("name", ["adafocal", "classwise_adafocal"])
def test_sigmoid_end_to_end_training(name, task, gen):
    labels = TASKS[task]
    torch.manual_seed(0)
    x, t = _sigmoid_task(512, gen, labels)
    xv, tv = _sigmoid_task(256, gen, labels)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, labels))
    forward = (lambda z: model(z)[:, 0]) if labels == 1 else model  # a binary task's logits are 1-D
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    criterion = af.FocalLoss("sigmoid")
    policy = _sigmoid_policy(name, criterion, labels)
    init_edges = criterion.gamma.edges.clone()
    for _ in range(5):
        for i in range(0, 512, 64):
            loss, stats = criterion(forward(x[i:i + 64]), t[i:i + 64], return_stats=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            policy.step(stats)
            assert torch.isfinite(loss)
        with torch.no_grad():
            val_stats = sigmoid_val_stats(criterion, forward(xv), tv)
        assert torch.equal(val_stats.edges, criterion.gamma.edges)  # binned by the table in force
        policy.epoch_end(val_stats)
    table = criterion.gamma
    assert isinstance(table, af.GammaTable) and policy.epoch == 5 and policy.step_count == 40
    assert table.values.shape == ((labels, 15) if name == "classwise_adafocal" else (15,))
    assert torch.isfinite(table.values).all() and (table.values >= -2).all() and (table.values <= 20).all()
    assert not torch.equal(table.edges, init_edges) and table.edges[1] >= 0.5  # re-binned above the floor 1/2
    assert not torch.allclose(table.values, torch.ones_like(table.values))  # moved by the validation gaps
    with torch.no_grad():
        accuracy = ((forward(xv) > 0) == (tv >= 0.5)).float().mean().item()
    assert accuracy > 0.6  # learned something (a constant prediction gets about 0.5)


def _miscalibrated(edges, labels, gap, gen, per_cell=20):
    """Validation logits and targets with a known calibration gap: in every bin of ``edges`` above 1/2 and for
    every label, ``per_cell`` elements of confidence c (the middle of the bin's part above 1/2) of which
    round((c - gap) per_cell) are right (positive ``gap``: over-confident)."""
    columns_x, columns_t = [], []
    for _ in range(labels):
        xs, ts = [], []
        for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
            if hi <= 0.5:
                continue
            c = (max(lo, 0.5) + hi) / 2
            right = min(per_cell, max(0, round((c - gap) * per_cell)))
            t = (torch.rand(per_cell, generator=gen) < 0.5).float()
            sign = torch.where(t == 1.0, 1.0, -1.0) * torch.where(torch.arange(per_cell) < right, 1.0, -1.0)
            xs.append(sign * math.log(c / (1 - c)))
            ts.append(t)
        order = torch.randperm(per_cell * len(xs), generator=gen)
        columns_x.append(torch.cat(xs)[order])
        columns_t.append(torch.cat(ts)[order])
    if labels == 1:
        return columns_x[0], columns_t[0]
    return torch.stack(columns_x, 1), torch.stack(columns_t, 1)


@pytest.mark.parametrize("gap", [0.25, -0.15], ids=["over-confident", "under-confident"])
@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("name", ["adafocal", "classwise_adafocal"])
def test_sigmoid_gamma_moves_with_the_sign_of_the_calibration_gap(name, task, gap, gen):
    """create_policy on FocalLoss("sigmoid") with its defaults: validation elements whose confidence exceeds their
    accuracy in every bin (and label) raise every occupied bin's gamma by exp(lam E); under-confident ones lower
    it; bins without validation elements keep theirs."""
    labels = TASKS[task]
    loss = af.FocalLoss("sigmoid")
    policy = _sigmoid_policy(name, loss, labels)
    before, edges = policy.values.clone(), loss.gamma.edges.clone()
    x, t = _miscalibrated(edges, labels, gap, gen)
    stats = sigmoid_val_stats(loss, x, t)
    ref = sigmoid_confidence_bins(x, t, edges)
    fields = CLASSWISE_FIELDS if name == "classwise_adafocal" else BIN_FIELDS
    count, conf_sum, correct = (ref[f].double() for f in fields)
    occupied = count > 0
    measured = (conf_sum - correct) / count.clamp_min(1)
    assert occupied.sum() >= 7 * (labels if name == "classwise_adafocal" else 1)  # bins 7..14 of 15 are above 1/2
    assert ((measured[occupied] > 0.15) if gap > 0 else (measured[occupied] < 0)).all()  # the construction
    policy.epoch_end(stats)
    after = policy.values
    assert ((after[occupied] > before[occupied]) if gap > 0 else (after[occupied] < before[occupied])).all()
    torch.testing.assert_close(after[occupied], before[occupied] * torch.exp(measured[occupied]))
    assert torch.equal(after[~occupied], before[~occupied])
