"""Bad input -> ValueError / TypeError whose message names the argument and shows the received value."""
import re

import pytest
import torch

import adaptive_focal as af

SIG = af.sigmoid_focal_loss
SMX = af.softmax_focal_loss


def _x(shape=(4, 3), dtype=torch.float32):
    return torch.randn(shape, dtype=dtype)


def _t01(shape=(4, 3)):
    return (torch.rand(shape) < 0.5).float()


def _ti(n=4, C=3):
    return torch.randint(0, C, (n,))


def check(exc_info, arg, *shown):
    """The message names ``arg`` and shows each of ``shown`` (regexes)."""
    msg = str(exc_info.value)
    assert re.search(rf"\b{re.escape(arg)}\b", msg), f"argument name {arg!r} not in message: {msg!r}"
    for s in shown:
        assert re.search(s, msg), f"received value /{s}/ not in message: {msg!r}"


SHAPE_RX = lambda *d: r"[\(\[]" + r",\s*".join(str(i) for i in d) + r",?[\)\]]"  # noqa: E731


# ------------------------------------------------------------------------------------- shapes


def test_sigmoid_shape_mismatch():
    with pytest.raises(ValueError) as ei:
        SIG(_x((5, 7)), _t01((5, 6)))
    check(ei, "target", SHAPE_RX(5, 6))


def test_sigmoid_shape_mismatch_not_broadcast():
    # target must have the input's shape (no silent broadcasting of (N, 1) targets)
    with pytest.raises(ValueError) as ei:
        SIG(_x((5, 7)), _t01((5, 1)))
    check(ei, "target", SHAPE_RX(5, 1))


def test_softmax_target_shape_mismatch():
    with pytest.raises(ValueError) as ei:
        SMX(_x((5, 3)), torch.zeros(6, dtype=torch.long))
    check(ei, "target", SHAPE_RX(6))


def test_softmax_prob_target_shape_mismatch():
    with pytest.raises(ValueError) as ei:
        SMX(_x((5, 3)), torch.full((5, 4), 0.25))
    check(ei, "target", SHAPE_RX(5, 4))


def test_softmax_spatial_target_shape_mismatch():
    with pytest.raises(ValueError) as ei:
        SMX(_x((2, 3, 4, 5)), torch.zeros(2, 4, 6, dtype=torch.long))
    check(ei, "target", SHAPE_RX(2, 4, 6))


def test_sigmoid_weight_not_broadcastable():
    with pytest.raises(ValueError) as ei:
        SIG(_x((5, 7)), _t01((5, 7)), weight=torch.ones(6))
    check(ei, "weight", SHAPE_RX(6))


def test_softmax_weight_wrong_length():
    with pytest.raises(ValueError) as ei:
        SMX(_x((5, 3)), _ti(5), weight=torch.ones(4))
    check(ei, "weight", SHAPE_RX(4))


def test_gamma_tensor_wrong_shape_sigmoid():
    with pytest.raises(ValueError) as ei:
        SIG(_x((5, 7)), _t01((5, 7)), gamma=torch.ones(3, 2))
    check(ei, "gamma", SHAPE_RX(3, 2))


def test_gamma_tensor_wrong_shape_softmax():
    with pytest.raises(ValueError) as ei:
        SMX(_x((5, 3)), _ti(5), gamma=torch.ones(4))
    check(ei, "gamma", SHAPE_RX(4))


def test_gamma_table_class_count_mismatch():
    tbl = af.GammaTable(torch.tensor([0.0, 0.5, 1.0]), torch.ones(4, 2))
    with pytest.raises(ValueError) as ei:
        SMX(_x((5, 3)), _ti(5), gamma=tbl)
    check(ei, "gamma")


# ----------------------------------------------------------------------------- class indices


@pytest.mark.parametrize("bad", [3, 7, -1, -5])
def test_softmax_class_index_out_of_range(bad):
    t = _ti(4, 3)
    t[2] = bad
    with pytest.raises(ValueError) as ei:
        SMX(_x((4, 3)), t)
    check(ei, "target", rf"{bad}\b")


def test_softmax_class_index_out_of_range_spatial():
    t = torch.zeros(2, 3, 3, dtype=torch.long)
    t[1, 2, 0] = 9
    with pytest.raises(ValueError) as ei:
        SMX(_x((2, 4, 3, 3)), t)
    check(ei, "target", r"\b9\b")


def test_softmax_ignore_index_is_not_out_of_range():
    t = torch.tensor([0, -100, 2, -100])
    SMX(_x((4, 3)), t)
    t = torch.tensor([0, 255, 2, 1])
    SMX(_x((4, 3)), t, ignore_index=255)


# ------------------------------------------------------------------------------------- alpha


@pytest.mark.parametrize("alpha", [1.5, -0.1, float("nan")])
def test_sigmoid_alpha_out_of_range(alpha):
    with pytest.raises(ValueError) as ei:
        SIG(_x(), _t01(), alpha=alpha)
    check(ei, "alpha", re.escape(str(alpha)))


def test_sigmoid_alpha_tensor_out_of_range():
    with pytest.raises(ValueError) as ei:
        SIG(_x(), _t01(), alpha=torch.tensor([0.2, 1.7, 0.5]))
    check(ei, "alpha", r"1\.7")


def test_sigmoid_alpha_wrong_length():
    with pytest.raises(ValueError) as ei:
        SIG(_x((4, 3)), _t01((4, 3)), alpha=torch.tensor([0.2, 0.5]))
    check(ei, "alpha", SHAPE_RX(2))


def test_softmax_alpha_wrong_length():
    with pytest.raises(ValueError) as ei:
        SMX(_x((4, 3)), _ti(4, 3), alpha=torch.tensor([0.2, 0.5, 0.3, 0.1]))
    check(ei, "alpha", SHAPE_RX(4))


def test_softmax_alpha_out_of_range():
    with pytest.raises(ValueError) as ei:
        SMX(_x((4, 3)), _ti(4, 3), alpha=torch.tensor([0.2, 1.5, 0.3]))
    check(ei, "alpha", r"1\.5")


@pytest.mark.parametrize("alpha", [0.25, 1.0, 0.0])
def test_softmax_scalar_alpha(alpha):
    with pytest.raises(ValueError) as ei:
        SMX(_x((4, 3)), _ti(4, 3), alpha=alpha)
    check(ei, "alpha", re.escape(str(alpha)))


# ------------------------------------------------------------------------------------- gamma


@pytest.mark.parametrize("fn", ["sigmoid", "softmax"])
@pytest.mark.parametrize("form", ["float", "0d", "per_class", "elem"])
def test_nan_gamma(fn, form):
    g = {"float": float("nan"), "0d": torch.tensor(float("nan")),
         "per_class": torch.tensor([1.0, float("nan"), 2.0]),
         "elem": torch.where(torch.arange(12).view(4, 3) == 5, float("nan"), 1.0)}[form]
    with pytest.raises(ValueError) as ei:
        if fn == "sigmoid":
            SIG(_x((4, 3)), _t01((4, 3)), gamma=g)
        else:
            SMX(_x((4, 3)), _ti(4, 3), gamma=g)
    check(ei, "gamma", r"(?i)nan")


def test_nan_gamma_table_values():
    with pytest.raises(ValueError) as ei:
        tbl = af.GammaTable(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([1.0, float("nan")]))
        SIG(_x(), _t01(), gamma=tbl)
    msg = str(ei.value)
    assert re.search(r"\b(values|gamma)\b", msg) and re.search(r"(?i)nan", msg), msg


@pytest.mark.parametrize("edges,shown", [  # values exactly representable in float32
    ([0.0, 0.625, 0.375, 1.0], r"0\.625|0\.375"),  # not ascending
    ([0.125, 0.375, 0.75, 1.0], r"0\.125"),         # does not start at 0
    ([0.0, 0.25, 0.5, 0.75], r"0\.75"),             # does not end at 1
    ([-0.5, 0.375, 0.75, 1.0], r"-0\.5"),           # outside [0, 1]
    ([0.0, 0.375, 0.75, 1.5], r"1\.5"),
])
def test_gamma_table_bad_edges(edges, shown):
    with pytest.raises(ValueError) as ei:
        tbl = af.GammaTable(torch.tensor(edges), torch.tensor([1.0, 2.0, 3.0]))
        SIG(_x(), _t01(), gamma=tbl)
    check(ei, "edges", shown)


@pytest.mark.parametrize("values_shape", [(2,), (4,), (3, 2), (3, 4)])
def test_gamma_table_edges_length_vs_values(values_shape):
    # 4 edges = 3 bins
    with pytest.raises(ValueError) as ei:
        tbl = af.GammaTable(torch.tensor([0.0, 0.3, 0.6, 1.0]), torch.ones(values_shape))
        SIG(_x(), _t01(), gamma=tbl)
    msg = str(ei.value)
    assert re.search(r"\b(edges|values)\b", msg), msg
    assert re.search(str(values_shape[-1]), msg), msg


# ----------------------------------------------------------------------- label smoothing etc.


@pytest.mark.parametrize("fn", ["sigmoid", "softmax"])
@pytest.mark.parametrize("ls", [-0.1, 1.0, 1.5, float("nan")])
def test_label_smoothing_out_of_range(fn, ls):
    with pytest.raises(ValueError) as ei:
        if fn == "sigmoid":
            SIG(_x(), _t01(), label_smoothing=ls)
        else:
            SMX(_x((4, 3)), _ti(4, 3), label_smoothing=ls)
    check(ei, "label_smoothing", re.escape(str(ls)))


@pytest.mark.parametrize("fn", ["sigmoid", "softmax"])
@pytest.mark.parametrize("red", ["avg", "elementwise_mean", "MEAN", ""])
def test_unknown_reduction(fn, red):
    with pytest.raises(ValueError) as ei:
        if fn == "sigmoid":
            SIG(_x(), _t01(), reduction=red)
        else:
            SMX(_x((4, 3)), _ti(4, 3), reduction=red)
    check(ei, "reduction", re.escape(repr(red)) + "|" + (re.escape(red) if red else "''"))
    # the allowed values are listed
    assert "none" in str(ei.value) and "sum" in str(ei.value)


def test_positives_with_softmax():
    with pytest.raises(ValueError) as ei:
        SMX(_x((4, 3)), _ti(4, 3), reduction="positives")
    check(ei, "reduction", "positives")


@pytest.mark.parametrize("fn", ["sigmoid", "softmax"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_integer_logits(fn, dtype):
    x = torch.ones(4, 3, dtype=dtype)
    with pytest.raises(TypeError) as ei:
        if fn == "sigmoid":
            SIG(x, _t01())
        else:
            SMX(x, _ti(4, 3))
    check(ei, "input", re.escape(str(dtype).replace("torch.", "")))


# ----------------------------------------------------------------------- module + no mutation


def test_module_softmax_scalar_alpha_raises():
    with pytest.raises(ValueError) as ei:
        af.FocalLoss(mode="softmax", alpha=0.25)
    check(ei, "alpha", r"0\.25")


def test_module_unknown_mode():
    with pytest.raises(ValueError) as ei:
        m = af.FocalLoss(mode="softplus")
        m(_x(), _t01())
    check(ei, "mode", "softplus")


@pytest.mark.parametrize("kw,arg", [
    (dict(reduction="avg"), "reduction"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(gamma=float("nan")), "gamma"),
    (dict(alpha=2.0), "alpha"),
])
def test_module_validates(kw, arg):
    # at construction or at the latest at the first call
    with pytest.raises(ValueError) as ei:
        m = af.FocalLoss(mode="sigmoid", **kw)
        m(_x(), _t01())
    check(ei, arg)


def test_module_softmax_positives_raises():
    with pytest.raises(ValueError) as ei:
        m = af.FocalLoss(mode="softmax", reduction="positives")
        m(_x((4, 3)), _ti(4, 3))
    check(ei, "reduction", "positives")


def _snapshot(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("mode", ["sigmoid", "softmax"])
@pytest.mark.parametrize("gamma", [2.0, "table", "per_class"])
def test_module_state_unchanged_after_failing_call(mode, gamma):
    if gamma == "table":
        g = af.GammaTable(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([3.0, 1.0]))
    elif gamma == "per_class":
        g = torch.tensor([1.0, 2.0, 3.0])
    else:
        g = gamma
    m = af.FocalLoss(mode=mode, gamma=g, weight=torch.ones(3) if mode == "softmax" else None)
    x = _x((4, 3))
    t = _t01((4, 3)) if mode == "sigmoid" else _ti(4, 3)
    before = _snapshot(m)
    good = m(x, t)
    bad_calls = [
        lambda: m(x, t[:2]),                                  # shape mismatch
        lambda: m(x.long(), t),                               # integer logits
    ]
    if mode == "softmax":
        tb = t.clone()
        tb[0] = 5
        bad_calls.append(lambda: m(x, tb))                   # class index out of range
    for call in bad_calls:
        with pytest.raises((ValueError, TypeError)):
            call()
        after = _snapshot(m)
        assert before.keys() == after.keys()
        for k in before:
            assert torch.equal(before[k], after[k]), k
    torch.testing.assert_close(m(x, t), good)


def test_functional_arguments_unchanged_after_failing_call():
    g = torch.tensor([1.0, 2.0, 3.0])
    a = torch.tensor([0.2, 0.3, 0.4])
    w = torch.ones(4, 3)
    x = _x((4, 3))
    t = _t01((4, 3))
    copies = [v.clone() for v in (g, a, w, x, t)]
    with pytest.raises(ValueError):
        SIG(x, t, gamma=g, alpha=a, weight=w, reduction="avg")
    with pytest.raises(ValueError):
        SIG(x, t, gamma=g, alpha=a, weight=w, label_smoothing=2.0)
    for v, c in zip((g, a, w, x, t), copies):
        assert torch.equal(v, c)


# ------------------------------------------------------------------ non-finite arguments are errors naming them


@pytest.mark.parametrize("fn", ["sigmoid", "softmax"])
@pytest.mark.parametrize("form", ["float", "0d", "per_class", "elem", "table"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_gamma(fn, form, value):
    # an infinite gamma made the gradient NaN; it is an error like a NaN gamma
    g = {"float": value, "0d": torch.tensor(value), "per_class": torch.tensor([1.0, value, 2.0]),
         "elem": torch.where(torch.arange(12).view(4, 3) == 5, value, 1.0),
         "table": af.GammaTable([0.0, 0.5, 1.0], [1.0, value])}[form]
    with pytest.raises(ValueError) as ei:
        if fn == "sigmoid":
            SIG(_x((4, 3)), _t01((4, 3)), gamma=g)
        else:
            SMX(_x((4, 3)), _ti(4, 3), gamma=g)
    check(ei, "gamma", r"(?i)\binf")


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_module_rejects_nonfinite_gamma(value):
    with pytest.raises(ValueError) as ei:
        af.FocalLoss("softmax", gamma=value)
    check(ei, "gamma", r"(?i)nan|inf")
    m = af.FocalLoss("softmax", gamma=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError) as ei:
        m.gamma = torch.tensor([1.0, value, 3.0])
    check(ei, "gamma", r"(?i)nan|inf")
    assert m.gamma.tolist() == [1.0, 2.0, 3.0]  # unchanged


@pytest.mark.parametrize("ignore_index", [None, -1.0])
def test_sigmoid_nan_target(ignore_index):
    t = _t01((4, 3))
    t[1, 2] = float("nan")
    with pytest.raises(ValueError) as ei:
        SIG(_x((4, 3)), t, ignore_index=ignore_index)
    check(ei, "target", r"(?i)nan")


def test_softmax_nan_probability_target():
    t = torch.full((4, 3), 1 / 3)
    t[2, 0] = float("nan")
    with pytest.raises(ValueError) as ei:
        SMX(_x((4, 3)), t)
    check(ei, "target", r"(?i)nan")


def test_sigmoid_nan_ignore_index():
    # no target equals NaN: such an ignore_index would silently ignore nothing
    with pytest.raises(ValueError) as ei:
        SIG(_x(), _t01(), ignore_index=float("nan"))
    check(ei, "ignore_index", r"(?i)nan")


@pytest.mark.parametrize("fn", ["sigmoid", "softmax"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_nonfinite_weight(fn, value):
    w = torch.tensor([1.0, value, 2.0])
    with pytest.raises(ValueError) as ei:
        if fn == "sigmoid":
            SIG(_x((4, 3)), _t01((4, 3)), weight=w)
        else:
            SMX(_x((4, 3)), _ti(4, 3), weight=w)
    check(ei, "weight", r"(?i)nan|inf")


# ------------------------------------------------------------ softmax gamma shapes: one meaning per shape


def test_softmax_1d_gamma_of_length_n_names_both_readings():
    # a (N,) gamma was read per sample when N != C and per class when N == C; a 1-D gamma is now per class
    # only, and one of length N says how to write either reading
    with pytest.raises(ValueError) as ei:
        SMX(_x((5, 3)), _ti(5, 3), gamma=torch.rand(5))
    check(ei, "gamma", SHAPE_RX(5), r"per class", r"per sample", SHAPE_RX(5, 1), r"unsqueeze\(1\)")


def test_softmax_per_sample_gamma_needs_the_class_dimension():
    # (N, d1) could be per sample or (broadcast from the right) per class term: the class dimension says which
    with pytest.raises(ValueError) as ei:
        SMX(_x((2, 3, 4)), torch.randint(0, 3, (2, 4)), gamma=torch.rand(2, 4))
    check(ei, "gamma", SHAPE_RX(2, 4), r"per sample", r"per class term", SHAPE_RX(2, 1, 4))


def test_softmax_1d_gamma_is_per_class_whatever_the_batch_size(gen):
    # with N == C a (C,) gamma is per class, as for any N: the same loss as the (1, C) per-class-term form, not
    # the per-sample (N, 1) one
    x = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (4,), generator=gen)
    g = torch.tensor([0.0, 1.0, 2.0, 4.0], dtype=torch.float64)
    per_class = SMX(x, y, gamma=g, reduction="none")
    torch.testing.assert_close(per_class, SMX(x, y, gamma=g.view(1, 4), reduction="none"))
    assert not torch.allclose(per_class, SMX(x, y, gamma=g.view(4, 1), reduction="none"))
    module = af.FocalLoss("softmax", gamma=g.float(), reduction="none")  # a policy's per-class gamma
    torch.testing.assert_close(module(x.float(), y), per_class.float())


def test_value_checks_never_read_device_values():
    # on an accelerator the value checks are skipped (no host synchronisation per call); meta tensors have no
    # data, so any value read (bool(), .item(), .tolist()) raises here
    meta = dict(device="meta")
    x, t = torch.empty(8, 3, **meta), torch.empty(8, 3, **meta)
    g, a, w = torch.empty(3, **meta), torch.empty(3, **meta), torch.empty(8, 3, **meta)
    loss, stats = SIG(x, t, gamma=g, alpha=a, weight=w, ignore_index=-1.0, return_stats=True)
    assert loss.device.type == "meta" and stats.sum_pt.device.type == "meta"
    table = af.GammaTable([0.0, 0.5, 1.0], [2.0, 1.0]).to("meta")
    loss, stats = SMX(x, torch.empty(8, dtype=torch.long, **meta), gamma=table, alpha=a, weight=a,
                      return_stats=True)
    assert loss.device.type == "meta" and stats.conf_sum.device.type == "meta"
    loss = SMX(x, torch.empty(8, 3, **meta), gamma=torch.empty(8, 1, **meta), label_smoothing=0.1)
    assert loss.device.type == "meta"
