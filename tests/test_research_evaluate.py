"""research/evaluate.py: average precision and mean IoU against independent references."""

import doctest

import pytest
import torch

import research.evaluate as ev

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_average_precision_matches_scikit_learn(gen):
    scores = torch.rand(200, 4, generator=gen)
    targets = (torch.rand(200, 4, generator=gen) < torch.tensor([0.5, 0.1, 0.02, 0.0])).float()
    ap = ev.average_precision(scores, targets)
    for c in range(3):
        want = sklearn_metrics.average_precision_score(targets[:, c].numpy(), scores[:, c].numpy())
        assert float(ap[c]) == pytest.approx(want, abs=1e-6)
    assert torch.isnan(ap[3])  # no positives


def test_mean_iou_by_hand():
    preds = torch.tensor([[0, 1], [2, 2]])
    labels = torch.tensor([[0, 1], [1, 2]])
    # class 0: 1 / 1; class 1: TP 1, FN 1 -> 1/2; class 2: TP 1, FP 1 -> 1/2; class 3 absent: NaN
    iou = ev.mean_iou(preds, labels, 4)
    torch.testing.assert_close(iou[:3], torch.tensor([1.0, 0.5, 0.5]))
    assert torch.isnan(iou[3])


def test_evaluate_rejects_an_unknown_task():
    with pytest.raises(ValueError, match="task must be one of 'multiclass', 'multilabel-dense', 'segmentation'"):
        ev.evaluate("regression", torch.zeros(2, 2), torch.zeros(2), [1, 1])


def test_docstring_examples():
    assert doctest.testmod(ev).failed == 0
