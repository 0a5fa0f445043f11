"""FocalMixture and AsymmetricGamma: against the formulas written out, in the functions and in FocalLoss."""

import pytest
import torch
import torch.nn.functional as F

from adaptive_focal import AsymmetricGamma, FocalLoss, FocalMixture, sigmoid_focal_loss, softmax_focal_loss
from adaptive_focal.callbacks import gamma_record


def _factor(p_t, g):
    """The modulating factor written out: (1 - p_t)**g for g >= 0, (1 + p_t)**|g| below."""
    return (1 - p_t) ** g if g >= 0 else (1 + p_t) ** (-g)


def _softmax_formula(x, y, terms):
    """Per-sample sum_k w_k m_k(q_y) (-log q_y) for index targets, from softmax directly (float64)."""
    q = torch.softmax(x, 1).gather(1, y[:, None]).squeeze(1)
    return sum(w * _factor(q, g) * -torch.log(q) for g, w in terms)


def _sigmoid_formula(x, t, gamma_of):
    """Element losses with per-element gamma ``gamma_of`` (a tensor like x), hard targets, written out."""
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    return (1 - p_t) ** gamma_of * -torch.log(p_t)


# -- FocalMixture ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_mixture_is_the_weighted_sum_of_focal_terms(reduction, gen):
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (12,), generator=gen)
    terms = [(2.0, 0.7), (-3.0, 0.3)]
    got = softmax_focal_loss(x, y, gamma=FocalMixture([g for g, _ in terms], [w for _, w in terms]),
                             reduction=reduction)
    per = _softmax_formula(x, y, terms)
    want = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_mixture_one_pass_equals_the_sum_of_separate_losses(reduction, gen):
    # index targets take one pass for all terms; it must equal the terms' losses computed one by one (with
    # per-class gammas, alpha, a weighted mean and ignored samples), and their gradients
    x = torch.randn(20, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 4, (20,), generator=gen)
    y[[3, 11]] = -100
    gammas = torch.tensor([[0.5, 1.0, 2.0, 4.0], [-1.0, -2.0, -0.5, -3.0], [0.0, 0.0, 0.0, 0.0]])
    weights = torch.tensor([0.5, 0.3, 0.2])
    kwargs = dict(alpha=torch.tensor([0.9, 0.2, 0.5, 0.6]), weight=torch.tensor([0.2, 1.0, 3.0, 1.0]),
                  reduction=reduction)
    got = softmax_focal_loss(x, y, gamma=FocalMixture(gammas, weights), **kwargs)
    want = sum(w * softmax_focal_loss(x, y, gamma=g, **kwargs) for g, w in zip(gammas, weights.double()))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


def test_softmax_mixture_one_pass_gradcheck():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    mix = FocalMixture([2.0, -3.0], [0.25, 0.75])
    assert torch.autograd.gradcheck(lambda v: softmax_focal_loss(v, y, gamma=mix), (x,))


def test_sigmoid_mixture_with_per_class_gammas_and_weights(gen):
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(10, 4, generator=gen) < 0.3).to(torch.float64)
    g = torch.tensor([0.5, 1.0, 2.0, 4.0])
    w = torch.tensor([1.0, 1.5, 2.0, 3.0])
    got = sigmoid_focal_loss(x, t, gamma=FocalMixture(g[None], w[None]), reduction="sum")
    want = (w.double() * _sigmoid_formula(x, t, g.double().expand(10, 4))).sum()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0])


def test_mixture_of_gamma_zero_terms_is_cross_entropy(gen):
    x = torch.randn(9, 6, generator=gen)
    y = torch.randint(0, 6, (9,), generator=gen)
    mix = FocalMixture([0.0, 0.0], [0.25, 0.75])
    torch.testing.assert_close(softmax_focal_loss(x, y, gamma=mix, label_smoothing=0.1),
                               F.cross_entropy(x, y, label_smoothing=0.1))
    t = (torch.rand(9, 6, generator=gen) < 0.5).float()
    torch.testing.assert_close(sigmoid_focal_loss(x, t, gamma=mix), F.binary_cross_entropy_with_logits(x, t))


def test_mixture_on_the_kernel_path_matches_float64(gen):
    x = torch.randn(512, 80, generator=gen) * 3  # 40960 elements: the fused kernel's size
    t = (torch.rand(512, 80, generator=gen) < 0.05).float()
    w = torch.rand(80, generator=gen) + 0.5
    mix = FocalMixture(torch.rand(1, 80, generator=gen) * 4, w[None])
    got = sigmoid_focal_loss(x, t, gamma=mix, alpha=0.25)
    want = sigmoid_focal_loss(x.double(), t.double(), gamma=mix, alpha=0.25)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
def test_mixture_statistics_add_the_terms_losses(mode, gen):
    x = torch.randn(16, 4, generator=gen)
    y = torch.randint(0, 4, (16,), generator=gen) if mode == "softmax" else (torch.rand(16, 4, generator=gen) < 0.4).float()
    fn = softmax_focal_loss if mode == "softmax" else sigmoid_focal_loss
    mix = FocalMixture([1.0, -2.0], [0.6, 0.4])
    loss, stats = fn(x, y, gamma=mix, return_stats=True)
    _, plain = fn(x, y, gamma=1.0, return_stats=True)
    elements = fn(x, y, gamma=mix, reduction="none")
    torch.testing.assert_close(stats.sum_loss, elements.sum())
    torch.testing.assert_close(stats.mean_loss, loss)
    for name in ("count", "sum_pt", "pt_hist", "class_count", "class_sum_pt"):
        torch.testing.assert_close(getattr(stats, name), getattr(plain, name))


def test_mixture_gradcheck():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 1, 1, 0])
    mix = FocalMixture([0.5, -1.5], [0.4, 0.6])
    assert torch.autograd.gradcheck(lambda v: softmax_focal_loss(v, y, gamma=mix, label_smoothing=0.1), (x,))
    t = torch.rand(5, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: sigmoid_focal_loss(v, t, gamma=mix), (x,))


@pytest.mark.parametrize("gammas, weights, match", [
    ([1.0, 2.0], [0.5], r"weights must have shape \(2,\) or \(2, C\)"),
    ([1.0], [-0.5], r"weights must be >= 0, got \[-0.5\]"),
    ([float("nan")], [1.0], "gammas must be finite"),
    ([], [], r"gammas must have shape \(K,\) or \(K, C\) with K >= 1"),
    ([[1.0, 2.0]], [[1.0, 2.0, 3.0]], "must agree on C"),
])
def test_mixture_bad_settings(gammas, weights, match):
    with pytest.raises(ValueError, match=match):
        FocalMixture(gammas, weights)


def test_mixture_that_does_not_fit_the_input():
    x, y = torch.randn(4, 3), torch.randint(0, 3, (4,))
    with pytest.raises(ValueError, match=r"length 5 does not fit: the input has C = 3"):
        softmax_focal_loss(x, y, gamma=FocalMixture(torch.ones(1, 5), [1.0]))
    with pytest.raises(ValueError, match="per-class weights is for sigmoid_focal_loss"):
        softmax_focal_loss(x, y, gamma=FocalMixture([1.0], torch.ones(1, 3)))
    with pytest.raises(ValueError, match="a 1-D input has no class dimension"):
        sigmoid_focal_loss(torch.randn(4), torch.ones(4), gamma=FocalMixture(torch.ones(1, 4), [1.0]))


def test_mixture_set_is_in_place_and_checked_first():
    mix = FocalMixture([2.0, -3.0], [1.0, 0.0])
    gammas, weights = mix.gammas, mix.weights
    mix.set(weights=[0.5, 0.5])
    assert mix.weights is weights and mix.weights.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="weights must be >= 0"):
        mix.set(gammas=[1.0, 1.0], weights=[0.5, -0.5])
    assert mix.gammas is gammas and mix.gammas.tolist() == [2.0, -3.0]  # nothing changed
    with pytest.raises(ValueError, match=r"gammas must keep shape \(2,\)"):
        mix.set(gammas=[1.0])


def test_asymmetric_set_is_in_place_and_checked_first():
    form = AsymmetricGamma(0.0, 4.0)
    negative = form.negative
    form.set(negative=3.0)
    assert form.negative is negative and float(form.negative) == 3.0
    with pytest.raises(ValueError, match=r"AsymmetricGamma.set: negative must be finite, got nan"):
        form.set(positive=1.0, negative=float("nan"))
    assert (float(form.positive), float(form.negative)) == (0.0, 3.0)  # nothing changed
    with pytest.raises(ValueError, match=r"positive must keep shape \(\)"):
        form.set(positive=[1.0, 2.0])


def test_mixture_modulator_matches_the_formula():
    mix = FocalMixture([2.0, -3.0], [0.75, 0.25])
    p = torch.linspace(0, 1, 11)
    torch.testing.assert_close(mix.modulator(p), 0.75 * (1 - p) ** 2 + 0.25 * (1 + p) ** 3)


# -- AsymmetricGamma ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pos, neg", [(0.0, 4.0), (1.0, 2.5), (3.0, 0.0)])
def test_asymmetric_gamma_is_asl_focusing_written_out(pos, neg, gen):
    x = torch.randn(8, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(8, 6, generator=gen) < 0.3).to(torch.float64)
    got = sigmoid_focal_loss(x, t, gamma=AsymmetricGamma(pos, neg), reduction="sum")
    p = torch.sigmoid(x)
    # ASL without the probability margin: t (1-p)^g+ log p + (1-t) p^g- log(1-p)
    want = -(t * (1 - p) ** pos * torch.log(p) + (1 - t) * p ** neg * torch.log(1 - p)).sum()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(want, x)[0])


def test_asymmetric_gamma_soft_targets_per_class_and_ignore_index(gen):
    x = torch.randn(6, 3, generator=gen)
    t = torch.rand(6, 3, generator=gen)
    t[0, 1] = -1.0  # ignored
    pos, neg = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([4.0, 3.0, 2.0])
    got = sigmoid_focal_loss(x, t, gamma=AsymmetricGamma(pos, neg), ignore_index=-1, reduction="none")
    dense = neg + (pos - neg) * t.clamp(0, 1)
    want = sigmoid_focal_loss(x, t, gamma=dense, ignore_index=-1, reduction="none")
    torch.testing.assert_close(got, want)
    assert got[0, 1] == 0


def test_asymmetric_gamma_on_the_kernel_path(gen):
    x = torch.randn(400, 100, generator=gen) * 2
    t = (torch.rand(400, 100, generator=gen) < 0.02).float()
    form = AsymmetricGamma(1.0, 4.0)
    torch.testing.assert_close(sigmoid_focal_loss(x, t, gamma=form),
                               sigmoid_focal_loss(x.double(), t.double(), gamma=form).float(), rtol=1e-5, atol=1e-7)


def test_asymmetric_gamma_bad_use():
    with pytest.raises(ValueError, match="AsymmetricGamma .* is for sigmoid_focal_loss"):
        softmax_focal_loss(torch.randn(2, 3), torch.tensor([0, 1]), gamma=AsymmetricGamma())
    with pytest.raises(ValueError, match="is for mode='sigmoid'"):
        FocalLoss("softmax", gamma=AsymmetricGamma())
    with pytest.raises(ValueError, match=r"per-class values of length 2 does not fit: the input has C = 3"):
        sigmoid_focal_loss(torch.randn(2, 3), torch.ones(2, 3), gamma=AsymmetricGamma([0.0, 1.0], 4.0))
    with pytest.raises(ValueError, match="must have the same length C"):
        AsymmetricGamma([0.0, 1.0], [4.0, 4.0, 4.0])
    with pytest.raises(ValueError, match="target must have the same shape"):
        sigmoid_focal_loss(torch.randn(2, 3), torch.ones(2, 2), gamma=AsymmetricGamma())


# -- in FocalLoss ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", [FocalMixture([2.0, -3.0], [0.5, 0.5]), AsymmetricGamma(0.0, 4.0)],
                         ids=["mixture", "asymmetric"])
def test_focal_loss_holds_a_form_as_state(form, gen):
    loss = FocalLoss("sigmoid", gamma=form)
    state = loss.state_dict()
    assert sorted(state) == sorted(f"gamma.{k}" for k, _ in form.named_buffers())
    fresh = FocalLoss("sigmoid", gamma=type(form)(*[torch.zeros_like(b) for b in form.buffers()]))
    fresh.load_state_dict(state)
    x, t = torch.randn(5, 3, generator=gen), (torch.rand(5, 3, generator=gen) < 0.5).float()
    torch.testing.assert_close(fresh(x, t), loss(x, t))
    assert "gamma=" + type(form).__name__ in repr(loss)
    assert gamma_record(loss.gamma)["form"] == type(form).__name__


def test_mixture_nonneg_mark_lasts_until_the_gammas_change(gen):
    # a writer that knows its gammas are finite and >= 0 marks them, so the loss does not read them back; any
    # later change (in place, or a new tensor) ends the mark and the loss checks again
    mix = FocalMixture(torch.full((1, 3), 2.0), torch.ones(1, 3))
    assert not mix._known_nonneg()
    mix._mark_nonneg()
    assert mix._known_nonneg()
    x, t = torch.randn(4, 3, generator=gen), (torch.rand(4, 3, generator=gen) < 0.5).float()
    marked = sigmoid_focal_loss(x, t, gamma=mix)
    mix._nonneg_at = None
    assert torch.equal(marked, sigmoid_focal_loss(x, t, gamma=mix))  # the mark only skips the check
    mix._mark_nonneg()
    with torch.no_grad():
        mix.gammas[0, 1] = float("nan")
    assert not mix._known_nonneg()
    with pytest.raises(ValueError, match="gamma must not be NaN"):
        sigmoid_focal_loss(x, t, gamma=mix)
    mix.set(gammas=torch.full((1, 3), 1.0))
    mix._mark_nonneg()
    mix.gammas = torch.full((1, 3), -1.0)  # a new tensor, not the marked one: the inverse factor must apply
    assert not mix._known_nonneg()
    expected = sigmoid_focal_loss(x, t, gamma=torch.full((3,), -1.0))
    assert torch.equal(sigmoid_focal_loss(x, t, gamma=mix), expected)


def test_mixture_host_write_is_in_place_versioned_and_survives_copies():
    import copy
    import io

    mix = FocalMixture(torch.full((1, 3), 2.0), torch.ones(1, 3))
    gammas, version = mix.gammas, mix.gammas._version
    assert mix._write_host([2.0, 3.0, 4.5], [1.0, 1.5, 2.25], nonneg=True)
    assert mix.gammas is gammas and mix.gammas.tolist() == [[2.0, 3.0, 4.5]]
    assert mix.weights.tolist() == [[1.0, 1.5, 2.25]]
    assert mix.gammas._version > version and mix._known_nonneg()  # autograd sees the write
    x = torch.randn(2, 3, requires_grad=True)
    out = (x * mix.weights).sum()
    mix._write_host([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], nonneg=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()
    # a copy (deepcopy, pickle through torch.save) owns its tensors: writing it leaves the original alone
    twin = copy.deepcopy(mix)
    assert twin._write_host([5.0, 5.0, 5.0], [2.5, 2.5, 2.5], nonneg=True)
    assert mix.gammas.tolist() == [[2.0, 2.0, 2.0]] and twin.gammas.tolist() == [[5.0, 5.0, 5.0]]
    buffer = io.BytesIO()
    torch.save(mix, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.gammas.tolist() == [[2.0, 2.0, 2.0]] and not loaded._known_nonneg()
    # another shape, dtype or device is not written
    assert not FocalMixture(torch.full((1, 4), 2.0), torch.ones(1, 4))._write_host([1.0] * 3, [1.0] * 3, True)
    assert not mix._write_host([1.0] * 4, [1.0] * 4, nonneg=True)
    assert mix.gammas.tolist() == [[2.0, 2.0, 2.0]]
    wide = FocalMixture(torch.full((1, 3), 2.0), torch.ones(1, 3)).double()
    assert not wide._write_host([1.0] * 3, [1.0] * 3, nonneg=True)
