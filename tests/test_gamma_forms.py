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
    if mode == "softmax":
        y = torch.randint(0, 4, (16,), generator=gen)
    else:
        y = (torch.rand(16, 4, generator=gen) < 0.4).float()
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


# -- the shared base: record, scalars, state (adaptive_focal.gamma_forms is their one home) --------------------
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import adaptive_focal as af  # noqa: E402
from adaptive_focal import gamma_forms  # noqa: E402
from adaptive_focal.gamma_forms import (  # noqa: E402
    GAMMA_FORMS,
    GammaForm,
    GammaTable,
    form_from_state,
    form_state,
    gamma_scalars,
)

FORMS = {
    "table": lambda: GammaTable([0.0, 0.25, 0.5, 1.0], [5.0, 3.0, -1.0]),
    "table_per_class": lambda: GammaTable([0.0, 0.5, 1.0], [[4.0, 2.0], [1.0, 0.5], [0.0, 3.0]]),
    "mixture": lambda: FocalMixture([2.0, -3.0], [0.75, 0.25]),
    "mixture_per_class": lambda: FocalMixture([[1.0, 2.0, 4.0]], [[0.5, 1.0, 2.0]]),
    "asymmetric": lambda: AsymmetricGamma(0.0, 4.0),
    "asymmetric_per_class": lambda: AsymmetricGamma([0.0, 1.0], [4.0, 2.0]),
}


def test_the_forms_share_one_base_and_one_list():
    from adaptive_focal.loss import GAMMA_MODULES

    assert GAMMA_FORMS == (GammaTable, FocalMixture, AsymmetricGamma) and GAMMA_MODULES is GAMMA_FORMS
    assert all(issubclass(form, GammaForm) for form in GAMMA_FORMS)
    assert af.GammaTable is GammaTable and af.GammaForm is GammaForm
    assert gamma_record is gamma_forms.gamma_record  # callbacks re-exports the one implementation


@pytest.mark.parametrize("form, want", [
    ("table", {"form": "GammaTable", "edges": [0.0, 0.25, 0.5, 1.0], "values": [5.0, 3.0, -1.0]}),
    ("mixture", {"form": "FocalMixture", "gammas": [2.0, -3.0], "weights": [0.75, 0.25]}),
    ("asymmetric_per_class", {"form": "AsymmetricGamma", "positive": [0.0, 1.0], "negative": [4.0, 2.0]}),
])
def test_record_is_plain_python_with_the_form_named(form, want):
    record = FORMS[form]().record()
    assert record == want and list(record) == list(want)
    assert gamma_record(FORMS[form]()) == record


def test_gamma_record_of_numbers_and_tensors():
    assert gamma_record(None) is None
    assert gamma_record(2) == 2.0 and isinstance(gamma_record(2), float)
    assert gamma_record(torch.tensor(1.5)) == 1.5
    assert gamma_record(torch.tensor([[1.0, 2.0]])) == [[1.0, 2.0]]
    with pytest.raises(TypeError, match="gamma must be None, a number, a tensor or a gamma form .* got str"):
        gamma_record("2.0")
    with pytest.raises(TypeError, match="got bool"):
        gamma_record(True)


@pytest.mark.parametrize("gamma, want", [
    (2.0, {"gamma": 2.0}),
    (torch.tensor(0.5), {"gamma": 0.5}),
    (torch.tensor([1.0, 2.0, 6.0]), {"gamma/mean": 3.0, "gamma/min": 1.0, "gamma/max": 6.0,
                                     "gamma/0": 1.0, "gamma/1": 2.0, "gamma/2": 6.0}),
    (None, {}),
], ids=["float", "0-d", "per-class", "none"])
def test_scalars_of_numbers_and_tensors(gamma, want):
    assert gamma_scalars(gamma) == want


def test_scalars_of_each_form_by_hand():
    assert gamma_scalars(FORMS["table"](), prefix="g") == pytest.approx(
        {"g/mean": 7.0 / 3.0, "g/min": -1.0, "g/max": 5.0, "g/0": 5.0, "g/1": 3.0, "g/2": -1.0})
    per_class = gamma_scalars(FORMS["table_per_class"]())  # (C, B) values, row-major
    assert per_class["gamma/mean"] == pytest.approx(10.5 / 6) and per_class["gamma/5"] == 3.0
    assert "edges" not in "".join(per_class)
    # cyclical at xi = 0.25: 0.75 * 2 + 0.25 * (-3), then each term's gamma and weight
    assert gamma_scalars(FORMS["mixture"]()) == pytest.approx(
        {"gamma/mean": 0.75, "gamma/gammas/mean": -0.5, "gamma/gammas/min": -3.0, "gamma/gammas/max": 2.0,
         "gamma/gammas/0": 2.0, "gamma/gammas/1": -3.0, "gamma/weights/mean": 0.5, "gamma/weights/min": 0.25,
         "gamma/weights/max": 0.75, "gamma/weights/0": 0.75, "gamma/weights/1": 0.25})
    # EFL's one-term per-class mixture: the weights cancel in each class, the mean is over the classes
    assert gamma_scalars(FORMS["mixture_per_class"]())["gamma/mean"] == pytest.approx(7.0 / 3.0)
    assert gamma_scalars(FocalMixture([1.0, 5.0], [0.0, 0.0])).keys().isdisjoint({"gamma/mean"})  # no weight
    # two terms, per class weights: class 0 (w 1, 3 on gammas 0, 4) -> 3; class 1 (w 0, 0) -> no loss, left out
    assert gamma_scalars(FocalMixture([0.0, 4.0], [[1.0, 0.0], [3.0, 0.0]]))["gamma/mean"] == pytest.approx(3.0)
    assert gamma_scalars(FORMS["asymmetric"]()) == {"gamma/positive": 0.0, "gamma/negative": 4.0}
    assert gamma_scalars(FORMS["asymmetric_per_class"]())["gamma/negative/1"] == 2.0


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_record_gives_the_scalars_of_its_form(form):
    gamma = FORMS[form]()
    assert gamma_scalars(gamma.record(), prefix="epoch/gamma") == gamma.scalars("epoch/gamma")
    through_json = __import__("json").loads(__import__("json").dumps(gamma.record()))
    assert gamma_scalars(through_json) == gamma_scalars(gamma)


def test_long_gammas_are_summarised_and_records_without_form_are_tables():
    many = torch.arange(70.0)
    scalars = gamma_scalars(many)
    assert scalars == {"gamma/mean": 34.5, "gamma/min": 0.0, "gamma/max": 69.0}  # over MAX_SERIES (64)
    assert len(gamma_scalars(many, max_series=70)) == 73
    old = {"edges": [0.0, 0.5, 1.0], "values": [3.0, 1.0]}  # a GammaTable record written before forms were named
    assert gamma_scalars(old) == {"gamma/mean": 2.0, "gamma/min": 1.0, "gamma/max": 3.0, "gamma/0": 3.0,
                                  "gamma/1": 1.0}
    assert gamma_scalars([[1.0, 3.0]]) == gamma_scalars(torch.tensor([[1.0, 3.0]]))


@pytest.mark.parametrize("bad, error, match", [
    ({"form": "Spline", "knots": []}, ValueError, "must name one of the forms GammaTable, FocalMixture, "
                                                   "AsymmetricGamma under 'form', got 'Spline'"),
    ({"form": "FocalMixture", "gammas": [1.0]}, ValueError, r"needs the keys \['gammas', 'weights'\], missing "
                                                             r"\['weights'\]"),
    ({"values": [1.0]}, ValueError, "got None"),
    ("high", TypeError, "got str"),
])
def test_scalars_of_bad_records(bad, error, match):
    with pytest.raises(error, match=match):
        gamma_scalars(bad)
    with pytest.raises(ValueError, match="max_series must be a non-negative integer, got -1"):
        gamma_scalars(1.0, max_series=-1)


@pytest.mark.parametrize("gamma", [1.5, torch.tensor([1.0, 2.0]), *FORMS], ids=str)
def test_every_gamma_has_a_summary_a_report_plots(gamma):
    gamma = FORMS[gamma]() if isinstance(gamma, str) else gamma
    shown = [key for key in gamma_forms.summary_keys() if key in gamma_scalars(gamma)]
    if isinstance(gamma, AsymmetricGamma):
        part = "/mean" if gamma.num_classes else ""
        assert shown == [f"gamma/positive{part}", f"gamma/negative{part}"]
    else:
        assert shown == (["gamma"] if isinstance(gamma, float) else ["gamma/mean"])
    assert gamma_forms.summary_keys("epoch/gamma")[:2] == ("epoch/gamma", "epoch/gamma/mean")


# -- state: checkpoints ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", sorted(FORMS))
def test_state_round_trip_of_every_form(form):
    gamma = FORMS[form]()
    state = form_state(gamma)
    assert state["form"] == type(gamma).__name__ and set(state) == {"form", *type(gamma).fields}
    assert all(t.device.type == "cpu" for k, t in state.items() if k != "form")
    with torch.no_grad():
        getattr(gamma, type(gamma).fields[-1]).add_(1.0)  # the state is a copy, not a view
    rebuilt, original = form_from_state(state), FORMS[form]()
    assert type(rebuilt) is type(gamma)
    for name in type(gamma).fields:
        assert torch.equal(state[name], getattr(original, name))
        assert torch.equal(getattr(rebuilt, name), state[name])
    assert type(gamma).from_state(state).record() == rebuilt.record()  # the class's own classmethod
    assert form_from_state(gamma.record()).record() == gamma.record()  # a record (lists) rebuilds it too


@pytest.mark.parametrize("gamma", [None, 2.5, torch.tensor(1.0), torch.tensor([1.0, 2.0])], ids=str)
def test_state_of_numbers_and_tensors(gamma):
    state = form_state(gamma)
    back = form_from_state(state)
    if isinstance(gamma, torch.Tensor):
        assert isinstance(state, torch.Tensor) and state is not gamma and torch.equal(back, gamma)
    else:
        assert state == gamma and back == gamma


def test_a_version_1_table_state_has_no_form_key():
    table = form_from_state({"edges": torch.tensor([0.0, 0.5, 1.0]), "values": torch.tensor([3.0, 1.0])})
    assert isinstance(table, GammaTable) and table.values.tolist() == [3.0, 1.0]


@pytest.mark.parametrize("form", sorted(FORMS))
def test_form_state_keeps_the_checkpoint_layout_policies_always_saved(form):
    """A policy's ``last_gamma`` in a checkpoint: ``{"form": class name, buffer name: CPU tensor, ...}``, the layout
    of every state saved before this module took it over; it rebuilds the same form."""
    gamma = FORMS[form]()
    state = form_state(gamma)
    expected = {"form": type(gamma).__name__, **{k: v.detach().cpu() for k, v in gamma.named_buffers()}}
    assert list(state) == list(expected) and all(
        state[k] == expected[k] if k == "form" else torch.equal(state[k], expected[k]) for k in expected)
    assert form_from_state(expected).record() == gamma.record()


@pytest.mark.parametrize("state, error, match", [
    ({"form": "Spline"}, ValueError, "unknown gamma form 'Spline'; known: AsymmetricGamma, FocalMixture, GammaTable"),
    ({"form": "FocalMixture", "gammas": [1.0]}, ValueError, r"a FocalMixture state needs the keys \['gammas', "
                                                             r"'weights'\], got \['gammas'\]"),
    ({"form": "AsymmetricGamma", "positive": 0.0, "negative": 4.0, "margin": 0.05}, ValueError,
     r"got \['margin', 'negative', 'positive'\]"),
    ({"form": "GammaTable", "edges": [0.0, 0.7], "values": [1.0]}, ValueError, "must start at 0 and end at 1"),
    ("GammaTable", TypeError, "state must be a dict from form_state"),
])
def test_bad_states_are_refused(state, error, match):
    with pytest.raises(error, match=match):
        form_from_state(state)


def test_a_form_class_rebuilds_only_its_own_states():
    with pytest.raises(ValueError, match="state is of a FocalMixture, not a GammaTable"):
        GammaTable.from_state(form_state(FORMS["mixture"]()))
    with pytest.raises(TypeError, match="state must be a dict from GammaForm.state"):
        GammaForm.from_state([1.0])


# -- the old module path -----------------------------------------------------------------------------------------
def test_old_table_module_warns_and_gives_the_same_class():
    with pytest.warns(DeprecationWarning, match="adaptive_focal.table is deprecated: import GammaTable from "
                                                "adaptive_focal or adaptive_focal.gamma_forms"):
        from adaptive_focal.table import GammaTable as Old
    assert Old is GammaTable
    import adaptive_focal.table as old_module

    with pytest.raises(AttributeError, match="has no attribute 'lookup'"):
        _ = old_module.lookup


def test_importing_the_package_does_not_warn():
    code = "import warnings; warnings.simplefilter('error'); import adaptive_focal; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_pickle_from_before_the_move_still_loads():
    # a whole loss pickled when GammaTable lived in adaptive_focal.table (protocol 2 names classes by module path)
    loss = FocalLoss("softmax", gamma=GammaTable([0.0, 0.5, 1.0], [3.0, 1.0]))
    data = pickle.dumps(loss, protocol=2)
    assert b"adaptive_focal.gamma_forms\nGammaTable" in data
    old = data.replace(b"adaptive_focal.gamma_forms\nGammaTable", b"adaptive_focal.table\nGammaTable")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = pickle.loads(old)
    assert isinstance(loaded.gamma, GammaTable) and loaded.gamma.values.tolist() == [3.0, 1.0]
