"""Test-set metrics for the three tasks of research/datasets.py, from a model's logits.

* multiclass: accuracy, balanced accuracy, macro-F1, worst-class recall, many / medium / few-shot recall, and
  calibration (ECE, adaptive ECE, classwise ECE, NLL, Brier) before and after temperature scaling fitted on the
  validation set (Guo et al., 2017); optionally the same accuracy metrics after post-hoc logit adjustment
  (Menon et al., 2021).
* multilabel-dense (dense detection, sigmoid): mean average precision over the classes with positives, AP of the
  rarest half of the classes, and the recall of positives at the 0.5 threshold.
* segmentation: mean IoU over classes, foreground mean IoU, pixel balanced accuracy.

Everything is computed in torch from tensors; the numbers returned are Python floats.
"""

from __future__ import annotations

import torch

from adaptive_focal import metrics as M

from .baselines import apply_temperature, fit_temperature, posthoc_logit_adjust

__all__ = ["HEADLINE", "average_precision", "evaluate", "headline_metric", "mean_iou"]

#: the headline metric of each task: what tuned arms select on and the tables report
HEADLINE = {"multiclass": "balanced_accuracy", "multilabel-dense": "map", "segmentation": "miou"}
#: the task of each data set of research/datasets.py that is not multiclass (a test checks it against the data sets)
_TASKS = {"dense-det": "multilabel-dense", "seg-toy": "segmentation"}


def headline_metric(dataset: str) -> str:
    """The headline metric of a research data set: balanced accuracy (multiclass), mAP (dense-det), mean IoU
    (seg-toy)."""
    return HEADLINE[_TASKS.get(dataset, "multiclass")]


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Non-interpolated average precision per class: the mean precision at the rank of each positive.

    Args:
        scores: (N, C) scores (higher = more likely positive).
        targets: (N, C) 0/1 targets.

    Returns:
        (C,) AP per class, NaN for classes without positives.

    Example:
        >>> average_precision(torch.tensor([[0.9], [0.8], [0.1]]), torch.tensor([[1.0], [0.0], [1.0]]))
        tensor([0.8333])
    """
    order = torch.argsort(scores, dim=0, descending=True, stable=True)
    hits = torch.gather(targets.to(torch.float64), 0, order)
    tp = hits.cumsum(0)
    ranks = torch.arange(1, hits.shape[0] + 1, dtype=torch.float64).unsqueeze(1)
    n_pos = hits.sum(0)
    ap = (hits * tp / ranks).sum(0) / n_pos.clamp_min(1)
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan"))).to(torch.float32)


def mean_iou(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Intersection over union per class from predicted and true class maps (NaN where a class is absent from
    both).

    Example:
        >>> mean_iou(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]), 2)
        tensor([0.6667, 0.5000])
    """
    cm = M._confusion(preds.reshape(-1), labels.reshape(-1), num_classes).double()  # rows true, columns predicted
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan"))).to(torch.float32)


def _nanmean(t: torch.Tensor) -> float:
    return float(torch.nanmean(t))  # NaN when every entry is NaN


def _classification(logits, labels, class_counts, many, few, suffix="") -> dict:
    probs = torch.softmax(logits.double(), 1)
    recall = M.per_class_recall(probs, labels, num_classes=logits.shape[1])
    splits = M.recall_splits(recall, class_counts, many=many, few=few)
    out = {
        "accuracy": float((probs.argmax(1) == labels).double().mean()),
        "balanced_accuracy": float(M.balanced_accuracy(probs, labels, num_classes=logits.shape[1])),
        "macro_f1": float(M.macro_f1(probs, labels, num_classes=logits.shape[1])),
        "worst_class_recall": float(recall[~torch.isnan(recall)].min()),
        **{f"recall_{k}": float(v) for k, v in splits.items()},
    }
    return {k + suffix: v for k, v in out.items()}


def _calibration(logits, labels, suffix="") -> dict:
    probs = torch.softmax(logits.double(), 1)
    out = {
        "ece": float(M.ece(probs, labels)),
        "adaptive_ece": float(M.adaptive_ece(probs, labels)),
        "classwise_ece": float(M.classwise_ece(probs, labels)),
        "nll": float(M.nll(logits.double(), labels, from_logits=True)),
        "brier": float(M.brier(probs, labels)),
    }
    return {k + suffix: v for k, v in out.items()}


def evaluate(task: str, test_logits: torch.Tensor, test_targets: torch.Tensor, class_counts,
             val_logits: torch.Tensor | None = None, val_targets: torch.Tensor | None = None, *,
             temperature_scaling: bool = True, posthoc_tau: float = 0.0, many: int = 100, few: int = 20) -> dict:
    """The test metrics of one run (see the module docstring); ``class_counts`` are the training counts."""
    counts = torch.as_tensor(class_counts)
    if task == "multiclass":
        out = {**_classification(test_logits, test_targets, counts, many, few),
               **_calibration(test_logits, test_targets)}
        if temperature_scaling and val_logits is not None:
            t = fit_temperature(val_logits.double(), val_targets)
            out["temperature"] = float(t)
            out.update(_calibration(apply_temperature(test_logits.double(), t), test_targets, "_ts"))
        if posthoc_tau:
            adjusted = posthoc_logit_adjust(test_logits.double(), counts.double(), tau=posthoc_tau)
            out.update(_classification(adjusted, test_targets, counts, many, few, "_la"))
        return out
    if task == "multilabel-dense":
        ap = average_precision(test_logits, test_targets)
        has_pos = ~torch.isnan(ap)
        rare = torch.argsort(counts.double(), stable=True)[: max(1, counts.numel() // 2)]
        positives = test_targets > 0.5
        recall = (test_logits[positives] > 0).double().mean() if positives.any() else torch.tensor(float("nan"))
        return {
            "map": _nanmean(ap),
            "ap_rare_half": _nanmean(ap[rare]),
            "recall_at_0.5": float(recall),
            "classes_with_positives": int(has_pos.sum()),
        }
    if task == "segmentation":
        c = test_logits.shape[1]
        preds = test_logits.argmax(1)
        iou = mean_iou(preds, test_targets, c)
        flat_probs = preds.reshape(-1)
        return {
            "miou": _nanmean(iou),
            "miou_foreground": _nanmean(iou[1:]),
            "pixel_balanced_accuracy": float(M.balanced_accuracy(flat_probs, test_targets.reshape(-1), num_classes=c)),
            "pixel_accuracy": float((preds == test_targets).double().mean()),
        }
    raise ValueError(f"task must be one of 'multiclass', 'multilabel-dense', 'segmentation', got {task!r}")
